"""``silver.scored_transactions`` → every gold table, in one streaming query.

Each micro-batch of new silver rows is aggregated and added to gold with Delta MERGE: a
user's 5-minute window and a dashboard minute are visible as soon as they hold a
transaction, and kept up to date while they are open. Once the watermark (the newest
event time gold has seen, minus ``streams.watermark_seconds``) passes a window's end, the
window is marked ``is_final``. A transaction later than that still counts, so gold always
equals the aggregate of silver; it refreshes its window's ``updated_at``.

Alerts come from the same micro-batch: a model alert per flagged transaction, and a
user-activity alert when a window the batch touched holds ``activity_alert_threshold``
transactions, one per burst (``first_alert_per_burst``).

Exactly once: every write carries the micro-batch id as Delta's transaction version
(appends through writer options, MERGE through the session confs), so a micro-batch
replayed after a crash skips what had committed. Alerts are read from the windows table
after its MERGE, so a replay finds the windows as the first attempt left them and makes
the same alerts.

One query instead of one per table: on a small machine every query pays its fixed cost
per micro-batch (planning, offsets, a checkpoint commit), and no Spark state store is
needed at all.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field

from fraudlake.gold.aggregates import (
    ACTIVITY_ALERT,
    MINUTE_SUMS,
    USER_WINDOW_SUMS,
    activity_alerts,
    dashboard_minute,
    first_alert_per_burst,
    merged_sums,
    model_alerts,
    user_windows,
)

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming_io import append_once, committed_once, triggered, writer_app_id
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_USER_ACTIVITY,
    SILVER_SCORED,
    table_name,
)

QUERY_NAME = "gold"
# The queries that kept gold before it was live (append-only windows, one query per table).
FORMER_QUERIES = ("gold_user_activity", "gold_dashboard", "gold_model_alerts", "gold_activity_alerts")
MINUTE_MICROS = 60_000_000
WINDOW_MICROS = 5 * MINUTE_MICROS
FRESHNESS_KEPT = 1_000  # per-batch freshness entries kept for progress lines


@dataclass
class GoldStats:
    """What the gold micro-batches did, for progress lines (the driver runs foreachBatch)."""

    batches: int = 0
    rows: int = 0
    model_alerts: int = 0
    activity_alerts: int = 0
    # Per non-empty batch: (commit wall time, rows, p95 of commit time - _ingest_time in s).
    freshness: deque = field(default_factory=lambda: deque(maxlen=FRESHNESS_KEPT))
    watermark_micros: int | None = None  # windows ending at or before this are final


@dataclass(frozen=True)
class _Window:
    """How a gold table's windows are keyed and where one ends, in SQL over an alias."""

    table: str
    keys: tuple[str, ...]
    sums: dict[str, str]
    start: str  # the column that starts a window (data skipping keeps MERGE to recent files)
    length_micros: int

    def end(self, alias: str) -> str:
        return f"{alias}.{self.start} + make_dt_interval(0, 0, 0, {self.length_micros / 1e6})"


