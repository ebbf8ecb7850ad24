"""Bronze and silver as one query (``fraudlake run``), next to bronze-only and silver-only runs on the same home.

Every bronze row is routed exactly once, whichever query wrote it to bronze and whichever
routes it: the combined query scores a backlog a bronze-only run left before it ingests,
and a silver query reading bronze afterwards leaves the rows the combined query routed alone.
"""

from __future__ import annotations

import json

import pytest
from pyspark.sql import functions as F

from fraudlake.bronze.ingest import start_bronze_ingest
from fraudlake.conf.settings import SimulatorSettings
from fraudlake.orchestration.pipeline import catch_up, load_champion, start_ingest_and_score
from fraudlake.simulator import generate_batch
from fraudlake.tables import BRONZE_TRANSACTIONS, SILVER_QUARANTINE, SILVER_SCORED, ensure_tables, table_name
from tests.conftest import make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # streams a lakehouse

BAD = {
    "transaction_id": "bad-amount",
    "event_time": "2026-01-02T10:00:00Z",
    "user_id": "u1",
    "card_id": "c1",
    "merchant_id": "m1",
    "merchant_category": "grocery",
    "amount": -3.0,
    "currency": "EUR",
    "country": "DE",
    "channel": "pos",
    "label_is_fraud": 0,
    "label_scenario": None,
}


def _counts(spark, ctx) -> dict:
    silver = spark.table(table_name(ctx, SILVER_SCORED))
    return {
        "bronze": spark.table(table_name(ctx, BRONZE_TRANSACTIONS)).count(),
        "silver": silver.count(),
        "silver_ids": silver.select("transaction_id").distinct().count(),
        "quarantine": spark.table(table_name(ctx, SILVER_QUARANTINE)).count(),
    }


def _drop(spark, landing, name: str, rows: int, seed: int) -> None:
    records = generate_batch(spark, SimulatorSettings(seed=seed, rows_per_day=500), rows)
    records = records.withColumn("transaction_id", F.concat(F.lit(f"{name}-"), "transaction_id"))
    records.drop("_raw", "_source", "_ingest_time").coalesce(1).write.json(str(landing / name))


def test_every_row_is_routed_once_across_bronze_only_combined_and_silver_only_runs(
    spark, shared_champion, tmp_path, monkeypatch
):
    home = tmp_path / "home"
    ctx = make_context(home, ml=shared_champion)
    ensure_tables(spark, ctx)
    scorer = load_champion(spark, ctx)
    landing = home / "landing"

    # 1. A bronze-only run leaves rows silver has not read.
    _drop(spark, landing, "first", 600, seed=1)
    start_bronze_ingest(spark, ctx, "files", landing=str(landing), available_now=True).awaitTermination(120)
    after_bronze = _counts(spark, ctx)
    assert after_bronze["bronze"] == 600 and after_bronze["silver"] == after_bronze["quarantine"] == 0

    # 2. The combined query scores that backlog first, then ingests and routes new files in
    #    the same micro-batches, resuming the source checkpoint the bronze-only run began.
    _drop(spark, landing, "second", 700, seed=2)
    (landing / "bad.json").write_text(json.dumps(BAD) + "\n" + '{"transaction_id": "broken", ' + "\n")
    query, writer = start_ingest_and_score(spark, ctx, "files", scorer, landing=str(landing), available_now=True)
    query.awaitTermination(180)
    assert query.exception() is None
    combined = _counts(spark, ctx)
    assert combined["bronze"] == 600 + 700 + 2, combined  # each file read once
    assert combined["bronze"] == combined["silver"] + combined["quarantine"], combined
    assert combined["silver"] == combined["silver_ids"] and combined["quarantine"] == 2, combined
    assert writer.silver.stats.scored == 700  # the backlog was scored by silver's own query

    # 3. A silver query reading bronze afterwards (a scheduled catch-up, --layers silver)
    #    finds every row routed: it writes nothing.
    catch_up(spark, ctx, ("silver",))
    assert _counts(spark, ctx) == combined

    # 4. A crash between a batch's bronze append and its silver appends: the restart routes
    #    those rows (catch-up at start), and the replayed batch does not route them again.
    _drop(spark, landing, "third", 300, seed=3)
    from fraudlake.silver.stream import SilverBatchWriter

    def crash(self, session, validated, batch_id, frame=None):
        raise RuntimeError("killed after the bronze append")

    with monkeypatch.context() as patched:
        patched.setattr(SilverBatchWriter, "route", crash)
        query, _ = start_ingest_and_score(spark, ctx, "files", scorer, landing=str(landing), available_now=True)
        with pytest.raises(Exception, match="killed after the bronze append"):
            query.awaitTermination(180)
    crashed = _counts(spark, ctx)
    assert crashed["bronze"] == combined["bronze"] + 300 and crashed["silver"] == combined["silver"]

    query, writer = start_ingest_and_score(spark, ctx, "files", scorer, landing=str(landing), available_now=True)
    query.awaitTermination(180)
    assert query.exception() is None
    restarted = _counts(spark, ctx)
    assert restarted["bronze"] == crashed["bronze"], restarted  # the replayed bronze append was skipped
    assert restarted["silver"] == restarted["silver_ids"] == combined["silver"] + 300, restarted
    assert restarted["quarantine"] == combined["quarantine"], restarted
