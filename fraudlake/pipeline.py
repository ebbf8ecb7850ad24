"""Starting the medallion layers together (``fraudlake run``, ``fraudlake demo``) and summing up a run.

Each layer is one streaming query (``bronze``, ``silver``, ``gold``) with its own
checkpoint and meets the others only through Delta tables, so any layer can also run
alone as a separate job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudlake.conf.settings import Settings
from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming import scheduler_pool
from fraudlake.tables import (
    ALL_TABLES,
    BRONZE_TRANSACTIONS,
    GOLD_DASHBOARD_MINUTE,
    SILVER_QUARANTINE,
    SILVER_SCORED,
    table_name,
)

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
    'profile latency: micro-batches every bronze 0.5 s, gold 5 s'
    >>> describe_profile(Settings(streams={"gold_trigger_seconds": 15}), ("gold",))
    'profile latency: micro-batches every gold 15 s (set)'
    """
    explicit = settings.explicit_stream_keys()

    def interval(layer: str) -> str:
        seconds = trigger_seconds(settings, layer)
        text = f"{layer} {seconds:g} s" if seconds else f"{layer} back to back"
        return text + (" (set)" if ".".join(TRIGGER_SETTINGS[layer]) in explicit else "")

    return f"profile {settings.profile}: micro-batches every " + ", ".join(interval(layer) for layer in layers)


@dataclass
class Pipeline:
    queries: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # query name -> its writer's live stats (silver, gold)
    stages: list = field(default_factory=list)  # query names, upstream stage first
    intervals: dict = field(default_factory=dict)  # query name -> trigger interval (s)
    model: str | None = None  # the model version silver scores with

    def add_stage(self, queries: dict, interval: float) -> None:
        self.queries.update(queries)
        self.stages.append(list(queries))
        self.intervals.update({name: interval for name in queries})


def preflight(ctx: Context, layers, source: str, rate: int | None) -> None:
    """Checks that need no Spark, so a run that cannot work fails in a second, not after a JVM start."""
    if "bronze" in layers and source == "rate":
        from fraudlake.bronze.ingest import claim_rate_checkpoint

        claim_rate_checkpoint(ctx, rate or ctx.settings.ingest.rate)
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


def load_champion(spark, ctx: Context):
    """The model silver scores with, resolved to a version now; a clear error if there is none."""
    from fraudlake.ml.serving import load_scorer

    try:
        return load_scorer(spark, ctx, ctx.settings.streams.model_uri)
    except FraudlakeError as error:
        raise FraudlakeError(f"silver cannot start: {error}") from None


def start_pipeline(spark, ctx: Context, layers, source: str, rate: int | None = None, landing: str | None = None,
                   out=None) -> Pipeline:
    """Start the queries of ``layers``, upstream first. The model is resolved before anything starts.

    >>> pipeline = start_pipeline(spark, ctx, LAYERS, "rate", rate=200)  # doctest: +SKIP
    >>> list(pipeline.queries), pipeline.stages  # doctest: +SKIP
    (['bronze', 'silver', 'gold'], [['bronze'], ['silver'], ['gold']])
    """
    pipeline = Pipeline()
    scorer = load_champion(spark, ctx) if "silver" in layers else None
    if "bronze" in layers:
        from fraudlake.bronze.ingest import start_bronze_ingest

        with scheduler_pool(spark, "bronze"):
            bronze = start_bronze_ingest(spark, ctx, source, rate=rate, landing=landing)
        pipeline.add_stage({"bronze": bronze}, trigger_seconds(ctx.settings, "bronze"))
    if scorer is not None:
        from fraudlake.silver.stream import start_silver

        with scheduler_pool(spark, "silver"):
            query, writer = start_silver(spark, ctx, scorer)
        pipeline.add_stage({"silver": query}, trigger_seconds(ctx.settings, "silver"))
        pipeline.stats["silver"] = writer.stats
        pipeline.model = f"{scorer.model_name} v{scorer.model_version}"
    if "gold" in layers:
        from fraudlake.gold.stream import start_gold

        with scheduler_pool(spark, "gold"):
            query, writer = start_gold(spark, ctx, out=out)
        pipeline.add_stage({"gold": query}, trigger_seconds(ctx.settings, "gold"))
        pipeline.stats["gold"] = writer.stats
    return pipeline


