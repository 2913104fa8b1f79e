"""A degenerate fit is named as such, and predicting from it never raises."""

from __future__ import annotations

import math

from hpscale.fitting.hyper import HyperLaw
from hpscale.fitting.presets import PRESETS
from hpscale.fitting.sanity import law_problems

SEEN = {  # the law stored from a Step Law-format MoE file grouped by total parameters
    "kind": "hyper", "form": "steplaw",
    "coefficients": {"a_lr": 0.0, "alpha_lr": 35.6, "beta_lr": 0.2, "a_b": 0.5, "beta_b": 0.5},
    "intervals": {"a_lr": [0.0, float("nan")], "alpha_lr": [-85.6, 145.5], "beta_lr": [0.1, 0.3],
                  "a_b": [0.1, 1.0], "beta_b": [0.4, 0.6]},
}


def test_the_degenerate_law_seen_is_named_with_each_reason() -> None:
    problems = law_problems(SEEN)
    text = " | ".join(problems)
    assert "a_lr = 0" in text and "alpha_lr = 35.6" in text
    assert "interval of a_lr" in text and "interval of exponent alpha_lr" in text


def test_published_and_normal_laws_have_no_problems() -> None:
    for preset in PRESETS.values():
        assert law_problems(preset.law.to_record()) == []
    loss = {"kind": "loss", "coefficients": {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37},
            "intervals": {"E": [1.7, 1.9], "alpha": [0.3, 0.4]}}
    assert law_problems(loss) == []
    assert law_problems({**loss, "coefficients": {**loss["coefficients"], "E": -1.0}})
    assert law_problems({"kind": "loss", "coefficients": {}}) == ["the law has no coefficients"]


def test_prediction_from_an_absurd_law_is_inf_not_an_overflow_error() -> None:
    law = HyperLaw.from_coefficients("steplaw", {**SEEN["coefficients"], "a_lr": 1.0})
    pred = law.predict(7e9, 1.4e12)
    assert math.isinf(pred.lr) and math.isfinite(pred.batch_tokens)
    broken = HyperLaw.from_coefficients("steplaw", SEEN["coefficients"])
    assert math.isnan(broken.predict(7e9, 1.4e12).lr)


def test_a_grid_that_never_searched_a_hyperparameter_is_a_failed_fit() -> None:
    # A Step Law-format file with one lr per (N, D) group (or one batch size): each group's
    # "optimum" is whatever was run, and the law fitted to it once came out with exponents of
    # the wrong sign, passed its check and became the default.
    import numpy as np
    from fitting_synthetic import synthetic_grid

    grid = synthetic_grid()
    full = HyperLaw(n_bootstrap=0, on_edge="warn").fit(grid)
    assert full.design_ == {"groups": 12, "groups_with_lr_choice": 12, "groups_with_batch_choice": 12, "given_optima": 0,
                            "sizes": 4, "token_counts": 3}
    assert law_problems(full.to_record()) == []

    def one_per_group(values: np.ndarray) -> np.ndarray:
        keep = np.zeros(len(grid), bool)
        for n, d in set(zip(grid.n_params, grid.tokens)):
            g = (grid.n_params == n) & (grid.tokens == d)
            keep |= g & (values == np.median(values[g]))  # the grid's middle value of each group
        return keep

    one_lr = HyperLaw(n_bootstrap=0, on_edge="warn").fit(grid.subset(one_per_group(grid.lr)))
    text = " | ".join(law_problems(one_lr.to_record()))
    assert "only 0 of 12 (N, D) groups were trained at more than one learning rate" in text
    assert "batch size" not in text
    # One batch per group still locates lr*: the law stands, and says its B* only repeats the
    # batch that was run (a sweep of the lr at a fixed batch is a common design).
    one_b = HyperLaw(n_bootstrap=0, on_edge="warn").fit(grid.subset(one_per_group(grid.batch_tokens)))
    assert law_problems(one_b.to_record()) == []
    assert any("only 0 of 12 (N, D) groups were trained at more than one batch size" in w
               and "repeats the batch sizes that were run" in w for w in one_b.warnings_)
    assert abs(one_b.coef_["alpha_lr"] - full.coef_["alpha_lr"]) < 0.05


def test_an_interval_reaching_infinity_stays_ordered() -> None:
    # Half the bootstrap samples of a failed law had an intercept beyond exp's range: the upper
    # bound once came out as 0 (inf - inf interpolated to nan), below the lower one.
    coef = {"a_lr": 1.79, "alpha_lr": -0.713, "beta_lr": 0.307, "a_b": 0.58, "beta_b": 0.571}
    law = HyperLaw.from_coefficients("steplaw", coef)
    law.coef_samples_ = [dict(coef)] * 50 + [{**coef, "a_lr": math.inf, "a_b": math.inf}] * 50
    p = law.predict(1e9, 2e10)
    assert p.lr_interval[0] <= p.lr_interval[1] == math.inf
    assert p.batch_tokens_interval[0] <= p.batch_tokens_interval[1] == math.inf


def test_published_optima_one_run_per_group_fit_as_given() -> None:
    # Optima published as one (lr, batch) per (N, D), imported as one run each, are what a law is
    # fitted through: no group searched anything, and none needed to.
    import numpy as np
    from fitting_synthetic import TRUE_HYPER, synthetic_grid

    grid = synthetic_grid()
    best = [int(np.flatnonzero(m)[np.argmin(grid.final_loss[m])])
            for m in ((grid.n_params == n) & (grid.tokens == d) for n, d in sorted(set(zip(grid.n_params, grid.tokens))))]
    law = HyperLaw(n_bootstrap=20, on_edge="warn").fit(grid.subset(np.array(best)))
    assert law.design_["given_optima"] == 12 and law_problems(law.to_record()) == []
    assert abs(law.coef_["alpha_lr"] - TRUE_HYPER["alpha_lr"]) < 0.05
