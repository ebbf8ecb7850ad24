"""``fraudlake train``: labelled transactions → features → split → fit → threshold → MLflow registry."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fraudlake.errors import FraudlakeError
from fraudlake.ml import data
from fraudlake.ml.features import MODEL_INPUT_COLUMNS
from fraudlake.ml.metrics import flat_metrics, fraud_metrics
from fraudlake.ml.model import (
    SCORE_KIND,
    build_pipeline,
    choose_threshold,
    fit_pipeline,
    fraud_scores,
    model_signature,
    save_pipeline,
)
from fraudlake.ml.registry import (
    TAG_MODEL_KIND,
    TAG_THRESHOLD,
    ensure_experiment,
    mlflow_client,
    register_version,
    tracking_uri,
)
from fraudlake.output import note
from fraudlake.settings import Context
from fraudlake.timeutil import iso_utc

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SCORING_MODEL_CODE = Path(__file__).with_name("scoring_model.py")
# The holdout is logged with the run, so ``fraudlake evaluate`` can score it again without Spark.
HOLDOUT_ARTIFACT = "holdout/test.parquet"
# What a serving environment needs to load the model (the pyfunc is self-contained).
MODEL_PIP_REQUIREMENTS = ("scikit-learn", "skops", "pandas", "numpy")


@dataclass(frozen=True)
class TrainingData:
    frame: pd.DataFrame  # key columns + model input columns, one row per usable transaction
    source: str  # "simulator" or the input path
    dropped_rows: int  # rows without event_time, amount or label
    # How long after a transaction its label was known: a merchant's fraud share counts the
    # transactions from this long before (fraudlake.ml.behaviour); the stream uses the model's.
    label_maturity_seconds: int


def simulated_training_data(spark: SparkSession, ctx: Context, samples: int) -> TrainingData:
    """``samples`` simulated transactions → the shared features → pandas."""
    from fraudlake.simulator import generate_batch

    sim = ctx.settings.simulator
    note(f"generating {samples:,} simulated transactions (seed {sim.seed}, fraud rate {sim.fraud_rate:g})...")
    # Materialise the simulated rows first: the simulator's column expressions are large, and
    # the optimizer would otherwise inline them into every feature that reads them (~5x slower).
    transactions = generate_batch(spark, sim, samples).localCheckpoint(eager=True)
    frame = data.to_pandas(data.labelled_features(transactions))
    # The simulator's labels arrive as its live stream's do (simulator.label_delay_seconds).
    delay = sim.label_delay_seconds
    return TrainingData(data.with_behaviour(frame, delay), "simulator", 0, delay)


def file_training_data(
    spark: SparkSession,
    input_path: str,
    since: datetime | None,
    until: datetime | None,
    label_delay_seconds: int,
) -> TrainingData:
    """A labelled file in the bronze schema → checked and typed → the shared features → pandas:
    the rows whose ``event_time`` is in ``[since, until)`` when a bound is given (the features of a
    row are computed on the whole input, so earlier rows outside the range are its history).
    Labels are known at the input's ``label_time``, or ``label_delay_seconds`` after the purchase."""
    note(f"reading {input_path}...")
    transactions = data.conform_to_bronze(data.read_transactions(spark, input_path), input_path).cache()
    try:
        dropped = data.count_unusable(transactions)
        whole = data.to_pandas(data.labelled_features(transactions))
    finally:
        transactions.unpersist()
    if not whole.empty:
        note(f"behavioural features over {len(whole):,} rows...")
        whole = data.with_behaviour(whole, label_delay_seconds)
    frame = data.in_time_range(whole, since, until)
    if frame.empty and not whole.empty and (since or until):  # say what the input spans
        times = pd.to_datetime(whole["event_time"], utc=True)
        raise FraudlakeError(
            f"{input_path} has no usable rows {data.time_range_text(since, until)}: its event times run "
            f"from {iso_utc(times.min().to_pydatetime())} to {iso_utc(times.max().to_pydatetime())}"
        )
    if dropped:
        note(f"left out {dropped:,} row(s) without event_time, amount or {data.LABEL}")
    if frame.empty:
        raise FraudlakeError(f"{input_path} has no usable rows: every row lacks event_time, amount or {data.LABEL}")
    if since or until:
        note(f"{len(frame):,} rows {data.time_range_text(since, until)}")
    return TrainingData(frame, input_path, dropped, label_delay_seconds)


