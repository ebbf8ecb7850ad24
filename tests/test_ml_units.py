"""Pure parts of the model lifecycle: metrics, thresholds, splits, the pyfunc, settings. No JVM."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from fraudlake.errors import ConfigError, FraudlakeError
from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES
from fraudlake.ml.data import input_format, split_frame
from fraudlake.ml.features import MODEL_INPUT_COLUMNS
from fraudlake.ml.metrics import flat_metrics, fraud_metrics, precision_at_k, recall_by_scenario
from fraudlake.ml.model import (
    build_pipeline,
    fit_pipeline,
    fraud_scores,
    model_signature,
    save_pipeline,
    threshold_for_best_f1,
    threshold_for_flag_share,
)
from fraudlake.settings import parse_settings

# ----------------------------------------------------------------------------- metrics


def test_precision_at_k_counts_fraud_among_the_highest_scores():
    labels = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.8, 0.7, 0.2, 0.3])
    assert precision_at_k(labels, scores, 1) == 1.0
    assert precision_at_k(labels, scores, 2) == 0.5  # 0.9 (fraud), 0.8 (genuine)
    assert precision_at_k(labels, scores, 3) == pytest.approx(2 / 3)
    assert precision_at_k(labels, scores, 100) == 0.5  # fewer rows than k: all rows


def test_fraud_metrics_at_a_threshold():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.85, 0.2, 0.2, 0.1, 0.0])
    scenarios = np.array(
        ["compromised_card", "amount_anomaly", "amount_anomaly", None, None, None, None, None], dtype=object
    )
    m = fraud_metrics(labels, scores, 0.5, [2, 1], scenarios)
    assert m["confusion_matrix"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 2}
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["flagged_rows"] == 3
    assert m["precision_at_1"] == 1.0 and m["precision_at_2"] == 0.5
    assert m["recall_by_scenario"] == {"amount_anomaly": 0.5, "compromised_card": 1.0}
    assert 0.5 < m["roc_auc"] <= 1.0 and 0.0 < m["average_precision"] <= 1.0
    assert list(m).index("precision_at_1") < list(m).index("precision_at_2")


def test_ranking_metrics_are_none_with_one_class_and_flat_metrics_skip_them():
    m = fraud_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), 0.35, [2])
    assert m["roc_auc"] is None and m["average_precision"] is None
    assert m["precision"] == 0.0 and m["accuracy"] == 0.75
    flat = flat_metrics({**m, "recall_by_scenario": {"compromised_card": 0.5}})
    assert "roc_auc" not in flat
    assert flat["cm_fp"] == 1.0 and flat["recall_compromised_card"] == 0.5


def test_recall_by_scenario_ignores_genuine_rows_and_missing_scenarios():
    scenarios = np.array(["a", "a", None, "b"], dtype=object)
    assert recall_by_scenario(scenarios, np.array([1, 1, 1, 0]), np.array([True, False, True, True])) == {"a": 0.5}


# ----------------------------------------------------------------------------- thresholds


def test_flag_share_threshold_flags_that_share():
    scores = np.arange(1000) / 1000
    threshold = threshold_for_flag_share(scores, 0.15)
    assert (scores >= threshold).mean() == pytest.approx(0.15, abs=0.002)


def test_best_f1_threshold_separates_separable_scores():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    assert threshold_for_best_f1(scores, labels) == 0.7
    with pytest.raises(FraudlakeError, match="only one class"):
        threshold_for_best_f1(scores, np.zeros(6))


# ----------------------------------------------------------------------------- splits and formats


def _frame(n: int, fraud_every: int = 10) -> pd.DataFrame:
    start = datetime(2026, 1, 1)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{i:04d}" for i in range(n)],
            "event_time": [start + timedelta(minutes=(i * 37) % n) for i in range(n)],
            "label_is_fraud": [int(i % fraud_every == 0) for i in range(n)],
        }
    )


def test_time_split_keeps_the_newest_rows_for_the_holdout():
    split = split_frame(_frame(100), "time", 0.2, 0.2, seed=1)
    assert split.sizes() == {"train": 60, "validation": 20, "test": 20}
    assert split.train["event_time"].max() <= split.validation["event_time"].min()
    assert split.validation["event_time"].max() <= split.test["event_time"].min()


def test_random_split_is_stratified_reproducible_and_disjoint():
    frame = _frame(1000)
    a, b = split_frame(frame, "random", 0.2, 0.2, seed=7), split_frame(frame, "random", 0.2, 0.2, seed=7)
    assert a.test["transaction_id"].tolist() == b.test["transaction_id"].tolist()
    ids = [set(part["transaction_id"]) for part in (a.train, a.validation, a.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == 1000
    for part in (a.train, a.validation, a.test):
        assert part["label_is_fraud"].mean() == pytest.approx(0.1, abs=0.01)


def test_too_few_rows_to_split_is_a_clear_error():
    with pytest.raises(FraudlakeError, match="too few"):
        split_frame(_frame(2), "time", 0.2, 0.2, seed=1)


def test_input_format_from_the_path(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "part-0.csv").write_text("a\n")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "_SUCCESS").write_text("")
    (tmp_path / "p" / "part-0.snappy.parquet").write_text("")
    assert input_format(str(tmp_path / "c")) == "csv"
    assert input_format(str(tmp_path / "p")) == "parquet"
    assert input_format(str(tmp_path / "x.CSV")) == "csv"
    assert input_format(str(tmp_path / "x.jsonl")) == "json"


# ----------------------------------------------------------------------------- settings


def test_ml_settings_are_strict():
    assert parse_settings({"ml": {"precision_at_k": [10, 20]}}).ml.precision_at_k == (10, 20)
    with pytest.raises(ConfigError, match="ml.contamnation: unknown key"):
        parse_settings({"ml": {"contamnation": 0.1}})
    with pytest.raises(ConfigError, match="ml.contamination"):
        parse_settings({"ml": {"contamination": 0.9}})


# ----------------------------------------------------------------------------- model and pyfunc


def _feature_rows(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hours = rng.integers(0, 24, n).astype("int32")
    days = rng.integers(1, 8, n).astype("int32")
    frame = pd.DataFrame(
        {
            "log_amount": rng.normal(4, 1, n),
            "log_amount_usd": rng.normal(4, 1, n),
            "tx_hour": hours,
            "tx_day_of_week": days,
            "is_weekend": np.isin(days, [1, 7]),
            "is_night": hours < 6,
            "merchant_category": rng.choice(["grocery", "travel", None], n),
            "country": rng.choice(["US", "JP"], n),
            "currency": rng.choice(["USD", "JPY"], n),
            "channel": rng.choice(["pos", "online"], n),
            # What a card and a merchant did before (counts, amounts, shares): non-negative numbers.
            **{name: rng.exponential(2.0, n).round(2) for name in BEHAVIOUR_FEATURES},
        }
    )
    labels = pd.Series((frame["log_amount_usd"] > 5.5) & frame["is_night"] | (rng.random(n) < 0.01)).astype(int)
    return frame, labels


@pytest.mark.parametrize("kind", ["isolation_forest", "gradient_boosting"])
def test_skops_file_needs_only_reviewed_types_and_reloads_identically(tmp_path, kind):
    from fraudlake.ml.model import SCORE_KIND, load_pipeline

    frame, labels = _feature_rows(600)
    pipeline = fit_pipeline(build_pipeline(kind, contamination=0.15, seed=1, trees=20, iterations=20), frame, labels)
    save_pipeline(pipeline, tmp_path / "p.skops")
    assert not (tmp_path / "p.skops").read_bytes().startswith(b"\x80")  # a zip, not a pickle stream
    reloaded = load_pipeline(tmp_path / "p.skops")  # trusting only the reviewed types
    np.testing.assert_array_equal(
        fraud_scores(pipeline, frame, SCORE_KIND[kind]), fraud_scores(reloaded, frame, SCORE_KIND[kind])
    )


def test_unreviewed_skops_type_is_refused(tmp_path, monkeypatch):
    import fraudlake.ml.model as model

    frame, labels = _feature_rows(200)
    pipeline = fit_pipeline(build_pipeline("isolation_forest", contamination=0.1, seed=1, trees=5), frame, labels)
    monkeypatch.setattr(model, "SKOPS_TRUSTED_TYPES", ())  # pretend nothing was reviewed
    with pytest.raises(FraudlakeError, match="not reviewed as safe: .*sklearn.tree._tree.Tree"):
        model.save_pipeline(pipeline, tmp_path / "p.skops")
    assert not (tmp_path / "p.skops").exists()


def test_pyfunc_scores_like_the_pipeline_and_enforces_its_signature(tmp_path):
    """The logged-as-code pyfunc, saved and loaded for real (no registry needed)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from fraudlake.ml.model import SCORE_KIND
    from fraudlake.ml.registry import quiet_mlflow
    from fraudlake.ml.train import SCORING_MODEL_CODE

    quiet_mlflow()
    frame, labels = _feature_rows(500)
    pipeline = fit_pipeline(
        build_pipeline("gradient_boosting", contamination=0.15, seed=1, iterations=30), frame, labels
    )
    trusted = save_pipeline(pipeline, tmp_path / "p.skops")
    config = {
        "score_kind": SCORE_KIND["gradient_boosting"],
        "flag_threshold": 0.5,
        "input_columns": list(MODEL_INPUT_COLUMNS),
        "skops_trusted_types": trusted,
    }
    mlflow.pyfunc.save_model(
        tmp_path / "model",
        python_model=str(SCORING_MODEL_CODE),
        artifacts={"pipeline": str(tmp_path / "p.skops")},
        model_config=config,
        signature=model_signature(),
        metadata={"flag_threshold": 0.5},
        pip_requirements=["scikit-learn", "skops"],
    )
    model = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    scores = model.predict(frame)
    np.testing.assert_allclose(scores, fraud_scores(pipeline, frame, "fraud_probability"))
    assert model.metadata.metadata["flag_threshold"] == 0.5
    # Optional inputs may be absent: they are missing values, like nulls.
    absent = model.predict(frame.drop(columns=["merchant_category", "country", "channel"]))
    nulls = model.predict(frame.assign(merchant_category=None, country=None, channel=None))
    np.testing.assert_allclose(absent, nulls)
    # An amount in a currency without a rate has no USD amount (a null from Spark): still scored.
    assert np.isfinite(model.predict(frame.assign(log_amount_usd=np.nan))).all()
    with pytest.raises(MlflowException):
        model.predict(frame.assign(tx_hour="three"))
    for required in ("log_amount", "tx_hour", "is_night"):
        with pytest.raises(MlflowException, match=required):
            model.predict(frame.drop(columns=[required]))


