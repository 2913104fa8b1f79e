"""The names of the hyper laws' forms, methods and priors, and of the variables a critical-batch
law can be a power of: plain values and no numpy, so that the CLI's help can list them without
importing the fitting code (``hyper``, ``priors`` and ``critical`` define what they mean)."""

from __future__ import annotations

HYPER_FORMS: tuple[str, ...] = ("steplaw", "full", "compute")
HYPER_METHODS: tuple[str, ...] = ("near_optimal", "smooth", "joint")
PRIOR_NAMES: tuple[str, ...] = ("none", "steplaw", "deepseek")
DEFAULT_PRIOR_WIDTH = 0.1  # standard deviation of the prior on each exponent
CRITICAL_BY: tuple[str, ...] = ("n_params", "tokens", "target_loss")  # x of B_crit = k x^p; tokens: E_min
