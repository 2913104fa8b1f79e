"""Corpora, tokenizer cache, .bin validation and the batch sampler."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from hpscale.sweeps.data import (BatchSampler, build_python_source_corpus, build_text_corpus, load_token_bin,
                         validation_batches)
from hpscale.sweeps.errors import CorpusError


def _write_folder(root: Path, n: int = 30) -> Path:
    folder = root / "texts"
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        body = "\n".join(f"def function_{i}_{j}(x):\n    return x * {j} + {i}  # line {j}" for j in range(40))
        (folder / ("sub" if i % 3 else ".") / f"doc{i}.txt").write_text(body)
    (folder / "copy.txt").write_text((folder / "doc0.txt").read_text())  # a duplicate
    (folder / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 10)  # not UTF-8
    return folder


def test_text_folder_round_trip_through_the_cache(tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    folder = _write_folder(tmp_path)
    corpus = build_text_corpus(folder, tmp_path / "cache", vocab_size=300, val_fraction=0.1)
    m = corpus.manifest
    assert m["files"] == 30 and m["skipped_files"] == 1  # the duplicate merged, the binary skipped
    assert m["train_files"] + m["val_files"] == 30 and m["val_files"] >= 1
    assert corpus.train.dtype == np.uint16 and corpus.train.size == m["train_tokens"] > 1000
    assert int(corpus.train.max()) < corpus.vocab_size <= 300
    tok = Tokenizer.from_file(str(corpus.tokenizer_path))
    text = tok.decode([int(t) for t in corpus.val[: m["val_tokens"] - 1]])
    assert "def function_" in text and "return x *" in text  # byte-level BPE decodes back to the source
    again = build_text_corpus(folder, tmp_path / "cache", vocab_size=300, val_fraction=0.1)
    assert again.corpus_hash == corpus.corpus_hash
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 1  # served from the cache, not rebuilt
    folder.joinpath("new.txt").write_text("print('a new file changes the corpus')\n" * 5)
    changed = build_text_corpus(folder, tmp_path / "cache", vocab_size=300, val_fraction=0.1)
    assert changed.corpus_hash != corpus.corpus_hash


def test_split_is_by_file_and_independent_of_file_names(tmp_path: Path) -> None:
    folder = _write_folder(tmp_path, n=40)
    a = build_text_corpus(folder, tmp_path / "c1", vocab_size=300, val_fraction=0.2)
    for i, p in enumerate(sorted(folder.rglob("doc*.txt"))):
        p.rename(p.with_name(f"renamed{i:03d}.txt"))
    b = build_text_corpus(folder, tmp_path / "c2", vocab_size=300, val_fraction=0.2)
    assert a.manifest["file_list_hash"] == b.manifest["file_list_hash"]
    assert a.manifest["val_files"] == b.manifest["val_files"]
    assert np.array_equal(np.asarray(a.val), np.asarray(b.val))
    assert 0.05 < a.manifest["val_files"] / a.manifest["files"] < 0.5


def test_python_source_corpus_with_few_files(tmp_path: Path) -> None:
    corpus = build_python_source_corpus(tmp_path, vocab_size=400, max_files=40, tokenizer_max_bytes=200_000)
    m = corpus.manifest
    assert corpus.name == "python-source" and m["source"]["kind"] == "python-source"
    assert 2 <= m["files"] <= 40 and m["val_files"] >= 1 and m["train_tokens"] > 0
    assert 1.0 < m["bytes_per_token"] < 6.0
    folder = corpus.tokenizer_path.parent  # type: ignore[union-attr]
    assert {"train.bin", "val.bin", "tokenizer.json", "manifest.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "manifest.json").read_text())["vocab_size"] == corpus.vocab_size


def test_max_bytes_caps_the_text_kept(tmp_path: Path) -> None:
    # A folder of known files: the cap must not depend on which packages this machine has installed.
    folder = _write_folder(tmp_path)
    full = build_text_corpus(folder, tmp_path / "cache", vocab_size=300, val_fraction=0.1)
    cap = full.manifest["train_bytes"] // 3
    capped = build_text_corpus(folder, tmp_path / "cache", vocab_size=300, val_fraction=0.1, max_bytes=cap)
    assert capped.manifest["train_bytes"] <= cap < full.manifest["train_bytes"]
    assert 2 <= capped.manifest["files"] < full.manifest["files"]
    assert capped.corpus_hash != full.corpus_hash


def test_token_bin_loads_and_splits_off_the_tail(tmp_path: Path) -> None:
    ids = np.arange(1000, dtype=np.uint32) % 70_000
    path = tmp_path / "tokens.bin"
    ids.tofile(path)
    corpus = load_token_bin(path, vocab_size=70_000, dtype="uint32", val_fraction=0.1)
    assert corpus.train.size == 900 and corpus.val.size == 100
    assert int(corpus.val[0]) == 900 and corpus.tokenizer_path is None
    assert load_token_bin(path, 70_000, "uint32", 0.1).corpus_hash == corpus.corpus_hash


@pytest.mark.parametrize(("content", "vocab", "dtype", "message"), [
    (np.arange(100, dtype=np.uint16).tobytes(), 50, "uint16", "holds id 99"),
    (b"\x01\x02\x03", 256, "uint16", "not a positive multiple"),
    (b"", 256, "uint16", "not a positive multiple"),
    (np.arange(100, dtype=np.uint16).tobytes(), 70_000, "uint16", "does not fit uint16"),
    (np.arange(100, dtype=np.uint16).tobytes(), 256, "int32", "must be 'uint16' or 'uint32'"),
    (np.arange(10, dtype=np.uint16).tobytes(), 256, "uint16", "too few"),
])
def test_token_bin_validation_errors(tmp_path: Path, content: bytes, vocab: int, dtype: str, message: str) -> None:
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_token_bin(path, vocab_size=vocab, dtype=dtype)


def test_missing_inputs_raise_corpus_error(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        load_token_bin(tmp_path / "nope.bin", vocab_size=10)
    with pytest.raises(CorpusError, match="does not exist"):
        build_text_corpus(tmp_path / "nope", tmp_path / "cache")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "a.txt").write_text("only one file")
    with pytest.raises(CorpusError, match="at least 2"):
        build_text_corpus(tmp_path / "one", tmp_path / "cache", vocab_size=300)


def test_sampler_is_deterministic_per_seed_and_step() -> None:
    tokens = np.arange(10_000, dtype=np.uint16)
    a, b = BatchSampler(tokens, 8, 32, seed=1), BatchSampler(tokens, 8, 32, seed=1)
    assert np.array_equal(a.numpy_batch(5), b.numpy_batch(5))  # same step, same batch, in any order
    assert not np.array_equal(a.numpy_batch(5), a.numpy_batch(6))
    assert not np.array_equal(a.numpy_batch(5), BatchSampler(tokens, 8, 32, seed=2).numpy_batch(5))
    batch = a.batch(3)
    assert tuple(batch.shape) == (8, 33) and str(batch.dtype) == "torch.int64"
    assert (batch[:, 1:] - batch[:, :-1] == 1).all()  # contiguous windows of the stream
    x, y = a.xy(3)
    assert (x[:, 1:] == y[:, :-1]).all()
    starts = np.concatenate([a.offsets(s) for s in range(200)])
    assert starts.min() >= 0 and starts.max() <= 10_000 - 33
    with pytest.raises(CorpusError, match="too short"):
        BatchSampler(tokens[:20], 2, 32)


def test_validation_batches_are_fixed(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    corpus = load_token_bin(path, vocab_size=5000, val_fraction=0.2)
    first, second = validation_batches(corpus, 3, 4, 16), validation_batches(corpus, 3, 4, 16)
    assert all((a == b).all() for a, b in zip(first, second))
    assert all(int(b.min()) >= 4000 for b in first)  # drawn from the validation tail only


_BUILD_WHEN_TOLD = """
import sys, time
from pathlib import Path
start = Path(sys.argv[3])
while not start.exists():  # every process waits for the same moment, as workers started together
    time.sleep(0.005)
