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
