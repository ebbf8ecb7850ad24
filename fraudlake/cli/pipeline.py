"""``generate``, ``ingest``, ``sql``, ``tables``, ``run`` and ``demo``: parse, call, print."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from fraudlake.cli.common import (
    context_from,
    format_option,
    not_created_yet,
    positive_float,
    positive_int,
    reader_session,
    simulator_overrides,
    source_options,
    stream_options,
    writer_session,
)
from fraudlake.errors import FraudlakeError
from fraudlake.output import emit, note, render_frame, render_mapping

if TYPE_CHECKING:
    import pandas as pd

    from fraudlake.broker import Broker
    from fraudlake.settings import Context


def add_pipeline_commands(commands, common: argparse.ArgumentParser) -> None:
    gen = commands.add_parser(
        "generate",
        parents=[common],
        help="write simulated transactions (batch) to Parquet",
        description="Write simulated, labelled transactions to a Parquet folder (training and test data).",
    )
    gen.add_argument("--samples", type=positive_int, default=30_000, help="number of transactions (default 30000)")
    gen.add_argument("--output", required=True, help="Parquet folder to write")
    gen.add_argument("--seed", type=int, help="simulator seed (default from conf)")
    gen.add_argument("--fraud-rate", type=float, help="share of fraudulent transactions (default from conf)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    format_option(gen)
    gen.set_defaults(handler=cmd_generate)

    ing = commands.add_parser(
        "ingest",
        parents=[common],
        help="stream a source into bronze.transactions",
        description="Append a source to bronze.transactions, exactly once, resuming from its checkpoint.",
    )
    source_options(ing)
    ing.add_argument(
        "--available-now",
        action="store_true",
        help="files only: ingest what the landing folder holds, then stop (for scheduled jobs)",
    )
    format_option(ing)
    ing.set_defaults(handler=cmd_ingest)

    sql = commands.add_parser(
        "sql",
        parents=[common],
        help="run Spark SQL on the lakehouse tables",
        description="Run one Spark SQL statement on the registered tables, e.g. "
        "SELECT count(*) FROM spark_catalog.bronze.transactions",
    )
    sql.add_argument("query", help="the SQL statement")
    sql.add_argument("--max-rows", type=positive_int, default=1000, help="rows to print at most (default 1000)")
    format_option(sql)
    sql.set_defaults(handler=cmd_sql)

    tables = commands.add_parser(
        "tables",
        parents=[common],
        help="list tables with row counts and Delta versions",
        description="List every fraudlake table with its row count, Delta version and location.",
    )
    format_option(tables)
    tables.set_defaults(handler=cmd_tables)
    run = commands.add_parser(
        "run",
        parents=[common],
        help="run the medallion streams: bronze, silver, gold",
        description="Start the chosen layers' streaming queries (each with its own checkpoint), show progress, "
        "stop cleanly; a restart resumes from the checkpoints.",
    )
    run.add_argument("--layers", default="bronze,silver,gold", help="comma-separated layers (default: all)")
    source_options(run)
    stream_options(run)
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="the whole story: train if needed, stream all layers, report",
        description="On a fresh home: train the default model if none is registered, run bronze, silver and gold "
        "on the simulator, print alerts as they come, then write reports and a summary.",
    )
    demo.add_argument("--duration", type=positive_float, default=180.0, help="seconds of streaming (default 180)")
    demo.add_argument(
        "--rate",
        type=positive_int,
        default=200,
        help="simulated transactions per second (default 200: about one model alert a second, "
        "and each stolen-card burst fills a 5-minute window)",
    )
    demo.add_argument(
        "--model",
        choices=["isolation_forest", "gradient_boosting"],
        default="gradient_boosting",
        help="model to train when none is registered (default gradient_boosting: at a realistic "
        "fraud share the IsolationForest flags ~15%% of traffic)",
    )
    demo.add_argument(
        "--source",
        choices=["rate", "kafka"],
        default="rate",
        help="rate: the simulator straight into bronze (default); kafka: the simulator sends to the topic "
        "in ingest.kafka and bronze reads it (a broker is started under HOME/kafka if none listens there)",
    )
    stream_options(demo)
    demo.set_defaults(handler=cmd_demo)


def cmd_generate(args: argparse.Namespace) -> int:
    from fraudlake.simulator import generate_batch, summarize

    ctx = context_from(args)
    overrides = simulator_overrides(args)
    if overrides:
        ctx = ctx.with_settings(simulator=overrides)
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise FraudlakeError(f"{output} exists: pass --overwrite to replace it")
    from fraudlake.spark import get_spark

    spark = get_spark(ctx, master=args.master)  # no tables needed: this writes a plain Parquet folder
    note(f"generating {args.samples:,} transactions (seed {ctx.settings.simulator.seed})...")
    generate_batch(spark, ctx.settings.simulator, args.samples).write.mode("overwrite").parquet(str(output))
    summary = {"output": str(output.absolute()), **summarize(spark.read.parquet(str(output)))}
    emit(render_mapping(summary, args.format))
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from fraudlake.bronze.ingest import checkpoint_name, start_bronze_ingest
    from fraudlake.bronze.label_records import reads_labels, start_label_ingest
    from fraudlake.orchestration.pipeline import preflight
    from fraudlake.orchestration.streaming import progress_printer, run_queries
    from fraudlake.tables import BRONZE_TRANSACTIONS, table_name

    ctx = context_from(args)
    source = args.source or ctx.settings.ingest.source
    preflight(ctx, ("bronze",), source, args.rate)  # fail fast, before the JVM
    spark = writer_session(ctx, args)
    queries = {
        "bronze": start_bronze_ingest(
            spark, ctx, source, rate=args.rate, landing=args.landing, available_now=args.available_now
        )
    }
    intervals = {"bronze": ctx.settings.ingest.trigger_seconds}
    if reads_labels(spark, ctx, source):
        queries["labels"] = start_label_ingest(spark, ctx, source, available_now=args.available_now)[0]
        intervals["labels"] = ctx.settings.ingest.labels_trigger_seconds
    target = table_name(ctx, BRONZE_TRANSACTIONS)
    until = "until caught up" if args.available_now else f"for {args.duration:g}s" if args.duration else "until Ctrl-C"
    note(f"ingesting {source} into {target} {until} (checkpoint {ctx.paths.checkpoint(checkpoint_name(source))})")
    tallies = run_queries(
        queries,
        args.duration,
        ctx.settings.ingest.progress_seconds,
        stages=[list(queries)],
        intervals=intervals,
        spark=spark,
        report=progress_printer(args.format),
    )
    summary = {"source": source, "table": target, **tallies["bronze"], "table_rows": spark.table(target).count()}
    if "labels" in tallies:
        summary["label_records"] = tallies["labels"].get("rows", 0)
    emit(render_mapping(summary, args.format))
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    from fraudlake.errors import NotFoundError

    ctx = context_from(args)
    spark, missing = reader_session(ctx, args)
    try:
        result = spark.sql(args.query)
    except Exception as error:  # AnalysisException, ParseException: the user's SQL
        if _error_condition(error) == "TABLE_OR_VIEW_NOT_FOUND":
            hint = f" ({not_created_yet(ctx, missing)})" if missing else ""
            raise NotFoundError(f"SQL failed: {_sql_error(error)}{hint}") from None
        raise FraudlakeError(f"SQL failed: {_sql_error(error)}") from None
    frame: pd.DataFrame = result.limit(args.max_rows + 1).toPandas()
    if len(frame) > args.max_rows:
        frame = frame.head(args.max_rows)
        note(f"(showing the first {args.max_rows:,} rows; raise --max-rows for more)")
    emit(render_frame(frame, args.format))
    return 0


def _error_condition(error: Exception) -> str | None:
    """Spark's error class of a failed statement, e.g. ``TABLE_OR_VIEW_NOT_FOUND``."""
    condition = getattr(error, "getCondition", None)
    return condition() if callable(condition) else None


