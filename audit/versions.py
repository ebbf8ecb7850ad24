"""Table versions an audit may read: what the Delta log still holds, chosen by version or time."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.tables import (
    ALL_TABLES,
    TableSpec,
    table_name,
    table_properties,
)
from fraudlake.timeutil import from_row, given_utc

if TYPE_CHECKING:
    from pyspark.sql import Row, SparkSession


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


def history_rows(spark: SparkSession, name: str, limit: int | None = None) -> list[Row]:
    """``DESCRIBE HISTORY`` rows, newest first (what the retained log still holds)."""
    return spark.sql(f"DESCRIBE HISTORY {name}" + (f" LIMIT {int(limit)}" if limit else "")).collect()


def commits(spark: SparkSession, name: str) -> dict[int, tuple[datetime, str]]:
    """Version -> (commit time in UTC, operation) for every version the table's log still holds."""
    rows = spark.sql(f"DESCRIBE HISTORY {name}").select("version", "timestamp", "operation").collect()
    # A collected timestamp is the host's local time, not UTC: convert, never relabel.
    return {int(r["version"]): (from_row(r["timestamp"]), r["operation"]) for r in rows}


def version_range(spark: SparkSession, name: str, known: dict | None = None) -> tuple[int, int]:
    """The oldest and the newest version the table's log still holds."""
    versions = list(known or commits(spark, name))
    return min(versions), max(versions)


def retention_hint(ctx: Context, spec: TableSpec) -> str:
    prop = table_properties(ctx, spec).get("delta.logRetentionDuration")
    return f" (versions are kept for {prop.removeprefix('interval ')})" if prop else ""


def resolve_version(
    spark: SparkSession,
    ctx: Context,
    spec: TableSpec,
    as_of_version: int | None = None,
    as_of_timestamp: datetime | None = None,
    known: dict | None = None,
) -> int:
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
                f"{retention_hint(ctx, spec)}"
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
                f"committed {first.isoformat()}){retention_hint(ctx, spec)}"
            )
        return max(before)
    return latest


def read_failed(error: Exception, label: str, version: int) -> FraudlakeError:
    text = str(error)
    if "FileNotFound" in text or "FILE_NOT_FOUND" in text or "does not exist" in text:
        return FraudlakeError(
            f"version {version} of {label} can no longer be read: its data files were vacuumed "
            "(older than the audit window)"
        )
    return FraudlakeError(f"cannot read version {version} of {label}: {text.splitlines()[0]}")
