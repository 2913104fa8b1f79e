"""Corpora, tokenizer and batches: everything between files on disk and [B, T + 1] token tensors.

Three sources, one result (a :class:`Corpus`: train and validation token memmaps, a vocabulary
size, a manifest and its hash):

- ``python-source`` (:func:`build_python_source_corpus`): the ``.py`` files of the running
  interpreter's standard library and installed packages. No download.
- a folder of text files (:func:`build_text_corpus`), through the same pipeline.
- a pre-tokenized ``.bin`` of uint16 / uint32 ids (:func:`load_token_bin`).

The text pipeline: read files, de-duplicate by content sha256, order by that hash (so the order
does not depend on the file system), split train / validation by file (a file goes to
validation when its hash, read as a fraction of 2^64, is below ``val_fraction``), train a
byte-level BPE on the first ``tokenizer_max_bytes`` of the train files, encode every file with
an end-of-text token after it, and write ``train.bin`` / ``val.bin`` (uint16 when the
vocabulary fits), ``tokenizer.json`` and ``manifest.json`` into a cache folder keyed by the
inputs. The sha256 of ``manifest.json`` is the ``corpus_hash`` that every run records.

This module imports torch only inside :class:`BatchSampler` methods: building a corpus needs none.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hpscale.sweeps.errors import CorpusBuildError, CorpusError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1  # bump when the pipeline changes what it writes: old caches then rebuild
EOT = "<|endoftext|>"  # separates documents; id 0
_ENCODE_CHUNK_BYTES = 16 << 20  # text handed to one encode_batch call: bounded memory, full threads


@dataclass(frozen=True, eq=False)
class Corpus:
    """Token ids ready for training. ``train`` / ``val`` are read-only 1-D memmaps (or views)."""

    name: str
    vocab_size: int
    train: np.ndarray
    val: np.ndarray
    manifest: dict[str, Any]
    corpus_hash: str  # sha256 of the canonical manifest JSON
    tokenizer_path: Path | None  # None for a pre-tokenized .bin


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1).encode()


def _hash_fraction(hexdigest: str) -> float:
    """A content hash as a number in [0, 1): the split rule's coin, stable as the corpus grows."""
    return int(hexdigest[:16], 16) / 2.0**64


def python_source_paths() -> list[Path]:
    """Every ``.py`` file under the interpreter's stdlib, purelib and platlib, in path order."""
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib")}
    found: set[Path] = set()
    for root in sorted(roots):
        if os.path.isdir(root):
            found.update(p for p in Path(root).rglob("*.py") if p.is_file())
    return sorted(found)


def text_paths(folder: Path | str, suffixes: Sequence[str] | None = None) -> list[Path]:
    """Regular files under ``folder`` (recursively; only ``suffixes`` when given), in path order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"corpus folder {folder} does not exist or is not a directory")
    wanted = {s.lower() for s in suffixes} if suffixes else None
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and (wanted is None or p.suffix.lower() in wanted))


def _evenly_spaced(paths: list[Path], max_files: int | None) -> list[Path]:
    """At most ``max_files`` paths spread over the whole sorted list (tests read few files, from many packages)."""
    if max_files is None or len(paths) <= max_files:
        return paths
    if max_files < 1:
        raise CorpusError(f"max_files must be >= 1, got {max_files}")
    step = len(paths) / max_files
    return [paths[int(i * step)] for i in range(max_files)]


def _read_documents(paths: list[Path], max_bytes: int | None) -> tuple[list[tuple[str, str]], int]:
    """Read, decode and de-duplicate: [(sha256, text)] sorted by hash, and the count of undecodable files.

    ``max_bytes`` keeps the first documents in hash order whose total size stays within it.
    """
    docs: dict[str, str] = {}
    skipped = 0
    for path in paths:
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            skipped += 1  # unreadable or not text: a corpus of text files skips it, counted in the manifest
            continue
        if text.strip():
            docs.setdefault(_sha256(raw), text)
    ordered = sorted(docs.items())
    if max_bytes is not None:
        kept, total = [], 0
        for digest, text in ordered:
            size = len(text.encode("utf-8"))
            if total + size > max_bytes and kept:
                break
            kept.append((digest, text))
            total += size
        ordered = kept
    return ordered, skipped


def _split(docs: list[tuple[str, str]], val_fraction: float) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Train / validation by file; both sides get at least one file."""
    if len(docs) < 2:
        raise CorpusError(f"a corpus needs at least 2 distinct non-empty files, found {len(docs)}")
    val = [d for d in docs if _hash_fraction(d[0]) < val_fraction]
    if not val:
        val = [min(docs, key=lambda d: _hash_fraction(d[0]))]
    if len(val) == len(docs):
        val = val[:1]
    val_set = {d[0] for d in val}
    return [d for d in docs if d[0] not in val_set], val


