"""Starting the medallion layers together (``fraudlake run``, ``fraudlake demo``) and summing up a run.

When bronze and silver run together, one query does both (:class:`IngestAndScore`): each
micro-batch of the source is appended to ``bronze.transactions`` and routed by silver's
writer in the same batch, so a transaction is scored without a second hop through
bronze's Delta log (on local[2] this halved ingest -> scored; see the README). Alone, each
layer is its own query that reads the layer before it as a Delta stream, so any layer
can run as a separate job; gold always does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

from fraudlake.conf.settings import Settings
from fraudlake.errors import FraudlakeError
from fraudlake.orchestration.streaming import failure_summary, scheduler_pool
from fraudlake.output import note
from fraudlake.settings import Context
from fraudlake.streaming_io import triggered, writer_app_id
from fraudlake.tables import (
    ALL_TABLES,
    ARRIVED_FRAUD_SQL,
    BRONZE_LABELS,
    BRONZE_TRANSACTIONS,
    GOLD_DASHBOARD_MINUTE,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    TableSpec,
    table_name,
)

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from fraudlake.ml.serving import ModelScorer
    from fraudlake.silver.stream import SilverBatchWriter

LAYERS = ("bronze", "silver", "gold")
# The setting that holds each layer's micro-batch interval (a profile fills it unless set).
TRIGGER_SETTINGS = {
    "bronze": ("ingest", "trigger_seconds"),
    "silver": ("streams", "silver_trigger_seconds"),
    "gold": ("streams", "gold_trigger_seconds"),
}


def parse_layers(text: str) -> tuple[str, ...]:
    layers = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown or not layers:
        raise FraudlakeError(f"unknown layer(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(LAYERS)}")
    return tuple(layer for layer in LAYERS if layer in layers)  # upstream first


def trigger_seconds(settings: Settings, layer: str) -> float:
    """The micro-batch interval of ``layer`` under ``settings``."""
    section, key = TRIGGER_SETTINGS[layer]
    return getattr(getattr(settings, section), key)


def describe_profile(settings: Settings, layers) -> str:
    """The profile and the intervals it leads to, for a run's start message; a value set in
    conf or with --set, not by the profile, is marked.

    >>> describe_profile(Settings(), ("bronze", "gold"))
    'profile latency: micro-batches every bronze 1 s, gold 10 s'
    >>> describe_profile(Settings(streams={"gold_trigger_seconds": 15}), ("gold",))
    'profile latency: micro-batches every gold 15 s (set)'

    Bronze and silver together are one query, on bronze's interval:

    >>> describe_profile(Settings(), ("bronze", "silver"))
    'profile latency: micro-batches every bronze+silver 1 s'
    """
    explicit = settings.explicit_stream_keys()
    combined = "bronze" in layers and "silver" in layers

    def interval(layer: str) -> str:
        seconds = trigger_seconds(settings, layer)
        name = "bronze+silver" if combined and layer == "bronze" else layer
        text = f"{name} {seconds:g} s" if seconds else f"{name} back to back"
        return text + (" (set)" if ".".join(TRIGGER_SETTINGS[layer]) in explicit else "")

    shown = [layer for layer in layers if not (combined and layer == "silver")]
    return f"profile {settings.profile}: micro-batches every " + ", ".join(interval(layer) for layer in shown)


@dataclass
class Pipeline:
    queries: dict[str, StreamingQuery] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # query name -> its writer's live stats (silver, gold)
    stages: list = field(default_factory=list)  # query names, upstream stage first
    intervals: dict = field(default_factory=dict)  # query name -> trigger interval (s)
    model: str | None = None  # the model version silver scores with

    def add_stage(self, queries: dict[str, StreamingQuery], interval: float) -> None:
        self.queries.update(queries)
        self.stages.append(list(queries))
        self.intervals.update({name: interval for name in queries})

    def add_beside(self, name: str, query: StreamingQuery, interval: float) -> None:
        """A query in the last stage so far, on an interval of its own (the label records beside
        the transactions): drained with that stage."""
        self.queries[name] = query
        self.stages[-1].append(name)
        self.intervals[name] = interval

    def add_source_first(self, name: str, query: StreamingQuery, interval: float) -> None:
        """A query upstream of every stage (the simulator's producer to Kafka): stopped first at
        the drain, and first in progress, whose input rate is the first query's."""
        self.queries = {name: query, **self.queries}
        self.stages.insert(0, [name])
        self.intervals[name] = interval


def preflight(ctx: Context, layers, source: str, rate: int | None) -> None:
    """Checks that need no Spark, so a run that cannot work fails in a second, not after a JVM start:
    the model, the checkpoints (:func:`~fraudlake.orchestration.checkpoints.verify_checkpoints`).
    The rate checkpoint is claimed last: a run refused for another reason records no rate."""
    from fraudlake.orchestration.checkpoints import verify_checkpoints

    verify_checkpoints(ctx, layers, source)
    if "silver" in layers:
        from fraudlake.ml.registry import (
            default_model_uri,
            mlflow_client,
            resolve_model,
        )

        try:
            resolve_model(mlflow_client(ctx), ctx.settings.streams.model_uri or default_model_uri(ctx))
        except FraudlakeError as error:
            raise FraudlakeError(f"silver cannot start: {error}") from None
    if "bronze" in layers and source == "rate":
        from fraudlake.bronze.ingest import claim_rate_checkpoint

        claim_rate_checkpoint(ctx, rate or ctx.settings.ingest.rate)


def add_label_ingest(spark: SparkSession, ctx: Context, pipeline: Pipeline, source: str) -> None:
    """Beside bronze's query, the label records of ``source`` (Kafka's labels topic, label files:
    :mod:`fraudlake.bronze.label_records`); the rate source's labels come with its own batches."""
    from fraudlake.bronze.label_records import reads_labels, start_label_ingest

    if reads_labels(spark, ctx, source):
        with scheduler_pool(spark, "bronze"):
            query, writer = start_label_ingest(spark, ctx, source)
        pipeline.add_beside("labels", query, ctx.settings.ingest.labels_trigger_seconds)
        pipeline.stats["labels"] = writer.stats


def load_champion(spark: SparkSession, ctx: Context) -> ModelScorer:
    """The model silver scores with, resolved to a version now; a clear error if there is none."""
    from fraudlake.ml.serving import load_scorer

    try:
        return load_scorer(spark, ctx, ctx.settings.streams.model_uri)
    except FraudlakeError as error:
        raise FraudlakeError(f"silver cannot start: {error}") from None


def start_pipeline(
    spark: SparkSession,
    ctx: Context,
    layers,
    source: str,
    rate: int | None = None,
    landing: str | None = None,
    out: TextIO | None = None,
) -> Pipeline:
    """Start the queries of ``layers``, upstream first. The model is resolved before anything starts.

    >>> pipeline = start_pipeline(spark, ctx, LAYERS, "rate", rate=200)  # doctest: +SKIP
    >>> list(pipeline.queries), pipeline.stages  # doctest: +SKIP
    (['bronze', 'silver', 'gold'], [['bronze'], ['silver'], ['gold']])
    """
    pipeline = Pipeline()
    scorer = load_champion(spark, ctx) if "silver" in layers else None
    if "bronze" in layers and scorer is not None:
        query, combined = start_ingest_and_score(spark, ctx, source, scorer, rate=rate, landing=landing)
        pipeline.add_stage({"silver": query}, trigger_seconds(ctx.settings, "bronze"))
        pipeline.stats["silver"] = combined.silver.stats
    elif "bronze" in layers:
        from fraudlake.bronze.ingest import start_bronze_ingest

        with scheduler_pool(spark, "bronze"):
            bronze = start_bronze_ingest(spark, ctx, source, rate=rate, landing=landing)
        pipeline.add_stage({"bronze": bronze}, trigger_seconds(ctx.settings, "bronze"))
    elif scorer is not None:
        from fraudlake.silver.stream import start_silver

        with scheduler_pool(spark, "silver"):
            query, writer = start_silver(spark, ctx, scorer)
        pipeline.add_stage({"silver": query}, trigger_seconds(ctx.settings, "silver"))
        pipeline.stats["silver"] = writer.stats
    if "bronze" in layers:
        add_label_ingest(spark, ctx, pipeline, source)
    if scorer is not None:
        pipeline.model = f"{scorer.model_name} v{scorer.model_version}"
    if "gold" in layers:
        from fraudlake.gold.stream import start_gold

        with scheduler_pool(spark, "gold"):
            queries, stats = start_gold(spark, ctx, out=out)
        pipeline.add_stage(queries, trigger_seconds(ctx.settings, "gold"))
        pipeline.stats["gold"] = stats
    return pipeline


class IngestAndScore:
    """The ``foreachBatch`` function of the combined bronze + silver query.

    Each micro-batch of the source is appended to bronze while silver's writer routes it
    (validation, repeats, scoring, quarantine): bronze = silver + quarantine holds at
    every commit of the query (between its micro-batches). Every append is idempotent, so
    a batch replayed after ``kill -9`` lands once. The bronze append is a bronze-only run's (:class:`BronzeWriter`,
    under the query's own id), so the two share the source checkpoint (``bronze_rate``: the
    rate source's transaction ids go on where they stopped).
    """

    def __init__(self, ctx: Context, silver: SilverBatchWriter, checkpoint: str, source: str) -> None:
        from fraudlake.bronze.ingest import BronzeWriter
        from fraudlake.bronze.labels import SimulatedLabels

        self.bronze = BronzeWriter(ctx, checkpoint)
        self.silver = silver
        # The simulator's labels: appended beside bronze's rows, and handed to silver's features
        # before the batch they arrived with is scored (silver reads no label table then).
        self.labels = SimulatedLabels(ctx) if source == "rate" else None
        if self.labels is not None:
            self.silver.behaviour.reads_labels = False
        # The first batch after a start may replay one whose bronze append committed before
        # a crash; the catch-up at start has routed those rows, so that batch leaves routed
        # rows alone. Later batches hold only rows fresh from the source: no lookup for them.
        self.silver.skip_routed = True

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from fraudlake.bronze.labels import FEED_COLUMNS
        from fraudlake.silver.stream import local_frame

        # The source runs once, with silver's validation (one job brings the batch to the
        # driver); bronze's append and silver's routing then run at the same time, each a few
        # Spark jobs and a Delta commit that leave cores idle while they wait on the driver. Each
        # is idempotent on its own, so a replay after a crash between them writes only the one
        # that had not committed.
        session = batch.sparkSession
        validated = self.silver.validated(batch)
        frame = local_frame(session, validated)
        arrived = None
        self.silver.scorer_for_batch(session)  # before the labels: a new version may rebuild the history
        if self.labels is not None:
            arrived = self.labels.due(session, validated.select(list(FEED_COLUMNS)))
            self.silver.behaviour.add_labels(session, arrived)
        bronze = _Parallel(self._bronze, frame.drop("quarantine_reason"), batch_id, arrived)
        try:
            self.silver.route(session, validated, batch_id)
        finally:
            bronze.join()
        self.silver.skip_routed = False

    def _bronze(self, frame: DataFrame, batch_id: int, arrived: pd.DataFrame | None) -> None:
        self.bronze(frame, batch_id)
        if self.labels is not None and arrived is not None:
            self.labels.append(frame.sparkSession, arrived)


class _Parallel:
    """``call(*args)`` on a thread that inherits the caller's Spark local properties (its
    scheduler pool, its query's job group); :meth:`join` waits and raises what it raised."""

    def __init__(self, call: Callable[..., None], *args: object) -> None:
        from pyspark import InheritableThread

        self._error: BaseException | None = None

        def run() -> None:
            try:
                call(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the caller by join()
                self._error = error

        self._thread = InheritableThread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def start_ingest_and_score(
    spark: SparkSession,
    ctx: Context,
    source: str,
    scorer: ModelScorer,
    rate: int | None = None,
    landing: str | None = None,
    available_now: bool = False,
) -> tuple[StreamingQuery, IngestAndScore]:
    """Start the combined bronze + silver query; returns ``(query, writer)``.

    Bronze rows silver has not routed yet (from a bronze-only run, or a batch a crash
    interrupted between its bronze and silver appends) are routed first by silver's own
    query, until caught up: the combined query routes only what it ingests.
    """
    from fraudlake.bronze.ingest import checkpoint_name, source_frame
    from fraudlake.silver.stream import SilverBatchWriter

    frame = source_frame(spark, ctx, source, rate, landing, available_now)
    backlog = left_behind(spark, ctx, ("silver",))["silver"]
    if backlog > 0:
        note(f"silver: scoring {backlog:,} bronze rows not routed yet before ingesting more...")
        catch_up(spark, ctx, ("silver",))
    name = checkpoint_name(source)
    checkpoint = ctx.paths.checkpoint(name)
    silver = SilverBatchWriter(ctx, scorer, writer_app_id(checkpoint, "silver"))
    writer = IngestAndScore(ctx, silver, checkpoint, source)
    stream = frame.writeStream.queryName(f"{name}+silver").foreachBatch(writer).option("checkpointLocation", checkpoint)
    with scheduler_pool(spark, "silver"):
        return triggered(stream, ctx.settings.ingest.trigger_seconds, available_now).start(), writer


def left_behind(spark: SparkSession, ctx: Context, layers) -> dict[str, int]:
    """Rows each of ``layers`` has not processed of what the layer before it committed.

    Read from the tables, so it holds whoever wrote them: silver's backlog is the bronze
    rows in neither silver table; gold's, the silver rows not yet counted in
    ``gold.dashboard_minute.tx_count`` (gold counts there every silver row it has read,
    except rows that came after their minute was final: those stay in this count).
    Bronze has none to report (its sources are outside the lakehouse).

    >>> left_behind(spark, ctx, ("bronze", "silver", "gold"))  # doctest: +SKIP
    {'silver': 0, 'gold': 1200}
    """
    from pyspark.sql import functions as F

    def rows(spec: TableSpec) -> int:
        return spark.table(table_name(ctx, spec)).count()

    left: dict[str, int] = {}
    if "silver" not in layers and "gold" not in layers:
        return left
    silver = rows(SILVER_SCORED)
    if "silver" in layers:
        left["silver"] = rows(BRONZE_TRANSACTIONS) - silver - rows(SILVER_QUARANTINE)
    if "gold" in layers:
        counted = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE)).agg(F.sum("tx_count")).first()
        assert counted is not None  # an aggregate without grouping has one row
        left["gold"] = silver - (counted[0] or 0)
    return left


