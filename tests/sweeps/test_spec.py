"""Sweep specs: the examples load, and every invalid spec fails with one line naming the field
path and the bad value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from hpscale.sweeps.spec import SpecError, check_paths, load_spec, parse_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "sweeps" / "examples"


def base(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "t", "sizes": [{"n_params": 1e6}], "tokens": {"per_param": [20]},
                            "lr": {"values": [1e-3, 3e-3]}, "batch_sizes": [8]}
    spec.update(over)
    return spec


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name and spec.sizes and all(spec.lr_grid(o.kind).grid() for o in spec.optimizer)


def test_gpu_example_is_the_promised_sweep() -> None:
    spec = load_spec(EXAMPLES / "gpu_small.yaml")
    assert spec.corpus.kind == "python-source" and len(spec.batch_sizes) == 3
    sizes = [12 * s.n_layers * s.d_model**2 for s in spec.sizes]  # type: ignore[operator]
    assert min(sizes) >= 0.5e6 and max(sizes) <= 4e6
    assert len(spec.lr.grid()) >= 8 and spec.lr.grid()[-1] / spec.lr.grid()[0] >= 30


def test_gpu_optimizer_specs_are_the_promised_sweeps() -> None:
    """benchmarks/optimizers: one GPU sweep per optimizer, each over at least 3 sizes spanning 8x,
    2 token budgets, 8 lrs x 3 batch sizes on the built-in corpus, refinement on."""
    from hpscale.sweeps.plan import build_plan
    from hpscale.sweeps.spec import OPTIMIZERS

    specs = [load_spec(p) for p in sorted((EXAMPLES.parents[1] / "benchmarks" / "optimizers").glob("*.yaml"))]
    assert sorted(s.optimizer[0].kind for s in specs) == sorted(OPTIMIZERS) and all(len(s.optimizer) == 1 for s in specs)
    assert len({s.name for s in specs}) == len(specs)
    for spec in specs:
        plan = build_plan(spec)
        sizes = sorted({c.shape.n_params for c in plan.cells})
        kind = spec.optimizer[0].kind
        assert len(sizes) >= 3 and sizes[-1] / sizes[0] >= 8, spec.name
        assert len({c.tokens for c in plan.cells if c.shape.n_params == sizes[0]}) == 2, spec.name
        assert len(spec.lr_grid(kind).grid()) == 8 and len(spec.batch_sizes) == 3, spec.name
        assert spec.refine.max_rounds >= 1 and spec.corpus.kind == "python-source" and spec.device == "cuda"


def test_defaults_and_derived_values() -> None:
    spec = parse_spec(base(lr={"low": 1e-4, "high": 1e-2, "count": 5}, batch_sizes=[16, 4]))
    assert spec.lr.grid() == [1e-4, 0.000316228, 0.001, 0.00316228, 0.01]
    assert spec.lr.log_step() == pytest.approx(math.log(10) / 2, rel=1e-5)
    assert spec.batch_sizes == [4, 16]  # sorted
    assert spec.schedule.kind == "cosine" and spec.device == "auto" and spec.seeds == [0]
    assert spec.vocab_size == 8192
    binary = parse_spec(base(corpus={"kind": "bin", "path": "x.bin", "vocab_size": 50257, "dtype": "uint16"}))
    assert binary.vocab_size == 50257


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"lr": {"low": 1e-3, "high": 1e-2, "count": 1}}, "lr.count: Input should be greater than or equal to 2 (got 1)"),
        ({"lr": {"low": 1e-2, "high": 1e-3, "count": 4}}, "lr: low 0.01 must be below high 0.001"),
        ({"lr": {"values": [1e-3, -1.0]}}, "lr.values.1: Input should be greater than 0 (got -1.0)"),
        ({"batch_sizes": [8, 0]}, "batch_sizes.1: Input should be greater than or equal to 1 (got 0)"),
        ({"batch_sizes": [8, 8]}, "batch_sizes: values must be distinct (got [8, 8])"),
        ({"sizes": [{"n_params": 1e6, "d_model": 64}]}, "sizes.0: give n_params or d_model/n_layers/n_heads, not both"),
        ({"sizes": [{"d_model": 64, "n_layers": 2}]}, "sizes.0: give n_params, or all of d_model, n_layers and n_heads"),
        ({"sizes": [{"d_model": 60, "n_layers": 2, "n_heads": 4}]}, "sizes.0: d_model 60 must split into n_heads 4 heads of even size"),
        ({"tokens": {"values": [1e6], "per_param": [20]}}, "tokens: give exactly one of values"),
        ({"schedule": {"kind": "step"}}, "schedule.kind: Input should be 'constant', 'cosine', 'linear' or 'wsd' (got 'step')"),
        ({"schedule": {"warmup_fracton": 0.1}}, "schedule.warmup_fracton: Extra inputs are not permitted (got 0.1)"),
        ({"schedule": {"warmup_fraction": 1.5}}, "schedule.warmup_fraction: Input should be less than 1 (got 1.5)"),
        ({"corpus": {"kind": "bin", "path": "x.bin"}}, "corpus: kind bin needs vocab_size"),
        ({"corpus": {"kind": "folder"}}, "corpus: kind folder needs a path"),
        ({"tokenizer": {"vocab_size": 100}}, "tokenizer.vocab_size: Input should be greater than or equal to 258 (got 100)"),
        ({"device": "tpu"}, "device: use auto, cpu, cuda or cuda:N (got 'tpu')"),
        ({"precision": "fp8"}, "precision: Input should be 'auto', 'fp32' or 'bf16' (got 'fp8')"),
        ({"cuda_graph": "maybe"}, "cuda_graph: Input should be a valid boolean, unable to interpret input (got 'maybe')"),
        ({"name": "has space"}, "name: use 1-100 letters"),
        ({"workers": {"heartbeat_s": 30, "grace_s": 20}}, "workers: grace_s 20 must exceed heartbeat_s 30"),
        ({"seq_len": "long"}, "seq_len: Input should be a valid integer, unable to parse string as an integer (got 'long')"),
        ({"optimizer": {"kind": "adam"}}, "optimizer.kind: Input tag 'adam' found using 'kind' does not match any of the expected tags: 'adamw', 'lion'"),
        ({"optimizer": {"kind": "lion", "beta2": 1.0}}, "optimizer.beta2: Input should be less than 1 (got 1.0)"),
        ({"optimizer": {"kind": "lion", "momentum": 0.9}}, "optimizer.momentum: Extra inputs are not permitted (got 0.9)"),
        ({"optimizer": {"weight_decay": -0.1}}, "optimizer.weight_decay: Input should be greater than or equal to 0 (got -0.1)"),
        ({"optimizer": [{"kind": "adamw"}, {"kind": "muon", "ns_steps": 0}]}, "optimizer.1.ns_steps: Input should be greater than or equal to 1 (got 0)"),
        ({"optimizer": [{"kind": "sgd"}, {"kind": "lion", "lr": {"low": 1e-3, "high": 1e-4, "count": 3}}]}, "optimizer.1.lr: low 0.001 must be below high 0.0001"),
        ({"optimizer": [{"kind": "sgd", "nesterov": True, "momentum": 0.0}]}, "optimizer.0.nesterov: needs momentum > 0"),
        ({"optimizer": [{"kind": "lion"}, {"kind": "lion", "weight_decay": 0.3}]}, "optimizer: lion appears twice"),
        ({"optimizer": []}, "optimizer: Value should have at least 1 item after validation, not 0"),
        ({"lr": None, "optimizer": [{"kind": "adamw"}, {"kind": "lion", "lr": {"values": [1e-4]}}]},
         "lr: required, or an lr for each optimizer (none of its own: adamw)"),
        ({"tokens": None}, "(top level): give tokens (the token budgets), or schedule.branches for budgets branched"),
        ({"schedule": {"kind": "wsd", "branches": [1e6]}}, "(top level): give the token budgets once: in schedule.branches"),
        ({"tokens": None, "schedule": {"kind": "cosine", "branches": [1e6, 2e6]}},
         "schedule: branches need kind wsd (a cooldown to branch into), got kind cosine"),
        ({"tokens": None, "schedule": {"kind": "wsd", "warmup_fraction": 0.3, "cooldown_fraction": 0.8,
                                       "branches": [1e6]}},
         "schedule: warmup_fraction 0.3 + cooldown_fraction 0.8 exceed 1"),
        ({"tokens": None, "schedule": {"kind": "wsd", "branches": [1e6, -2]}},
         "schedule.branches.values.1: Input should be greater than 0 (got -2)"),
        ({"tokens": None, "schedule": {"kind": "wsd", "branches": {"per_param": [10], "values": [1e6]}}},
         "schedule.branches: give exactly one of values (tokens) or per_param"),
    ],
)
def test_errors_name_the_field_and_the_value(over: dict[str, Any], expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(base(**over), "s.yaml")
    message = str(info.value)
    assert message.startswith("s.yaml: ") and expected in message, message
    assert "\n" not in message


def test_an_optimizer_spec_from_before_the_optimizer_axis_is_adamw() -> None:
    spec = parse_spec(base(optimizer={"weight_decay": 0.2, "grad_clip": 0.5, "beta2": 0.99}))
    (opt,) = spec.optimizer
    assert opt.kind == "adamw" and opt.weight_decay == 0.2 and opt.grad_clip == 0.5 and opt.beta2 == 0.99
    assert opt.beta1 == 0.9 and opt.eps == 1e-8 and opt.lr is None
    assert spec.lr_grid("adamw").grid() == [1e-3, 3e-3]
    assert parse_spec(base()).optimizer[0].kind == "adamw"  # no optimizer at all: AdamW's defaults
    # A dumped spec (as stored with a sweep) reads back as the same spec.
    assert parse_spec(spec.model_dump(mode="json")) == spec


def test_a_list_of_optimizers_is_an_axis_with_per_kind_defaults_and_lr_grids() -> None:
    spec = parse_spec(base(optimizer=[
        {"kind": "adamw"},
        {"kind": "lion", "lr": {"low": 1e-4, "high": 1e-3, "count": 3}},
        {"kind": "sgd", "nesterov": True}, {"kind": "sgd_sai"}, {"kind": "lamb"}, {"kind": "muon", "ns_steps": 6},
    ]))
    adamw, lion, sgd, sai, lamb, muon = spec.optimizer
    assert (lion.beta1, lion.beta2, lion.weight_decay) == (0.9, 0.99, 1.0)
    assert (sgd.momentum, sgd.nesterov, sgd.weight_decay) == (0.9, True, 0.0)
    assert (sai.momentum, sai.eps, sai.weight_decay) == (0.9, 1e-8, 0.01)
    assert (lamb.beta1, lamb.beta2, lamb.eps, lamb.weight_decay) == (0.9, 0.999, 1e-6, 0.01)
    assert (muon.momentum, muon.nesterov, muon.ns_steps, muon.adam_lr_ratio) == (0.95, True, 6, 0.015)
    assert spec.lr_grid("lion").grid() == [1e-4, 0.000316228, 1e-3]
    assert spec.lr_grid("muon").grid() == spec.lr_grid("adamw").grid() == [1e-3, 3e-3]
    with pytest.raises(SpecError, match="has no optimizer 'adamw'"):
        parse_spec(base(optimizer={"kind": "lion"})).optimizer_for("adamw")


def test_missing_fields_are_listed_on_one_line() -> None:
    with pytest.raises(SpecError, match=r"^spec: sizes: Field required; batch_sizes: Field required$"):
        parse_spec({"name": "x"})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read sweep spec .*nope.yaml"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsizes: [\n  - oops: 1\n")
    with pytest.raises(SpecError, match=r"bad.yaml: line \d+ is not valid YAML"):
        load_spec(bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="a sweep spec is a mapping of fields, got list"):
        load_spec(listed)


def test_corpus_paths_are_checked_on_this_machine(tmp_path: Path) -> None:
    folder = parse_spec(base(corpus={"kind": "folder", "path": str(tmp_path / "texts")}))
    with pytest.raises(SpecError, match=r"^corpus.path: a folder that does not exist here \(got '.*texts'\)$"):
        check_paths(folder)
    (tmp_path / "texts").mkdir()
    check_paths(folder)
    tokens = parse_spec(base(corpus={"kind": "bin", "path": str(tmp_path / "t.bin"), "vocab_size": 300}))
    with pytest.raises(SpecError, match="corpus.path: a file that does not exist here"):
        check_paths(tokens)
    check_paths(parse_spec(base()))  # python-source: nothing to check


def test_branches_are_the_budgets_given_as_tokens_or_per_parameter() -> None:
    listed = parse_spec(base(tokens=None, schedule={"kind": "wsd", "branches": [2e6, 1e6]}))
    assert listed.budgets.values == [2e6, 1e6] and listed.tokens is None
    ratio = parse_spec(base(tokens=None, schedule={"kind": "wsd", "branches": {"per_param": [10, 20]}}))
    assert ratio.budgets.per_param == [10, 20] and ratio.schedule.cooldown_fraction == 0.2
    assert parse_spec(base()).budgets.per_param == [20]  # unbranched: the budgets are ``tokens``
    wsd = load_spec(EXAMPLES / "tiny_cpu_wsd.yaml")
    assert wsd.schedule.branches is not None and wsd.budgets.values == [8192, 12288, 16384]
