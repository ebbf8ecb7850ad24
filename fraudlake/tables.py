"""Table contracts: names, schemas, and how a session gets the Delta tables.

All tables are addressed as ``<catalog>.<schema>.<table>`` through :func:`table_name`,
each part quoted where Spark SQL needs it, so a name from conf is safe in SQL text.
Locally the session catalog is in memory, so every new process registers the
tables again at start (``CREATE TABLE IF NOT EXISTS … LOCATION``): a second
process (``fraudlake sql``, the dashboard) sees what the pipeline wrote.

Two entry points, by what a command does with the tables:

- :func:`ensure_tables` for writers (the streams, ``rescore``, ``maintain``): creates
  what is missing and brings existing tables up to their spec (columns, properties,
  constraints), which commits to a table that is out of date;
- :func:`attach_tables` for readers (``sql``, ``tables``, ``audit``, the dashboard):
  registers the tables that exist and changes nothing, so a read never commits to a
  table that streams are writing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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

# Features silver keeps (fraudlake.ml.features.SILVER_FEATURES): time features in UTC and
# the amount in USD (null for a currency without a reference rate).
FEATURE_COLUMNS = """
    tx_hour INT,
    tx_day_of_week INT,
    is_weekend BOOLEAN,
    is_night BOOLEAN,
    amount_usd DOUBLE
