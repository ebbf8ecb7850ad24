"""What every `fraudlake` command pays before its first row: the JVM, the session, the tables.

    python benchmarks/bench_startup.py [--out startup]

Each measurement is a fresh process, as a user's command is: ``get_spark`` (JVM start,
Delta's jar resolved by Spark), then ``ensure_tables`` on a fresh home and on a home that
already has every table (a restart), then a second ``ensure_tables`` in the same JVM (what
is left once the JVM is warm). ``--repeats`` processes of each kind.

Results: benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results

ONE_START = """
import json, sys, time
t0 = time.perf_counter()
from fraudlake.settings import Context
from fraudlake.spark import get_spark
from fraudlake.tables import ensure_tables
ctx = Context.load(home=sys.argv[1])
t1 = time.perf_counter()
spark = get_spark(ctx)
t2 = time.perf_counter()
ensure_tables(spark, ctx)
t3 = time.perf_counter()
ensure_tables(spark, ctx)
t4 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "session_s": t2 - t1, "ensure_tables_s": t3 - t2, "again_warm_s": t4 - t3}))
"""


def one_start(home: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", ONE_START, str(home)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="startup")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"fresh_home": [], "existing_home": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            home = Path(tmp) / f"home{i}"
            runs["fresh_home"].append(one_start(home))
            runs["existing_home"].append(one_start(home))
            print(f"{i + 1}/{args.repeats}: {runs['fresh_home'][-1]} {runs['existing_home'][-1]}", flush=True)
    summary = {
        kind: {key: round(statistics.median(r[key] for r in rows), 2) for key in rows[0]} for kind, rows in runs.items()
    }
    path = write_results(args.out, {"medians": summary, "runs": runs})
    print(json.dumps(summary, indent=2), f"\nwritten to {path}")


if __name__ == "__main__":
    main()
