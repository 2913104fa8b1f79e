"""Train one cell with the real engine: corpus (``sweeps.data``), schedule (``fitting.schedules``)
and the fused trainer (``sweeps.train``). This is the only sweep module that imports torch, and
only when a :class:`TorchCellRunner` is built.

The worker (``sweeps.worker``) talks to any "cell runner": a callable
``runner(task, on_eval, on_progress) -> results`` with a ``corpus_hash`` attribute, where the
results have ``status`` ("done" / "diverged"), ``final_val_loss``, ``steps``, ``tokens`` and
``diverged_step`` (``sweeps.train.MemberResult``) and the events are ``sweeps.train.EvalEvent``
and ``sweeps.train.Progress``. Tests drive the worker with a runner that fakes training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscale.sweeps.errors import SweepError
from hpscale.sweeps.plan import Cell
from hpscale.sweeps.spec import SweepSpec, schedule_lrs


@dataclass(frozen=True)
class CellTask:
    """One cell to train: the spec it comes from and the members this worker owns."""

    spec: SweepSpec
    cell: Cell


def prepare_corpus(spec: SweepSpec, cache_dir: Path) -> Any:
    """The spec's corpus as a ``sweeps.data.Corpus`` (built into ``cache_dir`` on first use)."""
    from hpscale.sweeps import data

    c = spec.corpus
    cache_dir = Path(cache_dir)
    if c.kind == "python-source":
        return data.build_python_source_corpus(cache_dir, vocab_size=spec.tokenizer.vocab_size,
                                               val_fraction=c.val_fraction, tokenizer_max_bytes=spec.tokenizer.max_bytes,
                                               max_files=c.max_files, max_bytes=c.max_bytes)
    if c.kind == "folder":
        return data.build_text_corpus(Path(c.path).expanduser(), cache_dir, vocab_size=spec.tokenizer.vocab_size,  # type: ignore[arg-type]
                                      val_fraction=c.val_fraction, tokenizer_max_bytes=spec.tokenizer.max_bytes,
                                      max_files=c.max_files, max_bytes=c.max_bytes)
    return data.load_token_bin(Path(c.path).expanduser(), c.vocab_size, dtype=c.dtype,  # type: ignore[arg-type]
                               val_fraction=c.val_fraction)


def resolve_device(requested: str) -> str:
    """"auto" becomes "cuda" when a GPU is visible, else "cpu"; others are checked."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise SweepError(f"device {requested!r} asked for, but torch sees no CUDA device")
    return requested


class TorchCellRunner:
    """Trains cells on one device with ``sweeps.train.train_cell``; the corpus is built once."""

    def __init__(self, spec: SweepSpec, cache_dir: Path, device: str = "auto") -> None:
        self.device = resolve_device(device)
        self.corpus = prepare_corpus(spec, cache_dir)
        self.corpus_hash: str = self.corpus.corpus_hash

    def __call__(self, task: CellTask, on_eval: Callable[[Any], None],
                 on_progress: Callable[[Any], None]) -> Sequence[Any]:
        from hpscale.sweeps import data
        from hpscale.sweeps.shape import GPTConfig
        from hpscale.sweeps.train import TrainConfig, train_cell

        spec, cell = task.spec, task.cell
        if self.corpus.vocab_size > spec.vocab_size:
            raise SweepError(f"corpus has {self.corpus.vocab_size} token ids, more than the spec's vocab_size "
                             f"{spec.vocab_size}")
        model = GPTConfig(vocab_size=spec.vocab_size, seq_len=cell.seq_len, d_model=cell.shape.d_model,
                          n_layers=cell.shape.n_layers, n_heads=cell.shape.n_heads)
        opt = spec.optimizer_for(cell.optimizer)
        train = TrainConfig(batch_size=cell.batch_size, total_steps=cell.steps, optimizer=opt, grad_clip=opt.grad_clip,
                            eval_interval=spec.eval.interval, eval_batches=spec.eval.batches,
                            divergence_factor=opt.divergence_factor, precision=spec.precision,
                            compile=spec.compile, cuda_graph=spec.cuda_graph, progress_interval=max(1, min(50, cell.steps // 20 or 1)))
        # A multiplier per step (peak 1): member k's lr at step i is lrs[k] * multiplier[i].
        multiplier = schedule_lrs(spec.schedule, cell.steps, 1.0)
        sampler = data.BatchSampler(self.corpus.train, cell.batch_size, cell.seq_len, seed=spec.data_seed)
        val = data.validation_batches(self.corpus, spec.eval.batches, spec.eval.batch_size, cell.seq_len,
                                      seed=spec.data_seed)
        return train_cell(model, train, [m.lr for m in cell.members], multiplier, sampler, val,
                          seeds=[m.seed for m in cell.members], device=self.device,
                          on_eval=on_eval, on_progress=on_progress)
