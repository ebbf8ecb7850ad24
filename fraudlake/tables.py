"""Table contracts: names, schemas and idempotent registration of every Delta table.

All tables are addressed as ``<catalog>.<schema>.<table>`` through :func:`table_name`.
Locally the session catalog is in memory, so every new process registers the
tables again at start (``CREATE TABLE IF NOT EXISTS … LOCATION``): a second
process (``fraudlake sql``, the dashboard) sees what the pipeline wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudlake.settings import Context

BRONZE_COLUMNS = """
    transaction_id STRING,
    event_time TIMESTAMP,
    user_id STRING,
    card_id STRING,
    merchant_id STRING,
    merchant_category STRING,
    amount DOUBLE,
    currency STRING,
    country STRING,
    channel STRING,
    label_is_fraud INT,
    label_scenario STRING,
    _raw STRING,
    _source STRING,
    _ingest_time TIMESTAMP
"""

TIME_FEATURE_COLUMNS = """
    tx_hour INT,
    tx_day_of_week INT,
    is_weekend BOOLEAN,
    is_night BOOLEAN
"""

SCORE_COLUMNS = """
    fraud_score DOUBLE,
    is_flagged BOOLEAN,
    model_name STRING,
    model_version STRING,
    scored_at TIMESTAMP,
    flag_threshold DOUBLE
"""


@dataclass(frozen=True)
class TableSpec:
    layer: str  # bronze | silver | gold
    name: str
    columns: str  # DDL column list
    properties: dict[str, str] = field(default_factory=dict)
    comment: str = ""
    # Delta CHECK constraints, name -> SQL condition: a last defence behind validation.
    constraints: dict[str, str] = field(default_factory=dict)


BRONZE_TRANSACTIONS = TableSpec(
    "bronze",
    "transactions",
    BRONZE_COLUMNS,
    {"delta.appendOnly": "true"},
    "Raw transactions as received; append-only, nothing dropped",
)
SILVER_SCORED = TableSpec(
    "silver",
    "scored_transactions",
    ",".join([BRONZE_COLUMNS, TIME_FEATURE_COLUMNS, SCORE_COLUMNS]),
    {"delta.enableChangeDataFeed": "true"},
    "Valid transactions with time features, fraud score and model lineage",
    {
        "transaction_id_present": "transaction_id IS NOT NULL",
        "event_time_present": "event_time IS NOT NULL",
        "amount_positive": "amount > 0",
        "scored_by_a_model_version": "model_version IS NOT NULL",
    },
)
SILVER_QUARANTINE = TableSpec(
    "silver",
    "quarantine",
    BRONZE_COLUMNS + ", quarantine_reason STRING",
    {"delta.enableChangeDataFeed": "true"},
    "Bronze rows that failed validation, with the reason",
)
GOLD_USER_ACTIVITY = TableSpec(
    "gold",
    "user_activity_5m",
    """user_id STRING, window_start TIMESTAMP, window_end TIMESTAMP,
       tx_count BIGINT, total_amount DOUBLE, flagged_count BIGINT""",
    comment="Per-user activity in 5-minute windows sliding every minute",
)
GOLD_DASHBOARD_MINUTE = TableSpec(
    "gold",
    "dashboard_minute",
    """minute TIMESTAMP, tx_count BIGINT, flagged_count BIGINT, total_amount DOUBLE,
       flagged_amount DOUBLE, true_positives BIGINT, false_positives BIGINT""",
    comment="Per-minute volumes for dashboards",
)
GOLD_FRAUD_ALERTS = TableSpec(
    "gold",
    "fraud_alerts",
    """alert_type STRING, transaction_id STRING, user_id STRING, fraud_score DOUBLE,
       reason STRING, alert_time TIMESTAMP""",
    comment="One row per alert: model (flagged transaction) or user_activity",
)

ALL_TABLES = (
    BRONZE_TRANSACTIONS,
    SILVER_SCORED,
    SILVER_QUARANTINE,
    GOLD_USER_ACTIVITY,
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
)


def schema_name(ctx: Context, layer: str) -> str:
    c = ctx.settings.catalog
    schema = {"bronze": c.bronze_schema, "silver": c.silver_schema, "gold": c.gold_schema}[layer]
    return f"{c.catalog}.{schema}"


def table_name(ctx: Context, spec: TableSpec) -> str:
    """Fully qualified name, e.g. ``spark_catalog.bronze.transactions``."""
    return f"{schema_name(ctx, spec.layer)}.{spec.name}"


def table_location(ctx: Context, spec: TableSpec) -> str:
    return f"{ctx.paths.warehouse}/{spec.layer}/{spec.name}"


def sql_string(value: str) -> str:
    """A Spark SQL string literal (for locations and comments we control, never for user input)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _strip_scheme(location: str) -> str:
    return location.removeprefix("file://").removeprefix("file:")


def _is_delta_table(spark, location: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, location)


