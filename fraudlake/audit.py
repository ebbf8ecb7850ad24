"""Audits from Delta's own history: how a transaction was scored, by which model, and what changed.

Every function takes the Spark session and the context and reads the registered
tables: a row as it was at a table version (time travel), the commit that wrote
it (the change data feed), the bronze record it came from, the alerts that point
at it, and a table's history and changes. Identifiers from users are compared
as literal values (``F.lit``), never formatted into SQL. Times in results are UTC
without an offset (as Spark SQL shows them in the UTC session), whatever the host's
time zone: collected times go through :mod:`fraudlake.timeutil`.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fraudlake.errors import FraudlakeError, NotFoundError
from fraudlake.settings import Context
from fraudlake.tables import (
    ALL_TABLES,
    BRONZE_COLUMNS,
    BRONZE_TRANSACTIONS,
    GOLD_FRAUD_ALERTS,
    SILVER_SCORED,
    TableSpec,
    table_name,
    table_properties,
)
from fraudlake.timeutil import from_row, given_utc, row_in_utc, shown_utc

# Silver columns an audit shows first, in this order (then the rest of the row).
DECISION_COLUMNS = ("fraud_score", "is_flagged", "flag_threshold", "model_name", "model_version", "scored_at")
INSERTED = ("insert", "update_postimage")  # change types that leave a row in the table
SCORE_TOLERANCE = 1e-9
# A user-activity alert is timed at the newest transaction of its window, which lasts this long.
ACTIVITY_WINDOW = timedelta(minutes=5)


def short_name(spec: TableSpec) -> str:
    return f"{spec.layer}.{spec.name}"


def resolve_table(ctx: Context, text: str) -> TableSpec:
    """A table from ``silver.scored_transactions``, ``scored_transactions`` or its full name."""
    wanted = text.strip().lower()
    for spec in ALL_TABLES:
        full = table_name(ctx, spec)
        names = {full.lower(), full.split(".", 1)[1].lower(), short_name(spec), spec.name}
        if wanted in names:
            return spec
    choices = ", ".join(short_name(spec) for spec in ALL_TABLES)
    raise FraudlakeError(f"unknown table {text!r}: choose from {choices}")


# ----------------------------------------------------------------------------- versions


def _history(spark, name: str, limit: int | None = None):
    """``DESCRIBE HISTORY`` rows, newest first (what the retained log still holds)."""
    return spark.sql(f"DESCRIBE HISTORY {name}" + (f" LIMIT {int(limit)}" if limit else "")).collect()


def commits(spark, name: str) -> dict[int, tuple[datetime, str]]:
    """Version -> (commit time in UTC, operation) for every version the table's log still holds."""
    rows = spark.sql(f"DESCRIBE HISTORY {name}").select("version", "timestamp", "operation").collect()
    # A collected timestamp is the host's local time, not UTC: convert, never relabel.
    return {int(r["version"]): (from_row(r["timestamp"]), r["operation"]) for r in rows}


def version_range(spark, name: str, known: dict | None = None) -> tuple[int, int]:
    """The oldest and the newest version the table's log still holds."""
    versions = list(known or commits(spark, name))
    return min(versions), max(versions)


def _retention_hint(ctx: Context, spec: TableSpec) -> str:
    prop = table_properties(ctx, spec).get("delta.logRetentionDuration")
    return f" (versions are kept for {prop.removeprefix('interval ')})" if prop else ""


