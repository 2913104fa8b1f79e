"""``hpscale import``, ``runs list``, ``export runs`` and ``db upgrade`` through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import external, hp, hp_json

GOOD_CSV = """name,n_params,tokens,final_loss,lr,batch_size,seq_len,status,schedule,tags
a,1e6,2e7,3.5,0.001,32,256,done,cosine,team=x;note=first
b,1e6,2e7,,0.1,32,256,diverged,cosine,
c,4e6,8e7,3.1,,,,done,,
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_csv_import_is_idempotent_and_listed(cli_env, tmp_path: Path) -> None:
    path = write(tmp_path, "mine.csv", GOOD_CSV)
    assert hp_json("import", "runs", str(path)) == {"source": "mine", "added": 3, "skipped": 0}
    assert hp_json("import", "runs", str(path)) == {"source": "mine", "added": 0, "skipped": 3}
    runs = {r["name"]: r for r in hp_json("runs", "list")}
    assert runs["a"]["batch_tokens"] == 32 * 256 and runs["a"]["tags"] == {"team": "x", "note": "first"}
    assert runs["b"]["status"] == "diverged" and runs["b"]["final_loss"] is None
    assert runs["c"]["lr"] is None  # loss-law-only runs are valid
    human = hp("runs", "list")
    assert "3 runs" in human.stdout and "mine: 3" in human.stdout


def test_jsonl_with_curves_round_trips_through_export(cli_env, tmp_path: Path) -> None:
    recs = [
        {"name": "r1", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.2, "lr": 1e-3, "batch_tokens": 8192,
         "tags": {"k": 1}, "curve": [{"step": 0, "lr": 0.0, "loss": 9.0}, {"step": 100, "lr": 1e-3, "loss": 4.0, "tokens": 819200}]},
        {"name": "r2", "n_params": 2e6, "tokens": 4e7, "final_loss": 3.0},
    ]
    src = write(tmp_path, "in.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    hp("import", "runs", str(src), "--source", "batch1")
    out = tmp_path / "out.jsonl"
    assert hp("export", "runs", "--format", "jsonl", "--output", str(out)).exit_code == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert exported[0]["curve"] == recs[0]["curve"] and exported[0]["tags"] == {"k": 1}
    # Into a fresh database and out again: identical text.
    other = tmp_path / "other.db"
    hp("--database", f"sqlite:///{other}", "import", "runs", str(out), "--source", "batch1")
    again = hp("--database", f"sqlite:///{other}", "export", "runs", "--format", "jsonl")
    assert again.stdout == out.read_text()


def test_csv_export_round_trips(cli_env, tmp_path: Path) -> None:
    hp("import", "runs", str(write(tmp_path, "mine.csv", GOOD_CSV)))
    first = hp("export", "runs", "--format", "csv").stdout
    other = f"sqlite:///{tmp_path / 'o.db'}"
    hp("--database", other, "import", "runs", str(write(tmp_path, "mine2.csv", first)), "--source", "mine")
    assert hp("--database", other, "export", "runs", "--format", "csv").stdout == first


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,n_params,tokens\na,1,2\n", "mine.csv:2: field 'final_loss': missing"),
        ("name,n_params,tokens,final_loss\na,1,2,3\nb,x,2,3\n", "mine.csv:3: field 'n_params': Input should be a valid number"),
        ("name,n_params,tokens,final_loss\na,-5,2,3\n", "mine.csv:2: field 'n_params': Input should be greater than 0"),
        ("name,n_params,tokens,final_loss\na,1,2,nan\n", "mine.csv:2: field 'final_loss': must be a finite number"),
        ("name,n_params,tokens,final_loss,status\na,1,2,3,weird\n", "mine.csv:2: field 'status'"),
        ("name,n_params,tokens,final_loss,colour\na,1,2,3,red\n", "mine.csv:1: unknown column 'colour'"),
        ("name,n_params,tokens,final_loss\na,1,2,3\na,1,2,4\n", "mine.csv:3: field 'name': 'a' repeats line 2"),
        ("n_params,tokens,final_loss\n1,2,3\n1,2,3\n", "mine.csv:3: the same run as line 2 (every field equal"),
        ("name,n_params,tokens,final_loss,batch_size\na,1,2,3,8\n", "mine.csv:2: field 'batch_size': needs seq_len"),
        ("", "empty file"),
    ],
)
def test_bad_rows_abort_with_file_line_field_and_change_nothing(cli_env, tmp_path: Path, text, message) -> None:
    hp("import", "runs", str(write(tmp_path, "keep.csv", "name,n_params,tokens,final_loss\nk,1,2,3\n")))
    result = hp("import", "runs", str(write(tmp_path, "mine.csv", text)))
    assert result.exit_code == 1
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert [r["name"] for r in hp_json("runs", "list")] == ["k"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "in.jsonl:2: not valid JSON"),
        ("[1, 2]", "in.jsonl:2: expected a JSON object"),
        ('{"n_params": 1, "tokens": 2, "final_loss": 3, "curve": [{"step": 1}]}', "in.jsonl:2: field 'curve.0.loss': missing"),
        ('{"n_params": 1, "tokens": 2, "final_loss": 3, "extra": 1}', "in.jsonl:2: field 'extra': unknown field"),
        # A repeated step once reached the database: "write refused by sqlite:///...: UNIQUE constraint failed".
        ('{"n_params": 1, "tokens": 2, "final_loss": 3, "curve": [{"step": 5, "loss": 4}, {"step": 5, "loss": 3.9}]}',
         "in.jsonl:2: field 'curve': step 5 appears twice (one point per step)"),
    ],
)
def test_bad_jsonl_records(cli_env, tmp_path: Path, line, message) -> None:
    good = '{"n_params": 1, "tokens": 2, "final_loss": 3}\n'
    result = hp("import", "runs", str(write(tmp_path, "in.jsonl", good + line + "\n")))
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert hp_json("runs", "list") == []


