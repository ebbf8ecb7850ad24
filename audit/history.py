"""A table's history and changes for people: ``DESCRIBE HISTORY`` and the change data feed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fraudlake.audit.versions import (
    history_rows,
    retention_hint,
    short_name,
    version_range,
)
from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming_io import parse_lineage
from fraudlake.tables import (
    ALL_TABLES,
    TableSpec,
    table_name,
)
from fraudlake.timeutil import from_row, shown_utc

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession


def writer_of(operation: str, params: dict, lineage: tuple[str, int] | None) -> str | None:
    """Who wrote a commit, from ``DESCRIBE HISTORY`` alone: Delta's streaming sink records its
    query and batch as operation parameters; fraudlake's idempotent writes (``foreachBatch``
    appends and MERGEs) record their writer id and batch in the commit's ``userMetadata``
    (``lineage``: :func:`~fraudlake.streaming_io.parse_lineage` of it)."""
    if operation == "STREAMING UPDATE" and params.get("queryId"):
        return f"query {params['queryId']} batch {params.get('epochId')}"
    return f"{lineage[0]} batch {lineage[1]}" if lineage else None


def _metric(metrics: dict, *keys: str) -> int | None:
    values = [int(metrics[k]) for k in keys if metrics.get(k) not in (None, "")]
    return sum(values) if values else None


_SHOWN_PARAMETERS = (
    "mode",
    "predicate",
    "matchedPredicates",
    "properties",
    "constraintName",
    "expr",
    "retentionCheckEnabled",
    "specifiedRetentionMillis",
    "outputMode",
)


def table_history(spark: SparkSession, ctx: Context, spec: TableSpec, limit: int | None = None) -> list[dict]:
    """``DESCRIBE HISTORY`` for people: version, time, operation, rows and files, and the writer
    (streaming query and batch, or the idempotent writer's id and batch), newest first."""
    name = table_name(ctx, spec)
    rows = history_rows(spark, name, limit)
    records = []
    for r in rows:
        params, metrics = r["operationParameters"] or {}, r["operationMetrics"] or {}
        operation = r["operation"]
        lineage = parse_lineage(r["userMetadata"])
        inserted = (
            _metric(metrics, "numTargetRowsInserted") if operation == "MERGE" else _metric(metrics, "numOutputRows")
        )
        records.append(
            {
                "version": int(r["version"]),
                "timestamp": shown_utc(from_row(r["timestamp"])),  # commit time in UTC
                "operation": operation,
                "rows_inserted": inserted,
                "rows_updated": _metric(metrics, "numTargetRowsUpdated", "numUpdatedRows"),
                "rows_deleted": _metric(metrics, "numTargetRowsDeleted", "numDeletedRows"),
                "files_added": _metric(metrics, "numFiles", "numAddedFiles", "numTargetFilesAdded"),
                "files_removed": _metric(metrics, "numRemovedFiles", "numTargetFilesRemoved"),
                "writer": writer_of(operation, params, lineage),
                "note": None if lineage else r["userMetadata"],
                "parameters": "; ".join(
                    f"{k}={params[k]}" for k in _SHOWN_PARAMETERS if params.get(k) not in (None, "", "[]")
                ),
            }
        )
    return records


def _has_change_feed(spark: SparkSession, name: str) -> bool:
    props = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    return props.get("delta.enableChangeDataFeed", "false").lower() == "true"


def table_changes(
    spark: SparkSession,
    ctx: Context,
    spec: TableSpec,
    from_version: int,
    to_version: int | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Rows inserted, updated (pre- and post-image) and deleted between two versions, inclusive,
    from the change data feed: a pandas frame, ``_commit_version`` and ``_change_type`` first."""
    name = table_name(ctx, spec)
    label = short_name(spec)
    if not _has_change_feed(spark, name):
        with_feed = ", ".join(
            short_name(s) for s in ALL_TABLES if s.properties.get("delta.enableChangeDataFeed") == "true"
        )
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
        raise FraudlakeError(
            f"version {from_version} of {label} is outside retention: the oldest kept is {oldest}"
            f"{retention_hint(ctx, spec)}"
        )
    meta = ["_commit_version", "_commit_timestamp", "_change_type"]
    try:
        changes = (
            spark.read.option("readChangeFeed", "true")
            .option("startingVersion", from_version)
            .option("endingVersion", to_version)
            .table(name)
        )
        chosen = columns or [c for c in changes.columns if c not in meta]
        unknown = [c for c in chosen if c not in changes.columns]
        if unknown:
            raise FraudlakeError(f"{label} has no column(s) {', '.join(unknown)}")
        # Pre-image before post-image within a commit, as the feed means them to be read.
        order = {"delete": 0, "update_preimage": 1, "update_postimage": 2, "insert": 3}
        frame: pd.DataFrame = changes.select(*meta, *chosen).toPandas()
    except FraudlakeError:
        raise
    except Exception as error:  # DELTA_MISSING_CHANGE_DATA: the feed was off for part of the range
        raise FraudlakeError(
            f"cannot read the change data feed of {label} for versions "
            f"{from_version}..{to_version}: {str(error).splitlines()[0]}"
        ) from None
    frame["_order"] = frame["_change_type"].map(order)
    keys = ["_commit_version", "_order"] + [c for c in ("transaction_id",) if c in frame.columns]
    return frame.sort_values(keys, kind="stable").drop(columns="_order").reset_index(drop=True)
