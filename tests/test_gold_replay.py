"""Gold's query over a real silver table: a micro-batch replayed after a crash (its commit
missing from the checkpoint, so Spark runs it again, and the writer rebuilds its state from
the tables as they were before it) changes nothing; gold equals the batch aggregate of silver, open and final
windows; a row later than the watermark stays out of the final windows and still raises
its model alert."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from fraudlake.gold.aggregates import dashboard_minute, user_activity_5m
from fraudlake.gold.stream import QUERY_NAME, start_gold
from fraudlake.orchestration.check import gold_against_silver
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_LATE,
    GOLD_USER_ACTIVITY,
    SILVER_SCORED,
    ensure_tables,
    table_name,
)
from tests.conftest import make_context

pytestmark = pytest.mark.spark

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
SCHEMA = """transaction_id STRING, user_id STRING, event_time TIMESTAMP, _ingest_time TIMESTAMP, amount DOUBLE,
    currency STRING, channel STRING, country STRING, fraud_score DOUBLE, model_name STRING, model_version STRING,
    label_is_fraud INT, amount_usd DOUBLE, is_flagged BOOLEAN"""
LATE = "tx-late"


def _rows(first: int, n: int) -> list[tuple]:
    """``n`` scored transactions 7 s apart from START + ``first`` * 7 s, over 5 users; every 10th flagged."""
    rows = []
    for i in range(first, first + n):
        at = START + timedelta(seconds=7 * i)
        flagged = i % 10 == 0
        rows.append(
            (
                f"tx-{i}",
                f"user-{i % 5}",
                at,
                at,
                10.0 + i,
                "USD",
                "online",
                "US",
                0.99 if flagged else 0.1,
                "fraud_detector",
                "1",
                int(flagged),
                10.0 + i,
                flagged,
            )
        )
    return rows


def _append_silver(spark, ctx, rows: list[tuple]) -> None:
    target = table_name(ctx, SILVER_SCORED)
    frame = spark.createDataFrame(rows, SCHEMA)
    spark.table(target).limit(0).unionByName(frame, allowMissingColumns=True).write.format("delta").mode(
        "append"
    ).saveAsTable(target)


def _run_gold(spark, ctx) -> None:
    for query in start_gold(spark, ctx, available_now=True)[0].values():
        query.awaitTermination()
        assert query.exception() is None


def _forget_last_commit(checkpoint: str) -> int:
    """What ``kill -9`` after the writes and before the checkpoint's commit leaves: the batch's offsets, no commit."""
    last = max((p for p in Path(checkpoint, "commits").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()
    last.with_name(f".{last.name}.crc").unlink(missing_ok=True)
    return int(last.name)


def _state(spark, ctx):
    return {
        spec.name: sorted(map(tuple, spark.table(table_name(ctx, spec)).drop("updated_at").collect()))
        for spec in (GOLD_USER_ACTIVITY, GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS)
    }


def test_a_replayed_gold_batch_changes_nothing_and_gold_equals_silver(spark, tmp_path):
    ctx = make_context(
        tmp_path / "home",
        streams={"watermark_seconds": 60, "activity_alert_threshold": 8, "console_alerts_per_batch": 0},
    )
    ensure_tables(spark, ctx)
    _append_silver(spark, ctx, _rows(0, 60))  # 09:00:00 to 09:06:53
    _run_gold(spark, ctx)
    # A flagged transaction from 09:00:10, now that every window holding it is final.
    late = (
        LATE,
        "user-late",
        START + timedelta(seconds=10),
        START + timedelta(minutes=8),
        5.0,
        "USD",
        "online",
        "US",
        0.99,
        "fraud_detector",
        "1",
        1,
        5.0,
        True,
    )
    _append_silver(spark, ctx, _rows(60, 60) + [late])
    _run_gold(spark, ctx)
    after_two = _state(spark, ctx)

    assert _forget_last_commit(ctx.paths.checkpoint(QUERY_NAME)) >= 1
    _run_gold(spark, ctx)
    assert _state(spark, ctx) == after_two

    silver = spark.table(table_name(ctx, SILVER_SCORED))
    on_time = silver.where(F.col("transaction_id") != LATE)
    activity = spark.table(table_name(ctx, GOLD_USER_ACTIVITY))
    minutes = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE))
    assertDataFrameEqual(
        activity.drop("is_final", "updated_at"), user_activity_5m(on_time), checkRowOrder=False, rtol=1e-9
    )
    assertDataFrameEqual(
        minutes.drop("is_final", "updated_at"), dashboard_minute(on_time), checkRowOrder=False, rtol=1e-9
    )
    # 14 minutes of events, a 60 s watermark: the earlier minutes are final, the last ones open.
    assert {r["is_final"] for r in minutes.collect()} == {True, False}
    assert minutes.where("updated_at IS NULL").count() == 0
    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
    model = alerts.where("alert_type = 'model'")
    assert model.count() == silver.where("is_flagged").count()
    assert model.where(F.col("transaction_id") == LATE).count() == 1
    busy_users = user_activity_5m(on_time).where(F.col("tx_count") >= 8).select("user_id").distinct().count()
    assert alerts.where("alert_type = 'user_activity'").select("user_id").distinct().count() == busy_users > 0
    # The late row is recorded once (its batch was the one replayed), and gold is exactly the
    # silver rows it counted: `fraudlake check`'s comparison holds.
    late_rows = spark.table(table_name(ctx, GOLD_LATE)).collect()
    assert [(r["transaction_id"], r["minute"] < r["final_through"]) for r in late_rows] == [(LATE, True)]
    checks = gold_against_silver(spark, ctx, full=True)
    assert all(c.ok for c in checks) and {c.numbers["late_rows"] for c in checks} == {1}, checks
