"""The whole pipeline on local[2]: sustained capacity, event-to-silver latency, and the prototype's UDF.

    python benchmarks/bench_pipeline.py capacity [--rates 5000,10000,20000] [--seconds 120]
    python benchmarks/bench_pipeline.py latency  [--rate 1000] [--seconds 120]
    python benchmarks/bench_pipeline.py scoring  [--rows 200000]

capacity: for each offered rate, bronze, silver and gold run as in ``fraudlake run``.
  Over the last 60% of the trial, a layer keeps up when its backlog (rows committed
  upstream, not yet processed) grows by less than one micro-batch's worth; the
  highest rate where every layer keeps up is reported.
latency: at a steady rate, event time → the commit of the silver row, from the
  change data feed's ``_commit_timestamp``, after a warm-up third; p50/p95/p99.
scoring: silver's capacity on a fixed bronze backlog (available-now), once with the
  registered pyfunc as a vectorised ``mlflow.pyfunc.spark_udf`` (what silver does) and
  once with a row-at-a-time Python UDF calling the same model (the prototype's method).

Each mode writes benchmarks/results/pipeline_<mode>.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from fraudlake.settings import Context, Paths  # noqa: E402
from fraudlake.spark import get_spark  # noqa: E402
from fraudlake.tables import BRONZE_TRANSACTIONS, SILVER_SCORED, ensure_tables, table_name  # noqa: E402

MEASURED_SHARE = 0.6


def fresh_context(base: Context, **sections) -> Context:
    home = Path(tempfile.mkdtemp(prefix="fraudlake-bench-"))
    ctx = Context(base.settings, Paths.of(base.settings, home))
    return ctx.with_settings(**sections) if sections else ctx


def with_model(spark, ctx: Context) -> None:
    from fraudlake.ml.train import train_model

    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="gradient_boosting", samples=20_000)


def capacity_trial(spark, base: Context, rate: int, seconds: float) -> dict:
    from fraudlake.pipeline import LAYERS, start_pipeline
    from fraudlake.streaming import stop_between_batches

    ctx = fresh_context(base)
    with_model(spark, ctx)
    pipeline = start_pipeline(spark, ctx, LAYERS, "rate", rate=rate, out=open("/dev/null", "w"))
    samples = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds:
            time.sleep(5)
            samples.append((time.monotonic() - started, _committed(pipeline.queries)))
    finally:
        stop_between_batches(list(pipeline.queries.values()))
        shutil.rmtree(ctx.paths.home, ignore_errors=True)
    window = [s for s in samples if s[0] >= (1 - MEASURED_SHARE) * seconds]
    first, last = window[0][1], window[-1][1]
    offered = rate * (window[-1][0] - window[0][0])
    batch_rows = rate * max(ctx.settings.ingest.trigger_seconds, ctx.settings.streams.gold_trigger_seconds)
    backlog = {}
    for upstream, downstream in (("offered", "bronze"), ("bronze", "silver"), ("silver", "gold_model_alerts")):
        if upstream == "offered":
            growth = offered - (last["bronze"] - first["bronze"])
        else:
            growth = (last[upstream] - last[downstream]) - (first[upstream] - first[downstream])
        backlog[downstream] = int(growth)
    kept_up = all(growth < batch_rows for growth in backlog.values())
    return {"rate": rate, "kept_up": kept_up, "backlog_growth_rows": backlog, "allowed_growth_rows": int(batch_rows),
            "rows_per_second": {name: round((last[name] - first[name]) / (window[-1][0] - window[0][0]))
                                for name in ("bronze", "silver", "gold_model_alerts")}}


def _committed(queries: dict) -> dict:
    """Rows each query has processed so far (from its progress reports)."""
    from fraudlake.streaming import rows_processed

    return {name: rows_processed(query) for name, query in queries.items()}


def run_capacity(spark, base: Context, args) -> dict:
    trials = []
    for rate in (int(r) for r in args.rates.split(",")):
        trial = capacity_trial(spark, base, rate, args.seconds)
        print(trial, flush=True)
        trials.append(trial)
        if not trial["kept_up"]:
            break
    sustained = max((t["rate"] for t in trials if t["kept_up"]), default=0)
    return {"seconds_per_trial": args.seconds, "sustained_rows_per_second": sustained, "trials": trials}


def run_latency(spark, base: Context, args) -> dict:
    from pyspark.sql import functions as F

    from fraudlake.pipeline import LAYERS, start_pipeline
    from fraudlake.streaming import stop_between_batches

    ctx = fresh_context(base)
    with_model(spark, ctx)
    pipeline = start_pipeline(spark, ctx, LAYERS, "rate", rate=args.rate, out=open("/dev/null", "w"))
    time.sleep(args.seconds)
    stop_between_batches(list(pipeline.queries.values()))
    changes = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 0).table(
        table_name(ctx, SILVER_SCORED)
    )
    latency = (F.col("_commit_timestamp").cast("double") - F.col("event_time").cast("double")).alias("latency")
    start = changes.agg(F.min("event_time")).first()[0]
    warm = changes.where(F.col("event_time") >= F.lit(start) + F.expr(f"INTERVAL {int(args.seconds / 3)} SECONDS"))
    p50, p95, p99 = warm.select(latency).approxQuantile("latency", [0.5, 0.95, 0.99], 0.001)
    rows = warm.count()
    shutil.rmtree(ctx.paths.home, ignore_errors=True)
    return {"rate": args.rate, "seconds": args.seconds, "rows_measured": rows,
            "event_to_silver_commit_seconds": {"p50": round(p50, 2), "p95": round(p95, 2), "p99": round(p99, 2)}}


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
            scorer = ModelScorer(_row_udf(local_model), scorer.model_uri, scorer.model_name,
                                 scorer.model_version, scorer.flag_threshold)
        started = time.monotonic()
        query, writer = start_silver(spark, ctx, scorer, available_now=True)
        query.awaitTermination()
        elapsed = time.monotonic() - started
        results[method] = {"rows": writer.stats.scored, "seconds": round(elapsed, 1),
                           "rows_per_second": round(writer.stats.scored / elapsed)}
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
    parser.add_argument("mode", choices=["capacity", "latency", "scoring"])
    parser.add_argument("--rates", default="5000,10000,20000,50000")
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--rows", type=int, default=200_000, help="bronze backlog for the vectorised scorer")
    parser.add_argument("--row-udf-rows", type=int, default=20_000, help="bronze backlog for the row-at-a-time UDF")
    parser.add_argument("--methods", default="pandas_udf,row_udf", help="scoring methods to compare")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    base = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-bench-session-"))
    spark = get_spark(base, master=args.master)
    runner = {"capacity": run_capacity, "latency": run_latency, "scoring": run_scoring}[args.mode]
    result = runner(spark, base, args)
    path = write_results(f"pipeline_{args.mode}", {"master": args.master, **result})
    print(result)
    print(f"-> {path}")


if __name__ == "__main__":
    main()
