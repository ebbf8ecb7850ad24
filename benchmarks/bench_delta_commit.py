"""The fixed cost of one small idempotent Delta append, by checkpoint interval.

    python benchmarks/bench_delta_commit.py [--commits 100] [--rows 1000] [--intervals 10,100]

Every streaming micro-batch ends in appends like this one (1,000 rows, ``txnAppId`` /
``txnVersion`` set, so Delta checks the table's set-transactions first). For each
checkpoint interval a fresh table takes ``--commits`` appends in a row on local[2]; wall
seconds per append are reported after the first 20 (JVM and JIT warm-up), as p50, p95 and
max. Results: benchmarks/results/delta_commit_cost.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results
from fraudlake.settings import Context
from fraudlake.spark import get_spark

WARM_UP = 20


def appends(spark, folder: str, interval: int, commits: int, rows: int) -> list[float]:
    from pyspark.sql import functions as F

    frame = spark.range(rows).select(
        "id", F.current_timestamp().alias("ts"), (F.rand(7) * 100).alias("amount"), F.lit("card").alias("channel")
    )
    (frame.write.format("delta").option("delta.checkpointInterval", interval).save(folder))
    seconds = []
    for version in range(1, commits + 1):
        began = time.perf_counter()
        (
            frame.write.format("delta")
            .mode("append")
            .option("txnAppId", "bench")
            .option("txnVersion", version)
            .save(folder)
        )
        seconds.append(time.perf_counter() - began)
    return seconds[WARM_UP:]


def quantiles(values: list[float]) -> dict:
    import numpy as np

    array = np.asarray(values)
    return {
        "p50": round(float(np.percentile(array, 50)), 3),
        "p95": round(float(np.percentile(array, 95)), 3),
        "max": round(float(array.max()), 3),
        "mean": round(float(array.mean()), 3),
        "appends": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=100)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--intervals", default="10,100")
    args = parser.parse_args()

    home = tempfile.mkdtemp(prefix="fraudlake-bench-")
    spark = get_spark(Context.load(home=home), master="local[2]")
    results = {}
    for interval in (int(x) for x in args.intervals.split(",")):
        results[f"checkpointInterval={interval}"] = quantiles(
            appends(spark, f"{home}/t{interval}", interval, args.commits, args.rows)
        )
        print(interval, results[f"checkpointInterval={interval}"], flush=True)
    path = write_results(
        "delta_commit_cost",
        {
            "how_measured": __doc__.split("\n\n")[1].replace("\n", " "),
            "rows_per_append": args.rows,
            "seconds_per_append": results,
        },
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