def left_behind(spark, ctx: Context, layers) -> dict[str, int]:
    """Rows each of ``layers`` has not processed of what the layer before it committed.

    Read from the tables, so it holds whoever wrote them: silver's backlog is the bronze
    rows in neither silver table; gold's, the silver rows not yet counted in
    ``gold.dashboard_minute.tx_count`` (gold counts every silver row it has read there).
    Bronze has none to report (its sources are outside the lakehouse).

    >>> left_behind(spark, ctx, ("bronze", "silver", "gold"))  # doctest: +SKIP
    {'silver': 0, 'gold': 1200}
    """
    from pyspark.sql import functions as F

    def rows(spec) -> int:
        return spark.table(table_name(ctx, spec)).count()

    left: dict[str, int] = {}
    if "silver" not in layers and "gold" not in layers:
        return left
    silver = rows(SILVER_SCORED)
    if "silver" in layers:
        left["silver"] = rows(BRONZE_TRANSACTIONS) - silver - rows(SILVER_QUARANTINE)
    if "gold" in layers:
        counted = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE)).agg(F.sum("tx_count")).first()[0]
        left["gold"] = silver - (counted or 0)
    return left


def lakehouse_summary(spark, ctx: Context) -> dict:
    """Rows per table, flagged share, live precision/recall from labels, model versions seen."""
    from pyspark.sql import functions as F

    summary: dict = {"rows": {table_name(ctx, spec): spark.table(table_name(ctx, spec)).count() for spec in ALL_TABLES}}
    silver = spark.table(table_name(ctx, SILVER_SCORED))
    flagged, label = F.col("is_flagged"), F.col("label_is_fraud")
    totals = silver.agg(
        F.count("*").alias("n"),
        F.sum(flagged.cast("long")).alias("flagged"),
        F.sum((flagged & (label == 1)).cast("long")).alias("tp"),
        F.sum((flagged & (label == 0)).cast("long")).alias("fp"),
        F.sum((~flagged & (label == 1)).cast("long")).alias("fn"),
    ).first()
    n, tp, fp, fn = totals["n"], totals["tp"] or 0, totals["fp"] or 0, totals["fn"] or 0
    summary["flagged_share"] = round((totals["flagged"] or 0) / n, 4) if n else None
    summary["live_precision"] = round(tp / (tp + fp), 4) if tp + fp else None
    summary["live_recall"] = round(tp / (tp + fn), 4) if tp + fn else None
    summary["model_versions"] = sorted(
        f"{r['model_name']} v{r['model_version']}" for r in silver.select("model_name", "model_version").distinct().collect()
    )
    return summary


def catch_up(spark, ctx: Context, layers, landing: str | None = None, out=None) -> dict:
    """Process everything available through ``layers`` once, upstream first, then stop.

    The scheduled-job form of the pipeline (Trigger.AvailableNow): bronze reads the
    landing folder, each later layer reads what the one before has committed.
    Returns rows processed per query.
    """
    from fraudlake.streaming import rows_processed

    scorer = load_champion(spark, ctx) if "silver" in layers else None
    stages = []
    if "bronze" in layers:
        from fraudlake.bronze.ingest import start_bronze_ingest

        stages.append(lambda: {"bronze": start_bronze_ingest(spark, ctx, "files", landing=landing, available_now=True)})
    if scorer is not None:
        from fraudlake.silver.stream import start_silver

        stages.append(lambda: {"silver": start_silver(spark, ctx, scorer, available_now=True)[0]})
    if "gold" in layers:
        from fraudlake.gold.stream import start_gold

        stages.append(lambda: {"gold": start_gold(spark, ctx, out=out, available_now=True)[0]})
    rows = {}
    for stage in stages:
        for name, query in stage().items():
            query.awaitTermination()
            if query.exception() is not None:
                raise FraudlakeError(f"{name} query failed: {str(query.exception()).splitlines()[0]}")
            rows[name] = rows_processed(query)
    return rows