def test_runs_name_their_optimizer_and_keep_it_through_export(cli_env, tmp_path: Path) -> None:
    text = ("name,n_params,tokens,final_loss,lr,optimizer\n"
            "a,1e6,2e7,3.5,0.001,\n"        # empty: AdamW, the default
            "b,1e6,2e7,3.4,0.0001,Lion\n"   # names are stored lower case
            "c,1e6,2e7,3.6,0.1,sgd\n"
            "d,1e6,2e7,3.3,0.01,adafactor\n")  # an optimizer hpscale does not train is still a run
    hp("import", "runs", str(write(tmp_path, "opt.csv", text)))
    runs = {r["name"]: r["optimizer"] for r in hp_json("runs", "list")}
    assert runs == {"a": "adamw", "b": "lion", "c": "sgd", "d": "adafactor"}
    exported = hp("export", "runs", "--format", "csv").stdout
    assert "optimizer" in exported.splitlines()[0].split(",") and ",lion," in exported
    other = f"sqlite:///{tmp_path / 'o.db'}"
    hp("--database", other, "import", "runs", str(write(tmp_path, "opt2.csv", exported)), "--source", "opt")
    assert {r["name"]: r["optimizer"] for r in hp_json("--database", other, "runs", "list")} == runs
    bad = hp("import", "runs", str(write(tmp_path, "bad.csv", "n_params,tokens,final_loss,optimizer\n1,2,3,adam w\n")))
    assert bad.exit_code == 1 and "bad.csv:2: field 'optimizer': String should match pattern" in bad.stderr


def test_unnamed_runs_keep_their_keys_when_the_optimizer_is_the_default(cli_env, tmp_path: Path) -> None:
    # A file imported before runs had an optimizer re-imports to nothing new, the same file
    # with the default named explicitly too; another optimizer is another run.
    base = '{"n_params": 1, "tokens": 2, "final_loss": 3}\n'
    assert hp_json("import", "runs", str(write(tmp_path, "u.jsonl", base)))["added"] == 1
    named = base.replace("}", ', "optimizer": "adamw"}')
    assert hp_json("import", "runs", str(write(tmp_path, "u.jsonl", named)))["added"] == 0
    lion = base.replace("}", ', "optimizer": "lion"}')
    assert hp_json("import", "runs", str(write(tmp_path, "u.jsonl", lion)))["added"] == 1


