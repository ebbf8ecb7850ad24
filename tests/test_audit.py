"""Audits on real Spark, Delta and MLflow: a run scored by model version 1, a promotion of
version 2 and a re-score of a slice, then time travel, history, changes and re-scoring."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace
from unittest import mock

import pytest
from pyspark.sql import functions as F

from fraudlake.audit import audit_transaction, maintain, rescore_transaction, table_changes, table_history
from fraudlake.cli import main
from fraudlake.conf.settings import SimulatorSettings
from fraudlake.errors import FraudlakeError, NotFoundError
from fraudlake.gold.stream import start_gold
from fraudlake.ml.registry import list_versions, mlflow_client, promote
from fraudlake.ml.train import train_model
from fraudlake.orchestration import rescore as rescore_module
from fraudlake.orchestration.pipeline import catch_up
from fraudlake.orchestration.rescore import rescore_silver
from fraudlake.settings import Context, Paths
from fraudlake.simulator import generate_batch
from fraudlake.tables import (
    GOLD_FRAUD_ALERTS,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    ensure_tables,
    table_location,
    table_name,
)
from fraudlake.timeutil import from_row
from tests.conftest import attached, fraudlake, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # trains a model and streams a lakehouse

ROWS = 300
SLICE = 12
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
}


def _version(spark, name: str) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"])


def test_retention_is_set_on_create_and_follows_the_conf(spark, tmp_path):
    from fraudlake.tables import GOLD_USER_MINUTE

    ctx = make_context(tmp_path / "home")
    silver, gold = table_name(ctx, SILVER_SCORED), table_name(ctx, GOLD_USER_MINUTE)
    # A silver table from before flag_threshold existed: registration adds the column.
    old_columns = ", ".join(
        f.simpleString().replace(":", " ")
        for f in spark.createDataFrame([], SILVER_SCORED.columns).drop("flag_threshold").schema.fields
    )
    spark.sql(f"CREATE TABLE delta.`{table_location(ctx, SILVER_SCORED)}` ({old_columns}) USING DELTA")
    ensure_tables(spark, ctx)
    assert "flag_threshold" in spark.table(silver).columns

    def props(name):
        return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}

    for name in (silver, gold):
        assert props(name)["delta.logRetentionDuration"] == "interval 30 days"
        assert props(name)["delta.deletedFileRetentionDuration"] == "interval 30 days"
    assert props(silver)["delta.enableChangeDataFeed"] == "true"
    longer = make_context(tmp_path / "home", audit={"log_retention_days": 90, "deleted_file_retention_days": 60})
    ensure_tables(spark, longer)
    assert props(gold)["delta.logRetentionDuration"] == "interval 90 days"
    assert props(silver)["delta.deletedFileRetentionDuration"] == "interval 60 days"


@pytest.fixture(scope="module")
def rescored(spark, tmp_path_factory):
    """Silver scored by version 1; then version 2 promoted and a slice re-scored with it."""
    home = tmp_path_factory.mktemp("audit") / "home"
    ctx = make_context(
        home,
        ml={"samples": 3_000, "isolation_forest_trees": 40, "gradient_boosting_iterations": 40},
        streams={"console_alerts_per_batch": 0},
    )
    ensure_tables(spark, ctx)
    train_model(spark, ctx, model="isolation_forest")  # version 1, champion
    landing = home / "landing"
    records = generate_batch(spark, SimulatorSettings(rows_per_day=400), ROWS).drop("_raw", "_source", "_ingest_time")
    records.coalesce(1).write.mode("overwrite").json(str(landing / "simulated"))
    (landing / "bad.json").write_text(json.dumps(BAD) + "\n")
    catch_up(spark, ctx, ("bronze", "silver"), landing=str(landing))
    for query in start_gold(spark, ctx, available_now=True)[0].values():
        query.awaitTermination()
    silver = table_name(ctx, SILVER_SCORED)
    before = _version(spark, silver)

    train_model(spark, ctx, model="gradient_boosting")  # version 2, challenger
    promote(mlflow_client(ctx), ctx, 2)
    # Frauds first: rows the supervised version 2 flags where version 1 did not, so the re-score alerts.
    ids = [
        r["transaction_id"]
        for r in spark.table(silver).orderBy(F.desc("label_is_fraud"), "event_time").limit(SLICE).collect()
    ]
    # A crash injected between the re-score's alerts and its MERGE, then the same command again.
    with mock.patch.object(rescore_module, "_merge", side_effect=RuntimeError("injected crash")):
        with pytest.raises(RuntimeError, match="injected crash"):
            rescore_silver(spark, ctx, ids=ids)
    assert _version(spark, silver) == before  # silver untouched by the failed attempt
    crashed_alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS)).count()
    result = rescore_silver(spark, ctx, ids=ids)
    thresholds = {str(v["version"]): v["flag_threshold"] for v in list_versions(mlflow_client(ctx), ctx)}
    return SimpleNamespace(
        ctx=ctx,
        silver=silver,
        before=before,
        ids=ids,
        result=result,
        thresholds=thresholds,
        crashed_alerts=crashed_alerts,
    )


@pytest.fixture
def scored(spark, rescored):
    """The module's home, the session's table names on its tables (a test may point them at its own)."""
    attached(spark, rescored.ctx)
    return rescored


def test_an_old_version_shows_model_1_and_the_latest_model_2(spark, scored):
    ctx, tid = scored.ctx, scored.ids[0]
    old = audit_transaction(spark, ctx, tid, as_of_version=scored.before)
    new = audit_transaction(spark, ctx, tid)
    assert (old["model_name"], old["model_version"]) == (ctx.settings.ml.model_name, "1")
    assert (new["model_name"], new["model_version"]) == (ctx.settings.ml.model_name, "2")
    assert old["fraud_score"] != new["fraud_score"]
    assert old["flag_threshold"] == pytest.approx(scored.thresholds["1"])
    assert new["flag_threshold"] == pytest.approx(scored.thresholds["2"])
    assert old["is_flagged"] == (old["fraud_score"] >= old["flag_threshold"])
    # Which commit wrote each: a streaming batch before the promotion, the re-score's MERGE after.
    assert old["written_in_version"] <= scored.before and old["written_by"] == "WRITE"
    assert new["written_in_version"] == scored.result["silver_version"] > scored.before
    assert new["written_by"] == "MERGE" and new["silver_version"] == scored.result["silver_version"]
    # TIMESTAMP AS OF the commit before the re-score is the same row as VERSION AS OF.
    commit_time = (
        spark.sql(f"DESCRIBE HISTORY {scored.silver}").where(f"version = {scored.before}").first()["timestamp"]
    )
    at_time = audit_transaction(spark, ctx, tid, as_of_timestamp=from_row(commit_time))  # collected: local time
    assert (at_time["silver_version"], at_time["fraud_score"]) == (scored.before, old["fraud_score"])
    # Outside the slice nothing changed.
    outside = spark.table(scored.silver).where(~F.col("transaction_id").isin(scored.ids)).first()["transaction_id"]
    assert audit_transaction(spark, ctx, outside)["model_version"] == "1"


def test_the_audit_shows_the_bronze_record_and_the_alerts(spark, scored):
    ctx = scored.ctx
    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS)).where("alert_type = 'model'")
    for tid in scored.ids[:4]:
        old = audit_transaction(spark, ctx, tid, as_of_version=scored.before)
        new = audit_transaction(spark, ctx, tid)
        record = json.loads(new["bronze"]["record"])
        assert record["transaction_id"] == tid and record["amount"] == pytest.approx(new["amount"])
        assert new["bronze"]["source"] == "files" and new["bronze"]["as_received"]
        # The stream alerted on version 1's flag, the re-score on flags version 2 newly raised.
        expected = int(old["is_flagged"]) + int(new["is_flagged"] and not old["is_flagged"])
        model_alerts = [a for a in new["alerts"] if a["alert_type"] == "model"]
        assert len(model_alerts) == expected == alerts.where(F.col("transaction_id") == tid).count()
    # The failed attempt wrote the alerts; the rerun wrote none again and merged.
    assert scored.result["alerts_written"] == 0 and scored.result["newly_flagged"] > 0
    assert alerts.count() == scored.crashed_alerts
    assert alerts.groupBy("transaction_id").count().where("count > 1").count() == 0
    assert scored.result["rescored"] == SLICE


@pytest.mark.parametrize("as_of", ["before", "latest"])
def test_rescore_reproduces_the_stored_score(spark, scored, as_of):
    version = scored.before if as_of == "before" else None
    result = rescore_transaction(spark, scored.ctx, scored.ids[1], as_of_version=version)
    assert result["model"].endswith("/1" if as_of == "before" else "/2")
    assert abs(result["recomputed_score"] - result["stored_score"]) <= 1e-9
    assert result["match"] and result["recomputed_flag"] == result["stored_flag"]


def test_history_lists_the_known_sequence_of_writes(spark, scored):
    ctx = scored.ctx
    history = table_history(spark, ctx, SILVER_SCORED)
    versions = [h["version"] for h in history]
    assert versions == list(range(versions[0], -1, -1))  # newest first, none missing
    assert history[-1]["operation"] == "CREATE TABLE"
    assert {h["operation"] for h in history[1:-1]} <= {"ADD CONSTRAINT", "WRITE"}
    writes = [h for h in history if h["operation"] == "WRITE"]
    at_before = spark.read.option("versionAsOf", scored.before).table(scored.silver).count()
    assert sum(h["rows_inserted"] for h in writes) == at_before == ROWS
    assert all(h["writer"].startswith("fraudlake-silver-") and " batch " in h["writer"] for h in writes)
    merge = history[0]
    assert merge["operation"] == "MERGE" and merge["rows_updated"] == SLICE and merge["rows_inserted"] == 0
    assert merge["note"] == "fraudlake rescore with fraud_detector v2"


def test_changes_show_the_inserts_and_the_rescored_rows(spark, scored):
    ctx = scored.ctx
    latest = scored.result["silver_version"]
    rescored = table_changes(spark, ctx, SILVER_SCORED, latest, latest, ["transaction_id", "model_version"])
    assert sorted(rescored["transaction_id"].unique()) == sorted(scored.ids)
    assert rescored["_change_type"].value_counts().to_dict() == {"update_preimage": SLICE, "update_postimage": SLICE}
    assert set(rescored.loc[rescored["_change_type"] == "update_preimage", "model_version"]) == {"1"}
    assert set(rescored.loc[rescored["_change_type"] == "update_postimage", "model_version"]) == {"2"}
    inserts = table_changes(spark, ctx, SILVER_SCORED, 0, scored.before)
    assert set(inserts["_change_type"]) == {"insert"} and len(inserts) == ROWS
    quarantined = table_changes(spark, ctx, SILVER_QUARANTINE, 0)
    assert list(quarantined["transaction_id"]) == ["bad-amount"]
    with pytest.raises(FraudlakeError, match="no change data feed"):
        table_changes(spark, ctx, GOLD_FRAUD_ALERTS, 0)
    with pytest.raises(FraudlakeError, match="no version 999"):
        table_changes(spark, ctx, SILVER_SCORED, 0, 999)


@pytest.mark.parametrize("tid", ["x' OR '1'='1", "nope", "tx-%", "' OR 1=1 --", ""])
def test_unknown_and_injection_shaped_ids_are_not_found(spark, scored, tid):
    with pytest.raises(NotFoundError, match="not found"):
        audit_transaction(spark, scored.ctx, tid)
    with pytest.raises(NotFoundError, match="not found"):
        rescore_transaction(spark, scored.ctx, tid)


def test_quarantined_ids_and_versions_outside_the_log_are_explained(spark, scored):
    ctx = scored.ctx
    with pytest.raises(NotFoundError, match=r"in silver.quarantine \(amount not positive"):
        audit_transaction(spark, ctx, "bad-amount")
    first_write = min(h["version"] for h in table_history(spark, ctx, SILVER_SCORED) if h["operation"] == "WRITE")
    with pytest.raises(NotFoundError, match=f"not found in silver as of version {first_write - 1}: it was written"):
        audit_transaction(spark, ctx, scored.ids[0], as_of_version=first_write - 1)
    with pytest.raises(FraudlakeError, match="has no version 999 yet"):
        audit_transaction(spark, ctx, scored.ids[0], as_of_version=999)
    with pytest.raises(FraudlakeError, match="before the oldest version"):
        audit_transaction(spark, ctx, scored.ids[0], as_of_timestamp=__import__("datetime").datetime(2000, 1, 1))


def test_rescoring_again_with_the_same_model_changes_nothing(spark, scored):
    again = rescore_silver(spark, scored.ctx, ids=scored.ids)
    assert again["rescored"] == 0 and again["alerts_written"] == 0
    assert again["silver_version"] == scored.result["silver_version"] == _version(spark, scored.silver)


def test_the_cli_prints_an_audit_as_json(spark, scored, capsys):
    home = str(scored.ctx.paths.home)
    version = _version(spark, scored.silver)
    assert main(["audit", "transaction", scored.ids[0], "--home", home, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["transaction_id"], shown["model_version"]) == (scored.ids[0], "2")
    assert _version(spark, scored.silver) == version  # registering up-to-date tables commits nothing
    assert main(["audit", "transaction", "x' OR '1'='1", "--home", home]) == 4
    assert "not found" in capsys.readouterr().err
    assert main(["audit", "history", "silver.scored_transactions", "--limit", "1", "--home", home]) == 0
    assert "fraudlake rescore with fraud_detector v2" in capsys.readouterr().out
    assert main(["rescore", "--home", home]) == 1
    assert "choose the transactions to re-score" in capsys.readouterr().err


def test_maintain_compacts_and_never_vacuums_inside_the_audit_window(spark, scored, tmp_path):
    # On a copy of the module's tables: the other tests read the history as the re-score left it.
    settings = scored.ctx.settings
    ctx = Context(settings=settings, paths=Paths.of(settings, tmp_path / "home"))
    shutil.copytree(scored.ctx.paths.warehouse, ctx.paths.warehouse)
    attached(spark, ctx)
    with pytest.raises(FraudlakeError, match="below the audit window of 720 hours"):
        maintain(spark, ctx, retain_hours=719)
    report = maintain(spark, ctx, specs=(SILVER_SCORED,))
    silver = report[0]
    assert silver["files_before"] > 1 and silver["files_after"] == silver["optimize_added"] == 1
    assert silver["retain_hours"] == 720 and silver["vacuum_deleted"] == 0
    operations = [h["operation"] for h in table_history(spark, ctx, SILVER_SCORED, limit=3)]
    assert operations == ["VACUUM END", "VACUUM START", "OPTIMIZE"]
    # Every version is still readable: the files the compaction replaced are inside the window.
    old = audit_transaction(spark, ctx, scored.ids[0], as_of_version=scored.before)
    assert old["model_version"] == "1"


def test_the_command_answers_not_found_for_an_injection_shaped_id(scored, capsys):
    home = scored.ctx.paths.home
    code, out, err = fraudlake(capsys, home, "audit", "transaction", "x' OR '1'='1")
    assert code == 4, err
    assert err.strip().splitlines()[-1] == "fraudlake: error: transaction \"x' OR '1'='1\" not found"
    assert "Traceback" not in err and out == ""
    code, _, err = fraudlake(capsys, home, "maintain", "--vacuum", "--retain-hours", "1")
    assert code == 1 and "below the audit window" in err


def test_times_are_utc_whatever_the_host_zone(spark, scored, capsys):
    """Commit, row, bronze and alert times in UTC, and ``--as-of-timestamp`` the exact commit time of a
    version is that version. Off UTC (e.g. TZ=America/New_York) times collected from Spark were the
    host's local ones labelled UTC. Expected times are formatted by Spark in the UTC session."""
    from datetime import datetime, timedelta

    from fraudlake.audit import resolve_version

    ctx, tid, home = scored.ctx, scored.ids[0], str(scored.ctx.paths.home)
    iso = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"
    utc = datetime.fromisoformat  # every text compared here is a naive UTC time

    history = spark.sql(f"DESCRIBE HISTORY {scored.silver}").select("version", F.date_format("timestamp", iso))
    committed = {int(version): at for version, at in history.collect()}
    args = ["audit", "transaction", tid, "--as-of-timestamp", committed[scored.before] + "Z", "--home", home]
    assert main([*args, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["silver_version"] == scored.before
    assert utc(shown["written_at"]) == utc(committed[shown["written_in_version"]])
    earlier = utc(committed[scored.before]) - timedelta(milliseconds=1)  # naive: UTC
    assert resolve_version(spark, ctx, SILVER_SCORED, as_of_timestamp=earlier) < scored.before

    row = (
        spark.read.option("versionAsOf", scored.before)
        .table(scored.silver)
        .where(F.col("transaction_id") == tid)
        .select(*[F.date_format(c, iso).alias(c) for c in ("event_time", "scored_at", "_ingest_time")])
        .first()
    )
    for column in ("event_time", "scored_at", "_ingest_time"):
        assert utc(shown[column]) == utc(row[column]), column
    assert utc(shown["bronze"]["ingested_at"]) == utc(row["_ingest_time"])

    alert = (
        spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
        .where("alert_type = 'model'")
        .select("transaction_id", F.date_format("alert_time", iso).alias("at"))
        .first()
    )
    times = [a["alert_time"] for a in audit_transaction(spark, ctx, alert["transaction_id"])["alerts"]]
    assert utc(alert["at"]) in times

    assert (
        main(["audit", "history", "silver.scored_transactions", "--limit", "1", "--home", home, "--format", "json"])
        == 0
    )
    newest = json.loads(capsys.readouterr().out)[0]
    assert utc(newest["timestamp"]) == utc(committed[newest["version"]])
