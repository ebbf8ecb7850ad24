"""The scikit-learn model: pipeline, score (higher = more suspicious), flag threshold, skops file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fraudlake.errors import FraudlakeError
from fraudlake.ml.features import CATEGORICAL_FEATURES, MODEL_INPUT_COLUMNS, NULLABLE_FEATURES, NUMERIC_FEATURES

MODEL_KINDS = ("isolation_forest", "gradient_boosting")

# How the pyfunc turns the pipeline's output into a fraud score (see scoring_model.py).
SCORE_KIND = {
    "isolation_forest": "anomaly_score",  # -score_samples: the paper's anomaly score in (0, 1]
    "gradient_boosting": "fraud_probability",  # predict_proba[:, 1]
}

# Types in the skops file beyond skops' defaults, reviewed as safe to load: a numpy
# dtype descriptor (SimpleImputer's fitted dtype) and the fitted tree structures of the
# two estimators (numeric arrays, no code). A new type after a library upgrade fails
# training (see save_pipeline) until it is reviewed and added.
SKOPS_TRUSTED_TYPES = (
    "numpy.dtype",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
)


def build_pipeline(
    kind: str, *, contamination: float, seed: int, trees: int = 200, iterations: int = 200, learning_rate: float = 0.1
):
    """ColumnTransformer (impute + StandardScaler for numbers, one-hot for categories) → estimator."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, IsolationForest
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = Pipeline(
        [
            # An amount in an unknown currency has no USD value: the median stands in.
            ("impute", SimpleImputer(strategy="median")),
            ("scale", StandardScaler()),
        ]
    )
    # Unknown categories (a new country) encode as all zeros instead of failing the stream;
    # a missing value (None) is a category of its own.
    categories = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    features = ColumnTransformer(
        [("numbers", numbers, list(NUMERIC_FEATURES)), ("categories", categories, list(CATEGORICAL_FEATURES))],
        remainder="drop",
    )
    if kind == "isolation_forest":
        estimator = IsolationForest(n_estimators=trees, contamination=contamination, random_state=seed, n_jobs=1)
    elif kind == "gradient_boosting":
        estimator = HistGradientBoostingClassifier(
            max_iter=iterations, learning_rate=learning_rate, early_stopping=True, random_state=seed
        )
    else:
        raise ValueError(f"model must be one of {MODEL_KINDS}, not {kind!r}")
    return Pipeline([("features", features), ("model", estimator)])


def fit_pipeline(pipeline, frame: pd.DataFrame, labels: pd.Series):
    """Fit on the model input columns; the IsolationForest ignores the labels."""
    return pipeline.fit(frame[list(MODEL_INPUT_COLUMNS)], np.asarray(labels))


def fraud_scores(pipeline, frame: pd.DataFrame, score_kind: str) -> np.ndarray:
    """Scores where higher means more suspicious. The pyfunc computes exactly this."""
    inputs = frame[list(MODEL_INPUT_COLUMNS)]
    if score_kind == "anomaly_score":
        return -pipeline.score_samples(inputs)
    if score_kind == "fraud_probability":
        return pipeline.predict_proba(inputs)[:, 1]
    raise ValueError(f"unknown score kind {score_kind!r}")


def threshold_for_flag_share(scores: np.ndarray, share: float) -> float:
    """The score above which ``share`` of the rows lie (the IsolationForest's contamination)."""
    return float(np.quantile(scores, 1.0 - share))


def threshold_for_best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold (flag when ``score >= threshold``) with the best F1 on these rows."""
    from sklearn.metrics import precision_recall_curve

    labels = np.asarray(labels)
    if labels.min() == labels.max():
        raise FraudlakeError("the validation rows have only one class: cannot choose a flag threshold")
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(
        2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=precision + recall > 0
    )
    return float(thresholds[int(np.argmax(f1[:-1]))])  # the last (precision 1, recall 0) point has no threshold


def choose_threshold(kind: str, scores: np.ndarray, labels: np.ndarray, contamination: float) -> float:
    """Unsupervised IsolationForest: flag the expected anomaly share (no labels used), as the
    prototype did. Supervised challenger: the best-F1 threshold on the labelled validation rows."""
    if kind == "isolation_forest":
        return threshold_for_flag_share(scores, contamination)
    return threshold_for_best_f1(scores, labels)


def save_pipeline(pipeline, path: Path) -> list[str]:
    """Write the fitted pipeline as a skops file; return the non-default types it needs trusted.

    Refuses to write a file that needs a type outside :data:`SKOPS_TRUSTED_TYPES`.
    """
    import skops.io as sio

    sio.dump(pipeline, path)
    needed = sio.get_untrusted_types(file=path)
    unreviewed = sorted(set(needed) - set(SKOPS_TRUSTED_TYPES))
    if unreviewed:
        path.unlink()
        raise FraudlakeError(
            f"the model needs skops types that are not reviewed as safe: {', '.join(unreviewed)} "
            "(add them to fraudlake.ml.model.SKOPS_TRUSTED_TYPES after review)"
        )
    return sorted(needed)


def load_pipeline(path: Path):
    """Load a skops file trusting only the reviewed types."""
    import skops.io as sio

    return sio.load(path, trusted=list(SKOPS_TRUSTED_TYPES))


def model_signature():
    """Input: the feature columns by name (nullable ones optional); output: ``fraud_score``.

    Written by hand rather than inferred, so the contract does not depend on which
    values a training sample happened to contain (a null country, an int32 hour).
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def type_of(column: str) -> str:
        if column in CATEGORICAL_FEATURES:
            return "string"
        if column.startswith("is_"):
            return "boolean"
        if column.startswith("tx_"):
            return "long"  # accepts Spark INT (int32) and pandas int64 alike
        return "double"

    inputs = Schema([ColSpec(type_of(c), c, required=c not in NULLABLE_FEATURES) for c in MODEL_INPUT_COLUMNS])
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "fraud_score")]))