"""

# Behavioural features silver computed before scoring (fraudlake.ml.behaviour: what the
# card, its user and the merchant did before the transaction, from the labels known then). After the
# score columns: a table made before they existed gains them at the end.
BEHAVIOUR_COLUMNS = """
    card_count_10m DOUBLE,
    card_count_1h DOUBLE,
    card_count_1d DOUBLE,
    card_count_7d DOUBLE,
    card_count_30d DOUBLE,
    card_amount_usd_10m DOUBLE,
    card_amount_usd_1h DOUBLE,
    card_amount_usd_1d DOUBLE,
    card_amount_usd_7d DOUBLE,
    card_amount_usd_30d DOUBLE,
    card_seconds_since_previous DOUBLE,
    card_amount_vs_30d_mean DOUBLE,
    card_amount_vs_7d_mean DOUBLE,
    card_amount_vs_usual DOUBLE,
    card_max_7d_vs_usual DOUBLE,
    card_merchants_1h DOUBLE,
    card_countries_1h DOUBLE,
    merchant_count_1d DOUBLE,
    merchant_count_7d DOUBLE,
    merchant_count_30d DOUBLE,
    merchant_matured_count_1d DOUBLE,
    merchant_matured_count_7d DOUBLE,
    merchant_matured_count_30d DOUBLE,
    merchant_fraud_share_1d DOUBLE,
    merchant_fraud_share_7d DOUBLE,
    merchant_fraud_share_30d DOUBLE,
    merchant_seconds_since_first_known_fraud DOUBLE,
    merchant_seconds_since_last_known_fraud DOUBLE,
    merchant_matured_since_last_known_fraud DOUBLE,
    user_count_10m DOUBLE,
    user_count_1h DOUBLE,
    user_count_1d DOUBLE,
    user_count_7d DOUBLE,
    user_count_30d DOUBLE,
    user_amount_usd_10m DOUBLE,
    user_amount_usd_1h DOUBLE,
    user_amount_usd_1d DOUBLE,
    user_amount_usd_7d DOUBLE,
    user_amount_usd_30d DOUBLE,
    user_seconds_since_previous DOUBLE,
    user_amount_vs_30d_mean DOUBLE,
    user_amount_vs_7d_mean DOUBLE,
    user_amount_vs_usual DOUBLE,
    user_max_7d_vs_usual DOUBLE,
    user_merchants_1h DOUBLE,
    user_countries_1h DOUBLE
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
BRONZE_LABELS = TableSpec(
    "bronze",
    "labels",
    """transaction_id STRING, label_is_fraud INT, label_time TIMESTAMP, label_source STRING,
       _ingest_time TIMESTAMP, _source STRING""",
    {"delta.appendOnly": "true"},
    "Fraud labels (chargebacks, confirmed cases, the simulator's truth) as they arrive; nothing may "
    "use a label before its label_time. _source: where the label record came from (rate: the "
    "simulator's feed; kafka:<topic>:<partition>:<offset>:<timestamp ms>; files)",
    {"transaction_id_present": "transaction_id IS NOT NULL", "label_time_present": "label_time IS NOT NULL"},
)
# Label records from Kafka or files that are not a label (or repeat one): kept with the reason.
# Every label record read is in bronze.labels or here, once.
BRONZE_LABEL_QUARANTINE = TableSpec(
    "bronze",
    "label_quarantine",
    "_raw STRING, _source STRING, quarantine_reason STRING, _ingest_time TIMESTAMP",
    {"delta.appendOnly": "true"},
    "Label records (Kafka, files) that are not a usable label, or repeat one, with the reason; "
    "label records read = bronze.labels from that source + these",
)
SILVER_SCORED = TableSpec(
    "silver",
    "scored_transactions",
    ",".join([BRONZE_COLUMNS, FEATURE_COLUMNS, SCORE_COLUMNS, BEHAVIOUR_COLUMNS]),
    {"delta.enableChangeDataFeed": "true"},
    "Valid transactions with features (time in UTC, amount in USD, card and merchant behaviour), "
    "fraud score and model lineage",
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
# Live rows: rewritten by the gold stream while open (is_final false), final once the watermark
# has passed their end. No deletion vectors: gold merges nothing, and the replaceWhere of the
# open minutes took 2.0 s without them against 2.7 s with them on an idle local[2].
LIVE_WINDOW_COLUMNS = "is_final BOOLEAN, updated_at TIMESTAMP"
LIVE_WINDOW_PROPERTIES = {"delta.enableDeletionVectors": "false"}
# Per user and minute: what the 5-minute windows add up, one row per gold micro-batch that
# counted transactions of the user in the minute (readers add them up; a 5-minute window
# would be five rows), appended: nothing is rewritten.
GOLD_USER_MINUTE = TableSpec(
    "gold",
    "user_activity_minute",
    """user_id STRING, minute TIMESTAMP, tx_count BIGINT, total_amount DOUBLE, flagged_count BIGINT,
       last_event_time TIMESTAMP, updated_at TIMESTAMP""",
    LIVE_WINDOW_PROPERTIES,
    "Per-user activity per minute, one row per gold micro-batch that counted it (add them up), open minutes "
    "included; amounts in USD; gold.user_activity_5m adds them up into windows",
)
GOLD_DASHBOARD_MINUTE = TableSpec(
    "gold",
    "dashboard_minute",
    f"""minute TIMESTAMP, tx_count BIGINT, flagged_count BIGINT, total_amount DOUBLE,
       flagged_amount DOUBLE, unknown_currency_count BIGINT,
       {LIVE_WINDOW_COLUMNS}""",
    LIVE_WINDOW_PROPERTIES,
    "Per-minute volumes for dashboards, the current minute included (is_final); amounts in USD, "
    "transactions without a USD rate counted apart",
)
GOLD_FRAUD_ALERTS = TableSpec(
    "gold",
    "fraud_alerts",
    """alert_type STRING, transaction_id STRING, user_id STRING, fraud_score DOUBLE,
       reason STRING, alert_time TIMESTAMP""",
    comment="One row per alert: model (flagged transaction) or user_activity",
)

# Rows the gold stream read after their minute was final: they count in no window or minute
# (a watermark's price), and are kept here so readers and `fraudlake check` can name them.
GOLD_LATE = TableSpec(
    "gold",
    "late_transactions",
    """transaction_id STRING, user_id STRING, event_time TIMESTAMP, minute TIMESTAMP,
       final_through TIMESTAMP, recorded_at TIMESTAMP""",
    {"delta.appendOnly": "true"},
    "Transactions that reached gold after their minute was final (later than the watermark): counted in no "
    "window or minute; a flagged one still has its model alert. final_through: the minutes final by then",
)

# What the gold query writes (a reset of its checkpoint empties them: see orchestration.checkpoints).
GOLD_WRITTEN = (GOLD_USER_MINUTE, GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS, GOLD_LATE)
ALL_TABLES = (
    BRONZE_TRANSACTIONS,
    BRONZE_LABELS,
    BRONZE_LABEL_QUARANTINE,
    SILVER_SCORED,
    SILVER_QUARANTINE,
    *GOLD_WRITTEN,
)


@dataclass(frozen=True)
class ViewSpec:
    """A view over the tables: ``sql`` names them by placeholders, ``{user_minute}`` for
    :data:`GOLD_USER_MINUTE`, ``{dashboard_minute}`` for :data:`GOLD_DASHBOARD_MINUTE`,
    ``{scored}`` for :data:`SILVER_SCORED`, ``{labels}`` for :data:`BRONZE_LABELS`,
    and ``{watermark_seconds}`` for the gold stream's watermark (:func:`gold_watermark_seconds`)."""

    layer: str
    name: str
    sql: str
    comment: str = ""


# The 5-minute windows sliding every minute, added up from the minutes when read: a window
# is final once its last minute is, i.e. once the newest minute gold has counted began
# the gold stream's watermark after the window's end (as recorded on the table; a minute
# without transactions has no row, so the newest final row could be earlier). Same columns as a batch aggregation of silver
# (fraudlake.gold.aggregates.user_activity_5m) plus is_final and updated_at.
GOLD_USER_ACTIVITY = ViewSpec(
    "gold",
    "user_activity_5m",
    """SELECT m.user_id,
       w.window_start,
       w.window_start + INTERVAL 5 MINUTES AS window_end,
       sum(m.tx_count) AS tx_count,
       sum(m.total_amount) AS total_amount,
       sum(m.flagged_count) AS flagged_count,
       coalesce(w.window_start + INTERVAL 5 MINUTES <= (
         SELECT max(minute) FROM {dashboard_minute}) - make_dt_interval(0, 0, 0, {watermark_seconds}), false) AS is_final,
       max(m.updated_at) AS updated_at
FROM {user_minute} m
  LATERAL VIEW explode(sequence(m.minute - INTERVAL 4 MINUTES, m.minute, INTERVAL 1 MINUTE)) w AS window_start
GROUP BY m.user_id, w.window_start""",
    "Per-user activity in 5-minute windows sliding every minute, open ones included (is_final); amounts in USD",
)
# The transactions whose fraud label has arrived (``{labels}``: bronze.labels), one row each
# (``fraud_id``): what live model quality counts as fraud, in gold.model_quality_hourly, the
# dashboards and a run's summary alike. Until its label comes, a fraud counts as genuine.
ARRIVED_FRAUD_SQL = "SELECT DISTINCT transaction_id AS fraud_id FROM {labels} WHERE label_is_fraud = 1"

# Live model quality per hour (UTC) and model version, from the fraud labels that have arrived:
# a transaction is fraud once bronze.labels holds its label, genuine so far until then (the
# newest hour's labels are still arriving: labels_through says how far they go). Average
# precision ranks the hour's transactions by score, as sklearn's average_precision_score.
GOLD_MODEL_QUALITY = ViewSpec(
    "gold",
    "model_quality_hourly",
    "WITH fraud AS ("
    + ARRIVED_FRAUD_SQL
    + """), judged AS (
  SELECT timestamp_seconds(floor(unix_seconds(s.event_time) / 3600) * 3600) AS hour,
         s.model_name, s.model_version, s.fraud_score, s.is_flagged, f.fraud_id IS NOT NULL AS is_fraud
  FROM {scored} s LEFT JOIN fraud f ON s.transaction_id = f.fraud_id
), ranked AS (
  SELECT *,
         count_if(is_fraud) OVER (PARTITION BY hour, model_name, model_version ORDER BY fraud_score DESC
                                  RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS fraud_at_or_above,
         count(*) OVER (PARTITION BY hour, model_name, model_version ORDER BY fraud_score DESC
                        RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS at_or_above
  FROM judged
)
SELECT hour, model_name, model_version,
       count(*) AS tx_count,
       count_if(is_flagged) AS flagged_count,
       count_if(is_fraud) AS fraud_labelled,
       count_if(is_flagged AND is_fraud) AS true_positives,
       try_divide(count_if(is_flagged AND is_fraud), count_if(is_flagged)) AS precision,
       try_divide(count_if(is_flagged AND is_fraud), count_if(is_fraud)) AS recall,
       try_divide(sum(CASE WHEN is_fraud THEN fraud_at_or_above / at_or_above END), count_if(is_fraud))
         AS average_precision,
       (SELECT max(label_time) FROM {labels}) AS labels_through
FROM ranked
GROUP BY hour, model_name, model_version""",
    "Live model quality per hour (UTC) and model version, from the fraud labels arrived so far",
)
ALL_VIEWS = (GOLD_USER_ACTIVITY, GOLD_MODEL_QUALITY)
LAYERS = ("bronze", "silver", "gold")

# A name part Spark SQL reads without backticks (Spark's own ``quoteIfNeeded`` rule).
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def quote_identifier(part: str) -> str:
    """One name part as Spark SQL reads it: as is when it is a plain identifier, else in
    backticks with any backtick inside doubled.

    >>> quote_identifier("silver"), quote_identifier("dev-fraud"), quote_identifier("a`b")
    ('silver', '`dev-fraud`', '`a``b`')
    """
    return part if _PLAIN_IDENTIFIER.fullmatch(part) else "`" + part.replace("`", "``") + "`"


def qualified_name(*parts: str) -> str:
    """A multi-part name (``catalog.schema.table``) with each part quoted as needed: valid in SQL
    text and in ``spark.table``, ``readStream.table``, ``toTable``, ``saveAsTable`` and
    ``DeltaTable.forName``, which all parse it the same way.

    >>> qualified_name("dev-catalog", "fraud", "transactions")
    '`dev-catalog`.fraud.transactions'
    """
    return ".".join(quote_identifier(part) for part in parts)


def _schema_parts(ctx: Context, layer: str) -> tuple[str, str]:
    c = ctx.settings.catalog
    schema = {"bronze": c.bronze_schema, "silver": c.silver_schema, "gold": c.gold_schema}[layer]
    return c.catalog, schema


def schema_name(ctx: Context, layer: str) -> str:
    """The layer's schema, qualified and quoted, e.g. ``spark_catalog.silver``."""
    return qualified_name(*_schema_parts(ctx, layer))


def table_name(ctx: Context, spec: TableSpec | ViewSpec) -> str:
    """Fully qualified name, quoted where needed (:func:`qualified_name`), e.g.
    ``spark_catalog.bronze.transactions``; a catalog ``dev-fraud`` in conf gets backticks."""
    return qualified_name(*_schema_parts(ctx, spec.layer), spec.name)


def table_location(ctx: Context, spec: TableSpec) -> str:
    return f"{ctx.paths.warehouse}/{spec.layer}/{spec.name}"


def sql_string(value: str) -> str:
    """A Spark SQL string literal (for locations and comments we control, never for user input)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _strip_scheme(location: str) -> str:
    return location.removeprefix("file://").removeprefix("file:")


def _same_folder(location: str) -> str:
    """A local location in one spelling: no ``file:`` scheme, no URI escapes, no trailing slash."""
    return unquote(_strip_scheme(location)).rstrip("/")


def _is_delta_table(spark: SparkSession, location: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, location)


def _catalog_entry_location(spark: SparkSession, ctx: Context, spec: TableSpec) -> str | None:
    """Where this session's catalog entry for the table points, or None without an entry.

    Read from the entry alone (``SHOW TABLE EXTENDED`` is a catalog command): unlike
    ``DESCRIBE``, ``spark.catalog.tableExists`` or a query, it does not load the Delta
    table, so it also answers for an entry whose folder has been deleted.
    """
    schema = schema_name(ctx, spec.layer)
    if not spark.catalog.databaseExists(schema):
        return None
    rows = spark.sql(f"SHOW TABLE EXTENDED IN {schema} LIKE {sql_string(spec.name)}").collect()
    for row in rows:
        if not row["isTemporary"] and row["tableName"].lower() == spec.name.lower():
            for line in row["information"].splitlines():
                if line.startswith("Location:"):
                    return _same_folder(line.removeprefix("Location:").strip())
            return ""  # an entry without a location (not one of ours): never this table's folder
    return None


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
    if with_columns and not ctx.settings.storage.managed_tables:
        # A new local table gets its CHECK constraints in its first commit (Delta keeps them as
        # ``delta.constraints.<name>`` properties and raises the writer protocol for them):
        # an ``ADD CONSTRAINT`` per constraint scans the table and commits, ~0.8 s each. Unity
        # Catalog tables get theirs through ``ADD CONSTRAINT`` (:func:`_bring_up_to_date`).
        properties |= {f"delta.constraints.{name.lower()}": condition for name, condition in spec.constraints.items()}
    if with_columns and properties:
        props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in properties.items())
        parts.append(f"TBLPROPERTIES ({props})")
    return " ".join(parts)


# Layers whose history is kept for audits (time travel, change data feed) for the conf's window.
AUDITED_LAYERS = ("silver", "gold")
# The streams commit to every table about once a second. A Delta checkpoint every 10 commits
# (the default) makes every tenth append write a Parquet checkpoint: 1,000-row appends on
# local[2] took p95 1.40 s (mean 0.74 s) against p95 0.67 s (mean 0.59 s) with 100
# (benchmarks/results/delta_commit_cost.json). Readers replay at most 100 small JSON commits.
CHECKPOINT_INTERVAL = "100"


# On dashboard_minute: the gold stream's watermark as the last writer to start had it in conf.
# Readers decide which windows are final with it (the view user_activity_5m, the dashboard),
# not with their own conf: a `fraudlake sql` without the writer's --set sees the same windows.
WATERMARK_PROPERTY = "fraudlake.watermarkSeconds"


def table_properties(ctx: Context, spec: TableSpec) -> dict[str, str]:
    """The spec's Delta properties plus, on silver and gold, the audit retention from conf
    (and on ``dashboard_minute`` the gold stream's watermark)."""
    properties = {"delta.checkpointInterval": CHECKPOINT_INTERVAL, **spec.properties}
    if spec is GOLD_DASHBOARD_MINUTE:
        properties[WATERMARK_PROPERTY] = str(ctx.settings.streams.watermark_seconds)
    if spec.layer in AUDITED_LAYERS:
        audit = ctx.settings.audit
        properties["delta.logRetentionDuration"] = f"interval {audit.log_retention_days} days"
        properties["delta.deletedFileRetentionDuration"] = f"interval {audit.deleted_file_retention_days} days"
    return properties


# Tables created or checked side by side by ensure_tables.
TABLE_THREADS = 4


def ensure_tables(spark: SparkSession, ctx: Context) -> list[str]:
    """For writers: create the schemas and every table if missing, bring existing tables up to
    their spec, and register them in this session's catalog; return their names.

    Idempotent, but not read-only: a table created by an older version gets the columns,
    properties and constraints added since, each one an ``ALTER TABLE`` commit. Call it
    where tables are written (the streams, ``rescore``, ``maintain``); readers call
    :func:`attach_tables`.

    >>> ensure_tables(spark, ctx)[0]
    'spark_catalog.bronze.transactions'
    """
    from concurrent.futures import ThreadPoolExecutor

    for layer in LAYERS:
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema_name(ctx, layer)}")

    def ensure(spec: TableSpec) -> str:
        name = table_name(ctx, spec)
        if ctx.settings.storage.managed_tables:
            spark.sql(create_table_sql(ctx, spec, with_columns=True))
        else:
            _register_location(spark, ctx, spec, create=True)
        _bring_up_to_date(spark, ctx, name, spec)
        return name

    # Each table's commits and catalog calls wait mostly on files and the JVM, not on a core:
    # tables side by side in threads (Spark runs each thread's jobs as their own).
    with ThreadPoolExecutor(max_workers=TABLE_THREADS, thread_name_prefix="fraudlake-tables") as pool:
        names = list(pool.map(ensure, ALL_TABLES))
    for view in ALL_VIEWS:
        _create_view(spark, ctx, view)
    return names


def current_properties(spark: SparkSession, name: str) -> dict[str, str]:
    """A table's properties (``SHOW TBLPROPERTIES``), key to value."""
    return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {name}").collect()}


def gold_watermark_seconds(spark: SparkSession, ctx: Context) -> float:
    """The watermark the gold stream runs with, as recorded on ``dashboard_minute``
    (:data:`WATERMARK_PROPERTY`); this context's conf for a table from before it was recorded."""
    recorded = current_properties(spark, table_name(ctx, GOLD_DASHBOARD_MINUTE)).get(WATERMARK_PROPERTY)
    return float(recorded if recorded is not None else ctx.settings.streams.watermark_seconds)


def view_sql(ctx: Context, view: ViewSpec, watermark_seconds: float) -> str:
    """``CREATE OR REPLACE VIEW`` for ``view`` over this context's tables."""
    select = view.sql.format(
        user_minute=table_name(ctx, GOLD_USER_MINUTE),
        dashboard_minute=table_name(ctx, GOLD_DASHBOARD_MINUTE),
        scored=table_name(ctx, SILVER_SCORED),
        labels=table_name(ctx, BRONZE_LABELS),
        watermark_seconds=watermark_seconds,
    )
    comment = f" COMMENT {sql_string(view.comment)}" if view.comment else ""
    return f"CREATE OR REPLACE VIEW {table_name(ctx, view)}{comment} AS {select}"


def _create_view(spark: SparkSession, ctx: Context, view: ViewSpec) -> None:
    """Define ``view`` in the catalog (a catalog change; no table is written). Locally a view
    takes the place of an earlier fraudlake's table of the same name: its entry, never its files."""
    schema = schema_name(ctx, view.layer)
    spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    entries = spark.sql(f"SHOW TABLE EXTENDED IN {schema} LIKE {sql_string(view.name)}").collect()
    if any("Type: VIEW" not in row["information"] for row in entries if not row["isTemporary"]):
        if ctx.settings.storage.managed_tables:  # dropping a managed table would delete its files
            raise FraudlakeError(
                f"{table_name(ctx, view)} is a table from an earlier fraudlake; it is a view now. "
                f"Drop the table (DROP TABLE {table_name(ctx, view)}) and run again"
            )
        spark.sql(f"DROP TABLE IF EXISTS {table_name(ctx, view)}")  # an external table: the entry, not its files
    spark.sql(view_sql(ctx, view, gold_watermark_seconds(spark, ctx)))


def attach_tables(spark: SparkSession, ctx: Context) -> tuple[str, ...]:
    """For readers: make the tables that exist visible in this session, creating and changing
    none; return the names of those that do not exist (yet).

    Locally each existing table's folder is registered in the in-memory session catalog
    (``CREATE TABLE IF NOT EXISTS … USING DELTA LOCATION …`` over a Delta folder commits
    nothing to the table); a missing folder stays missing, so a query on it fails with
    Spark's own "table not found". With Unity Catalog (``storage.managed_tables``) the
    catalog already knows every table: nothing is registered. Cheap enough to call on
    every dashboard refresh, so tables created after a reader started appear.

    >>> attach_tables(spark, ctx)  # a fresh home
    ('spark_catalog.bronze.transactions', ..., 'spark_catalog.gold.fraud_alerts')
    """
    missing = []
    for spec in ALL_TABLES:
        name = table_name(ctx, spec)
        if ctx.settings.storage.managed_tables:
            present = bool(spark.catalog.tableExists(name))
        else:
            present = _register_location(spark, ctx, spec, create=False)
        if not present:
            missing.append(name)
    if not ctx.settings.storage.managed_tables and not missing:  # Unity Catalog keeps the views too
        for view in ALL_VIEWS:
            _create_view(spark, ctx, view)
    return tuple(missing)


def _register_location(spark: SparkSession, ctx: Context, spec: TableSpec, create: bool) -> bool:
    """Point this session's catalog entry at the table's folder under this home; return whether
    the table is registered there. Without a Delta table in the folder, ``create`` creates
    the table from its spec; otherwise the table stays absent.

    An entry pointing elsewhere (another home in the same session: tests, notebooks) or at a
    deleted folder is dropped first: for an external table that forgets the name, never data.
    """
    location = table_location(ctx, spec)
    exists = _is_delta_table(spark, location)
    entry = _catalog_entry_location(spark, ctx, spec)
    if entry is not None and (entry != _same_folder(location) or not exists):
        spark.sql(f"DROP TABLE IF EXISTS {table_name(ctx, spec)}")
        entry = None
    if not exists and not create:
        return False
    if entry is None:
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {schema_name(ctx, spec.layer)}")
        spark.sql(create_table_sql(ctx, spec, with_columns=not exists))
    return True


def _bring_up_to_date(spark: SparkSession, ctx: Context, name: str, spec: TableSpec) -> None:
    """An existing table gets what the spec added since it was created: columns (at the end,
    so appends by name keep working), changed properties (e.g. the audit retention in conf)
    and constraints. Nothing is committed when the table is already up to date."""
    from pyspark.sql.types import DataType, StructType

    have = {f.name.lower() for f in spark.table(name).schema.fields}
    wanted = DataType.fromDDL(spec.columns)
    assert isinstance(wanted, StructType)  # a column list parses as a struct
    missing = [f for f in wanted.fields if f.name.lower() not in have]
    if missing:
        columns = ", ".join(f"{quote_identifier(f.name)} {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({columns})")
    present = current_properties(spark, name)
    changed = {k: v for k, v in table_properties(ctx, spec).items() if present.get(k) != v}
    if changed:
        props = ", ".join(f"{sql_string(k)} = {sql_string(v)}" for k, v in changed.items())
        spark.sql(f"ALTER TABLE {name} SET TBLPROPERTIES ({props})")
    for constraint, condition in spec.constraints.items():
        if f"delta.constraints.{constraint.lower()}" not in present:
            spark.sql(f"ALTER TABLE {name} ADD CONSTRAINT {quote_identifier(constraint)} CHECK ({condition})")


def describe_table(spark: SparkSession, ctx: Context, spec: TableSpec) -> dict:
    """Name, rows, latest Delta version and location of one table."""
    name = table_name(ctx, spec)
    detail = spark.sql(f"DESCRIBE DETAIL {name}").first()
    latest = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    assert detail is not None and latest is not None  # both describe an existing table in one row
    version = latest["version"]
    return {
        "table": name,
        "rows": spark.table(name).count(),
        "version": int(version),
        "files": int(detail["numFiles"]),
        "location": _strip_scheme(detail["location"]),
    }
