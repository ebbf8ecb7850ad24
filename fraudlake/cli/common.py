"""What every subcommand shares: argument types, common options, the context and Spark sessions."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING

from fraudlake.output import FORMATS
from fraudlake.settings import Context
from fraudlake.timeutil import parse_utc

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


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


positive_int = bounded(int)
positive_float = bounded(float)


def utc_timestamp(text: str) -> datetime:
    """ISO 8601, e.g. 2026-11-28T18:00:00Z or '2026-11-28 18:00'; without an offset, UTC (never the
    host's zone). Aware UTC, so Spark and the commit times compare it exactly."""
    try:
        return parse_utc(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO timestamp (e.g. 2026-11-28T18:00:00Z): {text!r}") from None


def source_options(parser: argparse.ArgumentParser) -> None:
    """Where bronze reads from: shared by ``ingest`` and ``run``."""
    parser.add_argument(
        "--source",
        choices=["rate", "files", "kafka"],
        help="rate: the simulator; files: the landing folder; kafka: the topic in ingest.kafka "
        "(default from conf: rate)",
    )
    parser.add_argument("--rate", type=positive_int, help="rows per second for --source rate (default from conf: 1)")
    parser.add_argument("--landing", help="landing folder for --source files (default HOME/landing)")
    parser.add_argument("--duration", type=positive_float, help="stop after this many seconds (default: until Ctrl-C)")


def common_options(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument(
        "--conf", default=default, help="conf YAML path or name (local, databricks); env FRAUDLAKE_CONF"
    )
    parser.add_argument(
        "--home", default=default, help="folder for everything written; env FRAUDLAKE_HOME (./.fraudlake)"
    )
    parser.add_argument("--master", default=default, help="Spark master for a local run, e.g. local[2]")


def _assignment(text: str) -> str:
    from fraudlake.settings import parse_assignment

    try:
        parse_assignment(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def set_option(parser: argparse.ArgumentParser, dest: str) -> None:
    # Two destinations: a subcommand's parser would otherwise replace the top-level list, not extend it.
    parser.add_argument(
        "--set",
        dest=dest,
        action="append",
        type=_assignment,
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one conf setting, validated like the YAML (repeatable), "
        "e.g. --set catalog.catalog=main --set ingest.rate=50",
    )


def format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")


def stream_options(parser: argparse.ArgumentParser) -> None:
    """What the streaming commands (``run``, ``demo``) share: the profile and the output format."""
    from typing import get_args

    from fraudlake.conf.settings import Profile

    parser.add_argument(
        "--profile",
        choices=get_args(Profile),
        help="stream presets: latency (short micro-batch intervals: rows in gold seconds after the card is used) "
        "or throughput (fewer, larger batches); a trigger or batch size set in conf or with --set still wins "
        "(default from conf: latency)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="output format (default: table); with json, progress on stderr is one JSON object per line too",
    )


def context_from(args: argparse.Namespace) -> Context:
    from fraudlake.settings import resolve_conf_path
    from fraudlake.spark import require_runtime

    assignments = [*getattr(args, "settings", []), *getattr(args, "settings_after", [])]
    if getattr(args, "profile", None):  # run, demo: the named option beats a --set profile=...
        assignments.append(f"profile={args.profile}")
    ctx = Context.load(conf=args.conf, home=args.home, assignments=assignments)
    require_runtime(ctx, f"conf {resolve_conf_path(args.conf).name}")
    return ctx


def simulator_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The simulator settings given as options (``--seed``, ``--fraud-rate``), for ``generate`` and ``train``."""
    given = {"seed": args.seed, "fraud_rate": args.fraud_rate}
    return {key: value for key, value in given.items() if value is not None}


def writer_session(ctx: Context, args: argparse.Namespace) -> SparkSession:
    """The Spark session of a command that writes tables (streams, ``rescore``, ``maintain``):
    every table created if missing and brought up to its spec (:func:`fraudlake.tables.ensure_tables`)."""
    from fraudlake.spark import get_spark
    from fraudlake.tables import ensure_tables

    spark = get_spark(ctx, master=args.master)
    ensure_tables(spark, ctx)
    return spark


def reader_session(ctx: Context, args: argparse.Namespace) -> tuple[SparkSession, tuple[str, ...]]:
    """The Spark session of a read-only command and the names of the tables that do not exist
    yet: existing tables are only made visible (:func:`fraudlake.tables.attach_tables`), none
    is created or altered, so reading never commits to a table that streams are writing."""
    from fraudlake.spark import get_spark
    from fraudlake.tables import attach_tables

    spark = get_spark(ctx, master=args.master)
    return spark, attach_tables(spark, ctx)


def not_created_yet(ctx: Context, missing) -> str:
    """A hint naming the tables a home does not have yet and what creates them."""
    return (
        f"not created yet under {ctx.paths.home}: {', '.join(missing)} "
        "(fraudlake run, ingest or demo creates the tables)"
    )
