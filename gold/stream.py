"""``silver.scored_transactions`` → the gold tables, one streaming query each.

Windows are emitted when final (watermark + append mode); every query appends its
rows idempotently from ``foreachBatch`` (Delta's ``txnAppId``/``txnVersion``), and
alerts are also printed to the console as they happen. A burst raises one
user-activity alert, however many sliding windows hold it (``ActivityAlertWriter``).
"""

from __future__ import annotations

import sys

from fraudlake.gold.aggregates import (
    ACTIVITY_ALERT,
    MODEL_ALERT,
    activity_alerts,
    dashboard_minute,
    first_alert_per_burst,
    model_alerts,
    user_activity_5m,
    with_watermark,
)
from fraudlake.settings import Context
from fraudlake.streaming_io import append_once, writer_app_id
from fraudlake.tables import GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS, GOLD_USER_ACTIVITY, SILVER_SCORED, table_name


class BatchAppender:
    """The ``foreachBatch`` function of a gold query: appends each micro-batch's rows exactly once.

    An idempotent Delta append (``txnAppId``/``txnVersion``) reconstructs the table's
    state before it commits, even for no rows, and most micro-batches of a windowed
    query emit nothing (a window closes once a minute). So an empty batch commits
    nothing: counting the cached batch costs a fraction of a Delta commit.
    """

    def __init__(self, table: str, app_id: str):
        self.table, self.app_id = table, app_id

    def __call__(self, batch, batch_id: int) -> None:
        batch = batch.persist()  # a stateful batch must not be computed twice
        try:
            rows, total = self.rows_to_append(batch)
            if total:
                append_once(rows, self.table, self.app_id, batch_id)
                self.appended(rows, total)
        finally:
            batch.unpersist()

    def rows_to_append(self, batch) -> tuple:
        """The rows of the (cached) batch to append, and how many: all of them here."""
        return batch, batch.count()

    def appended(self, batch, total: int) -> None:
        """Called after a non-empty append, while the batch is still cached."""


class AlertWriter(BatchAppender):
    """Appends alerts exactly once and prints a bounded number of them per batch."""

    def __init__(self, kind: str, table: str, app_id: str, max_printed: int, out=None):
        super().__init__(table, app_id)
        self.kind, self.max_printed = kind, max_printed
        self.out = out or sys.stdout

    def appended(self, batch, total: int) -> None:
        from pyspark.sql import functions as F

        # The time is formatted by Spark in the session's time zone (UTC), not by Python in the host's.
        shown = (
            batch.orderBy("alert_time").limit(self.max_printed)
            .select("alert_type", F.date_format("alert_time", "HH:mm:ss").alias("at"), "transaction_id", "user_id", "reason")
            .collect()
        ) if self.max_printed else []
        for alert in shown:
            who = alert["transaction_id"] or alert["user_id"]
            print(f"ALERT {alert['alert_type']:<13} {alert['at']} {who} {alert['user_id']}: {alert['reason']}",
                  file=self.out, flush=True)
        if total > self.max_printed:
            print(f"ALERT ... and {total - self.max_printed:,} more {self.kind} alerts in this batch",
                  file=self.out, flush=True)


