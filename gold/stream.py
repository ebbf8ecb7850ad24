"""``silver.scored_transactions`` → every gold table, in two streaming queries.

``gold_windows`` keeps the windows. One stateful aggregation (Spark's state store, update
mode) keys every silver row by each window that holds it: its five sliding 5-minute user
windows and its minute (:func:`~fraudlake.gold.aggregates.live_keys`). Each micro-batch
emits the windows it changed, with their absolute values, and ``foreachBatch`` writes them:

- ``user_activity_5m``: one MERGE of the changed windows (set, not add);
- ``dashboard_minute``: every open minute rewritten with ``replaceWhere`` (a handful of rows,
  cheaper than a MERGE and marking minutes final in the same commit);
- ``fraud_alerts``: a user-activity alert when a changed window holds
  ``activity_alert_threshold`` transactions, one per burst (``first_alert_per_burst``),
  straight from the batch: no table is read back.

The watermark is on the window end: a window is open until the newest minute gold has
counted begins ``streams.watermark_seconds`` after its end. Then the state store drops it
and the table marks it ``is_final``. A transaction later than that still counts in the
windows that are open; the final ones no longer change (Spark drops the row from them, as
any windowed aggregation with a watermark does).

``gold_alerts`` appends one model alert per flagged silver row: stateless, so no
transaction, however late, loses its alert.

Exactly once: every write carries the micro-batch id as Delta's transaction version
(appends and ``replaceWhere`` through writer options, MERGE through the session confs),
and the state store is versioned by batch, so a micro-batch replayed after a crash
emits the same windows and skips what had committed. The writer keeps only the open
minutes and the last alert per user in memory, and reloads them from the tables when
it starts.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from fraudlake.errors import FraudlakeError
from fraudlake.gold.aggregates import (
    ACTIVITY_ALERT,
    MINUTE_KIND,
    MINUTE_MICROS,
    USER_KIND,
    WINDOW_MICROS,
    activity_reason,
    first_alert_per_burst,
    live_keys,
    live_sums,
    model_alerts,
)
from fraudlake.settings import Context
from fraudlake.streaming_io import append_once, committed_once, triggered, writer_app_id
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_USER_ACTIVITY,
    SILVER_SCORED,
    table_name,
)
from fraudlake.timeutil import utc_clock

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

QUERY_NAME = "gold_windows"
ALERTS_QUERY_NAME = "gold_alerts"
# The queries that kept gold before: one append-only query per table, then one query that
# added each batch's sums to the tables (no state store).
FORMER_QUERIES = ("gold_user_activity", "gold_dashboard", "gold_model_alerts", "gold_activity_alerts", "gold")
FRESHNESS_KEPT = 1_000  # per-batch freshness entries kept for progress lines
MINUTE_COLUMNS = (
    "tx_count",
    "flagged_count",
    "total_amount",
    "flagged_amount",
    "true_positives",
    "false_positives",
    "unknown_currency_count",
)
ALERT_SCHEMA = "alert_type STRING, transaction_id STRING, user_id STRING, fraud_score DOUBLE, reason STRING, _at BIGINT"


@dataclass
class GoldStats:
    """What the gold micro-batches did, for progress lines (the driver runs foreachBatch);
    shared by the windows and the alerts query."""

    batches: int = 0
    rows: int = 0
    model_alerts: int = 0
    activity_alerts: int = 0
    # Per non-empty windows batch: (commit wall time, rows, commit time - ingest time of the
    # first rows it counted, in s).
    freshness: deque = field(default_factory=lambda: deque(maxlen=FRESHNESS_KEPT))


def watermark_delay_micros(watermark_seconds: float) -> int:
    """The state store's watermark delay on window ends. The newest end Spark sees is that of
    the newest row's last sliding window, 5 minutes after its minute began; a window is final
    once that minute began ``watermark_seconds`` after the window's end.

    >>> watermark_delay_micros(120) // 60_000_000
    7
    """
    return WINDOW_MICROS + int(watermark_seconds * 1_000_000)


def live_windows(silver: DataFrame, watermark_seconds: float) -> DataFrame:
    """The stateful aggregation of the ``gold_windows`` query over a silver stream."""
    delay = watermark_delay_micros(watermark_seconds)
    return live_sums(live_keys(silver).withWatermark("end", f"{delay // 1000} milliseconds"))


class GoldBatchWriter:
    """The ``foreachBatch`` function of the ``gold_windows`` query: its input is the windows
    the micro-batch changed (:func:`live_windows`), with absolute values."""

    def __init__(self, ctx: Context, app_id: str, out: TextIO | None = None, stats: GoldStats | None = None) -> None:
        streams = ctx.settings.streams
        self.app_id = app_id
        self.out = out or sys.stdout
        self.windows_table = table_name(ctx, GOLD_USER_ACTIVITY)
        self.minutes_table = table_name(ctx, GOLD_DASHBOARD_MINUTE)
        self.alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)
        self.lateness_micros = int(streams.watermark_seconds * 1_000_000)
        self.threshold = streams.activity_alert_threshold
        self.cooldown_micros = streams.activity_alert_cooldown_seconds * 1_000_000
        self.max_printed = streams.console_alerts_per_batch
        self.stats = stats or GoldStats()
        # Restored from the tables at the first batch (see _restore):
        self.newest_minute: int | None = None  # the newest minute gold has counted (epoch µs)
        self.open_minutes: dict[int, dict] = {}  # minute's end -> its values, for minutes not final
        self.last_alerted: dict[str, int] | None = None  # user -> their latest activity alert
        self.finalized_through: int | None = None  # user windows ending at or before it are marked final
        self.newest_ingest: int | None = None  # the newest _ingest_time counted

    # ------------------------------------------------------------------ the batch

    def __call__(self, changed: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        session = changed.sparkSession  # the query's own session: its DML confs stay in this query
        changed = changed.persist()
        try:
            # One job: the minutes (a handful) and the user windows at the threshold (alert candidates).
            picked = (
                changed.where((F.col("kind") == F.lit(MINUTE_KIND)) | (F.col("tx_count") >= F.lit(self.threshold)))
                .withColumn("end", F.unix_micros("end"))
                .withColumn("last_event_time", F.unix_micros("last_event_time"))
                .withColumn("newest_ingest", F.unix_micros("newest_ingest"))
                .collect()
            )
            minutes = {r["end"]: r.asDict() for r in picked if r["kind"] == MINUTE_KIND}
            if not minutes:
                return  # a batch that only moved the watermark
            self._restore(session)
            # Windows ending at or before ``final`` are final: the state store's watermark (it
            # drops them, and late rows for them, from the next batch on). ``before``: the same
            # as of the previous batch; every window this batch changed ends after it.
            before = None if self.newest_minute is None else self.newest_minute - self.lateness_micros
            self.newest_minute = max(self.newest_minute or 0, max(minutes) - MINUTE_MICROS)
            final = self.newest_minute - self.lateness_micros
            self._merge_windows(session, changed, final, before, batch_id)
            rows = self._write_minutes(session, minutes, final, before, batch_id)
            busy = [r for r in picked if r["kind"] == USER_KIND]
            raised = self._activity_alerts(session, busy, batch_id) if busy else 0
            self._finalize(session, final)
        finally:
            changed.unpersist()
        self._count(rows, minutes, final, raised)

    def _restore(self, session: SparkSession) -> None:
        """At the first batch: the newest minute and the open minutes from ``dashboard_minute``
        (as the last committed batch left them), and who had an activity alert lately."""
        from pyspark.sql import functions as F

        if self.last_alerted is not None:
            return
        latest = session.table(self.minutes_table).agg(F.unix_micros(F.max("minute")).alias("m")).first()
        assert latest is not None  # an aggregate without grouping has one row
        newest = latest["m"]
        self.newest_minute = newest
        self.last_alerted = {}
        if newest is None:
            return
        final = newest - self.lateness_micros
        open_minutes = (
            session.table(self.minutes_table)
            .withColumn("end", F.unix_micros("minute") + F.lit(MINUTE_MICROS))
            .where(F.col("end") > F.lit(final))
        )
        self.open_minutes = {row["end"]: row.asDict() for row in open_minutes.collect()}
        recent = (
            session.table(self.alerts_table)
            .where(
                (F.col("alert_type") == F.lit(ACTIVITY_ALERT))
                & (F.unix_micros("alert_time") > F.lit(final - WINDOW_MICROS - self.cooldown_micros))
            )
            .groupBy("user_id")
            .agg(F.unix_micros(F.max("alert_time")).alias("last"))
        )
        self.last_alerted = {r["user_id"]: r["last"] for r in recent.collect()}

    # ------------------------------------------------------------------ windows

    def _merge_windows(
        self, session: SparkSession, changed: DataFrame, final: int, before: int | None, batch_id: int
    ) -> None:
        """Upsert the changed user windows with their absolute values, exactly once."""
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        end = F.unix_micros("end")
        source = changed.where(F.col("kind") == F.lit(USER_KIND)).select(
            "user_id",
            F.timestamp_micros(end - F.lit(WINDOW_MICROS)).alias("window_start"),
            F.col("end").alias("window_end"),
            "tx_count",
            "total_amount",
            "flagged_count",
            (end <= F.lit(final)).alias("is_final"),
            F.current_timestamp().alias("updated_at"),
        )
        condition = "t.user_id = s.user_id AND t.window_start = s.window_start"
        if before is not None:  # only open windows change: Delta skips the files of final ones
            condition += f" AND t.window_end > timestamp_micros({before})"
        with committed_once(session, self.app_id, batch_id):
            (
                DeltaTable.forName(session, self.windows_table)
                .alias("t")
                .merge(source.alias("s"), condition)
                .whenMatchedUpdateAll()
                .whenNotMatchedInsertAll()
                .execute()
            )

    def _write_minutes(
        self, session: SparkSession, changed: dict[int, dict], final: int, before: int | None, batch_id: int
    ) -> int:
        """Rewrite every minute still open before this batch, with this batch's values and
        ``is_final`` (one ``replaceWhere`` commit, exactly once). Returns the rows the batch added."""
        from pyspark.sql import functions as F

        added = sum(
            row["tx_count"] - self.open_minutes.get(minute, {}).get("tx_count", 0) for minute, row in changed.items()
        )
        values = {**self.open_minutes, **changed}  # by the minute's end
        since = before if before is not None else min(values) - 1
        kept = sorted(end for end in values if end > since)
        rows = [(end - MINUTE_MICROS, *(values[end][c] for c in MINUTE_COLUMNS), end <= final) for end in kept]
        frame = session.createDataFrame(
            rows,
            "minute BIGINT, tx_count BIGINT, flagged_count BIGINT, total_amount DOUBLE, flagged_amount DOUBLE, "
            "true_positives BIGINT, false_positives BIGINT, unknown_currency_count BIGINT, is_final BOOLEAN",
        ).select(
            F.timestamp_micros("minute").alias("minute"),
            *MINUTE_COLUMNS,
            "is_final",
            F.current_timestamp().alias("updated_at"),
        )
        (
            frame.write.format("delta")
            .mode("overwrite")
            .option("replaceWhere", f"minute > timestamp_micros({since - MINUTE_MICROS})")
            .option("txnAppId", self.app_id)
            .option("txnVersion", batch_id)
            .saveAsTable(self.minutes_table)
        )
        self.open_minutes = {end: values[end] for end in kept if end > final}
        return added

    def _finalize(self, session: SparkSession, final: int) -> None:
        """Mark the user windows the watermark has passed, and that no batch changed since, as
        final. Windows start on whole minutes, so this commits once per minute at most; setting
        a flag to its final value is harmless to repeat, so it needs no transaction id."""
        from delta.tables import DeltaTable

        through = final - final % MINUTE_MICROS
        if self.finalized_through is not None and through <= self.finalized_through:
            return
        condition = f"NOT is_final AND window_end <= timestamp_micros({through})"
        if self.finalized_through is not None:  # only windows that turned final since the last time
            condition += f" AND window_end > timestamp_micros({self.finalized_through})"
        DeltaTable.forName(session, self.windows_table).update(
            condition, {"is_final": "true", "updated_at": "current_timestamp()"}
        )
        self.finalized_through = through

    # ------------------------------------------------------------------ alerts

    def _activity_alerts(self, session: SparkSession, busy: list, batch_id: int) -> int:
        """Append an alert for each burst among the changed windows at the threshold; how many."""

        candidates = [(r["user_id"], r["last_event_time"], r["end"] - WINDOW_MICROS, r) for r in busy]
        kept = first_alert_per_burst(candidates, self.last_alerted or {}, self.cooldown_micros)
        if not kept:
            return 0
        rows = [
            (
                ACTIVITY_ALERT,
                None,
                user,
                None,
                activity_reason(r["tx_count"], r["flagged_count"], r["total_amount"], start),
                at,
            )
            for user, at, start, r in kept
        ]
        append_once(_alerts_frame(session, rows), self.alerts_table, self.app_id, batch_id)
        assert self.last_alerted is not None  # restored at the start of the batch (_restore)
        for user, at, *_ in kept:
            self.last_alerted[user] = max(at, self.last_alerted.get(user, at))
        horizon = (self.newest_minute or 0) - self.lateness_micros - WINDOW_MICROS - self.cooldown_micros
        self.last_alerted = {user: at for user, at in self.last_alerted.items() if at > horizon}
        _print_alerts(self.out, rows, self.max_printed)
        return len(rows)

    def _count(self, rows: int, minutes: dict[int, dict], final: int, raised: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.activity_alerts += raised
        newest = max(
            (row["newest_ingest"] for row in minutes.values() if row["newest_ingest"] is not None), default=None
        )
        if newest is not None:
            # The first rows this batch counted are about as old as the newest the one before counted.
            oldest = self.newest_ingest if self.newest_ingest is not None and self.newest_ingest < newest else newest
            now = time.time()
            stats.freshness.append((now, rows, now - oldest / 1e6))
            self.newest_ingest = newest


class ModelAlertWriter:
    """The ``foreachBatch`` function of the ``gold_alerts`` query: one model alert per flagged
    silver row, appended exactly once, the first few printed."""

    def __init__(self, ctx: Context, app_id: str, out: TextIO | None = None, stats: GoldStats | None = None) -> None:
        self.app_id = app_id
        self.out = out or sys.stdout
        self.alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)
        self.max_printed = ctx.settings.streams.console_alerts_per_batch
        self.stats = stats or GoldStats()

    def __call__(self, flagged: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        # Flagged rows are a few percent of a batch: one job brings them to the driver, and the
        # append writes them from there (no cache, no second pass over silver's files).
        alerts = [
            tuple(r)
            for r in model_alerts(flagged).withColumn("_at", F.unix_micros("alert_time")).drop("alert_time").collect()
        ]
        if not alerts:
            return
        append_once(_alerts_frame(flagged.sparkSession, alerts), self.alerts_table, self.app_id, batch_id)
        _print_alerts(self.out, alerts, self.max_printed)
        self.stats.model_alerts += len(alerts)


def _alerts_frame(session: SparkSession, rows: list[tuple]) -> DataFrame:
    """``gold.fraud_alerts`` rows from tuples ``(type, transaction_id, user_id, fraud_score, reason,
    alert time in epoch µs)`` collected or made on the driver."""
    from pyspark.sql import functions as F

    return session.createDataFrame(rows, ALERT_SCHEMA).select(
        "alert_type",
        "transaction_id",
        "user_id",
        "fraud_score",
        "reason",
        F.timestamp_micros("_at").alias("alert_time"),
    )


def _print_alerts(out: TextIO, alerts: list[tuple], max_printed: int) -> None:
    """The earliest ``max_printed`` of a batch's alerts (tuples as for :func:`_alerts_frame`) on the
    console, times in UTC, and how many more there are."""
    shown = sorted(alerts, key=lambda a: a[5])[:max_printed]
    for kind, transaction, user, _, reason, at in shown:
        print(f"ALERT {kind:<13} {utc_clock(at)} {transaction or user} {user}: {reason}", file=out, flush=True)
    if len(alerts) > len(shown):
        print(f"ALERT ... and {len(alerts) - len(shown):,} more alerts in this batch", file=out, flush=True)


def check_checkpoint(ctx: Context) -> None:
    """Refuse a home whose gold was written by an earlier fraudlake: the stateful query would
    read silver from the start and write over windows whose sums it had not seen."""
    from pathlib import Path

    former = [name for name in FORMER_QUERIES if Path(ctx.paths.checkpoint(name)).exists()]
    if former and not Path(ctx.paths.checkpoint(QUERY_NAME)).exists():
        raise FraudlakeError(
            f"gold in this home was written by an earlier fraudlake (checkpoints {', '.join(former)}); gold is now "
            "kept by a stateful query. Rebuild it from silver: remove the gold tables' folders under "
            f"{ctx.paths.warehouse}/gold and those checkpoints, then run again"
        )


def start_gold(
    spark: SparkSession, ctx: Context, out: TextIO | None = None, available_now: bool = False
) -> tuple[dict[str, StreamingQuery], GoldStats]:
    """Start gold's two queries; returns ``({name: query}, stats)`` (the stats are live).

    Gold reads silver's appends. A re-score (``fraudlake rescore``) updates silver rows in
    place and raises its own alerts, so its commits are skipped rather than failing the
    streams. ``available_now`` processes what silver holds, then stops.
    """
    from pyspark.sql import functions as F

    check_checkpoint(ctx)
    stats = GoldStats()
    trigger = ctx.settings.streams.gold_trigger_seconds
    queries = {}

    def silver() -> DataFrame:
        return spark.readStream.option("skipChangeCommits", "true").table(table_name(ctx, SILVER_SCORED))

    checkpoint = ctx.paths.checkpoint(QUERY_NAME)
    windows = GoldBatchWriter(ctx, writer_app_id(checkpoint, QUERY_NAME), out, stats)
    stream = (
        live_windows(silver(), ctx.settings.streams.watermark_seconds)
        .writeStream.queryName(QUERY_NAME)
        .outputMode("update")
        .foreachBatch(windows)
        .option("checkpointLocation", checkpoint)
    )
    queries["gold"] = triggered(stream, trigger, available_now).start()

    checkpoint = ctx.paths.checkpoint(ALERTS_QUERY_NAME)
    alerts = ModelAlertWriter(ctx, writer_app_id(checkpoint, ALERTS_QUERY_NAME), out, stats)
    stream = (
        silver()
        .where(F.col("is_flagged"))
        .writeStream.queryName(ALERTS_QUERY_NAME)
        .foreachBatch(alerts)
        .option("checkpointLocation", checkpoint)
    )
    queries["alerts"] = triggered(stream, trigger, available_now).start()
    return queries, stats
