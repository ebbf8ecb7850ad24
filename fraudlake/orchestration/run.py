"""A timed or open-ended run of the layers, and the demo: what ``fraudlake run`` and
``fraudlake demo`` do between parsing their options and printing their result."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TextIO

from fraudlake.errors import FraudlakeError
from fraudlake.orchestration.pipeline import LAYERS, describe_profile, lakehouse_summary, left_behind, start_pipeline
from fraudlake.orchestration.streaming import failure_summary, format_left_behind, progress_printer, run_queries
from fraudlake.output import note
from fraudlake.settings import Context
from fraudlake.simulator import SECONDS_PER_DAY

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery


@dataclass
class RunResult:
    """What a run did: rows per query, and what each later layer left unread at the stop."""

    profile: str
    queries: dict[str, dict[str, Any]]  # query name -> its tally (rows, batches, seconds, ...)
    left_behind: dict[str, int]
    drain_limit_reached: dict[str, float] = field(default_factory=dict)

    def rows(self) -> dict[str, int]:
        return {name: tally["rows"] for name, tally in self.queries.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def stream_layers(
    spark: SparkSession,
    ctx: Context,
    layers: tuple[str, ...],
    source: str,
    rate: int | None,
    landing: str | None,
    duration: float | None,
    output_format: str,
    alerts_out: TextIO,
    produce: bool = False,
) -> RunResult:
    """Run ``layers`` until ``duration`` (seconds) or Ctrl-C with progress on stderr.

    ``produce``: the simulator also sends ``rate`` rows/s to the Kafka topic bronze reads
    (``fraudlake demo --source kafka``), as the pipeline's first stage.

    Progress is one line per interval for people, or one JSON object per line when
    ``output_format`` is json (stderr either way: stdout holds only the result). Alerts go
    to ``alerts_out``. At the end, the rows each layer left unread are counted and said.
    """
    as_json = output_format == "json"
    producer = start_producer_when_ready(spark, ctx, rate or ctx.settings.ingest.rate) if produce else None
    pipeline = start_pipeline(spark, ctx, layers, source, rate=rate, landing=landing, out=alerts_out)
    if producer is not None:
        pipeline.add_source_first("produce", producer, ctx.settings.ingest.trigger_seconds)
    if as_json:
        note(
            json.dumps(
                {
                    "event": "start",
                    "queries": list(pipeline.queries),
                    "duration_seconds": duration,
                    "profile": ctx.settings.profile,
                    "trigger_seconds": dict(pipeline.intervals),
                    "model": pipeline.model,
                    "checkpoints": ctx.paths.checkpoints,
                }
            )
        )
    else:
        until = f"for {duration:g}s" if duration else "until Ctrl-C"
        model = f"; scoring with {pipeline.model}" if pipeline.model else ""
        note(
            f"running {', '.join(layers)} {until}; {describe_profile(ctx.settings, layers)}"
            f"{model}; checkpoints under {ctx.paths.checkpoints}"
        )
    queries = run_queries(
        pipeline.queries,
        duration,
        ctx.settings.ingest.progress_seconds,
        stats=pipeline.stats,
        stages=pipeline.stages,
        intervals=pipeline.intervals,
        spark=spark,
        report=progress_printer(output_format),
    )
    interrupted = any(tally["interrupted"] for tally in queries.values())
    limits = {name: tally["drain_limit_seconds"] for name, tally in queries.items() if tally["drain_limit_seconds"]}
    result = RunResult(ctx.settings.profile, queries, left_behind(spark, ctx, layers), limits)
    if as_json:
        note(
            json.dumps(
                {
                    "event": "stopped",
                    "elapsed_seconds": max((t["seconds"] for t in queries.values()), default=0.0),
                    "interrupted": interrupted,
                    "rows": result.rows(),
                    "left_behind": result.left_behind,
                    "drain_limit_reached": limits,
                }
            )
        )
    elif result.left_behind:
        note(format_left_behind(result.left_behind, limits, interrupted))
    return result


def start_producer_when_ready(spark: SparkSession, ctx: Context, rate: int, timeout: float = 120.0) -> StreamingQuery:
    """The simulator's stream to the Kafka topic, once its first batch has committed: the topic
    exists then (a broker creates it on the first write), so bronze can subscribe to it."""
    from fraudlake.bronze.ingest import start_producer

    producer = start_producer(spark, ctx, rate)
    deadline = time.monotonic() + timeout
    while producer.isActive and not producer.recentProgress and time.monotonic() < deadline:
        time.sleep(0.2)
    error = producer.exception() if not producer.isActive else None
    if error is not None or not producer.recentProgress:
        producer.stop()
        kafka = ctx.settings.ingest.kafka
        why = failure_summary(str(error)) if error is not None else f"no batch within {timeout:g} s"
        raise FraudlakeError(f"cannot send to {kafka.topic} at {kafka.bootstrap_servers}: {why}")
    return producer


def run_demo(
    spark: SparkSession,
    ctx: Context,
    rate: int,
    duration: float,
    model: str,
    output_format: str,
    alerts_out: TextIO,
    source: str = "rate",
) -> dict[str, Any]:
    """Train ``model`` if no champion is registered, stream every layer for ``duration``
    seconds at ``rate`` rows/s, then evaluate and write the run, evaluation and lakehouse
    reports; returns the summary with the reports' paths. ``source`` kafka: the simulator
    sends to the topic at ``rate`` (a query of its own, stopped first) and bronze reads it."""
    from fraudlake.dashboards.report import write_lakehouse_report
    from fraudlake.ml.evaluate import evaluate_model
    from fraudlake.ml.registry import default_model_uri, mlflow_client, reports_dir, resolve_model
    from fraudlake.ml.train import train_model

    try:
        resolve_model(mlflow_client(ctx), default_model_uri(ctx))
    except FraudlakeError:
        # History at the stream's pace: a card's behaviour (purchases per hour, a burst's spacing)
        # then means in training what it means live.
        note(
            f"no champion model yet: training {model} on {ctx.settings.ml.samples:,} simulated rows "
            f"at the stream's {rate:,} rows/s..."
        )
        train_model(spark, ctx.with_settings(simulator={"rows_per_day": rate * SECONDS_PER_DAY}), model=model)
    run = stream_layers(
        spark, ctx, LAYERS, source, rate, None, duration, output_format, alerts_out, produce=source == "kafka"
    )
    evaluation = evaluate_model(ctx)
    summary = lakehouse_summary(spark, ctx)
    reports = reports_dir(ctx)
    reports.mkdir(parents=True, exist_ok=True)
    run_report = reports / f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    run_report.write_text(json.dumps({**run.as_dict(), **summary}, indent=2, default=str) + "\n")
    lakehouse_report, _ = write_lakehouse_report(spark, ctx)
    return {
        "profile": run.profile,
        "left_behind": run.left_behind,
        "drain_limit_reached": run.drain_limit_reached,
        **summary,
        "evaluation_report": evaluation["report"],
        "run_report": str(run_report),
        "lakehouse_report": str(lakehouse_report),
    }
