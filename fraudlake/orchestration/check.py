"""``fraudlake check``: the lakehouse's invariants, verified from its tables, one result per check.

Each check reads the registered tables (and the MLflow registry for model versions) and
says what it counted. It commits nothing, so it can run beside the streams; rows that the
streams have not reached yet are counted as a backlog, not as an error:

- ``bronze = silver + quarantine``: per source, every bronze row is in exactly one of the two
  silver tables (compared as multisets of ``transaction_id``). A bronze row in neither is
  *not yet routed* when it was ingested after every row silver has routed, and *missing*
  otherwise.
- ``one score per transaction``: no ``transaction_id`` twice in ``silver.scored_transactions``.
- ``lineage``: every silver row names its model, version, score, threshold and scoring time,
  and every model version it names is in the registry.
- ``gold minutes`` / ``gold user minutes``: ``gold.dashboard_minute`` and the per-user minutes
  behind ``gold.user_activity_5m`` equal a recomputation from the silver rows gold has counted:
  those of the silver version its checkpoint says it has read, less the rows it recorded in
  ``gold.late_transactions`` (later than the watermark: by design in no window). Rows gold
  has not read yet are reported, not compared. Flags and amounts are compared where no row
  was re-scored after gold wrote the minute (gold keeps the flags it counted).
- ``alerts unique``: no alert twice; ``labels unique``: one label per transaction and verdict.
- ``retention``: silver and gold keep the audit window of the conf (``audit.*_retention_days``).

By default the gold checks cover the newest :data:`RECENT_HOURS` of silver's event time;
``full=True`` covers everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fraudlake.errors import first_line
from fraudlake.gold.aggregates import user_minute_totals
from fraudlake.tables import (
    BRONZE_LABEL_QUARANTINE,
    BRONZE_LABELS,
    BRONZE_TRANSACTIONS,
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_LATE,
    GOLD_USER_MINUTE,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    current_properties,
    table_name,
    table_properties,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from fraudlake.settings import Context

# The gold checks' default range: the newest day of silver's event time.
RECENT_HOURS = 24
# Amounts are sums of doubles added up in another order by gold: equal to this relative tolerance.
AMOUNT_TOLERANCE = 1e-6
LINEAGE_COLUMNS = ("model_name", "model_version", "fraud_score", "flag_threshold", "scored_at")


@dataclass(frozen=True)
class CheckResult:
    """One invariant: whether it holds, a line with the numbers, and the numbers themselves."""

    check: str
    ok: bool
    details: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        return {"check": self.check, "status": "ok" if self.ok else "FAIL", "details": self.details, **self.numbers}


def check_lakehouse(spark: SparkSession, ctx: Context, full: bool = False) -> list[CheckResult]:
    """Verify the lakehouse's invariants (see the module's docstring); the tables must exist.

    >>> [r.check for r in check_lakehouse(spark, ctx) if not r.ok]
    []
    """
    return [
        routed_once(spark, ctx),
        scored_once(spark, ctx),
        lineage(spark, ctx),
        *gold_against_silver(spark, ctx, full),
        alerts_unique(spark, ctx),
        labels_unique(spark, ctx),
        retention(spark, ctx),
    ]


def _table(spark: SparkSession, ctx: Context, spec) -> DataFrame:
    return spark.table(table_name(ctx, spec))


def routed_once(spark: SparkSession, ctx: Context) -> CheckResult:
    """Per source: bronze rows, silver rows, quarantined rows, and bronze rows in neither or in excess."""
    from pyspark.sql import functions as F

    keys = ["_source", "transaction_id"]
    bronze = (
        _table(spark, ctx, BRONZE_TRANSACTIONS)
        .groupBy(*keys)
        .agg(F.count("*").alias("bronze"), F.max("_ingest_time").alias("ingested"))
    )
    scored = _table(spark, ctx, SILVER_SCORED).select(
        *keys, "_ingest_time", F.lit(1).alias("silver"), F.lit(0).alias("quarantine")
    )
    quarantined = _table(spark, ctx, SILVER_QUARANTINE).select(
        *keys, "_ingest_time", F.lit(0).alias("silver"), F.lit(1).alias("quarantine")
    )
    routed_rows = scored.unionByName(quarantined)
    # Epoch microseconds, not a collected timestamp: a naive local datetime would go through
    # the host's zone on its way back (an hour off around a DST change).
    newest_routed = routed_rows.agg(F.max(F.unix_micros("_ingest_time")).alias("t")).first()
    routed = routed_rows.groupBy(*keys).agg(F.sum("silver").alias("silver"), F.sum("quarantine").alias("quarantine"))
    joined = bronze.alias("b").join(
        routed.alias("r"),
        (F.col("b._source").eqNullSafe(F.col("r._source")))
        & (F.col("b.transaction_id").eqNullSafe(F.col("r.transaction_id"))),
        "full_outer",
    )
    zero = F.lit(0)
    b, s, q = (F.coalesce(F.col(c), zero) for c in ("b.bronze", "r.silver", "r.quarantine"))
    short = F.greatest(b - s - q, zero)
    newest = newest_routed["t"] if newest_routed is not None else None
    backlog = short if newest is None else F.when(F.unix_micros("b.ingested") > F.lit(newest), short).otherwise(zero)
    # Per kind of source: a Kafka row's _source names its record (kafka:<topic>:<partition>:...).
    kind = F.substring_index(F.coalesce("b._source", "r._source"), ":", 1)
    per_source = (
        joined.groupBy(kind.alias("source"))
        .agg(
            F.sum(b).alias("bronze"),
            F.sum(s).alias("silver"),
            F.sum(q).alias("quarantine"),
            F.sum(short - backlog).alias("missing"),
            F.sum(backlog).alias("not_yet_routed"),
            F.sum(F.greatest(s + q - b, zero)).alias("extra"),
        )
        .orderBy("source")
        .collect()
    )
    parts, totals = [], {"missing": 0, "not_yet_routed": 0, "extra": 0}
    sources = {}
    for row in per_source:
        values = row.asDict()
        source = values.pop("source") or "(none)"
        sources[source] = values
        for key in totals:
            totals[key] += values[key]
        part = f"{source}: {values['bronze']:,} = {values['silver']:,} + {values['quarantine']:,}"
        if values["not_yet_routed"]:
            part += f" + {values['not_yet_routed']:,} not yet routed"
        if values["missing"]:
            part += f"; {values['missing']:,} in neither"
        if values["extra"]:
            part += f"; {values['extra']:,} more than bronze has"
        parts.append(part)
    ok = totals["missing"] == 0 and totals["extra"] == 0
    return CheckResult(
        "bronze = silver + quarantine",
        ok,
        "; ".join(parts) if parts else "no rows yet",
        {"sources": sources, **totals},
    )


def scored_once(spark: SparkSession, ctx: Context) -> CheckResult:
    from pyspark.sql import functions as F

    row = (
        _table(spark, ctx, SILVER_SCORED)
        .agg(F.count("*").alias("rows"), F.countDistinct("transaction_id").alias("ids"))
        .first()
    )
    assert row is not None  # an aggregate without grouping has one row
    twice = row["rows"] - row["ids"]
    details = f"{row['rows']:,} silver rows, {row['ids']:,} transaction ids"
    if twice:
        details += f": {twice:,} rows repeat an id"
    return CheckResult("one score per transaction", twice == 0, details, {"rows": row["rows"], "repeated": twice})


def lineage(spark: SparkSession, ctx: Context) -> CheckResult:
    """Every silver row names its model version, and every version named is in the registry."""
    from pyspark.sql import functions as F

    silver = _table(spark, ctx, SILVER_SCORED)
    incomplete = F.lit(False)
    for column in LINEAGE_COLUMNS:
        incomplete = incomplete | F.col(column).isNull()
    versions = (
        silver.groupBy("model_name", "model_version")
        .agg(F.count("*").alias("rows"), F.count_if(incomplete).alias("incomplete"))
        .collect()
    )
    without = sum(r["incomplete"] for r in versions)
    named = sorted((r["model_name"], r["model_version"]) for r in versions if r["model_name"] and r["model_version"])
    unknown, problem = _unregistered(ctx, named)
    shown = ", ".join(f"{name} v{version}" for name, version in named) or "none"
    details = f"{sum(r['rows'] for r in versions):,} rows scored by {shown}"
    if without:
        details += f"; {without:,} rows without complete lineage ({', '.join(LINEAGE_COLUMNS)})"
    if unknown:
        details += "; not in the registry: " + ", ".join(f"{name} v{version}" for name, version in unknown)
    if problem:
        details += f"; the registry could not be read: {problem}"
    ok = not without and not unknown and not problem
    return CheckResult(
        "lineage",
        ok,
        details,
        {"without_lineage": without, "unregistered": [f"{n} v{v}" for n, v in unknown], "registry_error": problem},
    )


def _unregistered(ctx: Context, versions: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], str | None]:
    """The versions the registry does not have, or the error that kept it from saying."""
    if not versions:
        return [], None
    from fraudlake.ml.registry import is_missing_in_registry, mlflow_client

    try:
        client = mlflow_client(ctx)
    except Exception as error:  # an unreachable tracking server, a broken SQLite file
        return [], first_line(error, 300)
    missing = []
    for name, version in versions:
        try:
            client.get_model_version(name, version)
        except Exception as error:
            if not is_missing_in_registry(error):
                return [], first_line(error, 300)
            missing.append((name, version))
    return missing, None


def _recent_start(silver: DataFrame, full: bool):
    """The first minute the gold checks cover: :data:`RECENT_HOURS` before silver's newest row."""
    from pyspark.sql import functions as F

    if full:
        return None
    newest = silver.agg(F.max(F.unix_micros("event_time")).alias("t")).first()  # epoch µs: no host zone
    if newest is None or newest["t"] is None:
        return None
    return F.timestamp_micros(F.lit(newest["t"] - RECENT_HOURS * 3_600_000_000))