def train_tokenizer(texts: Sequence[str], vocab_size: int, max_bytes: int) -> Any:
    """A byte-level BPE (``tokenizers.Tokenizer``) of ``vocab_size`` ids trained on the first ``max_bytes`` of ``texts``.

    Id 0 is the end-of-text token. Byte-level means every byte string encodes: no unknown tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 2:
        raise CorpusError(f"vocab_size {vocab_size} is too small for a byte-level BPE (needs >= {len(alphabet) + 2})")
    subset, total = [], 0
    for text in texts:
        if total >= max_bytes:
            break
        subset.append(text[: max_bytes - total])
        total += len(subset[-1])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(subset, trainer=trainer, length=len(subset))
    return tok


def _encode_to_file(tok: Any, texts: list[str], out: Path, dtype: np.dtype) -> int:
    """Encode ``texts`` (each followed by EOT) into ``out`` as raw ``dtype`` ids; returns the token count.

    Works in chunks of ~16 MB of text through ``encode_batch``, which runs on all cores. ``out``
    lies in a build's private folder (see ``_build``), so it is written in place.
    """
    eot = tok.token_to_id(EOT)
    count = 0
    with open(out, "wb") as fh:
        chunk: list[str] = []
        size = 0
        for text in [*texts, None]:
            if text is not None:
                chunk.append(text)
                size += len(text)
            if chunk and (text is None or size >= _ENCODE_CHUNK_BYTES):
                for enc in tok.encode_batch(chunk, add_special_tokens=False):
                    ids = np.asarray(enc.ids + [eot], dtype=dtype)
                    ids.tofile(fh)
                    count += ids.size
                chunk, size = [], 0
    return count


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _open_cached(folder: Path) -> Corpus | None:
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return None
    raw = manifest_path.read_bytes()
    manifest = json.loads(raw)
    dtype = np.dtype(manifest["dtype"])
    train = np.memmap(folder / "train.bin", dtype=dtype, mode="r")
    val = np.memmap(folder / "val.bin", dtype=dtype, mode="r")
    if train.size != manifest["train_tokens"] or val.size != manifest["val_tokens"]:
        raise CorpusError(f"corpus cache {folder} is damaged (token counts differ from its manifest): delete it")
    return Corpus(manifest["name"], manifest["vocab_size"], train, val, manifest, _sha256(raw),
                  folder / "tokenizer.json")


def _build(name: str, paths: list[Path], source: dict[str, Any], cache_dir: Path | str, vocab_size: int,
           val_fraction: float, tokenizer_max_bytes: int, max_bytes: int | None) -> Corpus:
    if not 0.0 < val_fraction < 0.5:
        raise CorpusError(f"val_fraction must lie in (0, 0.5), got {val_fraction}")
    if vocab_size > 1 << 32:
        raise CorpusError(f"vocab_size {vocab_size} does not fit uint32")
    # The cache key covers every input that changes the output; path lists are cheap to hash,
    # content hashes go into the manifest itself.
    listing = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    key = _sha256(_canonical({"v": FORMAT_VERSION, "name": name, "source": source, "files": listing,
                              "vocab": vocab_size, "val": val_fraction, "tok_bytes": tokenizer_max_bytes,
                              "max_bytes": max_bytes}))[:16]
    folder = Path(cache_dir) / f"{name}-{vocab_size}-{key}"
    cached = _open_cached(folder)
    if cached is not None:
        return cached
    try:
        with _build_lock(folder):
            cached = _open_cached(folder)  # again: another process may have built it while we waited
            if cached is not None:
                return cached
            if folder.exists():  # a partial folder from an older hpscale that crashed mid-build
                shutil.rmtree(folder)
            # Built in a private folder, then renamed into place in one step: a reader sees no
            # folder or a whole one, and two builders never write the same file.
            work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
            try:
                _build_into(work, name, paths, source, vocab_size, val_fraction, tokenizer_max_bytes, max_bytes)
                os.rename(work, folder)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            opened = _open_cached(folder)
    except CorpusError:
        raise
    except Exception as exc:  # disk full, permissions, a tokenizer failure: one line, the cause chained
        reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)).strip().splitlines()
        raise CorpusBuildError(f"building the corpus cache {folder} failed: {type(exc).__name__}"
                               f"{': ' + reason[0] if reason else ''}") from exc
    assert opened is not None
    return opened


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock, across processes, on building ``folder``: an ``flock`` on
    ``<folder>.lock`` beside it (as ``Database.schema_lock`` does for a new database)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
        yield


def _build_into(folder: Path, name: str, paths: list[Path], source: dict[str, Any], vocab_size: int,
                val_fraction: float, tokenizer_max_bytes: int, max_bytes: int | None) -> None:
    """Write a corpus (tokenizer, token files, manifest last) into the empty ``folder``."""
    docs, skipped = _read_documents(paths, max_bytes)
    train_docs, val_docs = _split(docs, val_fraction)
    tok = train_tokenizer([t for _, t in train_docs], vocab_size, tokenizer_max_bytes)
    tok.save(str(folder / "tokenizer.json"))
    dtype = _token_dtype(tok.get_vocab_size())
    n_train = _encode_to_file(tok, [t for _, t in train_docs], folder / "train.bin", dtype)
    n_val = _encode_to_file(tok, [t for _, t in val_docs], folder / "val.bin", dtype)
    train_bytes = sum(len(t.encode("utf-8")) for _, t in train_docs)
    manifest = {
        "format_version": FORMAT_VERSION, "name": name, "source": source,
        "vocab_size": tok.get_vocab_size(), "requested_vocab_size": vocab_size, "dtype": dtype.name,
        "val_fraction": val_fraction, "tokenizer_max_bytes": tokenizer_max_bytes, "max_bytes": max_bytes,
        "files": len(docs), "train_files": len(train_docs), "val_files": len(val_docs),
        "skipped_files": skipped,
        "file_list_hash": _sha256("\n".join(d for d, _ in docs).encode()),
        "train_bytes": train_bytes, "train_tokens": n_train, "val_tokens": n_val,
        "bytes_per_token": round(train_bytes / max(n_train, 1), 4),
        "tokenizer_sha256": _sha256((folder / "tokenizer.json").read_bytes()),
    }
    (folder / "manifest.json").write_bytes(_canonical(manifest))


def build_python_source_corpus(cache_dir: Path | str, vocab_size: int = 8192, val_fraction: float = 0.01,
                               tokenizer_max_bytes: int = 40_000_000, max_files: int | None = None,
                               max_bytes: int | None = None) -> Corpus:
    """The built-in ``python-source`` corpus, built once into ``cache_dir`` and reused after.

    vocab_size: BPE ids (tokens). val_fraction: the share of files held out (by content hash).
    tokenizer_max_bytes: UTF-8 characters of train text the BPE learns from (the first files in
    hash order; 40M is about a tenth of a typical installation). max_files: read at most this
    many files, evenly spaced over the sorted path list (for tests). max_bytes: keep at most this
    many bytes of de-duplicated text.
    """
    paths = _evenly_spaced(python_source_paths(), max_files)
    source = {"kind": "python-source", "max_files": max_files}
    return _build("python-source", paths, source, cache_dir, vocab_size, val_fraction, tokenizer_max_bytes, max_bytes)


def build_text_corpus(folder: Path | str, cache_dir: Path | str, vocab_size: int = 8192,
                      val_fraction: float = 0.01, tokenizer_max_bytes: int = 40_000_000,
                      suffixes: Sequence[str] | None = None, max_files: int | None = None,
                      max_bytes: int | None = None) -> Corpus:
    """A user corpus: the UTF-8 text files under ``folder`` (only ``suffixes`` when given), same pipeline.

    Files that are not valid UTF-8 are skipped and counted in the manifest (``skipped_files``).
    """
    paths = _evenly_spaced(text_paths(folder, suffixes), max_files)
    if not paths:
        raise CorpusError(f"corpus folder {folder} holds no matching files")
    source = {"kind": "text-folder", "folder": str(Path(folder).resolve()),
              "suffixes": sorted(suffixes) if suffixes else None, "max_files": max_files}
    name = "text-" + Path(folder).resolve().name
    return _build(name, paths, source, cache_dir, vocab_size, val_fraction, tokenizer_max_bytes, max_bytes)


def load_token_bin(path: Path | str, vocab_size: int, dtype: str = "uint16", val_fraction: float = 0.01,
                   min_tokens: int = 2) -> Corpus:
    """A pre-tokenized corpus: raw little-endian ``dtype`` ids, validation = the last ``val_fraction``.

    Every id must be < ``vocab_size``; the file is scanned once to check (and hashed for the
    manifest). Nothing is copied: train and validation are views of one read-only memmap.
    """
    path = Path(path)
    if dtype not in ("uint16", "uint32"):
        raise CorpusError(f".bin dtype must be 'uint16' or 'uint32', got {dtype!r}")
    np_dtype = np.dtype(dtype)
    if not 1 <= vocab_size <= np.iinfo(np_dtype).max + 1:
        raise CorpusError(f"vocab_size {vocab_size} does not fit {dtype} (1 to {np.iinfo(np_dtype).max + 1})")
    if not 0.0 < val_fraction < 0.5:
        raise CorpusError(f"val_fraction must lie in (0, 0.5), got {val_fraction}")
    if not path.is_file():
        raise CorpusError(f"token file {path} does not exist")
    size = path.stat().st_size
    if size == 0 or size % np_dtype.itemsize:
        raise CorpusError(f"token file {path} has {size} bytes, not a positive multiple of {np_dtype.itemsize} ({dtype})")
    tokens = np.memmap(path, dtype=np_dtype, mode="r")
    digest = hashlib.sha256()
    highest = 0
    for start in range(0, tokens.size, 1 << 24):
        part = np.asarray(tokens[start:start + (1 << 24)])
        highest = max(highest, int(part.max()))
        digest.update(part.tobytes())
    if highest >= vocab_size:
        raise CorpusError(f"token file {path} holds id {highest}, not below vocab_size {vocab_size}")
    n_val = int(tokens.size * val_fraction)
    if n_val < min_tokens or tokens.size - n_val < min_tokens:
        raise CorpusError(f"token file {path} has {tokens.size} tokens: too few to split off {val_fraction:.1%} "
                          f"for validation with at least {min_tokens} tokens on each side")
    manifest = {"format_version": FORMAT_VERSION, "name": path.stem, "source": {"kind": "token-bin", "path": str(path.resolve())},
                "vocab_size": vocab_size, "dtype": dtype, "val_fraction": val_fraction,
                "file_sha256": digest.hexdigest(), "train_tokens": int(tokens.size - n_val), "val_tokens": n_val}
    return Corpus(path.stem, vocab_size, tokens[: tokens.size - n_val], tokens[tokens.size - n_val:], manifest,
                  _sha256(_canonical(manifest)), None)


class MemberBatches:
    """The training batches of a cell whose members may follow different data orders: member k
    reads stream ``streams[k]`` of one ``BatchSampler`` seed. Returns [B, T + 1] when every
    member follows one stream (the batch they share), else [K, B, T + 1] (a batch per member;
    members on one stream get equal rows). Callable as ``train_batches(step)``."""

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, streams: Sequence[int]) -> None:
        self.streams = [int(s) for s in streams]
        if not self.streams:
            raise CorpusError("a cell needs at least one member")
        self.samplers = {s: BatchSampler(tokens, batch_size, seq_len, seed, s) for s in sorted(set(self.streams))}

    def __call__(self, step: int) -> torch.Tensor:
        import torch

        if len(self.samplers) == 1:
            return self.samplers[self.streams[0]].batch(step)
        drawn = {s: sampler.numpy_batch(step) for s, sampler in self.samplers.items()}
        return torch.from_numpy(np.stack([drawn[s] for s in self.streams]))


class BatchSampler:
    """Deterministic random windows of ``seq_len + 1`` tokens: batch(step) depends only on
    (seed, stream, step).

    Members of a cell that call the same sampler see the same batches in the same order; a
    ``stream`` gives another order of the same data (a run seed that varies the data order uses
    its own stream; stream 0 is the order every sweep used before streams existed). A resumed
    run gets the same batch for a step as the first attempt did.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int = 0, stream: int = 0) -> None:
        if batch_size < 1 or seq_len < 1:
            raise CorpusError(f"batch_size and seq_len must be >= 1, got {batch_size} and {seq_len}")
        if tokens.ndim != 1 or tokens.size < seq_len + 1:
            raise CorpusError(f"a split of {tokens.size} tokens is too short for windows of {seq_len + 1}")
        self.tokens, self.batch_size, self.seq_len, self.seed, self.stream = tokens, batch_size, seq_len, seed, stream
        self._window = np.arange(seq_len + 1)

    def offsets(self, step: int) -> np.ndarray:
        """Start positions of the windows of ``step``, [batch_size] int64."""
        rng = np.random.default_rng((self.seed, step) if self.stream == 0 else (self.seed, step, self.stream))
        return rng.integers(0, self.tokens.size - self.seq_len, size=self.batch_size)

    def numpy_batch(self, step: int) -> np.ndarray:
        """[batch_size, seq_len + 1] int64 token ids of ``step``."""
        return np.asarray(self.tokens[self.offsets(step)[:, None] + self._window], dtype=np.int64)

    def batch(self, step: int) -> torch.Tensor:
        """[batch_size, seq_len + 1] int64 tensor (CPU): inputs are [:, :-1], targets [:, 1:]."""
        import torch

        return torch.from_numpy(self.numpy_batch(step))

    def xy(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each [batch_size, seq_len] int64."""
        b = self.batch(step)
        return b[:, :-1], b[:, 1:]

    def __call__(self, step: int) -> torch.Tensor:
        return self.batch(step)

    def __iter__(self) -> Iterator[torch.Tensor]:
        step = 0
        while True:
            yield self.batch(step)
            step += 1


def validation_batches(corpus: Corpus, n_batches: int, batch_size: int, seq_len: int, seed: int = 0) -> list[torch.Tensor]:
    """The fixed validation set of a run: ``n_batches`` batches of [batch_size, seq_len + 1] from the val split."""
    sampler = BatchSampler(corpus.val, batch_size, seq_len, seed=seed + 1_000_003)
    return [sampler.batch(i) for i in range(n_batches)]
