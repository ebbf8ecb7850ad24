"""``fraudlake evaluate``: score labelled rows with a registered model, report metrics and an HTML report.

The default rows are the model's own holdout (logged with its training run), so an
evaluation needs no Spark; ``--input`` featurises a labelled file with the same
Spark feature code as training and serving.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraudlake.errors import FraudlakeError
from fraudlake.ml import data
from fraudlake.ml.features import MODEL_INPUT_COLUMNS
from fraudlake.ml.metrics import flat_metrics, fraud_metrics, permutation_importance_ap
from fraudlake.ml.registry import (
    ModelRef,
    default_model_uri,
    ensure_experiment,
    mlflow_client,
    reports_dir,
    resolve_model,
)
from fraudlake.ml.report import write_report
from fraudlake.ml.train import HOLDOUT_ARTIFACT, file_training_data
from fraudlake.output import note
from fraudlake.settings import Context

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def holdout_frame(client, ref: ModelRef) -> pd.DataFrame:
    """The test rows logged with the model's training run."""
    if ref.run_id is None:
        raise FraudlakeError(
            f"{ref.uri} is not a registered version with a training run: pass --input with labelled rows"
        )
    with tempfile.TemporaryDirectory(prefix="fraudlake-holdout-") as scratch:
        try:
            local = client.download_artifacts(ref.run_id, HOLDOUT_ARTIFACT, scratch)
        except Exception:  # MlflowException or OSError: the run has no holdout
            raise FraudlakeError(f"{ref.uri} has no logged holdout: pass --input with labelled rows") from None
        return pd.read_parquet(local)


def file_frame(
    spark: SparkSession, path: str, since: datetime | None, until: datetime | None, label_delay_seconds: int
) -> pd.DataFrame:
    """A labelled file → the shared features, exactly as training reads it (the rows of
    ``[since, until)`` when a bound is given)."""
    return file_training_data(spark, path, since, until, label_delay_seconds).frame


def load_scoring_model(uri: str):
    """The pyfunc and its flag threshold."""
    import mlflow

    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as error:  # a bad path, a foreign model: one line, not MLflow's traceback
        raise FraudlakeError(
            f"cannot load model {uri}: {str(error).splitlines()[0] if str(error) else error!r}"
        ) from None
    threshold = (model.metadata.metadata or {}).get("flag_threshold")
    if threshold is None:
        raise FraudlakeError(f"{uri} has no flag_threshold in its metadata: not a fraudlake model")
    return model, float(threshold)


def evaluate_model(
    ctx: Context,
    *,
    model_uri: str | None = None,
    frame: pd.DataFrame | None = None,
    dataset: str | None = None,
    ks=None,
) -> dict:
    """Score ``frame`` (default: the model's holdout) and return every metric, the report path and the MLflow run.

    The metrics, the report and a metrics.json are logged to a new ``evaluate`` run in the experiment.
    """
    client = mlflow_client(ctx)
    import mlflow

    ref = resolve_model(client, model_uri or default_model_uri(ctx))
    if frame is None:
        frame, dataset = holdout_frame(client, ref), "holdout"
        note(f"evaluating {ref.uri} on its holdout ({len(frame):,} rows)...")
    else:
        note(f"evaluating {ref.uri} on {dataset} ({len(frame):,} rows)...")
    ks = tuple(ks or ctx.settings.ml.precision_at_k)
    model, threshold = load_scoring_model(ref.uri)
    scores = np.asarray(model.predict(frame[list(MODEL_INPUT_COLUMNS)]), dtype="float64")
    labels = frame[data.LABEL].to_numpy().astype(int)
    metrics = fraud_metrics(labels, scores, threshold, ks, frame[data.SCENARIO].to_numpy())
    note("permutation importance of the model's inputs (average precision lost when one is shuffled)...")
    metrics["permutation_importance"] = permutation_importance_ap(model.predict, frame, labels, MODEL_INPUT_COLUMNS)

    experiment_id = ensure_experiment(client, ctx)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"evaluate-v{ref.version or 'model'}") as run:
        mlflow.set_tags(
            {
                "fraudlake.command": "evaluate",
                "fraudlake.model_uri": ref.uri,
                "fraudlake.model_version": ref.version or "",
                "fraudlake.training_run_id": ref.run_id or "",
                "fraudlake.dataset": dataset or "",
            }
        )
        mlflow.log_metrics(flat_metrics(metrics))
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        label = f"v{ref.version}" if ref.version else "model"
        report = reports_dir(ctx) / f"evaluation-{ref.name or 'model'}-{label}-{stamp}-{run.info.run_id[:8]}.html"
        facts = {"model": ref.uri, "dataset": dataset, "training run": ref.run_id, "evaluation run": run.info.run_id}
        write_report(
            report, title=f"Evaluation of {ref.uri}", facts=facts, metrics=metrics, labels=labels, scores=scores, ks=ks
        )
        mlflow.log_artifact(str(report), artifact_path="evaluation")
        mlflow.log_dict(metrics, "evaluation/metrics.json")
    note(f"report: {report}")
    return {
        "model_uri": ref.uri,
        "version": ref.version,
        "dataset": dataset,
        **metrics,
        "report": str(report),
        "run_id": run.info.run_id,
    }
