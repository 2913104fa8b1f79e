"""The fused optimizers (``sweeps.optim``): each equals a plain per-tensor implementation of its
paper's algorithm (and ``torch.optim`` where it has one) over several steps, and a member
trained fused equals the same run trained alone, for every optimizer."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

from hpscale.sweeps.model import StackedGPT
from hpscale.sweeps.optim import NS_COEFFICIENTS, OPTIMIZERS, init_state, layout_of, make_update
from hpscale.sweeps.shape import GPTConfig
from hpscale.sweeps.spec import OPTIMIZER_SPECS, AdamWSpec, LAMBSpec, LionSpec, MuonSpec, SGDSaISpec, SGDSpec
from hpscale.sweeps.train import MemberResult, TrainConfig, train_cell

pytestmark = [
    pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract"),
    pytest.mark.usefixtures("one_torch_thread"),
]

CFG = GPTConfig(vocab_size=48, seq_len=16, d_model=32, n_layers=2, n_heads=2)
LRS = (3e-3, 2e-2)  # two members, two learning rates
MULTS = (0.3, 1.0, 0.8, 0.5, 0.9, 0.2)  # a schedule: the lr each step is lr x multiplier
STEPS = len(MULTS)

# Settings away from the defaults where the default would hide a term (SGD's L2 decay is 0).
SETTINGS = {
    "adamw": AdamWSpec(weight_decay=0.1),
    "lion": LionSpec(weight_decay=0.5),
    "sgd": SGDSpec(weight_decay=0.05, momentum=0.9),
    "sgd_nesterov": SGDSpec(weight_decay=0.05, momentum=0.8, nesterov=True),
    "sgd_sai": SGDSaISpec(weight_decay=0.1),
    "lamb": LAMBSpec(weight_decay=0.1),
    "muon": MuonSpec(weight_decay=0.1, adam_lr_ratio=0.1),
    "muon_plain": MuonSpec(weight_decay=0.0, nesterov=False, ns_steps=3),
}


# -- plain per-tensor references, written from the papers and reference implementations --------
# Each gets one member's weights as separate tensors (named, in layout order), their decay flags
# and the step's gradients, and updates the weights in place for learning rate ``lr``.
Ref = Callable[[list[Tensor], list[bool], list[Tensor], float, int, dict], None]


def ref_lion(ws: list[Tensor], decay: list[bool], gs: list[Tensor], lr: float, t: int, st: dict, s: LionSpec) -> None:
    # Chen et al. 2023, Algorithm 2 (lucidrains/lion-pytorch's update_fn).
    for i, (w, g) in enumerate(zip(ws, gs)):
        m = st.setdefault(i, torch.zeros_like(w))
        w.mul_(1.0 - lr * (s.weight_decay if decay[i] else 0.0))
        w.add_((m * s.beta1 + g * (1.0 - s.beta1)).sign(), alpha=-lr)
        m.mul_(s.beta2).add_(g, alpha=1.0 - s.beta2)


def ref_sgd_sai(ws: list[Tensor], decay: list[bool], gs: list[Tensor], lr: float, t: int, st: dict,
                s: SGDSaISpec) -> None:
    # SGD_sai.warmup_step / step of the paper's reference implementation, one tensor at a time.
    for i, (w, g) in enumerate(zip(ws, gs)):
        if t == 1:
            st[("gsnr", i)] = g.norm() / (g.std().nan_to_num() + s.eps)
            st[("buf", i)] = g.clone()
        else:
            st[("buf", i)].mul_(s.momentum).add_(g, alpha=1.0 - s.momentum)
        w.mul_(1.0 - (s.weight_decay if decay[i] else 0.0) * lr).add_(st[("buf", i)] * (-lr * st[("gsnr", i)]))


def ref_lamb(ws: list[Tensor], decay: list[bool], gs: list[Tensor], lr: float, t: int, st: dict, s: LAMBSpec) -> None:
    # You et al. 2020, Algorithm 2 (LAMB), phi = identity; trust ratio 1 where a norm is zero.
    for i, (w, g) in enumerate(zip(ws, gs)):
        m = st.setdefault(("m", i), torch.zeros_like(w))
        v = st.setdefault(("v", i), torch.zeros_like(w))
        m.mul_(s.beta1).add_(g, alpha=1.0 - s.beta1)
        v.mul_(s.beta2).add_(g * g, alpha=1.0 - s.beta2)
        r = (m / (1 - s.beta1 ** t)) / ((v / (1 - s.beta2 ** t)).sqrt() + s.eps)
        r = r + (s.weight_decay if decay[i] else 0.0) * w
        wn, rn = float(w.norm()), float(r.norm())
        ratio = wn / rn if wn > 0 and rn > 0 else 1.0
        w.add_(r, alpha=-lr * ratio)


def ref_zeropower(g: Tensor, steps: int) -> Tensor:
    # KellerJordan/Muon zeropower_via_newtonschulz5, in float32 or float64 (the reference casts to bfloat16).
    a, b, c = NS_COEFFICIENTS
    x = g if g.dtype == torch.float64 else g.float()
    if g.size(-2) > g.size(-1):
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * gram @ gram
        x = a * x + poly @ x
    if g.size(-2) > g.size(-1):
        x = x.mT
    return x


def ref_muon(ws: list[Tensor], decay: list[bool], gs: list[Tensor], lr: float, t: int, st: dict, s: MuonSpec,
             hidden: list[bool]) -> None:
    # KellerJordan/Muon SingleDeviceMuonWithAuxAdam: muon_update for the hidden matrices (in
    # nn.Linear's [fan_out, fan_in] layout: ours are stored transposed), adam_update otherwise.
    for i, (w, g) in enumerate(zip(ws, gs)):
        wd = s.weight_decay if decay[i] else 0.0
        if hidden[i]:
            grad, mom = g.T.clone(), st.setdefault(("mom", i), torch.zeros_like(g.T))
            mom.lerp_(grad, 1 - s.momentum)
            update = grad.lerp_(mom, s.momentum) if s.nesterov else mom
            update = ref_zeropower(update, s.ns_steps) * max(1, grad.size(-2) / grad.size(-1)) ** 0.5
            w.mul_(1 - lr * wd)
            w.add_(update.T, alpha=-lr)
        else:
            buf1 = st.setdefault(("b1", i), torch.zeros_like(w))
            buf2 = st.setdefault(("b2", i), torch.zeros_like(w))
            buf1.lerp_(g, 1 - s.adam_beta1)
            buf2.lerp_(g.square(), 1 - s.adam_beta2)
            update = (buf1 / (1 - s.adam_beta1 ** t)) / ((buf2 / (1 - s.adam_beta2 ** t)).sqrt() + s.adam_eps)
            alr = lr * s.adam_lr_ratio
            w.mul_(1 - alr * wd)
            w.add_(update, alpha=-alr)


def torch_optimizer(name: str, ws: list[Tensor], decay: list[bool], s: object) -> torch.optim.Optimizer:
    """torch.optim's AdamW / SGD over one member's weights, decayed and undecayed groups."""
    groups = [{"params": [w for w, d in zip(ws, decay) if d]}, {"params": [w for w, d in zip(ws, decay) if not d]}]
    if name == "adamw":
        assert isinstance(s, AdamWSpec)
        groups[0]["weight_decay"], groups[1]["weight_decay"] = s.weight_decay, 0.0
        return torch.optim.AdamW(groups, lr=1.0, betas=(s.beta1, s.beta2), eps=s.eps, foreach=False)
    assert isinstance(s, SGDSpec)
    groups[0]["weight_decay"], groups[1]["weight_decay"] = s.weight_decay, 0.0
    return torch.optim.SGD(groups, lr=1.0, momentum=s.momentum, nesterov=s.nesterov, foreach=False)


# -- the comparison ----------------------------------------------------------------------------
def fused_and_reference(case: str, max_norm: float) -> tuple[list[list[Tensor]], list[list[Tensor]]]:
    """Both members' weights after every step: fused (our update on the [K, P] buffers) and
    reference (each member separately, tensor by tensor)."""
    settings = SETTINGS[case]
    model = StackedGPT(CFG, [0, 1])
    layout = layout_of(model)
    state = init_state(settings.kind, len(LRS), layout, model.flat)
    update = make_update(settings, layout, max_norm, factor=1e9, ema_decay=0.98)
    k = len(LRS)
    lr_t, active = torch.tensor(LRS), torch.ones(k, dtype=torch.bool)
    best, ema, div, step_t = torch.full((k,), float("inf")), torch.zeros(k), torch.full((k,), -1.0), torch.zeros(())
    views = model.views_of(model.flat)
    decay = [s.decay for s in model.specs]
    hidden = [len(s.shape) == 2 and s.name not in ("wte", "lm_head") for s in model.specs]
    ref_ws = [[v[j].clone() for v in views] for j in range(k)]
    ref_state: list[dict] = [{} for _ in range(k)]
    torch_opts = [torch_optimizer(settings.kind, ref_ws[j], decay, settings) for j in range(k)] \
        if settings.kind in ("adamw", "sgd") else None
    gen = torch.Generator().manual_seed(5)
    fused_hist, ref_hist = [], []
    for t, mult in enumerate(MULTS, start=1):
        grads = model.views_of(model.flat_grad)
        model.flat_grad.zero_()
        for gview in grads:  # a real gradient's scale, different for every member and tensor
            gview.copy_(torch.randn(gview.shape, generator=gen) * 10 ** torch.empty(k, *[1] * (gview.dim() - 1)).uniform_(-3, 0, generator=gen))
        member_grads = [[gv[j].clone() for gv in grads] for j in range(k)]
        update(model.flat, model.flat_grad, state, lr_t, torch.tensor(mult), active, best, ema, div, step_t,
               torch.ones(k))
        fused_hist.append([[v[j].clone() for v in model.views_of(model.flat)] for j in range(k)])
        for j in range(k):
            gs = member_grads[j]
            if max_norm > 0:  # clip_grad_norm_ before the optimizer step, as a plain training loop does
                total = torch.sqrt(sum((g * g).sum() for g in gs))
                gs = [g * min(1.0, max_norm / (float(total) + 1e-6)) for g in gs]
            lr = LRS[j] * mult
            ws = ref_ws[j]
            if torch_opts is not None:
                for group in torch_opts[j].param_groups:
                    group["lr"] = lr
                for w, g in zip(ws, gs):
                    w.grad = g
                torch_opts[j].step()
            elif settings.kind == "lion":
                ref_lion(ws, decay, gs, lr, t, ref_state[j], settings)
            elif settings.kind == "sgd_sai":
                ref_sgd_sai(ws, decay, gs, lr, t, ref_state[j], settings)
            elif settings.kind == "lamb":
                ref_lamb(ws, decay, gs, lr, t, ref_state[j], settings)
            else:
                ref_muon(ws, decay, gs, lr, t, ref_state[j], settings, hidden)
        ref_hist.append([[w.detach().clone() for w in ref_ws[j]] for j in range(k)])
    return fused_hist, ref_hist


@pytest.mark.parametrize("max_norm", [0.0, 0.5])
@pytest.mark.parametrize("case", sorted(SETTINGS))
def test_update_equals_the_reference_algorithm(case: str, max_norm: float) -> None:
    fused, ref = fused_and_reference(case, max_norm)
    model = StackedGPT(CFG, [0])
    names = [s.name for s in model.specs]
    for step, (f_step, r_step) in enumerate(zip(fused, ref), start=1):
        for j in range(len(LRS)):
            for name, a, b in zip(names, f_step[j], r_step[j]):
                # Relative to the tensor: weights near zero make elementwise ratios meaningless.
                rel = float((a - b).norm() / b.norm())
                assert rel < 1e-5, f"{case} step {step} member {j} {name}: relative difference {rel:.2e}"
    # The weights moved, and the two members (two lrs) differ: the check compared something.
    first = StackedGPT(CFG, [0, 1]).views_of(StackedGPT(CFG, [0, 1]).flat)
    assert all(float((fused[-1][j][1] - first[1][j]).norm()) > 0 for j in range(len(LRS)))


def test_every_optimizer_of_the_spec_is_implemented_and_tested() -> None:
    assert set(OPTIMIZERS) == set(OPTIMIZER_SPECS)
    assert {s.kind for s in SETTINGS.values()} == set(OPTIMIZERS)


def test_sgd_sai_keeps_the_first_steps_scale() -> None:
    """The lr scale is the first gradient's signal-to-noise ratio, per weight tensor, for good."""
    model = StackedGPT(CFG, [0])
    layout = layout_of(model)
    state = init_state("sgd_sai", 1, layout, model.flat)
    update = make_update(SGDSaISpec(), layout, 0.0, 1e9, 0.98)
    args = (torch.tensor([1e-3]), torch.tensor(1.0), torch.ones(1, dtype=torch.bool), torch.full((1,), float("inf")),
            torch.zeros(1), torch.full((1,), -1.0))
    step_t = torch.zeros(())
    model.flat_grad.normal_()
    model.flat_grad.mul_(layout.block_of.lt(layout.n_blocks).float())  # padding gradients are zero
    update(model.flat, model.flat_grad, state, *args, step_t, torch.ones(1))
    first = state["gsnr"].clone()
    wte = model.views_of(model.flat_grad)[0][0]
    assert float(first[0, 0]) == pytest.approx(float(wte.norm() / wte.std()), rel=1e-5)
    model.flat_grad.mul_(7.0).add_(1.0)
    update(model.flat, model.flat_grad, state, *args, step_t, torch.ones(1))
    assert torch.equal(state["gsnr"], first)


