"""Behavioural features on fraudlake's own simulator, with a time split and a label delay.

    python benchmarks/bench_behaviour_simulator.py [--rows 75000] [--out behaviour_quality_simulator]

``fraudlake generate``'s history (the batch clock: ``simulator.rows_per_day`` rows a day from
``simulator.start_time``), the per-transaction features as the product computes them (Spark,
:func:`fraudlake.ml.features.add_features`), the behavioural features over the whole history
with every fraud labelled a week after it happened; train on days 20-33, leave a week for the
labels, test on days 41-47. The same gradient boosting as the Handbook benchmark
(bench_behaviour_quality.py), with and without the behavioural features; AP and every
scenario's recall at the flag threshold, written to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_behaviour_quality import MODEL, compare_models  # noqa: E402
from benchmarks.common import fresh_context, write_results  # noqa: E402

TRAIN_DAYS = (20, 34)
DELAY_DAYS = 7
TEST_DAYS = (41, 48)


def main() -> None:
    from fraudlake.ml.behaviour import behaviour_features
    from fraudlake.ml.features import CATEGORICAL_FEATURES, TRANSACTION_NUMERIC_FEATURES, add_features
    from fraudlake.simulator import generate_batch
    from fraudlake.spark import get_spark

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=75_000)
    parser.add_argument("--out", default="behaviour_quality_simulator")
    args = parser.parse_args()

    ctx = fresh_context()
    settings = ctx.settings
    spark = get_spark(ctx, master="local[2]")
    began = time.perf_counter()
    frame = add_features(generate_batch(spark, settings.simulator, args.rows)).toPandas()
    spark.stop()
    print(f"{len(frame):,} rows generated and featurised in {time.perf_counter() - began:.0f} s", flush=True)
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)  # the session's UTC
    frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    for column in CATEGORICAL_FEATURES:
        frame[column] = frame[column].astype("category")

    fraud = frame[frame["label_is_fraud"] == 1]
    labels = pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"],
            "label_is_fraud": 1,
            "label_time": fraud["event_time"] + pd.Timedelta(days=DELAY_DAYS),
        }
    )
    began = time.perf_counter()
    behaviour = behaviour_features(frame, labels)
    print(f"behavioural features in {time.perf_counter() - began:.1f} s", flush=True)
    features = pd.concat([frame[list(TRANSACTION_NUMERIC_FEATURES) + list(CATEGORICAL_FEATURES)], behaviour], axis=1)

    day = (frame["event_time"] - pd.Timestamp(settings.simulator.start_time)).dt.days
    train = (day >= TRAIN_DAYS[0]) & (day < TRAIN_DAYS[1])
    test = (day >= TEST_DAYS[0]) & (day < TEST_DAYS[1])
    results = compare_models(
        features, frame, train, test, list(TRANSACTION_NUMERIC_FEATURES) + list(CATEGORICAL_FEATURES)
    )
    # How much history a card has in this data: what card features can see on the batch clock.
    card_history = behaviour.loc[test & (frame["label_is_fraud"] == 0), "card_count_30d"]
    payload = {
        "data": f"fraudlake generate: {args.rows:,} rows at {settings.simulator.rows_per_day:,} a day, "
        f"{settings.simulator.n_users:,} users, {settings.simulator.n_merchants:,} merchants, seed {settings.simulator.seed}",
        "protocol": f"train days {TRAIN_DAYS[0]}-{TRAIN_DAYS[1] - 1}, a {DELAY_DAYS}-day label delay, "
        f"test days {TEST_DAYS[0]}-{TEST_DAYS[1] - 1}",
        "train_rows": int(train.sum()),
        "train_frauds": int(frame.loc[train, "label_is_fraud"].sum()),
        "test_rows": int(test.sum()),
        "test_frauds": int(frame.loc[test, "label_is_fraud"].sum()),
        "genuine_test_rows_with_card_history_30d": round(float((card_history > 0).mean()), 4),
        "model": {"estimator": "HistGradientBoostingClassifier", **MODEL},
        "results": results,
    }
    print(write_results(args.out, payload))


if __name__ == "__main__":
    main()
