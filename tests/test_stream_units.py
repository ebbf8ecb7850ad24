"""Small pieces of the streams on the shared session: validation's reference clock, scheduler pools."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from fraudlake.orchestration.streaming import scheduler_pool
from fraudlake.silver.validation import IN_THE_FUTURE, validate

pytestmark = pytest.mark.spark

DAY = 86_400


def test_the_future_is_judged_against_when_bronze_received_the_row(spark):
    # Both rows are in the past now; what matters is how far ahead of their arrival they claimed to be.
    received = datetime(2026, 1, 1, 12, 0)
    rows = [
        ("ahead-2-days", received + timedelta(days=2), received),
        ("ahead-1-hour", received + timedelta(hours=1), received),
    ]
    bronze = spark.createDataFrame(rows, "transaction_id string, event_time timestamp, _ingest_time timestamp")
    for column, value in (
        ("user_id", "u"),
        ("card_id", "c"),
        ("merchant_id", "m"),
        ("currency", "EUR"),
        ("country", "DE"),
        ("channel", "pos"),
        ("_raw", None),
    ):
        bronze = bronze.selectExpr(
            "*", f"CAST({value!r} AS STRING) AS {column}" if value else f"CAST(NULL AS STRING) AS {column}"
        )
    bronze = bronze.selectExpr("*", "10.0D AS amount")

    reasons = {row["transaction_id"]: row["quarantine_reason"] for row in validate(bronze, DAY).collect()}
    assert reasons == {"ahead-2-days": IN_THE_FUTURE, "ahead-1-hour": None}


def test_a_query_started_in_a_pool_runs_there_and_the_thread_gets_its_pool_back(spark):
    context = spark.sparkContext
    previous = context.getLocalProperty("spark.scheduler.pool")
    context.setLocalProperty("spark.scheduler.pool", "outer")
    try:
        with scheduler_pool(spark, "silver"):
            assert context.getLocalProperty("spark.scheduler.pool") == "silver"
            query = spark.readStream.format("rate").load().writeStream.format("noop").queryName("pooled").start()
        assert context.getLocalProperty("spark.scheduler.pool") == "outer"
        # A first batch, not processAllAvailable(): the rate source has new rows every second,
        # so on a slow enough machine that call never returns.
        deadline = time.time() + 60
        while query.lastProgress is None and time.time() < deadline:
            time.sleep(0.2)
        query.stop()
        # The fair scheduler creates a pool when the first task set is submitted to it.
        assert context._jsc.sc().getPoolForName("silver").isDefined()
        assert spark.conf.get("spark.scheduler.mode") == "FAIR"
    finally:
        context.setLocalProperty("spark.scheduler.pool", previous)


def test_a_write_that_lost_a_race_is_tried_again_and_other_errors_are_not(monkeypatch):
    from fraudlake import streaming_io

    monkeypatch.setattr(streaming_io, "CONFLICT_BACKOFF_SECONDS", 0.0)
    conflict = RuntimeError(
        "[DELTA_CONCURRENT_DELETE_READ] io.delta.exceptions.ConcurrentDeleteReadException: "
        "This transaction attempted to read one or more files that were deleted by a concurrent update"
    )
    calls: list[int] = []

    def losing_twice() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise conflict
        return "committed"

    assert streaming_io.retry_on_conflict(losing_twice) == "committed" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise ValueError("[DELTA_SCHEMA_MISMATCH] a real error")

    calls.clear()
    with pytest.raises(ValueError, match="SCHEMA_MISMATCH"):
        streaming_io.retry_on_conflict(broken)
    assert len(calls) == 1  # not a race: no second try

    def always_losing() -> None:
        calls.append(1)
        raise conflict

    calls.clear()
    with pytest.raises(RuntimeError, match="CONCURRENT"):
        streaming_io.retry_on_conflict(always_losing)
    assert len(calls) == streaming_io.CONFLICT_ATTEMPTS  # then the conflict is the caller's
