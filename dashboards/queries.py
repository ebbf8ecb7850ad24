"""Spark SQL behind the dashboard and the report: small aggregates, collected as pandas frames.

Table names come from conf through :func:`fraudlake.tables.table_name`; what varies per
call (a time window, a row limit, a time unit) is a bound parameter (``:name``), never
formatted into the SQL text. Every read is a new query, and Delta answers each one from
the table's latest commit, a consistent snapshot: the dashboard reads while the
pipeline appends, without locks and without ever seeing half a micro-batch.

Nothing here writes to the lakehouse: tables another process has created are only
registered in this session's catalog (:func:`fraudlake.tables.attach_tables`, on every
read, so tables created later show up); tables that do not exist yet give empty frames,
which the figures show as an empty state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd

from fraudlake.settings import Context
from fraudlake.tables import (
    ALL_TABLES,
    ARRIVED_FRAUD_SQL,
    BRONZE_LABELS,
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_USER_MINUTE,
    SILVER_SCORED,
    attach_tables,
    gold_watermark_seconds,
    table_name,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Columns of each result, so a missing table gives an empty frame of the right shape.
COLUMNS = {
    "models": [
        "model_name",
        "model_version",
        "transactions",
        "flagged",
        "labelled",
        "true_positives",
        "false_positives",
        "false_negatives",
        "first_scored",
        "last_scored",
        "newest_event",
        "scored_age_seconds",
    ],
    "volumes": [
        "minute",
        "tx_count",
        "flagged_count",
        "total_amount",
        "flagged_amount",
        "is_final",
    ],
    "quality": ["minute", "labelled", "fraud", "true_positives", "false_positives"],
    "top_users": ["user_id", "tx_count", "flagged_count", "total_amount", "window_start", "is_final"],
    "scores": ["score_low", "score_high", "label", "transactions"],
    "alerts": ["alert_time", "alert_type", "transaction_id", "user_id", "fraud_score", "reason"],
    "alert_counts": ["alert_type", "alerts"],
}


def empty(kind: str) -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype="object") for column in COLUMNS[kind]})


# ----------------------------------------------------------------------------- queries

# A window is "the last N minutes before the newest row", not before the wall clock: a
# home replayed from history, or a pipeline that stopped an hour ago, still shows its data.
# ``:window_minutes`` 0 means everything.

# Model quality counts the fraud labels that have arrived (ARRIVED_FRAUD_SQL): the newest
# minutes' labels are still on their way. The simulator's own truth in silver (label_is_fraud)
# is not used here.

MODELS_SQL = f"""
SELECT model_name, model_version,
       count(*) AS transactions,
       count_if(is_flagged) AS flagged,
       count(*) AS labelled,
       count_if(is_flagged AND fraud_id IS NOT NULL) AS true_positives,
       count_if(is_flagged AND fraud_id IS NULL) AS false_positives,
       count_if(NOT is_flagged AND fraud_id IS NOT NULL) AS false_negatives,
       min(scored_at) AS first_scored,
       max(scored_at) AS last_scored,
       max(event_time) AS newest_event,
       (unix_micros(current_timestamp()) - unix_micros(max(scored_at))) / 1e6 AS scored_age_seconds
FROM {{silver}} LEFT JOIN ({ARRIVED_FRAUD_SQL}) ON transaction_id = fraud_id
GROUP BY model_name, model_version
ORDER BY last_scored DESC
"""

VOLUMES_SQL = """
SELECT date_trunc(:unit, minute) AS minute,
       sum(tx_count) AS tx_count, sum(flagged_count) AS flagged_count,
       sum(total_amount) AS total_amount, sum(flagged_amount) AS flagged_amount,
       bool_and(is_final) AS is_final
FROM {minutes}
WHERE :window_minutes = 0 OR minute >= (SELECT max(minute) FROM {minutes}) - make_dt_interval(0, 0, :window_minutes)
GROUP BY 1
ORDER BY 1
"""

GOLD_SPAN_SQL = """
SELECT min(minute) AS first_minute,
       max(minute) + INTERVAL 1 MINUTE AS gold_through,
       (unix_micros(current_timestamp()) - unix_micros(max(minute) + INTERVAL 1 MINUTE)) / 1e6 AS gold_age_seconds,
       count_if(NOT is_final) AS open_minutes
FROM {minutes}
"""

# Live quality needs false negatives, which gold does not keep: silver and the labels that
# have arrived, over the window only.
QUALITY_SQL = f"""
SELECT date_trunc(:unit, event_time) AS minute,
       count(*) AS labelled,
       count(fraud_id) AS fraud,
       count_if(is_flagged AND fraud_id IS NOT NULL) AS true_positives,
       count_if(is_flagged AND fraud_id IS NULL) AS false_positives