from hpscale.sweeps.data import build_text_corpus
from hpscale.sweeps.errors import SweepError
try:
    corpus = build_text_corpus(sys.argv[1], sys.argv[2], vocab_size=300, val_fraction=0.1)
except SweepError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(1)
print(corpus.corpus_hash, corpus.train.size)
"""


def test_workers_building_one_new_cache_at_once_all_succeed(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = _write_folder(tmp_path, n=200)
    cache, start = tmp_path / "cache", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", _BUILD_WHEN_TOLD, str(folder), str(cache), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(1.0)  # let them all import and wait (a worker that is late only finds the cache ready)
    start.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    assert len({out for out, _ in outs}) == 1  # one corpus, the same hash for all
    built = [p for p in cache.iterdir() if p.is_dir()]
    assert len(built) == 1 and not [p for p in cache.iterdir() if ".tmp" in p.name]  # no temporary leftovers
    again = build_text_corpus(folder, cache, vocab_size=300, val_fraction=0.1)
    assert f"{again.corpus_hash} {again.train.size}\n" == outs[0][0]


def test_a_failed_build_is_one_clear_error(tmp_path: Path) -> None:
    from hpscale.sweeps.errors import SweepError

    folder = _write_folder(tmp_path)
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder should be")
    with pytest.raises(SweepError, match="corpus cache") as info:
        build_text_corpus(folder, blocked, vocab_size=300, val_fraction=0.1)
    assert "\n" not in str(info.value) and str(blocked) in str(info.value)


def test_member_batches_share_a_stream_or_follow_their_own() -> None:
    import torch

    from hpscale.sweeps.data import MemberBatches

    tokens = np.arange(10_000, dtype=np.uint16)
    shared = MemberBatches(tokens, 4, 8, seed=3, streams=[0, 0, 0])
    assert torch.equal(shared(5), BatchSampler(tokens, 4, 8, seed=3).batch(5))  # stream 0: the old order
    mixed = MemberBatches(tokens, 4, 8, seed=3, streams=[0, 1, 0, 1])
    batch = mixed(5)
    assert batch.shape == (4, 4, 9)
    assert torch.equal(batch[0], batch[2]) and torch.equal(batch[1], batch[3]) and not torch.equal(batch[0], batch[1])
    assert torch.equal(batch[1], BatchSampler(tokens, 4, 8, seed=3, stream=1).batch(5))
    assert torch.equal(mixed(5), batch)  # deterministic: a resumed run reads the same batch