class ActivityAlertWriter(AlertWriter):
    """User-activity alerts: one per burst, not one per sliding window that holds it.

    A candidate (a final window at or over the threshold) raises an alert only if the
    user's previous activity alert is at least ``cooldown`` older. The previous alerts
    are read from ``gold.fraud_alerts`` itself, which only this query writes activity
    alerts to, so a replayed micro-batch sees what the first attempt saw and makes the
    same choice (and its append is idempotent): still exactly once.
    """

    def __init__(self, table: str, app_id: str, max_printed: int, cooldown_seconds: int, out=None):
        super().__init__(ACTIVITY_ALERT, table, app_id, max_printed, out)
        self.cooldown_micros = int(cooldown_seconds * 1_000_000)

    def rows_to_append(self, batch) -> tuple:
        """The candidates that open a burst, and how many."""
        from pyspark.sql import functions as F

        candidates = [
            (r["user_id"], r["end"]) for r in batch.select("user_id", F.unix_micros("alert_time").alias("end")).collect()
        ]
        kept = first_alert_per_burst(candidates, self._last_alerted(batch, candidates), self.cooldown_micros) if candidates else []
        if not kept:
            return batch, 0
        keys = batch.sparkSession.createDataFrame(kept, "_user STRING, _end BIGINT")
        alerts = batch.join(
            keys, (F.col("user_id") == F.col("_user")) & (F.unix_micros("alert_time") == F.col("_end")), "left_semi"
        )
        return alerts, len(kept)

    def _last_alerted(self, batch, candidates) -> dict:
        """User -> time (epoch µs) of their latest activity alert that can still silence a candidate."""
        from pyspark.sql import functions as F

        since = min(end for _, end in candidates) - self.cooldown_micros
        previous = (
            batch.sparkSession.table(self.table)
            .where((F.col("alert_type") == F.lit(ACTIVITY_ALERT)) & (F.unix_micros("alert_time") > F.lit(since)))
            .join(batch.select("user_id").distinct(), "user_id", "left_semi")
            .groupBy("user_id").agg(F.max(F.unix_micros("alert_time")).alias("last"))
        )
        return {r["user_id"]: r["last"] for r in previous.collect()}


def _trigger(writer, ctx: Context, available_now: bool):
    if available_now:
        return writer.trigger(availableNow=True)
    seconds = ctx.settings.streams.gold_trigger_seconds
    return writer.trigger(processingTime=f"{seconds} seconds") if seconds > 0 else writer


def _start(frame, ctx: Context, name: str, appender: BatchAppender, available_now: bool, output_mode: str = "append"):
    writer = (
        frame.writeStream.queryName(name).outputMode(output_mode).foreachBatch(appender)
        .option("checkpointLocation", ctx.paths.checkpoint(name))
    )
    return _trigger(writer, ctx, available_now).start()


GOLD_QUERIES = ("gold_user_activity", "gold_dashboard", "gold_model_alerts", "gold_activity_alerts")


def start_gold(spark, ctx: Context, out=None, available_now: bool = False, names=GOLD_QUERIES) -> dict:
    """Start the gold queries (all, or ``names``); returns ``{name: query}``.

    User-activity alerts read ``gold.user_activity_5m`` as a stream, so each final
    window is checked once. With ``available_now`` they see only the windows already
    written: start them after the windows query has finished.
    """
    streams = ctx.settings.streams
    # Gold aggregates silver's appends; a re-score (fraudlake rescore) updates rows in place
    # and raises its own alerts, so its commits are skipped rather than failing the stream.
    silver = spark.readStream.option("skipChangeCommits", "true").table(table_name(ctx, SILVER_SCORED))
    windowed = with_watermark(silver, streams.watermark_seconds)
    alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)

    def app_id(name: str) -> str:
        return writer_app_id(ctx.paths.checkpoint(name), name)

    def windows(name: str, frame, spec):
        return _start(frame, ctx, name, BatchAppender(table_name(ctx, spec), app_id(name)), available_now)

    def alerts(kind: str, name: str, frame):
        if kind == ACTIVITY_ALERT:
            writer = ActivityAlertWriter(alerts_table, app_id(name), streams.console_alerts_per_batch,
                                         streams.activity_alert_cooldown_seconds, out)
        else:
            writer = AlertWriter(kind, alerts_table, app_id(name), streams.console_alerts_per_batch, out)
        return _start(frame, ctx, name, writer, available_now)

    builders = {
        "gold_user_activity": lambda name: windows(name, user_activity_5m(windowed), GOLD_USER_ACTIVITY),
        "gold_dashboard": lambda name: windows(name, dashboard_minute(windowed), GOLD_DASHBOARD_MINUTE),
        "gold_model_alerts": lambda name: alerts(MODEL_ALERT, name, model_alerts(silver)),
        "gold_activity_alerts": lambda name: alerts(
            ACTIVITY_ALERT, name,
            activity_alerts(spark.readStream.table(table_name(ctx, GOLD_USER_ACTIVITY)), streams.activity_alert_threshold),
        ),
    }
    return {name: builders[name](name) for name in names}
