"""Re-scoring a slice of silver with another model version (``fraudlake rescore``).

After a better model is promoted, a fraud team wants recent transactions judged by
it, not only those that arrive after the restart: fraud the old model missed shows
up as new alerts. Rows are updated in place with one ``MERGE`` that records the new
score, flag, threshold and model version; Delta keeps the old ones, so an audit can
still show both (``VERSION AS OF``, the change data feed). Rows already scored by
that version are left alone, so running it twice changes nothing.

Gold's streams skip these update commits (they read silver's appends): a newly
flagged transaction gets its model alert here, and the per-minute dashboard
counts keep what was streamed. Alerts are written before the MERGE and only where a
transaction has none, so a crash between the two is repaired by running the same
``fraudlake rescore`` again: every alert exactly once, silver updated.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.tables import BRONZE_COLUMNS, GOLD_FRAUD_ALERTS, SILVER_SCORED, table_name
from fraudlake.timeutil import given_utc

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# What a re-score replaces; everything else in the row is the transaction as validated.
SCORE_FIELDS = ("fraud_score", "is_flagged", "flag_threshold", "model_name", "model_version", "scored_at")
# A silver row is one bronze row: the id, its event time and when bronze received it.
MATCH = "t.transaction_id = s.transaction_id AND t.event_time = s.event_time AND t._ingest_time <=> s._ingest_time"


def bronze_column_names() -> list[str]:
    return [line.split()[0] for line in BRONZE_COLUMNS.strip().split(",\n")]


def rescore_silver(
    spark: SparkSession,
    ctx: Context,
    since: datetime | None = None,
    until: datetime | None = None,
    ids: list[str] | None = None,
    model_uri: str | None = None,
) -> dict:
    """Score silver rows with event time in ``[since, until)`` and/or the given ids with
    ``model_uri`` (default the champion) and update them in place; alert newly flagged ones."""
    from pyspark.sql import functions as F

    from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES
    from fraudlake.ml.serving import load_scorer, score_transactions

    if since is None and until is None and not ids:
        raise FraudlakeError("choose the transactions to re-score: --since/--until (event time) and/or --ids")
    scorer = load_scorer(spark, ctx, model_uri)
    name = table_name(ctx, SILVER_SCORED)
    chosen = F.lit(True)
    if since is not None:
        chosen &= F.col("event_time") >= F.lit(given_utc(since))  # aware: F.lit reads naive as local time
    if until is not None:
        chosen &= F.col("event_time") < F.lit(given_utc(until))
    if ids:
        chosen &= F.col("transaction_id").isin(*[F.lit(i) for i in ids])
    rows = spark.table(name).where(chosen)
    same_model = F.col("model_name").eqNullSafe(F.lit(scorer.model_name)) & F.col("model_version").eqNullSafe(
        F.lit(scorer.model_version)
    )
    # Scored again on the behavioural features silver computed when the row arrived.
    stale = rows.where(~same_model).select(
        *bronze_column_names(), *BEHAVIOUR_FEATURES, F.col("is_flagged").alias("was_flagged")
    )
    rescored = score_transactions(stale, scorer).dropDuplicates(["transaction_id", "event_time", "_ingest_time"])
    rescored = rescored.persist()  # scored once: the MERGE, the counts and the alerts see the same scores
    try:
        counts = rescored.agg(
            F.count("*").alias("n"),
            F.sum(F.col("was_flagged").cast("long")).alias("before"),
            F.sum(F.col("is_flagged").cast("long")).alias("after"),
            F.sum((F.col("is_flagged") & ~F.col("was_flagged")).cast("long")).alias("new"),
        ).first()
        assert counts is not None  # an aggregate without grouping has one row
        result = {
            "model": f"{scorer.model_name} v{scorer.model_version}",
            "rows_in_slice": rows.count(),
            "rescored": counts["n"],
            "flagged_before": counts["before"] or 0,
            "flagged_after": counts["after"] or 0,
            "newly_flagged": counts["new"] or 0,
            "alerts_written": 0,
        }
        if counts["n"]:
            # Alerts first, then the MERGE: the two are one replayable step. Alerts are
            # inserted only for transactions that have no model alert yet, and silver's rows
            # stay stale until the MERGE, so a rerun after a crash anywhere in between finds
            # the same rows to re-score, writes only the alerts still missing, then merges.
            result["alerts_written"] = _append_missing_alerts(
                spark, ctx, rescored.where(F.col("is_flagged") & ~F.col("was_flagged"))
            )
            _merge(spark, name, rescored, f"fraudlake rescore with {result['model']}")
    finally:
        rescored.unpersist()
    latest = spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()
    assert latest is not None  # the table has at least its creating commit
    result["silver_version"] = int(latest["version"])
    return result


def _append_missing_alerts(spark: SparkSession, ctx: Context, newly_flagged: DataFrame) -> int:
    """Model alerts for newly flagged rows that have none yet (one model alert per transaction).

    A newly flagged row was not flagged when gold's stream saw it, so no streamed alert
    can race with this one; the anti-join makes a rerun write only what is missing.
    """
    from pyspark.sql import functions as F

    from fraudlake.gold.aggregates import MODEL_ALERT, model_alerts

    table = table_name(ctx, GOLD_FRAUD_ALERTS)
    existing = spark.table(table).where(F.col("alert_type") == F.lit(MODEL_ALERT)).select("transaction_id")
    missing = model_alerts(newly_flagged).join(existing, "transaction_id", "left_anti").persist()
    try:
        n = missing.count()
        if n:
            missing.write.format("delta").mode("append").saveAsTable(table)
    finally:
        missing.unpersist()
    return n


def _merge(spark: SparkSession, name: str, rescored: DataFrame, note: str) -> None:
    """One MERGE of the new scores; the commit says which model re-scored (DESCRIBE HISTORY's userMetadata)."""
    from delta.tables import DeltaTable

    from fraudlake.streaming_io import USER_METADATA as key

    previous = spark.conf.get(key, None)  # a user's own commit note in a notebook session stays theirs
    spark.conf.set(key, note)
    try:
        (
            DeltaTable.forName(spark, name)
            .alias("t")
            .merge(rescored.alias("s"), MATCH)
            .whenMatchedUpdate(set={field: f"s.{field}" for field in SCORE_FIELDS})
            .execute()
        )
    except Exception as error:
        if "Concurrent" in type(error).__name__ or "CONCURRENT" in str(error):
            raise FraudlakeError(f"{name} changed while re-scoring (a running silver stream): run it again") from None
        raise
    finally:
        spark.conf.unset(key) if previous is None else spark.conf.set(key, previous)
