"""The demo dataset: shipped, loaded on request and into an empty database by ``serve``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from support import hp, hp_json

from hpscale.service.demo import DEMO_FILE, read_demo


def test_the_shipped_demo_is_small_and_real() -> None:
    assert DEMO_FILE.stat().st_size < 5 * 1024 * 1024
    doc = read_demo()
    assert {s["name"] for s in doc["sweeps"]} >= {"val4", "val4-held"}
    runs = doc["runs"]
    assert len(runs) >= 150 and all(r["curve"] for r in runs if r["status"] == "done")
    assert all(r["corpus_hash"] and r["code_version"] for r in runs)
    assert any(law["kind"] == "hyper" for law in doc["laws"])


def test_demo_load_is_idempotent_and_keeps_provenance(cli_env) -> None:
    first = hp_json("demo", "load")
    assert first["runs"] == len(read_demo()["runs"]) and first["laws"] == len(read_demo()["laws"])
    assert hp_json("demo", "load") == {**first, "runs": 0, "laws": 0}
    laws = {law["name"]: law for law in hp_json("laws", "list")}
    fitted = laws["val4-hyper-joint-steplaw"]
    shown = hp_json("laws", "show", str(fitted["id"]))
    shipped = next(law for law in read_demo()["laws"] if law["name"] == "val4-hyper-joint-steplaw")
    assert len(shipped["runs"]) >= 150  # the law's runs, linked again by name after the load
    assert len(shown["run_ids"]) == len(shipped["runs"])
    status = json.loads(hp("sweep", "status", "--json").stdout)
    assert {s["name"] for s in status} >= {"val4", "val4-held"}
    assert {s["state"] for s in status} == {"finished"}  # every shipped run is done or diverged


@pytest.mark.parametrize("content, message", [(b"not gzip", "not a demo file"), (None, "no such demo file")])
def test_bad_demo_files(cli_env, tmp_path: Path, content, message) -> None:
    path = tmp_path / "demo.json.gz"
    if content is not None:
        path.write_bytes(content)
    result = hp("demo", "load", "--file", str(path))
    assert result.exit_code == 1 and message in result.stderr


def test_wrong_version_is_refused(cli_env, tmp_path: Path) -> None:
    path = tmp_path / "demo.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"version": 99}, f)
    result = hp("demo", "load", "--file", str(path))
    assert result.exit_code == 1 and "version 1" in result.stderr


def test_export_and_load_keep_a_branchs_trunk(tmp_path: Path) -> None:
    from hpscale.db import storage
    from hpscale.db.engine import Database
    from hpscale.service.demo import export_demo, load_demo

    src, dst = (Database(f"sqlite:///{tmp_path / name}") for name in ("a.db", "b.db"))
    for db in (src, dst):
        db.ensure_schema()
    sweep = storage.add_sweep(src, "wsd", {"name": "wsd"}, "v1")
    storage.add_runs(src, [{"source": "wsd", "name": f"r{d}", "sweep_id": sweep.id, "n_params": 1e5, "tokens": d,
                            "final_loss": 3.0, "status": "done", "trunk_key": "N100000-B8-trunk",
                            "curve": [{"step": 0, "val_loss": 5.0}]} for d in (1e6, 2e6)])
    export_demo(src, ["wsd"], tmp_path / "demo.json.gz")
    assert load_demo(dst, tmp_path / "demo.json.gz")["runs"] == 2
    assert {r.trunk_key for r in storage.list_runs(dst)} == {"N100000-B8-trunk"}
    src.dispose()
    dst.dispose()


def test_a_demo_export_keeps_each_runs_optimizer_and_total_parameters(tmp_path: Path) -> None:
    from hpscale.db import storage
    from hpscale.db.engine import Database
    from hpscale.service.demo import export_demo, load_demo

    src = Database(f"sqlite:///{tmp_path / 'a.db'}")
    src.ensure_schema()
    storage.add_runs(src, [{"source": "s", "name": "moe", "n_params": 3e8, "n_params_total": 2.15e9, "tokens": 2e10,
                            "final_loss": 2.4, "optimizer": "lion", "code_version": "t"}])
    export_demo(src, ["s"], tmp_path / "x.json.gz")
    dst = Database(f"sqlite:///{tmp_path / 'b.db'}")
    dst.ensure_schema()
    load_demo(dst, tmp_path / "x.json.gz")
    (run,) = storage.list_runs(dst)
    assert (run.optimizer, run.n_params_total, run.n_params) == ("lion", 2.15e9, 3e8)


def test_an_export_that_fails_midway_leaves_the_earlier_file(tmp_path: Path, monkeypatch) -> None:
    # The GPU stages export while they train: a crash during a write must not lose the last export.
    from hpscale.db import storage
    from hpscale.db.engine import Database
    from hpscale.service import demo

    src = Database(f"sqlite:///{tmp_path / 'a.db'}")
    src.ensure_schema()
    storage.add_runs(src, [{"source": "s", "name": "r1", "n_params": 1e5, "tokens": 1e6, "final_loss": 3.0,
                            "code_version": "t"}])
    path = tmp_path / "x.json.gz"
    demo.export_demo(src, ["s"], path)
    before = path.read_bytes()
    storage.add_runs(src, [{"source": "s", "name": "r2", "n_params": 1e5, "tokens": 2e6, "final_loss": 2.9,
                            "code_version": "t"}])

    def dump_then_die(doc, f, **kw):
        f.write(json.dumps(doc)[:50])
        raise KeyboardInterrupt

    monkeypatch.setattr(demo.json, "dump", dump_then_die)
    with pytest.raises(KeyboardInterrupt):
        demo.export_demo(src, ["s"], path)
    assert path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    demo.export_demo(src, ["s"], path)
    assert len(demo.read_demo(path)["runs"]) == 2
    src.dispose()