def lakehouse_training_data(
    spark: SparkSession, ctx: Context, since: datetime | None, until: datetime | None
) -> TrainingData:
    """``silver.scored_transactions`` and the fraud labels that arrived in ``bronze.labels`` → the
    shared features (recomputed over all of silver: earlier rows are history) → pandas.

    A row is fraud when a fraud label for it has arrived (known from that label's ``label_time``,
    or from its arrival when it came later: :func:`~fraudlake.ml.data.label_known_at`), genuine
    otherwise; the simulator's own truth in silver is not used. Labels take time to arrive, so
    without ``until`` the newest rows (younger than the labels' median delay before the newest
    label) are left out: their labels may still be on their way."""
    from pyspark.sql import functions as F

    from fraudlake.tables import BRONZE_LABELS, SILVER_SCORED, table_name

    silver, labels_table = table_name(ctx, SILVER_SCORED), table_name(ctx, BRONZE_LABELS)
    note(f"reading {silver} and the fraud labels in {labels_table}...")
    fraud = (
        spark.table(labels_table)
        .where(F.col("label_is_fraud") == 1)
        .groupBy("transaction_id")
        .agg(F.min(data.label_known_at()).alias(data.LABEL_TIME))
    )
    bronze_columns = [c for c in data.BRONZE_TYPES if c != data.LABEL]  # the label is the arrived one
    rows = (
        spark.table(silver)
        .select(*bronze_columns)
        .join(fraud, "transaction_id", "left")
        .withColumn(data.LABEL, F.col(data.LABEL_TIME).isNotNull().cast("int"))
    )
    whole = data.to_pandas(data.labelled_features(rows))
    if whole.empty:
        raise FraudlakeError(f"{silver} has no rows to train on: run the pipeline first (fraudlake run or demo)")
    known = whole[whole[data.LABEL] == 1]
    if known.empty:
        raise FraudlakeError(f"no fraud label has arrived in {labels_table} for the rows of {silver} yet")
    delays = pd.to_datetime(known[data.LABEL_TIME], utc=True) - pd.to_datetime(known["event_time"], utc=True)
    maturity = max(1, int(delays.median().total_seconds()))
    note(f"behavioural features over {len(whole):,} rows ({len(known):,} fraud labels, median delay {maturity:,}s)...")
    whole = data.with_behaviour(whole, maturity)
    if until is None:  # rows whose label may not have arrived yet are no genuine examples
        newest_label = pd.to_datetime(known[data.LABEL_TIME], utc=True).max()
        until = (newest_label - pd.Timedelta(seconds=maturity)).to_pydatetime()
        note(f"examples up to {iso_utc(until)}: later rows' labels may still be on their way")
    frame = data.in_time_range(whole, since, until)
    if frame.empty:
        raise FraudlakeError(f"{silver} has no rows {data.time_range_text(since, until)}")
    return TrainingData(frame, f"lakehouse:{silver}", 0, maturity)


