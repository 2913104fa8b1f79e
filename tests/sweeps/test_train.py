"""The fused trainer: a fused member equals the same run alone; divergence and clipping stay per member."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpscale.sweeps.errors import TrainError
from hpscale.sweeps.shape import GPTConfig
from hpscale.sweeps.optim import OPTIMIZERS, Layout, make_update
from hpscale.sweeps.spec import AdamWSpec
from hpscale.sweeps.train import (
    CellTrainer, EvalEvent, MemberResult, Progress, TrainConfig, train_branches, train_cell,
)

CFG = GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layers=2, n_heads=2)
STEPS = 24
LRS = [3e-4, 1e-3, 3e-3, 1e-2]

# The in-place gradient accumulation into strided views is intended (see sweeps.model).
pytestmark = [
    pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def _structured_tokens(seed: int, n: int) -> torch.Tensor:
    """[n, 4, 17] batches of a noisy repeating pattern: learnable, so losses move and lrs differ."""
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(17 * 4 * n).remainder(13).view(n, 4, 17)
    noise = torch.randint(0, 64, (n, 4, 17), generator=g)
    keep = torch.rand(n, 4, 17, generator=g) < 0.7
    return torch.where(keep, base, noise)


DATA = _structured_tokens(0, STEPS)
VAL = list(_structured_tokens(1, 2))


def run(lrs: list[float], seeds: list[int] | int = 0, steps: int = STEPS, **overrides: object) -> list[MemberResult]:
    cfg = TrainConfig(batch_size=4, total_steps=steps, eval_interval=6, eval_batches=2, **overrides)  # type: ignore[arg-type]
    schedule = np.linspace(1.0, 0.1, steps)
    return train_cell(CFG, cfg, lrs, schedule, lambda s: DATA[s], VAL, seeds=seeds)


def curve(result: MemberResult) -> np.ndarray:
    return np.array([[p.train_loss or 0.0, p.val_loss or 0.0] for p in result.curve])


def test_fused_member_matches_the_same_run_alone() -> None:
    fused = run(LRS, seeds=[0, 1, 2, 3])
    assert all(r.status == "done" for r in fused)
    finals = [r.final_val_loss for r in fused]
    assert len(set(finals)) == 4, "members with different lrs must reach different losses"
    for k in (0, 2, 3):
        alone = run([LRS[k]], seeds=[k])[0]
        assert len(alone.curve) == len(fused[k].curve) == STEPS // 6 + 1
        np.testing.assert_allclose(curve(fused[k]), curve(alone), rtol=1e-4)
        assert [p.lr for p in alone.curve] == pytest.approx([p.lr for p in fused[k].curve])


def test_a_member_with_its_own_batch_order_matches_the_same_run_alone() -> None:
    # Two seeds of one lr, each reading its own stream of batches ([K, B, T + 1] per step).
    other = _structured_tokens(5, STEPS)
    cfg = TrainConfig(batch_size=4, total_steps=STEPS, eval_interval=6, eval_batches=2)
    schedule = np.linspace(1.0, 0.1, STEPS)
    fused = train_cell(CFG, cfg, [1e-3, 1e-3], schedule, lambda s: torch.stack([DATA[s], other[s]]), VAL, seeds=[0, 1])
    alone = [train_cell(CFG, cfg, [1e-3], schedule, lambda s, d=d: d[s], VAL, seeds=[k])[0]
             for k, d in enumerate((DATA, other))]
    for mine, ref in zip(fused, alone):
        np.testing.assert_allclose(curve(mine), curve(ref), rtol=1e-4)
    assert fused[0].final_val_loss != fused[1].final_val_loss


def test_training_reduces_loss_and_is_deterministic() -> None:
    a, b = run([3e-3]), run([3e-3])
    assert a[0].final_val_loss == b[0].final_val_loss
    assert a[0].curve[-1].val_loss < a[0].curve[0].val_loss - 0.3
    assert a[0].tokens == STEPS * 4 * 16 and a[0].steps == STEPS


def test_diverging_member_is_masked_and_the_others_are_unchanged() -> None:
    clean = run([1e-3, 3e-3])
    with_bad = run([1e-3, 1e4, 3e-3])
    bad = with_bad[1]
    assert bad.status == "diverged" and bad.final_val_loss is None
    assert bad.diverged_step is not None and bad.steps == bad.diverged_step < STEPS
    for mine, ref in zip((with_bad[0], with_bad[2]), clean):
        assert mine.status == "done"
        np.testing.assert_allclose(curve(mine), curve(ref), rtol=1e-5)


def test_nan_loss_marks_the_member_diverged_at_that_step() -> None:
    trainer = CellTrainer(CFG, TrainConfig(batch_size=4, total_steps=4), [1e-3, 1e-3], [0, 0])
    trainer.step(DATA[0])
    with torch.no_grad():
        trainer.model.flat[1, :64].fill_(float("nan"))  # poison member 1's embedding rows
    frozen = trainer.model.flat[1].clone()
    losses = trainer.step(DATA[1])
    assert torch.isfinite(losses[0]) and not torch.isfinite(losses[1])
    assert trainer.active.tolist() == [True, False]
    assert trainer.diverged_step.tolist() == [-1.0, 1.0]
    trainer.step(DATA[2])
    assert torch.equal(trainer.model.flat[1].nan_to_num(7.0), frozen.nan_to_num(7.0))  # no update since
    assert torch.isfinite(trainer.model.flat[0]).all()


def test_one_hard_batch_is_not_a_divergence() -> None:
    # A cell learns an easy pattern (loss far below ln V), then meets one batch of random tokens
    # (loss above twice its best), then the pattern again: nobody diverged. Seen on the GPU: one
    # such batch marked every member of small-batch cells diverged at the same step.
    easy = torch.arange(60 * 4 * 17).remainder(5).view(60, 4, 17)
    hard = torch.randint(0, 64, (4, 17), generator=torch.Generator().manual_seed(0))
    batches = [easy[i] for i in range(40)] + [hard] + [easy[i] for i in range(40, 60)]
    cfg = TrainConfig(batch_size=4, total_steps=len(batches), eval_interval=20, eval_batches=1)
    results = train_cell(CFG, cfg, [3e-3, 1e-2], np.ones(len(batches)), batches.__getitem__, [easy[0]])
    assert [r.status for r in results] == ["done", "done"]
    # ... and the hard batch really costs more than twice the best: a per-step test would have fired.
    probe = CellTrainer(CFG, cfg, [1e-2], [0])
    best = min(float(probe.step(batches[i])[0]) for i in range(40))
    assert float(probe.step(hard)[0]) > 2 * best


def test_gradient_clipping_is_per_member() -> None:
    """Member 1's gradient norm is 1000, member 0's is 1, the clip is 10: only member 1 is scaled."""
    K, P = 2, 1000
    grad = torch.randn(K, P, generator=torch.Generator().manual_seed(0))
    grad = grad / grad.norm(dim=1, keepdim=True) * torch.tensor([[1.0], [1000.0]])
    flat, m, v = torch.zeros(K, P), torch.zeros(K, P), torch.zeros(K, P)
    layout = Layout(decay=torch.ones(1, P), blocks=((0, P),), block_of=torch.zeros(P, dtype=torch.int64),
                    hidden=torch.zeros(1, P), matrices=(), outside_cols=torch.arange(P), outside=((0, P),))
    update = make_update(AdamWSpec(weight_decay=0.0), layout, max_norm=10.0, factor=2.0, ema_decay=0.98)
    update(flat, grad, {"m": m, "v": v}, torch.full((K,), 1e-3), torch.tensor(1.0), torch.ones(K, dtype=torch.bool),
           torch.full((K,), float("inf")), torch.zeros(K), torch.full((K,), -1.0), torch.zeros(()), torch.ones(K))
    clipped = m / 0.1  # after one step m = (1 - beta1) * clipped gradient
    torch.testing.assert_close(clipped[0], grad[0])  # untouched by member 1's huge norm
    torch.testing.assert_close(clipped[1].norm(), torch.tensor(10.0))


def test_clipping_in_a_real_step_bounds_each_members_gradient() -> None:
    trainer = CellTrainer(CFG, TrainConfig(batch_size=4, total_steps=1, grad_clip=0.05), [1e-3, 1e-3], [0, 1])
    trainer.step(DATA[0])
    torch.testing.assert_close(trainer.opt_state["m"].norm(dim=1) / 0.1, torch.full((2,), 0.05), rtol=1e-4, atol=0)


def test_callbacks_report_every_evaluation_and_progress() -> None:
    events: list[EvalEvent] = []
    progress: list[Progress] = []
    cfg = TrainConfig(batch_size=4, total_steps=12, eval_interval=5, eval_batches=1, progress_interval=4)
    train_cell(CFG, cfg, [1e-3, 1e4], np.ones(12), lambda s: DATA[s], VAL, on_eval=events.append,
               on_progress=progress.append)
    assert [e.step for e in events] == [0, 5, 10, 12]
    assert events[0].train_loss == [None, None] and events[0].status == ["running", "running"]
    assert events[-1].status == ["done", "diverged"] and events[-1].val_loss[1] is None
    assert events[-1].tokens == 12 * 64 and events[-1].lr == pytest.approx([1e-3, 1e4])
    assert [p.step for p in progress] == [4, 8, 12] and all(p.tokens_per_s > 0 for p in progress)


def test_all_members_diverged_stops_early() -> None:
    results = run([1e4, 3e4])
    assert all(r.status == "diverged" for r in results)
    assert max(r.steps for r in results) < STEPS


def test_bad_arguments_raise_train_error() -> None:
    with pytest.raises(TrainError, match="lr_schedule"):
        train_cell(CFG, TrainConfig(batch_size=4, total_steps=5), [1e-3], np.ones(4), lambda s: DATA[s], VAL)
    with pytest.raises(TrainError, match="positive"):
        CellTrainer(CFG, TrainConfig(batch_size=4, total_steps=5), [0.0], [0])
    with pytest.raises(TrainError, match="one seed per"):
        CellTrainer(CFG, TrainConfig(batch_size=4, total_steps=5), [1e-3, 1e-2], [0])
    with pytest.raises(TrainError, match="batch_size"):
        TrainConfig(batch_size=0, total_steps=5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (CI has none; run on the lent GPU)")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graph_replays_the_same_training_as_plain_steps(compile: bool) -> None:
    # The step is captured after the warm-up and replayed: the curves must be those of plain
    # steps, and members must stay independent under the graph (the third diverges at once).
    steps = 20
    cfg = {"batch_size": 4, "total_steps": steps, "eval_interval": 5, "eval_batches": 2, "precision": "fp32",
           "compile": compile}
    schedule = np.linspace(1.0, 0.1, steps)
    lrs = [1e-3, 3e-3, 10.0]

    def go(members: list[float], graph: bool, seeds: list[int]) -> list[MemberResult]:
        return train_cell(CFG, TrainConfig(cuda_graph=graph, **cfg), members, schedule,  # type: ignore[arg-type]
                          lambda s: DATA[s], VAL, seeds=seeds, device="cuda")

    plain, graphed = go(lrs, False, [0, 1, 2]), go(lrs, True, [0, 1, 2])
    assert [r.status for r in graphed] == [r.status for r in plain] == ["done", "done", "diverged"]
    assert graphed[2].diverged_step == plain[2].diverged_step
    for a, b in zip(plain[:2], graphed[:2]):
        np.testing.assert_allclose(curve(b), curve(a), rtol=1e-5)
    alone = go([lrs[1]], True, [1])[0]
    np.testing.assert_allclose(curve(alone), curve(graphed[1]), rtol=1e-4)



@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (CI has none; run on the lent GPU)")
@pytest.mark.parametrize("compile", [False, True])
def test_a_batch_per_member_under_the_cuda_graph_matches_each_run_alone(compile: bool) -> None:
    # Two seeds of one lr reading their own batches ([K, B, T + 1]), compiled and replayed.
    steps = 20
    other = _structured_tokens(5, steps)
    cfg = TrainConfig(batch_size=4, total_steps=steps, eval_interval=5, eval_batches=2, precision="fp32",
                      compile=compile, cuda_graph=True)
    schedule = np.linspace(1.0, 0.1, steps)
    fused = train_cell(CFG, cfg, [1e-3, 1e-3], schedule, lambda s: torch.stack([DATA[s], other[s]]), VAL,
                       seeds=[0, 1], device="cuda")
    for k, data in enumerate((DATA, other)):
        alone = train_cell(CFG, cfg, [1e-3], schedule, lambda s, d=data: d[s], VAL, seeds=[k], device="cuda")[0]
        np.testing.assert_allclose(curve(fused[k]), curve(alone), rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (CI has none; run on the lent GPU)")
def test_a_member_poisoned_under_the_cuda_graph_is_masked_at_that_step() -> None:
    cfg = TrainConfig(batch_size=4, total_steps=12, precision="fp32", cuda_graph=True)
    trainer = CellTrainer(CFG, cfg, [1e-3, 1e-3], [0, 0], device="cuda")
    for i in range(6):  # the graph is captured at step 3 and replayed from then on
        trainer.step(DATA[i])
    assert trainer._graph is not None and trainer._graph.graph is not None
    with torch.no_grad():
        trainer.model.flat[1, :64].fill_(float("nan"))  # poison member 1's embedding rows
    frozen = trainer.model.flat[1].clone()
    losses = trainer.step(DATA[6]).tolist()
    assert np.isfinite(losses[0]) and not np.isfinite(losses[1])
    assert trainer.active.tolist() == [True, False] and trainer.diverged_step.tolist() == [-1.0, 6.0]
    trainer.step(DATA[7])
    assert torch.equal(trainer.model.flat[1].nan_to_num(7.0), frozen.nan_to_num(7.0))  # no update since
    assert torch.isfinite(trainer.model.flat[0]).all()


# -- branches: many budgets from one trunk ----------------------------------------------------
LONG = _structured_tokens(2, 60)


def _wsd(steps: int, warmup: int = 4, cooldown: float = 0.25) -> np.ndarray:
    from hpscale.fitting.schedules import lr_schedule

    return lr_schedule("wsd", steps, 1.0, warmup_steps=warmup, final_lr_ratio=0.0, cooldown_fraction=cooldown)


def _points(result: MemberResult) -> list[tuple]:  # type: ignore[type-arg]
    return [(p.step, p.tokens, p.lr, p.train_loss, p.val_loss) for p in result.curve]


def _alone(schedule: np.ndarray, lrs: list[float], seeds: list[int], interval: int) -> list[MemberResult]:
    cfg = TrainConfig(batch_size=4, total_steps=schedule.size, eval_interval=interval, eval_batches=2)
    return train_cell(CFG, cfg, lrs, schedule, lambda s: LONG[s], VAL, seeds=seeds)


@pytest.mark.parametrize("schedules, interval", [
    # WSD budgets of 24, 40 and 60 steps off one trunk; 40's branch point (30) is an evaluation step.
    ([_wsd(24), _wsd(40), _wsd(60)], 5),
    # Given in any order; two budgets of one length; evaluations that fall inside cooldowns only.
    ([_wsd(60), _wsd(24), _wsd(24)], 7),
    # Budgets that end on the trunk itself (no cooldown), one of them at an evaluation step.
    ([np.ones(12), np.ones(20), np.ones(30)], 6),
    # A schedule sharing no step with the trunk.
    ([np.full(10, 0.5), _wsd(30)], 4),
])
def test_each_branch_is_bitwise_the_run_of_its_budget_trained_alone(schedules: list[np.ndarray], interval: int) -> None:
    lrs, seeds = [1e-3, 3e-3], [0, 1]
    cfg = TrainConfig(batch_size=4, total_steps=1, eval_interval=interval, eval_batches=2)
    reported: list[int] = []
    branched = train_branches(CFG, cfg, lrs, schedules, lambda s: LONG[s], VAL, seeds=seeds,
                              on_result=lambda i, res: reported.append(i))
    assert sorted(reported) == list(range(len(schedules)))
    for schedule, got in zip(schedules, branched):
        ref = _alone(schedule, lrs, seeds, interval)
        for mine, alone in zip(got, ref):
            assert (mine.status, mine.steps, mine.tokens, mine.diverged_step) == \
                   (alone.status, alone.steps, alone.tokens, alone.diverged_step)
            assert mine.final_val_loss == alone.final_val_loss  # bitwise, float32 on the CPU
            assert _points(mine) == _points(alone)  # the whole curve from step 0, trunk points included
    finals = {r.final_val_loss for res in branched for r in res}
    assert len(finals) == len({s.tobytes() for s in schedules}) * len(lrs), "budgets must reach different losses"


def test_branches_report_in_order_and_share_the_trunk_points() -> None:
    schedules = [_wsd(24), _wsd(40), _wsd(60)]  # branch points 18, 30, 45
    events: list[EvalEvent] = []
    order: list[tuple[int, int]] = []  # (branch reported, evaluations seen by then)
    progress: list[Progress] = []
    cfg = TrainConfig(batch_size=4, total_steps=1, eval_interval=10, eval_batches=1, progress_interval=1)
    results = train_branches(CFG, cfg, [1e-3], schedules, lambda s: LONG[s], VAL, on_eval=events.append,
                             on_progress=progress.append, on_result=lambda i, res: order.append((i, len(events))))
    trunk = [(e.step, e.branches) for e in events if len(e.branches) > 1 or e.branches == (2,) and e.step <= 45]
    assert trunk[:2] == [(0, (0, 1, 2)), (10, (0, 1, 2))]
    assert (20, (1, 2)) in trunk and (30, (1, 2)) in trunk and (40, (2,)) in trunk
    assert [(e.step, e.branches) for e in events if e.branches == (0,)] == [(20, (0,)), (24, (0,))]
    assert [i for i, _ in order] == [0, 1, 2]  # each as soon as its cooldown ends, the trunk's own last
    assert events[order[0][1] - 1].status == ["done"] and events[order[0][1] - 1].step == 24
    # Steps trained: the trunk's 60, plus the cooldowns of 24 and 40 (6 and 10): 76, not 124.
    assert progress[-1].step == progress[-1].total_steps == 76
    assert [p.step for p in results[1][0].curve] == [0, 10, 20, 30, 40]


def test_a_member_diverging_on_the_trunk_diverges_in_every_branch_as_alone() -> None:
    schedules = [_wsd(24), _wsd(48)]
    lrs = [1e-3, 1e4]
    cfg = TrainConfig(batch_size=4, total_steps=1, eval_interval=6, eval_batches=2)
    branched = train_branches(CFG, cfg, lrs, schedules, lambda s: LONG[s], VAL, seeds=[0, 0])
    for schedule, got in zip(schedules, branched):
        ref = _alone(schedule, lrs, [0, 0], 6)
        assert [r.status for r in got] == [r.status for r in ref] == ["done", "diverged"]
        assert got[1].diverged_step == ref[1].diverged_step and got[0].final_val_loss == ref[0].final_val_loss


def test_snapshot_and_restore_bring_back_every_bit_of_state() -> None:
    trainer = CellTrainer(CFG, TrainConfig(batch_size=4, total_steps=8), [1e-3, 1e4], [0, 1])
    trainer.step(LONG[0])
    saved = trainer.snapshot()
    before = [t.clone() for t, _ in saved]
    ref = trainer.step(LONG[1]).clone()
    for s in range(2, 8):  # member 1 diverges meanwhile: divergence state must come back too
        trainer.step(LONG[s])
    assert not trainer.active[1]
    trainer.restore(saved)
    assert all(torch.equal(t.nan_to_num(7.0), b.nan_to_num(7.0)) for (t, _), b in zip(saved, before))
    assert bool(trainer.active[1]) and torch.equal(trainer.step(LONG[1]), ref)
    assert any(t is trainer.opt_state["m"] for t, _ in saved) and any(t is trainer.model.flat for t, _ in saved)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_branch_is_the_separate_run_with_every_optimizer(kind: str) -> None:
    # The snapshot finds each optimizer's state (sweeps.optim) on its own: Lion's one moment,
    # SGD-SaI's per-block statistics, Muon's two halves all come back, bit for bit.
    from hpscale.sweeps.spec import OPTIMIZER_SPECS

    schedules = [_wsd(16, warmup=2), _wsd(24, warmup=2)]
    lr = {"adamw": 3e-3, "lion": 3e-4, "sgd": 0.1, "sgd_sai": 3e-3, "lamb": 3e-3, "muon": 0.02}[kind]
    cfg = TrainConfig(batch_size=4, total_steps=1, eval_interval=8, eval_batches=1, optimizer=OPTIMIZER_SPECS[kind]())
    branched = train_branches(CFG, cfg, [lr], schedules, lambda s: LONG[s], VAL)
    for schedule, got in zip(schedules, branched):
        alone = train_cell(CFG, TrainConfig(batch_size=4, total_steps=schedule.size, eval_interval=8, eval_batches=1,
                                            optimizer=OPTIMIZER_SPECS[kind]()),
                           [lr], schedule, lambda s: LONG[s], VAL)
        assert got[0].status == alone[0].status == "done"
        assert _points(got[0]) == _points(alone[0])
    assert branched[0][0].final_val_loss != branched[1][0].final_val_loss


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (CI has none; run on the lent GPU)")
@pytest.mark.parametrize("compile", [False, True])
def test_branches_under_the_cuda_graph_match_separate_runs(compile: bool) -> None:
    # Snapshot and restore keep every tensor's address: the captured graph replays on restored
    # state, and each branch ends where a separate run of its budget ends.
    schedules = [_wsd(24), _wsd(40), _wsd(60)]
    lrs, seeds = [1e-3, 3e-3, 10.0], [0, 1, 2]
    cfg = {"batch_size": 4, "eval_interval": 5, "eval_batches": 2, "precision": "fp32", "compile": compile,
           "cuda_graph": True}
    branched = train_branches(CFG, TrainConfig(total_steps=1, **cfg), lrs, schedules,  # type: ignore[arg-type]
                              lambda s: LONG[s], VAL, seeds=seeds, device="cuda")
    for schedule, got in zip(schedules, branched):
        alone = train_cell(CFG, TrainConfig(total_steps=schedule.size, **cfg), lrs, schedule,  # type: ignore[arg-type]
                           lambda s: LONG[s], VAL, seeds=seeds, device="cuda")
        assert [r.status for r in got] == [r.status for r in alone] == ["done", "done", "diverged"]
        assert got[2].diverged_step == alone[2].diverged_step
        for a, b in zip(got[:2], alone[:2]):  # GPU kernels need not be deterministic: as fused vs alone above
            np.testing.assert_allclose(curve(a), curve(b), rtol=1e-4)
