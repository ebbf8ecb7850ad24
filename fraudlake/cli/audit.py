"""The audit and upkeep subcommands: ``audit transaction|history|changes|rescore``,
``rescore``, ``maintain``, ``restore``, ``reset-checkpoint`` and ``check``. ``fraudlake.cli`` adds them with :func:`add_audit_commands`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fraudlake.cli.common import bounded, utc_timestamp
from fraudlake.output import emit, note, render_frame, render_mapping, render_records

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fraudlake.settings import Context


def _version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a table version: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"table versions start at 0: {value}")
    return value


def _ids(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("give at least one transaction id")
    return ids


def _as_of_options(parser: argparse.ArgumentParser) -> None:
    when = parser.add_mutually_exclusive_group()
    when.add_argument(
        "--as-of-version",
        type=_version,
        metavar="N",
        help="silver as it was at this Delta version (default: the latest)",
    )
    when.add_argument(
        "--as-of-timestamp",
        type=utc_timestamp,
        metavar="TS",
        help="silver as it was at this time (ISO 8601; UTC unless an offset is given)",
    )


def add_audit_commands(commands, common: argparse.ArgumentParser) -> None:
    """Add ``audit``, ``rescore``, ``maintain``, ``restore``, ``reset-checkpoint`` and ``check`` to the ``fraudlake`` command."""
    from fraudlake.cli.common import format_option, positive_int

    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="how a transaction was scored; table history and changes",
        description="Answer audit questions from Delta's history: a transaction's score, model and raw record "
        "at any retained version, a table's history, and the rows changed between two versions.",
    )
    what = audit.add_subparsers(dest="audit_command", metavar="WHAT", required=True)

    tx = what.add_parser(
        "transaction",
        parents=[common],
        help="a transaction's score, model version, raw record and alerts",
        description="Show the silver row of a transaction as it was at a version (score, flag, threshold, "
        "model name and version, scored_at), the silver version that wrote it, its bronze record and the "
        "alerts that point at it. Exit code 4 when the id is not found.",
    )
    tx.add_argument("transaction_id", help="the transaction id, e.g. tx-123")
    _as_of_options(tx)
    format_option(tx)
    tx.set_defaults(handler=cmd_audit_transaction)

    history = what.add_parser(
        "history",
        parents=[common],
        help="a table's Delta history, readable",
        description="DESCRIBE HISTORY as a table: version, time, operation, rows and files written, and the "
        "streaming query and batch (or idempotent writer and batch) that wrote each version.",
    )
    history.add_argument("table", help="e.g. silver.scored_transactions, gold.fraud_alerts")
    history.add_argument("--limit", type=positive_int, help="the newest N versions only")
    format_option(history)
    history.set_defaults(handler=cmd_audit_history)

    changes = what.add_parser(
        "changes",
        parents=[common],
        help="rows inserted, updated and deleted between two versions",
        description="The change data feed between two versions, inclusive: one row per inserted or deleted "
        "row, and a pre- and post-image per updated row (silver tables).",
    )
    changes.add_argument("table", help="e.g. silver.scored_transactions")
    changes.add_argument("--from-version", type=_version, required=True, metavar="A", help="first version")
    changes.add_argument("--to-version", type=_version, metavar="B", help="last version (default: the latest)")
    changes.add_argument("--columns", type=_ids, help="comma-separated columns to show (default: all)")
    changes.add_argument("--max-rows", type=positive_int, default=1000, help="rows to print at most (default 1000)")
    format_option(changes)
    changes.set_defaults(handler=cmd_audit_changes)

    rescore = what.add_parser(
        "rescore",
        parents=[common],
        help="score a transaction again with its recorded model version",
        description="Re-score the transaction's recorded features with the model version recorded beside them "
        "(from the registry) and show the stored and recomputed scores side by side.",
    )
    rescore.add_argument("transaction_id", help="the transaction id")
    _as_of_options(rescore)
    format_option(rescore)
    rescore.set_defaults(handler=cmd_audit_rescore)

    slice_ = commands.add_parser(
        "rescore",
        parents=[common],
        help="re-score silver rows with the champion (after a promotion)",
        description="Score silver transactions of an event-time range and/or ids with the champion (or "
        "--model-uri) and update them in place with one MERGE; rows already scored by that version are "
        "skipped, newly flagged ones get a model alert. Delta keeps the old scores for audits.",
    )
    slice_.add_argument("--since", type=utc_timestamp, metavar="TS", help="event time from (ISO 8601, inclusive)")
    slice_.add_argument("--until", type=utc_timestamp, metavar="TS", help="event time until (exclusive)")
    slice_.add_argument("--ids", type=_ids, help="comma-separated transaction ids")
    slice_.add_argument("--model-uri", help="model to score with (default models:/<model_name>@champion)")
    format_option(slice_)
    slice_.set_defaults(handler=cmd_rescore)

    maintain = commands.add_parser(
        "maintain",
        parents=[common],
        help="compact small files and vacuum within the audit window",
        description="OPTIMIZE every table (compacts the small files streaming writes leave) and VACUUM files "
        "no version inside the audit window needs. Without flags, both. --retain-hours below the window "
        "(audit.deleted_file_retention_days) is refused.",
    )
    maintain.add_argument("--optimize", action="store_true", help="compact small files")
    maintain.add_argument("--vacuum", action="store_true", help="delete files older versions no longer need")
    maintain.add_argument(
        "--retain-hours",
        type=bounded(float),
        help="vacuum: keep files this many hours (default and minimum: the audit window)",
    )
    format_option(maintain)
    maintain.set_defaults(handler=cmd_maintain)

    restore = commands.add_parser(
        "restore",
        parents=[common],
        help="put a table back as it was at a version (Delta RESTORE)",
        description="RESTORE TABLE … TO VERSION AS OF: one new commit that puts the table back as it was at "
        "--version N or at --timestamp TS (the last version committed then); the damage stays in the "
        "history. Stop the streams that write the table first; `fraudlake audit history TABLE` lists "
        "the versions.",
    )
    restore.add_argument("table", help="e.g. gold.dashboard_minute, silver.scored_transactions")
    when = restore.add_mutually_exclusive_group(required=True)
    when.add_argument("--version", type=_version, metavar="N", help="the version to put back")
    when.add_argument(
        "--timestamp", type=utc_timestamp, metavar="TS", help="the table as it was at this time (ISO 8601, UTC)"
    )
    format_option(restore)
    restore.set_defaults(handler=cmd_restore)

    reset = commands.add_parser(
        "reset-checkpoint",
        parents=[common],
        help="set a damaged streaming checkpoint aside so its query starts over",
        description="Move checkpoints/QUERY to checkpoints/_set_aside/ (kept for a post-mortem) so the query "
        "starts over, which fraudlake's layers make exact: an ingest source starts again and silver quarantines "
        "the repeats; silver reads bronze again and leaves routed rows alone; gold's tables are emptied and "
        "the next run recomputes them from silver. Stop the pipeline first. A run names the checkpoint when it "
        "finds one damaged.",
    )
    reset.add_argument(
        "query",
        help="the checkpoint, as a run's error names it: bronze_rate, bronze_files, bronze_kafka, labels_kafka, labels_files, silver or gold_live",
    )
    format_option(reset)
    reset.set_defaults(handler=cmd_reset_checkpoint)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="verify the lakehouse's invariants, one line per check",
        description="Verify from the tables: bronze = silver + quarantine per source, no transaction scored "
        "twice, lineage on every silver row with its model version in the registry, gold's minutes and user "
        "minutes equal to a recomputation from silver (the newest 24 hours of event time; --full for all), "
        "alerts and labels unique, silver and gold within the audit retention. Commits nothing. Exit code 0 "
        "when every check holds, 1 when one does not, 4 when the tables do not exist yet.",
    )
    check.add_argument("--full", action="store_true", help="compare gold with silver over all event time")
    format_option(check)
    check.set_defaults(handler=cmd_check)


def _writer(args: argparse.Namespace) -> tuple[Context, SparkSession]:
    """Context and session for ``rescore`` and ``maintain``, which write (and so may upgrade) tables."""
    from fraudlake.cli.common import context_from, writer_session

    ctx = context_from(args)
    return ctx, writer_session(ctx, args)


def _reader(args: argparse.Namespace, specs) -> tuple[Context, SparkSession]:
    """Context and session for an audit, which reads ``specs`` and changes no table: a table the
    home does not have yet is a not-found error (exit 4) naming it, not a Spark trace."""
    from fraudlake.cli.common import context_from, not_created_yet, reader_session
    from fraudlake.errors import NotFoundError
    from fraudlake.tables import table_name

    ctx = context_from(args)
    spark, missing = reader_session(ctx, args)
    absent = [name for name in (table_name(ctx, spec) for spec in specs) if name in missing]
    if absent:
        raise NotFoundError(not_created_yet(ctx, absent))
    return ctx, spark


def _transaction_tables():
    """What a transaction audit reads: its silver row or quarantine entry, bronze record and alerts."""
    from fraudlake.tables import BRONZE_TRANSACTIONS, GOLD_FRAUD_ALERTS, SILVER_QUARANTINE, SILVER_SCORED

    return (SILVER_SCORED, SILVER_QUARANTINE, BRONZE_TRANSACTIONS, GOLD_FRAUD_ALERTS)


def _readable_transaction(result: dict) -> dict:
    """The audit as ``key value`` lines: the bronze record and alerts flattened."""
    flat = {k: v for k, v in result.items() if k not in ("bronze", "alerts")}
    bronze = result["bronze"] or {}
    flat["bronze_record"] = bronze.get("record", "(not in bronze)")
    flat["bronze_source"] = bronze.get("source")
    flat["bronze_ingested_at"] = bronze.get("ingested_at")
    flat["alerts"] = [f"{a['alert_type']} at {a['alert_time']}: {a['reason']}" for a in result["alerts"]] or "(none)"
    return flat


def cmd_audit_transaction(args: argparse.Namespace) -> int:
    from fraudlake.audit import audit_transaction

    ctx, spark = _reader(args, _transaction_tables())
    result = audit_transaction(spark, ctx, args.transaction_id, args.as_of_version, args.as_of_timestamp)
    emit(render_mapping(_readable_transaction(result) if args.format != "json" else result, args.format))
    return 0


def cmd_audit_history(args: argparse.Namespace) -> int:
    from fraudlake.audit import resolve_table, table_history
    from fraudlake.cli.common import context_from

    spec = resolve_table(context_from(args), args.table)  # an unknown name fails before Spark starts
    ctx, spark = _reader(args, [spec])
    emit(render_records(table_history(spark, ctx, spec, args.limit), args.format))
    return 0


def cmd_audit_changes(args: argparse.Namespace) -> int:
    from fraudlake.audit import resolve_table, table_changes
    from fraudlake.cli.common import context_from

    spec = resolve_table(context_from(args), args.table)
    ctx, spark = _reader(args, [spec])
    frame = table_changes(spark, ctx, spec, args.from_version, args.to_version, args.columns)
    if len(frame) > args.max_rows:
        note(f"(showing the first {args.max_rows:,} of {len(frame):,} changed rows; raise --max-rows for more)")
        frame = frame.head(args.max_rows)
    emit(render_frame(frame, args.format))
    return 0


def cmd_audit_rescore(args: argparse.Namespace) -> int:
    from fraudlake.audit import rescore_transaction

    ctx, spark = _reader(args, _transaction_tables())
    result = rescore_transaction(spark, ctx, args.transaction_id, args.as_of_version, args.as_of_timestamp)
    if not result["match"]:
        note("the recomputed score differs from the stored one: the model or the row changed since it was scored")
    emit(render_mapping(result, args.format))
    return 0


def cmd_rescore(args: argparse.Namespace) -> int:
    from fraudlake.errors import FraudlakeError
    from fraudlake.orchestration.rescore import rescore_silver

    if args.since is None and args.until is None and not args.ids:
        raise FraudlakeError("choose the transactions to re-score: --since/--until (event time) and/or --ids")
    ctx, spark = _writer(args)
    emit(render_mapping(rescore_silver(spark, ctx, args.since, args.until, args.ids, args.model_uri), args.format))
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from fraudlake.audit import check_retention, maintain
    from fraudlake.cli.common import context_from

    both = not args.optimize and not args.vacuum
    optimize, vacuum = args.optimize or both, args.vacuum or both
    if args.retain_hours is not None and not vacuum:
        from fraudlake.errors import FraudlakeError

        raise FraudlakeError("--retain-hours applies to --vacuum")
    check_retention(context_from(args), args.retain_hours if vacuum else None)  # refuse before Spark starts
    ctx, spark = _writer(args)
    emit(render_records(maintain(spark, ctx, optimize, vacuum, args.retain_hours), args.format))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from fraudlake.audit import resolve_table, restore_table
    from fraudlake.cli.common import context_from

    spec = resolve_table(context_from(args), args.table)  # an unknown name fails before Spark starts
    ctx, spark = _writer(args)
    emit(render_mapping(restore_table(spark, ctx, spec, args.version, args.timestamp), args.format))
    return 0


def cmd_reset_checkpoint(args: argparse.Namespace) -> int:
    from fraudlake.orchestration.checkpoints import GOLD_QUERY, reset_checkpoint

    if args.query == GOLD_QUERY:
        ctx, spark = _writer(args)
    else:  # nothing to write but the folder's move: no Spark
        from fraudlake.cli.common import context_from

        ctx, spark = context_from(args), None
    emit(render_mapping(reset_checkpoint(spark, ctx, args.query), args.format))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from fraudlake.orchestration.check import check_lakehouse
    from fraudlake.tables import ALL_TABLES

    ctx, spark = _reader(args, ALL_TABLES)
    results = check_lakehouse(spark, ctx, full=args.full)
    failed = [r.check for r in results if not r.ok]
    if args.format == "json":
        import json

        emit(json.dumps({"ok": not failed, "checks": [r.as_record() for r in results]}, default=str))
    elif args.format == "csv":
        emit(render_records(({k: r.as_record()[k] for k in ("check", "status", "details")} for r in results), "csv"))
    else:  # one line per check: status, name, the numbers
        width = max(len(r.check) for r in results)
        emit("\n".join(f"{'ok' if r.ok else 'FAIL':<4}  {r.check:<{width}}  {r.details}" for r in results))
    if failed:
        note(f"fraudlake: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
        return 1
    return 0