def resolve_version(spark, ctx: Context, spec: TableSpec, as_of_version: int | None = None,
                    as_of_timestamp: datetime | None = None, known: dict | None = None) -> int:
    """The table version to read: the given one, the last one committed at or before the
    timestamp (Delta's ``TIMESTAMP AS OF``), or the latest. A clear error outside what is kept."""
    known = known or commits(spark, table_name(ctx, spec))
    oldest, latest = min(known), max(known)
    label = short_name(spec)
    if as_of_version is not None:
        if as_of_version > latest:
            raise FraudlakeError(f"{label} has no version {as_of_version} yet: its latest is {latest}")
        if as_of_version < oldest:
            raise FraudlakeError(
                f"version {as_of_version} of {label} is outside retention: the oldest kept is {oldest}"
                f"{_retention_hint(ctx, spec)}"
            )
        return as_of_version
    if as_of_timestamp is not None:
        when = given_utc(as_of_timestamp)  # naive: UTC, as --as-of-timestamp documents
        if when > datetime.now(timezone.utc):
            raise FraudlakeError(f"{when.isoformat()} is in the future")
        before = [version for version, (committed, _) in known.items() if committed <= when]
        if not before:
            first = known[oldest][0]
            raise FraudlakeError(
                f"{when.isoformat()} is before the oldest version of {label} still kept (version {oldest}, "
                f"committed {first.isoformat()}){_retention_hint(ctx, spec)}"
            )
        return max(before)
    return latest


def _read_failed(error: Exception, label: str, version: int) -> FraudlakeError:
    text = str(error)
    if "FileNotFound" in text or "FILE_NOT_FOUND" in text or "does not exist" in text:
        return FraudlakeError(
            f"version {version} of {label} can no longer be read: its data files were vacuumed "
            "(older than the audit window)"
        )
    return FraudlakeError(f"cannot read version {version} of {label}: {text.splitlines()[0]}")


# ----------------------------------------------------------------------------- one transaction


def _silver_frame(spark, ctx: Context, transaction_id: str, version: int):
    """Silver rows of one id at a version (``VERSION AS OF``). The id is compared as a literal
    value, never parsed as SQL (a named parameter would be lost in the time-travel rewrite)."""
    from pyspark.sql import functions as F

    return (
        spark.read.option("versionAsOf", version).table(table_name(ctx, SILVER_SCORED))
        .where(F.col("transaction_id") == F.lit(transaction_id)).orderBy(F.col("scored_at").desc())
    )


def _silver_rows(spark, ctx: Context, transaction_id: str, version: int):
    try:
        return _silver_frame(spark, ctx, transaction_id, version).collect()
    except Exception as error:  # Py4J/Analysis errors from a vacuumed version
        raise _read_failed(error, short_name(SILVER_SCORED), version) from None


def written_in_version(spark, ctx: Context, transaction_id: str, version: int, known: dict | None = None) -> int | None:
    """The silver version whose commit wrote the row as it is at ``version`` (insert or update),
    from the change data feed; None where the feed no longer reaches back to it."""
    from pyspark.sql import functions as F

    name = table_name(ctx, SILVER_SCORED)
    oldest, _ = version_range(spark, name, known)
    try:
        changes = (
            spark.read.option("readChangeFeed", "true").option("startingVersion", oldest)
            .option("endingVersion", version).table(name)
            .where((F.col("transaction_id") == F.lit(transaction_id)) & F.col("_change_type").isin(*INSERTED))
            .agg(F.max("_commit_version")).first()[0]
        )
    except Exception:  # change data of vacuumed versions: the audit still shows the row
        return None
    return int(changes) if changes is not None else None


def _bronze_record(spark, ctx: Context, transaction_id: str) -> dict | None:
    """The bronze row: its text as received (``_raw``) or, for the simulator, its columns as JSON."""
    from pyspark.sql import functions as F

    columns = [c.split()[0] for c in BRONZE_COLUMNS.strip().split(",\n")]
    typed = [c for c in columns if not c.startswith("_")]
    row = (
        spark.table(table_name(ctx, BRONZE_TRANSACTIONS))
        .where(F.col("transaction_id") == F.lit(transaction_id))
        .select(F.coalesce("_raw", F.to_json(F.struct(*typed))).alias("record"), "_raw", "_source", "_ingest_time")
        .orderBy("_ingest_time")
        .first()
    )
    if row is None:
        return None
    return {"record": row["record"], "as_received": row["_raw"] is not None, "source": row["_source"],
            "ingested_at": shown_utc(from_row(row["_ingest_time"]))}


