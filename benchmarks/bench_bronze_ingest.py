"""Sustained bronze ingest rate on local[2]: the highest simulator rate the stream keeps up with.

For each offered rate, the rate source feeds the simulator into bronze.transactions
(Delta sink, real checkpoint) for ``--seconds``. The first 40% of a trial is warm-up
(JIT, the first Delta commit, the backlog that builds meanwhile). Over the rest, the
stream keeps up when rows committed per second of wall time reach the offered rate
(within 3%) and the median batch finishes within the trigger interval, so the
backlog does not grow.

    python benchmarks/bench_bronze_ingest.py [--rates 50000,100000,150000,200000] [--seconds 60]

Writes benchmarks/results/bronze_ingest.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from fraudlake.bronze.ingest import start_bronze_ingest  # noqa: E402
from fraudlake.settings import Context  # noqa: E402
from fraudlake.spark import get_spark  # noqa: E402
from fraudlake.tables import ensure_tables  # noqa: E402

WARMUP_SHARE = 0.4


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def trial(spark, base: Context, rate: int, seconds: float, trigger: float) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"fraudlake-bench-{rate}-"))
    try:
        ctx = Context(base.settings, type(base.paths).of(base.settings, home)).with_settings(
            ingest={"trigger_seconds": trigger}
        )
        ensure_tables(spark, ctx)
        query = start_bronze_ingest(spark, ctx, "rate", rate=rate)
        time.sleep(seconds)
        progress = [p for p in query.recentProgress if p["numInputRows"]]  # the last 100 batches
        query.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    started = _epoch(progress[0]["timestamp"]) if progress else 0.0
    measured = [p for p in progress if _epoch(p["timestamp"]) >= started + WARMUP_SHARE * seconds]
    if len(measured) < 3:
        return {"rate": rate, "kept_up": False, "reason": f"only {len(measured)} batches after warm-up"}
    rows = sum(p["numInputRows"] for p in measured)
    durations = [p["durationMs"]["triggerExecution"] / 1000 for p in measured]
    span = _epoch(measured[-1]["timestamp"]) + durations[-1] - _epoch(measured[0]["timestamp"])
    committed_rate = rows / span
    median_batch = sorted(durations)[len(durations) // 2]
    # The backlog does not grow: rows committed keep pace with rows offered, and a typical
    # batch fits in its interval (one slow batch, a GC pause, is absorbed by the next).
    kept_up = committed_rate >= 0.97 * rate and median_batch <= trigger
    return {
        "rate": rate,
        "kept_up": kept_up,
        "batches": len(measured),
        "rows": rows,
        "committed_rows_per_second": round(committed_rate),
        "processed_rows_per_second_median": round(
            sorted(p["processedRowsPerSecond"] for p in measured)[len(measured) // 2]
        ),
        "batch_seconds_median": round(sorted(durations)[len(durations) // 2], 2),
        "batch_seconds_max": round(max(durations), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="50000,100000,150000,200000,300000")
    parser.add_argument("--seconds", type=float, default=120)
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
        {
            "master": args.master,
            "seconds_per_trial": args.seconds,
            "trigger_seconds": args.trigger,
            "sustained_rows_per_second": sustained,
            "trials": trials,
        },
    )
    print(f"sustained bronze ingest on {args.master}: {sustained:,} rows/s -> {path}")


if __name__ == "__main__":
    main()
