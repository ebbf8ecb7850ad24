"""The validated settings model: one frozen pydantic model per conf section.

Every model forbids unknown keys, so a typo in ``conf/<env>.yaml`` is an error
that names the key instead of a silently ignored setting.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_serializer,
    model_validator,
)

PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0)]

Profile = Literal["latency", "throughput"]
DEFAULT_PROFILE: Profile = "latency"

# What a stream profile (top-level ``profile``, ``fraudlake run|demo --profile``) sets: the
# micro-batch intervals and batch bounds of bronze, silver and gold. A key set in the conf
# or with --set wins over its profile. Numbers are for local[2]; see benchmarks/results.
# ingest.rate_partitions is deliberately not here: the rate checkpoint records it, so a
# profile that changed it could not resume a run started under the other one.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    # Rows on the dashboard and alerts a few seconds after the card is used.
    "latency": {
        "ingest": {
            # A bronze commit of 1,000-3,000 rows took 1-3 s on 2 cores (its fixed Delta cost):
            # at 0.5 s bronze ran batches back to back and held a core that silver needs.
            "trigger_seconds": 1.0,
            # Files source: a catch-up after downtime runs in batches that commit in seconds.
            "max_files_per_trigger": 100,
        },
        "streams": {
            # Silver starts its next batch as soon as one ends while bronze keeps it busy; the
            # interval only spaces its checks of bronze's Delta log when idle (0 would poll
            # the log continuously and take a core from the batches).
            "silver_trigger_seconds": 1.0,
            # A catch-up batch holds at most ~50 s of bronze commits (two files each), so the
            # first fresh rows after a restart are not stuck behind one huge batch.
            "silver_max_files_per_trigger": 200,
            # Each gold batch pays three Delta commits (alerts, the open minutes' replaceWhere,
            # the user minutes): seconds on 2 cores. Every 10 s keeps the dashboard live (an
            # activity alert p95 11 s after its transaction) and leaves silver its cores.
            "gold_trigger_seconds": 10.0,
        },
    },
    # The most rows per core: fewer, larger batches; rows reach gold within a minute.
    "throughput": {
        "ingest": {
            # Fixed per-batch cost (planning, a Delta commit, a checkpoint) paid every 5 s
            # instead of twice a second: bronze sustains ~150,000 rows/s with 5 s batches.
            "trigger_seconds": 5.0,
            "max_files_per_trigger": 1_000,
        },
        "streams": {
            # Silver batches hold 5 s of bronze: scoring cost grows with rows, its fixed cost does not.
            "silver_trigger_seconds": 5.0,
            "silver_max_files_per_trigger": 1_000,
            # Gold's commits (and the replaceWhere of the open minutes) cost the same whatever
            # the batch size: at 20,000 rows/s gold kept up with 60 s batches (24,200 rows/s
            # over the measured window) and was on the edge with 30 s ones (19,200).
            "gold_trigger_seconds": 60.0,
        },
    },
}


def _preset(section: str, key: str) -> Any:
    """The default profile's value: a section built on its own (``StreamSettings()``) matches ``Settings()``."""
    return PROFILES[DEFAULT_PROFILE][section][key]


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
    # Label exports (files of label records) for --source files; a folder of its own, not under landing.
    labels_landing: str = "landing_labels"
    # True where tables are managed by the catalog (Unity Catalog): no LOCATION clause.
    managed_tables: bool = False


