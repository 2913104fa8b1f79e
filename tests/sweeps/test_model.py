"""The stacked GPT: shapes, parameter counts, member independence, flat-buffer aliasing."""

from __future__ import annotations

import math
import os

import pytest
import torch

from hpscale.sweeps.errors import TrainError
from hpscale.sweeps.model import StackedGPT, param_layout
from hpscale.sweeps.shape import GPTConfig, config_for_params, flops_per_token, n_params

TINY = GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layers=2, n_heads=2)

# The in-place gradient accumulation into strided views is intended (see sweeps.model).
pytestmark = [
    pytest.mark.filterwarnings("ignore:grad and param do not obey the gradient layout contract"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def tokens(seed: int, batch: int = 3, length: int = 17) -> torch.Tensor:
    return torch.randint(0, TINY.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_n_params_is_twelve_layers_d_squared_for_the_standard_block() -> None:
    cfg = GPTConfig(vocab_size=8192, d_model=512, n_layers=8, n_heads=8)
    assert n_params(cfg) == 12 * 8 * 512**2
    specs, total = param_layout(cfg)
    block = sum(s.numel for s in specs if s.name.split("_")[0].startswith("h") and s.std > 0)
    assert block == n_params(cfg)
    assert total >= sum(s.numel for s in specs)
    assert all(s.offset % 64 == 0 for s in specs)


def test_flops_per_token_counts_matrices_head_and_attention() -> None:
    cfg = GPTConfig(vocab_size=1000, seq_len=100, d_model=64, n_layers=2, n_heads=1)
    expected = 6 * (12 * 2 * 64**2 + 64 * 1000) + 12 * 2 * 100 * 64
    assert flops_per_token(cfg) == expected


@pytest.mark.parametrize(("target", "d", "layers"), [(25e6, 512, 8), (85e6, 768, 12), (3e6, 256, 4)])
def test_config_for_params_finds_the_usual_shapes(target: float, d: int, layers: int) -> None:
    cfg = config_for_params(target)
    assert (cfg.d_model, cfg.n_layers, cfg.head_dim) == (d, layers, 64)
    assert abs(math.log(n_params(cfg) / target)) < 0.1


def test_bad_shapes_raise_the_package_error() -> None:
    with pytest.raises(TrainError, match="divisible"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(TrainError):
        config_for_params(-1)
    with pytest.raises(TrainError, match="at least one member"):
        StackedGPT(TINY, [])


def test_weights_are_views_of_the_flat_buffer_and_grads_accumulate_into_it() -> None:
    model = StackedGPT(TINY, [0, 1])
    wqkv = model.weights["h0_wqkv"]
    assert wqkv.shape == (2, 32, 96)
    assert all(p.untyped_storage().data_ptr() == model.flat.untyped_storage().data_ptr()
               for p in model.parameters_in_order())
    model.flat.zero_()
    assert wqkv.abs().sum() == 0  # aliasing: writing the buffer changes the weight
    model = StackedGPT(TINY, [0, 1])
    model.loss(tokens(0)).sum().backward()
    assert model.flat_grad.abs().sum() > 0
    grads = [p.grad for p in model.parameters_in_order()]
    assert all(g is not None and g.untyped_storage().data_ptr() == model.flat_grad.untyped_storage().data_ptr()
               for g in grads)
    views = model.views_of(model.flat_grad)
    assert all(torch.equal(v, g) for v, g in zip(views, grads))
    model.zero_grad()
    assert model.flat_grad.abs().sum() == 0 and model.weights["wte"].grad is not None


def test_member_init_depends_only_on_its_seed() -> None:
    alone = StackedGPT(TINY, [7])
    stacked = StackedGPT(TINY, [3, 7, 7])
    assert torch.equal(stacked.flat[1], alone.flat[0])
    assert torch.equal(stacked.flat[1], stacked.flat[2])
    assert not torch.equal(stacked.flat[0], stacked.flat[1])


def test_members_do_not_interact_in_forward_or_backward() -> None:
    stacked = StackedGPT(TINY, [3, 7, 11])
    with torch.no_grad():
        stacked.flat[0].mul_(5.0)  # make member 0 very different
    batch = tokens(1)
    losses = stacked.loss(batch)
    alone = StackedGPT(TINY, [7])
    assert torch.allclose(losses[1], alone.loss(batch)[0], rtol=1e-6)
    losses[1].backward()  # only member 1's row may receive gradient
    norms = stacked.flat_grad.abs().sum(1)
    assert norms[1] > 0 and norms[0] == 0 and norms[2] == 0


def test_a_batch_per_member_trains_each_member_as_it_would_alone() -> None:
    stacked = StackedGPT(TINY, [3, 7, 11])
    own = torch.stack([tokens(1), tokens(2), tokens(3)])  # [K, B, T + 1]
    losses = stacked.loss(own)
    for k, seed in enumerate((3, 7, 11)):
        alone = StackedGPT(TINY, [seed])
        assert torch.allclose(losses[k], alone.loss(own[k])[0], rtol=1e-6)
    losses.sum().backward()
    alone = StackedGPT(TINY, [7])
    alone.loss(own[1]).sum().backward()
    assert torch.allclose(stacked.flat_grad[1], alone.flat_grad[0], rtol=1e-5, atol=1e-8)
    # Equal rows are the shared batch, exactly.
    same = torch.stack([tokens(1)] * 3)
    assert torch.equal(stacked.loss(same), stacked.loss(tokens(1)))
    assert stacked(own[:, :, :-1]).shape == (3, 3, 16, TINY.vocab_size)
    with pytest.raises(TrainError, match="needs 3 batches"):
        stacked.loss(own[:2])


def test_attention_is_causal() -> None:
    model = StackedGPT(TINY, [0, 1])
    idx = tokens(2)[:, :16]
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % TINY.vocab_size
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.shape == (2, 3, 16, 64)
    assert torch.allclose(a[:, :, :-1], b[:, :, :-1], atol=1e-6)
    assert not torch.allclose(a[:, :, -1], b[:, :, -1])


def test_tied_embeddings_share_the_embedding_matrix() -> None:
    cfg = GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layers=1, n_heads=2, tie_embeddings=True)
    model = StackedGPT(cfg, [0])
    assert "lm_head" not in model.weights
    loss = model.loss(tokens(3))
    assert loss.shape == (1,) and abs(loss.item() - math.log(64)) < 0.5  # near uniform at init
    loss.sum().backward()
    assert model.weights["wte"].grad.abs().sum() > 0


def test_sequence_longer_than_seq_len_is_refused() -> None:
    with pytest.raises(TrainError, match="longer than seq_len"):
        StackedGPT(TINY, [0]).loss(tokens(0, length=18))


@pytest.mark.skipif(not os.environ.get("HPSCALE_TEST_COMPILE"),
                    reason="torch.compile on the CPU takes ~1 min; set HPSCALE_TEST_COMPILE=1")
@pytest.mark.parametrize("k", [1, 3])
def test_compiled_step_matches_eager(k: int) -> None:
    """DESIGN.md: compiling K = 1 failed in backward on torch 2.11 with [K, 1, d] norm gains."""
    from hpscale.sweeps.train import CellTrainer, TrainConfig

    compiled = CellTrainer(TINY, TrainConfig(batch_size=3, total_steps=3, compile=True), [1e-3] * k, [0] * k)
    eager = CellTrainer(TINY, TrainConfig(batch_size=3, total_steps=3, compile=False), [1e-3] * k, [0] * k)
    for step in range(3):
        a, b = compiled.step(tokens(step)), eager.step(tokens(step))
        assert torch.allclose(a, b, rtol=1e-4)
    # Adam amplifies rounding in near-zero gradients, so compare the weights as a whole.
    diff = (compiled.model.flat - eager.model.flat).norm() / eager.model.flat.norm()
    assert diff < 1e-4
