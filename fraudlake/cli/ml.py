"""The model lifecycle subcommands: ``train``, ``evaluate``, ``promote``, ``models``.

``fraudlake.cli`` adds them with :func:`add_ml_commands`. Only ``train`` (and
``evaluate --input``) start Spark; the registry commands talk to MLflow alone.
"""

from __future__ import annotations

import argparse

from fraudlake.cli.common import bounded, utc_timestamp
from fraudlake.errors import FraudlakeError
from fraudlake.output import emit, note, render_mapping, render_records
from fraudlake.timeutil import iso_utc


def _k_list(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not ks or min(ks) <= 0:
        raise argparse.ArgumentTypeError(f"k must be positive integers, e.g. 50,100: {text!r}")
    return ks


_share = bounded(float, 0, 0.5)


def add_ml_commands(commands, common: argparse.ArgumentParser) -> None:
    """Add the model lifecycle subparsers to the ``fraudlake`` command."""
    from fraudlake.cli.common import format_option, positive_int
    from fraudlake.ml.data import SPLITS
    from fraudlake.ml.model import MODEL_KINDS

    train = commands.add_parser(
        "train",
        parents=[common],
        help="train a fraud model and register it in MLflow",
        description="Train on simulated transactions (or a labelled file), evaluate on a holdout, log the run "
        "and register a new version of the model: champion if there is none, else challenger.",
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument(
        "--samples", type=positive_int, help="simulated transactions to train on (default from conf: 30000)"
    )
    source.add_argument("--input", help="labelled transactions in the bronze schema: Delta, Parquet, CSV or JSON lines")
    source.add_argument(
        "--from-lakehouse",
        action="store_true",
        help="train on silver.scored_transactions with the fraud labels that arrived in bronze.labels "
        "(a retrain: registers a challenger next to the champion)",
    )
    time_range_options(train, "train on")
    train.add_argument(
        "--model",
        choices=MODEL_KINDS,
        help="isolation_forest (unsupervised) or gradient_boosting (supervised challenger); default from conf",
    )
    train.add_argument(
        "--contamination", type=_share, help="isolation_forest: expected fraud share (default from conf: 0.15)"
    )
    train.add_argument(
        "--split",
        choices=SPLITS,
        help="holdout: random (default for the simulator) or time (the newest rows; default for --input)",
    )
    train.add_argument("--seed", type=int, help="simulator seed (default from conf)")
    train.add_argument(
        "--fraud-rate", type=float, help="simulator: share of fraudulent transactions (default from conf)"
    )
    format_option(train)
    train.set_defaults(handler=cmd_train)

    evaluate = commands.add_parser(
        "evaluate",
        parents=[common],
        help="metrics and an HTML report for a registered model",
        description="Score the model's holdout (or a labelled file) and print accuracy, precision, recall, F1, "
        "ROC AUC, average precision, precision@k, the confusion matrix and recall per fraud scenario; "
        "write an HTML report under HOME/reports and log it to MLflow.",
    )
    evaluate.add_argument("--model-uri", help="model to evaluate (default models:/<model_name>@champion)")
    evaluate.add_argument("--input", help="labelled transactions to evaluate on (default: the model's holdout)")
    time_range_options(evaluate, "evaluate on")
    evaluate.add_argument(
        "--k", type=_k_list, help="precision@k cut-offs, comma-separated (default from conf: 50,100,200)"
    )
    format_option(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)

    promote = commands.add_parser(
        "promote",
        parents=[common],
        help="make a model version the champion",
        description="Move the champion alias to a version; the old champion keeps its version and gets "
        "the previous_champion alias.",
    )
    promote.add_argument("--version", type=positive_int, required=True, help="model version to promote")
    format_option(promote)
    promote.set_defaults(handler=cmd_promote)

    models = commands.add_parser(
        "models",
        parents=[common],
        help="list model versions, aliases and key metrics",
        description="List the registered versions of the model with their aliases, flag threshold and holdout metrics.",
    )
    format_option(models)
    models.set_defaults(handler=cmd_models)


def time_range_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """``--since``/``--until``: the event-time range of --input's rows to use (the rest is history)."""
    parser.add_argument(
        "--since",
        type=utc_timestamp,
        metavar="TS",
        help=f"{verb} the rows from this event time (ISO 8601, UTC without an offset; inclusive); "
        "earlier rows are their history",
    )
    parser.add_argument("--until", type=utc_timestamp, metavar="TS", help="up to this event time (exclusive)")


def _time_range(args: argparse.Namespace) -> tuple:
    if (args.since or args.until) and not (args.input or getattr(args, "from_lakehouse", False)):
        raise FraudlakeError("--since and --until select rows of --input (or --from-lakehouse): give it too")
    if args.since and args.until and args.since >= args.until:
        raise FraudlakeError(f"--since must be before --until: {iso_utc(args.since)} is not")
    return args.since, args.until


def cmd_train(args: argparse.Namespace) -> int:
    from fraudlake.cli.common import context_from, simulator_overrides
    from fraudlake.ml.train import train_model
    from fraudlake.spark import get_spark

    ctx = context_from(args)
    overrides = simulator_overrides(args)
    if overrides:
        if args.input or args.from_lakehouse:
            source = "--input" if args.input else "--from-lakehouse"
            raise FraudlakeError(f"--seed and --fraud-rate configure the simulator: they do not apply to {source}")
        ctx = ctx.with_settings(simulator=overrides)
    since, until = _time_range(args)
    model = args.model or ctx.settings.ml.model
    if args.contamination is not None and model != "isolation_forest":
        raise FraudlakeError("--contamination applies to --model isolation_forest only")
    spark = get_spark(ctx, master=args.master)
    if args.from_lakehouse:
        from fraudlake.errors import NotFoundError
        from fraudlake.tables import BRONZE_LABELS, BRONZE_TRANSACTIONS, SILVER_SCORED, attach_tables, table_name

        needed = {table_name(ctx, spec) for spec in (BRONZE_TRANSACTIONS, BRONZE_LABELS, SILVER_SCORED)}
        missing = sorted(needed & set(attach_tables(spark, ctx)))
        if missing:
            raise NotFoundError(f"{', '.join(missing)} not found under {ctx.paths.home}: run the pipeline first")
    result = train_model(
        spark,
        ctx,
        model=model,
        samples=args.samples,
        input_path=args.input,
        from_lakehouse=args.from_lakehouse,
        since=since,
        until=until,
        split=args.split,
        contamination=args.contamination,
    )
    holdout = result.pop("holdout")
    summary = {
        **result,
        "holdout_rows": holdout.pop("rows"),
        "holdout_fraud_rows": holdout.pop("fraud_rows"),
        **holdout,
    }
    emit(render_mapping(summary, args.format))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fraudlake.cli.common import context_from
    from fraudlake.ml.evaluate import evaluate_model, file_frame
    from fraudlake.ml.registry import default_model_uri, mlflow_client, resolve_model

    ctx = context_from(args)
    since, until = _time_range(args)
    model_uri = args.model_uri or default_model_uri(ctx)
    frame = None
    if args.input:
        resolve_model(mlflow_client(ctx), model_uri)  # a missing model fails before Spark starts
        from fraudlake.spark import get_spark

        frame = file_frame(
            get_spark(ctx, master=args.master), args.input, since, until, ctx.settings.ml.label_delay_seconds
        )
    dataset = args.input
    if args.input and (since or until):
        from fraudlake.ml.data import time_range_text

        dataset = f"{args.input} {time_range_text(since, until)}"
    result = evaluate_model(ctx, model_uri=model_uri, frame=frame, dataset=dataset, ks=args.k)
    emit(render_mapping(result, args.format))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from fraudlake.cli.common import context_from
    from fraudlake.ml.registry import mlflow_client, promote

    ctx = context_from(args)
    result = promote(mlflow_client(ctx), ctx, args.version)
    if not result["changed"]:
        note(f"version {args.version} is already the champion")
    emit(render_mapping(result, args.format))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from fraudlake.cli.common import context_from
    from fraudlake.ml.registry import list_versions, mlflow_client

    ctx = context_from(args)
    rows = list_versions(mlflow_client(ctx), ctx)
    if not rows:
        note(f"no versions of {ctx.settings.ml.model_name} yet: train one with fraudlake train")
    emit(render_records(rows, args.format))
    return 0
