"""What a fit can be asked for: law kinds (as ``hpscale fit --kind`` and ``POST /fits`` spell
them), their forms and default forms, and the hyper laws' methods. Names only, no numpy: the
CLI's help lists them without importing the fitting code (``service.fits`` does the fitting)."""

from __future__ import annotations

from hpscale.fitting.forms import DEFAULT_PRIOR_WIDTH, HYPER_FORMS, HYPER_METHODS, PRIOR_NAMES

KINDS: tuple[str, ...] = ("hyper", "loss", "trajectory", "critical-batch")
FORMS: dict[str, tuple[str, ...]] = {
    "hyper": HYPER_FORMS,
    "loss": ("chinchilla",),
    "trajectory": ("multi_power", "momentum"),
    "critical-batch": ("power",),
}
DEFAULT_FORM = {"hyper": "steplaw", "loss": "chinchilla", "trajectory": "multi_power", "critical-batch": "power"}
METHODS = HYPER_METHODS
# Critical-batch laws: the variable x of B_crit = k x^p (fitting.critical.BY, here without numpy).
CRITICAL_BY: tuple[str, ...] = ("n_params", "tokens", "target_loss")
__all__ = ["CRITICAL_BY", "DEFAULT_FORM", "DEFAULT_PRIOR_WIDTH", "FORMS", "KINDS", "METHODS", "PRIOR_NAMES"]
