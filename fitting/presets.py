"""Published laws, usable with no sweep at all.

Each preset is a fixed-coefficient law with the paper it comes from. Units: N non-embedding
parameters, D tokens, C FLOPs, batch in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpscale.fitting.hyper import HyperLaw


@dataclass(frozen=True)
class Preset:
    """A published law: its short name, where it comes from, and the law itself."""

    name: str
    title: str
    source: str
    law: HyperLaw


PRESETS: dict[str, Preset] = {
    "steplaw": Preset(
        name="steplaw",
        title="Step Law",
        source=(
            "Li et al., 'Predictable Scale: Part I -- Optimal Hyperparameter Scaling Law in Large "
            "Language Model Pretraining' (2025): lr* = 1.79 N^-0.713 D^0.307, B*_tokens = 0.58 D^0.571"
        ),
        law=HyperLaw.from_coefficients(
            "steplaw", {"a_lr": 1.79, "alpha_lr": -0.713, "beta_lr": 0.307, "a_b": 0.58, "beta_b": 0.571}
        ),
    ),
    "deepseek": Preset(
        name="deepseek",
        title="DeepSeek LLM",
        source=(
            "DeepSeek-AI, 'DeepSeek LLM: Scaling Open-Source Language Models with Longtermism' "
            "(2024): lr* = 0.3118 C^-0.125, B*_tokens = 0.2920 C^0.3271, C in FLOPs"
        ),
        law=HyperLaw.from_coefficients(
            "compute", {"a_lr": 0.3118, "gamma_lr": -0.125, "a_b": 0.2920, "gamma_b": 0.3271}
        ),
    ),
}

DEFAULT_PRESET = "steplaw"