def _sql_error(error: Exception) -> str:
    text = getattr(error, "getMessage", lambda: str(error))() if hasattr(error, "getMessage") else str(error)
    return " ".join(line.strip() for line in str(text).splitlines()[:2] if line.strip())


def cmd_tables(args: argparse.Namespace) -> int:
    import pandas as pd

    from fraudlake.tables import ALL_TABLES, describe_table, table_name

    ctx = context_from(args)
    spark, missing = reader_session(ctx, args)
    records = [
        {"table": table_name(ctx, spec), "rows": None, "version": None, "files": None, "location": None}
        if table_name(ctx, spec) in missing
        else describe_table(spark, ctx, spec)
        for spec in ALL_TABLES
    ]
    if missing:
        note(not_created_yet(ctx, missing))
    # Object columns: an absent table's None stays None (null in JSON), not NaN beside integers.
    emit(render_frame(pd.DataFrame(records, dtype=object), args.format))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fraudlake.orchestration.pipeline import lakehouse_summary, parse_layers, preflight
    from fraudlake.orchestration.run import stream_layers

    layers = parse_layers(args.layers)
    ctx = context_from(args)
    source = args.source or ctx.settings.ingest.source
    preflight(ctx, layers, source, args.rate)
    spark = writer_session(ctx, args)
    run = stream_layers(
        spark, ctx, layers, source, args.rate, args.landing, args.duration, args.format, _alerts_out(args)
    )
    emit(
        render_mapping(
            {
                "profile": run.profile,
                "queries": run.rows(),
                "left_behind": run.left_behind,
                "drain_limit_reached": run.drain_limit_reached,
                **lakehouse_summary(spark, ctx),
            },
            args.format,
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from fraudlake.orchestration.run import run_demo

    ctx = context_from(args)
    started = _broker_for(ctx) if args.source == "kafka" else None
    try:
        spark = writer_session(ctx, args)
        result = run_demo(
            spark, ctx, args.rate, args.duration, args.model, args.format, _alerts_out(args), source=args.source
        )
    finally:
        if started is not None:
            from fraudlake import broker

            broker.stop(started)
    result["next"] = [
        "fraudlake tables",
        'fraudlake sql "SELECT * FROM spark_catalog.gold.fraud_alerts ORDER BY alert_time DESC LIMIT 20"',
        "fraudlake models",
        "fraudlake dashboard",
        'fraudlake sql "DESCRIBE HISTORY spark_catalog.silver.scored_transactions"',
        "fraudlake check",
    ]
    emit(render_mapping(result, args.format))
    return 0


def _broker_for(ctx: Context) -> Broker | None:
    """The home's broker, started for the demo when nothing listens at ``ingest.kafka.bootstrap_servers``
    (returned, to be stopped after), else None (a broker of the user's: left alone)."""
    from fraudlake import broker

    local = broker.Broker.of(ctx.paths.home, ctx.settings.ingest.kafka.bootstrap_servers)
    if local.listening():
        return None
    note(f"starting a Kafka broker at {local.address} for the demo (stopped after it)...")
    broker.start(local)
    return local


def _alerts_out(args: argparse.Namespace) -> TextIO:
    """Alerts are for people: on stdout beside a table, on stderr when stdout is JSON or CSV."""
    return sys.stdout if args.format == "table" else sys.stderr