class ScenarioMix(_Strict):
    """Share of each fraud scenario among fraudulent transactions (normalised to 1)."""

    amount_anomaly: Probability = 0.4
    compromised_merchant: Probability = 0.3
    compromised_card: Probability = 0.3

    @model_validator(mode="after")
    def _some_fraud(self) -> ScenarioMix:
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
    # The rate stream's fraud labels reach bronze.labels this long after the purchase (on the
    # stream's clock): a bank's chargebacks take days; a minute lets a live demo show them.
    label_delay_seconds: PositiveInt = 60

    @field_validator("start_time", "stream_start_time")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        """A time without an offset is UTC; one with an offset is the same instant in UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class KafkaSettings(_Strict):
    """The Kafka source of bronze (``--source kafka``) and the topic ``fraudlake produce`` writes.

    Records are JSON objects with the bronze record's fields (what ``fraudlake produce``
    sends). ``options`` go to Spark's Kafka connector as they are: consumer settings with
    their ``kafka.`` prefix (e.g. ``kafka.security.protocol: SASL_SSL``,
    ``kafka.sasl.jaas.config``) and the connector's own (e.g. ``minPartitions``).
    """

    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "fraudlake.transactions"
    # Fraud labels (JSON: transaction_id, label_is_fraud, label_time, label_source) → bronze.labels
    # beside the transactions; ``fraudlake produce`` sends the simulator's there once due. None: none read.
    labels_topic: str | None = "fraudlake.labels"
    # Where a new checkpoint starts; a checkpoint resumes from its own offsets.
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    # Records per micro-batch at most (None: all there are): bounds a batch after downtime.
    max_offsets_per_trigger: PositiveInt | None = None
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("topic", "labels_topic")
    @classmethod
    def _legal_topic(cls, topic: str | None) -> str | None:
        import re

        if topic is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", topic):
            raise ValueError(f"not a Kafka topic name (letters, digits, '.', '_', '-'): {topic!r}")
        return topic


class IngestSettings(_Strict):
    """The bronze stream."""

    source: Literal["rate", "files", "kafka"] = "rate"
    rate: PositiveInt = 1
    # Rate-source partitions: one per core keeps generation parallel without tiny tasks.
    rate_partitions: PositiveInt = 2
    files_format: Literal["json", "csv"] = "json"
    # Micro-batch interval and files per batch: from the profile unless set (see PROFILES).
    max_files_per_trigger: PositiveInt = _preset("ingest", "max_files_per_trigger")
    trigger_seconds: Seconds = _preset("ingest", "trigger_seconds")
    progress_seconds: Annotated[float, Field(gt=0.0)] = 5.0
    # Label records (Kafka's labels topic, label files) are read by a query of their own this
    # often: labels come days after the purchase, and each micro-batch costs a Delta commit.
    labels_trigger_seconds: Seconds = 10.0
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)


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
    # How long after a transaction its fraud label is known (chargebacks take days), when the
    # data has no label_time of its own. Behavioural features use a label only once it is known,
    # and a merchant's fraud share counts its transactions from this long ago (fraudlake.ml.behaviour).
    label_delay_seconds: PositiveInt = 7 * 86_400


class StreamSettings(_Strict):
    """The silver and gold streams (``fraudlake run``, ``fraudlake demo``)."""

    # Micro-batch intervals: from the profile unless set (see PROFILES).
    silver_trigger_seconds: Seconds = _preset("streams", "silver_trigger_seconds")
    gold_trigger_seconds: Seconds = _preset("streams", "gold_trigger_seconds")
    # Bronze files per silver micro-batch (Delta source); bounds a catch-up batch after downtime.
    silver_max_files_per_trigger: PositiveInt = _preset("streams", "silver_max_files_per_trigger")
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
    # Silver follows the alias: a version promoted while silver runs scores from the next
    # micro-batch on (the registry is asked at most every 5 s). Off: the version resolved at
    # start scores until silver restarts.
    follow_champion: bool = False


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
    """All of fraudlake's settings for one environment.

    ``profile`` fills the stream keys of :data:`PROFILES` that the data leaves out; a key
    given explicitly keeps its value. ``model_dump()`` leaves out what the profile filled
    in, so a dump validated again under another profile (``--set profile=throughput``)
    takes that profile's values; read the attributes for the values in effect.

    >>> Settings(profile="throughput").streams.gold_trigger_seconds
    30.0
    >>> Settings(profile="throughput", streams={"gold_trigger_seconds": 10}).streams.gold_trigger_seconds
    10.0
    """

    environment: Literal["local", "databricks"] = "local"
    # Stream presets: latency (seconds from card to gold) or throughput (most rows per core).
    profile: Profile = DEFAULT_PROFILE
    spark: SparkSettings = SparkSettings()
    catalog: CatalogSettings = CatalogSettings()
    storage: StorageSettings = StorageSettings()
    simulator: SimulatorSettings = SimulatorSettings()
    ingest: IngestSettings = IngestSettings()
    ml: MlSettings = MlSettings()
    streams: StreamSettings = StreamSettings()
    audit: AuditSettings = AuditSettings()

    # (section, key) pairs whose value came from the profile, not from the data.
    _from_profile: frozenset[tuple[str, str]] = PrivateAttr(default=frozenset())

    @model_validator(mode="wrap")
    @classmethod
    def _fill_from_profile(cls, data: Any, handler) -> Settings:
        if not isinstance(data, dict):
            return handler(data)  # an instance: already resolved
        presets = PROFILES.get(data.get("profile", DEFAULT_PROFILE))
        filled: set[tuple[str, str]] = set()
        if presets is not None:  # an unknown profile: the field's own validation names the choices
            data = dict(data)
            for section, values in presets.items():
                given = data.get(section)
                if isinstance(given, BaseModel):  # a section built in code: its explicit keys
                    given = {key: getattr(given, key) for key in given.model_fields_set}
                if given is None:
                    given = {}
                if not isinstance(given, dict):
                    continue  # not a mapping: left to the section's validation
                missing = {key: value for key, value in values.items() if key not in given}
                data[section] = {**given, **missing}
                filled |= {(section, key) for key in missing}
        settings = handler(data)
        settings._from_profile = frozenset(filled)
        return settings

    @model_serializer(mode="wrap")
    def _without_profile_values(self, handler) -> dict[str, Any]:
        data = handler(self)
        for section, key in self._from_profile:
            if isinstance(data.get(section), dict):
                data[section].pop(key, None)
        return data

    def explicit_stream_keys(self) -> frozenset[str]:
        """The profile's keys (``section.key``) this conf sets itself, overriding the profile."""
        return frozenset(
            f"{section}.{key}"
            for section, values in PROFILES[self.profile].items()
            for key in values
            if (section, key) not in self._from_profile
        )
