"""What a large silver micro-batch spends its time on, one piece at a time, on local[2].

    python benchmarks/bench_silver_steps.py [--rows 250000] [--repeats 3] [--out silver_steps]

A throughput micro-batch of silver holds hundreds of thousands of rows. Here nothing else
runs: ``--rows`` simulated transactions (bronze's schema) are validated into the driver once
(:meth:`SilverBatchWriter.validated`, as the stream does), then each variant runs
``--repeats`` times and its wall seconds are kept:

- ``to_jvm``: the driver's Arrow rows as a DataFrame, counted (no model, no write);
- ``score``: the same plus the features and the model's UDF (a sum of the scores: no write);
- ``append_unscored``: the rows appended to a scratch Delta table as they are;
- ``append_scored``: scored and appended to a scratch Delta table (no observation);
- ``route``: silver's own routing of the batch (:meth:`SilverBatchWriter.route`: repeats,
  scoring, the observed figures, the exactly-once append to ``silver.scored_transactions``).

The differences say what the model, the Parquet/Delta write and silver's bookkeeping each
cost per row. Results: benchmarks/results/<--out>.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=250_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="silver_steps")
    parser.add_argument("--code-note", default=None)
    args = parser.parse_args()

    import pyarrow.compute as pc
    from pyspark.sql import functions as F

    from fraudlake.ml.serving import load_scorer, score_transactions
    from fraudlake.ml.train import train_model
    from fraudlake.settings import Context
    from fraudlake.silver.stream import SilverBatchWriter, local_frame
    from fraudlake.simulator import generate_batch
    from fraudlake.spark import get_spark
    from fraudlake.tables import BRONZE_TRANSACTIONS, ensure_tables, table_name

    home = tempfile.mkdtemp(prefix="fraudlake-bench-")
    ctx = Context.load(home=home)
    spark = get_spark(ctx, master="local[2]")
    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="gradient_boosting", samples=20_000)
    scorer = load_scorer(spark, ctx)
    bronze = table_name(ctx, BRONZE_TRANSACTIONS)
    generate_batch(spark, ctx.settings.simulator, args.rows).write.format("delta").mode("append").saveAsTable(bronze)
    writer = SilverBatchWriter(ctx, scorer, "bench-silver")
    validated = writer.validated(spark.table(bronze))
    valid = validated.filter(pc.is_null(validated.column("quarantine_reason"))).drop_columns(["quarantine_reason"])
    scratch = str(Path(home) / "scratch")

    def to_jvm(_: int) -> None:
        local_frame(spark, valid).agg(F.count(F.lit(1))).collect()

    def score(_: int) -> None:
        score_transactions(local_frame(spark, valid), scorer).agg(F.sum("fraud_score")).collect()

    def append_unscored(i: int) -> None:
        local_frame(spark, valid).write.format("delta").mode("append").save(f"{scratch}-unscored")

    def append_scored(i: int) -> None:
        score_transactions(local_frame(spark, valid), scorer).write.format("delta").mode("append").save(
            f"{scratch}-scored"
        )

    batch = iter(range(1_000_000))

    def route(_: int) -> None:
        # A fresh batch id, and the rows seen as new: silver's append of this batch, as the stream runs it.
        fresh = SilverBatchWriter(ctx, scorer, f"bench-route-{next(batch)}")
        fresh.route(spark, validated, 0)

    variants = {
        "to_jvm": to_jvm,
        "score": score,
        "append_unscored": append_unscored,
        "append_scored": append_scored,
        "route": route,
    }
    results = {}
    for name, variant in variants.items():
        seconds = []
        for i in range(args.repeats + 1):  # the first run warms the JVM and the Python workers up
            started = time.perf_counter()
            variant(i)
            if i:
                seconds.append(time.perf_counter() - started)
        results[name] = {
            "seconds_median": round(statistics.median(seconds), 2),
            "seconds": [round(s, 2) for s in seconds],
            "rows_per_second": round(valid.num_rows / statistics.median(seconds)),
        }
        print(name, results[name], flush=True)
    payload = {
        "how_measured": __doc__.split("\n\n")[2].replace("\n", " "),
        "rows": args.rows,
        "valid_rows": valid.num_rows,
        "code_note": args.code_note,
        "variants": results,
    }
    print(write_results(args.out, payload))
    spark.stop()


if __name__ == "__main__":
    main()