def test_fraud_labels_are_known_at_their_label_time_or_after_the_configured_delay():
    from fraudlake.ml.data import known_labels

    t0 = pd.Timestamp("2026-03-01T10:00:00Z")
    frame = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c"],
            "event_time": [t0, t0 + pd.Timedelta(minutes=1), t0 + pd.Timedelta(minutes=2)],
            "label_is_fraud": [1, 0, 1],
            # An export's own arrival time for "a"; "c" has none: the delay stands in.
            "label_time": [t0 + pd.Timedelta(days=3), pd.NaT, pd.NaT],
        }
    )
    labels = known_labels(frame, label_delay_seconds=7 * 86_400)
    assert labels["transaction_id"].tolist() == ["a", "c"]  # only frauds are labels
    assert labels["label_time"].tolist() == [t0 + pd.Timedelta(days=3), t0 + pd.Timedelta(minutes=2, days=7)]
    without_column = known_labels(frame.drop(columns="label_time"), label_delay_seconds=60)
    assert without_column["label_time"].tolist() == [t0 + pd.Timedelta(seconds=60), t0 + pd.Timedelta(seconds=180)]


def test_a_time_range_keeps_since_and_drops_until_in_utc_whatever_the_rows_zone():
    from fraudlake.ml.data import in_time_range

    times = pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-07T23:59:59Z", "2026-01-08T00:00:00Z"], utc=True)
    frame = pd.DataFrame({"transaction_id": ["a", "b", "c"], "event_time": times.tz_convert("Asia/Kolkata")})
    kept = in_time_range(frame, datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 8, tzinfo=timezone.utc))
    assert kept["transaction_id"].tolist() == ["a", "b"]