def _registered_location(spark, name: str) -> str | None:
    """Where the catalog entry points, or None if that location is gone (its folder deleted)."""
    try:
        return _strip_scheme(spark.sql(f"DESCRIBE DETAIL {name}").first()["location"]).rstrip("/")
    except Exception:  # AnalysisException: DELTA_PATH_DOES_NOT_EXIST and kin
        return None


def _session_catalog_entry(spark, ctx: Context, spec: TableSpec):
    """The session catalog and this table's identifier in it. Its methods read the entry
    only; ``spark.catalog.tableExists`` and ``DROP TABLE`` load the Delta table, which
    fails once the table's folder has been deleted."""
    jvm = spark._jvm
    schema = table_name(ctx, spec).split(".")[1]
    identifier = jvm.org.apache.spark.sql.catalyst.TableIdentifier(spec.name, jvm.scala.Option.apply(schema))
    return spark._jsparkSession.sessionState().catalog(), identifier


def _in_session_catalog(spark, ctx: Context, spec: TableSpec) -> bool:
    catalog, identifier = _session_catalog_entry(spark, ctx, spec)
    return bool(catalog.tableExists(identifier))


def _forget_table(spark, ctx: Context, spec: TableSpec) -> None:
    """Remove the catalog entry of an external table; its data stays where it is."""
    catalog, identifier = _session_catalog_entry(spark, ctx, spec)
    catalog.dropTable(identifier, True, False)


def create_table_sql(ctx: Context, spec: TableSpec, with_columns: bool) -> str:
    parts = [f"CREATE TABLE IF NOT EXISTS {table_name(ctx, spec)}"]
    if with_columns:
        parts.append(f"({spec.columns})")
    parts.append("USING DELTA")
    if not ctx.settings.storage.managed_tables:
        parts.append(f"LOCATION {sql_string(table_location(ctx, spec))}")
    if with_columns and spec.comment:
        parts.append(f"COMMENT {sql_string(spec.comment)}")
    properties = table_properties(ctx, spec)
    if with_columns and properties:
        props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in properties.items())
        parts.append(f"TBLPROPERTIES ({props})")
    return " ".join(parts)


# Layers whose history is kept for audits (time travel, change data feed) for the conf's window.
AUDITED_LAYERS = ("silver", "gold")


def table_properties(ctx: Context, spec: TableSpec) -> dict[str, str]:
    """The spec's Delta properties plus, on silver and gold, the audit retention from conf."""
    properties = dict(spec.properties)
    if spec.layer in AUDITED_LAYERS:
        audit = ctx.settings.audit
        properties["delta.logRetentionDuration"] = f"interval {audit.log_retention_days} days"
        properties["delta.deletedFileRetentionDuration"] = f"interval {audit.deleted_file_retention_days} days"
    return properties


def register_tables(spark, ctx: Context) -> list[str]:
    """Create the schemas and every table if missing, and register them in this session's catalog.

    Idempotent. A table already registered at another location (another home in the
    same session) is re-pointed: dropping an external table's entry leaves its data.
    """
    for layer in ("bronze", "silver", "gold"):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema_name(ctx, layer)}")
    names = []
    for spec in ALL_TABLES:
        name = table_name(ctx, spec)
        if ctx.settings.storage.managed_tables:
            spark.sql(create_table_sql(ctx, spec, with_columns=True))
        else:
            location = table_location(ctx, spec)
            if _in_session_catalog(spark, ctx, spec) and _registered_location(spark, name) != location.rstrip("/"):
                _forget_table(spark, ctx, spec)
            exists = _is_delta_table(spark, location)
            spark.sql(create_table_sql(ctx, spec, with_columns=not exists))
        _bring_up_to_date(spark, ctx, name, spec)
        names.append(name)
    return names


def _bring_up_to_date(spark, ctx: Context, name: str, spec: TableSpec) -> None:
    """An existing table gets what the spec added since it was created: columns (at the end,
    so appends by name keep working), changed properties (e.g. the audit retention in conf)
    and constraints. Nothing is committed when the table is already up to date."""
    from pyspark.sql.types import DataType

    have = {f.name.lower() for f in spark.table(name).schema.fields}
    missing = [f for f in DataType.fromDDL(spec.columns).fields if f.name.lower() not in have]
    if missing:
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({', '.join(f'{f.name} {f.dataType.simpleString()}' for f in missing)})")
    present = {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}
    changed = {k: v for k, v in table_properties(ctx, spec).items() if present.get(k) != v}
    if changed:
        props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in changed.items())
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({props})")
    for constraint, condition in spec.constraints.items():
        if f"delta.constraints.{constraint.lower()}" not in present:
            spark.sql(f"ALTER TABLE {name} ADD CONSTRAINT {constraint} CHECK ({condition})")


def describe_table(spark, ctx: Context, spec: TableSpec) -> dict:
    """Name, rows, latest Delta version and location of one table."""
    name = table_name(ctx, spec)
    detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
    version = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"]
    return {
        "table": name,
        "rows": spark.table(name).count(),
        "version": int(version),
        "files": int(detail["numFiles"]),
        "location": _strip_scheme(detail["location"]),
    }