def gold_read_version(ctx: Context) -> int | None:
    """The newest version of silver the gold stream has read all of: from the source offset of
    the last micro-batch its checkpoint records as committed (Delta's offset names the version
    it reads from next). None when gold has committed no batch, or its checkpoint is not on a
    local path."""
    import json
    from pathlib import Path

    from fraudlake.gold.stream import QUERY_NAME

    location = ctx.paths.checkpoint(QUERY_NAME).removeprefix("file:")
    if "://" in location:
        return None
    folder = Path(location)
    committed = [int(p.name) for p in (folder / "commits").glob("*") if p.name.isdigit()]
    if not committed:
        return None
    lines = (folder / "offsets" / str(max(committed))).read_text().splitlines()
    offset = json.loads(lines[-1])  # after the version line and the batch's metadata: silver's offset
    return int(offset["reservoirVersion"]) - 1


def gold_against_silver(spark: SparkSession, ctx: Context, full: bool = False) -> list[CheckResult]:
    """``gold.dashboard_minute`` per minute and ``gold.user_activity_minute`` per user and minute,
    against the silver rows gold has counted: those of the silver version it has read
    (:func:`gold_read_version`) that are not in ``gold.late_transactions``."""
    from pyspark.sql import functions as F

    silver_name = table_name(ctx, SILVER_SCORED)
    silver = spark.table(silver_name)
    start = _recent_start(silver, full)
    read_version = gold_read_version(ctx)
    if read_version is None or read_version < 0:
        read = spark.createDataFrame([], "transaction_id STRING")
    else:
        read = spark.sql(f"SELECT DISTINCT transaction_id FROM {silver_name} VERSION AS OF {read_version}")
    late = _table(spark, ctx, GOLD_LATE).select("transaction_id").distinct()
    rows = (
        silver.join(read.withColumn("read", F.lit(True)), "transaction_id", "left")
        .join(late.withColumn("late", F.lit(True)), "transaction_id", "left")
        .select(
            F.date_trunc("minute", "event_time").alias("minute"),
            "user_id",
            "scored_at",
            F.when(F.col("late"), "late").when(F.col("read"), "counted").otherwise("unread").alias("status"),
            F.col("is_flagged").cast("long").alias("flagged"),
            F.col("amount_usd").alias("amount"),
        )
    )
    minutes = _table(spark, ctx, GOLD_DASHBOARD_MINUTE).select(
        "minute", "tx_count", "flagged_count", "total_amount", "updated_at"
    )
    user_minutes = user_minute_totals(_table(spark, ctx, GOLD_USER_MINUTE)).drop("last_event_time")
    if start is not None:
        rows = rows.where(F.col("minute") >= start)
        minutes = minutes.where(F.col("minute") >= start)
        user_minutes = user_minutes.where(F.col("minute") >= start)
    rows = rows.cache()  # two comparisons read it
    range_text = "all event time" if start is None else f"the newest {RECENT_HOURS} h of event time"
    try:
        return [
            _compare(rows, minutes, ["minute"], "gold minutes", "minutes", range_text),
            _compare(rows, user_minutes, ["user_id", "minute"], "gold user minutes", "user minutes", range_text),
        ]
    finally:
        rows.unpersist()


