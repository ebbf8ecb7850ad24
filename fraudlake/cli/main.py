"""The ``fraudlake`` command: one entry point for local runs and Databricks job tasks."""

from __future__ import annotations

import argparse
import sys

from fraudlake import __version__
from fraudlake.cli.audit import add_audit_commands
from fraudlake.cli.common import common_options, set_option
from fraudlake.cli.dashboards import add_dashboard_commands
from fraudlake.cli.ml import add_ml_commands
from fraudlake.cli.pipeline import add_pipeline_commands
from fraudlake.cli.services import add_service_commands
from fraudlake.errors import FraudlakeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudlake",
        description="A Delta Lake lakehouse that detects card fraud in real time.",
    )
    parser.add_argument("--version", action="version", version=f"fraudlake {__version__}")
    common_options(parser, None)
    set_option(parser, "settings")
    # Options also accepted after the subcommand; SUPPRESS keeps a top-level value.
    common = argparse.ArgumentParser(add_help=False)
    common_options(common, argparse.SUPPRESS)
    set_option(common, "settings_after")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_pipeline_commands(commands, common)  # generate, ingest, sql, tables, run, demo
    add_ml_commands(commands, common)  # train, evaluate, promote, models
    add_audit_commands(commands, common)  # audit, rescore, maintain
    add_dashboard_commands(commands, common)  # dashboard, report
    add_service_commands(commands, common)  # kafka, produce, cluster
    return parser


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