FROM {{silver}} LEFT JOIN ({ARRIVED_FRAUD_SQL}) ON transaction_id = fraud_id
WHERE :window_minutes = 0 OR event_time >= (SELECT max(event_time) FROM {{silver}}) - make_dt_interval(0, 0, :window_minutes)
GROUP BY 1
ORDER BY 1
"""

# Each user's busiest 5-minute window in the period, open ones included (is_final false). The
# windows are added up from gold.user_activity_minute as gold.user_activity_5m does, over the
# period's minutes only: a filter on the view's window_end would add up every minute first.
TOP_USERS_SQL = """
WITH newest AS (
  SELECT max(minute) AS minute FROM {user_minute}
), final AS (
  SELECT max(minute) - make_dt_interval(0, 0, 0, :watermark_seconds) AS through FROM {minutes}
), windows AS (
  SELECT m.user_id, w.window_start,
         sum(m.tx_count) AS tx_count, sum(m.flagged_count) AS flagged_count, sum(m.total_amount) AS total_amount
  FROM {user_minute} m
    LATERAL VIEW explode(sequence(m.minute - INTERVAL 4 MINUTES, m.minute, INTERVAL 1 MINUTE)) w AS window_start
  WHERE :window_minutes = 0
     OR m.minute >= (SELECT minute FROM newest) - make_dt_interval(0, 0, :window_minutes)
  GROUP BY m.user_id, w.window_start
)
SELECT user_id,
       max(tx_count) AS tx_count,
       max_by(flagged_count, tx_count) AS flagged_count,
       max_by(total_amount, tx_count) AS total_amount,
       max_by(window_start, tx_count) AS window_start,
       max_by(coalesce(window_start + INTERVAL 5 MINUTES <= (SELECT through FROM final), false), tx_count) AS is_final
FROM windows
WHERE :window_minutes = 0
   OR window_start >= (SELECT minute FROM newest) - make_dt_interval(0, 0, :window_minutes)
GROUP BY user_id
ORDER BY tx_count DESC, flagged_count DESC, user_id
LIMIT :limit
"""

# A histogram computed in Spark: :bins equal-width buckets between the lowest and highest score.
SCORES_SQL = """
WITH recent AS (
  SELECT fraud_score,
         CASE label_is_fraud WHEN 1 THEN 'fraud' WHEN 0 THEN 'genuine' ELSE 'unlabelled' END AS label
  FROM {silver}
  WHERE fraud_score IS NOT NULL
    AND (:window_minutes = 0 OR event_time >= (SELECT max(event_time) FROM {silver}) - make_dt_interval(0, 0, :window_minutes))
), bounds AS (
  SELECT min(fraud_score) AS low, greatest(max(fraud_score) - min(fraud_score), 1e-9) AS width FROM recent
), bucketed AS (
  SELECT least(CAST(floor((fraud_score - low) / width * :bins) AS INT), :bins - 1) AS bucket, label, low, width
  FROM recent CROSS JOIN bounds
)
SELECT low + bucket * width / :bins AS score_low, low + (bucket + 1) * width / :bins AS score_high,
       label, count(*) AS transactions
