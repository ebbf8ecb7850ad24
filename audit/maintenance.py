"""Keeping tables small and within the audit window: ``OPTIMIZE`` and ``VACUUM … RETAIN``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from fraudlake.audit.versions import (
    commits,
    resolve_version,
    short_name,
)
from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming_io import retry_on_conflict
from fraudlake.tables import (
    ALL_TABLES,
    TableSpec,
    table_name,
)

if TYPE_CHECKING:
    from pyspark.sql import Row, SparkSession

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


def maintain(
    spark: SparkSession,
    ctx: Context,
    optimize: bool = True,
    vacuum: bool = True,
    retain_hours: float | None = None,
    specs=ALL_TABLES,
) -> list[dict]:
    """Compact small files (``OPTIMIZE``) and delete files no version within the retention still
    needs (``VACUUM … RETAIN``): one row per table with files before and after."""
    hours = check_retention(ctx, retain_hours) if vacuum else None
    report = []
    for spec in specs:
        name = table_name(ctx, spec)
        detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
        assert detail is not None  # one row per table
        before = int(detail["numFiles"])
        row = {"table": short_name(spec), "files_before": before}
        if optimize:
            # Beside running streams: a compaction that lost a race with a stream's commit is tried again.
            optimized = retry_on_conflict(partial(_optimize, spark, name))
            assert optimized is not None  # one row: the table's path and metrics
            metrics = optimized["metrics"]
            row["optimize_removed"] = int(metrics["numFilesRemoved"])
            row["optimize_added"] = int(metrics["numFilesAdded"])
        detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
        assert detail is not None
        row["files_after"] = int(detail["numFiles"])
        if vacuum:
            assert hours is not None  # set above whenever vacuum is
            row["vacuum_deleted"] = _vacuum(spark, ctx, name, hours)
            row["retain_hours"] = hours
        report.append(row)
    return report


def _optimize(spark: SparkSession, name: str) -> Row | None:
    return spark.sql(f"OPTIMIZE {name}").first()


def _vacuum(spark: SparkSession, ctx: Context, name: str, hours: float) -> int:
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
    assert last is not None  # VACUUM has just committed
    metrics = last["operationMetrics"] or {}
    return int(metrics.get("numDeletedFiles", 0)) if last["operation"] == "VACUUM END" else 0


@contextmanager
def _session_conf(spark: SparkSession, values: dict[str, str]) -> Iterator[None]:
    saved = {key: spark.conf.get(key, None) for key in values}
    for key, value in values.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, previous in saved.items():
            spark.conf.unset(key) if previous is None else spark.conf.set(key, previous)


@contextmanager
def _jvm_console_quiet(spark: SparkSession) -> Iterator[None]:
    """Delta's VACUUM prints a line with Scala's ``println`` on the JVM's stdout, which locally
    is this command's stdout: send it nowhere so results stay machine-readable. Best effort:
    where the JVM is not reachable (Spark Connect) nothing changes."""
    try:
        jvm = spark._jvm
        if jvm is None:  # a session whose JVM is gone
            raise RuntimeError("no JVM")
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


def restore_table(
    spark: SparkSession,
    ctx: Context,
    spec: TableSpec,
    as_of_version: int | None = None,
    as_of_timestamp: datetime | None = None,
) -> dict:
    """Put a table back as it was at a version (or the last one committed at a time) with
    Delta's ``RESTORE TABLE … TO VERSION AS OF``: one new commit, so the damage stays in the
    history and can itself be undone. Returns the versions and Delta's restore metrics.

    >>> restore_table(spark, ctx, GOLD_DASHBOARD_MINUTE, as_of_version=41)["restored_version"]
    41
    """
    if as_of_version is None and as_of_timestamp is None:
        raise FraudlakeError("choose the version to restore: --version N or --timestamp TS")
    name = table_name(ctx, spec)
    known = commits(spark, name)
    version = resolve_version(spark, ctx, spec, as_of_version, as_of_timestamp, known)
    latest = max(known)
    if version == latest:
        raise FraudlakeError(f"{short_name(spec)} is at version {latest} already: nothing to restore")
    metrics = spark.sql(f"RESTORE TABLE {name} TO VERSION AS OF {version}").first()
    assert metrics is not None  # RESTORE returns one row of metrics
    return {
        "table": short_name(spec),
        "restored_version": version,
        "was_version": latest,
        "new_version": max(commits(spark, name)),
        "files_restored": int(metrics["num_restored_files"]),
        "files_removed": int(metrics["num_removed_files"]),
    }
