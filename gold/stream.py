"""``silver.scored_transactions`` → the gold tables, one streaming query each.

Windows are appended when final (watermark + append mode, Delta sink). Alerts are
appended idempotently from ``foreachBatch`` and printed to the console as they happen.
"""

from __future__ import annotations

import sys

from fraudlake.gold.aggregates import (
    ACTIVITY_ALERT,
    MODEL_ALERT,
    activity_alerts,     dashboard_minute,
    model_alerts,
    user_activity_5m,
    with_watermark,
)
from fraudlake.settings import Context
from fraudlake.streaming_io import append_once, writer_app_id
from fraudlake.tables import GOLD_DASHBOARD_MINUTE, GOLD_FRAUD_ALERTS, GOLD_USER_ACTIVITY, SILVER_SCORED, table_name


class AlertWriter:
    """Appends alerts exactly once and prints a bounded number of them per batch."""

    def __init__(self, kind: str, table: str, app_id: str, max_printed: int, out=None):
        self.kind, self.table, self.app_id, self.max_printed = kind, table, app_id, max_printed
        self.out = out or sys.stdout
        self.count = 0

    def __call__(self, batch, batch_id: int) -> None:
        batch = batch.persist()
        try:
            append_once(batch, self.table, self.app_id, batch_id)
            shown = batch.orderBy("alert_time").limit(self.max_printed + 1).collect() if self.max_printed else []
            total = batch.count()
        finally:
            batch.unpersist()
        self.count += total
        for alert in shown[: self.max_printed]:
            who = alert["transaction_id"] or alert["user_id"]
            print(f"ALERT {alert['alert_type']:<13} {alert['alert_time']:%H:%M:%S} {who} {alert['user_id']}: {alert['reason']}",
                  file=self.out, flush=True)
        if total > self.max_printed:
            print(f"ALERT ... and {total - self.max_printed:,} more {self.kind} alerts in this batch",
                  file=self.out, flush=True)


def _trigger(writer, ctx: Context, available_now: bool):
    if available_now:
        return writer.trigger(availableNow=True)
    seconds = ctx.settings.streams.gold_trigger_seconds
    return writer.trigger(processingTime=f"{seconds} seconds") if seconds > 0 else writer


def _delta_append(frame, ctx: Context, name: str, table: str, available_now: bool):
    writer = (
        frame.writeStream.format("delta").queryName(name).outputMode("append")
        .option("checkpointLocation", ctx.paths.checkpoint(name))
    )
    return _trigger(writer, ctx, available_now).toTable(table)


def _alert_stream(frame, ctx: Context, name: str, alerts: AlertWriter, available_now: bool):
    writer = frame.writeStream.queryName(name).foreachBatch(alerts).option("checkpointLocation", ctx.paths.checkpoint(name))
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

    def alerts(kind: str, name: str, frame):
        writer = AlertWriter(kind, alerts_table, writer_app_id(ctx.paths.checkpoint(name), name),
                             streams.console_alerts_per_batch, out)
        return _alert_stream(frame, ctx, name, writer, available_now)

    builders = {
        "gold_user_activity": lambda name: _delta_append(
            user_activity_5m(windowed), ctx, name, table_name(ctx, GOLD_USER_ACTIVITY), available_now
        ),
        "gold_dashboard": lambda name: _delta_append(
            dashboard_minute(windowed), ctx, name, table_name(ctx, GOLD_DASHBOARD_MINUTE), available_now
        ),
        "gold_model_alerts": lambda name: alerts(MODEL_ALERT, name, model_alerts(silver)),
        "gold_activity_alerts": lambda name: alerts(
            ACTIVITY_ALERT, name,
            activity_alerts(spark.readStream.table(table_name(ctx, GOLD_USER_ACTIVITY)), streams.activity_alert_threshold),
        ),
    }
    return {name: builders[name](name) for name in names}
