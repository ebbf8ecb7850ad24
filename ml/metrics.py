"""Fraud metrics from labels, scores and a flag threshold. Pure numpy/scikit-learn, no Spark.

Fraud teams read precision-recall: average precision ranks the whole score, and
precision@k is the share of fraud among the k alerts an analyst can review.
Accuracy is reported for completeness; at 1.5% fraud, flagging nothing scores 98.5%.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def top_k_order(scores: np.ndarray) -> np.ndarray:
    """Row indexes from the highest score down; ties keep row order, so results are reproducible."""
    return np.argsort(-np.asarray(scores, dtype="float64"), kind="mergesort")


def precision_at_k(labels: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    """Fraud share among the ``k`` highest scores (among all rows when there are fewer than ``k``)."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return None
    top = top_k_order(scores)[: min(k, len(labels))]
    return float(labels[top].mean())


def confusion(labels: np.ndarray, flagged: np.ndarray) -> dict[str, int]:
    labels, flagged = np.asarray(labels).astype(bool), np.asarray(flagged).astype(bool)
    return {
        "tn": int((~labels & ~flagged).sum()),
        "fp": int((~labels & flagged).sum()),
        "fn": int((labels & ~flagged).sum()),
        "tp": int((labels & flagged).sum()),
    }


def recall_by_scenario(scenarios: Sequence, labels: np.ndarray, flagged: np.ndarray) -> dict[str, float]:
    """Share of each fraud scenario's rows that are flagged (rows with a scenario and label 1)."""
    names = np.asarray(scenarios, dtype=object)
    fraud = np.asarray(labels).astype(bool)
    flagged = np.asarray(flagged).astype(bool)
    result = {}
    for name in sorted({s for s in names[fraud] if isinstance(s, str)}):
        rows = fraud & (names == name)
        result[name] = float(flagged[rows].mean())
    return result


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def fraud_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    ks: Iterable[int],
    scenarios: Sequence | None = None,
) -> dict:
    """Every metric of an evaluation; a row is flagged when ``score >= threshold``.

    Ranking metrics (ROC AUC, average precision) are None when the rows have only one class.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype="float64")
    flagged = scores >= threshold
    cm = confusion(labels, flagged)
    precision = _ratio(cm["tp"], cm["tp"] + cm["fp"])
    recall = _ratio(cm["tp"], cm["tp"] + cm["fn"])
    both_classes = 0 < labels.sum() < len(labels)
    metrics: dict[str, Any] = {
        "rows": int(len(labels)),
        "fraud_rows": int(labels.sum()),
        "flagged_rows": int(flagged.sum()),
        "flag_threshold": float(threshold),
        "accuracy": _ratio(cm["tp"] + cm["tn"], len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0,
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "average_precision": float(average_precision_score(labels, scores)) if both_classes else None,
    }
    for k in sorted(set(ks)):
        metrics[f"precision_at_{k}"] = precision_at_k(labels, scores, k)
    metrics["confusion_matrix"] = cm
    if scenarios is not None:
        metrics["recall_by_scenario"] = recall_by_scenario(scenarios, labels, flagged)
    return metrics


def permutation_importance_ap(
    predict, frame, labels: np.ndarray, columns: Sequence[str], repeats: int = 3, seed: int = 0
) -> dict[str, float] | None:
    """How much average precision each input column carries: the mean AP lost when that column's
    values are shuffled across rows (scikit-learn's permutation importance), largest first; None
    when the rows have only one class. ``predict`` maps a frame to scores (higher = more suspicious)."""
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import average_precision_score

    labels = np.asarray(labels).astype(int)
    if not 0 < labels.sum() < len(labels):
        return None

    class Fitted:  # an already fitted model, as scikit-learn expects an estimator to look
        def fit(self, *_args):
            return self

        def predict(self, inputs):
            return np.asarray(predict(inputs), dtype="float64")

    def average_precision(estimator, inputs, truth) -> float:
        return float(average_precision_score(truth, estimator.predict(inputs)))

    result = permutation_importance(
        Fitted(), frame[list(columns)], labels, scoring=average_precision, n_repeats=repeats, random_state=seed
    )
    ranked = sorted(zip(columns, result.importances_mean, strict=True), key=lambda pair: -pair[1])
    return {column: round(float(drop), 4) for column, drop in ranked}


def flat_metrics(metrics: dict) -> dict[str, float]:
    """Numeric metrics as MLflow metric names: nested dicts flattened (``recall_compromised_card``)."""
    flat = {}
    for key, value in metrics.items():
        if key == "confusion_matrix":
            flat.update({f"cm_{cell}": float(count) for cell, count in value.items()})
        elif key == "recall_by_scenario":
            flat.update({f"recall_{scenario}": float(recall) for scenario, recall in value.items()})
        elif key == "permutation_importance":
            flat.update({f"importance_{column}": float(drop) for column, drop in (value or {}).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value is not None:
            flat[key] = float(value)
    return flat
