"""Starting the medallion layers together (``fraudlake run``, ``fraudlake demo``) and summing up a run.

Each layer is its own streaming query with its own checkpoint and meets the others
only through Delta tables, so any layer can also run alone as a separate job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming import scheduler_pool
from fraudlake.tables import ALL_TABLES, SILVER_SCORED, table_name

LAYERS = ("bronze", "silver", "gold")


def parse_layers(text: str) -> tuple[str, ...]:
    layers = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown or not layers:
        raise FraudlakeError(f"unknown layer(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(LAYERS)}")
    return tuple(layer for layer in LAYERS if layer in layers)  # upstream first


@dataclass
class Pipeline:
    queries: dict = field(default_factory=dict)
    details: dict = field(default_factory=dict)  # query name -> progress text
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
        from fraudlake.ml.registry import default_model_uri, mlflow_client, resolve_model

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
    """Start the queries of ``layers``, upstream first. The model is resolved before anything starts."""
    pipeline = Pipeline()
    streams = ctx.settings.streams
    scorer = load_champion(spark, ctx) if "silver" in layers else None
    if "bronze" in layers:
        from fraudlake.bronze.ingest import start_bronze_ingest

        with scheduler_pool(spark, "bronze"):
            bronze = start_bronze_ingest(spark, ctx, source, rate=rate, landing=landing)
        pipeline.add_stage({"bronze": bronze}, ctx.settings.ingest.trigger_seconds)
    if scorer is not None:
        from fraudlake.silver.stream import start_silver

        with scheduler_pool(spark, "silver"):
            query, writer = start_silver(spark, ctx, scorer)
        pipeline.add_stage({"silver": query}, streams.silver_trigger_seconds)
        pipeline.details["silver"] = lambda: _silver_detail(writer.stats)
        pipeline.model = f"{scorer.model_name} v{scorer.model_version}"
    if "gold" in layers:
        from fraudlake.gold.stream import GOLD_QUERIES, start_gold

        with scheduler_pool(spark, "gold"):
            gold = start_gold(spark, ctx, out=out)
        # Activity alerts read the windows table: they drain after it.
        pipeline.add_stage({name: gold[name] for name in GOLD_QUERIES[:-1]}, streams.gold_trigger_seconds)
        pipeline.add_stage({name: gold[name] for name in GOLD_QUERIES[-1:]}, streams.gold_trigger_seconds)
    return pipeline


def _silver_detail(stats) -> str:
    lag = f"  lag {stats.last_lag_seconds:.1f}s" if stats.last_lag_seconds is not None else ""
    return f"scored {stats.scored:,}  flagged {stats.flagged:,}  quarantined {stats.quarantined:,}{lag}"


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
        from fraudlake.gold.stream import GOLD_QUERIES, start_gold

        stages.append(lambda: start_gold(spark, ctx, out=out, available_now=True, names=GOLD_QUERIES[:-1]))
        stages.append(lambda: start_gold(spark, ctx, out=out, available_now=True, names=GOLD_QUERIES[-1:]))
    rows = {}
    for stage in stages:
        for name, query in stage().items():
            query.awaitTermination()
            if query.exception() is not None:
                raise FraudlakeError(f"{name} query failed: {str(query.exception()).splitlines()[0]}")
            rows[name] = rows_processed(query)
    return rows
