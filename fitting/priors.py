"""Published laws as priors on a fitted hyper law's exponents.

A sweep of three or four model sizes measures lr*'s exponents with an uncertainty of +-0.2 or
more; the published laws were fitted on models up to billions of parameters. With a prior, the
fitted exponents are pulled toward a published law's by a Gaussian of stated width on each
exponent, so that a small sweep extrapolates like the literature unless its data say otherwise;
with enough data the data win. Intercepts carry no prior (a sweep's own corpus, tokenizer and
model family set the level of lr*; only the slopes transfer).

How: each hyper method first fits its law to the data alone. The data's precision on the law's
coefficients is taken at the level at which the law is fitted, the groups: X'X / s^2 with X the
groups' design rows (1, log N, log D, or 1, log C) and s^2 the scatter of the groups' own
optima around the law (with a weak inverse-gamma prior of ``PRIOR_SCATTER`` worth
``PRIOR_SCATTER_DOF`` groups, so that three groups on a line do not claim certainty). The
posterior mean combines it with the prior's precision, for the lr law and the batch law
separately. Bootstrap samples are combined the same way, each with a draw of the prior, so that
their spread is the posterior's.

Centres, in the fitted form's coefficient names:
- ``steplaw`` (Step Law, 2025), for forms steplaw and full: alpha_lr -0.713, beta_lr 0.307,
  beta_b 0.571; alpha_b 0 in the full form (Step Law's B* does not depend on N).
- ``deepseek`` (DeepSeek LLM, 2024), for every form: gamma_lr -0.125 and gamma_b 0.3271 on C;
  on N and D (C = 6 N D) each C-exponent is both the N and the D exponent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hpscale.fitting.errors import FittingError
from hpscale.fitting.forms import DEFAULT_PRIOR_WIDTH as DEFAULT_WIDTH
from hpscale.fitting.forms import PRIOR_NAMES  # names in fitting.forms: the CLI's help lists them
PRIOR_SCATTER = 0.2  # log units: a typical group optimum's distance from the law (Step Law: 0.11-0.26)
PRIOR_SCATTER_DOF = 2.0


class PriorError(FittingError):
    """A prior that does not apply to the law's form, or a bad width."""


@dataclass(frozen=True)
class Prior:
    """A Gaussian prior on exponents: ``centres`` (coefficient -> centre) and one ``width``
    (standard deviation) for each."""

    name: str
    width: float
    centres: dict[str, float]

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "width": self.width, "centres": dict(self.centres)}


def prior_for(name: str | None, form: str, width: float = DEFAULT_WIDTH) -> Prior | None:
    """The prior ``name`` ("steplaw", "deepseek"; None or "none": no prior) on ``form``'s exponents."""
    if name in (None, "none"):
        return None
    if name not in PRIOR_NAMES:
        raise PriorError(f"unknown prior {name!r}; expected one of {', '.join(PRIOR_NAMES)}")
    if not (np.isfinite(width) and width > 0):
        raise PriorError(f"the prior width must be a finite number > 0 (got {width!r})")
    from hpscale.fitting.presets import PRESETS  # presets build HyperLaws: imported late

    coef = PRESETS[name].law.coef_
    assert coef is not None
    if name == "steplaw":
        if form == "compute":
            raise PriorError("the steplaw prior constrains exponents on N and D: use form steplaw or full "
                             "(or the deepseek prior with form compute)")
        centres = {"alpha_lr": coef["alpha_lr"], "beta_lr": coef["beta_lr"], "beta_b": coef["beta_b"]}
        if form == "full":
            centres["alpha_b"] = 0.0
    else:
        g_lr, g_b = coef["gamma_lr"], coef["gamma_b"]
        if form == "compute":
            centres = {"gamma_lr": g_lr, "gamma_b": g_b}
        else:
            centres = {"alpha_lr": g_lr, "beta_lr": g_lr, "beta_b": g_b}
            if form == "full":
                centres["alpha_b"] = g_b
    return Prior(name=name, width=float(width), centres=centres)


@dataclass(frozen=True)
class Combiner:
    """The linear map from a data-only coefficient vector (log intercept first, then exponents,
    in one equation's order) to the posterior mean: ``post = gain @ data + offset(centre)``."""

    gain: np.ndarray
    prior_precision: np.ndarray
    posterior_cov: np.ndarray
    centre: np.ndarray
    names: tuple[str, ...]

    def apply(self, beta: np.ndarray, centre: np.ndarray | None = None) -> np.ndarray:
        mu = self.centre if centre is None else centre
        return self.gain @ beta + self.posterior_cov @ (self.prior_precision @ mu)


def combiner(prior: Prior, names: tuple[str, ...], design: np.ndarray, points: np.ndarray,
             beta_data: np.ndarray) -> Combiner:
    """The posterior-mean map of one equation (lr or batch) of a law.

    ``names`` are the equation's coefficients in order (intercept first), ``design`` the groups'
    log-space design rows (G, p), ``points`` the groups' own optima (log lr or log B, (G,)), and
    ``beta_data`` the data-only fit (intercept in log space), which the map is built around."""
    g, p = design.shape
    # The scatter of the groups' optima around the best power law through them (not around
    # beta_data: a method's optima may sit at a constant offset from its law, which says
    # nothing about how well the exponents are determined).
    own, *_ = np.linalg.lstsq(design, points, rcond=None)
    resid = points - design @ own
    s2 = (float(resid @ resid) + PRIOR_SCATTER_DOF * PRIOR_SCATTER**2) / max(g - p + PRIOR_SCATTER_DOF, 1.0)
    data_precision = design.T @ design / s2
    prior_precision = np.zeros((p, p))
    centre = np.zeros(p)
    for j, name in enumerate(names):
        if name in prior.centres:
            prior_precision[j, j] = 1.0 / prior.width**2
            centre[j] = prior.centres[name]
    posterior_cov = np.linalg.pinv(data_precision + prior_precision)
    return Combiner(gain=posterior_cov @ data_precision, prior_precision=prior_precision,
                    posterior_cov=posterior_cov, centre=centre, names=names)
