"""What exactly-once costs per Delta write: an append checked by Delta's ``txnAppId`` against
one that records its writer in ``userMetadata`` only, and a MERGE with and without the
transaction confs.

    python benchmarks/bench_delta_append.py [--commits 50] [--rows 1000]

Every micro-batch of fraudlake's streams ends in writes like these. Delta's check of
``txnAppId``/``txnVersion`` reads the table's set-transactions, which rebuilds the table's
state; ``fraudlake.streaming_io`` pays a look at the latest commits' metadata once per
start instead, and appends later batches with their lineage alone. Each variant writes
``--commits`` times in a row to a fresh table (checkpoint every 100 commits, as fraudlake's
tables) on local[2]; wall seconds per write after the first 10 (warm-up) as p50 and mean.
Results: benchmarks/results/delta_append_cost.json.
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
from fraudlake.streaming_io import TXN_APP_ID, TXN_VERSION, batch_committed, lineage_metadata

WARM_UP = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()

    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    ctx = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-bench-"))
    spark = get_spark(ctx, master="local[2]")
    frame = spark.range(args.rows).select(
        "id", F.current_timestamp().alias("ts"), (F.rand(7) * 100).alias("amount"), F.lit("card").alias("channel")
    )

    def txn_append(folder: str, version: int) -> None:
        frame.write.format("delta").mode("append").option("txnAppId", "bench").option("txnVersion", version).save(
            folder
        )

    def lineage_append(folder: str, version: int) -> None:
        frame.write.format("delta").mode("append").option("userMetadata", lineage_metadata("bench", version)).save(
            folder
        )

    def checked_lineage_append(folder: str, version: int) -> None:
        table = f"delta.`{folder}`"
        if not batch_committed(spark, table, "bench", version):
            lineage_append(folder, version)

    def merge(with_txn: bool):
        def run(folder: str, version: int) -> None:
            if with_txn:
                spark.conf.set(TXN_APP_ID, "bench")
                spark.conf.set(TXN_VERSION, str(version))
            try:
                source = frame.limit(100).alias("s")
                DeltaTable.forPath(spark, folder).alias("t").merge(
                    source, "t.id = s.id AND t.id < 0"
                ).whenNotMatchedInsertAll().execute()
            finally:
                spark.conf.unset(TXN_APP_ID)
                spark.conf.unset(TXN_VERSION)

        return run

    variants = {
        "append, Delta txnAppId check": txn_append,
        "append, lineage in userMetadata only": lineage_append,
        "append, lineage looked for first (a writer's first batch)": checked_lineage_append,
        "merge with txnAppId confs": merge(True),
        "merge without": merge(False),
    }
    lineage_append(tempfile.mkdtemp() + "/warm", 0)  # JVM warm-up
    results = {}
    for label, write in variants.items():
        folder = tempfile.mkdtemp(prefix="fraudlake-bench-table-") + "/t"
        frame.write.format("delta").option("delta.checkpointInterval", 100).save(folder)
        seconds = []
        for version in range(1, args.commits + 1):
            began = time.perf_counter()
            write(folder, version)
            seconds.append(time.perf_counter() - began)
        kept = seconds[WARM_UP:]
        results[label] = {
            "p50": round(statistics.median(kept), 3),
            "mean": round(statistics.mean(kept), 3),
            "writes": len(kept),
        }
        print(label, results[label], flush=True)
    path = write_results(
        "delta_append_cost", {"master": "local[2]", "rows_per_write": args.rows, "seconds_per_write": results}
    )
    print(f"-> {path}")


if __name__ == "__main__":
    main()
