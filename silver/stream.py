"""``bronze.transactions`` → ``silver.scored_transactions`` + ``silver.quarantine``.

One streaming query reads bronze (a Delta source) and, per micro-batch, validates
every row, sends a ``transaction_id`` that silver has already scored to quarantine
(``duplicate_transaction_id``: a file dropped twice, a producer's retry, a re-created
checkpoint), computes the behavioural features of the rest (what each card and merchant
did before, :class:`SilverBehaviour`), scores them with the registered model, and appends
each row to exactly one of the two silver tables. Both appends are idempotent (each commit records its
writer and batch; the first batch after a start is looked for first, see
:mod:`fraudlake.streaming_io`), so a micro-batch replayed after a crash is skipped where it
had already landed: bronze = silver + quarantine, always.

A micro-batch is routed in the driver: its validated rows come back as one Arrow table
(a live batch is seconds of transactions: thousands of rows, a few MB; bound a catch-up's
with ``streams.silver_max_files_per_trigger``), silver near the batch is read once for
repeats, and both appends write from the driver's rows, the model scoring them in Spark's
Python workers on the way. On 2 cores a batch's cost is its fixed costs (each Spark job,
each cache, each Delta snapshot of silver), not its rows: routing from the driver runs
five jobs where caching and re-reading the batch ran thirteen (benchmarks/results)."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES, BehaviourHistory
from fraudlake.ml.behaviour import INPUT_COLUMNS as BEHAVIOUR_INPUTS
from fraudlake.ml.data import label_known_at
from fraudlake.ml.serving import ChampionFollower, ModelScorer, score_transactions
from fraudlake.output import note
from fraudlake.settings import Context
from fraudlake.silver.validation import drop_routed, mark_repeats, validate
from fraudlake.streaming_io import ReplayCheck, append_once, triggered, writer_app_id
from fraudlake.tables import BRONZE_LABELS, BRONZE_TRANSACTIONS, SILVER_QUARANTINE, SILVER_SCORED, table_name

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
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


def local_frame(session: SparkSession, rows: pa.Table) -> DataFrame:
    """A DataFrame over rows held in the driver (Arrow): its plans read no table and no source again."""
    return session.createDataFrame(rows)


def arrow_bounds(validated: pa.Table) -> dict:
    """The id and event-time range of the valid rows and the ingest-time range of all rows of a
    validated batch in the driver, times as epoch microseconds (no host time zone), None if none."""
    import pyarrow as pa
    import pyarrow.compute as pc

    valid = pc.is_null(validated.column("quarantine_reason"))

    def low_high(column: str, rows: pa.Array | None = None) -> tuple:
        values = validated.column(column)
        if rows is not None:
            values = values.filter(rows)
        if values.type != pa.string():
            values = values.cast(pa.int64())  # timestamp[us] -> epoch microseconds
        extremes = pc.min_max(values)
        return extremes["min"].as_py(), extremes["max"].as_py()

    lo, hi = low_high("transaction_id", valid)
    first, last = low_high("event_time", valid)
    ingest_first, ingest_last = low_high("_ingest_time")
    return {
        "lo": lo,
        "hi": hi,
        "first": first,
        "last": last,
        "ingest_first": ingest_first,
        "ingest_last": ingest_last,
    }


# The silver rows a writer keeps in the driver before it pins silver's latest snapshot
# again (see SilverIdentities), and the longest a snapshot stays pinned (vacuum keeps a
# snapshot's files for days; its log, see audit, for longer).
PIN_ROWS = 500_000
PIN_SECONDS = 3_600.0
IDENTITY = ("transaction_id", "event_time", "_ingest_time")


class SilverIdentities:
    """Silver's rows as repeats are looked up in: ``transaction_id``, ``event_time``, ``_ingest_time``.

    A snapshot of silver pinned when the writer starts (again after :data:`PIN_ROWS` rows
    or :data:`PIN_SECONDS`), plus the rows this writer has appended since, kept in the
    driver. Silver's latest snapshot changes at every batch (the writer's own append), and
    Delta rebuilds a new snapshot's state before it can skip files: ~1 s per lookup on 2
    cores. The pinned snapshot's state is built once and the lookup reads only the files
    near the batch (benchmarks/results/profile_silver_routed_in_driver*.json).
    """

    def __init__(self, table: str, horizon_hours: int, clock=time.monotonic) -> None:
        self.table = table
        self.horizon_hours = horizon_hours
        self._clock = clock
        self._pinned: DataFrame | None = None
        self._pinned_at = 0.0
        self._since: list[pa.Table] = []  # IDENTITY of the rows appended since the pin
        self._since_rows = 0
        # The lowest and highest id silver holds (None: empty), read once and then kept up to
        # date with the rows added: a batch whose ids all lie outside needs no lookup, which
        # is every batch of a source with increasing ids (the simulator's).
        self._ids: tuple[str | None, str | None] | None = None
        self._none: pa.Table | None = None  # no rows, in the lookup's schema

    def near(self, session: SparkSession, bounds: dict, ids: pa.Array) -> pa.Table:
        """The rows a batch with these valid ``ids`` (and ``bounds``, see :func:`arrow_bounds`) could repeat."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark.sql import functions as F

        if self._pinned is None or self._since_rows > PIN_ROWS or self._clock() - self._pinned_at > PIN_SECONDS:
            self._pin(session)
        assert self._pinned is not None
        if bounds["lo"] is None or not self._may_hold(session, bounds["lo"], bounds["hi"]):
            if self._none is None:  # one Spark job per writer, not one per batch
                self._none = self._pinned.limit(0).toArrow()
            return self._none
        micros = 3_600_000_000 * self.horizon_hours
        earliest, latest = bounds["first"] - micros, bounds["last"] + micros
        pinned = self._pinned.where(
            F.col("transaction_id").between(F.lit(bounds["lo"]), F.lit(bounds["hi"]))
            & (F.unix_micros("event_time") >= F.lit(earliest))
            & (F.unix_micros("event_time") <= F.lit(latest))
        ).toArrow()
        recent = []
        for rows in self._since:
            times = rows.column("event_time").cast(pa.int64())
            keep = pc.and_(
                pc.is_in(rows.column("transaction_id"), value_set=ids),
                pc.and_(pc.greater_equal(times, earliest), pc.less_equal(times, latest)),
            )
            recent.append(rows.filter(keep))
        return pa.concat_tables([pinned, *recent]) if recent else pinned

    def _may_hold(self, session: SparkSession, lo: str, hi: str) -> bool:
        """Whether silver may hold an id between ``lo`` and ``hi``."""
        from pyspark.sql import functions as F

        if self._ids is None:
            assert self._pinned is not None
            extremes = self._pinned.agg(F.min("transaction_id"), F.max("transaction_id")).first()
            assert extremes is not None  # an aggregate without grouping has one row
            self._ids = (extremes[0], extremes[1])
            for rows in self._since:
                self._widen(rows)
        low, high = self._ids
        return low is not None and high is not None and lo <= high and hi >= low

    def _widen(self, rows: pa.Table) -> None:
        import pyarrow.compute as pc

        if self._ids is None or not rows.num_rows:
            return
        extremes = pc.min_max(rows.column("transaction_id"))
        lows = [v for v in (self._ids[0], extremes["min"].as_py()) if v is not None]
        highs = [v for v in (self._ids[1], extremes["max"].as_py()) if v is not None]
        self._ids = (min(lows, default=None), max(highs, default=None))

    def added(self, rows: pa.Table) -> None:
        """Rows this writer appended to silver (or found there, committed by its earlier attempt)."""
        import pyarrow as pa

        self._widen(rows)
        kept = rows.select(list(IDENTITY))
        # Nullable as a lookup's rows are: a source's schema may say "not null" where silver's does not.
        self._since.append(kept.cast(pa.schema([f.with_nullable(True) for f in kept.schema])))
        self._since_rows += rows.num_rows

    def _pin(self, session: SparkSession) -> None:
        from delta.tables import DeltaTable

        version = DeltaTable.forName(session, self.table).history(1).first()
        assert version is not None  # a table has at least the commit that created it
        self._pinned = session.read.option("versionAsOf", version["version"]).table(self.table).select(*IDENTITY)
        self._pinned_at = self._clock()
        self._since, self._since_rows = [], 0


