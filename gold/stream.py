"""``silver.scored_transactions`` → every gold table, in two streaming queries.

``gold_minutes`` keeps the live minutes. One stateful aggregation (Spark's state store,
update mode) keys every silver row by its user's minute and by its minute
(:func:`~fraudlake.gold.aggregates.live_keys`). Each micro-batch emits the minutes it
changed, with their absolute values, and ``foreachBatch`` writes them:

- ``user_activity_minute``: one MERGE of the changed user minutes (set, not add). The view
  ``user_activity_5m`` adds five of them up into each sliding 5-minute window when read: a
  fifth of the rows a table of windows would need, and nothing to rewrite when a window
  turns final;
- ``dashboard_minute``: every open minute rewritten with ``replaceWhere`` (a handful of rows,
  cheaper than a MERGE and marking minutes final in the same commit);
- ``fraud_alerts``: a user-activity alert when a window holding a changed user minute
  reaches ``activity_alert_threshold`` transactions, one per burst
  (``first_alert_per_burst``), in the micro-batch that took it there. The windows are summed
  from the recent user minutes the writer keeps in memory (:mod:`fraudlake.gold.bursts`),
  not read back from the table.

The batch writes the alerts first, then the minutes, then the MERGE: alerts and the current
minute are what people wait for, and neither needs the MERGE.

The watermark is on the minute's end: a minute is open until the newest minute gold has
counted begins ``streams.watermark_seconds`` after its end. Then the state store drops it
and the tables show it final. A transaction later than that counts in no window (Spark
drops it, as any windowed aggregation with a watermark does); it still gets its model alert.

``gold_alerts`` appends one model alert per flagged silver row: stateless, so no
transaction, however late, loses its alert.

Exactly once: every write records its writer and micro-batch, and the first batch after a
start is looked for among the commits before it writes (appends and ``replaceWhere``, see
:mod:`fraudlake.streaming_io`; MERGE through Delta's txnAppId/txnVersion session confs),
and the state store is versioned by batch, so a micro-batch replayed after a crash
emits the same minutes and skips what had committed. The writer keeps only the open
minutes, the user minutes an open window may hold and the last alert per user in memory,
and reloads them from the tables when it starts.
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
from fraudlake.gold.bursts import RecentUserMinutes, UserMinute
from fraudlake.settings import Context
from fraudlake.streaming_io import ReplayCheck, append_once, committed_once, overwrite_once, triggered, writer_app_id
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_USER_MINUTE,
    SILVER_SCORED,
    table_name,
)
from fraudlake.timeutil import utc_clock

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

QUERY_NAME = "gold_minutes"
ALERTS_QUERY_NAME = "gold_alerts"
# The queries that kept gold before: one append-only query per table, then one query that
# added each batch's sums to the tables (no state store), then a state store of 5-minute windows.
FORMER_QUERIES = (
    "gold_user_activity",
    "gold_dashboard",
    "gold_model_alerts",
    "gold_activity_alerts",
    "gold",
    "gold_windows",
)
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
    """The state store's watermark delay on minute ends. The newest end Spark sees is that of
    the newest row's minute; a minute is final once the newest minute began
    ``watermark_seconds`` after its end.

    >>> watermark_delay_micros(120) // 60_000_000
    3
    """
    return MINUTE_MICROS + int(watermark_seconds * 1_000_000)


def live_windows(silver: DataFrame, watermark_seconds: float) -> DataFrame:
    """The stateful aggregation of the ``gold_minutes`` query over a silver stream."""
    delay = watermark_delay_micros(watermark_seconds)
    return live_sums(live_keys(silver).withWatermark("end", f"{delay // 1000} milliseconds"))


class GoldBatchWriter:
    """The ``foreachBatch`` function of the ``gold_minutes`` query: its input is the user
    minutes and minutes the micro-batch changed (:func:`live_windows`), with absolute values."""

    def __init__(self, ctx: Context, app_id: str, out: TextIO | None = None, stats: GoldStats | None = None) -> None:
        streams = ctx.settings.streams
        self.app_id = app_id
        self.out = out or sys.stdout
        self.user_minutes_table = table_name(ctx, GOLD_USER_MINUTE)
        self.minutes_table = table_name(ctx, GOLD_DASHBOARD_MINUTE)
        self.alerts_table = table_name(ctx, GOLD_FRAUD_ALERTS)
        self.lateness_micros = int(streams.watermark_seconds * 1_000_000)
        self.threshold = streams.activity_alert_threshold
        self.cooldown_micros = streams.activity_alert_cooldown_seconds * 1_000_000
        self.max_printed = streams.console_alerts_per_batch
        self.stats = stats or GoldStats()
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already
        # Restored from the tables at the first batch (see _restore):
        self.newest_minute: int | None = None  # the newest minute gold has counted (epoch µs)
        self.open_minutes: dict[int, dict] = {}  # minute's end -> its values, for minutes not final
        self.last_alerted: dict[str, int] | None = None  # user -> their latest activity alert
        self.newest_ingest: int | None = None  # the newest _ingest_time counted
        self.recent = RecentUserMinutes()  # the user minutes an open window may hold

    # ------------------------------------------------------------------ the batch

    def __call__(self, changed: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        session = changed.sparkSession  # the query's own session: its DML confs stay in this query
        changed = changed.persist()
        try:
            # One job brings every changed minute and user minute to the driver (Arrow): the
            # dashboard minutes are rewritten from there, and the activity alerts are found
            # in the recent user minutes kept in memory (RecentUserMinutes), not read back.
            picked = changed.select(
                "kind",
                "user_id",
                F.unix_micros("end").alias("end"),
                *MINUTE_COLUMNS,
                F.unix_micros("last_event_time").alias("last_event_time"),
                F.unix_micros("newest_ingest").alias("newest_ingest"),
            ).toArrow()
            keyed = picked.to_pylist()  # Python ints, floats and None, no NaN
            minutes = {r["end"]: r for r in keyed if r["kind"] == MINUTE_KIND}
            if not minutes:
                return  # a batch that only moved the watermark
            user_minutes = [
                UserMinute(
                    r["user_id"],
                    r["end"] - MINUTE_MICROS,
                    r["tx_count"],
                    r["total_amount"],
                    r["flagged_count"],
                    r["last_event_time"],
                )
                for r in keyed
                if r["kind"] == USER_KIND
            ]
            self._restore(session)
            # Minutes ending at or before ``final`` are final: the state store's watermark (it
            # drops them, and late rows for them, from the next batch on). ``before``: the same
            # as of the previous batch; every minute this batch changed ends after it.
            before = None if self.newest_minute is None else self.newest_minute - self.lateness_micros
            self.newest_minute = max(self.newest_minute or 0, max(minutes) - MINUTE_MICROS)
            final = self.newest_minute - self.lateness_micros
            # Alerts, minutes, MERGE (see the module's docstring). Each write is exactly once on
            # its own, so a replay after a crash between them completes the rest.
            raised = self._activity_alerts(session, user_minutes, final, batch_id)
            rows = self._write_minutes(session, minutes, final, before, batch_id)
            self._merge_user_minutes(session, changed, before, batch_id)
        finally:
            changed.unpersist()
        self._count(rows, minutes, final, raised)

    def _restore(self, session: SparkSession) -> None:
        """At the first batch: the newest minute and the open minutes from ``dashboard_minute``
        (as the last committed batch left them), who had an activity alert lately, and the user
        minutes an open window may hold, from ``user_activity_minute``."""
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
        kept = (
            session.table(self.user_minutes_table)
            .where(F.unix_micros("minute") >= F.lit(_kept_since(final)))
            .select(
                "user_id",
                F.unix_micros("minute").alias("minute"),
                "tx_count",
                "total_amount",
                "flagged_count",
                F.unix_micros("last_event_time").alias("last_event_time"),
            )
        )
        self.recent.update(UserMinute(**r.asDict()) for r in kept.collect())

    # ------------------------------------------------------------------ user minutes

    def _merge_user_minutes(self, session: SparkSession, changed: DataFrame, before: int | None, batch_id: int) -> None:
        """Upsert the changed user minutes with their absolute values, exactly once."""
        from delta.tables import DeltaTable
        from pyspark.sql import functions as F

        source = changed.where(F.col("kind") == F.lit(USER_KIND)).select(
            "user_id",
            F.timestamp_micros(F.unix_micros("end") - F.lit(MINUTE_MICROS)).alias("minute"),
            "tx_count",
            "total_amount",
            "flagged_count",
            "last_event_time",
            F.current_timestamp().alias("updated_at"),
        )
        condition = "t.user_id = s.user_id AND t.minute = s.minute"
        if before is not None:  # only open minutes change: Delta skips the files of final ones
            condition += f" AND t.minute > timestamp_micros({before - MINUTE_MICROS})"
        with committed_once(session, self.app_id, batch_id):
            (
                DeltaTable.forName(session, self.user_minutes_table)
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
        replace = f"minute > timestamp_micros({since - MINUTE_MICROS})"
        table = self.minutes_table
        overwrite_once(frame, table, replace, self.app_id, batch_id, self.replays.needed(table))
        self.open_minutes = {end: values[end] for end in kept if end > final}
        return added

    # ------------------------------------------------------------------ alerts

    def _activity_alerts(self, session: SparkSession, changed: list[UserMinute], final: int, batch_id: int) -> int:
        """Append an alert for each burst: a window holding a user minute this batch changed that
        has reached the threshold, summed from the recent user minutes as this batch left
        them (the minutes before it included); return how many."""
        self.recent.update(changed)
        busy = self.recent.busy_windows(((m.user_id, m.minute) for m in changed), self.threshold)
        self.recent.forget_before(_kept_since(final))
        if not busy:
            return 0
        candidates = [(w.user_id, w.last_event_time, w.start, w) for w in busy]
        kept = first_alert_per_burst(candidates, self.last_alerted or {}, self.cooldown_micros)
        if not kept:
            return 0
        rows = [
            (ACTIVITY_ALERT, None, user, None, activity_reason(w.tx_count, w.flagged_count, w.total_amount, start), at)
            for user, at, start, w in kept
        ]
        table = self.alerts_table
        append_once(_alerts_frame(session, rows), table, self.app_id, batch_id, self.replays.needed(table))
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
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already

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
        table = self.alerts_table
        append_once(
            _alerts_frame(flagged.sparkSession, alerts), table, self.app_id, batch_id, self.replays.needed(table)
        )
        _print_alerts(self.out, alerts, self.max_printed)
        self.stats.model_alerts += len(alerts)


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
