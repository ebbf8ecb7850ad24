"""``ensure_tables`` on a fresh and on an existing home, tables one after another against side by side.

    python benchmarks/bench_ensure_tables.py [--rounds 3] [--out ensure_tables_threads]

One local[2] session; each round creates a fresh home with ``TABLE_THREADS`` = 1 and = 4 (the
first round's first call also pays the JVM's warm-up: it runs the threaded variant first, so
neither variant is favoured by a warm JVM in every round), then calls ``ensure_tables`` again
on the existing home. Seconds per call, written to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fresh_context, write_results  # noqa: E402


def main() -> None:
    import fraudlake.tables as tables
    from fraudlake.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="ensure_tables_threads")
    args = parser.parse_args()

    def context():
        return fresh_context(spark={"shuffle_partitions": 2})

    spark = get_spark(context(), master="local[2]")
    runs: dict[str, list[dict]] = {"1": [], "4": []}
    for round_ in range(args.rounds):
        for threads in (4, 1) if round_ == 0 else (1, 4):
            tables.TABLE_THREADS = threads
            ctx = context()
            began = time.perf_counter()
            tables.ensure_tables(spark, ctx)
            fresh = time.perf_counter() - began
            began = time.perf_counter()
            tables.ensure_tables(spark, ctx)
            existing = time.perf_counter() - began
            runs[str(threads)].append(
                {"round": round_, "fresh_home_s": round(fresh, 2), "existing_home_s": round(existing, 2)}
            )
            print(f"round {round_} threads {threads}: fresh {fresh:.2f} s, existing {existing:.2f} s", flush=True)
    spark.stop()
    print(write_results(args.out, {"tables": len(tables.ALL_TABLES), "runs_by_threads": runs}))


if __name__ == "__main__":
    main()
