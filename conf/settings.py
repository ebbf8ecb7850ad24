"""The validated settings model: one frozen pydantic model per conf section.

Every model forbids unknown keys, so a typo in ``conf/<env>.yaml`` is an error
that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SparkSettings(_Strict):
    """How the local session is built. Ignored on Databricks, where the runtime owns the session."""

    master: str = "local[*]"
    app_name: str = "fraudlake"
    shuffle_partitions: PositiveInt = 4
    ui_enabled: bool = False
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    # Extra Spark conf, applied last (e.g. spark.driver.memory).
    extra: dict[str, str] = Field(default_factory=dict)


class CatalogSettings(_Strict):
    """Where tables live: ``<catalog>.<schema>.<table>``."""

    catalog: str = "spark_catalog"
    bronze_schema: str = "bronze"
    silver_schema: str = "silver"
    gold_schema: str = "gold"


class StorageSettings(_Strict):
    """Folders for data and checkpoints. Relative paths resolve under the home folder."""

    warehouse: str = "warehouse"
    checkpoints: str = "checkpoints"
    landing: str = "landing"
    # True where tables are managed by the catalog (Unity Catalog): no LOCATION clause.
    managed_tables: bool = False


class ScenarioMix(_Strict):
    """Share of each fraud scenario among fraudulent transactions (normalised to 1)."""

    amount_anomaly: Probability = 0.4
    compromised_merchant: Probability = 0.3
    compromised_card: Probability = 0.3

    @model_validator(mode="after")
    def _some_fraud(self) -> "ScenarioMix":
        if self.amount_anomaly + self.compromised_merchant + self.compromised_card <= 0:
            raise ValueError("at least one scenario share must be positive")
        return self


class SimulatorSettings(_Strict):
    """The synthetic card population and its fraud scenarios."""

    seed: int = 42
    n_users: PositiveInt = 1_000_000  # hashed, so size is free; realistic per-user rates at high volume
    n_merchants: Annotated[int, Field(ge=20)] = 20_000  # at least one per simulated country
    # Share of all transactions that are fraudulent. Real card fraud is ~0.1-2%.
    fraud_rate: Annotated[float, Field(ge=0.0, lt=0.5)] = 0.015
    scenario_mix: ScenarioMix = ScenarioMix()
    # Compromised card: a stolen card makes this many transactions on average, in one
    # block of consecutive transactions (rapid at any stream rate above a few rows/s).
    burst_size: Annotated[int, Field(ge=2, le=100)] = 8
    # Compromised merchants: the stream is cut into periods of this many transactions;
    # in each period this many merchants are compromised and all their transactions are fraud.
    merchant_period_rows: PositiveInt = 50_000
    compromised_merchants_per_period: Annotated[int, Field(ge=1, le=50)] = 3
    # One clock for batch and stream (see fraudlake.simulator): batch data (``generate``,
    # training) starts at ``start_time`` and runs at ``rows_per_day``, evenly over the day.
    start_time: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows_per_day: PositiveInt = 1_500
    # The rate stream's event time: None follows the wall clock; an instant replays the
    # stream on the simulated clock from there (row n at n / rate seconds after it).
    stream_start_time: datetime | None = None

    @field_validator("start_time", "stream_start_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is UTC; one with an offset is the same instant in UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class IngestSettings(_Strict):
    """The bronze stream."""

    source: Literal["rate", "files"] = "rate"
    rate: PositiveInt = 1
    # Rate-source partitions: one per core keeps generation parallel without tiny tasks.
    rate_partitions: PositiveInt = 2
    files_format: Literal["json", "csv"] = "json"
    max_files_per_trigger: PositiveInt = 100
    trigger_seconds: Annotated[float, Field(ge=0.0)] = 1.0
    progress_seconds: Annotated[float, Field(gt=0.0)] = 5.0


class MlSettings(_Strict):
    """Training, evaluation and the model registry (``fraudlake train|evaluate|promote|models``)."""

    model_name: str = "fraud_detector"
    experiment_name: str = "fraudlake"
    # None: SQLite under home (sqlite:///<home>/mlflow.db); on Databricks e.g. databricks / databricks-uc.
    tracking_uri: str | None = None
    registry_uri: str | None = None  # None: the tracking URI
    # Run and model artifacts; a relative path resolves under home.
    artifact_location: str = "mlruns"
    reports: str = "reports"  # evaluation reports (HTML); relative to home
    model: Literal["isolation_forest", "gradient_boosting"] = "isolation_forest"
    samples: PositiveInt = 30_000  # simulated training rows when no --input is given
    # IsolationForest: the expected share of anomalies; the flag threshold flags this share of validation rows.
    contamination: Annotated[float, Field(gt=0.0, le=0.5)] = 0.15
    isolation_forest_trees: PositiveInt = 200
    gradient_boosting_iterations: PositiveInt = 200
    gradient_boosting_learning_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    # Holdout shares; the rest trains. Validation picks the flag threshold, test reports metrics.
    validation_share: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    test_share: Annotated[float, Field(gt=0.0, lt=0.5)] = 0.2
    seed: int = 42  # model and random-split seed
    # Precision of the k highest scores: the alerts an analyst can review.
    precision_at_k: Annotated[tuple[PositiveInt, ...], Field(min_length=1)] = (50, 100, 200)


class StreamSettings(_Strict):
    """The silver and gold streams (``fraudlake run``, ``fraudlake demo``)."""

    silver_trigger_seconds: Annotated[float, Field(ge=0.0)] = 0.5
    gold_trigger_seconds: Annotated[float, Field(ge=0.0)] = 15.0
    # Bronze files per silver micro-batch (Delta source); bounds a catch-up batch after downtime.
    silver_max_files_per_trigger: PositiveInt = 200
    # How late an event may arrive and still count in gold windows; also how long a
    # window waits before it is final and written (append mode).
    watermark_seconds: PositiveInt = 120
    # Validation: an event time further ahead of the clock than this is quarantined.
    max_future_seconds: PositiveInt = 86_400
    # A transaction_id that silver already scored is quarantined as a repeat when the two
    # event times are at most this far apart (how far back silver is looked up).
    duplicate_horizon_hours: PositiveInt = 168
    # A user-activity alert fires for a 5-minute window with at least this many transactions.
    activity_alert_threshold: Annotated[int, Field(ge=2)] = 6
    # One alert per burst: a user's next activity alert needs a window ending at least this
    # long after their previous one (the 5-minute window's length by default).
    activity_alert_cooldown_seconds: Annotated[int, Field(ge=0)] = 300
    # Alerts printed per micro-batch; the rest are counted.
    console_alerts_per_batch: Annotated[int, Field(ge=0)] = 5
    # The model silver scores with; None: models:/<ml.model_name>@champion.
    model_uri: str | None = None


class AuditSettings(_Strict):
    """How long silver and gold keep the past: the window for time travel and audits.

    Applied to every silver and gold table as ``delta.logRetentionDuration`` (how far
    back versions can be read) and ``delta.deletedFileRetentionDuration`` (how long a
    file replaced by a rewrite or compaction stays for old versions); ``fraudlake
    maintain --vacuum`` never deletes inside the file window.
    """

    log_retention_days: PositiveInt = 30
    deleted_file_retention_days: PositiveInt = 30


class Settings(_Strict):
    """All of fraudlake's settings for one environment."""

    environment: Literal["local", "databricks"] = "local"
    spark: SparkSettings = SparkSettings()
    catalog: CatalogSettings = CatalogSettings()
    storage: StorageSettings = StorageSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    ingest: IngestSettings = IngestSettings()
    ml: MlSettings = MlSettings()
    streams: StreamSettings = StreamSettings()
    audit: AuditSettings = AuditSettings()
