"""Whether a law's record describes a usable law, or a degenerate fit that must not be trusted.

A fit can "succeed" numerically and still be nonsense: seen on a Step Law-format file of
mixture-of-experts runs grouped by total parameters, a hyper law with a_lr = 0 (interval
"0 .. nan") and alpha_lr = 35.6 (interval -85.6 .. 145.5) passed its extrapolation check and
then crashed every default recommendation. ``law_problems`` names what is wrong with a record;
a law with problems is stored as failed, is never the default, and says why wherever it is shown.

The bounds are loose on purpose: they catch fits that are broken, not laws that are merely
unusual. Exponents of published laws lie within +-1 (Step Law's steepest is -0.713).
"""

from __future__ import annotations

import math
from typing import Any

# |exponent| beyond this is no power law of a hyperparameter or a loss.
MAX_EXPONENT = 3.0
# A hyper exponent's interval may be wide, but one wider than this says the data did not
# determine it. (Not applied to loss laws: with 7-10 (N, D) points a bootstrap of E + A/N^alpha
# routinely trades a huge A against a large alpha, and the law's predictions stay usable.)
MAX_EXPONENT_INTERVAL = 5.0
SCALES = {"hyper": ("a_lr", "a_b"), "loss": ("A", "B")}
EXPONENTS = {
    "hyper": ("alpha_lr", "beta_lr", "alpha_b", "beta_b", "gamma_lr", "gamma_b"),
    "loss": ("alpha", "beta"),
}


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def law_problems(record: dict[str, Any]) -> list[str]:
    """What makes a law record unusable (empty: nothing). Checks every law's coefficients and
    intervals are finite, and for hyper and loss laws that scales are > 0 and exponents (and a
    hyper law's exponent intervals) lie within the bounds of the module doc."""
    problems: list[str] = []
    coef = record.get("coefficients")
    if not isinstance(coef, dict) or not coef:
        return ["the law has no coefficients"]
    kind = record.get("kind")
    for name, value in coef.items():
        if not _finite(value):
            problems.append(f"coefficient {name} is {value!r}, not a finite number")
    for name in SCALES.get(kind, ()):  # type: ignore[arg-type]
        if name in coef and _finite(coef[name]) and coef[name] <= 0:
            problems.append(f"coefficient {name} = {coef[name]:.3g}: a power law's scale must be > 0")
    if kind == "loss" and _finite(coef.get("E")) and coef["E"] < 0:
        problems.append(f"coefficient E = {coef['E']:.3g}: an irreducible loss cannot be negative")
    for name in EXPONENTS.get(kind, ()):  # type: ignore[arg-type]
        if name in coef and _finite(coef[name]) and abs(coef[name]) > MAX_EXPONENT:
            problems.append(f"exponent {name} = {coef[name]:.3g} lies beyond +-{MAX_EXPONENT:g}")
    if kind == "hyper":
        problems.extend(design_notes(record)[0])
    if kind == "loss":
        problems.extend(loss_design_problems(record))
    intervals = record.get("intervals")
    if isinstance(intervals, dict):
        for name, pair in intervals.items():
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(_finite(v) for v in pair)):
                problems.append(f"the interval of {name} is {pair!r}, not two finite numbers")
                continue
            lo, hi = pair
            if kind == "hyper" and name in EXPONENTS["hyper"] and hi - lo > MAX_EXPONENT_INTERVAL:
                problems.append(f"the interval of exponent {name} ({lo:.3g} .. {hi:.3g}) is wider than "
                                f"{MAX_EXPONENT_INTERVAL:g}: the data do not determine it")
    return problems


def design_notes(record: dict[str, Any]) -> tuple[list[str], list[str]]:
    """What a hyper law's grid (its record's ``design``) leaves undetermined: (problems,
    warnings). Each equation's coefficients need that many groups whose optimum was searched
    for. An lr law without them is a problem (a grid cut to one lr per group gave exponents of
    the wrong sign); a batch law without them is a warning: a sweep of the lr at one fixed batch
    still determines lr*, and its B* only repeats the batch that was run."""
    coef, design = record.get("coefficients"), record.get("design")
    problems: list[str] = []
    warnings: list[str] = []
    if record.get("kind") != "hyper" or not isinstance(design, dict) or not isinstance(coef, dict):
        return problems, warnings
    # The compute form fits on C = 6ND alone: with one model size (or one token count) C moves
    # only through the other variable, and the law cannot say what another size needs.
    fixed = [f"every group has one {what}" for what, key in (("model size", "sizes"), ("token count", "token_counts"))
             if design.get(key) == 1]
    if record.get("form") == "compute" and fixed:
        warnings.append(f"{' and '.join(fixed)}: C = 6ND varies only through the other, so this law says how lr* and "
                        "B* move with that one at the size (or budget) trained, not what another needs")
    for what, key, suffix, out in (("learning rate", "groups_with_lr_choice", "_lr", problems),
                                   ("batch size", "groups_with_batch_choice", "_b", warnings)):
        need = sum(name.endswith(suffix) for name in coef)
        have = design.get(key)
        if isinstance(have, int) and have < need:
            out.append(f"only {have} of {design.get('groups')} (N, D) groups were trained at more than one {what}; "
                       f"the law's {need} {what} coefficients need at least {need} such groups"
                       + (": its B* repeats the batch sizes that were run, it does not locate an optimum"
                          if out is warnings else " (add learning rates to the sweep)"))
    return problems, warnings



def loss_design_problems(record: dict[str, Any]) -> list[str]:
    """What a loss law's (N, D) points leave undetermined (its record's ``design``, from
    ``fitting.loss.loss_design``): points all on one line D = c N^k cannot separate the N and
    D terms (a fit on them trades A, alpha against B, beta, to A = 0 with alpha in the
    thousands on every model at 20 tokens a parameter), so no prediction off the line holds."""
    from hpscale.fitting.loss import ON_ONE_LINE  # loss imports nothing from here at load time

    design = record.get("design")
    if record.get("kind") != "loss" or not isinstance(design, dict) or not _finite(design.get("off_line")):
        return []
    if design["off_line"] < ON_ONE_LINE:
        return [f"its {design.get('points')} (N, D) points all lie within {100 * (ON_ONE_LINE - 1):.0f}% of one line "
                "D = c N^k: N's term and D's cannot be told apart (train some sizes at a second token budget)"]
    return []
