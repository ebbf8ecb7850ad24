"""What behavioural features buy: average precision on data in the Fraud Detection Handbook's design.

    python benchmarks/bench_behaviour_quality.py [--seed 0] [--out behaviour_quality_handbook]

Generates the Handbook's 183 days (benchmarks/handbook_data.py: 5,000 cards, 10,000
merchants, large amounts, compromised merchants for 28 days, compromised cards for 14 days),
with every fraud labelled a week after it happened. Computes
:func:`fraudlake.ml.behaviour.behaviour_features` over the whole history (earlier rows are
history; a merchant's fraud share uses only the labels that had arrived), then follows the
Handbook's protocol: train one week, a one-week gap for the labels, test the week after
without the cards already known compromised. Scikit-learn's histogram gradient boosting
(fraudlake's ``gradient_boosting``), with and without the behavioural features.

Reports AP, precision at k (the 100 most suspicious transactions of each test day), the
recall of each scenario at the flag threshold (the validation-free threshold that flags the
test week's fraud share), permutation feature importance (AP drop), and the time the features
take: on the whole history, and per 1,000-row micro-batch of a stream that keeps a
:class:`~fraudlake.ml.behaviour.BehaviourHistory` (written to ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import fresh_context, write_results  # noqa: E402
from benchmarks.handbook_data import DELAY_DAYS, TRAIN_START, fraud_labels, generate, protocol_split  # noqa: E402
from fraudlake.ml.features import TRANSACTION_NUMERIC_FEATURES  # noqa: E402

MODEL = dict(
    learning_rate=0.05,
    max_iter=150,
    early_stopping=False,
    max_leaf_nodes=15,
    min_samples_leaf=80,
    max_features=0.5,
    l2_regularization=1.0,
    random_state=0,
)


def per_transaction(transactions: pd.DataFrame) -> pd.DataFrame:
    """fraudlake's per-transaction numeric model inputs (its categories are empty in this design),
    computed by the product's own code: :func:`fraudlake.ml.features.add_features` in a local Spark."""
    from fraudlake.ml.features import add_features
    from fraudlake.spark import get_spark

    spark = get_spark(fresh_context(), master="local[2]")
    rows = spark.createDataFrame(transactions[["transaction_id", "event_time", "amount", "currency"]])
    featured = add_features(rows).select("transaction_id", *TRANSACTION_NUMERIC_FEATURES).toPandas()
    spark.stop()
    return (
        transactions[["transaction_id"]]
        .merge(featured, on="transaction_id", how="left")[list(TRANSACTION_NUMERIC_FEATURES)]
        .set_axis(transactions.index)
    )


def stream_cost(transactions: pd.DataFrame, labels: pd.DataFrame, batch_rows: int = 1_000, batches: int = 50) -> dict:
    """Milliseconds per micro-batch for a stream that has seen the preceding 30 days."""
    from fraudlake.ml.behaviour import BehaviourHistory

    end = pd.Timestamp(TRAIN_START)
    history = transactions[
        (transactions["event_time"] < end) & (transactions["event_time"] >= end - pd.Timedelta(days=37))
    ]
    state = BehaviourHistory()
    state.add(history, labels[labels["label_time"] < end])
    upcoming = transactions[transactions["event_time"] >= end].head(batch_rows * batches)
    took = []
    for start in range(0, len(upcoming), batch_rows):
        batch = upcoming.iloc[start : start + batch_rows]
        began = time.perf_counter()
        state.features(batch)
        state.add(batch)
        took.append((time.perf_counter() - began) * 1000)
    return {
        "history_rows": len(history),
        "batch_rows": batch_rows,
        "batches": len(took),
        "ms_per_batch_p50": round(float(np.percentile(took, 50)), 1),
        "ms_per_batch_p95": round(float(np.percentile(took, 95)), 1),
    }


