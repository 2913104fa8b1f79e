"""Published laws, usable with no sweep at all.

Each preset is a fixed-coefficient law with the paper it comes from, and the range of the data it
was fitted on (``fit_range``), so that "how far outside its data" is a number for a published law
too. Units: N non-embedding parameters, D tokens, C FLOPs, batch in tokens.

- Step Law: the range of its released dense grid (1,911 runs, 17 (N, D) groups):
  N 2.147e8 - 1.074e9, D 4e9 - 1e11, C = 6 N D 5.15e18 - 3.67e20.
- DeepSeek LLM: its hyperparameter laws are fitted on compute budgets of 1e17 - 2e19 FLOPs (the
  paper's C, non-embedding FLOPs per token x D); the law is on C only, so only C has a range.
  The paper's FLOPs per token, M = 72 n_layer d_model^2 + 6 n_layer d_model seq_len, counts the
  attention's own work, which 6 N (N = 12 n_layer d_model^2) leaves out: M / 6N = 1 + seq_len /
  (12 d_model). Asked with N and D, hpscale takes C = 6 N D (it knows no model shape); for a 7B
  model (d_model 4096) at seq_len 4096 that C is 8% below DeepSeek's, so its lr is 1% higher and
  its batch 2.6% smaller than the paper's M would give, more for small models and long
  sequences. ``hpscale recommend --compute C`` (the API's ``compute``) takes DeepSeek's C as given.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpscale.fitting.hyper import HyperLaw


def _published(form: str, coef: dict[str, float], fit_range: dict[str, list[float]]) -> HyperLaw:
    law = HyperLaw.from_coefficients(form, coef)
    law.fit_range_ = fit_range
    return law


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
        law=_published(
            "steplaw", {"a_lr": 1.79, "alpha_lr": -0.713, "beta_lr": 0.307, "a_b": 0.58, "beta_b": 0.571},
            {"n_params": [2.147e8, 1.074e9], "tokens": [4e9, 1e11], "compute": [5.15e18, 3.67e20]},
        ),
    ),
    "deepseek": Preset(
        name="deepseek",
        title="DeepSeek LLM",
        source=(
            "DeepSeek-AI, 'DeepSeek LLM: Scaling Open-Source Language Models with Longtermism' "
            "(2024): lr* = 0.3118 C^-0.125, B*_tokens = 0.2920 C^0.3271, C in FLOPs"
        ),
        law=_published(
            "compute", {"a_lr": 0.3118, "gamma_lr": -0.125, "a_b": 0.2920, "gamma_b": 0.3271},
            {"compute": [1e17, 2e19]},
        ),
    ),
}

DEFAULT_PRESET = "steplaw"