def lakehouse_summary(spark: SparkSession, ctx: Context) -> dict:
    """Rows per table, flagged share, live precision/recall from labels, model versions seen."""
    from pyspark.sql import functions as F

    summary: dict = {"rows": {table_name(ctx, spec): spark.table(table_name(ctx, spec)).count() for spec in ALL_TABLES}}
    silver = spark.table(table_name(ctx, SILVER_SCORED))
    # Live quality from the fraud labels that have arrived: until its label comes, a fraud counts as genuine.
    fraud = spark.sql(ARRIVED_FRAUD_SQL.format(labels=table_name(ctx, BRONZE_LABELS)))
    flagged, known = F.col("is_flagged"), F.col("fraud_id").isNotNull()
    totals = (
        silver.join(fraud, F.col("transaction_id") == F.col("fraud_id"), "left")
        .agg(
            F.count("*").alias("n"),
            F.sum(flagged.cast("long")).alias("flagged"),
            F.sum((flagged & known).cast("long")).alias("tp"),
            F.sum((flagged & ~known).cast("long")).alias("fp"),
            F.sum((~flagged & known).cast("long")).alias("fn"),
        )
        .first()
    )
    assert totals is not None  # an aggregate without grouping has one row
    n, tp, fp, fn = totals["n"], totals["tp"] or 0, totals["fp"] or 0, totals["fn"] or 0
    summary["flagged_share"] = round((totals["flagged"] or 0) / n, 4) if n else None
    summary["live_precision"] = round(tp / (tp + fp), 4) if tp + fp else None
    summary["live_recall"] = round(tp / (tp + fn), 4) if tp + fn else None
    summary["model_versions"] = sorted(
        f"{r['model_name']} v{r['model_version']}"
        for r in silver.select("model_name", "model_version").distinct().collect()
    )
    summary["stolen_card_bursts"] = stolen_card_bursts(silver)
    return summary


