"""TRIAL for the gold redesign: a stateful aggregation (RocksDB, update mode) feeding one MERGE.

    python benchmarks/bench_gold_stateful_trial.py [--rate 1000] [--seconds 120] [--trigger 5]

Not fraudlake's gold: a measurement of the design proposed in issue 12's progress note, so
the next step starts from numbers. A rate stream of silver-like rows (1,000,000 users)
is exploded into its five sliding 5-minute user windows and its minute, aggregated per
``(kind, user_id, start)`` in Spark's state store (watermark on ``start``), and each
micro-batch's changed rows, with absolute values, are (1) checked for windows at the
activity threshold (a collect: what alerts would read) and (2) upserted into one Delta
table with a single MERGE (``set`` = the absolute values: a replay writes the same).
Reported: the micro-batch durations (progress reports) and the foreachBatch steps, after
a warm-up third. Writes benchmarks/results/<--out>.json.
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

THRESHOLD = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--trigger", type=float, default=5)
    parser.add_argument("--out", default="gold_stateful_trial")
    args = parser.parse_args()

    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    home = tempfile.mkdtemp(prefix="fraudlake-gold-trial-")
    ctx = Context.load(home=home)
    spark = get_spark(ctx)
    spark.sql("""CREATE TABLE windows (kind STRING, user_id STRING, start TIMESTAMP, tx_count BIGINT,
                 total_amount DOUBLE, flagged_count BIGINT, last_event_time TIMESTAMP) USING delta
                 TBLPROPERTIES ('delta.enableDeletionVectors' = 'true', 'delta.checkpointInterval' = '100')""")

    rows = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", args.rate)
        .load()
        .select(
            F.col("timestamp").alias("event_time"),
            F.format_string("user%07d", (F.rand() * 1_000_000).cast("int")).alias("user_id"),
            (F.rand() * 200).alias("amount_usd"),
            (F.rand() > 0.99).alias("is_flagged"),
        )
    )
    minute = F.date_trunc("minute", "event_time")
    keys = F.array(
        *[
            F.struct(
                F.lit("user").alias("kind"),
                F.col("user_id").alias("user_id"),
                (minute - F.make_dt_interval(mins=F.lit(k))).alias("start"),
            )
            for k in range(5)
        ],
        F.struct(F.lit("minute").alias("kind"), F.lit(None).cast("string").alias("user_id"), minute.alias("start")),
    )
    aggregated = (
        rows.select("*", F.explode(keys).alias("k"))
        .select("k.*", "event_time", "amount_usd", "is_flagged")
        .withWatermark("start", "7 minutes")
        .groupBy("kind", "user_id", "start")
        .agg(
            F.count("*").alias("tx_count"),
            F.sum("amount_usd").alias("total_amount"),
            F.sum(F.col("is_flagged").cast("long")).alias("flagged_count"),
            F.max("event_time").alias("last_event_time"),
        )
    )

    steps: dict[str, list[float]] = {"alerts collect": [], "merge": [], "foreachBatch": []}
    started_at = time.time()
    warm_up = started_at + args.seconds / 3

    def write(batch, batch_id: int) -> None:
        t0 = time.perf_counter()
        changed = batch.persist()
        busy = changed.where((F.col("kind") == "user") & (F.col("tx_count") >= THRESHOLD)).collect()
        t1 = time.perf_counter()
        session = batch.sparkSession
        session.conf.set("spark.databricks.delta.write.txnAppId", "trial")
        session.conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
        try:
            (
                DeltaTable.forName(session, "windows")
                .alias("t")
                .merge(changed.alias("s"), "t.kind = s.kind AND t.user_id <=> s.user_id AND t.start = s.start")
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            session.conf.unset("spark.databricks.delta.write.txnAppId")
            session.conf.unset("spark.databricks.delta.write.txnVersion")
            changed.unpersist()
        t2 = time.perf_counter()
        if time.time() > warm_up:
            steps["alerts collect"].append((t1 - t0) * 1000)
            steps["merge"].append((t2 - t1) * 1000)
            steps["foreachBatch"].append((t2 - t0) * 1000)
        del busy

    query = (
        aggregated.writeStream.outputMode("update")
        .foreachBatch(write)
        .option("checkpointLocation", f"{home}/checkpoint")
        .trigger(processingTime=f"{args.trigger} seconds")
        .start()
    )
    time.sleep(args.seconds)
    query.stop()
    reports = [p for p in query.recentProgress if p["timestamp"] and p["numInputRows"]]
    measured = reports[len(reports) // 3 :]

    def summary(values):
        ordered = sorted(values)
        return (
            {
                "n": len(values),
                "mean": round(statistics.fmean(values), 1),
                "p50": round(ordered[len(ordered) // 2], 1),
                "max": round(ordered[-1], 1),
            }
            if values
            else None
        )

    payload = {
        "how_measured": __doc__.split("\n\n")[1].replace("\n", " "),
        "rate": args.rate,
        "seconds": args.seconds,
        "trigger_seconds": args.trigger,
        "batches": summary([p["durationMs"]["triggerExecution"] for p in measured]),
        "rows_per_batch": summary([p["numInputRows"] for p in measured]),
        "state_rows": summary([sum(o.get("numRowsTotal", 0) for o in p.get("stateOperators", [])) for p in measured]),
        "state_commit_ms": summary(
            [sum(o.get("commitTimeMs", 0) for o in p.get("stateOperators", [])) for p in measured]
        ),
        "foreach_batch_steps_ms": {name: summary(values) for name, values in steps.items()},
    }
    for key in ("batches", "rows_per_batch", "state_rows", "state_commit_ms"):
        print(key, payload[key], flush=True)
    print(payload["foreach_batch_steps_ms"])
    print(write_results(args.out, payload))
    spark.stop()


if __name__ == "__main__":
    main()
