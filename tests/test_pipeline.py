"""Silver and gold on real Spark, Delta and MLflow: validation, exactly-one routing, windows, alerts.

The layers run as available-now streams over a landing folder of simulated
transactions with bad rows mixed in, exactly as a scheduled job would run them.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from fraudlake.conf.settings import SimulatorSettings
from fraudlake.gold.aggregates import dashboard_minute, user_activity_5m
from fraudlake.orchestration.check import check_lakehouse
from fraudlake.orchestration.pipeline import LAYERS, catch_up, lakehouse_summary
from fraudlake.simulator import generate_batch
from fraudlake.tables import (
    BRONZE_TRANSACTIONS,
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_USER_ACTIVITY,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    ensure_tables,
    table_name,
)
from tests.conftest import attached, fraudlake, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # streams a lakehouse

GOOD = {
    "transaction_id": "tx-x",
    "event_time": "2026-01-02T10:00:00Z",
    "user_id": "u1",
    "card_id": "c1",
    "merchant_id": "m1",
    "merchant_category": "grocery",
    "amount": 10.0,
    "currency": "EUR",
    "country": "DE",
    "channel": "pos",
    "label_is_fraud": 0,
    "label_scenario": None,
}
# id -> (record or raw line, expected quarantine reason)
BAD = {
    "bad-amount": ({**GOOD, "transaction_id": "bad-amount", "amount": -3.0}, "amount not positive and finite"),
    "bad-currency": ({**GOOD, "transaction_id": "bad-currency", "currency": "ZZZ"}, "unknown currency"),
    "bad-country": ({**GOOD, "transaction_id": "bad-country", "country": "ZZ"}, "unknown country"),
    "bad-user": ({**GOOD, "transaction_id": "bad-user", "user_id": None}, "missing or invalid user_id"),
    "bad-type": ({**GOOD, "transaction_id": "bad-type", "amount": "ten"}, "missing or invalid amount"),
    "bad-future": (
        {**GOOD, "transaction_id": "bad-future", "event_time": "2099-01-01T00:00:00Z"},
        "event_time in the future",
    ),
    "bad-channel": ({**GOOD, "transaction_id": "bad-channel", "channel": "fax"}, "unknown channel"),
}
BROKEN_LINE = '{"transaction_id": "broken", "amount": '
ROWS = 4_000
# One user's burst: 8 transactions in 105 s, inside the simulated days (several sliding windows hold it).
BURST_USER = "u-burst"
BURST = [
    {
        **GOOD,
        "transaction_id": f"burst-{i}",
        "user_id": BURST_USER,
        "event_time": (datetime(2026, 1, 3, 12, 0, tzinfo=timezone.utc) + timedelta(seconds=15 * i)).isoformat(),
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def caught_up(spark, shared_champion, tmp_path_factory):
    """A home with a champion model, a landing folder, and every layer caught up on it."""
    home = tmp_path_factory.mktemp("pipeline") / "home"
    ctx = make_context(home, ml=shared_champion, streams={"watermark_seconds": 60, "console_alerts_per_batch": 2})
    ensure_tables(spark, ctx)

    landing = home / "landing"
    sim = SimulatorSettings(rows_per_day=400)  # 4,000 rows over 10 days: many closed windows
    records = generate_batch(spark, sim, ROWS).drop("_raw", "_source", "_ingest_time")
    records.coalesce(2).write.mode("overwrite").json(str(landing / "simulated"))
    bad_lines = [json.dumps(record) for record, _ in BAD.values()]
    duplicate = json.dumps({**GOOD, "transaction_id": "dup-1"})
    (landing / "bad.json").write_text("\n".join(bad_lines + [BROKEN_LINE, duplicate, duplicate, ""]) + "\n")
    (landing / "burst.json").write_text("".join(json.dumps(record) + "\n" for record in BURST))
    catch_up(spark, ctx, LAYERS, landing=str(landing))
    # The same files dropped again under other names: a later micro-batch repeats ids silver has scored.
    again = landing / "dropped-again"
    again.mkdir()
    first_part = sorted((landing / "simulated").glob("part-*.json"))[0]
    (again / "copy-of-simulated.json").write_text(first_part.read_text())
    (again / "copy-of-burst.json").write_text((landing / "burst.json").read_text())
    repeated = sum(1 for line in first_part.read_text().splitlines() if line.strip()) + len(BURST)
    catch_up(spark, ctx, LAYERS, landing=str(landing))
    return ctx, repeated


@pytest.fixture
def lakehouse(spark, caught_up):
    """The module's home, the session's table names on its tables."""
    ctx, repeated = caught_up
    return attached(spark, ctx), repeated


def _table(spark, ctx, spec):
    return spark.table(table_name(ctx, spec))


def test_every_bronze_row_lands_in_exactly_one_silver_table(spark, lakehouse):
    ctx, repeated = lakehouse
    bronze, scored, quarantine = (
        _table(spark, ctx, s) for s in (BRONZE_TRANSACTIONS, SILVER_SCORED, SILVER_QUARANTINE)
    )
    assert bronze.count() == ROWS + len(BAD) + 3 + len(BURST) + repeated  # the blank line is not a record
    assert bronze.count() == scored.count() + quarantine.count()
    # As multisets of bronze rows: silver + quarantine is bronze, nothing lost, nothing twice.
    columns = bronze.columns
    assertDataFrameEqual(scored.select(columns).unionAll(quarantine.select(columns)), bronze, checkRowOrder=False)
    assert scored.groupBy("transaction_id").count().where("count > 1").count() == 0
    assert scored.where("model_version IS NULL OR model_name IS NULL OR fraud_score IS NULL").count() == 0


def test_bad_rows_are_quarantined_with_their_reason(spark, lakehouse):
    ctx, _ = lakehouse
    quarantine = _table(spark, ctx, SILVER_QUARANTINE)
    reasons = {
        r["transaction_id"]: r["quarantine_reason"] for r in quarantine.where("transaction_id LIKE 'bad-%'").collect()
    }
    assert reasons == {tid: reason for tid, (_, reason) in BAD.items()}
    assert quarantine.where(F.col("_raw") == BROKEN_LINE).first()["quarantine_reason"] == "unparseable record"
    dup = quarantine.where("transaction_id = 'dup-1'").collect()
    assert [r["quarantine_reason"] for r in dup] == ["duplicate_transaction_id"]
    assert _table(spark, ctx, SILVER_SCORED).where("transaction_id = 'dup-1'").count() == 1


def test_files_dropped_again_are_quarantined_as_repeats_not_scored_twice(spark, lakehouse):
    ctx, repeated = lakehouse
    scored, quarantine = _table(spark, ctx, SILVER_SCORED), _table(spark, ctx, SILVER_QUARANTINE)
    assert scored.groupBy("transaction_id").count().where("count > 1").count() == 0
    repeats = quarantine.where(F.col("_source") == "files").where(
        F.col("transaction_id").startswith("tx-") | F.col("transaction_id").startswith("burst-")
    )
    assert repeats.count() == repeated
    assert {r[0] for r in repeats.select("quarantine_reason").distinct().collect()} == {"duplicate_transaction_id"}
    # Every repeat is a copy of a scored row: same id, same event.
    assert repeats.join(scored, ["transaction_id", "event_time", "amount"], "left_anti").count() == 0
    alerts = _table(spark, ctx, GOLD_FRAUD_ALERTS)
    assert alerts.where("alert_type = 'model'").groupBy("transaction_id").count().where("count > 1").count() == 0


def test_silver_has_time_features_lineage_and_constraints(spark, lakehouse):
    ctx, _ = lakehouse
    scored = _table(spark, ctx, SILVER_SCORED)
    row = scored.where("transaction_id = 'tx-x' OR transaction_id = 'dup-1'").first()
    assert (row["tx_hour"], row["tx_day_of_week"], row["is_weekend"], row["is_night"]) == (10, 6, False, False)
    assert row["model_name"] == ctx.settings.ml.model_name and row["model_version"] == "1"
    flagged_share = scored.where("is_flagged").count() / scored.count()
    assert 0 < flagged_share < 0.2
    with pytest.raises(Exception, match="(?i)constraint|violat"):
        spark.sql(f"INSERT INTO {table_name(ctx, SILVER_SCORED)} (transaction_id, amount) VALUES ('neg', -1.0)")


def test_gold_windows_equal_a_batch_recomputation_open_and_final(spark, lakehouse):
    ctx, _ = lakehouse
    silver = _table(spark, ctx, SILVER_SCORED)
    activity = _table(spark, ctx, GOLD_USER_ACTIVITY)
    minutes = _table(spark, ctx, GOLD_DASHBOARD_MINUTE)
    assert activity.count() > 1_000
    # Counts exactly, sums up to rounding.
    assertDataFrameEqual(
        activity.drop("is_final", "updated_at"), user_activity_5m(silver), checkRowOrder=False, rtol=1e-9
    )
    assertDataFrameEqual(
        minutes.drop("is_final", "updated_at"), dashboard_minute(silver), checkRowOrder=False, rtol=1e-9
    )
    # A window is final once the newest minute counted began the watermark delay after its end.
    newest_minute = silver.agg(F.date_trunc("minute", F.max("event_time"))).first()[0]
    watermark = newest_minute - timedelta(seconds=ctx.settings.streams.watermark_seconds)
    for table, end in ((activity, F.col("window_end")), (minutes, F.col("minute") + F.expr("INTERVAL 1 MINUTE"))):
        marked = table.groupBy("is_final", (end <= F.lit(watermark)).alias("passed")).count().collect()
        assert {(r["is_final"], r["passed"]) for r in marked} == {(True, True), (False, False)}, marked
        assert table.where("updated_at IS NULL").count() == 0


def test_alerts_one_per_flagged_transaction_and_one_per_burst(spark, lakehouse):
    ctx, _ = lakehouse
    alerts = _table(spark, ctx, GOLD_FRAUD_ALERTS)
    flagged = _table(spark, ctx, SILVER_SCORED).where("is_flagged")
    model = alerts.where("alert_type = 'model'")
    assert model.count() == flagged.count() > 0
    assert model.select("transaction_id").subtract(flagged.select("transaction_id")).count() == 0
    busy = _table(spark, ctx, GOLD_USER_ACTIVITY).where(
        F.col("tx_count") >= ctx.settings.streams.activity_alert_threshold
    )
    activity = alerts.where("alert_type = 'user_activity'")
    # The burst fills several sliding windows over the threshold, and raises one alert.
    assert busy.where(F.col("user_id") == BURST_USER).count() >= 3
    burst_alerts = activity.where(F.col("user_id") == BURST_USER).collect()
    assert len(burst_alerts) == 1
    assert burst_alerts[0]["reason"].startswith("8 transactions")
    assert activity.where("user_id IS NULL OR reason IS NULL").count() == 0


def test_catching_up_again_writes_nothing_twice(spark, lakehouse):
    ctx, _ = lakehouse
    before = lakehouse_summary(spark, ctx)["rows"]
    rows = catch_up(spark, ctx, LAYERS, landing=str(ctx.paths.home / "landing"))
    assert all(n == 0 for n in rows.values()), rows
    assert lakehouse_summary(spark, ctx)["rows"] == before


def test_check_holds_on_what_the_layers_wrote(spark, lakehouse, capsys, shared_champion):
    ctx, repeated = lakehouse
    results = {r.check: r for r in check_lakehouse(spark, ctx, full=True)}
    assert [name for name, r in results.items() if not r.ok] == [], [r.details for r in results.values()]
    routed = results["bronze = silver + quarantine"].numbers
    assert routed["sources"]["files"]["quarantine"] >= len(BAD) + repeated
    assert routed["missing"] == routed["extra"] == routed["not_yet_routed"] == 0
    minutes = results["gold minutes"].numbers
    silver_rows = spark.table(table_name(ctx, SILVER_SCORED)).count()
    assert minutes["gold_rows"] == minutes["silver_rows"] == silver_rows  # gold has read and counted every row
    # By default the gold checks cover the newest 24 h of event time (of the 10 simulated days).
    recent = {r.check: r for r in check_lakehouse(spark, ctx)}
    assert all(r.ok for r in recent.values()), [r.details for r in recent.values()]
    assert 0 < recent["gold minutes"].numbers["minutes"] < minutes["minutes"]


def _copy_of(home: Path, into: Path) -> Path:
    """The lakehouse's tables and checkpoints in another home, to be broken there."""
    copy = into / "home"
    for folder in ("warehouse", "checkpoints"):
        shutil.copytree(home / folder, copy / folder)
    return copy