def _compare(rows: DataFrame, gold: DataFrame, keys: list[str], check: str, what: str, range_text: str) -> CheckResult:
    """Gold's counts per key against the counted silver rows. Flags and amounts are compared
    where no counted row was scored after gold last wrote the key (a re-score changes silver's
    flags, not what gold counted)."""
    from pyspark.sql import functions as F

    counted = F.col("status") == "counted"
    expected = (
        rows.join(gold.select(*keys, F.col("updated_at").alias("written")), keys, "left")
        .groupBy(*keys)
        .agg(
            F.count_if(counted).alias("counted"),
            F.count_if(F.col("status") == "late").alias("late"),
            F.count_if(F.col("status") == "unread").alias("unread"),
            F.sum(F.when(counted, F.col("flagged"))).alias("counted_flagged"),
            F.sum(F.when(counted, F.col("amount"))).alias("counted_amount"),
            F.count_if(counted & (F.col("scored_at") > F.col("written"))).alias("rescored"),
        )
    )
    compared = expected.join(gold, keys, "full_outer")

    def value(column: str, default):
        return F.coalesce(F.col(column), F.lit(default))

    expected_rows, gold_rows = value("counted", 0), value("tx_count", 0)
    amounts_differ = ~(
        F.abs(value("counted_amount", 0.0) - value("total_amount", 0.0))
        <= F.lit(AMOUNT_TOLERANCE) * F.abs(value("total_amount", 0.0)) + F.lit(1e-9)
    )
    comparable = value("rescored", 0) == 0
    wrong = (expected_rows != gold_rows) | (
        comparable & ((value("counted_flagged", 0) != value("flagged_count", 0)) | amounts_differ)
    )
    totals = compared.agg(
        F.count("*").alias(what),
        F.count_if(wrong).alias("differing"),
        F.sum(expected_rows).alias("silver_rows"),
        F.sum(gold_rows).alias("gold_rows"),
        F.sum(value("late", 0)).alias("late_rows"),
        F.sum(value("unread", 0)).alias("unread_rows"),
    ).first()
    assert totals is not None  # an aggregate without grouping has one row
    names = (what, "differing", "silver_rows", "gold_rows", "late_rows", "unread_rows")
    numbers = {k: int(totals[k] or 0) for k in names}
    details = (
        f"{_many(numbers[what], what)} over {range_text}: gold counts {numbers['gold_rows']:,} rows of the "
        f"{numbers['silver_rows']:,} silver rows it has read"
    )
    extra = [f"{numbers['late_rows']:,} late (gold.late_transactions)"] if numbers["late_rows"] else []
    extra += [f"{numbers['unread_rows']:,} not read by gold yet"] if numbers["unread_rows"] else []
    if extra:
        details += f" ({', '.join(extra)})"
    if numbers["differing"]:
        examples = (
            compared.where(wrong)
            .select(*keys, expected_rows.alias("silver"), gold_rows.alias("gold"))
            .orderBy(*keys)
            .limit(3)
            .collect()
        )
        shown = "; ".join(
            " ".join(str(r[k]) for k in keys) + f": gold {r['gold']:,}, silver {r['silver']:,}" for r in examples
        )
        verb = "differs" if numbers["differing"] == 1 else "differ"
        details += f"; {_many(numbers['differing'], what)} {verb}, e.g. {shown}"
    return CheckResult(check, numbers["differing"] == 0, details, numbers)


