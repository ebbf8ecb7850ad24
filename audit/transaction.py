"""How one transaction was scored: its silver row at a table version (time travel), the commit
that wrote it (the change data feed), the bronze record it came from, the alerts that point
at it, and its score recomputed with the recorded model.

Identifiers from users are compared as literal values (``F.lit``), never formatted into SQL.
Times in results are UTC without an offset (as Spark SQL shows them in the UTC session),
whatever the host's time zone: collected times go through :mod:`fraudlake.timeutil`.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from fraudlake.audit.versions import (
    commits,
    read_failed,
    resolve_version,
    short_name,
    version_range,
)
from fraudlake.errors import FraudlakeError, NotFoundError
from fraudlake.settings import Context
from fraudlake.tables import (
    BRONZE_COLUMNS,
    BRONZE_TRANSACTIONS,
    GOLD_FRAUD_ALERTS,
    SILVER_SCORED,
    table_name,
)
from fraudlake.timeutil import from_row, row_in_utc, shown_utc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, Row, SparkSession

# Silver columns an audit shows first, in this order (then the rest of the row).
DECISION_COLUMNS = ("fraud_score", "is_flagged", "flag_threshold", "model_name", "model_version", "scored_at")
INSERTED = ("insert", "update_postimage")  # change types that leave a row in the table
SCORE_TOLERANCE = 1e-9
# A user-activity alert is timed at the newest transaction of its window, which lasts this long.
ACTIVITY_WINDOW = timedelta(minutes=5)


# ----------------------------------------------------------------------------- one transaction


def _silver_frame(spark: SparkSession, ctx: Context, transaction_id: str, version: int) -> DataFrame:
    """Silver rows of one id at a version (``VERSION AS OF``). The id is compared as a literal
    value, never parsed as SQL (a named parameter would be lost in the time-travel rewrite)."""
    from pyspark.sql import functions as F

    return (
        spark.read.option("versionAsOf", version)
        .table(table_name(ctx, SILVER_SCORED))
        .where(F.col("transaction_id") == F.lit(transaction_id))
        .orderBy(F.col("scored_at").desc())
    )


def _silver_rows(spark: SparkSession, ctx: Context, transaction_id: str, version: int) -> list[Row]:
    try:
        return _silver_frame(spark, ctx, transaction_id, version).collect()
    except Exception as error:  # Py4J/Analysis errors from a vacuumed version
        raise read_failed(error, short_name(SILVER_SCORED), version) from None


def written_in_version(
    spark: SparkSession, ctx: Context, transaction_id: str, version: int, known: dict | None = None
) -> int | None:
    """The silver version whose commit wrote the row as it is at ``version`` (insert or update),
    from the change data feed; None where the feed no longer reaches back to it."""
    from pyspark.sql import functions as F

    name = table_name(ctx, SILVER_SCORED)
    oldest, _ = version_range(spark, name, known)
    try:
        written = (
            spark.read.option("readChangeFeed", "true")
            .option("startingVersion", oldest)
            .option("endingVersion", version)
            .table(name)
            .where((F.col("transaction_id") == F.lit(transaction_id)) & F.col("_change_type").isin(*INSERTED))
            .agg(F.max("_commit_version"))
            .first()
        )
        assert written is not None  # an aggregate without grouping has one row
        changes = written[0]
    except Exception:  # change data of vacuumed versions: the audit still shows the row
        return None
    return int(changes) if changes is not None else None


def _bronze_record(spark: SparkSession, ctx: Context, transaction_id: str) -> dict | None:
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
    return {
        "record": row["record"],
        "as_received": row["_raw"] is not None,
        "source": row["_source"],
        "ingested_at": shown_utc(from_row(row["_ingest_time"])),
    }


def _alerts(
    spark: SparkSession, ctx: Context, transaction_id: str, user_id: str | None, event_time: datetime | None
) -> list[dict]:
    """Model alerts on this transaction, and user-activity alerts whose window held it.
    ``event_time`` is aware (UTC): ``F.lit`` would read a naive one as the host's local time."""
    from pyspark.sql import functions as F

    alerts = spark.table(table_name(ctx, GOLD_FRAUD_ALERTS))
    this = F.col("transaction_id") == F.lit(transaction_id)
    if user_id is not None and event_time is not None:
        window = (
            (F.col("alert_type") == F.lit("user_activity"))
            & (F.col("user_id") == F.lit(user_id))
            & (F.col("alert_time") >= F.lit(event_time))
            & (F.col("alert_time") < F.lit(event_time + ACTIVITY_WINDOW))
        )
        this = this | window
    rows = alerts.where(this).orderBy("alert_time").collect()
    return [row_in_utc({k: row[k] for k in ("alert_type", "alert_time", "fraud_score", "reason")}) for row in rows]


def audit_transaction(
    spark: SparkSession,
    ctx: Context,
    transaction_id: str,
    as_of_version: int | None = None,
    as_of_timestamp: datetime | None = None,
) -> dict:
    """How one transaction was scored, as silver held it at a version (default: the latest)."""
    known = commits(spark, table_name(ctx, SILVER_SCORED))
    version = resolve_version(spark, ctx, SILVER_SCORED, as_of_version, as_of_timestamp, known)
    rows = _silver_rows(spark, ctx, transaction_id, version)
    if not rows:
        raise NotFoundError(
            _not_found(
                spark, ctx, transaction_id, version, as_of_version is not None or as_of_timestamp is not None, known
            )
        )
    collected = rows[0].asDict()
    row = row_in_utc(collected)  # times shown as naive UTC, like Spark SQL in the UTC session
    wrote = written_in_version(spark, ctx, transaction_id, version, known)
    committed, operation = known.get(wrote, (None, None)) if wrote is not None else (None, None)
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


def _not_found(
    spark: SparkSession, ctx: Context, transaction_id: str, version: int, as_of: bool, known: dict | None = None
) -> str:
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
        spark.table(table_name(ctx, SILVER_QUARANTINE))
        .where(F.col("transaction_id") == F.lit(transaction_id))
        .select("quarantine_reason")
        .first()
    )
    if quarantined is not None:
        return f"transaction {shown} not found in silver: it is in silver.quarantine ({quarantined[0]})"
    return f"transaction {shown} not found"


def rescore_transaction(
    spark: SparkSession,
    ctx: Context,
    transaction_id: str,
    as_of_version: int | None = None,
    as_of_timestamp: datetime | None = None,
) -> dict:
    """Score the transaction's recorded features again with the model version recorded beside
    them, loaded from the registry; stored and recomputed scores side by side."""
    from fraudlake.ml.features import MODEL_INPUT_COLUMNS, add_amount_features
    from fraudlake.ml.registry import mlflow_client, resolve_model

    version = resolve_version(spark, ctx, SILVER_SCORED, as_of_version, as_of_timestamp)
    rows = _silver_rows(spark, ctx, transaction_id, version)
    if not rows:
        raise NotFoundError(
            _not_found(spark, ctx, transaction_id, version, as_of_version is not None or as_of_timestamp is not None)
        )
    row = rows[0]
    name, model_version = row["model_name"], row["model_version"]
    if not name or not model_version:
        raise FraudlakeError(
            f"transaction {json.dumps(transaction_id)} was scored by a model outside the registry "
            "(no model name and version recorded): it cannot be re-scored"
        )
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
        "match": difference is not None
        and difference <= SCORE_TOLERANCE
        and bool(row["is_flagged"]) == (recomputed >= threshold),
    }