def test_check_fails_naming_the_check_and_the_numbers(spark, lakehouse, capsys, shared_champion, tmp_path):
    """A duplicate in silver, a missing silver row, and a gold minute that disagrees with silver:
    each fails the checks it breaks, named with the numbers, exit code 1."""
    ctx, _ = lakehouse
    home = _copy_of(ctx.paths.home, tmp_path)
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    broken = attached(spark, make_context(home, ml=shared_champion))
    silver, minutes = table_name(broken, SILVER_SCORED), table_name(broken, GOLD_DASHBOARD_MINUTE)

    def check() -> tuple[int, dict, str]:
        code, out, err = fraudlake(capsys, home, "check", "--full", "--format", "json", *registry)
        return code, {c["check"]: c for c in json.loads(out)["checks"]}, err

    # A silver row written twice (the lakehouse as the layers left it passes: the test above).
    intact = spark.sql(f"DESCRIBE HISTORY {silver} LIMIT 1").first()["version"]
    spark.sql(f"INSERT INTO {silver} SELECT * FROM {silver} WHERE transaction_id = 'burst-3'")
    code, checks, err = check()
    assert code == 1 and "checks failed: bronze = silver + quarantine, one score per transaction" in err
    assert checks["one score per transaction"]["repeated"] == 1 and checks["bronze = silver + quarantine"]["extra"] == 1
    spark.sql(f"DELETE FROM {silver} WHERE transaction_id = 'burst-3'")  # both copies: now one missing

    # A silver row missing: bronze has it, silver and quarantine do not; gold counted it.
    code, checks, _ = check()
    assert code == 1 and checks["bronze = silver + quarantine"]["missing"] == 1
    assert "1 in neither" in checks["bronze = silver + quarantine"]["details"]
    assert checks["gold minutes"]["status"] == "FAIL" and checks["gold minutes"]["differing"] == 1
    assert checks["one score per transaction"]["status"] == "ok"

    # Silver put back with `fraudlake restore` (Delta's RESTORE: one more commit).
    code, out, err = fraudlake(
        capsys, home, "restore", "silver.scored_transactions", "--version", str(intact), *registry
    )
    assert code == 0 and f"restored_version  {intact}" in out, out + err

    # Gold's minutes overwritten by mistake, one of them with a wrong count: in the table
    # format a person reads, only that check fails, naming the minute.
    before = spark.sql(f"DESCRIBE HISTORY {minutes} LIMIT 1").first()["version"]
    newest = spark.sql(f"SELECT max(minute) AS newest FROM {minutes} WHERE tx_count > 1")
    wrong = spark.table(minutes).crossJoin(newest)
    wrong = wrong.withColumn(
        "tx_count", F.when(F.col("minute") == F.col("newest"), F.col("tx_count") - 1).otherwise(F.col("tx_count"))
    ).drop("newest")
    wrong.localCheckpoint().createOrReplaceTempView("mistaken_minutes")
    spark.sql(f"INSERT OVERWRITE {minutes} SELECT * FROM mistaken_minutes")
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert code == 1 and len(failed) == 1 and failed[0].split()[1:3] == ["gold", "minutes"], out
    assert "1 minute differs, e.g." in failed[0], failed[0]

    # Restored to the version before the mistake: every check holds again.
    assert fraudlake(capsys, home, "restore", "gold.dashboard_minute", "--version", str(before), *registry)[0] == 0
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0, out + err
