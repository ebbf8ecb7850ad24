"""Right answers at any hour and after a replay, on real Spark, Delta and MLflow.

The demo's model (gradient boosting on the default simulated history) meets the same
clock live as in training: the same rows score alike at 03:00 and at 14:00 UTC, and a
rate stream put on the simulated clock at 03:00 UTC is not flagged wholesale. Then the
rate stream's checkpoint is deleted and the stream restarted: it numbers its rows from
0 again, and silver must not score any transaction twice.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import pytest
from pyspark.sql import functions as F

from fraudlake.bronze.ingest import checkpoint_name, start_bronze_ingest
from fraudlake.conf.settings import SimulatorSettings
from fraudlake.ml.serving import add_behaviour, load_scorer, score_transactions
from fraudlake.orchestration.pipeline import catch_up
from fraudlake.orchestration.streaming import run_queries
from fraudlake.simulator import generate_batch
from fraudlake.tables import (
    BRONZE_TRANSACTIONS,
    GOLD_FRAUD_ALERTS,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    ensure_tables,
    table_name,
)
from tests.conftest import attached, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]

NIGHT = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)  # a Thursday, 03:00 UTC (11:00 in Singapore)
RATE = 200


@pytest.fixture(scope="module")
def champion(spark, shared_champion, tmp_path_factory):
    """A home whose champion is what `fraudlake demo` trains: gradient boosting on the default history."""
    home = tmp_path_factory.mktemp("any-hour") / "home"
    ctx = make_context(home, ml=shared_champion, streams={"console_alerts_per_batch": 0})
    ensure_tables(spark, ctx)
    return ctx


def _flag_share(scored) -> float:
    return scored.agg(F.avg(F.col("is_flagged").cast("double"))).first()[0]


def _at_hour(rows, hour: int):
    """The same rows, each moved to ``hour`` of its own day (minutes and seconds kept)."""
    seconds = F.unix_seconds("event_time")
    day = seconds - F.pmod(seconds, 86_400)
    return rows.withColumn("event_time", F.timestamp_seconds(day + hour * 3600 + F.pmod(seconds, 3600)))


def test_the_champion_flags_the_same_share_at_three_and_at_fourteen_utc(spark, champion):
    scorer = load_scorer(spark, champion)
    unseen = generate_batch(spark, SimulatorSettings(seed=7), 10_000).cache()  # rows the model never saw

    def flag_share(rows) -> float:
        return _flag_share(score_transactions(add_behaviour(rows, scorer.label_maturity_seconds), scorer))

    as_generated = flag_share(unseen)
    at_night = flag_share(_at_hour(unseen, 3))
    by_day = flag_share(_at_hour(unseen, 14))
    unseen.unpersist()
    assert 0 < as_generated < 0.05
    assert abs(at_night - by_day) < 0.02, (at_night, by_day)
    assert abs(at_night - as_generated) < 0.02 and abs(by_day - as_generated) < 0.02, (at_night, by_day, as_generated)


def _stream_rate(spark, ctx, seconds: float) -> None:
    query = start_bronze_ingest(spark, ctx, "rate", rate=RATE)
    run_queries(
        {"bronze": query},
        seconds,
        progress_seconds=60,
        quiet=True,
        stages=[["bronze"]],
        intervals={"bronze": ctx.settings.ingest.trigger_seconds},
    )


@pytest.fixture(scope="module")
def streamed_twice(spark, champion):
    """A rate stream at 03:00 UTC on the simulated clock, through silver and gold; then its
    checkpoint deleted and the stream run again from row 0, through every layer."""
    ctx = champion.with_settings(simulator={"stream_start_time": NIGHT.isoformat()})
    _stream_rate(spark, ctx, 8)
    catch_up(spark, ctx, ("silver", "gold"))
    first = {
        name: spark.table(table_name(ctx, spec)).count()
        for name, spec in (("bronze", BRONZE_TRANSACTIONS), ("silver", SILVER_SCORED))
    }
    shutil.rmtree(ctx.paths.checkpoint(checkpoint_name("rate")))
    _stream_rate(spark, ctx, 5)
    catch_up(spark, ctx, ("silver", "gold"))
    return ctx, first


@pytest.fixture
def night_stream(spark, streamed_twice):
    """That home, the session's table names on its tables."""
    ctx, first = streamed_twice
    return attached(spark, ctx), first


def test_a_stream_at_three_utc_is_scored_like_one_by_day(spark, night_stream):
    ctx, first = night_stream
    silver = spark.table(table_name(ctx, SILVER_SCORED))
    assert first["silver"] >= 5 * RATE
    hours = {r[0] for r in silver.select(F.hour("event_time")).distinct().collect()}
    assert hours == {3}
    assert _flag_share(silver) < 0.03


def test_a_restarted_rate_stream_repeats_ids_that_silver_does_not_score_twice(spark, night_stream):
    ctx, first = night_stream
    bronze, silver, quarantine = (
        spark.table(table_name(ctx, s)) for s in (BRONZE_TRANSACTIONS, SILVER_SCORED, SILVER_QUARANTINE)
    )
    assert bronze.count() > first["bronze"]  # the restart landed rows again, numbered from 0
    assert bronze.count() == silver.count() + quarantine.count()
    assert silver.groupBy("transaction_id").count().where("count > 1").count() == 0
    repeats = quarantine.where(F.col("quarantine_reason") == "duplicate_transaction_id")
    assert repeats.count() == bronze.count() - first["bronze"] == quarantine.count()
    assert repeats.join(silver, ["transaction_id", "event_time", "amount"], "left_anti").count() == 0
    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
    assert alerts.where("alert_type = 'model'").groupBy("transaction_id").count().where("count > 1").count() == 0
    assert (
        alerts.groupBy("alert_type", "transaction_id", "user_id", "alert_time").count().where("count > 1").count() == 0
    )
