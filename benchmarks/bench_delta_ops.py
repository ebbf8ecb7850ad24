"""The fixed cost of each kind of Delta write or read a gold micro-batch can use, on a tiny table.

    python benchmarks/bench_delta_ops.py [--repeats 8]

A gold micro-batch of a few thousand rows costs seconds mostly in fixed per-operation
costs, not in rows. Each operation here touches one or a few rows of a small table
(deletion vectors on, checkpoint every 100 commits, as fraudlake's gold tables), so what
is measured is the operation's own cost on local[2]: wall ms and Spark jobs (counted in a
job group per call), the first two calls of each kind left out (JIT warm-up):

- ``merge``: ``DeltaTable.merge`` of one row, matched update or insert, alternating;
- ``append``: an idempotent append of one row (``txnAppId`` / ``txnVersion``);
- ``filtered read``: ``table.where(...).agg(...).first()``;
- ``replaceWhere``: overwrite of the rows matching a predicate on a data column;
- ``partition overwrite``: dynamic partition overwrite of a day partition (1,440 rows)
  on a table partitioned by day.

Results: benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results
from fraudlake.settings import Context
from fraudlake.spark import get_spark

WARM_UP = 2
MINUTE = 60_000_000
PROPERTIES = "TBLPROPERTIES ('delta.enableDeletionVectors' = 'true', 'delta.checkpointInterval' = '100')"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--out", default="delta_ops_cost")
    args = parser.parse_args()

    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    ctx = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-delta-ops-"))
    spark = get_spark(ctx)
    sc = spark.sparkContext
    spark.sql(f"CREATE TABLE t (minute TIMESTAMP, n BIGINT) USING delta {PROPERTIES}")
    spark.sql(f"CREATE TABLE p (day DATE, minute TIMESTAMP, n BIGINT) USING delta PARTITIONED BY (day) {PROPERTIES}")

    def one_row(micros: int):
        return spark.range(1).select(
            F.timestamp_micros(F.lit(micros)).alias("minute"), F.lit(1).cast("long").alias("n")
        )

    def merge(i: int) -> None:
        (
            DeltaTable.forName(spark, "t")
            .alias("t")
            .merge(one_row(i // 2 * MINUTE).alias("s"), "t.minute = s.minute")
            .whenMatchedUpdate(set={"n": "t.n + s.n"})
            .whenNotMatchedInsertAll()
            .execute()
        )

    def append(i: int) -> None:
        (
            one_row(10**12 + i)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", "bench")
            .option("txnVersion", i)
            .saveAsTable("t")
        )

    def filtered_read(i: int) -> None:
        spark.table("t").where(F.col("minute") >= F.timestamp_micros(F.lit(i * MINUTE))).agg(F.max("n")).first()

    def replace_where(i: int) -> None:
        start = 2 * 10**12 + i // 2 * MINUTE
        (
            one_row(start)
            .write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"minute >= timestamp_micros({start})")
            .saveAsTable("t")
        )

    def partition_overwrite(i: int) -> None:
        day = spark.range(1440).select(
            F.date_add(F.lit("2026-01-01").cast("date"), F.lit(i % 3)).alias("day"),
            F.timestamp_micros(F.col("id") * MINUTE).alias("minute"),
            F.lit(1).cast("long").alias("n"),
        )
        day.write.format("delta").mode("overwrite").option("partitionOverwriteMode", "dynamic").saveAsTable("p")

    results = {}
    for label, operation in [
        ("merge", merge),
        ("append", append),
        ("filtered read", filtered_read),
        ("replaceWhere", replace_where),
        ("partition overwrite", partition_overwrite),
    ]:
        millis, jobs = [], []
        for i in range(args.repeats + WARM_UP):
            group = f"bench-{label}-{i}"
            sc.setJobGroup(group, label)
            began = time.perf_counter()
            operation(i)
            if i >= WARM_UP:
                millis.append((time.perf_counter() - began) * 1000)
                jobs.append(len(sc.statusTracker().getJobIdsForGroup(group)))
        results[label] = {
            "calls": len(millis),
            "ms_p50": round(statistics.median(millis)),
            "ms_max": round(max(millis)),
            "jobs_p50": statistics.median(jobs),
        }
        print(f"{label:<20} {results[label]}", flush=True)
    sc.setJobGroup("", "")
    print(
        write_results(
            args.out,
            {"how_measured": __doc__.split("\n\n")[1].replace("\n", " "), "master": sc.master, "operations": results},
        )
    )
    spark.stop()


if __name__ == "__main__":
    main()
