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
    n_users: PositiveInt = 10_000
    n_merchants: Annotated[int, Field(ge=20)] = 2_000  # at least one per simulated country
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
    # Batch generation only (``generate``, training data): a synthetic clock. Genuine
    # transactions fall in their user's active hours; stolen-card bursts favour the night.
    start_time: datetime = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rows_per_day: PositiveInt = 1_500

    @field_validator("start_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


class IngestSettings(_Strict):
    """The bronze stream."""

    source: Literal["rate", "files"] = "rate"
    rate: PositiveInt = 1
    # Rate-source partitions: one per core keeps generation parallel without tiny tasks.
    rate_partitions: PositiveInt = 2
    files_format: Literal["json", "csv"] = "json"
    max_files_per_trigger: PositiveInt = 100
    trigger_seconds: Annotated[float, Field(ge=0.0)] = 2.0
    progress_seconds: Annotated[float, Field(gt=0.0)] = 5.0


class Settings(_Strict):
    """All of fraudlake's settings for one environment."""

    environment: Literal["local", "databricks"] = "local"
    spark: SparkSettings = SparkSettings()
    catalog: CatalogSettings = CatalogSettings()
    storage: StorageSettings = StorageSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    ingest: IngestSettings = IngestSettings()