class GoldBatchWriter:
    """The ``foreachBatch`` function of the gold query."""

    def __init__(self, ctx: Context, app_id: str, out=None):
        streams = ctx.settings.streams
        self.app_id = app_id
        self.out = out or sys.stdout
        self.user_windows = _Window(table_name(ctx, GOLD_USER_ACTIVITY), ("user_id", "window_start"),
                                    USER_WINDOW_SUMS, "window_start", WINDOW_MICROS)
        self.minutes = _Window(table_name(ctx, GOLD_DASHBOARD_MINUTE), ("minute",), MINUTE_SUMS, "minute",
                               MINUTE_MICROS)
        self.alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)
        self.watermark_delay_micros = streams.watermark_seconds * 1_000_000
        self.threshold = streams.activity_alert_threshold
        self.cooldown_micros = streams.activity_alert_cooldown_seconds * 1_000_000
        self.max_printed = streams.console_alerts_per_batch
        self.newest_micros: int | None = None  # the newest event time gold has counted
        self.finalized_through: int | None = None  # the watermark of the last finalizing update
        self.stats = GoldStats()

    def __call__(self, batch, batch_id: int) -> None:
        from pyspark.sql import functions as F

        session = batch.sparkSession  # the query's own session: its DML confs stay in this query
        rows = batch.persist()
        windows, raised = None, 0
        try:
            summary = rows.agg(
                F.count("*").alias("n"),
                F.count_if("is_flagged").alias("flagged"),
                F.unix_micros(F.min("event_time")).alias("first"),
                F.unix_micros(F.max("event_time")).alias("last"),
                F.percentile_approx(F.unix_micros("_ingest_time"), 0.05).alias("early_ingest"),
            ).first()
            if not summary["n"]:
                return
            watermark = self._advance_watermark(session, summary["last"])
            first_minute = summary["first"] - summary["first"] % MINUTE_MICROS
            windows = user_windows(rows).persist()
            self._merge(session, windows.drop("last_event_time"), self.user_windows, watermark,
                        first_minute - WINDOW_MICROS + MINUTE_MICROS, batch_id)
            self._merge(session, dashboard_minute(rows), self.minutes, watermark, first_minute, batch_id)
            activity, raised = self._activity_alerts(session, windows, first_minute - WINDOW_MICROS + MINUTE_MICROS)
            alerts = model_alerts(rows)
            if activity is not None:
                alerts = alerts.unionByName(activity)
            if summary["flagged"] or raised:
                append_once(alerts, self.alerts_table, self.app_id, batch_id)
                self._print(alerts, summary["flagged"] + raised)
            self._finalize(session, watermark)
        finally:
            if windows is not None:
                windows.unpersist()
            rows.unpersist()
        self._count(summary, watermark, raised)

    # ------------------------------------------------------------------ windows

    def _advance_watermark(self, session, batch_newest: int) -> int:
        """The newest event time seen, minus the delay. After a restart it starts from the newest
        minute gold holds: a little early, so a window may be marked final one minute later."""
        from pyspark.sql import functions as F

        if self.newest_micros is None:
            held = session.table(self.minutes.table).agg(F.unix_micros(F.max("minute")).alias("m")).first()["m"]
            self.newest_micros = held
        self.newest_micros = max(batch_newest, self.newest_micros or batch_newest)
        return self.newest_micros - self.watermark_delay_micros

    def _merge(self, session, source, window: _Window, watermark: int, earliest_start: int, batch_id: int) -> None:
        """Add the batch's aggregates to ``window.table`` (insert new windows), exactly once."""
        from delta.tables import DeltaTable

        final = f"timestamp_micros({watermark})"
        matched = " AND ".join(f"t.{key} = s.{key}" for key in window.keys)
        # A condition on the target alone lets Delta skip every file of older windows.
        recent = f"t.{window.start} >= timestamp_micros({earliest_start})"
        updates = {
            **merged_sums(window.sums),
            "is_final": f"t.is_final OR {window.end('t')} <= {final}",
            "updated_at": "current_timestamp()",
        }
        inserts = {column: f"s.{column}" for column in source.columns}
        inserts.update({"is_final": f"{window.end('s')} <= {final}", "updated_at": "current_timestamp()"})
        with committed_once(session, self.app_id, batch_id):
            (
                DeltaTable.forName(session, window.table).alias("t")
                .merge(source.alias("s"), f"{matched} AND {recent}")
                .whenMatchedUpdate(set=updates)
                .whenNotMatchedInsert(values=inserts)
                .execute()
            )

    def _finalize(self, session, watermark: int) -> None:
        """Mark the windows the watermark has passed as final. Windows end on whole minutes, so
        this commits only when the watermark enters a new minute; setting a flag to its final
        value is harmless to repeat, so it needs no transaction id."""
        from delta.tables import DeltaTable

        through = watermark - watermark % MINUTE_MICROS
        if self.finalized_through is not None and through <= self.finalized_through:
            return
        for window in (self.user_windows, self.minutes):
            latest_start = through - window.length_micros
            condition = f"NOT is_final AND {window.start} <= timestamp_micros({latest_start})"
            if self.finalized_through is not None:  # only windows that ended since the last time
                condition += f" AND {window.start} > timestamp_micros({self.finalized_through - window.length_micros})"
            DeltaTable.forName(session, window.table).update(
                condition, {"is_final": "true", "updated_at": "current_timestamp()"}
            )
        self.finalized_through = through

    # ------------------------------------------------------------------ alerts

    def _activity_alerts(self, session, windows, earliest_start: int) -> tuple:
        """User-activity alerts for the windows this batch touched that now hold at least the
        threshold, one per burst, and how many (None and 0 when there are none)."""
        from pyspark.sql import functions as F

        busy = session.table(self.user_windows.table).where(
            (F.col("window_start") >= F.timestamp_micros(F.lit(earliest_start)))
            & (F.col("tx_count") >= F.lit(self.threshold))
        )
        touched = windows.select("user_id", "window_start", "last_event_time")
        busy_touched = busy.join(touched, ["user_id", "window_start"]).withColumn("_start", F.unix_micros("window_start"))
        candidates = [
            (r["user_id"], r["_at"], r["_start"], r["reason"])
            for r in activity_alerts(busy_touched, "_start").withColumn("_at", F.unix_micros("alert_time")).collect()
        ]
        if not candidates:
            return None, 0
        kept = first_alert_per_burst(candidates, self._last_alerted(session, candidates), self.cooldown_micros)
        if not kept:
            return None, 0
        rows = [(ACTIVITY_ALERT, None, user, None, reason, at) for user, at, _, reason in kept]
        frame = session.createDataFrame(
            rows, "alert_type STRING, transaction_id STRING, user_id STRING, fraud_score DOUBLE, reason STRING, _at BIGINT"
        ).select("alert_type", "transaction_id", "user_id", "fraud_score", "reason",
                 F.timestamp_micros("_at").alias("alert_time"))
        return frame, len(kept)

    def _last_alerted(self, session, candidates) -> dict:
        """User -> time (epoch µs) of their latest activity alert that can still silence a candidate.

        Read from ``gold.fraud_alerts``, which only this query writes activity alerts to: a
        replayed micro-batch sees what the first attempt saw (its own append had not committed,
        or is skipped), so the choice is the same.
        """
        from pyspark.sql import functions as F

        since = min(at for _, at, *_ in candidates) - self.cooldown_micros
        users = sorted({user for user, *_ in candidates})
        previous = (
            session.table(self.alerts_table)
            .where((F.col("alert_type") == F.lit(ACTIVITY_ALERT)) & (F.unix_micros("alert_time") > F.lit(since))
                   & F.col("user_id").isin(users))
            .groupBy("user_id").agg(F.max(F.unix_micros("alert_time")).alias("last"))
        )
        return {r["user_id"]: r["last"] for r in previous.collect()}

    def _print(self, alerts, total: int) -> None:
        """Up to ``console_alerts_per_batch`` alerts on the console, times formatted by Spark in UTC."""
        from pyspark.sql import functions as F

        shown = (
            alerts.orderBy("alert_time").limit(self.max_printed)
            .select("alert_type", F.date_format("alert_time", "HH:mm:ss").alias("at"), "transaction_id", "user_id",
                    "reason")
            .collect()
        ) if self.max_printed else []
        for alert in shown:
            who = alert["transaction_id"] or alert["user_id"]
            print(f"ALERT {alert['alert_type']:<13} {alert['at']} {who} {alert['user_id']}: {alert['reason']}",
                  file=self.out, flush=True)
        if total > len(shown):
            print(f"ALERT ... and {total - len(shown):,} more alerts in this batch", file=self.out, flush=True)

    def _count(self, summary, watermark: int, raised: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += summary["n"]
        stats.model_alerts += summary["flagged"] or 0
        stats.activity_alerts += raised
        stats.watermark_micros = watermark
        if summary["early_ingest"] is not None:
            now = time.time()
            stats.freshness.append((now, summary["n"], now - summary["early_ingest"] / 1e6))


def check_checkpoint(ctx: Context) -> None:
    """Refuse a home whose gold was written by the former append-only queries: the live query
    would read silver from the start and add every window to the ones already there."""
    from pathlib import Path

    former = [name for name in FORMER_QUERIES if Path(ctx.paths.checkpoint(name)).exists()]
    if former and not Path(ctx.paths.checkpoint(QUERY_NAME)).exists():
        raise FraudlakeError(
            "gold in this home was written by an earlier fraudlake (one append-only query per table, "
            f"checkpoints {', '.join(former)}); gold is now kept live by one query. Rebuild it from silver: "
            f"remove the gold tables' folders under {ctx.paths.warehouse}/gold and those checkpoints, then run again"
        )


def start_gold(spark, ctx: Context, out=None, available_now: bool = False):
    """Start the gold query; returns ``(query, writer)`` (the writer holds live stats).

    Gold reads silver's appends. A re-score (``fraudlake rescore``) updates silver rows in
    place and raises its own alerts, so its commits are skipped rather than failing the
    stream. ``available_now`` processes what silver holds, then stops.
    """
    check_checkpoint(ctx)
    checkpoint = ctx.paths.checkpoint(QUERY_NAME)
    writer = GoldBatchWriter(ctx, writer_app_id(checkpoint, QUERY_NAME), out)
    silver = spark.readStream.option("skipChangeCommits", "true").table(table_name(ctx, SILVER_SCORED))
    stream = silver.writeStream.queryName(QUERY_NAME).foreachBatch(writer).option("checkpointLocation", checkpoint)
    return triggered(stream, ctx.settings.streams.gold_trigger_seconds, available_now).start(), writer