def stolen_card_bursts(silver: DataFrame) -> dict:
    """How the model met the simulator's stolen-card bursts (rows labelled ``compromised_card``,
    one burst per card): how many bursts, how many it flagged while they lasted, and the median
    purchase of a burst (1 = its first) that it flagged first."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    in_order = Window.partitionBy("card_id").orderBy("event_time", "transaction_id")
    per_burst = (
        silver.where(F.col("label_scenario") == "compromised_card")
        .withColumn("purchase", F.row_number().over(in_order))
        .groupBy("card_id")
        .agg(F.min(F.when(F.col("is_flagged"), F.col("purchase"))).alias("first_flagged"))
    )
    totals = per_burst.agg(
        F.count("*").alias("bursts"),
        F.count("first_flagged").alias("flagged"),
        F.percentile_approx("first_flagged", 0.5).alias("median"),
    ).first()
    assert totals is not None  # an aggregate without grouping has one row
    return {
        "bursts": totals["bursts"],
        "flagged_within_the_burst": totals["flagged"],
        "median_first_flagged_purchase": totals["median"],
    }


def catch_up(spark: SparkSession, ctx: Context, layers, landing: str | None = None, out: TextIO | None = None) -> dict:
    """Process everything available through ``layers`` once, upstream first, then stop.

    The scheduled-job form of the pipeline (Trigger.AvailableNow): bronze reads the
    landing folder, each later layer reads what the one before has committed.
    Returns rows processed per query.
    """
    from fraudlake.orchestration.checkpoints import verify_checkpoints
    from fraudlake.orchestration.streaming import rows_processed

    verify_checkpoints(ctx, layers, "files")
    scorer = load_champion(spark, ctx) if "silver" in layers else None
    stages = []
    if "bronze" in layers:
        from fraudlake.bronze.ingest import start_bronze_ingest
        from fraudlake.bronze.label_records import start_label_ingest

        stages.append(
            lambda: {
                "bronze": start_bronze_ingest(spark, ctx, "files", landing=landing, available_now=True),
                "labels": start_label_ingest(spark, ctx, "files", available_now=True)[0],
            }
        )
    if scorer is not None:
        from fraudlake.silver.stream import start_silver

        stages.append(lambda: {"silver": start_silver(spark, ctx, scorer, available_now=True)[0]})
    if "gold" in layers:
        from fraudlake.gold.stream import start_gold

        stages.append(lambda: start_gold(spark, ctx, out=out, available_now=True)[0])
    rows = {}
    for stage in stages:
        for name, query in stage().items():
            query.awaitTermination()
            if query.exception() is not None:
                raise FraudlakeError(f"{name} query failed: {failure_summary(str(query.exception()))}")
            rows[name] = rows_processed(query)
    return rows