def _alerts(spark, ctx: Context, transaction_id: str, user_id: str | None, event_time: datetime | None) -> list[dict]:
    """Model alerts on this transaction, and user-activity alerts whose window held it.
    ``event_time`` is aware (UTC): ``F.lit`` would read a naive one as the host's local time."""
    from pyspark.sql import functions as F

    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
    this = F.col("transaction_id") == F.lit(transaction_id)
    if user_id is not None and event_time is not None:
        window = (
            (F.col("alert_type") == F.lit("user_activity")) & (F.col("user_id") == F.lit(user_id))
            & (F.col("alert_time") >= F.lit(event_time)) & (F.col("alert_time") < F.lit(event_time + ACTIVITY_WINDOW))
        )
        this = this | window
    rows = alerts.where(this).orderBy("alert_time").collect()
    return [row_in_utc({k: row[k] for k in ("alert_type", "alert_time", "fraud_score", "reason")}) for row in rows]


def audit_transaction(spark, ctx: Context, transaction_id: str, as_of_version: int | None = None,
                      as_of_timestamp: datetime | None = None) -> dict:
    """How one transaction was scored, as silver held it at a version (default: the latest)."""
    known = commits(spark, table_name(ctx, SILVER_SCORED))
    version = resolve_version(spark, ctx, SILVER_SCORED, as_of_version, as_of_timestamp, known)
    rows = _silver_rows(spark, ctx, transaction_id, version)
    if not rows:
        raise NotFoundError(_not_found(spark, ctx, transaction_id, version, as_of_version is not None or as_of_timestamp is not None, known))
    collected = rows[0].asDict()
    row = row_in_utc(collected)  # times shown as naive UTC, like Spark SQL in the UTC session
    wrote = written_in_version(spark, ctx, transaction_id, version, known)
    committed, operation = known.get(wrote, (None, None))
    result = {
        "transaction_id": transaction_id,
        "silver_version": version,
        "written_in_version": wrote,
        "written_at": shown_utc(committed),  # UTC, like the row's times
        "written_by": operation,
        **{k: row.get(k) for k in DECISION_COLUMNS},
        **{k: v for k, v in row.items() if k not in DECISION_COLUMNS and k != "transaction_id" and k != "_raw"},
    }
    if len(rows) > 1:
        result["silver_rows_with_this_id"] = len(rows)
    result["bronze"] = _bronze_record(spark, ctx, transaction_id)
    result["alerts"] = _alerts(spark, ctx, transaction_id, row.get("user_id"), from_row(collected.get("event_time")))
    return result


def _not_found(spark, ctx: Context, transaction_id: str, version: int, as_of: bool, known: dict | None = None) -> str:
    """'not found', with where the id is when it exists elsewhere (later, or only in quarantine)."""
    from pyspark.sql import functions as F

    from fraudlake.tables import SILVER_QUARANTINE

    shown = json.dumps(transaction_id)
    if as_of:
        latest = version_range(spark, table_name(ctx, SILVER_SCORED), known)[1]
        later = written_in_version(spark, ctx, transaction_id, latest, known)
        if later is not None and later > version:
            return f"transaction {shown} not found in silver as of version {version}: it was written in version {later}"
    quarantined = (
        spark.table(table_name(ctx, SILVER_QUARANTINE)).where(F.col("transaction_id") == F.lit(transaction_id))
        .select("quarantine_reason").first()
    )
    if quarantined is not None:
        return f"transaction {shown} not found in silver: it is in silver.quarantine ({quarantined[0]})"
    return f"transaction {shown} not found"


