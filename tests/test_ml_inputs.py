"""``train --input`` and ``evaluate --input`` on files made outside fraudlake: pandas' Parquet
(nanosecond timestamps, naive or tz-aware), CSV with ISO-8601 times, extra columns, wrong types.

In-process through ``fraudlake.cli.main`` on the session fixture; small and fast models.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.testing import assertDataFrameEqual

from fraudlake.errors import FraudlakeError
from fraudlake.ml import data
from fraudlake.simulator import generate_batch
from fraudlake.timeutil import from_row
from tests.conftest import fraudlake, make_context

pytestmark = pytest.mark.spark

ROWS = 2000
QUICK = ("--model", "gradient_boosting", "--set", "ml.gradient_boosting_iterations=20", "--format", "json")


@pytest.fixture(scope="module")
def history(spark, tmp_path_factory):
    """Simulated transactions, 10% fraud, as Spark made them and as a pandas frame (timestamp[ns], UTC)."""
    ctx = make_context(tmp_path_factory.mktemp("history"), simulator={"fraud_rate": 0.1})
    generated = generate_batch(spark, ctx.settings.simulator, ROWS).localCheckpoint()
    frame = generated.toPandas()
    for column in ("event_time", "_ingest_time"):
        frame[column] = frame[column].astype("datetime64[ns]")  # pandas' default unit, Spark's UTC wall clock
    return generated, frame


def _instants(spark_frame):
    return spark_frame.select("transaction_id", "event_time")


def test_pandas_parquet_with_naive_nanoseconds_trains(spark, history, tmp_path, capsys):
    generated, frame = history
    path = tmp_path / "naive.parquet"
    frame.to_parquet(path)
    assert pq.read_schema(path).field("event_time").type == pa.timestamp("ns")  # what Spark refuses

    bronze = data.conform_to_bronze(data.read_transactions(spark, str(path)), str(path))
    assertDataFrameEqual(_instants(bronze), _instants(generated))  # naive values are UTC

    code, out, err = fraudlake(capsys, tmp_path / "home", "train", "--input", str(path), *QUICK)
    assert code == 0, err
    trained = json.loads(out)
    assert (trained["version"], trained["rows"], trained["split"]) == ("1", ROWS, "time")


def test_pandas_parquet_with_aware_times_and_extra_columns_evaluates(spark, history, tmp_path, capsys):
    """Times in another zone are the same instants; extra columns (text, times, nested times) are ignored."""
    generated, frame = history
    aware = frame.assign(
        event_time=frame["event_time"].dt.tz_localize("UTC").dt.tz_convert("Asia/Kolkata"),
        _ingest_time=frame["_ingest_time"].dt.tz_localize("UTC"),
        note="imported",
        reviewed_at=frame["event_time"].dt.tz_localize("America/New_York"),
        history=[[t] for t in frame["event_time"]],
    )
    path = tmp_path / "aware.parquet"
    aware.to_parquet(path)

    bronze = data.conform_to_bronze(data.read_transactions(spark, str(path)), str(path))
    assert bronze.columns == list(data.BRONZE_TYPES)
    assertDataFrameEqual(_instants(bronze), _instants(generated))

    home = tmp_path / "home"
    code, _, err = fraudlake(capsys, home, "train", "--samples", str(ROWS), "--fraud-rate", "0.1", *QUICK)
    assert code == 0, err
    code, out, err = fraudlake(capsys, home, "evaluate", "--input", str(path), "--format", "json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["dataset"], result["rows"]) == (str(path), ROWS)
    assert result["average_precision"] is not None


def test_nanoseconds_floor_to_microseconds_at_the_right_instant(spark, tmp_path):
    frame = pd.DataFrame(
        {
            "transaction_id": ["ns", "zone", "before_1970"],
            "event_time": pd.to_datetime(
                ["2026-01-02 10:00:00.123456789", "2026-01-02 10:00:00", "1969-12-31 23:59:59.999999999"],
                format="ISO8601",
            ),
            "event_time_zone": pd.to_datetime(["2026-01-02 10:00:00"] * 3).tz_localize("America/New_York"),
        }
    )
    path = tmp_path / "precise.parquet"
    frame.to_parquet(path)
    rows = {r.transaction_id: r for r in data.read_transactions(spark, str(path)).collect()}
    # collect() gives the host's local wall clock, naive: from_row makes it the UTC instant.
    assert from_row(rows["ns"].event_time) == datetime(2026, 1, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)
    assert from_row(rows["before_1970"].event_time) == datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)
    # 10:00 in New York is 15:00 UTC
    assert from_row(rows["zone"].event_time_zone) == datetime(2026, 1, 2, 15, 0, tzinfo=timezone.utc)


def test_csv_with_iso_8601_times_trains(spark, history, tmp_path, capsys):
    """``Z``, an offset, and no zone at all (UTC), mixed in one file; an extra column too."""
    generated, frame = history
    utc = frame["event_time"].dt.tz_localize("UTC")
    forms = [
        utc.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        utc.dt.tz_convert("Asia/Kolkata").map(lambda t: t.isoformat()),  # 2026-01-02T15:30:00+05:30
        utc.dt.strftime("%Y-%m-%d %H:%M:%S.%f"),  # no zone: UTC
    ]
    text = frame.drop(columns=["_raw", "_ingest_time"]).assign(
        event_time=[forms[i % 3].iloc[i] for i in range(len(frame))],
        comment="from the bank's export",
    )
    path = tmp_path / "history.csv"
    text.to_csv(path, index=False)
    assert text["event_time"].str.endswith("Z").any() and text["event_time"].str.endswith("+05:30").any()

    bronze = data.conform_to_bronze(data.read_transactions(spark, str(path)), str(path))
    assertDataFrameEqual(_instants(bronze), _instants(generated))

    code, out, err = fraudlake(capsys, tmp_path / "home", "train", "--input", str(path), *QUICK)
    assert code == 0, err
    assert json.loads(out)["rows"] == ROWS


def test_a_column_of_the_wrong_type_is_one_error_naming_it(spark, tmp_path, capsys):
    epoch = pd.DataFrame({"event_time": [1767348000, 1767348060], "amount": [5.0, 7.5], "label_is_fraud": [0, 1]})
    path = tmp_path / "epoch.parquet"
    epoch.to_parquet(path)
    code, out, err = fraudlake(capsys, tmp_path / "home", "train", "--input", str(path))
    assert code == 1 and out == ""
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"fraudlake: error: {path}: column event_time has the wrong type (bigint); "
        "expected a timestamp, a date or ISO-8601 text such as 2026-01-02T10:00:00Z"
    )

    flags = pd.DataFrame(
        {
            "event_time": pd.to_datetime(["2026-01-02 10:00:00"]),
            "Amount": [True],
            "label_is_fraud": [0],
        }
    )
    with pytest.raises(FraudlakeError, match=r"flags: column Amount has the wrong type \(boolean\); expected a number"):
        data.conform_to_bronze(spark.createDataFrame(flags), "flags")


def test_a_delta_table_is_read_at_its_latest_version(spark, history, tmp_path):
    """Asked of Delta, not guessed from the files: a rewritten table's older Parquet files stay
    in its folder, and reading them as Parquet would count the replaced rows again."""
    generated, _ = history
    path = str(tmp_path / "exported_bronze")
    generated.write.format("delta").save(path)
    latest = generated.orderBy("transaction_id").limit(25)
    latest.write.format("delta").mode("overwrite").save(path)

    bronze = data.conform_to_bronze(data.read_transactions(spark, path), path)
    assertDataFrameEqual(_instants(bronze), _instants(latest))
