"""``silver.scored_transactions`` → every gold table, in one streaming query.

Each micro-batch of silver comes to the driver in one job (:func:`~fraudlake.gold.aggregates.live_rows`:
a user, a minute, the measures and, for a flagged row, its model alert; Arrow), is
added up there per minute and per user minute, and written:

- ``fraud_alerts``: one ``model`` alert per flagged row, however late, and a
  ``user_activity`` alert when a window holding a user minute the batch changed reaches
  ``activity_alert_threshold`` transactions, one per burst (``first_alert_per_burst``), in
  the micro-batch that took it there; one append for both. The windows are summed from the
  recent user minutes the writer keeps in memory (:mod:`fraudlake.gold.bursts`);
- ``dashboard_minute``: every open minute rewritten with ``replaceWhere`` (a handful of
  rows), with its absolute values and ``is_final``;
- ``user_activity_minute``: the batch's sums per user minute, appended. A user minute that
  several batches counted has one row from each: readers add them up, as the view
  ``user_activity_5m`` does into each sliding 5-minute window. Nothing is rewritten: on 2
  cores a MERGE of the changed user minutes was the slowest step of a gold batch
  (benchmarks/results/profile_gold_*.json), and a Spark state store of the open minutes the
  next slowest, for sums the driver adds up in milliseconds.

The alerts go first, then the minutes, then the user minutes: alerts and the current
minute are what people wait for.

The watermark is on the minute's end: a minute is open until the newest minute gold has
counted begins ``streams.watermark_seconds`` after its end (as of the batch before, as
Spark's watermarks are). A transaction later than that counts in no window (as in any
windowed aggregation with a watermark); it still gets its model alert, and is recorded in
``late_transactions`` (appended, exactly once, in the rare batch that has one).

Exactly once: every write records its writer and micro-batch, and the first batch after a
start is looked for among the commits before it writes (see :mod:`fraudlake.streaming_io`).
The writer keeps only the open minutes, the user minutes an open window may hold and the
last activity alert per user in memory, and rebuilds them when it starts from the tables as
they were before the batch it starts with (:func:`~fraudlake.streaming_io.as_before_batch`):
a batch replayed after a crash adds its rows to the same state once, whichever of its
writes had committed.
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
    MINUTE_MICROS,
    MODEL_ALERT,
    WINDOW_MICROS,
    activity_reason,
    first_alert_per_burst,
    live_rows,
    user_minute_totals,
)
from fraudlake.gold.bursts import RecentUserMinutes, plus_known
from fraudlake.settings import Context
from fraudlake.streaming_io import (
    ReplayCheck,
    append_once,
    as_before_batch,
    overwrite_once,
    triggered,
    writer_app_id,
)
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_LATE,
    GOLD_USER_MINUTE,
    SILVER_SCORED,
    table_name,
)
from fraudlake.timeutil import utc_clock

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

QUERY_NAME = "gold_live"
# The queries that kept gold before: one append-only query per table, then one query that
# added each batch's sums to the tables (no state store), then a state store of 5-minute
# windows, then a state store of minutes (gold_minutes) beside a query of model alerts.
FORMER_QUERIES = (
    "gold_user_activity",
    "gold_dashboard",
    "gold_model_alerts",
    "gold_activity_alerts",
    "gold",
    "gold_windows",
    "gold_minutes",
    "gold_alerts",
)
FRESHNESS_KEPT = 1_000  # per-batch freshness entries kept for progress lines
MINUTE_COLUMNS = (
    "tx_count",
    "flagged_count",
    "total_amount",
    "flagged_amount",
    "unknown_currency_count",
)
# Each dashboard minute column, and the live_rows measure it sums.
MINUTE_SUMS = {
    "tx_count": "one",
    "flagged_count": "flagged",
    "total_amount": "amount_usd",
    "flagged_amount": "flagged_amount",
    "unknown_currency_count": "unknown_currency",
}
ALERT_SCHEMA = "alert_type STRING, transaction_id STRING, user_id STRING, fraud_score DOUBLE, reason STRING, _at BIGINT"


@dataclass
class GoldStats:
    """What the gold micro-batches did, for progress lines (the driver runs foreachBatch)."""

    batches: int = 0
    rows: int = 0
    model_alerts: int = 0
    activity_alerts: int = 0
    # Per non-empty batch: (commit wall time, rows, commit time - ingest time of the first
    # rows it counted, in s).
    freshness: deque = field(default_factory=lambda: deque(maxlen=FRESHNESS_KEPT))


def on_time_mask(rows: pa.Table, final_through: int) -> pa.ChunkedArray:
    """Which of ``rows`` (:func:`live_rows`) are of a minute ending after ``final_through`` (epoch µs):
    the minutes not final yet, that a row may still count in."""
    import pyarrow.compute as pc

    return pc.greater(rows.column("minute"), final_through - MINUTE_MICROS)


def minute_sums(rows: pa.Table) -> dict[int, dict]:
    """Per minute's end (epoch µs): the :data:`MINUTE_COLUMNS` of ``rows`` (:func:`live_rows`) and
    ``newest_ingest``, as :func:`~fraudlake.gold.aggregates.dashboard_minute` sums them."""
    grouped = rows.group_by("minute").aggregate(
        [(measure, "sum") for measure in MINUTE_SUMS.values()] + [("ingest_time", "max")]
    )
    return {
        r["minute"] + MINUTE_MICROS: {
            **{column: r[f"{measure}_sum"] for column, measure in MINUTE_SUMS.items()},
            "newest_ingest": r["ingest_time_max"],
        }
        for r in grouped.to_pylist()
    }


def user_minute_sums(rows: pa.Table) -> pa.Table:
    """Per user and minute: the sums of ``rows`` (:func:`live_rows`) that the 5-minute windows add
    up, with the columns of :class:`~fraudlake.gold.bursts.UserMinute` (Arrow: a batch's
    thousands of user minutes never become Python objects)."""
    grouped = rows.group_by(["user_id", "minute"]).aggregate(
        [("one", "sum"), ("amount_usd", "sum"), ("flagged", "sum"), ("event_time", "max")]
    )
    return grouped.select(
        ["user_id", "minute", "one_sum", "amount_usd_sum", "flagged_sum", "event_time_max"]
    ).rename_columns(["user_id", "minute", "tx_count", "total_amount", "flagged_count", "last_event_time"])


class GoldBatchWriter:
    """The ``foreachBatch`` function of the gold query: its input is a micro-batch of silver rows."""

    def __init__(self, ctx: Context, app_id: str, out: TextIO | None = None, stats: GoldStats | None = None) -> None:
        streams = ctx.settings.streams
        self.app_id = app_id
        self.out = out or sys.stdout
        self.user_minutes_table = table_name(ctx, GOLD_USER_MINUTE)
        self.minutes_table = table_name(ctx, GOLD_DASHBOARD_MINUTE)
        self.alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)
        self.late_table = table_name(ctx, GOLD_LATE)
        self.lateness_micros = int(streams.watermark_seconds * 1_000_000)
        self.threshold = streams.activity_alert_threshold
        self.cooldown_micros = streams.activity_alert_cooldown_seconds * 1_000_000
        self.max_printed = streams.console_alerts_per_batch
        self.stats = stats or GoldStats()
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already
        # Rebuilt from the tables at the first batch (see _restore):
        self.newest_minute: int | None = None  # the newest minute gold has counted (epoch µs)
        self.open_minutes: dict[int, dict] = {}  # minute's end -> its values, for minutes not final
        self.last_alerted: dict[str, int] | None = None  # user -> their latest activity alert
        self.newest_ingest: int | None = None  # the newest _ingest_time counted
        self.recent = RecentUserMinutes()  # the user minutes an open window may hold

    # ------------------------------------------------------------------ the batch

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        import pyarrow.compute as pc

        session = batch.sparkSession
        rows = live_rows(batch).toArrow()  # the one job: silver's new rows, a few columns, to the driver
        if not rows.num_rows:
            return
        self._restore(session, batch_id)
        # Minutes ending at or before ``final`` are final. ``before``: the same as of the
        # previous batch; a row of a minute final by then is late and counts in no window.
        before = None if self.newest_minute is None else self.newest_minute - self.lateness_micros
        on_time = rows if before is None else rows.filter(on_time_mask(rows, before))
        minutes = minute_sums(on_time)
        user_minutes = user_minute_sums(on_time)
        if minutes:
            self.newest_minute = max(self.newest_minute or 0, max(minutes) - MINUTE_MICROS)
        final = (self.newest_minute or 0) - self.lateness_micros
        # Alerts, minutes, user minutes (see the module's docstring). Each write is exactly once
        # on its own, so a replay after a crash between them completes the rest.
        model, activity = self._alerts(session, rows, user_minutes, final, batch_id)
        added = self._write_minutes(session, minutes, final, before, batch_id) if minutes else 0
        if user_minutes.num_rows:
            self._append_user_minutes(session, user_minutes, batch_id)
        if before is not None and on_time.num_rows < rows.num_rows:
            self._append_late(session, rows.filter(pc.invert(on_time_mask(rows, before))), before, batch_id)
        self._count(added, minutes, model, activity)

    def _restore(self, session: SparkSession, batch_id: int) -> None:
        """At the first batch: the newest minute and the open minutes from ``dashboard_minute``,
        who had an activity alert lately, and the user minutes an open window may hold, from
        ``user_activity_minute``; each table as it was before this batch (a replay's first
        attempt may have committed some of them)."""
        from pyspark.sql import functions as F

        if self.last_alerted is not None:
            return
        self.last_alerted = {}

        def table(name: str) -> DataFrame:
            return as_before_batch(session, name, self.app_id, batch_id)

        minutes = table(self.minutes_table)
        latest = minutes.agg(F.unix_micros(F.max("minute")).alias("m")).first()
        assert latest is not None  # an aggregate without grouping has one row
        newest = latest["m"]
        self.newest_minute = newest
        if newest is None:
            return
        final = newest - self.lateness_micros
        open_minutes = minutes.withColumn("end", F.unix_micros("minute") + F.lit(MINUTE_MICROS)).where(
            F.col("end") > F.lit(final)
        )
        self.open_minutes = {row["end"]: row.asDict() for row in open_minutes.collect()}
        recent = (
            table(self.alerts_table)
            .where(
                (F.col("alert_type") == F.lit(ACTIVITY_ALERT))
                & (F.unix_micros("alert_time") > F.lit(final - WINDOW_MICROS - self.cooldown_micros))
            )
            .groupBy("user_id")
            .agg(F.unix_micros(F.max("alert_time")).alias("last"))
        )
        self.last_alerted = {r["user_id"]: r["last"] for r in recent.collect()}
        kept = user_minute_totals(
            table(self.user_minutes_table).where(F.unix_micros("minute") >= F.lit(_kept_since(final)))
        ).select(
            "user_id",
            F.unix_micros("minute").alias("minute"),
            "tx_count",
            "total_amount",
            "flagged_count",
            F.unix_micros("last_event_time").alias("last_event_time"),
        )
        self.recent.add(kept.toArrow())

    # ------------------------------------------------------------------ user minutes

    def _append_user_minutes(self, session: SparkSession, sums: pa.Table, batch_id: int) -> None:
        """Append the batch's sums per user minute (:func:`user_minute_sums`), exactly once."""
        from pyspark.sql import functions as F

        frame = session.createDataFrame(sums).select(
            "user_id",
            F.timestamp_micros("minute").alias("minute"),
            "tx_count",
            "total_amount",
            "flagged_count",
            F.timestamp_micros("last_event_time").alias("last_event_time"),
            F.current_timestamp().alias("updated_at"),
        )
        table = self.user_minutes_table
        append_once(frame, table, self.app_id, batch_id, self.replays.needed(table))

    def _append_late(self, session: SparkSession, late: pa.Table, final_through: int, batch_id: int) -> None:
        """Record the rows of minutes final before this batch (they count in no window), exactly once."""
        from pyspark.sql import functions as F

        frame = session.createDataFrame(late.select(["transaction_id", "user_id", "event_time", "minute"])).select(
            "transaction_id",
            "user_id",
            F.timestamp_micros("event_time").alias("event_time"),
            F.timestamp_micros("minute").alias("minute"),
            F.timestamp_micros(F.lit(final_through)).alias("final_through"),
            F.current_timestamp().alias("recorded_at"),
        )
        append_once(frame, self.late_table, self.app_id, batch_id, self.replays.needed(self.late_table))

    def _write_minutes(
        self, session: SparkSession, sums: dict[int, dict], final: int, before: int | None, batch_id: int
    ) -> int:
        """Rewrite every minute still open before this batch, with this batch's sums added and
        ``is_final`` (one ``replaceWhere`` commit, exactly once). Returns the rows the batch added."""
        from pyspark.sql import functions as F

        values = dict(self.open_minutes)  # by the minute's end
        for end, added in sums.items():
            kept = values.get(end, {})
            values[end] = {column: plus_known(kept.get(column), added[column]) for column in MINUTE_COLUMNS}
        since = before if before is not None else min(values) - 1
        kept_ends = sorted(end for end in values if end > since)
        rows = [(end - MINUTE_MICROS, *(values[end][c] for c in MINUTE_COLUMNS), end <= final) for end in kept_ends]
        frame = session.createDataFrame(
            rows,
            "minute BIGINT, tx_count BIGINT, flagged_count BIGINT, total_amount DOUBLE, flagged_amount DOUBLE, "
            "unknown_currency_count BIGINT, is_final BOOLEAN",
        ).select(
            F.timestamp_micros("minute").alias("minute"),
            *MINUTE_COLUMNS,
            "is_final",
            F.current_timestamp().alias("updated_at"),
        )
        replace = f"minute > timestamp_micros({since - MINUTE_MICROS})"
        table = self.minutes_table
        overwrite_once(frame, table, replace, self.app_id, batch_id, self.replays.needed(table))
        self.open_minutes = {end: values[end] for end in kept_ends if end > final}
        return sum(added["tx_count"] for added in sums.values())

    # ------------------------------------------------------------------ alerts

    def _alerts(
        self, session: SparkSession, rows: pa.Table, sums: pa.Table, final: int, batch_id: int
    ) -> tuple[int, int]:
        """Append the batch's alerts, exactly once: a model alert per flagged row, and an activity
        alert for each burst (a window holding a user minute this batch changed that has reached the
        threshold, summed from the recent user minutes with this batch's added). Returns how many
        of each."""
        import pyarrow.compute as pc

        flagged = rows.filter(pc.is_valid(rows.column("alert_reason")))
        alerts = [
            (MODEL_ALERT, r["transaction_id"], r["user_id"], r["fraud_score"], r["alert_reason"], r["event_time"])
            for r in flagged.select(
                ["transaction_id", "user_id", "fraud_score", "alert_reason", "event_time"]
            ).to_pylist()
        ]
        model = len(alerts)
        self.recent.add(sums)
        busy = self.recent.busy_windows(sums.select(["user_id", "minute"]), self.threshold)
        self.recent.forget_before(_kept_since(final))
        candidates = [(w.user_id, w.last_event_time, w.start, w) for w in busy]
        assert self.last_alerted is not None  # restored at the start of the batch (_restore)
        kept = first_alert_per_burst(candidates, self.last_alerted, self.cooldown_micros) if busy else []
        alerts += [
            (ACTIVITY_ALERT, None, user, None, activity_reason(w.tx_count, w.flagged_count, w.total_amount, start), at)
            for user, at, start, w in kept
        ]
        if alerts:
            table = self.alerts_table
            append_once(_alerts_frame(session, alerts), table, self.app_id, batch_id, self.replays.needed(table))
            _print_alerts(self.out, alerts, self.max_printed)
        for user, at, *_ in kept:
            self.last_alerted[user] = max(at, self.last_alerted.get(user, at))
        horizon = (self.newest_minute or 0) - self.lateness_micros - WINDOW_MICROS - self.cooldown_micros
        self.last_alerted = {user: at for user, at in self.last_alerted.items() if at > horizon}
        return model, len(kept)

    def _count(self, rows: int, minutes: dict[int, dict], model: int, activity: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.rows += rows
        stats.model_alerts += model
        stats.activity_alerts += activity
        newest = max(
            (row["newest_ingest"] for row in minutes.values() if row["newest_ingest"] is not None), default=None
        )
        if newest is not None:
            # The first rows this batch counted are about as old as the newest the one before counted.
            oldest = self.newest_ingest if self.newest_ingest is not None and self.newest_ingest < newest else newest
            now = time.time()
            stats.freshness.append((now, rows, now - oldest / 1e6))
            self.newest_ingest = newest


def _kept_since(final: int) -> int:
    """The oldest user minute a window that may still change can hold, once minutes ending at or
    before ``final`` are final: the next batch changes only minutes ending after it, and their
    windows start at most four minutes earlier (one more minute kept for a lateness that is
    not a whole number of minutes)."""
    return final - WINDOW_MICROS - MINUTE_MICROS


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
    """Refuse a home whose gold was written by an earlier fraudlake: the gold query would read
    silver from the start and add to the tables what they had counted already."""
    from pathlib import Path

    former = [name for name in FORMER_QUERIES if Path(ctx.paths.checkpoint(name)).exists()]
    if former and not Path(ctx.paths.checkpoint(QUERY_NAME)).exists():
        raise FraudlakeError(
            f"gold in this home was written by an earlier fraudlake (checkpoints {', '.join(former)}); gold is now "
            f"kept by one query ({QUERY_NAME}). Rebuild it from silver: remove the gold tables' folders under "
            f"{ctx.paths.warehouse}/gold and those checkpoints, then run again"
        )


def start_gold(
    spark: SparkSession, ctx: Context, out: TextIO | None = None, available_now: bool = False
) -> tuple[dict[str, StreamingQuery], GoldStats]:
    """Start gold's query; returns ``({"gold": query}, stats)`` (the stats are live).

    Gold reads silver's appends. A re-score (``fraudlake rescore``) updates silver rows in
    place and raises its own alerts, so its commits are skipped rather than failing the
    stream. ``available_now`` processes what silver holds, then stops.
    """
    check_checkpoint(ctx)
    stats = GoldStats()
    checkpoint = ctx.paths.checkpoint(QUERY_NAME)
    writer = GoldBatchWriter(ctx, writer_app_id(checkpoint, QUERY_NAME), out, stats)
    stream = (
        spark.readStream.option("skipChangeCommits", "true")
        .table(table_name(ctx, SILVER_SCORED))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(writer)
        .option("checkpointLocation", checkpoint)
    )
    query = triggered(stream, ctx.settings.streams.gold_trigger_seconds, available_now).start()
    return {"gold": query}, stats