def rescore_transaction(spark, ctx: Context, transaction_id: str, as_of_version: int | None = None,
                        as_of_timestamp: datetime | None = None) -> dict:
    """Score the transaction's recorded features again with the model version recorded beside
    them, loaded from the registry; stored and recomputed scores side by side."""
    from fraudlake.ml.features import MODEL_INPUT_COLUMNS, add_amount_features
    from fraudlake.ml.registry import mlflow_client, resolve_model

    version = resolve_version(spark, ctx, SILVER_SCORED, as_of_version, as_of_timestamp)
    rows = _silver_rows(spark, ctx, transaction_id, version)
    if not rows:
        raise NotFoundError(_not_found(spark, ctx, transaction_id, version, as_of_version is not None or as_of_timestamp is not None))
    row = rows[0]
    name, model_version = row["model_name"], row["model_version"]
    if not name or not model_version:
        raise FraudlakeError(f"transaction {json.dumps(transaction_id)} was scored by a model outside the registry "
                             "(no model name and version recorded): it cannot be re-scored")
    ref = resolve_model(mlflow_client(ctx), f"models:/{name}/{model_version}")
    import mlflow

    model = mlflow.pyfunc.load_model(ref.uri)
    # The stored row: its time features as recorded, the amount features derived from its
    # stored amount and currency exactly as the stream derived them.
    stored = _silver_frame(spark, ctx, transaction_id, version).limit(1)
    features = add_amount_features(stored).select(*MODEL_INPUT_COLUMNS).toPandas()
    recomputed = float(model.predict(features)[0])
    threshold = row["flag_threshold"]
    if threshold is None:  # rows written before silver recorded the threshold: the model's own
        threshold = float((mlflow.models.get_model_info(ref.uri).metadata or {})["flag_threshold"])
    stored_score = row["fraud_score"]
    difference = abs(recomputed - stored_score) if stored_score is not None else None
    return {
        "transaction_id": transaction_id,
        "silver_version": version,
        "model": ref.uri,
        "stored_score": stored_score,
        "recomputed_score": recomputed,
        "difference": difference,
        "stored_flag": row["is_flagged"],
        "recomputed_flag": recomputed >= threshold,
        "flag_threshold": threshold,
        "match": difference is not None and difference <= SCORE_TOLERANCE and bool(row["is_flagged"]) == (recomputed >= threshold),
    }


# ----------------------------------------------------------------------------- tables


def _local_log_dir(spark, name: str) -> Path | None:
    location = spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
    if "://" in location and not location.startswith("file:"):
        return None  # object storage: the commit files are not read here
    path = Path(location.removeprefix("file://").removeprefix("file:")) / "_delta_log"
    return path if path.is_dir() else None


def _txn(log_dir: Path | None, version: int) -> dict | None:
    """The idempotent-write marker (``txn``: app id and batch) of a foreachBatch commit, if any."""
    if log_dir is None:
        return None
    commit = log_dir / f"{version:020d}.json"
    if not commit.exists():
        return None
    for line in commit.read_text().splitlines():
        action = json.loads(line) if line.strip() else {}
        if "txn" in action:
            return action["txn"]
    return None


def _writer(operation: str, params: dict, txn: dict | None) -> str | None:
    if operation == "STREAMING UPDATE" and params.get("queryId"):
        return f"query {params['queryId']} batch {params.get('epochId')}"
    if txn:
        return f"{txn.get('appId')} batch {txn.get('version')}"
    return None


def _metric(metrics: dict, *keys: str) -> int | None:
    values = [int(metrics[k]) for k in keys if metrics.get(k) not in (None, "")]
    return sum(values) if values else None


_SHOWN_PARAMETERS = ("mode", "predicate", "matchedPredicates", "properties", "constraintName", "expr", "retentionCheckEnabled",
                     "specifiedRetentionMillis", "outputMode")


