"""What silver's behaviour history costs as it grows: driver memory and the time to compute one
micro-batch's behavioural features, per history size.

    python benchmarks/bench_behaviour_history.py [--sizes 250000,1000000,2000000,4000000] [--batch 1000]

Rows look like the simulator's live stream at 1,000 rows/s (a million card holders, 20,000
merchants, one row a millisecond, 1 % of them labelled fraud a minute later); each size is a
history of that many rows (read back at once, as a restart does, then five batches), then batches
of ``--batch`` new rows whose features are computed (:meth:`BehaviourHistory.features`, median
of 5) and 64 batches added (:meth:`BehaviourHistory.add`: mean and longest, merges included),
with the history's driver memory and segments; and the longest pause a merge makes (two
half-full segments into a full one). No Spark: the features run in the driver. Writes
benchmarks/results/<--out>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402

START = pd.Timestamp("2026-12-01", tz="UTC")


def stream_rows(rng: np.random.Generator, first: int, n: int) -> pd.DataFrame:
    """``n`` rows of a 1,000 rows/s stream from row ``first`` on."""
    cards = rng.integers(0, 1_300_000, n)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{i:012d}" for i in range(first, first + n)],
            "event_time": START + pd.to_timedelta(np.arange(first, first + n), unit="ms"),
            "user_id": [f"u{x * 10 // 13:07d}" for x in cards],  # 1.3 cards a user
            "card_id": [f"card_{x:016x}" for x in cards],
            "merchant_id": [f"m{x:05d}" for x in rng.integers(0, 20_000, n)],
            "country": "US",
            "amount": rng.lognormal(3.5, 1.0, n).round(2),
            "currency": "USD",
        }
    )


def fraud_labels(rng: np.random.Generator, rows: pd.DataFrame, share: float = 0.01) -> pd.DataFrame:
    """Fraud labels for ``share`` of the rows, arrived a minute after the transaction."""
    fraud = rows.sample(frac=share, random_state=int(rng.integers(1 << 30)))
    return pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"],
            "label_is_fraud": 1,
            "label_time": fraud["event_time"] + pd.Timedelta(minutes=1),
        }
    )


def main() -> None:
    from fraudlake.ml.behaviour import MAX_SEGMENT_ROWS, BehaviourHistory, _Segment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000,2000000,4000000")
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--out", default="behaviour_history_cost")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    results = []
    for size in (int(s) for s in args.sizes.split(",")):
        history = BehaviourHistory(label_maturity=60)
        rows = stream_rows(rng, 0, size)
        history.add(rows.iloc[:0], fraud_labels(rng, rows))
        # As a long-running stream holds it: full segments (added half a segment at a time, so
        # that they merge as the stream's do), then the batches of the last seconds.
        half = MAX_SEGMENT_ROWS // 2
        for start in range(0, size, half):
            history.add(rows.iloc[start : start + half])
        for k in range(5):
            history.add(stream_rows(rng, size + k * args.batch, args.batch))
        size += 5 * args.batch
        timings = []
        for k in range(5):
            batch = stream_rows(rng, size + k * args.batch, args.batch)
            started = time.perf_counter()
            history.features(batch)
            timings.append(time.perf_counter() - started)
        adds = []
        for k in range(5, 69):  # 64 batches: merges of segments up to 64 batches
            started = time.perf_counter()
            history.add(batch)
            adds.append(time.perf_counter() - started)
            batch = stream_rows(rng, size + k * args.batch, args.batch)
        row = {
            "history_rows": size,
            "history_hours_at_1000_rows_per_second": round(size / 3_600_000, 2),
            "driver_memory_mb": round(history.nbytes() / 1e6),
            "segments": len(history.segments),
            "features_seconds_p50": round(statistics.median(timings), 3),
            "add_seconds_mean": round(statistics.mean(adds), 4),
            "add_seconds_max": round(max(adds), 3),
        }
        print(row, flush=True)
        results.append(row)
    # The longest pause a merge makes: two half-full segments into one full one (once per
    # MAX_SEGMENT_ROWS rows; the smaller merges before it take proportionally less).
    full = history.segments[0].rows if len(history.segments[0]) >= MAX_SEGMENT_ROWS else None
    merge = None
    if full is not None:
        started = time.perf_counter()
        _Segment.of({c: a[:MAX_SEGMENT_ROWS] for c, a in full.items()})
        merge = round(time.perf_counter() - started, 2)
    write_results(
        args.out,
        {
            "batch_rows": args.batch,
            "max_segment_rows": MAX_SEGMENT_ROWS,
            "largest_merge_seconds": merge,
            "sizes": results,
        },
    )


if __name__ == "__main__":
    main()
