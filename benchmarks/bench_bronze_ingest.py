"""Sustained bronze ingest rate on local[2]: the highest simulator rate the stream keeps up with.

For each offered rate, the rate source feeds the simulator into bronze.transactions
(Delta sink, real checkpoint) for ``--seconds``. After warm-up batches, the stream
keeps up when rows committed per second of wall time reach the offered rate (within
5%) and batches finish within the trigger interval, so the backlog does not grow.

    python benchmarks/bench_bronze_ingest.py [--rates 50000,100000,150000,200000] [--seconds 60]

Writes benchmarks/results/bronze_ingest.json.
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
from fraudlake.bronze.ingest import start_bronze_ingest  # noqa: E402
from fraudlake.settings import Context  # noqa: E402
from fraudlake.spark import get_spark  # noqa: E402
from fraudlake.tables import register_tables  # noqa: E402

WARMUP_BATCHES = 2


def trial(spark, base: Context, rate: int, seconds: float, trigger: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"fraudlake-bench-{rate}-"))
    try:
        ctx = Context(base.settings, type(base.paths).of(base.settings, home)).with_settings(
            ingest={"trigger_seconds": trigger}
        )
        register_tables(spark, ctx)
        query = start_bronze_ingest(spark, ctx, "rate", rate=rate)
        time.sleep(seconds)
        progress = [p for p in query.recentProgress if p["numInputRows"]]
        query.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    measured = progress[WARMUP_BATCHES:]
    if len(measured) < 3:
        return {"rate": rate, "kept_up": False, "reason": f"only {len(progress)} batches in {seconds}s"}
    rows = sum(p["numInputRows"] for p in measured)
    durations = [p["durationMs"]["triggerExecution"] / 1000 for p in measured]
    # Wall time covered by the measured batches: from the previous batch's end to the last one's.
    span = len(measured) * trigger
    committed_rate = rows / span
    late_half = durations[len(durations) // 2 :]
    kept_up = committed_rate >= 0.95 * rate and max(late_half) <= trigger * 1.05
    return {
        "rate": rate,
        "kept_up": kept_up,
        "batches": len(measured),
        "rows": rows,
        "committed_rows_per_second": round(committed_rate),
        "processed_rows_per_second_median": round(sorted(p["processedRowsPerSecond"] for p in measured)[len(measured) // 2]),
        "batch_seconds_median": round(sorted(durations)[len(durations) // 2], 2),
        "batch_seconds_max_late": round(max(late_half), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50000,100000,150000,200000,300000")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--trigger", type=float, default=5.0, help="micro-batch interval (s)")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    base = Context.load(home=tempfile.mkdtemp(prefix="fraudlake-bench-session-"))
    spark = get_spark(base, master=args.master)
    trials = []
    for rate in (int(r) for r in args.rates.split(",")):
        result = trial(spark, base, rate, args.seconds, args.trigger)
        trials.append(result)
        print(result, flush=True)
        if not result["kept_up"]:
            break
    sustained = max((t["rate"] for t in trials if t["kept_up"]), default=0)
    path = write_results(
        "bronze_ingest",
        {"master": args.master, "seconds_per_trial": args.seconds, "trigger_seconds": args.trigger,
         "sustained_rows_per_second": sustained, "trials": trials},
    )
    print(f"sustained bronze ingest on {args.master}: {sustained:,} rows/s -> {path}")


if __name__ == "__main__":
    main()