def compare_models(
    features: pd.DataFrame, transactions: pd.DataFrame, train: pd.Series, test: pd.Series, per_transaction_columns: list
) -> dict:
    """Gradient boosting trained on ``train`` rows with the per-transaction columns alone and with
    the behavioural features too; AP, precision@100 per day, recall per scenario on ``test``."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import average_precision_score

    from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES

    y = transactions["label_is_fraud"]
    test_days = transactions.loc[test, "event_time"].dt.floor("D")
    results: dict = {}
    for name, columns in (
        ("per_transaction", per_transaction_columns),
        ("with_behaviour", per_transaction_columns + list(BEHAVIOUR_FEATURES)),
    ):
        model = HistGradientBoostingClassifier(**MODEL).fit(features.loc[train, columns], y[train])
        scores = model.predict_proba(features.loc[test, columns])[:, 1]
        frame = pd.DataFrame(
            {"score": scores, "y": y[test].to_numpy(), "day": test_days.to_numpy()},
        )
        frame["scenario"] = transactions.loc[test, "label_scenario"].to_numpy()
        threshold = float(np.quantile(scores, 1 - frame["y"].mean()))
        flagged = frame["score"] >= threshold
        top = frame.sort_values("score", ascending=False).groupby("day").head(100)
        fraud = frame[frame["y"] == 1]
        results[name] = {
            "average_precision": round(float(average_precision_score(frame["y"], scores)), 4),
            "precision_at_100_per_day": round(float(top["y"].mean()), 4),
            "flag_threshold": "flags the test week's fraud share",
            "precision_at_threshold": round(float(frame.loc[flagged, "y"].mean()), 4),
            "recall_at_threshold": round(float(flagged[frame["y"] == 1].mean()), 4),
            "recall_by_scenario": {
                str(s): round(float((g["score"] >= threshold).mean()), 4) for s, g in fraud.groupby("scenario")
            },
            "frauds_by_scenario": {str(s): len(g) for s, g in fraud.groupby("scenario")},
        }
        if name == "with_behaviour":
            # The model subsamples features (max_features): AP with other random states of the model.
            results[name]["average_precision_other_model_seeds"] = {
                seed: round(
                    float(
                        average_precision_score(
                            frame["y"],
                            HistGradientBoostingClassifier(**{**MODEL, "random_state": seed})
                            .fit(features.loc[train, columns], y[train])
                            .predict_proba(features.loc[test, columns])[:, 1],
                        )
                    ),
                    4,
                )
                for seed in (1, 2)
            }
            sample = features.loc[test, columns]
            importance = permutation_importance(
                model, sample, y[test], scoring="average_precision", n_repeats=3, random_state=0, n_jobs=1
            )
            ranked = sorted(zip(columns, importance.importances_mean, strict=True), key=lambda x: -x[1])
            results[name]["permutation_importance_ap_drop"] = {c: round(float(v), 4) for c, v in ranked[:12]}
        print(name, results[name]["average_precision"], flush=True)

    return results


def main() -> None:
    from fraudlake.ml.behaviour import behaviour_features

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="behaviour_quality_handbook")
    args = parser.parse_args()

    began = time.perf_counter()
    transactions = generate(seed=args.seed)
    generated = time.perf_counter() - began
    # Up to the end of the test week: nothing later is history for it.
    end = pd.Timestamp(TRAIN_START) + pd.Timedelta(days=21)
    transactions = transactions[transactions["event_time"] < end].reset_index(drop=True)
    labels = fraud_labels(transactions, DELAY_DAYS)
    print(f"{len(transactions):,} transactions, {len(labels):,} frauds, generated in {generated:.0f} s", flush=True)

    began = time.perf_counter()
    behaviour = behaviour_features(transactions, labels)
    featured = time.perf_counter() - began
    print(f"behavioural features in {featured:.1f} s ({len(transactions) / featured:,.0f} rows/s)", flush=True)
    features = pd.concat([per_transaction(transactions), behaviour], axis=1)
    train, test = protocol_split(transactions)
    y = transactions["label_is_fraud"]

    results = compare_models(features, transactions, train, test, list(TRANSACTION_NUMERIC_FEATURES))

    payload = {
        "design": "Fraud Detection Handbook simulator (5,000 cards, 10,000 merchants, 183 days), seed "
        + str(args.seed),
        "protocol": "train 2018-07-25 + 7 days, 7-day label delay, test the next 7 days without known compromised cards",
        "rows": len(transactions),
        "train_rows": int(train.sum()),
        "train_frauds": int(y[train].sum()),
        "test_rows": int(test.sum()),
        "test_frauds": int(y[test].sum()),
        "model": {"estimator": "HistGradientBoostingClassifier", **MODEL},
        "features_seconds_whole_history": round(featured, 1),
        "features_rows_per_second": round(len(transactions) / featured),
        "stream": stream_cost(transactions, labels),
        "results": results,
    }
    print(write_results(args.out, payload))


if __name__ == "__main__":
    main()
