"""The demo dataset: a real sweep's runs, curves and fitted laws, shipped inside the package so
that a new user sees real data at once (``hpscale serve`` loads it into an empty database;
``hpscale demo load`` on request).

The file is gzipped JSON: ``{"version", "sweeps": [...], "runs": [...], "laws": [...]}``; runs
carry their curve as rows ``[step, tokens, lr, train_loss, val_loss]`` and name their sweep;
laws name the runs they were fitted on as ``source/name``.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.service.errors import InputError

DEMO_FILE = Path(__file__).resolve().parent / "data" / "demo.json.gz"
FORMAT_VERSION = 1
CURVE_COLUMNS = ("step", "tokens", "lr", "train_loss", "val_loss")


def _num(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else v


def export_demo(db: Database, sources: Sequence[str], path: Path, law_names: Sequence[str] = ()) -> dict[str, int]:
    """Write the runs of ``sources`` (with curves), their sweeps and the named laws to ``path``."""
    runs = storage.list_runs(db, sources=list(sources))
    sweeps = {s.id: s for s in storage.list_sweeps(db)}
    curves = storage.get_curves(db, [r.id for r in runs])
    out_runs = []
    for r in runs:
        if r.status not in ("done", "diverged"):
            continue
        out_runs.append({
            "source": r.source, "name": r.name, "sweep": sweeps[r.sweep_id].name if r.sweep_id in sweeps else None,
            "n_params": r.n_params, "n_params_total": r.n_params_total, "optimizer": r.optimizer,
            "tokens": r.tokens, "lr": r.lr, "batch_tokens": r.batch_tokens,
            "batch_size": r.batch_size, "seq_len": r.seq_len, "schedule": r.schedule, "tags": r.tags,
            "config": r.config, "status": r.status, "final_loss": r.final_loss, "seed": r.seed,
            "corpus_hash": r.corpus_hash, "code_version": r.code_version, "group_key": r.group_key,
            "cell_key": r.cell_key, "trunk_key": r.trunk_key,
            "curve": [[p.step, p.tokens, p.lr, _num(p.train_loss), _num(p.val_loss)] for p in curves[r.id]],
        })
    used = {r["sweep"] for r in out_runs}
    out_sweeps = [{"name": s.name, "spec": s.spec, "corpus_hash": s.corpus_hash,
                   "code_version": s.code_version} for s in sweeps.values() if s.name in used]
    id_to_key = {r.id: f"{r.source}/{r.name}" for r in runs}
    out_laws = []
    for name in law_names:
        law = storage.get_law(db, name)
        out_laws.append({
            "name": law.name, "kind": law.kind, "form": law.form, "origin": law.origin, "optimizer": law.optimizer,
            "title": law.title,
            "source": law.source, "record": law.record, "extrapolation": law.extrapolation,
            "settings": law.settings, "code_version": law.code_version,
            "runs": [id_to_key[i] for i in storage.law_run_ids(db, law.id) if i in id_to_key],
        })
    doc = {"version": FORMAT_VERSION, "sweeps": out_sweeps, "runs": out_runs, "laws": out_laws}
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target, then renamed over it: a crash mid-write leaves the old file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with gzip.open(tmp, "wt", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"sweeps": len(out_sweeps), "runs": len(out_runs), "laws": len(out_laws)}


def read_demo(path: Path = DEMO_FILE) -> dict[str, Any]:
    """The demo document; ``InputError`` when the file is missing or not a demo file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: no such demo file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a demo file ({exc})") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: not an hpscale demo file of version {FORMAT_VERSION}")
    return doc


def is_empty(db: Database) -> bool:
    """No runs and no sweeps stored (published laws do not count)."""
    return storage.count_runs(db) == 0 and not storage.list_sweeps(db)


def load_demo(db: Database, path: Path = DEMO_FILE) -> dict[str, int]:
    """Load the demo sweeps, runs (with curves) and laws. Idempotent: sweeps, runs and laws
    already present by name are left as they are."""
    doc = read_demo(path)
    existing = {s.name: s.id for s in storage.list_sweeps(db)}
    for s in doc["sweeps"]:
        if s["name"] not in existing:
            row = storage.add_sweep(db, s["name"], s["spec"], code_version=s["code_version"],
                                    corpus_hash=s.get("corpus_hash"))
            existing[s["name"]] = row.id
    runs = []
    for r in doc["runs"]:
        rec = {k: v for k, v in r.items() if k not in ("curve", "sweep")}
        rec["sweep_id"] = existing.get(r["sweep"]) if r.get("sweep") else None
        rec["spec"] = next((s["spec"] for s in doc["sweeps"] if s["name"] == r.get("sweep")), None)
        rec["curve"] = [dict(zip(CURVE_COLUMNS, p)) for p in r["curve"]]
        runs.append(rec)
    added = storage.add_runs(db, runs)
    keys = {f"{r.source}/{r.name}": r.id for r in storage.list_runs(db, sources=sorted({r["source"] for r in runs}))}
    known_laws = {law.name for law in storage.list_laws(db)}
    laws = 0
    for law in doc["laws"]:
        if law["name"] in known_laws:
            continue
        fields = {k: v for k, v in law.items() if k != "runs"}
        storage.add_law(db, fields, [keys[k] for k in law["runs"] if k in keys])
        laws += 1
    return {"sweeps": len(doc["sweeps"]), "runs": added.added, "laws": laws}