FROM bucketed
GROUP BY bucket, label, low, width
ORDER BY score_low, label
"""

ALERT_COLUMNS = "alert_time, alert_type, transaction_id, user_id, fraud_score, reason"
LATEST_ALERTS_SQL = f"SELECT {ALERT_COLUMNS} FROM {{alerts}} ORDER BY alert_time DESC, fraud_score DESC LIMIT :limit"
TOP_ALERTS_SQL = (
    f"SELECT {ALERT_COLUMNS} FROM {{alerts}} WHERE fraud_score IS NOT NULL "
    "ORDER BY fraud_score DESC, alert_time DESC LIMIT :limit"
)
ALERT_COUNTS_SQL = "SELECT alert_type, count(*) AS alerts FROM {alerts} GROUP BY alert_type ORDER BY alert_type"


def _names(ctx: Context) -> dict[str, str]:
    return {
        "silver": table_name(ctx, SILVER_SCORED),
        "labels": table_name(ctx, BRONZE_LABELS),
        "minutes": table_name(ctx, GOLD_DASHBOARD_MINUTE),
        "user_minute": table_name(ctx, GOLD_USER_MINUTE),
        "alerts": table_name(ctx, GOLD_FRAUD_ALERTS),
    }


# Since Spark 4.1 parameter markers are substituted by the SQL parser, and Delta's parser
# extension (DeltaSqlParser, delta-spark 4.4.0) does not pass them on: every
# ``spark.sql(text, args=...)`` fails with UNBOUND_SQL_PARAMETER (delta-io/delta#7640). The
# legacy mode binds them in the analyzer instead, which covers literals, LIMIT, CTEs and
# subqueries: everything these queries use.
LEGACY_PARAMETERS = "spark.sql.legacy.parameterSubstitution.constantsOnly"


def bind_parameters_in_the_analyzer(spark: SparkSession) -> None:
    """Switch the session to the legacy parameter mode (see :data:`LEGACY_PARAMETERS`)."""
    if spark.conf.get(LEGACY_PARAMETERS, "false") != "true":
        spark.conf.set(LEGACY_PARAMETERS, "true")


def run_sql(spark: SparkSession, text: str, args: dict | None = None) -> DataFrame:
    """``spark.sql`` with bound parameters that work on a Delta session."""
    if args:
        bind_parameters_in_the_analyzer(spark)
    return spark.sql(text, args=args or None)


def _frame(spark: SparkSession, ctx: Context, sql: str, kind: str, missing, **args) -> pd.DataFrame:
    names = _names(ctx)
    needed = [name for key, name in names.items() if "{" + key + "}" in sql]
    if any(name in missing for name in needed):
        return empty(kind)
    return run_sql(spark, sql.format(**names), args).toPandas()


PARALLEL_QUERIES = 4  # the dashboard's panels' queries in flight at once

TIME_UNITS = ("MINUTE", "HOUR", "DAY")


def time_unit(span_seconds: float | None) -> str:
    """A bucket for a chart over ``span_seconds``: minutes up to 6 hours, hours up to 30 days, then days."""
    if span_seconds is None or span_seconds <= 6 * 3600:
        return "MINUTE"
    return "HOUR" if span_seconds <= 30 * 86400 else "DAY"


@dataclass(frozen=True)
class Snapshot:
    """Everything one dashboard refresh (or the report) shows, as small pandas frames."""

    read_at: datetime
    missing: tuple[str, ...]
    models: pd.DataFrame  # one row per model version seen in silver, latest scorer first
    volumes: pd.DataFrame  # gold.dashboard_minute, per time unit; is_final false while a unit is open
    quality: pd.DataFrame  # silver labels vs flags, per time unit
    top_users: pd.DataFrame
    scores: pd.DataFrame  # fraud-score histogram by label
    alerts: pd.DataFrame  # latest (dashboard) or highest-scoring (report) alerts
    alert_counts: pd.DataFrame
    gold: dict = field(default_factory=dict)  # first_minute, gold_through, gold_age_seconds, open_minutes
    unit: str = "MINUTE"
    window_minutes: int | None = None
    time_zone: str = "UTC"


def read_snapshot(
    spark: SparkSession,
    ctx: Context,
    *,
    window_minutes: int | None = 60,
    top_users: int = 15,
    alerts: int = 20,
    bins: int = 40,
    alert_order: str = "latest",
) -> Snapshot:
    """Read every panel's data. ``window_minutes`` None: the whole history, bucketed to fit."""
    missing = attach_tables(spark, ctx)
    gold = {}
    watermark = float(ctx.settings.streams.watermark_seconds)
    if table_name(ctx, GOLD_DASHBOARD_MINUTE) not in missing:
        watermark = gold_watermark_seconds(spark, ctx)  # the gold stream's, not this reader's conf
        # Through pandas like every panel: a collected Row would hold the host's local time.
        span = run_sql(spark, GOLD_SPAN_SQL.format(**_names(ctx))).toPandas()
        gold = _gold_span(span)
    unit = "MINUTE"
    if window_minutes is None and gold:
        unit = time_unit((gold["gold_through"] - gold["first_minute"]).total_seconds())
    window = {"window_minutes": window_minutes or 0}
    alerts_sql = LATEST_ALERTS_SQL if alert_order == "latest" else TOP_ALERTS_SQL
    time_zone = spark.conf.get("spark.sql.session.timeZone")
    assert time_zone is not None  # a session always has one (Spark's default is the JVM's zone)
    panels: dict[str, tuple[str, dict[str, Any]]] = {
        "models": (MODELS_SQL, {}),
        "volumes": (VOLUMES_SQL, {"unit": unit, **window}),
        "quality": (QUALITY_SQL, {"unit": unit, **window}),
        "top_users": (
            TOP_USERS_SQL,
            {"limit": top_users, "watermark_seconds": watermark, **window},
        ),
        "scores": (SCORES_SQL, {"bins": bins, **window}),
        "alerts": (alerts_sql, {"limit": alerts}),
        "alert_counts": (ALERT_COUNTS_SQL, {}),
    }
    # The panels' queries run side by side: most of a small query is planning and Delta log
    # reading in the driver, which overlaps; on local[1] a refresh took 2.0 s against 2.9 s
    # one after another (7 queries, 2,000 rows of 40 minutes).
    bind_parameters_in_the_analyzer(spark)  # once, before the threads
    with ThreadPoolExecutor(max_workers=PARALLEL_QUERIES) as pool:
        futures = {
            kind: pool.submit(_frame, spark, ctx, sql, kind, missing, **args) for kind, (sql, args) in panels.items()
        }
        frames = {kind: future.result() for kind, future in futures.items()}
    return Snapshot(
        read_at=datetime.now(timezone.utc),
        missing=missing,
        **frames,
        gold=gold,
        unit=unit,
        window_minutes=window_minutes,
        time_zone=time_zone,
    )


def _gold_span(span: pd.DataFrame) -> dict:
    """The span's one row as a dict, its times naive in the session time zone like every frame's;
    empty while gold has no minute."""
    if span.empty or pd.isna(span["gold_through"].iloc[0]):
        return {}
    return {key: None if pd.isna(value) else value for key, value in span.iloc[0].items()}


def table_rows(spark: SparkSession, ctx: Context, missing=()) -> dict[str, int | None]:
    """Rows per table; None for a table not created yet."""
    return {
        table_name(ctx, spec): None if table_name(ctx, spec) in missing else spark.table(table_name(ctx, spec)).count()
        for spec in ALL_TABLES
    }
