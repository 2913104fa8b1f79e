"""What a fit can be asked for: law kinds (as ``hpscale fit --kind`` and ``POST /fits`` spell
them), their forms and default forms, and the hyper laws' methods. Names only, no numpy: the
CLI's help lists them without importing the fitting code (``service.fits`` does the fitting)."""

from __future__ import annotations

from hpscale.fitting.forms import CRITICAL_BY, DEFAULT_PRIOR_WIDTH, HYPER_FORMS, HYPER_METHODS, PRIOR_NAMES

KINDS: tuple[str, ...] = ("hyper", "loss", "trajectory", "critical-batch")
FORMS: dict[str, tuple[str, ...]] = {
    "hyper": HYPER_FORMS,
    "loss": ("chinchilla",),
    "trajectory": ("multi_power", "momentum"),
    "critical-batch": ("power",),
}
DEFAULT_FORM = {"hyper": "steplaw", "loss": "chinchilla", "trajectory": "multi_power", "critical-batch": "power"}
METHODS = HYPER_METHODS
# The variables of a critical-batch law, as answers name them.
CRITICAL_BY_WORDS = {"n_params": "N", "tokens": "E_min (tokens)", "target_loss": "the target loss"}
__all__ = ["CRITICAL_BY", "CRITICAL_BY_WORDS", "DEFAULT_FORM", "DEFAULT_PRIOR_WIDTH", "FORMS", "KINDS", "METHODS", "PRIOR_NAMES"]
