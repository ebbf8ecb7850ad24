"""Scoring transactions in Spark with a registered model: the silver stream's model step.

``score_transactions`` adds the same features as training (:func:`add_features`),
the pyfunc's score through ``mlflow.pyfunc.spark_udf``, the flag, and lineage.
It is a pure ``DataFrame -> DataFrame`` function: batch and streaming alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from fraudlake.errors import FraudlakeError, first_line
from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES, DEFAULT_LABEL_MATURITY, behaviour_features
from fraudlake.ml.features import MODEL_INPUT_COLUMNS, SILVER_FEATURES, add_features
from fraudlake.ml.registry import default_model_uri, mlflow_client, resolve_model
from fraudlake.output import note
from fraudlake.settings import Context

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


@dataclass(frozen=True)
class ModelScorer:
    """A loaded model as a Spark UDF, with what silver records about it."""

    udf: Any
    model_uri: str  # pinned to a version: models:/fraud_detector/3
    model_name: str
    model_version: str
    flag_threshold: float
    # The model's inputs, by name (its signature): a version trained before behavioural
    # features existed scores without them.
    input_columns: tuple[str, ...] = MODEL_INPUT_COLUMNS
    # How old a merchant's transactions must be before their labels count (the model's training data).
    label_maturity_seconds: int = DEFAULT_LABEL_MATURITY


def load_scorer(spark: SparkSession, ctx: Context, model_uri: str | None = None) -> ModelScorer:
    """Resolve ``model_uri`` (default ``models:/<name>@champion``) to its version and load it as a UDF.

    The alias is resolved once, here: a stream keeps scoring with the version it
    started with, and records that version, until it is restarted.
    """
    client = mlflow_client(ctx)
    import mlflow

    ref = resolve_model(client, model_uri or default_model_uri(ctx))
    info = mlflow.models.get_model_info(ref.uri)
    threshold = float((info.metadata or {})["flag_threshold"])
    inputs = tuple(info.signature.inputs.input_names()) if info.signature is not None else MODEL_INPUT_COLUMNS
    maturity = int((info.metadata or {}).get("label_maturity_seconds", DEFAULT_LABEL_MATURITY))
    if _local_master(spark):
        udf = worker_cached_udf(mlflow.artifacts.download_artifacts(ref.uri))
    else:  # a cluster: MLflow ships the model to every executor (and caches it there)
        udf = mlflow.pyfunc.spark_udf(spark, ref.uri, result_type="double", env_manager="local")
    return ModelScorer(udf, ref.uri, ref.name or "", ref.version or "", threshold, tuple(map(str, inputs)), maturity)


def _local_master(spark: SparkSession) -> bool:
    try:
        master = spark.sparkContext.master
        return master is not None and master.startswith("local")
    except Exception:  # Spark Connect: no SparkContext, and never local workers sharing our disk
        return False


# How often a stream that follows the champion asks the registry where the alias points.
FOLLOW_EVERY_SECONDS = 5.0


class ChampionFollower:
    """The scorer of each micro-batch. By default the version the stream started with, to the
    end (the alias was resolved once, by :func:`load_scorer`). Following (``streams.follow_champion``),
    the version the alias points at when a batch starts: the registry is asked at most every
    ``every`` seconds, at a batch boundary, and a moved alias is loaded before the batch scores,
    so a batch is scored by one version and records it. A registry that cannot be reached keeps
    the version in use (said once), so a registry outage never stops scoring.

    >>> follower = ChampionFollower(ctx, scorer, follow=True)
    >>> follower.for_batch(spark).model_version
    '2'
    """

    def __init__(
        self,
        ctx: Context,
        scorer: ModelScorer,
        follow: bool = False,
        every: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.ctx = ctx
        self.scorer = scorer
        uri = ctx.settings.streams.model_uri or default_model_uri(ctx)
        self.alias_uri = uri if follow and "@" in uri else None
        if follow and self.alias_uri is None:
            raise FraudlakeError(
                f"streams.follow_champion follows a model alias, and streams.model_uri is {uri}: "
                "give models:/NAME@ALIAS, or turn follow_champion off"
            )
        self.every = FOLLOW_EVERY_SECONDS if every is None else every
        self._clock = clock or time.monotonic
        self._asked_at = self._clock()
        self._unreachable = False

    def for_batch(self, spark: SparkSession) -> ModelScorer:
        """The scorer for the batch about to be scored."""
        if self.alias_uri is None or self._clock() - self._asked_at < self.every:
            return self.scorer
        self._asked_at = self._clock()
        try:
            version = resolve_model(mlflow_client(self.ctx), self.alias_uri).version
        except Exception as error:  # an unreachable registry, a removed alias
            if not self._unreachable:
                note(
                    f"silver: cannot read {self.alias_uri} ({first_line(error)}); scoring on with "
                    f"{self.scorer.model_name} v{self.scorer.model_version}"
                )
            self._unreachable = True
            return self.scorer
        self._unreachable = False
        if version != self.scorer.model_version:
            self.scorer = load_scorer(spark, self.ctx, self.alias_uri)
            note(
                f"silver: {self.alias_uri} moved to {self.scorer.model_name} v{self.scorer.model_version}; "
                "scoring with it from this batch on"
            )
        return self.scorer


# Models loaded in this Python worker, by local path. Spark reuses its Python workers
# (spark.python.worker.reuse), so a micro-batch's scoring tasks find the model loaded.
_LOADED: dict[str, Any] = {}


def _loaded_model(path: str):
    if path not in _LOADED:
        import mlflow

        _LOADED[path] = mlflow.pyfunc.load_model(path)
    return _LOADED[path]


def worker_cached_udf(model_path: str) -> Callable[..., Column]:
    """The pyfunc at ``model_path`` (a local copy) as a vectorised Spark UDF that loads the model
    once per Python worker.

    ``mlflow.pyfunc.spark_udf`` loads the model again in every task in local mode: in a
    stream that is every micro-batch. Here the loaded model stays in the worker for the next
    batches. The input is a struct of the feature columns, which reaches ``predict`` as a
    pandas frame with those column names: the model's signature is enforced as with
    ``spark_udf``. For local masters only, whose workers read the driver's disk.
    """
    from pyspark.sql.functions import pandas_udf

    # The hints tell Spark this is an iterator UDF (frames in, series out); they name module-level types.
    @pandas_udf("double")  # type: ignore[call-overload]
    def score(frames: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        model = _loaded_model(model_path)
        for frame in frames:
            yield pd.Series(model.predict(frame), index=frame.index).astype("float64")

    return score


def add_behaviour(
    transactions: DataFrame, label_maturity_seconds: int = DEFAULT_LABEL_MATURITY, labels: pd.DataFrame | None = None
) -> DataFrame:
    """A batch of transactions (bronze schema) with their behavioural features, each row's history
    being the batch's earlier rows (and ``labels``: ``transaction_id``, ``label_is_fraud``,
    ``label_time``): for scoring a history at once, e.g. a backfill. The rows go through the driver."""
    rows = transactions.toPandas()
    featured = pd.concat([rows, behaviour_features(rows, labels, label_maturity_seconds)], axis=1)
    return transactions.sparkSession.createDataFrame(featured, schema=_with_doubles(transactions, BEHAVIOUR_FEATURES))


def _with_doubles(frame: DataFrame, names) -> Any:
    from pyspark.sql.types import DoubleType, StructField, StructType

    return StructType([*frame.schema.fields, *[StructField(name, DoubleType()) for name in names]])


def score_transactions(transactions: DataFrame, scorer: ModelScorer) -> DataFrame:
    """Transactions (bronze schema, and the behavioural features of :mod:`fraudlake.ml.behaviour`
    when the model reads them) → + time features, ``amount_usd``, ``fraud_score``, ``is_flagged``,
    ``model_name``, ``model_version``, ``scored_at`` and the ``flag_threshold`` the flag used."""
    from pyspark.sql import functions as F

    missing = [c for c in BEHAVIOUR_FEATURES if c in scorer.input_columns and c not in transactions.columns]
    if missing:
        raise FraudlakeError(
            f"{scorer.model_uri} reads behavioural features the rows do not have ({', '.join(missing[:3])}, ...): "
            "compute them first (fraudlake.ml.behaviour.BehaviourHistory)"
        )
    featured = add_features(transactions)
    # A struct passes the inputs by name, so column order cannot silently change meaning.
    score = scorer.udf(F.struct(*[F.col(c) for c in scorer.input_columns]))
    carried = [c for c in transactions.columns if c not in SILVER_FEATURES]  # bronze, behaviour, a caller's own
    return featured.withColumn("fraud_score", score).select(
        *carried,
        *SILVER_FEATURES,
        F.col("fraud_score"),
        (F.col("fraud_score") >= F.lit(scorer.flag_threshold)).alias("is_flagged"),
        F.lit(scorer.model_name).alias("model_name"),
        F.lit(scorer.model_version).alias("model_version"),
        F.current_timestamp().alias("scored_at"),
        F.lit(scorer.flag_threshold).alias("flag_threshold"),
    )