def table_history(spark, ctx: Context, spec: TableSpec, limit: int | None = None) -> list[dict]:
    """``DESCRIBE HISTORY`` for people: version, time, operation, rows and files, and the writer
    (streaming query and batch, or the idempotent writer's id and batch), newest first."""
    name = table_name(ctx, spec)
    rows = _history(spark, name, limit)
    log_dir = _local_log_dir(spark, name)
    records = []
    for r in rows:
        params, metrics = r["operationParameters"] or {}, r["operationMetrics"] or {}
        operation = r["operation"]
        inserted = _metric(metrics, "numTargetRowsInserted") if operation == "MERGE" else _metric(metrics, "numOutputRows")
        records.append({
            "version": int(r["version"]),
            "timestamp": shown_utc(from_row(r["timestamp"])),  # commit time in UTC
            "operation": operation,
            "rows_inserted": inserted,
            "rows_updated": _metric(metrics, "numTargetRowsUpdated", "numUpdatedRows"),
            "rows_deleted": _metric(metrics, "numTargetRowsDeleted", "numDeletedRows"),
            "files_added": _metric(metrics, "numFiles", "numAddedFiles", "numTargetFilesAdded"),
            "files_removed": _metric(metrics, "numRemovedFiles", "numTargetFilesRemoved"),
            "writer": _writer(operation, params, _txn(log_dir, int(r["version"]))),
            "note": r["userMetadata"],
            "parameters": "; ".join(f"{k}={params[k]}" for k in _SHOWN_PARAMETERS if params.get(k) not in (None, "", "[]")),
        })
    return records


def _has_change_feed(spark, name: str) -> bool:
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    return props.get("delta.enableChangeDataFeed", "false").lower() == "true"


def table_changes(spark, ctx: Context, spec: TableSpec, from_version: int, to_version: int | None = None,
                  columns: list[str] | None = None):
    """Rows inserted, updated (pre- and post-image) and deleted between two versions, inclusive,
    from the change data feed: a pandas frame, ``_commit_version`` and ``_change_type`` first."""
    name = table_name(ctx, spec)
    label = short_name(spec)
    if not _has_change_feed(spark, name):
        with_feed = ", ".join(short_name(s) for s in ALL_TABLES if s.properties.get("delta.enableChangeDataFeed") == "true")
        raise FraudlakeError(
            f"{label} has no change data feed (tables with one: {with_feed}); "
            f"compare versions with fraudlake audit history or VERSION AS OF instead"
        )
    oldest, latest = version_range(spark, name)
    to_version = latest if to_version is None else to_version
    if from_version > to_version:
        raise FraudlakeError(f"--from-version {from_version} is after --to-version {to_version}")
    if to_version > latest:
        raise FraudlakeError(f"{label} has no version {to_version} yet: its latest is {latest}")
    if from_version < oldest:
        raise FraudlakeError(f"version {from_version} of {label} is outside retention: the oldest kept is {oldest}"
                             f"{_retention_hint(ctx, spec)}")
    meta = ["_commit_version", "_commit_timestamp", "_change_type"]
    try:
        changes = (
            spark.read.option("readChangeFeed", "true").option("startingVersion", from_version)
            .option("endingVersion", to_version).table(name)
        )
        chosen = columns or [c for c in changes.columns if c not in meta]
        unknown = [c for c in chosen if c not in changes.columns]
        if unknown:
            raise FraudlakeError(f"{label} has no column(s) {', '.join(unknown)}")
        # Pre-image before post-image within a commit, as the feed means them to be read.
        order = {"delete": 0, "update_preimage": 1, "update_postimage": 2, "insert": 3}
        frame = changes.select(*meta, *chosen).toPandas()
    except FraudlakeError:
        raise
    except Exception as error:  # DELTA_MISSING_CHANGE_DATA: the feed was off for part of the range
        raise FraudlakeError(f"cannot read the change data feed of {label} for versions "
                             f"{from_version}..{to_version}: {str(error).splitlines()[0]}") from None
    frame["_order"] = frame["_change_type"].map(order)
    keys = ["_commit_version", "_order"] + [c for c in ("transaction_id",) if c in frame.columns]
    return frame.sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)


