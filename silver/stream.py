"""``bronze.transactions`` → ``silver.scored_transactions`` + ``silver.quarantine``.

One streaming query reads bronze (a Delta source) and, per micro-batch, validates
every row, scores the valid ones with the registered model, and appends each row to
exactly one of the two silver tables. Both appends are idempotent (Delta's
``txnAppId``/``txnVersion``), so a micro-batch replayed after a crash is skipped
where it had already landed: bronze = silver + quarantine, always.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fraudlake.ml.serving import ModelScorer, score_transactions
from fraudlake.settings import Context
from fraudlake.silver.validation import validate
from fraudlake.streaming_io import append_once, writer_app_id
from fraudlake.tables import BRONZE_TRANSACTIONS, SILVER_QUARANTINE, SILVER_SCORED, table_name

QUERY_NAME = "silver"


@dataclass
class SilverStats:
    """What the silver micro-batches did, for progress lines (the driver runs foreachBatch)."""

    batches: int = 0
    scored: int = 0
    quarantined: int = 0
    flagged: int = 0
    last_lag_seconds: float | None = None  # commit time minus the newest event time in the batch
    reasons: dict[str, int] = field(default_factory=dict)


class SilverBatchWriter:
    """The ``foreachBatch`` function of the silver query."""

    def __init__(self, ctx: Context, scorer: ModelScorer, app_id: str):
        self.ctx = ctx
        self.scorer = scorer
        self.app_id = app_id
        self.scored_table = table_name(ctx, SILVER_SCORED)
        self.quarantine_table = table_name(ctx, SILVER_QUARANTINE)
        self.stats = SilverStats()

    def __call__(self, batch, batch_id: int) -> None:
        from pyspark.sql import functions as F

        reason = F.col("quarantine_reason")
        checked = validate(batch, self.ctx.settings.streams.max_future_seconds).persist()
        scored = None
        try:
            valid = checked.where(reason.isNull()).drop("quarantine_reason")
            scored = score_transactions(valid, self.scorer).persist()
            append_once(scored, self.scored_table, self.app_id, batch_id)
            # Both counts read the cached frames. An idempotent Delta append costs a
            # table-state reconstruction even when it writes nothing, so the quarantine
            # append runs only for a batch that has bad rows.
            reasons = {row[0]: row[1] for row in checked.where(reason.isNotNull()).groupBy(reason).count().collect()}
            if reasons:
                append_once(checked.where(reason.isNotNull()), self.quarantine_table, self.app_id, batch_id)
            totals = scored.agg(
                F.count("*").alias("n"), F.count_if("is_flagged").alias("flagged"), F.max("event_time").alias("newest")
            ).first()
        finally:
            if scored is not None:
                scored.unpersist()
            checked.unpersist()
        self._count(totals.asDict(), reasons)

    def _count(self, totals: dict, reasons: dict[str, int]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.scored += totals["n"]
        stats.flagged += totals["flagged"] or 0
        if totals["newest"] is not None:
            stats.last_lag_seconds = time.time() - totals["newest"].timestamp()
        for name, n in reasons.items():
            stats.quarantined += n
            stats.reasons[name] = stats.reasons.get(name, 0) + n


def start_silver(spark, ctx: Context, scorer: ModelScorer, available_now: bool = False):
    """Start the silver query; returns ``(query, writer)`` (the writer holds live stats).

    ``available_now`` processes what bronze holds, then stops (a scheduled job's trigger).
    """
    checkpoint = ctx.paths.checkpoint(QUERY_NAME)
    writer = SilverBatchWriter(ctx, scorer, writer_app_id(checkpoint, QUERY_NAME))
    streams = ctx.settings.streams
    source = (
        spark.readStream.option("maxFilesPerTrigger", streams.silver_max_files_per_trigger)
        .table(table_name(ctx, BRONZE_TRANSACTIONS))
    )
    stream = source.writeStream.queryName(QUERY_NAME).foreachBatch(writer).option("checkpointLocation", checkpoint)
    if available_now:
        stream = stream.trigger(availableNow=True)
    elif streams.silver_trigger_seconds > 0:
        stream = stream.trigger(processingTime=f"{streams.silver_trigger_seconds} seconds")
    return stream.start(), writer
