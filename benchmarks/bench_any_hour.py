"""Flag share of the demo's champion at every hour of the UTC day, on the same rows.

    python benchmarks/bench_any_hour.py [--rows 20000] [--samples 30000]

Trains what ``fraudlake demo`` trains (gradient boosting on ``--samples`` simulated
rows) into a temporary home, generates ``--rows`` rows it never saw (another seed),
and scores them through the silver scoring code (``score_transactions``) as generated
and moved to each hour 00..23 of their own day. A model that learned an hour-of-day
rule the live stream contradicts shows it here: before the simulator had one clock,
the demo's champion flagged 0.76% of rows at 23:00 UTC and 99.1% at 03:00.
Results are data (``benchmarks/results/any_hour.json``), not a timed test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=30_000)
    args = parser.parse_args()

    from pyspark.sql import functions as F

    from fraudlake.conf.settings import SimulatorSettings
    from fraudlake.ml.serving import load_scorer, score_transactions
    from fraudlake.ml.train import train_model
    from fraudlake.settings import Context
    from fraudlake.simulator import generate_batch
    from fraudlake.spark import get_spark
    from fraudlake.tables import ensure_tables

    with tempfile.TemporaryDirectory() as tmp:
        ctx = Context.load(home=str(Path(tmp) / "home"))
        spark = get_spark(ctx, master="local[2]")
        ensure_tables(spark, ctx)
        trained = train_model(spark, ctx, model="gradient_boosting", samples=args.samples)
        scorer = load_scorer(spark, ctx)
        rows = generate_batch(spark, SimulatorSettings(seed=7), args.rows).localCheckpoint(eager=True)
        seconds = F.unix_seconds("event_time")
        day = seconds - F.pmod(seconds, 86_400)
        hours = F.explode(F.array(*[F.lit(h) for h in range(24)])).alias("hour")
        moved = rows.select("*", hours).withColumn(
            "event_time", F.timestamp_seconds(day + F.col("hour") * 3600 + F.pmod(seconds, 3600))
        )
        per_hour = {
            int(r["hour"]): round(float(r["share"]), 5)
            for r in score_transactions(moved, scorer)
            .groupBy("hour")
            .agg(F.avg(F.col("is_flagged").cast("double")).alias("share"))
            .collect()
        }
        as_generated = score_transactions(rows, scorer).agg(F.avg(F.col("is_flagged").cast("double"))).first()[0]
        spark.stop()
    shares = [per_hour[h] for h in range(24)]
    path = write_results(
        "any_hour",
        {
            "model": f"gradient_boosting v{trained['version']}",
            "training_rows": args.samples,
            "rows": args.rows,
            "flag_share_as_generated": round(float(as_generated), 5),
            "flag_share_by_utc_hour": {f"{h:02d}:00": per_hour[h] for h in range(24)},
            "spread_max_minus_min": round(max(shares) - min(shares), 5),
            "before_one_clock": {"23:00": 0.0076, "03:00": 0.991, "14:00": 0.0085},
        },
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