def _many(n: int, plural: str) -> str:
    """``1 minute``, ``2 minutes``: a count and its noun (``plural`` ends in s)."""
    return f"{n:,} {plural if n != 1 else plural[:-1]}"


def alerts_unique(spark: SparkSession, ctx: Context) -> CheckResult:
    from pyspark.sql import functions as F

    alerts = _table(spark, ctx, GOLD_FRAUD_ALERTS)
    row = alerts.agg(
        F.count("*").alias("alerts"),
        F.count_distinct(F.struct("alert_type", "transaction_id", "user_id", "alert_time")).alias("distinct"),
    ).first()
    assert row is not None
    twice = row["alerts"] - row["distinct"]
    details = f"{row['alerts']:,} alerts" + (f": {twice:,} repeat another" if twice else ", none twice")
    return CheckResult("alerts unique", twice == 0, details, {"alerts": row["alerts"], "repeated": twice})


def labels_unique(spark: SparkSession, ctx: Context) -> CheckResult:
    """No transaction has the same verdict twice in ``bronze.labels`` (another verdict is a
    correction); the label records quarantined are counted beside them."""
    from pyspark.sql import functions as F

    row = (
        _table(spark, ctx, BRONZE_LABELS)
        .agg(F.count("*").alias("labels"), F.count_distinct("transaction_id", "label_is_fraud").alias("verdicts"))
        .first()
    )
    assert row is not None
    label_quarantine = table_name(ctx, BRONZE_LABEL_QUARANTINE)  # a home from before it had none
    quarantined = spark.table(label_quarantine).count() if spark.catalog.tableExists(label_quarantine) else 0
    twice = row["labels"] - row["verdicts"]
    details = f"{row['labels']:,} labels" + (
        f": {twice:,} repeat a transaction's verdict" if twice else ", none repeats a transaction's verdict"
    )
    if quarantined:
        details += f"; {quarantined:,} label records in quarantine"
    return CheckResult(
        "labels unique", twice == 0, details, {"labels": row["labels"], "repeated": twice, "quarantined": quarantined}
    )


def retention(spark: SparkSession, ctx: Context) -> CheckResult:
    """Silver and gold keep their history and files for the audit window in conf."""
    from fraudlake.tables import ALL_TABLES

    keys = ("delta.logRetentionDuration", "delta.deletedFileRetentionDuration")
    off = []
    audited = [spec for spec in ALL_TABLES if any(k in table_properties(ctx, spec) for k in keys)]
    for spec in audited:
        name = table_name(ctx, spec)
        have = current_properties(spark, name)
        want = table_properties(ctx, spec)
        off += [
            f"{spec.layer}.{spec.name} {k} is {have.get(k)!r}, conf says {want[k]!r}"
            for k in keys
            if have.get(k) != want[k]
        ]
    audit = ctx.settings.audit
    details = (
        f"{len(audited)} silver and gold tables keep {audit.log_retention_days} days of history and "
        f"{audit.deleted_file_retention_days} days of files"
    )
    if off:
        details = "; ".join(off) + " (fraudlake maintain or any writer sets it back)"
    return CheckResult("retention", not off, details, {"tables": len(audited), "differing": len(off)})
