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
    assert exported.splitlines()[0].split(",")[9] == "optimizer" and ",lion," in exported
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


def test_steplaw_bad_file(cli_env, tmp_path: Path) -> None:
    header = "h,ffnh,numh,numl,lr,bs,ti,loss,smooth loss,exp_name,D,N\n"
    bad = write(tmp_path, "s.csv", header + "960,9368,15,7,abc,736,66342,2.4,2.39,x,1e11,2e8\n")
    result = hp("import", "steplaw", str(bad))
    assert result.exit_code == 1 and "s.csv:2: column 'lr': not a number" in result.stderr
    result = hp("import", "steplaw", str(write(tmp_path, "t.csv", "a,b\n1,2\n")))
    assert result.exit_code == 1 and "missing column 'h'" in result.stderr


def test_db_upgrade_and_current(cli_env, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    first = hp_json("--database", url, "db", "upgrade")
    assert first["from"] is None and first["to"]
    assert hp_json("--database", url, "db", "upgrade")["from"] == first["to"]
    assert hp_json("--database", url, "db", "current")["current"] == first["to"]


def test_bad_database_url_is_one_line(cli_env) -> None:
    result = hp("--database", "mysql://x@y/z", "runs", "list")
    assert result.exit_code == 1 and "unsupported database backend" in result.stderr