def test_unnamed_runs_reimport_idempotently(cli_env, tmp_path: Path) -> None:
    path = write(tmp_path, "u.jsonl", '{"n_params": 1, "tokens": 2, "final_loss": 3}\n{"n_params": 1, "tokens": 2, "final_loss": 4}\n')
    assert hp_json("import", "runs", str(path))["added"] == 2
    assert hp_json("import", "runs", str(path))["added"] == 0


@pytest.mark.parametrize("name, message", [("missing.csv", "no such file"), ("runs.txt", "unknown file type")])
def test_unreadable_files(cli_env, tmp_path: Path, name, message) -> None:
    if name.endswith(".txt"):
        write(tmp_path, name, "x")
    result = hp("import", "runs", str(tmp_path / name))
    assert result.exit_code == 1 and message in result.stderr


def test_steplaw_import(cli_env) -> None:
    path = external("steplaw", "dense_lr_bs_loss.csv")
    assert hp_json("import", "steplaw", str(path)) == {"source": "steplaw", "added": 1911, "skipped": 0}
    assert hp_json("import", "steplaw", str(path))["added"] == 0
    runs = hp_json("runs", "list", "--source", "steplaw")
    first = runs[0]
    assert first["batch_size"] == 736 and first["batch_tokens"] == 736 * 2048
    assert first["final_loss"] == pytest.approx(2.3976109618296744)
    assert len({(r["n_params"], r["tokens"]) for r in runs}) == 17


def test_zhang_steps_to_target_table_imports_as_released(cli_env) -> None:
    # The critical-batch fit on the imported table is the fitting package's fit on its arrays.
    import numpy as np

    from hpscale.fitting.critical import CriticalBatchLaw

    path = external("critical_batch", "zhang2024_cbs_steps_to_target.csv")
    assert hp_json("import", "steps-to-target", str(path), "--source", "zhang")["added"] == 45
    law = hp_json("fit", "--kind", "critical-batch", "--bootstrap", "0")
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    direct = CriticalBatchLaw(n_bootstrap=0).fit(
        n_params=np.array([float(r[0]) * 1e6 for r in rows]), target_loss=np.array([float(r[1]) for r in rows]),
        batch_tokens=np.array([float(r[2]) * float(r[3]) for r in rows]), steps=np.array([float(r[4]) for r in rows]))
    assert law["coefficients"] == pytest.approx(direct.coef_, rel=1e-6)  # least-squares tolerance
    assert [t["b_crit"] for t in law["targets"]] == pytest.approx([t.b_crit for t in direct.targets_], rel=1e-6)


def test_steplaw_bad_file(cli_env, tmp_path: Path) -> None:
    header = "h,ffnh,numh,numl,lr,bs,ti,loss,smooth loss,exp_name,D,N\n"
    bad = write(tmp_path, "s.csv", header + "960,9368,15,7,abc,736,66342,2.4,2.39,x,1e11,2e8\n")
    result = hp("import", "steplaw", str(bad))
    assert result.exit_code == 1 and "s.csv:2: column 'lr': not a number" in result.stderr
    result = hp("import", "steplaw", str(write(tmp_path, "t.csv", "a,b\n1,2\n")))
    assert result.exit_code == 1 and "missing column 'h'" in result.stderr
    # The raw loss and the iteration count are only kept as tags: empty cells are fine there.
    ok = write(tmp_path, "u.csv", header + "960,9368,15,7,0.002,736,,,2.39,x,1e11,2e8\n")
    assert hp_json("import", "steplaw", str(ok))["added"] == 1
    bad = write(tmp_path, "v.csv", header + "960,9368,15,7,0.002,736,1,2.4,,x,1e11,2e8\n")
    result = hp("import", "steplaw", str(bad))
    assert result.exit_code == 1 and "v.csv:2: column 'smooth loss'" in result.stderr


