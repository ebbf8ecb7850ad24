"""The shared Spark feature code and the checks on input files (real Spark, the session fixture)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from fraudlake.errors import FraudlakeError
from fraudlake.ml import data
from fraudlake.ml.features import TRANSACTION_INPUT_COLUMNS, add_amount_features, add_features, add_time_features
from fraudlake.timeutil import from_row

pytestmark = pytest.mark.spark

UTC = timezone.utc


def _times(spark, *stamps: datetime):
    return spark.createDataFrame([(s,) for s in stamps], "event_time TIMESTAMP")


def test_time_features_in_utc(spark):
    from pyspark.testing import assertDataFrameEqual

    frame = _times(
        spark,
        datetime(2026, 1, 3, 5, 59, 59, tzinfo=UTC),  # Saturday, last second of the night
        datetime(2026, 1, 4, 6, 0, 0, tzinfo=UTC),  # Sunday, first second of the day
        datetime(2026, 1, 5, 0, 0, 0, tzinfo=UTC),  # Monday midnight
        datetime(2026, 1, 7, 23, 30, 0, tzinfo=UTC),  # Wednesday evening
    )
    expected = spark.createDataFrame(
        [(5, 7, True, True), (6, 1, True, False), (0, 2, False, True), (23, 4, False, False)],
        "tx_hour INT, tx_day_of_week INT, is_weekend BOOLEAN, is_night BOOLEAN",
    )
    actual = add_time_features(frame).select("tx_hour", "tx_day_of_week", "is_weekend", "is_night")
    assertDataFrameEqual(actual, expected, checkRowOrder=False)
    # The contract's types (fraudlake.tables.FEATURE_COLUMNS).
    assert [(f.name, f.dataType.simpleString()) for f in actual.schema.fields] == [
        ("tx_hour", "int"),
        ("tx_day_of_week", "int"),
        ("is_weekend", "boolean"),
        ("is_night", "boolean"),
    ]


def test_time_features_agree_with_spark_sql_and_ignore_the_session_time_zone(spark):
    from pyspark.sql import functions as F

    frame = spark.range(0, 500).select(
        F.timestamp_seconds(F.lit(1_767_225_600) + F.col("id") * 7_919).alias("event_time")  # ~every 2.2 h
    )
    in_utc = add_time_features(frame).collect()
    # The features are the UTC hour of the instant (collect() gives the host's local time: from_row).
    assert all(r.tx_hour == from_row(r.event_time).hour for r in in_utc)
    # Under a UTC session they are Spark SQL's own hour() and dayofweek().
    mismatches = (
        add_time_features(frame)
        .where((F.col("tx_hour") != F.hour("event_time")) | (F.col("tx_day_of_week") != F.dayofweek("event_time")))
        .count()
    )
    assert mismatches == 0
    previous = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "Asia/Kolkata")  # a +05:30 cluster computes the same features
    try:
        elsewhere = add_time_features(frame).collect()
    finally:
        spark.conf.set("spark.sql.session.timeZone", previous)
    assert [r[1:] for r in elsewhere] == [r[1:] for r in in_utc]


def test_amount_features_normalise_currency_and_survive_unknown_ones(spark):
    frame = spark.createDataFrame(
        [(100.0, "USD"), (15000.0, "JPY"), (100.0, "jpy"), (50.0, "XXX"), (20.0, None), (-5.0, "USD")],
        "amount DOUBLE, currency STRING",
    )
    rows = add_amount_features(frame).collect()
    assert rows[0].log_amount_usd == pytest.approx(math.log1p(100.0))
    assert rows[1].log_amount_usd == pytest.approx(math.log1p(100.0))  # 15,000 JPY ≈ 100 USD
    assert rows[1].log_amount == pytest.approx(math.log1p(15000.0))
    assert rows[2].log_amount_usd == pytest.approx(math.log1p(100.0 / 150.0))  # case-insensitive code
    assert rows[3].log_amount_usd is None and rows[4].log_amount_usd is None  # unknown: null, imputed by the model
    assert rows[3].log_amount == pytest.approx(math.log1p(50.0))
    assert rows[5].log_amount == 0.0  # a refund counts as no spend


def test_add_features_produces_every_model_input(spark):
    from fraudlake.conf.settings import SimulatorSettings
    from fraudlake.simulator import generate_batch

    featured = add_features(generate_batch(spark, SimulatorSettings(), 200).localCheckpoint())
    assert set(TRANSACTION_INPUT_COLUMNS) <= set(featured.columns)
    assert featured.select(*TRANSACTION_INPUT_COLUMNS).dropna().count() == 200  # simulator rows are complete


# ----------------------------------------------------------------------------- input files


def _write_csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_optional_columns_absent_or_null_become_null(spark):
    raw = spark.createDataFrame(
        [("t1", "2026-01-01T03:00:00Z", "12.5", 1, None), ("t2", "2026-01-02T13:00:00Z", "7", 0, "online")],
        "transaction_id STRING, event_time STRING, amount STRING, label_is_fraud INT, channel STRING",
    )
    bronze = data.conform_to_bronze(raw, "test input")
    assert list(bronze.columns) == list(data.BRONZE_TYPES)
    rows = {r.transaction_id: r for r in bronze.collect()}
    assert rows["t1"].amount == 12.5 and rows["t1"].merchant_category is None and rows["t1"].channel is None
    assert rows["t2"].channel == "online"
    assert from_row(rows["t1"].event_time) == datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    features = data.to_pandas(data.labelled_features(bronze))
    assert features["tx_hour"].tolist() == [3, 13] and features["country"].isna().all()


def test_missing_label_column_is_one_clear_error(spark, tmp_path):
    path = _write_csv(tmp_path / "nolabel.csv", "event_time,amount\n2026-01-01T00:00:00Z,5\n")
    with pytest.raises(FraudlakeError, match=r"has no label_is_fraud column \(found: event_time, amount\)"):
        data.conform_to_bronze(data.read_transactions(spark, path), path)


def test_empty_inputs_are_clear_errors(spark, tmp_path):
    header_only = _write_csv(tmp_path / "header.csv", "event_time,amount,label_is_fraud\n")
    with pytest.raises(FraudlakeError, match="is empty"):
        data.conform_to_bronze(data.read_transactions(spark, header_only), header_only)
    zero_bytes = _write_csv(tmp_path / "zero.csv", "")
    with pytest.raises(FraudlakeError, match="is empty"):
        data.conform_to_bronze(data.read_transactions(spark, zero_bytes), zero_bytes)
    with pytest.raises(FraudlakeError, match="does not exist"):
        data.read_transactions(spark, str(tmp_path / "nowhere.parquet"))


def test_wrong_types_name_the_column_and_an_example(spark, tmp_path):
    path = _write_csv(
        tmp_path / "bad.csv",
        "event_time,amount,label_is_fraud\n2026-01-01T00:00:00Z,5,0\n2026-01-01T01:00:00Z,abc,1\n",
    )
    with pytest.raises(FraudlakeError, match=r"column amount has 1 value\(s\) that are not double \(e.g. 'abc'\)"):
        data.conform_to_bronze(data.read_transactions(spark, path), path)
    labels = _write_csv(tmp_path / "labels.csv", "event_time,amount,label_is_fraud\n2026-01-01T00:00:00Z,5,2\n")
    with pytest.raises(FraudlakeError, match="must be 0 or 1"):
        data.conform_to_bronze(data.read_transactions(spark, labels), labels)
    nested = spark.createDataFrame(
        [([1.0], "2026-01-01", 0)], "amount ARRAY<DOUBLE>, event_time STRING, label_is_fraud INT"
    )
    with pytest.raises(FraudlakeError, match="wrong type"):
        data.conform_to_bronze(nested, "nested")