def test_muon_columns_split_into_hidden_matrices_and_runs_outside_them() -> None:
    """Muon's two halves tile the flat columns: its hidden matrices, and the runs of columns outside
    them (embedding, head, gains, padding) on which its second moment lives, [K, Q]."""
    model = StackedGPT(CFG, [0, 1])
    layout = layout_of(model)
    owner = torch.zeros(model.n_flat, dtype=torch.int64)
    for (rows, cols), offsets in layout.matrices:
        for o in offsets:
            owner[o:o + rows * cols] += 1
    for o, n in layout.outside:
        owner[o:o + n] += 1
    assert torch.equal(owner, torch.ones_like(owner))  # every column in exactly one half
    runs = torch.cat([torch.arange(o, o + n) for o, n in layout.outside])
    assert torch.equal(runs, layout.outside_cols)
    assert all(a[0] + a[1] < b[0] for a, b in zip(layout.outside, layout.outside[1:]))  # maximal runs
    assert init_state("muon", 2, layout, model.flat)["v"].shape == (2, layout.outside_cols.numel())


def test_newton_schulz_in_bfloat16_stays_near_the_reference() -> None:
    """The GPUs run Newton-Schulz in bf16: within bf16's rounding of the reference's arithmetic
    (1.6-1.7% in Frobenius norm on these small shapes; the reference's own bf16 code lies 3.0-3.4% off),
    tall and wide alike, a zero matrix staying zero, and at least one step asked for."""
    from hpscale.sweeps.optim import newton_schulz

    gen = torch.Generator().manual_seed(1)
    for shape in ((4, 64, 64), (4, 48, 96), (4, 96, 48)):
        x = torch.randn(*shape, generator=gen)
        ref = ref_zeropower(x.double(), 5)
        got = newton_schulz(x, 5, torch.bfloat16)
        assert got.dtype == torch.float32
        assert float((got.double() - ref).norm() / ref.norm()) < 0.025, shape
    mixed = torch.randn(3, 16, 32, generator=gen)
    mixed[1] = 0.0
    out = newton_schulz(mixed, 5, torch.bfloat16)
    assert torch.equal(out[1], torch.zeros(16, 32)) and bool(out.isfinite().all())
    with pytest.raises(ValueError, match="at least one"):
        newton_schulz(mixed, 0)