def test_db_upgrade_and_current(cli_env, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    first = hp_json("--database", url, "db", "upgrade")
    assert first["from"] is None and first["to"]
    assert hp_json("--database", url, "db", "upgrade")["from"] == first["to"]
    assert hp_json("--database", url, "db", "current")["current"] == first["to"]


def test_bad_database_url_is_one_line(cli_env) -> None:
    result = hp("--database", "mysql://x@y/z", "runs", "list")
    assert result.exit_code == 1 and "unsupported database backend" in result.stderr


SCHEDULED_CSV = """name,n_params,tokens,final_loss,lr_schedule
cos,1e6,2e7,3.5,kind=cosine;total_steps=1000;peak_lr=0.001;warmup_steps=100;final_lr_ratio=0.1
steps,1e6,2e7,3.6,kind=table;total_steps=1000;warmup_steps=50;table=1:0.001 601:0.0003 801:0.0001
"""


def test_lr_schedule_travels_with_the_run(cli_env, tmp_path: Path) -> None:
    # CSV: the schedule as k=v text; the run's lr and schedule name come from it.
    hp("import", "runs", str(write(tmp_path, "s.csv", SCHEDULED_CSV)), "--source", "s")
    runs = {r["name"]: r for r in hp_json("runs", "list")}
    assert runs["cos"]["lr"] == 0.001 and runs["cos"]["schedule"] == "cosine" and runs["steps"]["schedule"] == "table"
    first = hp("export", "runs", "--format", "csv").stdout
    assert "kind=table;total_steps=1000;warmup_steps=50;table=1:0.001 601:0.0003 801:0.0001" in first
    other = f"sqlite:///{tmp_path / 'o.db'}"
    hp("--database", other, "import", "runs", str(write(tmp_path, "again.csv", first)), "--source", "s")
    assert hp("--database", other, "export", "runs", "--format", "csv").stdout == first
    # JSONL: curve points without an lr get the schedule's; the schedule is exported as given.
    rec = {"name": "j", "n_params": 1e6, "tokens": 2e7, "final_loss": 3.4, "curve": [
        {"step": 50, "loss": 5.0}, {"step": 700, "loss": 3.9}, {"step": 900, "lr": 2e-4, "loss": 3.5}],
        "lr_schedule": {"kind": "table", "table": [{"step": 1, "lr": 1e-3}, {"step": 601, "lr": 3e-4}], "warmup_steps": 100,
                        "total_steps": 1000}}
    hp("import", "runs", str(write(tmp_path, "j.jsonl", json.dumps(rec) + "\n")), "--source", "j")
    out = tmp_path / "out.jsonl"
    hp("export", "runs", "--source", "j", "--format", "jsonl", "--output", str(out))
    back = json.loads(out.read_text())
    assert back["lr_schedule"] == rec["lr_schedule"] and back["lr"] == 1e-3
    assert [p["lr"] for p in back["curve"]] == [pytest.approx(1e-3 * 50 / 100), 3e-4, 2e-4]


@pytest.mark.parametrize(
    "cell, message",
    [
        ("kind=constant;total_steps=10;peak_lr=0.002", "mine.csv:2: field 'lr_schedule': its peak lr 0.002 disagrees with lr = 0.001"),
        ("kind=sawtooth;total_steps=10;peak_lr=0.001", "mine.csv:2: field 'lr_schedule'"),
        ("kind=cosine;peak_lr=0.001", "mine.csv:2: field 'lr_schedule.cosine.total_steps': missing"),
        ("kind=table;table=1-0.001", "mine.csv:2: field 'lr_schedule': table entry '1-0.001' is not step:lr"),
        ("kind=table;table=5:0.001", "the table must start at step 1"),
        ("kind=table;table=1:0.001 1:0.002", "the table's steps must increase"),
        ("kind=wsd;total_steps=10;peak_lr=0.001;warmup_steps=20", "warmup_steps (20) exceeds total_steps (10)"),
    ],
)
def test_bad_lr_schedules(cli_env, tmp_path: Path, cell, message) -> None:
    result = hp("import", "runs", str(write(tmp_path, "mine.csv", f"name,n_params,tokens,final_loss,lr,lr_schedule\na,1,2,3,0.001,{cell}\n")))
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and hp_json("runs", "list") == []
    rec = {"n_params": 1, "tokens": 2, "final_loss": 3, "curve": [{"step": 2000, "loss": 3.0}],
           "lr_schedule": {"kind": "constant", "total_steps": 1000, "peak_lr": 1e-3}}
    result = hp("import", "runs", str(write(tmp_path, "in.jsonl", json.dumps(rec) + "\n")))
    assert result.exit_code == 1 and "in.jsonl:1: field 'curve': step 2000 lies beyond the schedule's 1000 steps" in result.stderr


def test_runs_delete_by_source_and_name_all_or_nothing(cli_env, tmp_path: Path) -> None:
    hp("import", "runs", str(write(tmp_path, "mine.csv", GOOD_CSV)))
    hp("import", "runs", str(write(tmp_path, "other.csv", GOOD_CSV)))
    # A script gets no prompt: without --yes nothing is deleted, and it says what would be.
    refused = hp("runs", "delete", "--source", "mine")
    assert refused.exit_code == 1 and "--yes" in refused.stderr and "3 runs (mine: 3)" in refused.stderr
    unknown = hp("runs", "delete", "--source", "mine", "a", "zz", "--yes")
    assert unknown.exit_code == 1 and "'zz'" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1
    assert len(hp_json("runs", "list")) == 6
    assert hp_json("runs", "delete", "--source", "mine", "a", "b", "--yes") == {
        "runs": 2, "by_source": {"mine": 2}, "laws": []}
    done = hp("runs", "delete", "--source", "other", "-y")
    assert done.exit_code == 0 and "deleted 3 runs (other: 3)" in done.stdout
    assert [r["name"] for r in hp_json("runs", "list")] == ["c"]
    assert hp("runs", "delete", "--yes").exit_code == 1


def test_runs_delete_refuses_runs_a_law_used_unless_forced(cli_env, tmp_path: Path) -> None:
    from hpscale.db import storage
    from hpscale.service.cli.common import open_db

    hp("import", "runs", str(write(tmp_path, "mine.csv", GOOD_CSV)))
    db = open_db()
    used = [r.id for r in storage.list_runs(db, sources=["mine"])]
    law = storage.add_law(db, {"name": "my-fit", "kind": "loss", "form": "chinchilla", "origin": "fitted",
                               "title": "t", "source": "mine", "record": {}, "code_version": "t"}, used)
    refused = hp("runs", "delete", "--source", "mine", "--yes")
    assert refused.exit_code == 1 and f"#{law.id} 'my-fit'" in refused.stderr and "force" in refused.stderr
    assert len(hp_json("runs", "list")) == 3
    out = hp_json("runs", "delete", "--source", "mine", "--force", "--yes")
    assert out["runs"] == 3 and out["laws"] == [{"id": law.id, "name": "my-fit"}]
    assert "my-fit" not in {x.name for x in storage.list_laws(db)}
def test_export_to_a_path_that_cannot_be_written_is_one_line(cli_env, tmp_path: Path) -> None:
    hp("import", "runs", str(write(tmp_path, "a.csv", "n_params,tokens,final_loss\n1e6,2e7,3.5\n")))
    for target, message in [(tmp_path / "no-such-dir" / "out.csv", "cannot write"), (tmp_path, "is a folder")]:
        result = hp("export", "runs", "--format", "csv", "-o", str(target))
        assert result.exit_code == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("error:") and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "data"]  # no temporary file left behind


def test_runs_list_of_an_unknown_source_names_the_stored_ones(cli_env, tmp_path: Path) -> None:
    hp("import", "runs", str(write(tmp_path, "a.csv", "n_params,tokens,final_loss\n1e6,2e7,3.5\n")))
    out = hp("runs", "list", "--source", "nosuch").stdout
    assert "no runs of source nosuch" in out and "stored sources: a (1)" in out and "no runs stored" not in out
