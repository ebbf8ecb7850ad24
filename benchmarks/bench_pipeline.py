"""The whole pipeline on local[2], all three layers: sustained capacity, latency, and the prototype's UDF.

    python benchmarks/bench_pipeline.py capacity [--profile throughput] [--rates 10000,20000] [--seconds 120]
    python benchmarks/bench_pipeline.py latency  [--profile latency] [--rate 1000] [--seconds 120] [--layers bronze,silver]
    (capacity and latency take --source kafka: a broker, the simulator sending to a topic, bronze reading it)
    python benchmarks/bench_pipeline.py drain --source kafka [--profile throughput] [--rows 600000]
    python benchmarks/bench_pipeline.py scoring  [--rows 200000]

capacity: for each offered rate, bronze, silver and gold run as in ``fraudlake run
--profile P``. Rows each layer has committed are read from the tables every 5 s (bronze
rows; silver + quarantine rows; gold's ``sum(tx_count)``, which counts every silver row),
and silver's newest event time. Over the last 60% of the trial a layer keeps up when its
backlog (rows committed upstream, not yet by it) grows by less than one micro-batch's worth,
and silver's lag behind the clock grows by less than two bronze/silver trigger intervals;
the highest rate at which every layer keeps up is reported. (With the combined bronze +
silver query, a sample can fall between a batch's bronze and silver commits: the row
figures of the two wobble by a batch, the lag does not.)
latency: at a steady rate, after a warm-up third:
  - ingest → silver commit per row (``_ingest_time`` to the change feed's
    ``_commit_timestamp``), and event time → silver commit; p50/p95/p99;
  - user-activity alerts: from the ingest of the transaction the alert is timed at (the
    one that took the window to the threshold) to the alert's file being written;
  - the current minute in ``gold.dashboard_minute``: the time from the minute's start (the
    rate source stamps rows with the wall clock) to the commit of the first table version
    holding its row (the table's history and time travel).
scoring: silver's capacity on a fixed bronze backlog (available-now), once with the
  registered pyfunc as silver serves it (a vectorised UDF) and once with a row-at-a-time
  Python UDF calling the same model (the prototype's method).

Each mode writes benchmarks/results/pipeline_<mode>[_<profile>].json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fresh_context, under_profile, write_results
from fraudlake.orchestration.pipeline import LAYERS, parse_layers
from fraudlake.settings import Context
from fraudlake.spark import get_spark
from fraudlake.tables import (
    BRONZE_TRANSACTIONS,
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_LATE,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    ensure_tables,
    table_name,
)

MEASURED_SHARE = 0.6


def with_model(spark, ctx: Context) -> None:
    from fraudlake.ml.train import train_model

    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="gradient_boosting", samples=20_000)


SOURCE = {"name": "rate", "bootstrap": None}  # --source; kafka: the broker this run started


def _started(spark, base: Context, profile: str, rate: int, layers=None):
    from fraudlake.orchestration.pipeline import start_pipeline

    ctx = under_profile(fresh_context(base), profile)
    with_model(spark, ctx)
    if SOURCE["name"] != "kafka":
        return ctx, start_pipeline(spark, ctx, layers or LAYERS, "rate", rate=rate, out=open(os.devnull, "w"))
    # The simulator sends to a topic of this trial's own at the rate (a query in the same JVM,
    # started first so the topic exists), and bronze reads it.
    from fraudlake.orchestration.run import start_producer_when_ready

    kafka = {
        "bootstrap_servers": SOURCE["bootstrap"],
        "topic": ctx.paths.home.name,
        "labels_topic": ctx.paths.home.name + ".labels",
    }
    ctx = ctx.with_settings(ingest={"kafka": kafka})
    producer = start_producer_when_ready(spark, ctx, rate)
    pipeline = start_pipeline(spark, ctx, layers or LAYERS, "kafka", out=open(os.devnull, "w"))
    pipeline.add_source_first("produce", producer, ctx.settings.ingest.trigger_seconds)
    return ctx, pipeline


def committed_rows(spark, ctx: Context) -> dict:
    """Rows each layer has committed: bronze, silver + quarantine, and gold (every silver row is
    counted once in gold.dashboard_minute.tx_count)."""
    from pyspark.sql import functions as F

    def count(spec) -> int:
        return spark.table(table_name(ctx, spec)).count()

    def newest(spec) -> float | None:  # epoch seconds of the newest event_time (Delta answers from file stats)
        value = spark.table(table_name(ctx, spec)).agg(F.unix_micros(F.max("event_time"))).first()[0]
        return None if value is None else value / 1e6

    gold = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE)).agg(F.sum("tx_count")).first()[0] or 0
    return {
        "bronze": count(BRONZE_TRANSACTIONS),
        "silver": count(SILVER_SCORED) + count(SILVER_QUARANTINE),
        "gold": int(gold),
        "silver_scored": count(SILVER_SCORED),
        "silver_newest_event": newest(SILVER_SCORED),
        "sampled_at": time.time(),
    }


def capacity_trial(spark, base: Context, profile: str, rate: int, seconds: float) -> dict:
    from fraudlake.orchestration.streaming import stop_between_batches

    ctx, pipeline = _started(spark, base, profile, rate)
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(5)
            samples.append((time.monotonic() - started, committed_rows(spark, ctx)))
    finally:
        stop_between_batches(list(pipeline.queries.values()))
        shutil.rmtree(ctx.paths.home, ignore_errors=True)
    window = [s for s in samples if s[0] >= (1 - MEASURED_SHARE) * seconds]
    (t0, first), (t1, last) = window[0], window[-1]
    offered = rate * (t1 - t0)
    settings = ctx.settings
    batch_rows = rate * max(settings.ingest.trigger_seconds, settings.streams.gold_trigger_seconds)
    backlog = {"bronze": int(offered - (last["bronze"] - first["bronze"]))}
    for upstream, downstream in (("bronze", "silver"), ("silver_scored", "gold")):
        backlog[downstream] = int((last[upstream] - last[downstream]) - (first[upstream] - first[downstream]))
    # Silver's lag behind the clock (the rate source stamps events with it): a layer that keeps
    # up has a lag that does not grow; one batch interval of wobble is allowed.
    lags = [s["sampled_at"] - s["silver_newest_event"] for _, s in window if s["silver_newest_event"] is not None]
    lag_growth = lags[-1] - lags[0] if len(lags) > 1 else None
    allowed_lag_growth = 2 * max(settings.ingest.trigger_seconds, settings.streams.silver_trigger_seconds)
    kept_up = all(growth < batch_rows for growth in backlog.values()) and (
        lag_growth is not None and lag_growth < allowed_lag_growth
    )
    return {
        "rate": rate,
        "kept_up": kept_up,
        "silver_lag_seconds": {
            "window_start": round(lags[0], 1) if lags else None,
            "window_end": round(lags[-1], 1) if lags else None,
            "max": round(max(lags), 1) if lags else None,
            "growth": None if lag_growth is None else round(lag_growth, 1),
            "allowed_growth": allowed_lag_growth,
        },
        "backlog_growth_rows": backlog,
        "allowed_growth_rows": int(batch_rows),
        "rows_per_second": {
            name: round((last[name] - first[name]) / (t1 - t0)) for name in ("bronze", "silver", "gold")
        },
        "backlog_at_end_rows": {
            "silver": last["bronze"] - last["silver"],
            "gold": last["silver_scored"] - last["gold"],
        },
    }


def run_drain(spark, base: Context, args) -> dict:
    """Kafka: a topic filled with ``--rows`` records first, then every layer started on it; how
    long until silver and gold hold them all. The producer is not on the cores meanwhile (as
    when it runs elsewhere), so this is what the layers consume from Kafka on this machine."""
    from fraudlake.bronze.ingest import produce_batch
    from fraudlake.orchestration.pipeline import start_pipeline
    from fraudlake.orchestration.streaming import stop_between_batches

    if SOURCE["name"] != "kafka":
        raise SystemExit("drain reads a filled topic: give --source kafka")
    ctx = under_profile(fresh_context(base), args.profile)
    with_model(spark, ctx)
    kafka = {
        "bootstrap_servers": SOURCE["bootstrap"],
        "topic": ctx.paths.home.name,
        "labels_topic": ctx.paths.home.name + ".labels",
    }
    if args.max_offsets:
        kafka["max_offsets_per_trigger"] = args.max_offsets
    ctx = ctx.with_settings(ingest={"kafka": kafka})
    if args.clock_rate:
        # Event times as a live stream at that rate would have them (from now), not days of history.
        from datetime import datetime, timezone

        clock = {"start_time": datetime.now(timezone.utc), "rows_per_day": args.clock_rate * 86_400}
        ctx = ctx.with_settings(simulator=clock)
    began = time.monotonic()
    rows, _ = produce_batch(spark, ctx, args.rows)
    produced = time.monotonic() - began
    began = time.monotonic()
    pipeline = start_pipeline(spark, ctx, LAYERS, "kafka", out=open(os.devnull, "w"))
    done: dict[str, float] = {}
    try:
        while "gold" not in done and time.monotonic() - began < 1800:
            time.sleep(2)
            now = committed_rows(spark, ctx)
            if "silver" not in done and now["silver"] >= rows:
                done["silver"] = time.monotonic() - began
            # Gold has counted every silver row, or recorded it as late (its minute was final).
            late = spark.table(table_name(ctx, GOLD_LATE)).count()
            if "silver" in done and now["gold"] + late >= now["silver_scored"]:
                done["gold"] = time.monotonic() - began
    finally:
        stop_between_batches(list(pipeline.queries.values()))
        shutil.rmtree(ctx.paths.home, ignore_errors=True)
    return {
        "profile": args.profile,
        "rows": rows,
        "max_offsets_per_trigger": args.max_offsets,
        "event_clock": f"live, {args.clock_rate} rows/s" if args.clock_rate else "simulated history (days)",
        "produce_seconds": round(produced, 1),
        "caught_up_seconds": {layer: round(t, 1) for layer, t in done.items()},
        "rows_per_second": {layer: round(rows / t) for layer, t in done.items()},
        "note": "from the start of the queries on a filled topic (their start included) to the layer holding every row",
    }


def run_capacity(spark, base: Context, args) -> dict:
    trials = []
    for rate in (int(r) for r in args.rates.split(",")):
        trial = capacity_trial(spark, base, args.profile, rate, args.seconds)
        print(trial, flush=True)
        trials.append(trial)
        if not trial["kept_up"]:
            break
    sustained = max((t["rate"] for t in trials if t["kept_up"]), default=0)
    return {
        "profile": args.profile,
        "seconds_per_trial": args.seconds,
        "sustained_rows_per_second": sustained,
        "trials": trials,
    }


def _percentiles(frame, column: str) -> dict:
    if not frame.take(1):
        return {"p50": None, "p95": None, "p99": None, "rows": 0}
    p50, p95, p99 = frame.approxQuantile(column, [0.5, 0.95, 0.99], 0.001)
    return {"p50": round(p50, 2), "p95": round(p95, 2), "p99": round(p99, 2), "rows": frame.count()}


def run_latency(spark, base: Context, args) -> dict:
    from pyspark.sql import functions as F

    from fraudlake.orchestration.streaming import stop_between_batches

    ctx, pipeline = _started(spark, base, args.profile, args.rate, parse_layers(args.layers))
    time.sleep(args.seconds)
    stopped = time.time()
    stop_between_batches(list(pipeline.queries.values()))
    first_seen = _first_commit_of_each_minute(spark, table_name(ctx, GOLD_DASHBOARD_MINUTE))

    changes = (
        spark.read.format("delta")
        .option("readChangeFeed", "true")
        .option("startingVersion", 0)
        .table(table_name(ctx, SILVER_SCORED))
    )
    begin = changes.agg(F.min("_ingest_time")).first()[0]
    warm_from = F.lit(begin) + F.expr(f"INTERVAL {int(args.seconds / 3)} SECONDS")
    warm = changes.where(F.col("_ingest_time") >= warm_from)

    def seconds(later, earlier):
        return (F.unix_micros(later) - F.unix_micros(earlier)) / 1e6

    ingest_to_silver = warm.select(seconds("_commit_timestamp", "_ingest_time").alias("s"))
    # The same per 5 minutes of the run: a cost that grows with the stream (e.g. silver's
    # behaviour history) shows as a drift from period to period.
    period = F.floor(seconds("_ingest_time", F.lit(begin)) / 300).cast("int")
    by_period = (
        warm.select(period.alias("period"), seconds("_commit_timestamp", "_ingest_time").alias("s"))
        .groupBy("period")
        .agg(F.percentile_approx("s", 0.95, 1000).alias("p95"), F.count("*").alias("rows"))
        .orderBy("period")
        .collect()
    )
    event_to_silver = warm.select(seconds("_commit_timestamp", "event_time").alias("s"))
    # Kafka: from the record's broker timestamp (kafka:<topic>:<partition>:<offset>:<ms>) to silver.
    record_time = F.timestamp_millis(F.element_at(F.split("_source", ":"), 5).cast("long"))
    topic_to_silver = warm.select(seconds("_commit_timestamp", record_time).alias("s"))

    silver = spark.table(table_name(ctx, SILVER_SCORED)).select("user_id", "event_time", "_ingest_time")
    alerts = (
        spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
        .where("alert_type = 'user_activity'")
        .select("user_id", "alert_time", F.col("_metadata.file_modification_time").alias("written"))
        .join(silver.withColumnRenamed("event_time", "alert_time"), ["user_id", "alert_time"])
        .where(F.col("_ingest_time") >= warm_from)
        .select(seconds("written", "_ingest_time").alias("s"))
    )
    # Minutes that began after the warm-up and at least a minute before the sources stopped.
    warm_minutes = sorted(m for m in first_seen if m >= begin.timestamp() + args.seconds / 3 and m + 60 <= stopped)
    minute_delays = sorted(first_seen[m] - m for m in warm_minutes)
    result = {
        "profile": args.profile,
        "layers": args.layers,
        "rate": args.rate,
        "seconds": args.seconds,
        "ingest_to_silver_commit_seconds": _percentiles(ingest_to_silver, "s"),
        "ingest_to_silver_p95_per_5_minutes": [
            {"from_second": r["period"] * 300, "p95": round(r["p95"], 2), "rows": r["rows"]} for r in by_period
        ],
        "event_to_silver_commit_seconds": _percentiles(event_to_silver, "s"),
        **(
            {"kafka_record_to_silver_commit_seconds": _percentiles(topic_to_silver, "s")}
            if SOURCE["name"] == "kafka"
            else {}
        ),
        "ingest_to_activity_alert_seconds": _percentiles(alerts, "s"),
        "current_minute_row_after_seconds": {
            "minutes": len(minute_delays),
            "max": round(minute_delays[-1], 1) if minute_delays else None,
            "all": [round(d, 1) for d in minute_delays],
            "note": "commit time of the first table version holding the minute, minus the minute's start",
        },
    }
    shutil.rmtree(ctx.paths.home, ignore_errors=True)
    return result


def _first_commit_of_each_minute(spark, table: str) -> dict[int, float]:
    """Minute (epoch s) -> commit time (epoch s) of the first version of ``table`` that holds its
    row, from the table's history and time travel: exact, where polling the table would be
    seconds late on a busy machine."""
    from pyspark.sql import functions as F

    history = spark.sql(f"DESCRIBE HISTORY {table}").select("version", F.unix_millis("timestamp").alias("ms"))
    first: dict[int, float] = {}
    for version, ms in sorted((r["version"], r["ms"]) for r in history.collect()):
        minutes = spark.sql(f"SELECT unix_seconds(minute) AS m FROM {table} VERSION AS OF {version}").collect()
        for row in minutes:
            first.setdefault(row["m"], ms / 1000)
    return first


def run_scoring(spark, base: Context, args) -> dict:
    """Silver over a fixed bronze backlog: vectorised pyfunc UDF vs a row-at-a-time Python UDF."""
    from fraudlake.ml.serving import ModelScorer, load_scorer
    from fraudlake.silver.stream import start_silver
    from fraudlake.simulator import generate_batch

    results = {}
    for method in args.methods.split(","):
        rows = args.rows if method == "pandas_udf" else args.row_udf_rows
        ctx = fresh_context(base, streams={"silver_max_files_per_trigger": 10_000})
        with_model(spark, ctx)
        generate_batch(spark, ctx.settings.simulator, rows).write.format("delta").mode("append").saveAsTable(
            table_name(ctx, BRONZE_TRANSACTIONS)
        )
        scorer = load_scorer(spark, ctx)
        if method == "row_udf":
            import mlflow

            # Workers load the model from a local copy: they have no registry connection.
            local_model = mlflow.artifacts.download_artifacts(scorer.model_uri)
            scorer = ModelScorer(
                _row_udf(local_model), scorer.model_uri, scorer.model_name, scorer.model_version, scorer.flag_threshold
            )
        started = time.monotonic()
        query, writer = start_silver(spark, ctx, scorer, available_now=True)
        query.awaitTermination()
        elapsed = time.monotonic() - started
        results[method] = {
            "rows": writer.stats.scored,
            "seconds": round(elapsed, 1),
            "rows_per_second": round(writer.stats.scored / elapsed),
        }
        print(method, results[method], flush=True)
        shutil.rmtree(ctx.paths.home, ignore_errors=True)
    return results


def _row_udf(model_path: str):
    """The prototype's method: a plain Python UDF that scores one row per call."""
    from pyspark.sql import functions as F

    state = {}

    def score(row) -> float:
        import mlflow
        import pandas as pd

        if "model" not in state:
            state["model"] = mlflow.pyfunc.load_model(model_path)
        return float(state["model"].predict(pd.DataFrame([row.asDict()]))[0])

    return F.udf(score, "double")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["capacity", "latency", "scoring", "drain"])
    parser.add_argument(
        "--profile",
        choices=["latency", "throughput"],
        default=None,
        help="stream profile (default: throughput for capacity, latency for latency)",
    )
    parser.add_argument("--rates", default="5000,10000,20000,40000")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rows", type=int, default=200_000, help="bronze backlog for the vectorised scorer")
    parser.add_argument("--row-udf-rows", type=int, default=20_000, help="bronze backlog for the row-at-a-time UDF")
    parser.add_argument("--methods", default="pandas_udf,row_udf", help="scoring methods to compare")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--layers",
        default="bronze,silver,gold",
        help="latency: the layers that run (e.g. bronze,silver to see what gold's batches cost)",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=None,
        help="simulator.n_users (default: the conf's 1,000,000, sized for ~2,000 rows/s: a user makes about "
        "one transaction in 5 minutes; at 20,000 rows/s use 10,000,000, or every user is an activity burst)",
    )
    parser.add_argument("--max-offsets", type=int, default=None, help="drain: ingest.kafka.max_offsets_per_trigger")
    parser.add_argument(
        "--clock-rate", type=int, default=None, help="drain: records stamped from now at this rate (a live backlog)"
    )
    parser.add_argument(
        "--source",
        choices=["rate", "kafka"],
        default="rate",
        help="kafka: a broker is started, the simulator sends to a topic in the same JVM, bronze reads it",
    )
    parser.add_argument("--out", default=None, help="results file name (default: pipeline_<mode>[_<profile>])")
    args = parser.parse_args()

    base = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-bench-session-"))
    if args.users is not None:
        base = base.with_settings(simulator={"n_users": args.users})
    spark = get_spark(base, master=args.master)
    if args.profile is None:
        args.profile = "throughput" if args.mode == "capacity" else "latency"
    runner = {"capacity": run_capacity, "latency": run_latency, "scoring": run_scoring, "drain": run_drain}[args.mode]
    broker = None
    if args.source == "kafka":
        from fraudlake import broker as kafka_broker

        broker = kafka_broker.Broker(base.paths.home / "kafka", "127.0.0.1", 19092)
        kafka_broker.start(broker)
        SOURCE.update(name="kafka", bootstrap=broker.address)
    try:
        result = runner(spark, base, args)
    finally:
        if broker is not None:
            kafka_broker.stop(broker)
    name = f"pipeline_{args.mode}" + (f"_{args.profile}" if args.mode != "scoring" else "")
    if args.source == "kafka":
        name += "_kafka"
    if args.mode == "latency" and parse_layers(args.layers) != LAYERS:
        name += "_" + "-".join(parse_layers(args.layers))
    # JVM flags and Spark confs given through the environment (a setting on trial) are part of what was measured.
    extra = {
        name.lower(): os.environ[name] for name in ("JAVA_TOOL_OPTIONS", "PYSPARK_SUBMIT_ARGS") if os.environ.get(name)
    }
    users = {"n_users": base.settings.simulator.n_users}
    path = write_results(
        args.out or name, {"master": args.master, **users, **extra, "load_average_after": os.getloadavg(), **result}
    )
    print(result)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
