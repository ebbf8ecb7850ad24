"""The ``dashboard`` and ``report`` subcommands; ``fraudlake.cli`` adds them with :func:`add_dashboard_commands`."""

from __future__ import annotations

import argparse
import importlib.util
from typing import TYPE_CHECKING

from fraudlake.errors import EnvironmentProblem, FraudlakeError
from fraudlake.output import emit, note, render_mapping

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535 (0: any free port): {port}")
    return port


def add_dashboard_commands(commands, common: argparse.ArgumentParser) -> None:
    from fraudlake.cli.common import format_option, positive_float, positive_int

    dashboard = commands.add_parser(
        "dashboard",
        parents=[common],
        help="serve the live dashboard over the gold tables",
        description="Serve a web page that re-reads the lakehouse every few seconds while the pipeline writes it: "
        "volumes, flagged share, live precision and recall, flagged amounts, the busiest users, the score "
        "distribution and the latest alerts, with the model version in use and the age of the newest data. "
        "Ctrl-C stops it.",
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only)"
    )
    dashboard.add_argument("--port", type=_port, default=8050, help="port (default 8050; 0: any free port)")
    dashboard.add_argument("--refresh", type=positive_float, default=5.0, help="seconds between refreshes (default 5)")
    dashboard.add_argument(
        "--window",
        type=positive_int,
        default=60,
        help="minutes of data the charts show, up to the newest row (default 60)",
    )
    dashboard.set_defaults(handler=cmd_dashboard)

    report = commands.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of the lakehouse",
        description="Write one HTML page (plotly.js inline: it opens offline) under HOME/reports with volumes over "
        "time, flagged share, live precision and recall, top alerts and the model versions seen; print its path.",
    )
    report.add_argument("--output", help="file to write (default HOME/reports/lakehouse-<UTC time>.html)")
    format_option(report)
    report.set_defaults(handler=cmd_report)


def require_dash() -> None:
    """The live dashboard is an extra (streaming clusters need no web framework): a clear
    error naming it when Dash is not installed."""
    if importlib.util.find_spec("dash") is None:
        raise EnvironmentProblem(
            "the live dashboard needs Dash, which is not installed: pip install 'fraudlake[dashboard]' "
            "(the local extra includes it); fraudlake report writes the same charts as HTML without it"
        )


def cmd_dashboard(args: argparse.Namespace) -> int:
    from fraudlake.cli.common import context_from
    from fraudlake.dashboards.app import SnapshotReader, create_app, make_server
    from fraudlake.dashboards.queries import read_snapshot
    from fraudlake.spark import get_spark

    require_dash()
    ctx = context_from(args)
    state: dict[str, SparkSession] = {}

    def read():
        return read_snapshot(state["spark"], ctx, window_minutes=args.window)

    reader = SnapshotReader(read, min_age=args.refresh * 0.8)
    app = create_app(
        reader,
        refresh_seconds=args.refresh,
        home=str(ctx.paths.home),
        on_error=lambda error: note(f"dashboard: read failed: {str(error).splitlines()[0][:300]}"),
    )
    try:
        server = make_server(app, args.host, args.port)  # bind before the JVM starts: a busy port fails fast
    except OSError as error:
        raise FraudlakeError(
            f"cannot listen on {args.host}:{args.port}: {error.strerror or error} (choose another --port)"
        ) from None
    try:
        state["spark"] = get_spark(ctx, master=args.master)
        host = f"[{args.host}]" if ":" in args.host else args.host
        note(
            f"dashboard: http://{host}:{server.server_port}/ (home {ctx.paths.home}, refreshing every "
            f"{args.refresh:g} s; Ctrl-C stops)"
        )
        server.serve_forever()  # werkzeug's returns on Ctrl-C
    except KeyboardInterrupt:  # Ctrl-C while Spark was starting
        pass
    finally:
        server.server_close()
    note("dashboard stopped")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fraudlake.cli.common import context_from
    from fraudlake.dashboards.report import write_lakehouse_report
    from fraudlake.spark import get_spark

    ctx = context_from(args)
    spark = get_spark(ctx, master=args.master)
    path, summary = write_lakehouse_report(spark, ctx, Path(args.output) if args.output else None)
    note(f"report: {path}")
    emit(render_mapping({"report": str(path), **summary}, args.format))
    return 0
