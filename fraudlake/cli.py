"""The ``fraudlake`` command: one entry point for local runs and Databricks job tasks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fraudlake import __version__
from fraudlake.errors import FraudlakeError
from fraudlake.output import FORMATS, emit, note, render_frame, render_mapping
from fraudlake.settings import Context


def bounded(kind=float, low: float = 0, high: float | None = None):
    """An argparse type: a number of ``kind`` in ``(low, high]`` (``high`` None: no upper bound)."""
    noun = "an integer" if kind is int else "a number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {text!r}") from None
        if value <= low or (high is not None and value > high):
            bound = f"in ({low:g}, {high:g}]" if high is not None else f"greater than {low:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}: {value}")
        return value

    return parse


_positive_int = bounded(int)
_positive_float = bounded(float)


def _source_options(parser: argparse.ArgumentParser) -> None:
    """Where bronze reads from: shared by ``ingest`` and ``run``."""
    parser.add_argument("--source", choices=["rate", "files"], help="rate: the simulator; files: the landing folder "
                        "(default from conf: rate)")
    parser.add_argument("--rate", type=_positive_int, help="rows per second for --source rate (default from conf: 1)")
    parser.add_argument("--landing", help="landing folder for --source files (default HOME/landing)")
    parser.add_argument("--duration", type=_positive_float, help="stop after this many seconds (default: until Ctrl-C)")


def _common_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--conf", default=default, help="conf YAML path or name (local, databricks); env FRAUDLAKE_CONF")
    parser.add_argument("--home", default=default, help="folder for everything written; env FRAUDLAKE_HOME (./.fraudlake)")
    parser.add_argument("--master", default=default, help="Spark master for a local run, e.g. local[2]")


def _assignment(text: str) -> str:
    from fraudlake.settings import parse_assignment

    try:
        parse_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _set_option(parser: argparse.ArgumentParser, dest: str) -> None:
    # Two destinations: a subcommand's parser would otherwise replace the top-level list, not extend it.
    parser.add_argument("--set", dest=dest, action="append", type=_assignment, default=[], metavar="SECTION.KEY=VALUE",
                        help="override one conf setting, validated like the YAML (repeatable), "
                        "e.g. --set catalog.catalog=main --set ingest.rate=50")


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def _stream_options(parser: argparse.ArgumentParser) -> None:
    """What the streaming commands (``run``, ``demo``) share: the profile and the output format."""
    from typing import get_args

    from fraudlake.conf.settings import Profile

    parser.add_argument(
        "--profile", choices=get_args(Profile),
        help="stream presets: latency (short micro-batch intervals: rows in gold seconds after the card is used) "
        "or throughput (fewer, larger batches); a trigger or batch size set in conf or with --set still wins "
        "(default from conf: latency)",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table",
        help="output format (default: table); with json, progress on stderr is one JSON object per line too",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudlake",
        description="A Delta Lake lakehouse that detects card fraud in real time.",
    )
    parser.add_argument("--version", action="version", version=f"fraudlake {__version__}")
    _common_options(parser, None)
    _set_option(parser, "settings")
    # Options also accepted after the subcommand; SUPPRESS keeps a top-level value.
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, argparse.SUPPRESS)
    _set_option(common, "settings_after")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = commands.add_parser(
        "generate", parents=[common], help="write simulated transactions (batch) to Parquet",
        description="Write simulated, labelled transactions to a Parquet folder (training and test data).",
    )
    gen.add_argument("--samples", type=_positive_int, default=30_000, help="number of transactions (default 30000)")
    gen.add_argument("--output", required=True, help="Parquet folder to write")
    gen.add_argument("--seed", type=int, help="simulator seed (default from conf)")
    gen.add_argument("--fraud-rate", type=float, help="share of fraudulent transactions (default from conf)")
    gen.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _format_option(gen)
    gen.set_defaults(handler=cmd_generate)

    ing = commands.add_parser(
        "ingest", parents=[common], help="stream a source into bronze.transactions",
        description="Append a source to bronze.transactions, exactly once, resuming from its checkpoint.",
    )
    _source_options(ing)
    ing.add_argument(
        "--available-now", action="store_true",
        help="files only: ingest what the landing folder holds, then stop (for scheduled jobs)",
    )
    _format_option(ing)
    ing.set_defaults(handler=cmd_ingest)

    sql = commands.add_parser(
        "sql", parents=[common], help="run Spark SQL on the lakehouse tables",
        description="Run one Spark SQL statement on the registered tables, e.g. "
        "SELECT count(*) FROM spark_catalog.bronze.transactions",
    )
    sql.add_argument("query", help="the SQL statement")
    sql.add_argument("--max-rows", type=_positive_int, default=1000, help="rows to print at most (default 1000)")
    _format_option(sql)
    sql.set_defaults(handler=cmd_sql)

    tables = commands.add_parser(
        "tables", parents=[common], help="list tables with row counts and Delta versions",
        description="List every fraudlake table with its row count, Delta version and location.",
    )
    _format_option(tables)
    tables.set_defaults(handler=cmd_tables)
    run = commands.add_parser(
        "run", parents=[common], help="run the medallion streams: bronze, silver, gold",
        description="Start the chosen layers' streaming queries (each with its own checkpoint), show progress, "
        "stop cleanly; a restart resumes from the checkpoints.",
    )
    run.add_argument("--layers", default="bronze,silver,gold", help="comma-separated layers (default: all)")
    _source_options(run)
    _stream_options(run)
    run.set_defaults(handler=cmd_run)

    demo = commands.add_parser(
        "demo", parents=[common], help="the whole story: train if needed, stream all layers, report",
        description="On a fresh home: train the default model if none is registered, run bronze, silver and gold "
        "on the simulator, print alerts as they come, then write reports and a summary.",
    )
    demo.add_argument("--duration", type=_positive_float, default=180.0, help="seconds of streaming (default 180)")
    demo.add_argument("--rate", type=_positive_int, default=200,
                      help="simulated transactions per second (default 200: about one model alert a second, "
                      "and each stolen-card burst fills a 5-minute window)")
    demo.add_argument("--model", choices=["isolation_forest", "gradient_boosting"], default="gradient_boosting",
                      help="model to train when none is registered (default gradient_boosting: at a realistic "
                      "fraud share the IsolationForest flags ~15%% of traffic)")
    _stream_options(demo)
    demo.set_defaults(handler=cmd_demo)

    from fraudlake.ml.cli import add_ml_commands  # train, evaluate, promote, models

    add_ml_commands(commands, common)
    from fraudlake.audit_cli import add_audit_commands  # audit, rescore, maintain

    add_audit_commands(commands, common)
    from fraudlake.dashboards.cli import add_dashboard_commands  # dashboard, report

    add_dashboard_commands(commands, common)
    return parser


def context_from(args: argparse.Namespace) -> Context:
    from fraudlake.settings import resolve_conf_path
    from fraudlake.spark import require_runtime

    assignments = [*getattr(args, "settings", []), *getattr(args, "settings_after", [])]
    if getattr(args, "profile", None):  # run, demo: the named option beats a --set profile=...
        assignments.append(f"profile={args.profile}")
    ctx = Context.load(conf=args.conf, home=args.home, assignments=assignments)
    require_runtime(ctx, f"conf {resolve_conf_path(args.conf).name}")
    return ctx


def writer_session(ctx: Context, args: argparse.Namespace):
    """The Spark session of a command that writes tables (streams, ``rescore``, ``maintain``):
    every table created if missing and brought up to its spec (:func:`fraudlake.tables.ensure_tables`)."""
    from fraudlake.spark import get_spark
    from fraudlake.tables import ensure_tables

    spark = get_spark(ctx, master=args.master)
    ensure_tables(spark, ctx)
    return spark


def reader_session(ctx: Context, args: argparse.Namespace):
    """The Spark session of a read-only command and the names of the tables that do not exist
    yet: existing tables are only made visible (:func:`fraudlake.tables.attach_tables`), none
    is created or altered, so reading never commits to a table that streams are writing."""
    from fraudlake.spark import get_spark
    from fraudlake.tables import attach_tables

    spark = get_spark(ctx, master=args.master)
    return spark, attach_tables(spark, ctx)


def not_created_yet(ctx: Context, missing) -> str:
    """A hint naming the tables a home does not have yet and what creates them."""
    return (f"not created yet under {ctx.paths.home}: {', '.join(missing)} "
            "(fraudlake run, ingest or demo creates the tables)")


def cmd_generate(args: argparse.Namespace) -> int:
    from fraudlake.simulator import generate_batch, summarize

    ctx = context_from(args)
    overrides = {k: v for k, v in {"seed": args.seed, "fraud_rate": args.fraud_rate}.items() if v is not None}
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
    from fraudlake.bronze.ingest import (
        checkpoint_name,
        claim_rate_checkpoint,
        start_bronze_ingest,
    )
    from fraudlake.streaming import progress_printer, run_queries
    from fraudlake.tables import BRONZE_TRANSACTIONS, table_name

    ctx = context_from(args)
    source = args.source or ctx.settings.ingest.source
    if source == "rate":
        claim_rate_checkpoint(ctx, args.rate or ctx.settings.ingest.rate)  # fail fast, before the JVM
    spark = writer_session(ctx, args)
    query = start_bronze_ingest(
        spark, ctx, source, rate=args.rate, landing=args.landing, available_now=args.available_now
    )
    target = table_name(ctx, BRONZE_TRANSACTIONS)
    until = "until caught up" if args.available_now else f"for {args.duration:g}s" if args.duration else "until Ctrl-C"
    note(f"ingesting {source} into {target} {until} (checkpoint {ctx.paths.checkpoint(checkpoint_name(source))})")
    tally = run_queries(
        {"bronze": query}, args.duration, ctx.settings.ingest.progress_seconds, stages=[["bronze"]],
        intervals={"bronze": ctx.settings.ingest.trigger_seconds}, spark=spark, report=progress_printer(args.format),
    )["bronze"]
    summary = {"source": source, "table": target, **tally, "table_rows": spark.table(target).count()}
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
    frame = result.limit(args.max_rows + 1).toPandas()
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
        if table_name(ctx, spec) in missing else describe_table(spark, ctx, spec)
        for spec in ALL_TABLES
    ]
    if missing:
        note(not_created_yet(ctx, missing))
    # Object columns: an absent table's None stays None (null in JSON), not NaN beside integers.
    emit(render_frame(pd.DataFrame(records, dtype=object), args.format))
    return 0


def _stream_layers(spark, ctx: Context, args: argparse.Namespace, layers, source: str, rate, landing) -> dict:
    """Run the layers until ``--duration`` or Ctrl-C with progress on stderr; returns what the run did.

    Progress is one line per interval for people, or one JSON object per line with
    ``--format json`` (stderr either way: stdout holds only the result). At the end,
    the rows each layer left unread are counted and said.
    """
    import json

    from fraudlake.pipeline import (
        describe_profile,
        left_behind,
        start_pipeline,
    )
    from fraudlake.streaming import format_left_behind, progress_printer, run_queries

    as_json = args.format == "json"
    # Alerts are for people: on stdout beside a table, on stderr when stdout is JSON or CSV.
    alerts_out = sys.stdout if args.format == "table" else sys.stderr
    pipeline = start_pipeline(spark, ctx, layers, source, rate=rate, landing=landing, out=alerts_out)
    if as_json:
        note(json.dumps({
            "event": "start", "queries": list(pipeline.queries), "duration_seconds": args.duration,
            "profile": ctx.settings.profile,
            "trigger_seconds": dict(pipeline.intervals),
            "model": pipeline.model, "checkpoints": ctx.paths.checkpoints,
        }))
    else:
        until = f"for {args.duration:g}s" if args.duration else "until Ctrl-C"
        model = f"; scoring with {pipeline.model}" if pipeline.model else ""
        note(f"running {', '.join(layers)} {until}; {describe_profile(ctx.settings, layers)}"
             f"{model}; checkpoints under {ctx.paths.checkpoints}")
    queries = run_queries(
        pipeline.queries, args.duration, ctx.settings.ingest.progress_seconds, stats=pipeline.stats,
        stages=pipeline.stages, intervals=pipeline.intervals, spark=spark, report=progress_printer(args.format),
    )
    interrupted = any(tally["interrupted"] for tally in queries.values())
    limits = {name: tally["drain_limit_seconds"] for name, tally in queries.items() if tally["drain_limit_seconds"]}
    left = left_behind(spark, ctx, layers)
    if as_json:
        note(json.dumps({
            "event": "stopped", "elapsed_seconds": max((t["seconds"] for t in queries.values()), default=0.0),
            "interrupted": interrupted, "rows": {name: t["rows"] for name, t in queries.items()},
            "left_behind": left, "drain_limit_reached": limits,
        }))
    elif left:
        note(format_left_behind(left, limits, interrupted))
    return {"profile": ctx.settings.profile, "queries": queries, "left_behind": left, "drain_limit_reached": limits}


def cmd_run(args: argparse.Namespace) -> int:
    from fraudlake.pipeline import lakehouse_summary, parse_layers, preflight

    layers = parse_layers(args.layers)
    ctx = context_from(args)
    source = args.source or ctx.settings.ingest.source
    preflight(ctx, layers, source, args.rate)
    spark = writer_session(ctx, args)
    run = _stream_layers(spark, ctx, args, layers, source, args.rate, args.landing)
    emit(render_mapping({
        "profile": run["profile"], "queries": {name: t["rows"] for name, t in run["queries"].items()},
        "left_behind": run["left_behind"], "drain_limit_reached": run["drain_limit_reached"],
        **lakehouse_summary(spark, ctx),
    }, args.format))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from fraudlake.dashboards.report import write_lakehouse_report
    from fraudlake.ml.evaluate import evaluate_model
    from fraudlake.ml.registry import (
        default_model_uri,
        mlflow_client,
        reports_dir,
        resolve_model,
    )
    from fraudlake.ml.train import train_model
    from fraudlake.pipeline import LAYERS, lakehouse_summary

    ctx = context_from(args)
    spark = writer_session(ctx, args)
    try:
        resolve_model(mlflow_client(ctx), default_model_uri(ctx))
    except FraudlakeError:
        note(f"no champion model yet: training {args.model} on {ctx.settings.ml.samples:,} simulated rows...")
        train_model(spark, ctx, model=args.model)
    run = _stream_layers(spark, ctx, args, LAYERS, "rate", args.rate, None)
    evaluation = evaluate_model(ctx)
    summary = lakehouse_summary(spark, ctx)
    reports = reports_dir(ctx)
    reports.mkdir(parents=True, exist_ok=True)
    run_report = reports / f"run-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}.json"
    run_report.write_text(json.dumps({**run, **summary}, indent=2, default=str) + "\n")
    lakehouse_report, _ = write_lakehouse_report(spark, ctx)
    result = {
        "profile": run["profile"], "left_behind": run["left_behind"],
        "drain_limit_reached": run["drain_limit_reached"],
        **summary,
        "evaluation_report": evaluation["report"],
        "run_report": str(run_report),
        "lakehouse_report": str(lakehouse_report),
        "next": [
            "fraudlake tables",
            "fraudlake sql \"SELECT * FROM spark_catalog.gold.fraud_alerts ORDER BY alert_time DESC LIMIT 20\"",
            "fraudlake models",
            "fraudlake dashboard",
            "fraudlake sql \"DESCRIBE HISTORY spark_catalog.silver.scored_transactions\"",
        ],
    }
    emit(render_mapping(result, args.format))
    return 0


def main(argv: list[str] | None = None) -> int:
    code = _run(argv)
    from fraudlake.spark import on_databricks

    if code and on_databricks():
        # A Databricks wheel task calls this entry point and ignores what it returns:
        # only an exception or an exit fails the task.
        raise SystemExit(code)
    return code


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FraudlakeError as error:
        print(f"fraudlake: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("fraudlake: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
