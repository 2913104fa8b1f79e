"""Train one cell with the real engine: corpus (``sweeps.data``), schedule (``fitting.schedules``)
and the fused trainer (``sweeps.train``). This is the only sweep module that imports torch, and
only when a :class:`TorchCellRunner` is built.

The worker (``sweeps.worker``) talks to any "cell runner": a callable
``runner(task, on_eval, on_progress, on_result)`` with a ``corpus_hash`` attribute. It trains
the task's members (``CellTask.members``) on every cell of the task and calls
``on_result(i, results)`` as soon as cell i (``CellTask.cells``) is finished, with one result
per member: ``status`` ("done" / "diverged"), ``final_val_loss``, ``steps``, ``tokens`` and
``diverged_step`` (``sweeps.train.MemberResult``). The events are ``sweeps.train.EvalEvent``
(``branches`` = the cells a point belongs to) and ``sweeps.train.Progress``. Tests drive the
worker with a runner that fakes training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpscale.sweeps.errors import SweepError
from hpscale.sweeps.plan import Cell, cell_schedule
from hpscale.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class CellTask:
    """One training job: a cell, or the cells of several token budgets branched off one trunk
    (``cell`` the longest, the trunk's own end; ``branches`` the shorter ones, shortest first).
    Each cell holds the members this worker owns in it."""

    spec: SweepSpec
    cell: Cell
    branches: tuple[Cell, ...] = ()

    @property
    def cells(self) -> tuple[Cell, ...]:
        """Every cell of the job, shortest first: the indices of ``on_result`` and ``EvalEvent.branches``."""
        return (*self.branches, self.cell)

    @property
    def key(self) -> str:
        """The trunk key of a branched job, else the cell key."""
        return self.cell.trunk if self.branches and self.cell.trunk else self.cell.key

    @property
    def members(self) -> tuple[tuple[float, int], ...]:
        """(peak lr, seed) of every member trained: those of all the cells (they share the trunk)."""
        return tuple(sorted({(m.lr, m.seed) for c in self.cells for m in c.members}))

    @property
    def steps(self) -> int:
        """Optimizer steps the job trains: the longest cell's, plus the other cells' cooldowns."""
        return self.cell.steps + sum(c.steps - (c.branch_step or 0) for c in self.branches)


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

    def __call__(self, task: CellTask, on_eval: Callable[[Any], None], on_progress: Callable[[Any], None],
                 on_result: Callable[[int, Sequence[Any]], None]) -> None:
        from hpscale.sweeps import data
        from hpscale.sweeps.shape import GPTConfig
        from hpscale.sweeps.train import TrainConfig, train_branches

        spec, cell = task.spec, task.cell  # the cells of a job share shape, batch and seq_len
        if self.corpus.vocab_size > spec.vocab_size:
            raise SweepError(f"corpus has {self.corpus.vocab_size} token ids, more than the spec's vocab_size "
                             f"{spec.vocab_size}")
        model = GPTConfig(vocab_size=spec.vocab_size, seq_len=cell.seq_len, d_model=cell.shape.d_model,
                          n_layers=cell.shape.n_layers, n_heads=cell.shape.n_heads)
        opt = spec.optimizer_for(cell.optimizer)
        train = TrainConfig(batch_size=cell.batch_size, total_steps=cell.steps, optimizer=opt, grad_clip=opt.grad_clip,
                            eval_interval=spec.eval.interval, eval_batches=spec.eval.batches,
                            divergence_factor=opt.divergence_factor, precision=spec.precision,
                            compile=spec.compile, cuda_graph=spec.cuda_graph, progress_interval=max(1, min(50, task.steps // 20 or 1)))
        # A multiplier per step (peak 1) for each cell: member k's lr at step i is lrs[k] * multiplier[i].
        # Branches share their leading steps with the longest cell's schedule; the trainer trains those once.
        schedules = [cell_schedule(spec, c) for c in task.cells]
        members = task.members
        # A member's seed picks its batch order too (spec.seeds_vary): seeds of one configuration
        # are then runs a repeat would give, not the same batches from two initialisations.
        streams = [seed if spec.seeds_vary == "init_and_data" else 0 for _, seed in members]
        sampler = data.MemberBatches(self.corpus.train, cell.batch_size, cell.seq_len, seed=spec.data_seed,
                                     streams=streams)
        val = data.validation_batches(self.corpus, spec.eval.batches, spec.eval.batch_size, cell.seq_len,
                                      seed=spec.data_seed)
        import torch

        try:
            train_branches(model, train, [lr for lr, _ in members], schedules, sampler, val,
                           seeds=[seed for _, seed in members], device=self.device,
                           on_eval=on_eval, on_progress=on_progress, on_result=on_result)
        except torch.cuda.OutOfMemoryError:
            # The cell's tensors are gone with its frames: hand the cached blocks back, so that the
            # other processes on this GPU (and this cell's retry) find the memory free.
            torch.cuda.empty_cache()
            raise
