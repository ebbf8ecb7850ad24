"""Scoring throughput of the registered pyfunc on one core, beside the raw scikit-learn pipeline.

    python benchmarks/bench_scoring.py [--rows 20000] [--samples 30000] [--repeats 5]

Trains both models (IsolationForest, gradient boosting) into a temporary home with
the real ``train_model`` (Spark features, MLflow on SQLite), builds one set of
scoring rows with the shared feature code, stops Spark, pins this process to one
core (and BLAS/OpenMP to one thread), then times on the same rows:

- ``pyfunc``: ``mlflow.pyfunc.load_model("models:/fraud_detector/N").predict`` (signature
  enforcement included), what ``spark_udf`` calls per Arrow batch;
- ``raw``: ``Pipeline.decision_function`` (IsolationForest) / ``Pipeline.predict_proba``
  (gradient boosting) on the same pipeline object.

Batch sizes: all rows at once, a 1,000-row micro-batch, and single rows (per-event latency).
Results are data (``benchmarks/results/scoring.json``), not a timed test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402

RAW_METHOD = {"isolation_forest": "decision_function", "gradient_boosting": "predict_proba"}


def build(home: Path, rows: int, samples: int):
    """Train both models and featurise ``rows`` fresh transactions; Spark is stopped afterwards."""
    from fraudlake.conf.settings import SimulatorSettings
    from fraudlake.ml import data
    from fraudlake.ml.train import train_model
    from fraudlake.settings import Context
    from fraudlake.simulator import generate_batch
    from fraudlake.spark import get_spark

    ctx = Context.load(home=str(home))
    spark = get_spark(ctx, master="local[2]")
    versions = {}
    for kind in RAW_METHOD:
        versions[kind] = train_model(spark, ctx, model=kind, samples=samples)["version"]
    # Unseen rows (another seed) through the same feature code as serving.
    transactions = generate_batch(spark, SimulatorSettings(seed=2024), rows).localCheckpoint(eager=True)
    frame = data.to_pandas(data.labelled_features(transactions))
    spark.stop()
    return ctx, versions, frame


def pin_to_one_core() -> str:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # BLAS and OpenMP (HistGradientBoosting predicts with OpenMP)
    if hasattr(os, "sched_setaffinity"):
        core = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {core})
        return f"cpu {core}"
    return "threads limited to 1 (no affinity on this OS)"


def rows_per_second(score, frame, batch_rows: int, repeats: int, budget_seconds: float = 2.0) -> float:
    """Median throughput over ``repeats`` passes; each pass scores consecutive batches of ``batch_rows``
    until it has covered the frame or spent ``budget_seconds`` (single rows are slow)."""
    batches = [frame.iloc[i : i + batch_rows] for i in range(0, len(frame), batch_rows)]
    score(batches[0])  # warm-up: imports, caches
    rates = []
    for _ in range(repeats):
        done, started = 0, time.perf_counter()
        for batch in batches:
            score(batch)
            done += len(batch)
            if time.perf_counter() - started > budget_seconds:
                break
        rates.append(done / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000, help="scoring rows (default 20000)")
    parser.add_argument("--samples", type=int, default=30_000, help="training rows per model (default 30000)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fraudlake-bench-") as scratch:
        ctx, versions, frame = build(Path(scratch) / "home", args.rows, args.samples)
        import mlflow

        from fraudlake.ml.features import MODEL_INPUT_COLUMNS
        from fraudlake.ml.registry import mlflow_client

        mlflow_client(ctx)
        inputs = frame[list(MODEL_INPUT_COLUMNS)]
        core = pin_to_one_core()
        results = []
        for kind, model_version in versions.items():
            pyfunc = mlflow.pyfunc.load_model(f"models:/{ctx.settings.ml.model_name}/{model_version}")
            pipeline = pyfunc.unwrap_python_model().pipeline  # the very object the pyfunc calls
            raw = getattr(pipeline, RAW_METHOD[kind])
            for batch_rows in (len(inputs), 1_000, 1):
                pyfunc_rate = rows_per_second(pyfunc.predict, inputs, batch_rows, args.repeats)
                raw_rate = rows_per_second(raw, inputs, batch_rows, args.repeats)
                results.append(
                    {
                        "model": kind,
                        "version": int(model_version),
                        "batch_rows": batch_rows,
                        "pyfunc_rows_per_s": round(pyfunc_rate),
                        "raw_method": f"Pipeline.{RAW_METHOD[kind]}",
                        "raw_rows_per_s": round(raw_rate),
                        "pyfunc_vs_raw": round(pyfunc_rate / raw_rate, 3),
                    }
                )
                print(
                    f"{kind:18} batch {batch_rows:>6,}: pyfunc {pyfunc_rate:>12,.0f} rows/s   "
                    f"raw {RAW_METHOD[kind]:17} {raw_rate:>12,.0f} rows/s   ({pyfunc_rate / raw_rate:.0%})",
                    flush=True,
                )

    path = write_results(
        "scoring",
        {
            "benchmark": "pyfunc scoring throughput vs the raw scikit-learn pipeline, one core",
            "rows": len(inputs),
            "training_rows": args.samples,
            "repeats": args.repeats,
            "pinned_to": core,
            "versions": {p: version(p) for p in ("scikit-learn", "mlflow-skinny", "skops", "numpy", "pandas")},
            "results": results,
        },
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