# How often a silver query that is not fed its labels reads the new ones from bronze.labels,
# and how far back before the newest arrival it looks again (appends by several writers may
# commit out of their _ingest_time order).
LABELS_EVERY_SECONDS = 10.0
LABELS_OVERLAP_SECONDS = 300


class SilverBehaviour:
    """The behavioural features of the rows silver scores (:mod:`fraudlake.ml.behaviour`),
    computed in the driver before the model reads them, from a :class:`BehaviourHistory` of the
    rows scored before and the fraud labels arrived since.

    The history is silver itself (and ``bronze.labels``): rebuilt at the writer's first batch from
    silver's rows of the longest window before its newest row, then kept up to date with each
    batch the writer appends. A restart (``kill -9`` included) therefore continues from exactly
    the rows that were committed, and a replayed batch sees the history it saw the first time:
    its own rows, found in silver when its append had committed, are not its own history.

    Labels: the combined ingest query hands over the simulator's labels as they arrive
    (:meth:`add_labels`, before the batch they arrived with is scored); otherwise the writer
    reads the labels that reached ``bronze.labels`` since its last read (the simulator's feed,
    Kafka's labels topic, label files), at most every :data:`LABELS_EVERY_SECONDS`. A label is
    used for a row only when known before it: after its ``label_time`` and after it reached the
    table (:func:`~fraudlake.ml.data.label_known_at`, as training has it), and it may be used up to
    that long after it reached the table.
    """

    def __init__(self, table: str, labels_table: str, label_maturity_seconds: int, clock=time.monotonic) -> None:
        self.table = table
        self._clock = clock
        self._labels_read_at = float("-inf")
        self.labels_table = labels_table
        self.label_maturity_seconds = label_maturity_seconds
        self.reads_labels = True  # False: labels come through add_labels
        self.history: BehaviourHistory | None = None
        self._ingested_until: int | None = None  # labels that reached bronze.labels up to here (epoch micros) are known
        self._rebuilt = False  # the first batch after the rebuild may be a replay of committed rows

    def features(self, session: SparkSession, valid: pa.Table) -> tuple[pa.Table, pd.DataFrame]:
        """``valid`` with a float column per behavioural feature, and the rows' inputs (for :meth:`added`)."""
        import pyarrow as pa

        history = self._history(session)
        if self.reads_labels:
            self._read_labels(session)
        inputs = valid.select(list(BEHAVIOUR_INPUTS)).to_pandas()
        computed = history.features(inputs)
        for name in BEHAVIOUR_FEATURES:
            valid = valid.append_column(name, pa.array(computed[name].to_numpy(dtype="float64"), pa.float64()))
        return valid, inputs

    def relearn(self, label_maturity_seconds: int) -> None:
        """Use another label maturity (a new model version's): the history is rebuilt from the
        tables at the next batch, as at a start, since it reaches back as far as the maturity."""
        self.label_maturity_seconds = label_maturity_seconds
        self.history = None

    def add_labels(self, session: SparkSession, labels: pd.DataFrame) -> None:
        """Fraud labels that arrived (``transaction_id``, ``label_is_fraud``, ``label_time``)."""
        if len(labels):
            self._history(session).add(labels.iloc[:0, :0], labels)

    def added(self, inputs: pd.DataFrame) -> None:
        """Rows this writer appended to silver (or found there, committed by its earlier attempt)."""
        assert self.history is not None  # features() ran first
        if self._rebuilt:  # a replayed batch's rows may be in the rebuilt history already
            self.history.forget_ids(inputs["transaction_id"])
            self._rebuilt = False
        self.history.add(inputs)

    def _history(self, session: SparkSession) -> BehaviourHistory:
        if self.history is None:
            self.history = self._rebuild(session)
        return self.history

    def _rebuild(self, session: SparkSession) -> BehaviourHistory:
        from pyspark.sql import functions as F

        history = BehaviourHistory(label_maturity=self.label_maturity_seconds)
        silver = session.table(self.table)
        newest = silver.agg(F.max(F.unix_micros("event_time"))).first()
        if newest is None or newest[0] is None:
            return history
        earliest = newest[0] - history.horizon_seconds * 1_000_000
        started = time.perf_counter()
        rows = silver.where(F.unix_micros("event_time") >= F.lit(earliest)).select(*BEHAVIOUR_INPUTS).toArrow()
        labels = self._labels(session, earliest, None)  # a label is used only after its label_time
        self._ingested_until = int(labels.pop("_ingested").max()) if len(labels) else None
        history.add(rows.to_pandas(), labels)
        self._labels_read_at = self._clock()
        self._rebuilt = True
        note(
            f"silver: behaviour history of {rows.num_rows:,} scored rows and {len(labels):,} labels "
            f"read in {time.perf_counter() - started:.1f}s ({history.nbytes() / 1e6:,.0f} MB of driver memory)"
        )
        return history

    def _read_labels(self, session: SparkSession) -> None:
        """The fraud labels that reached ``bronze.labels`` since the last read (by ``_ingest_time``,
        with :data:`LABELS_OVERLAP_SECONDS` of overlap for commits that landed out of order; the
        labels already known are dropped), at most every :data:`LABELS_EVERY_SECONDS` (a read is a
        Spark job on its own: ~0.35 s on 2 cores). By arrival, not by ``label_time``: a label that
        arrives after its ``label_time`` (a Kafka topic, a file export) is still read; each row uses
        only the labels whose ``label_time`` is before it (:mod:`fraudlake.ml.behaviour`)."""
        if self._clock() - self._labels_read_at < LABELS_EVERY_SECONDS:
            return
        since = None if self._ingested_until is None else self._ingested_until - LABELS_OVERLAP_SECONDS * 1_000_000
        labels = self._labels(session, None, None, ingested_after=since)
        self._labels_read_at = self._clock()
        if not len(labels):
            return
        self._ingested_until = max(self._ingested_until or 0, int(labels.pop("_ingested").max()))
        assert self.history is not None
        labels = labels[~self.history.knows_labels(labels["transaction_id"])]
        if len(labels):
            self.history.add(labels.iloc[:0, :0], labels)

    def _labels(
        self, session: SparkSession, after: int | None, until: int | None, ingested_after: int | None = None
    ) -> pd.DataFrame:
        """Fraud labels (``transaction_id``, ``label_is_fraud``, ``label_time``; ``_ingested``, epoch
        micros) with a ``label_time`` in (``after``, ``until``], that arrived after ``ingested_after``."""
        from pyspark.sql import functions as F

        labels = session.table(self.labels_table).where(F.col("label_is_fraud") == 1)
        if after is not None:
            labels = labels.where(F.unix_micros("label_time") > F.lit(after))
        if until is not None:
            labels = labels.where(F.unix_micros("label_time") <= F.lit(until))
        if ingested_after is not None:
            labels = labels.where(F.unix_micros("_ingest_time") > F.lit(ingested_after))
        ingested = F.unix_micros(F.coalesce("_ingest_time", F.timestamp_micros(F.lit(0))))
        known = label_known_at().alias("label_time")
        return labels.select("transaction_id", "label_is_fraud", known, ingested.alias("_ingested")).toPandas()


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
        # The version each batch scores with (streams.follow_champion: the alias's, batch by batch).
        self.models = ChampionFollower(ctx, scorer, follow=ctx.settings.streams.follow_champion)
        self.app_id = app_id
        # Reading bronze, leave alone rows that silver or quarantine already hold (see drop_routed).
        self.skip_routed = skip_routed
        self.scored_table = table_name(ctx, SILVER_SCORED)
        self.quarantine_table = table_name(ctx, SILVER_QUARANTINE)
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already
        self.stats = SilverStats()
        self.identities = SilverIdentities(self.scored_table, ctx.settings.streams.duplicate_horizon_hours)
        self.behaviour = SilverBehaviour(
            self.scored_table, table_name(ctx, BRONZE_LABELS), scorer.label_maturity_seconds
        )
        self._batch_scorer: ModelScorer | None = None

    def scorer_for_batch(self, session: SparkSession) -> ModelScorer:
        """The model version the next batch scores with, all of it (see :class:`ChampionFollower`).
        Chosen before the batch's labels are handed over (:meth:`SilverBehaviour.add_labels`): a
        version trained with labels of another maturity has the behaviour history rebuilt for it."""
        scorer = self.models.for_batch(session)
        if scorer.label_maturity_seconds != self.behaviour.label_maturity_seconds:
            self.behaviour.relearn(scorer.label_maturity_seconds)
        self._batch_scorer = scorer
        return scorer

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        self.route(batch.sparkSession, self.validated(batch), batch_id)

    def validated(self, batch: DataFrame) -> pa.Table:
        """The batch's rows, each with its ``quarantine_reason``, in the driver: one Spark job."""
        return validate(batch, self.ctx.settings.streams.max_future_seconds).toArrow()

    def route(self, session: SparkSession, validated: pa.Table, batch_id: int) -> None:
        """Send each validated row to silver (scored, after its behavioural features) or to
        quarantine. Routing and the batch's figures are worked out in the driver and each append
        writes from there: no cache, and no Spark job of its own for the bounds or the reasons
        (see the module's docstring)."""
        import pyarrow.compute as pc
        from pyspark.sql import Observation

        if not validated.num_rows:
            return  # nothing arrived: no commit, not even an empty one
        bounds = arrow_bounds(validated)
        checked = self._route(session, validated, bounds)
        reason = checked.column("quarantine_reason")
        reasons = {str(r["values"]): int(r["counts"]) for r in pc.value_counts(reason.drop_null()).to_pylist()}
        # A replay must route every row as the first attempt did. Repeats are found by looking
        # silver up before either append, and a row silver holds from this very batch (an earlier
        # attempt committed it) is told from a repeat (mark_repeats): the routing does not
        # depend on which of the two appends had committed. Each append is idempotent (skipped
        # on replay), and runs only for a batch with rows for it.
        if reasons:
            quarantined = checked.filter(pc.is_valid(reason))
            table = self.quarantine_table
            append_once(local_frame(session, quarantined), table, self.app_id, batch_id, self.replays.needed(table))
        valid = checked.filter(pc.is_null(reason)).drop_columns(["quarantine_reason"])
        totals = EMPTY_TOTALS
        scorer, self._batch_scorer = self._batch_scorer or self.scorer_for_batch(session), None
        if valid.num_rows:
            featured, inputs = self.behaviour.features(session, valid)
            rows = local_frame(session, featured)
            # The batch's figures are observed while the append writes the rows: no second pass
            # over the scored rows (and no second run of the model) just to count them.
            observed = Observation(f"silver_batch_{batch_id}")
            scored = score_transactions(rows, scorer)
            table = self.scored_table
            wrote = append_once(
                scored.observe(observed, *batch_totals()), table, self.app_id, batch_id, self.replays.needed(table)
            )
            totals = self._observed(observed if wrote else None, scored)
            self.identities.added(valid)
            self.behaviour.added(inputs)
        self._count(totals, reasons)

    def _route(self, session: SparkSession, validated: pa.Table, bounds: dict) -> pa.Table:
        """``validated`` with repeats of silver rows marked and, when ``skip_routed``, without rows
        already routed. Silver near the batch is looked up once (:class:`SilverIdentities`), and
        quarantine too when ``skip_routed``; the Spark rules of :mod:`~fraudlake.silver.validation`
        run over driver-local frames only when a lookup found rows, which rows fresh from a
        source with new ids never meet."""
        import pyarrow.compute as pc

        ids = validated.column("transaction_id").filter(pc.is_null(validated.column("quarantine_reason")))
        near = self.identities.near(session, bounds, ids)
        routed = self._quarantined_near(session, bounds).toArrow() if self.skip_routed else None
        if not near.num_rows and not (routed is not None and routed.num_rows):
            return validated
        frame, scored = local_frame(session, validated), local_frame(session, near)
        checked = mark_repeats(frame, scored)
        if routed is not None:
            checked = drop_routed(checked, scored, local_frame(session, routed))
        return checked.toArrow()

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

    def _quarantined_near(self, session: SparkSession, bounds: dict) -> DataFrame:
        """Quarantine rows received when this batch's rows were (the identity :func:`drop_routed` compares)."""
        from pyspark.sql import functions as F

        quarantine = session.table(self.quarantine_table).select(
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
