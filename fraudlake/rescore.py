"""Re-scoring a slice of silver with another model version (``fraudlake rescore``).

After a better model is promoted, a fraud team wants recent transactions judged by
it, not only those that arrive after the restart: fraud the old model missed shows
up as new alerts. Rows are updated in place with one ``MERGE`` that records the new
score, flag, threshold and model version; Delta keeps the old ones, so an audit can
still show both (``VERSION AS OF``, the change data feed). Rows already scored by
that version are left alone, so running it twice changes nothing.

Gold's streams skip these update commits (they read silver's appends): a newly
flagged transaction gets its model alert here, and the per-minute dashboard
counts keep what was streamed.
"""

from __future__ import annotations

from datetime import datetime

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.tables import BRONZE_COLUMNS, GOLD_FRAUD_ALERTS, SILVER_SCORED, table_name
from fraudlake.timeutil import given_utc

# What a re-score replaces; everything else in the row is the transaction as validated.
SCORE_FIELDS = ("fraud_score", "is_flagged", "flag_threshold", "model_name", "model_version", "scored_at")
# A silver row is one bronze row: the id, its event time and when bronze received it.
MATCH = "t.transaction_id = s.transaction_id AND t.event_time = s.event_time AND t._ingest_time <=> s._ingest_time"


def bronze_column_names() -> list[str]:
    return [line.split()[0] for line in BRONZE_COLUMNS.strip().split(",\n")]


def rescore_silver(spark, ctx: Context, since: datetime | None = None, until: datetime | None = None,
                   ids: list[str] | None = None, model_uri: str | None = None) -> dict:
    """Score silver rows with event time in ``[since, until)`` and/or the given ids with
    ``model_uri`` (default the champion) and update them in place; alert newly flagged ones."""
    from pyspark.sql import functions as F

    from fraudlake.gold.aggregates import model_alerts
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
    stale = rows.where(~same_model).select(*bronze_column_names(), F.col("is_flagged").alias("was_flagged"))
    rescored = score_transactions(stale, scorer).dropDuplicates(["transaction_id", "event_time", "_ingest_time"])
    rescored = rescored.persist()  # scored once: the MERGE, the counts and the alerts see the same scores
    try:
        counts = rescored.agg(
            F.count("*").alias("n"),
            F.sum(F.col("was_flagged").cast("long")).alias("before"),
            F.sum(F.col("is_flagged").cast("long")).alias("after"),
            F.sum((F.col("is_flagged") & ~F.col("was_flagged")).cast("long")).alias("new"),
        ).first()
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
            _merge(spark, name, rescored, f"fraudlake rescore with {result['model']}")
            alerts = model_alerts(rescored.where(F.col("is_flagged") & ~F.col("was_flagged")))
            if result["newly_flagged"]:
                alerts.write.format("delta").mode("append").saveAsTable(table_name(ctx, GOLD_FRAUD_ALERTS))
                result["alerts_written"] = result["newly_flagged"]
    finally:
        rescored.unpersist()
    result["silver_version"] = int(spark.sql(f"DESCRIBE HISTORY {name} LIMIT 1").first()["version"])
    return result


def _merge(spark, name: str, rescored, note: str) -> None:
    """One MERGE of the new scores; the commit says which model re-scored (DESCRIBE HISTORY's userMetadata)."""
    from delta.tables import DeltaTable

    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, note)
    try:
        (
            DeltaTable.forName(spark, name).alias("t")
            .merge(rescored.alias("s"), MATCH)
            .whenMatchedUpdate(set={field: f"s.{field}" for field in SCORE_FIELDS})
            .execute()
        )
    except Exception as error:
        if "Concurrent" in type(error).__name__ or "CONCURRENT" in str(error):
            raise FraudlakeError(f"{name} changed while re-scoring (a running silver stream): run it again") from None
        raise
    finally:
        spark.conf.unset(key)
