"""Import speed: the 1,911-row Step Law file into a new SQLite database (target: under 5 s).

Usage: python benchmarks/import_speed.py [PATH_TO_dense_lr_bs_loss.csv] [--repeat 3]
Prints a table: parse time, store time, total, and a re-import (idempotent: adds nothing).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hpscale.db import storage
from hpscale.db.engine import Database
from hpscale.service.runformat import parse_steplaw_file

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / "steplaw" / "dense_lr_bs_loss.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"{'trial':>5} {'rows':>6} {'parse s':>8} {'store s':>8} {'total s':>8} {'re-import s':>11} {'added again':>11}")
    for trial in range(1, args.repeat + 1):
        with tempfile.TemporaryDirectory() as tmp:
            db = Database(f"sqlite:///{tmp}/bench.db")
            db.ensure_schema()  # schema creation is a one-off, not part of an import
            t0 = time.perf_counter()
            runs = parse_steplaw_file(args.path)
            t1 = time.perf_counter()
            result = storage.add_runs(db, [r.to_storage("steplaw") for r in runs])
            t2 = time.perf_counter()
            again = storage.add_runs(db, [r.to_storage("steplaw") for r in parse_steplaw_file(args.path)])
            t3 = time.perf_counter()
            db.dispose()
        print(f"{trial:>5} {result.added:>6} {t1 - t0:>8.3f} {t2 - t1:>8.3f} {t2 - t0:>8.3f} {t3 - t2:>11.3f} {again.added:>11}")


if __name__ == "__main__":
    main()
