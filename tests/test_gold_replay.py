"""Gold's micro-batch replayed after a crash (same batch id, a writer started afresh) changes
nothing, and gold equals the aggregate of every batch: the windows' and the minutes'
MERGEs and the alerts' append each commit once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from fraudlake.gold.aggregates import dashboard_minute, user_activity_5m
from fraudlake.gold.stream import GoldBatchWriter
from fraudlake.tables import GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS, GOLD_USER_ACTIVITY, ensure_tables, table_name
from tests.conftest import make_context

pytestmark = pytest.mark.spark

START = datetime(2026, 3, 1, 9, 0, tzinfo=timezone.utc)
SCHEMA = """transaction_id STRING, user_id STRING, event_time TIMESTAMP, _ingest_time TIMESTAMP, amount DOUBLE,
    currency STRING, channel STRING, country STRING, fraud_score DOUBLE, model_name STRING, model_version STRING,
    label_is_fraud INT, amount_usd DOUBLE, is_flagged BOOLEAN"""


def _rows(spark, first: int, n: int):
    """``n`` scored transactions 7 s apart from START + ``first`` * 7 s, over 5 users; every 10th flagged."""
    rows = []
    for i in range(first, first + n):
        at = START + timedelta(seconds=7 * i)
        flagged = i % 10 == 0
        rows.append((f"tx-{i}", f"user-{i % 5}", at, at, 10.0 + i, "USD", "online", "US", 0.99 if flagged else 0.1,
                     "fraud_detector", "1", int(flagged), 10.0 + i, flagged))
    return spark.createDataFrame(rows, SCHEMA)


def _state(spark, ctx):
    return {spec.name: sorted(map(tuple, spark.table(table_name(ctx, spec)).drop("updated_at").collect()))
            for spec in (GOLD_USER_ACTIVITY, GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS)}


def test_a_replayed_gold_batch_adds_nothing_and_gold_equals_every_batch(spark, tmp_path):
    ctx = make_context(tmp_path / "home", streams={"watermark_seconds": 60, "activity_alert_threshold": 8,
                                                   "console_alerts_per_batch": 0})
    ensure_tables(spark, ctx)
    first, second = _rows(spark, 0, 60), _rows(spark, 60, 60)

    GoldBatchWriter(ctx, "gold-test")(first, 0)
    GoldBatchWriter(ctx, "gold-test")(second, 1)
    after_two = _state(spark, ctx)
    GoldBatchWriter(ctx, "gold-test")(second, 1)  # the replay a restart makes after a crash
    assert _state(spark, ctx) == after_two

    silver = first.unionByName(second)
    activity = spark.table(table_name(ctx, GOLD_USER_ACTIVITY))
    minutes = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE))
    assertDataFrameEqual(activity.drop("is_final", "updated_at"), user_activity_5m(silver), checkRowOrder=False,
                         rtol=1e-9)
    assertDataFrameEqual(minutes.drop("is_final", "updated_at"), dashboard_minute(silver), checkRowOrder=False,
                         rtol=1e-9)
    # 14 minutes of events, a 60 s watermark: the earlier minutes are final, the last ones open.
    finals = {r["is_final"] for r in minutes.collect()}
    assert finals == {True, False}
    assert minutes.where("updated_at IS NULL").count() == 0
    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
    assert alerts.where("alert_type = 'model'").count() == silver.where("is_flagged").count()
    busy_users = user_activity_5m(silver).where(F.col("tx_count") >= 8).select("user_id").distinct().count()
    assert alerts.where("alert_type = 'user_activity'").select("user_id").distinct().count() == busy_users > 0
