"""Gold's micro-batch (``foreachBatch`` of ``gold_live``) alone, step by step, on a gold that
already holds a few minutes of history.

    python benchmarks/bench_gold_batch.py [--rate 1000] [--batch-seconds 5] [--history-minutes 6] [--batches 8]

Nothing else runs: this measures what one gold micro-batch costs by itself on local[2]
(the pipeline benchmarks measure it sharing the cores with bronze and silver). Silver-like
rows are made with Spark (``--rate`` transactions per simulated second over 1,000,000
users, 1% flagged, a burst user crossing the activity threshold in every batch); the
history is written through the gold writer itself, batch after batch, so the tables have
the files that a running gold leaves. Then ``--batches`` batches of ``--batch-seconds`` each are
timed: wall ms of every step of ``GoldBatchWriter`` (its methods and the write helpers it
calls) and of the whole call; making the rows (a Spark plan over ``range``) is part of the
writer's one job, as reading silver's new rows is in the stream.

Writes benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.common import write_results
except ImportError:
    sys.path.append(str(Path(__file__).resolve().parents[1]))
    from benchmarks.common import write_results

START_MICROS = 1_780_000_000_000_000  # a whole minute, UTC


def silver_rows(spark, first_second: int, seconds: int, rate: int, threshold: int):
    """Silver-like rows for simulated seconds [first_second, first_second + seconds)."""
    from pyspark.sql import functions as F

    n = seconds * rate
    base = START_MICROS + first_second * 1_000_000
    rows = spark.range(n).select(
        F.format_string("tx%012d", F.col("id") + F.lit(first_second * rate)).alias("transaction_id"),
        # One user per batch bursts past the threshold; the rest are spread over 1M users.
        F.when(F.col("id") < threshold, F.format_string("burst%06d", F.lit(first_second)))
        .otherwise(F.format_string("user%07d", (F.rand(first_second) * 1_000_000).cast("int")))
        .alias("user_id"),
        F.timestamp_micros(F.lit(base) + F.col("id") * F.lit(1_000_000 // rate)).alias("event_time"),
        F.current_timestamp().alias("_ingest_time"),
        (F.rand(first_second + 1) * 200).alias("amount"),
        F.lit("USD").alias("currency"),
        F.lit("online").alias("channel"),
        F.lit("US").alias("country"),
        F.rand(first_second + 2).alias("fraud_score"),
        F.lit("fraudlake_fraud").alias("model_name"),
        F.lit("1").alias("model_version"),
        F.lit(None).cast("int").alias("label_is_fraud"),
    )
    return rows.withColumn("amount_usd", F.col("amount")).withColumn("is_flagged", F.col("fraud_score") > 0.99)


def instrument(writer_cls, helpers_module, timings: dict) -> None:
    """Wrap the writer's steps (and the write helpers it imported) to add wall ms to ``timings``."""

    def timed(name, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                tables = [
                    a.table for a in args if isinstance(getattr(a, "table", None), str)
                ]  # which gold table a step wrote
                label = f"{name}({tables[0]})" if tables else name
                timings.setdefault(label, []).append((time.perf_counter() - started) * 1000)

        return wrapper

    for name, value in list(vars(writer_cls).items()):
        if callable(value) and name.startswith("_") and not name.startswith("__"):
            setattr(writer_cls, name, timed(name, value))
    for name in ("append_once", "overwrite_once", "minute_sums", "user_minute_sums"):
        if hasattr(helpers_module, name):
            setattr(helpers_module, name, timed(name, getattr(helpers_module, name)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--batch-seconds", type=int, default=5)
    parser.add_argument("--history-minutes", type=int, default=6)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--history-batch-seconds", type=int, default=30)
    parser.add_argument("--out", default="gold_batch")
    parser.add_argument("--code-note", default=None)
    args = parser.parse_args(argv)

    from fraudlake.gold import stream as gold_stream
    from fraudlake.settings import Context
    from fraudlake.spark import get_spark
    from fraudlake.tables import ensure_tables

    home = tempfile.mkdtemp(prefix="fraudlake-gold-bench-")
    ctx = Context.load(home=home)
    spark = get_spark(ctx)
    ensure_tables(spark, ctx)
    threshold = ctx.settings.streams.activity_alert_threshold
    timings: dict[str, list[float]] = {}
    instrument(gold_stream.GoldBatchWriter, gold_stream, timings)
    writer = gold_stream.GoldBatchWriter(ctx, "bench-gold", out=open("/dev/null", "w"))

    history_batch = args.history_batch_seconds
    second, batch_id = 0, 0
    started = time.perf_counter()
    while second < args.history_minutes * 60:
        writer(silver_rows(spark, second, history_batch, args.rate, threshold), batch_id)
        second += history_batch
        batch_id += 1
    print(f"history: {second} s of rows in {batch_id} batches, {time.perf_counter() - started:.0f} s", flush=True)
    timings.clear()

    totals = []
    for _ in range(args.batches):
        rows = silver_rows(spark, second, args.batch_seconds, args.rate, threshold)
        t0 = time.perf_counter()
        writer(rows, batch_id)
        totals.append((time.perf_counter() - t0) * 1000)
        print(f"batch {batch_id}: {totals[-1]:.0f} ms", flush=True)
        second += args.batch_seconds
        batch_id += 1

    def summary(values):
        ordered = sorted(values)
        return {
            "calls": len(values),
            "mean": round(statistics.fmean(values), 1),
            "p50": round(ordered[len(ordered) // 2], 1),
            "max": round(ordered[-1], 1),
        }

    payload = {
        "how_measured": __doc__.split("\n\n")[2].replace("\n", " "),
        "rate": args.rate,
        "batch_seconds": args.batch_seconds,
        "rows_per_batch": args.rate * args.batch_seconds,
        "history_minutes": args.history_minutes,
        "code_note": args.code_note,
        "batch_total_ms": summary(totals),
        "steps_ms": {name: summary(values) for name, values in timings.items()},
    }
    print(write_results(args.out, payload))
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