def test_newton_schulz_orthogonalises() -> None:
    from hpscale.sweeps.optim import newton_schulz

    g = torch.randn(3, 24, 40, generator=torch.Generator().manual_seed(0))
    x = newton_schulz(g, 10)
    s = torch.linalg.svdvals(x)
    assert x.shape == g.shape and float(s.min()) > 0.6 and float(s.max()) < 1.25  # the quintic's band
    torch.testing.assert_close(newton_schulz(g.mT, 10), x.mT, rtol=1e-4, atol=1e-5)


# -- fused equals alone, per optimizer ------------------------------------------------------------
# Learning rates each optimizer trains with, a factor of 10 apart.
TRAIN_LRS = {"adamw": (1e-3, 1e-2), "lion": (1e-4, 1e-3), "sgd": (3e-2, 3e-1), "sgd_sai": (1e-4, 1e-3),
             "lamb": (1e-3, 1e-2), "muon": (2e-3, 2e-2)}
TRAIN_STEPS = 16


def _tokens(seed: int, n: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.arange(17 * 4 * n).remainder(11).view(n, 4, 17)
    noise = torch.randint(0, 48, (n, 4, 17), generator=g)
    return torch.where(torch.rand(n, 4, 17, generator=g) < 0.7, base, noise)


DATA, VAL = _tokens(0, TRAIN_STEPS), list(_tokens(1, 2))


def _train(kind: str, lrs: list[float], seeds: list[int]) -> list[MemberResult]:
    cfg = TrainConfig(batch_size=4, total_steps=TRAIN_STEPS, eval_interval=4, eval_batches=2,
                      optimizer=OPTIMIZER_SPECS[kind]())
    return train_cell(CFG, cfg, lrs, np.linspace(1.0, 0.2, TRAIN_STEPS), lambda s: DATA[s], VAL, seeds=seeds)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_fused_member_matches_the_same_run_alone(kind: str) -> None:
    lrs = list(TRAIN_LRS[kind])
    fused = _train(kind, lrs + [1e6], [0, 1, 2])  # the third member diverges at once
    assert [r.status for r in fused] == ["done", "done", "diverged"]
    curves = [np.array([[p.train_loss or 0.0, p.val_loss or 0.0] for p in r.curve]) for r in fused[:2]]
    assert fused[0].final_val_loss != fused[1].final_val_loss
    assert fused[0].curve[-1].val_loss < fused[0].curve[0].val_loss  # it trains
    for k in (0, 1):
        alone = _train(kind, [lrs[k]], [k])[0]
        np.testing.assert_allclose(np.array([[p.train_loss or 0.0, p.val_loss or 0.0] for p in alone.curve]),
                                   curves[k], rtol=1e-5)


@pytest.mark.skipif(not os.environ.get("HPSCALE_TEST_COMPILE"),
                    reason="torch.compile on the CPU takes minutes; set HPSCALE_TEST_COMPILE=1")
@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_compiled_update_matches_eager(kind: str) -> None:
    """Every update compiles as one graph (fullgraph: no break, no host sync) and computes the same."""
    results = []
    for compiled in (False, True):
        model = StackedGPT(CFG, [0, 1])
        layout = layout_of(model)
        state = init_state(kind, 2, layout, model.flat)
        fn = make_update(OPTIMIZER_SPECS[kind](), layout, 1.0, 2.0, 0.98)
        if compiled:
            fn = torch.compile(fn, fullgraph=True, dynamic=False)
        gen = torch.Generator().manual_seed(0)
        args = [torch.tensor(TRAIN_LRS[kind]), torch.tensor(1.0), torch.ones(2, dtype=torch.bool),
                torch.full((2,), float("inf")), torch.zeros(2), torch.full((2,), -1.0), torch.zeros(())]
        for _ in range(3):
            model.flat_grad.copy_(torch.randn(model.flat_grad.shape, generator=gen) * 0.01)
            model.flat_grad.mul_(layout.block_of.lt(layout.n_blocks).float())
            fn(model.flat, model.flat_grad, state, *args, torch.ones(2))
        results.append(model.flat.clone())
    assert float((results[0] - results[1]).norm() / results[0].norm()) < 1e-5