# ----------------------------------------------------------------------------- maintenance


def audit_window_hours(ctx: Context) -> float:
    return ctx.settings.audit.deleted_file_retention_days * 24.0


def check_retention(ctx: Context, retain_hours: float | None) -> float:
    """The vacuum retention to use: the audit window by default, never less."""
    window = audit_window_hours(ctx)
    if retain_hours is None:
        return window
    if retain_hours < window:
        days = ctx.settings.audit.deleted_file_retention_days
        raise FraudlakeError(
            f"refusing to vacuum with --retain-hours {retain_hours:g}: below the audit window of {window:g} hours "
            f"(audit.deleted_file_retention_days: {days}); older versions would no longer be readable"
        )
    return retain_hours


def maintain(spark, ctx: Context, optimize: bool = True, vacuum: bool = True, retain_hours: float | None = None,
             specs=ALL_TABLES) -> list[dict]:
    """Compact small files (``OPTIMIZE``) and delete files no version within the retention still
    needs (``VACUUM … RETAIN``): one row per table with files before and after."""
    hours = check_retention(ctx, retain_hours) if vacuum else None
    report = []
    for spec in specs:
        name = table_name(ctx, spec)
        before = int(spark.sql(f"DESCRIBE DETAIL {name}").first()["numFiles"])
        row = {"table": short_name(spec), "files_before": before}
        if optimize:
            metrics = spark.sql(f"OPTIMIZE {name}").first()["metrics"]
            row["optimize_removed"] = int(metrics["numFilesRemoved"])
            row["optimize_added"] = int(metrics["numFilesAdded"])
        row["files_after"] = int(spark.sql(f"DESCRIBE DETAIL {name}").first()["numFiles"])
        if vacuum:
            row["vacuum_deleted"] = _vacuum(spark, ctx, name, hours)
            row["retain_hours"] = hours
        report.append(row)
    return report


def _vacuum(spark, ctx: Context, name: str, hours: float) -> int:
    """``VACUUM`` one table; returns the files it deleted (from its ``VACUUM END`` history entry)."""
    conf = {
        # VACUUM lists the table's folder with this many tasks; Spark's default (10,000) is
        # for clusters listing huge tables and takes minutes on a laptop.
        "spark.sql.sources.parallelPartitionDiscovery.parallelism": str(ctx.settings.spark.shuffle_partitions),
        # Record VACUUM START / VACUUM END (with the files deleted) in the table's history.
        "spark.databricks.delta.vacuum.logging.enabled": "true",
    }
    with _session_conf(spark, conf), _jvm_console_quiet(spark):
        spark.sql(f"VACUUM {name} RETAIN {hours:g} HOURS").collect()
    last = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    metrics = last["operationMetrics"] or {}
    return int(metrics.get("numDeletedFiles", 0)) if last["operation"] == "VACUUM END" else 0


@contextmanager
def _session_conf(spark, values: dict[str, str]):
    saved = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


@contextmanager
def _jvm_console_quiet(spark):
    """Delta's VACUUM prints a line with Scala's ``println`` on the JVM's stdout, which locally
    is this command's stdout: send it nowhere so results stay machine-readable. Best effort:
    where the JVM is not reachable (Spark Connect) nothing changes."""
    try:
        jvm = spark._jvm
        console = jvm.java.lang.Class.forName("scala.Console$")
        field = console.getDeclaredField("outVar")
        field.setAccessible(True)
        out = field.get(console.getField("MODULE$").get(None))
        saved, set_out = out.value(), getattr(out, "value_$eq")
        set_out(jvm.java.io.PrintStream(jvm.java.io.ByteArrayOutputStream()))
    except Exception:  # noqa: BLE001 - no JVM access: leave the console as it is
        yield
        return
    try:
        yield
    finally:
        set_out(saved)