def train_model(
    spark: SparkSession,
    ctx: Context,
    *,
    model: str | None = None,
    samples: int | None = None,
    input_path: str | None = None,
    from_lakehouse: bool = False,
    since: datetime | None = None,
    until: datetime | None = None,
    split: str | None = None,
    contamination: float | None = None,
) -> dict:
    """Train, evaluate on the holdout, log to MLflow and register a new version. Returns a summary."""
    ml = ctx.settings.ml
    kind = model or ml.model
    contamination = contamination if contamination is not None else ml.contamination
    split_method = split or ("time" if input_path or from_lakehouse else "random")
    started = time.perf_counter()

    if from_lakehouse:
        training = lakehouse_training_data(spark, ctx, since, until)
    elif input_path:
        training = file_training_data(spark, input_path, since, until, ml.label_delay_seconds)
    else:
        training = simulated_training_data(spark, ctx, samples or ml.samples)
    rows, fraud = data.class_counts(training.frame)
    note(f"features: {rows:,} rows, {fraud:,} fraud ({fraud / rows:.2%})")
    if fraud == 0 or fraud == rows:  # the threshold and the holdout metrics need both classes
        raise FraudlakeError(f"{training.source} needs both fraud and genuine rows; it has {fraud:,} fraud of {rows:,}")
    parts = data.split_frame(training.frame, split_method, ml.validation_share, ml.test_share, ml.seed)
    sizes = parts.sizes()
    note(
        f"split {split_method}: train {sizes['train']:,} / validation {sizes['validation']:,} / test {sizes['test']:,}"
    )

    pipeline = build_pipeline(
        kind,
        contamination=contamination,
        seed=ml.seed,
        trees=ml.isolation_forest_trees,
        iterations=ml.gradient_boosting_iterations,
        learning_rate=ml.gradient_boosting_learning_rate,
    )
    note(f"fitting {kind} on {sizes['train']:,} rows...")
    fit_started = time.perf_counter()
    fit_pipeline(pipeline, parts.train, parts.train[data.LABEL])
    fit_seconds = time.perf_counter() - fit_started

    score_kind = SCORE_KIND[kind]
    validation_scores = fraud_scores(pipeline, parts.validation, score_kind)
    threshold = choose_threshold(kind, validation_scores, parts.validation[data.LABEL].to_numpy(), contamination)
    how = f"flags the top {contamination:.0%}" if kind == "isolation_forest" else "best F1"
    note(f"fitted in {fit_seconds:.1f}s; flag threshold {threshold:.4f} ({how} on validation)")

    test_scores = fraud_scores(pipeline, parts.test, score_kind)
    test_metrics = fraud_metrics(
        parts.test[data.LABEL].to_numpy(),
        test_scores,
        threshold,
        ml.precision_at_k,
        parts.test[data.SCENARIO].to_numpy(),
    )
    validation_metrics = fraud_metrics(
        parts.validation[data.LABEL].to_numpy(), validation_scores, threshold, ml.precision_at_k
    )

    params = {
        "model": kind,
        "data_source": training.source,
        "rows": rows,
        "fraud_rows": fraud,
        "dropped_rows": training.dropped_rows,
        "split": split_method,
        "train_rows": sizes["train"],
        "validation_rows": sizes["validation"],
        "test_rows": sizes["test"],
        "seed": ml.seed,
        "flag_threshold": threshold,
        "score_kind": score_kind,
        "features": ",".join(MODEL_INPUT_COLUMNS),
        "label_maturity_seconds": training.label_maturity_seconds,
    }
    # The examples' event-time range, as asked (ISO 8601, UTC): what a later time split trains on.
    time_range = {key: iso_utc(value) for key, value in (("since", since), ("until", until)) if value}
    params.update(time_range)
    if training.source == "simulator":
        params.update(
            simulator_seed=ctx.settings.simulator.seed, simulator_fraud_rate=ctx.settings.simulator.fraud_rate
        )
    if kind == "isolation_forest":
        params.update(contamination=contamination, trees=ml.isolation_forest_trees)
    else:
        params.update(iterations=ml.gradient_boosting_iterations, learning_rate=ml.gradient_boosting_learning_rate)

    registered = log_and_register(
        ctx,
        pipeline=pipeline,
        kind=kind,
        threshold=threshold,
        params=params,
        metrics={
            **flat_metrics(test_metrics),
            **{f"validation_{k}": v for k, v in flat_metrics(validation_metrics).items()},
            "fit_seconds": fit_seconds,
        },
        input_example=parts.train[list(MODEL_INPUT_COLUMNS)].head(5),
        holdout=parts.test.assign(fraud_score=test_scores),
        label_maturity_seconds=training.label_maturity_seconds,
    )
    note(f"registered {registered['model_uri']} as {registered['alias']} ({time.perf_counter() - started:.1f}s in all)")
    return {
        **registered,
        "model": kind,
        "data_source": training.source,
        "split": split_method,
        **time_range,
        "rows": rows,
        "fraud_rows": fraud,
        "holdout": test_metrics,
    }


def log_and_register(
    ctx: Context,
    *,
    pipeline,
    kind: str,
    threshold: float,
    params: dict,
    metrics: dict,
    input_example: pd.DataFrame,
    holdout: pd.DataFrame,
    label_maturity_seconds: int,
) -> dict:
    """One MLflow run: params, metrics, the pyfunc (signature, input example, skops pipeline) and the holdout;
    then register the model."""
    note(f"logging to MLflow ({tracking_uri(ctx)})...")
    client = mlflow_client(ctx)
    import mlflow

    experiment_id = ensure_experiment(client, ctx)
    with tempfile.TemporaryDirectory(prefix="fraudlake-model-") as scratch:
        pipeline_path = Path(scratch) / "pipeline.skops"
        trusted = save_pipeline(pipeline, pipeline_path)
        holdout_path = Path(scratch) / "test.parquet"
        holdout.to_parquet(holdout_path, index=False)
        model_config = {
            "score_kind": SCORE_KIND[kind],
            "flag_threshold": threshold,
            "input_columns": list(MODEL_INPUT_COLUMNS),
            "skops_trusted_types": trusted,
        }
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{kind}") as run:
            mlflow.set_tags({"fraudlake.command": "train", TAG_MODEL_KIND: kind})
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
            model_info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(SCORING_MODEL_CODE),
                artifacts={"pipeline": str(pipeline_path)},
                model_config=model_config,
                signature=model_signature(),
                input_example=input_example,
                metadata={
                    "flag_threshold": threshold,
                    "model_kind": kind,
                    "score_kind": SCORE_KIND[kind],
                    "label_maturity_seconds": label_maturity_seconds,
                },
                pip_requirements=_pinned(MODEL_PIP_REQUIREMENTS),
            )
            mlflow.log_artifact(str(holdout_path), artifact_path=str(Path(HOLDOUT_ARTIFACT).parent))
    version, alias = register_version(
        client, ctx, model_info, run.info.run_id, tags={TAG_MODEL_KIND: kind, TAG_THRESHOLD: repr(threshold)}
    )
    name = ctx.settings.ml.model_name
    return {
        "model_name": name,
        "version": version,
        "alias": alias,
        "model_uri": f"models:/{name}/{version}",
        "run_id": run.info.run_id,
        "flag_threshold": threshold,
    }


def _pinned(packages) -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in packages]
