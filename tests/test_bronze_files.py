"""The files source: every non-empty line becomes one bronze row, parsed or not."""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from fraudlake.bronze.ingest import RECORD_NAMES, start_bronze_ingest
from fraudlake.tables import BRONZE_TRANSACTIONS, ensure_tables, table_name
from fraudlake.timeutil import from_row, shown_utc

pytestmark = pytest.mark.spark

GOOD = {
    "transaction_id": "tx-good-1",
    "event_time": "2026-03-01T12:30:00Z",
    "user_id": "u000001",
    "card_id": "card_ab",
    "merchant_id": "m00001",
    "merchant_category": "grocery",
    "amount": 42.5,
    "currency": "EUR",
    "country": "DE",
    "channel": "pos",
    "label_is_fraud": 0,
    "label_scenario": None,
}
HUGE = "x" * 1_000_000


def _landing(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    json_lines = [
        json.dumps(GOOD),
        "",  # empty: not a record
        '{"transaction_id": "tx-broken", "amount": 1',  # broken JSON
        json.dumps({**GOOD, "transaction_id": "tx-wrong-type", "amount": "lots"}),
        json.dumps({"transaction_id": "tx-missing-fields"}),
        "   ",  # blank: not a record
        json.dumps({**GOOD, "transaction_id": "tx-huge", "merchant_id": HUGE}),
        "not json at all",
    ]
    (landing / "batch-1.json").write_text("\n".join(json_lines) + "\n")
    csv_lines = [
        ",".join(RECORD_NAMES),
        "tx-csv-1,2026-03-01T12:31:00Z,u000002,card_cd,m00002,fuel,60.0,USD,US,pos,0,",
        "tx-csv-2,not-a-time,u000003,card_ef,m00003,fuel,abc,USD,US,pos,1,amount_anomaly",
        "only,three,fields",
        "",
    ]
    (landing / "batch-2.csv").write_text("\n".join(csv_lines) + "\n")
    records = [line for line in json_lines if line.strip()] + [line for line in csv_lines[1:] if line.strip()]
    return landing, records


def test_every_non_empty_line_is_one_bronze_row(spark, ctx, tmp_path):
    landing, records = _landing(tmp_path)
    ensure_tables(spark, ctx)
    query = start_bronze_ingest(spark, ctx, "files", landing=str(landing), available_now=True)
    query.awaitTermination(120)
    assert query.exception() is None

    bronze = spark.table(table_name(ctx, BRONZE_TRANSACTIONS))
    assert bronze.count() == len(records) == 9
    assert sorted(r["_raw"] for r in bronze.select("_raw").collect()) == sorted(records)
    assert bronze.where("_source != 'files' OR _ingest_time IS NULL").count() == 0

    rows = {r["_raw"]: r for r in bronze.collect()}
    good = rows[json.dumps(GOOD)]
    assert (good["transaction_id"], good["amount"], good["country"]) == ("tx-good-1", 42.5, "DE")
    assert shown_utc(from_row(good["event_time"])).isoformat().startswith("2026-03-01T12:30")
    csv_good = next(r for raw, r in rows.items() if raw.startswith("tx-csv-1,"))
    assert (csv_good["amount"], csv_good["currency"], csv_good["label_is_fraud"]) == (60.0, "USD", 0)
    # Unparseable values are null in the typed columns; the text survives in _raw.
    assert rows["not json at all"]["transaction_id"] is None
    wrong = next(r for raw, r in rows.items() if "tx-wrong-type" in raw)
    assert wrong["amount"] is None
    csv_bad = next(r for raw, r in rows.items() if raw.startswith("tx-csv-2,"))
    assert csv_bad["amount"] is None and csv_bad["event_time"] is None
    huge = next(r for raw, r in rows.items() if "tx-huge" in raw)
    assert len(huge["_raw"]) > len(HUGE)


def test_a_restart_ingests_only_new_files(spark, ctx, tmp_path):
    landing, records = _landing(tmp_path)
    ensure_tables(spark, ctx)
    for _ in range(2):  # the second run finds nothing new
        start_bronze_ingest(spark, ctx, "files", landing=str(landing), available_now=True).awaitTermination(120)
    (landing / "batch-3.json").write_text(json.dumps({**GOOD, "transaction_id": "tx-late"}) + "\n")
    start_bronze_ingest(spark, ctx, "files", landing=str(landing), available_now=True).awaitTermination(120)
    bronze = spark.table(table_name(ctx, BRONZE_TRANSACTIONS))
    assert bronze.count() == len(records) + 1
    assert bronze.groupBy("_raw").count().where(F.col("count") > 1).count() == 0
