"""``bronze.transactions`` → ``silver.scored_transactions`` + ``silver.quarantine``.

One streaming query reads bronze (a Delta source) and, per micro-batch, validates
every row, sends a ``transaction_id`` that silver has already scored to quarantine
(``duplicate_transaction_id``: a file dropped twice, a producer's retry, a re-created
checkpoint), scores the rest with the registered model, and appends each row to
exactly one of the two silver tables. Both appends are idempotent (each commit records its
writer and batch; the first batch after a start is looked for first, see
:mod:`fraudlake.streaming_io`), so a micro-batch replayed after a crash is skipped where it
had already landed: bronze = silver + quarantine, always.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fraudlake.ml.serving import ModelScorer, score_transactions
from fraudlake.settings import Context
from fraudlake.silver.validation import drop_routed, mark_repeats, validate
from fraudlake.streaming_io import ReplayCheck, append_once, triggered, writer_app_id
from fraudlake.tables import BRONZE_TRANSACTIONS, SILVER_QUARANTINE, SILVER_SCORED, table_name

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, Observation, SparkSession
    from pyspark.sql.streaming import StreamingQuery

QUERY_NAME = "silver"
EMPTY_TOTALS = {"n": 0, "flagged": 0, "newest": None, "early_ingest": None}


def batch_totals() -> list[Column]:
    """What progress lines need from a batch of scored rows, as aggregate columns."""
    from pyspark.sql import functions as F

    return [
        F.count(F.lit(1)).alias("n"),
        F.count_if("is_flagged").alias("flagged"),
        F.max(F.unix_micros("event_time")).alias("newest"),
        # The 5th percentile of ingest times: commit time minus it is the batch's p95 wait.
        F.percentile_approx(F.unix_micros("_ingest_time"), 0.05).alias("early_ingest"),
    ]


@dataclass
class SilverStats:
    """What the silver micro-batches did, for progress lines (the driver runs foreachBatch)."""

    batches: int = 0
    scored: int = 0
    quarantined: int = 0
    flagged: int = 0
    last_lag_seconds: float | None = None  # commit time minus the newest event time in the batch
    reasons: dict[str, int] = field(default_factory=dict)
    # Per non-empty batch: (commit wall time, rows, p95 of commit time - _ingest_time in s).
    freshness: deque = field(default_factory=lambda: deque(maxlen=1_000))


class SilverBatchWriter:
    """The ``foreachBatch`` function of the silver query, and silver's half of the combined
    ingest query's (which sets ``skip_routed`` to False once its rows come fresh from the source)."""

    def __init__(self, ctx: Context, scorer: ModelScorer, app_id: str, skip_routed: bool = True) -> None:
        self.ctx = ctx
        self.scorer = scorer
        self.app_id = app_id
        # Reading bronze, leave alone rows that silver or quarantine already hold (see drop_routed).
        self.skip_routed = skip_routed
        self.scored_table = table_name(ctx, SILVER_SCORED)
        self.quarantine_table = table_name(ctx, SILVER_QUARANTINE)
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already
        self.stats = SilverStats()

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        reason = F.col("quarantine_reason")
        validated = validate(batch, self.ctx.settings.streams.max_future_seconds).persist()
        checked: DataFrame | None = None
        try:
            bounds = self._bounds(validated)
            if not bounds["rows"]:
                return  # nothing arrived: no commit, not even an empty one
            near = self._scored_ids_near(validated, bounds)
            checked = mark_repeats(validated, near)
            if self.skip_routed:
                checked = drop_routed(checked, near, self._quarantined_near(validated, bounds))
            checked = checked.persist()
            # A replay must route every row as the first attempt did. Repeats are found by
            # looking silver up, so quarantine goes first: after a crash between the two
            # appends silver is as the first attempt saw it. After a crash once silver has
            # committed, silver holds this batch's own rows, which mark_repeats tells from
            # repeats (same bronze row). Each append is idempotent (skipped on replay) and
            # costs a table-state reconstruction even when it writes nothing, so the
            # quarantine append runs only for a batch with bad rows.
            reasons = {row[0]: row[1] for row in checked.where(reason.isNotNull()).groupBy(reason).count().collect()}
            if reasons:
                quarantined = checked.where(reason.isNotNull())
                append_once(
                    quarantined,
                    self.quarantine_table,
                    self.app_id,
                    batch_id,
                    self.replays.needed(self.quarantine_table),
                )
            # The batch's figures are observed while the append writes the rows: no second pass
            # over the scored rows (and no second run of the model) just to count them.
            observed = Observation(f"silver_batch_{batch_id}")
            scored = score_transactions(checked.where(reason.isNull()).drop("quarantine_reason"), self.scorer)
            observing = scored.observe(observed, *batch_totals())
            wrote = append_once(
                observing, self.scored_table, self.app_id, batch_id, self.replays.needed(self.scored_table)
            )
            totals = self._observed(observed if wrote else None, scored) if bounds["valid"] else EMPTY_TOTALS
        finally:
            for frame in (checked, validated):
                if frame is not None:
                    frame.unpersist()
        self._count(totals, reasons)

    @staticmethod
    def _observed(observed: Observation | None, scored: DataFrame) -> dict:
        """The figures observed during the append. A replayed batch whose append was skipped (it
        had committed: ``observed`` is None, or Delta skipped it) ran no plan to observe: its
        figures are computed, once, instead."""
        try:
            if observed is not None:
                return dict(observed.get)
        except Exception:  # Spark raises on reading an observation whose write Delta skipped
            pass
        totals = scored.agg(*batch_totals()).first()
        assert totals is not None  # an aggregate without grouping has one row
        return totals.asDict()

    @staticmethod
    def _bounds(validated: DataFrame) -> dict:
        """Rows in the batch, and the id and event-time range of its valid ones (one job, which
        also fills the cache of the validated rows)."""
        from pyspark.sql import functions as F

        valid = F.col("quarantine_reason").isNull()
        bounds = validated.agg(
            F.count(F.lit(1)).alias("rows"),
            F.count_if(valid).alias("valid"),
            F.min(F.when(valid, F.col("transaction_id"))).alias("lo"),
            F.max(F.when(valid, F.col("transaction_id"))).alias("hi"),
            # As epoch microseconds: no Python datetime, so no host time zone, on the way back.
            F.unix_micros(F.min(F.when(valid, F.col("event_time")))).alias("first"),
            F.unix_micros(F.max(F.when(valid, F.col("event_time")))).alias("last"),
            F.unix_micros(F.min("_ingest_time")).alias("ingest_first"),
            F.unix_micros(F.max("_ingest_time")).alias("ingest_last"),
        ).first()
        assert bounds is not None  # an aggregate without grouping has one row
        return bounds.asDict()

    def _scored_ids_near(self, validated: DataFrame, bounds: dict) -> DataFrame:
        """Silver rows (id, event time, ingest time) that this batch's valid rows could repeat.

        Bounded so that a lookup reads few files: the batch's id range (sequential ids
        such as the simulator's skip every other file by its statistics) and event times
        within ``streams.duplicate_horizon_hours`` of the batch's.
        """
        from pyspark.sql import functions as F

        silver = validated.sparkSession.table(self.scored_table).select("transaction_id", "event_time", "_ingest_time")
        if bounds["lo"] is None:
            return silver.limit(0)
        horizon = F.make_dt_interval(hours=F.lit(self.ctx.settings.streams.duplicate_horizon_hours))
        return silver.where(
            F.col("transaction_id").between(F.lit(bounds["lo"]), F.lit(bounds["hi"]))
            & (F.col("event_time") >= F.timestamp_micros(F.lit(bounds["first"])) - horizon)
            & (F.col("event_time") <= F.timestamp_micros(F.lit(bounds["last"])) + horizon)
        )

    def _quarantined_near(self, validated: DataFrame, bounds: dict) -> DataFrame:
        """Quarantine rows received when this batch's rows were (the identity :func:`drop_routed` compares)."""
        from pyspark.sql import functions as F

        quarantine = validated.sparkSession.table(self.quarantine_table).select(
            "transaction_id", "event_time", "_ingest_time", "_raw", "quarantine_reason"
        )
        if bounds["ingest_first"] is None:
            return quarantine.where(F.col("_ingest_time").isNull())
        received = F.col("_ingest_time").between(
            F.timestamp_micros(F.lit(bounds["ingest_first"])), F.timestamp_micros(F.lit(bounds["ingest_last"]))
        )
        return quarantine.where(received | F.col("_ingest_time").isNull())

    def _count(self, totals: dict, reasons: dict[str, int]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.scored += totals["n"]
        stats.flagged += totals["flagged"] or 0
        now = time.time()
        if totals["newest"] is not None:
            stats.last_lag_seconds = now - totals["newest"] / 1e6
        if totals["early_ingest"] is not None:
            stats.freshness.append((now, totals["n"], now - totals["early_ingest"] / 1e6))
        for name, n in reasons.items():
            stats.quarantined += n
            stats.reasons[name] = stats.reasons.get(name, 0) + n


def start_silver(
    spark: SparkSession, ctx: Context, scorer: ModelScorer, available_now: bool = False
) -> tuple[StreamingQuery, SilverBatchWriter]:
    """Start the silver query; returns ``(query, writer)`` (the writer holds live stats).

    ``available_now`` processes what bronze holds, then stops (a scheduled job's trigger).
    """
    checkpoint = ctx.paths.checkpoint(QUERY_NAME)
    writer = SilverBatchWriter(ctx, scorer, writer_app_id(checkpoint, QUERY_NAME))
    streams = ctx.settings.streams
    source = spark.readStream.option("maxFilesPerTrigger", streams.silver_max_files_per_trigger).table(
        table_name(ctx, BRONZE_TRANSACTIONS)
    )
    stream = source.writeStream.queryName(QUERY_NAME).foreachBatch(writer).option("checkpointLocation", checkpoint)
    return triggered(stream, streams.silver_trigger_seconds, available_now).start(), writer
