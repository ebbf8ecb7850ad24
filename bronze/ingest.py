"""Sources → ``bronze.transactions``: the simulator's rate stream or a landing folder of files
(and the simulator's fraud labels → ``bronze.labels``, :mod:`fraudlake.bronze.labels`).

Bronze keeps everything: a malformed record becomes a row with null typed columns
and its original text in ``_raw``. Each source has its own checkpoint, and each
micro-batch is appended once (:class:`BronzeWriter`), which makes the stream
exactly-once across restarts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from fraudlake.bronze.kafka import kafka_lineage, kafka_records_stream, kafka_topics, producer_topics
from fraudlake.bronze.labels import FEED_COLUMNS, LABEL_SOURCE, MICROS, SimulatedLabels
from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.simulator import rate_stream
from fraudlake.streaming_io import ReplayCheck, append_once, triggered
from fraudlake.tables import BRONZE_COLUMNS, BRONZE_TRANSACTIONS, table_name

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

# The columns a record carries; the underscore columns are added on ingest.
RECORD_COLUMNS = [c.strip() for c in BRONZE_COLUMNS.strip().split(",\n") if not c.strip().startswith("_")]
RECORD_SCHEMA = ", ".join(RECORD_COLUMNS)
RECORD_NAMES = [c.split()[0] for c in RECORD_COLUMNS]


def checkpoint_name(source: str) -> str:
    return f"bronze_{source}"


# How a record's text is parsed: a field that does not parse is null, its text stays in _raw.
PARSE_OPTIONS = {"mode": "PERMISSIVE", "timestampFormat": "yyyy-MM-dd'T'HH:mm:ss[.SSSSSS][XXX]"}
# How records are written as JSON (fraudlake produce): times in UTC with their offset, nulls kept.
WRITE_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "ignoreNullFields": "false"}


def _bronze_rows(records: DataFrame, parsed: Column, raw: Column, source: Column) -> DataFrame:
    """Bronze columns from each record's parsed struct, its text and where it came from."""
    from pyspark.sql import functions as F

    return records.select(parsed.alias("r"), raw.alias("_raw"), source.alias("_source")).select(
        *[F.col(f"r.{name}").alias(name) for name in RECORD_NAMES],
        "_raw",
        "_source",
        F.current_timestamp().alias("_ingest_time"),
    )


def text_records(lines: DataFrame, schema: str, first_name: str) -> tuple[DataFrame, Column]:
    """The records among text lines (``value``, plus ``file_path``) and each one's parsed struct of
    ``schema``: JSON unless the file ends in ``.csv``. Blank lines and CSV header lines (the line
    starting with ``first_name,``) are not records."""
    from pyspark.sql import functions as F

    line = F.col("value")
    is_csv = F.lower(F.col("file_path")).endswith(".csv")
    parsed = F.when(is_csv, F.from_csv(line, schema, PARSE_OPTIONS)).otherwise(F.from_json(line, schema, PARSE_OPTIONS))
    records = lines.where(F.trim(line) != "").where(~(is_csv & line.startswith(first_name + ",")))
    return records, parsed


def parse_records(lines: DataFrame, source: str = "files") -> DataFrame:
    """Text lines (``value``, plus ``file_path``) → bronze columns. Pure: batch or stream.

    JSON lines are parsed unless the file ends in ``.csv``. Blank lines and CSV header
    lines are not records; every other line becomes exactly one row, parsed or not.
    """
    from pyspark.sql import functions as F

    records, parsed = text_records(lines, RECORD_SCHEMA, RECORD_NAMES[0])
    return _bronze_rows(records, parsed, F.col("value"), F.lit(source))


def parse_kafka_records(records: DataFrame) -> DataFrame:
    """Kafka records (the connector's ``topic, partition, offset, timestamp, value``) → bronze
    columns. Pure: batch or stream.

    Every record becomes exactly one row: its value (UTF-8 JSON) parsed, or not (null typed
    columns, the text in ``_raw``, quarantined by silver); a record without a value too.
    ``_source`` says where it came from (:func:`kafka_lineage`).
    """
    from pyspark.sql import functions as F

    value = F.col("value").cast("string")
    return _bronze_rows(records, F.from_json(value, RECORD_SCHEMA, PARSE_OPTIONS), value, kafka_lineage())


def kafka_stream(spark: SparkSession, ctx: Context) -> DataFrame:
    """The bronze rows of the topic in ``ingest.kafka`` (Spark's Kafka connector)."""
    kafka = ctx.settings.ingest.kafka
    return parse_kafka_records(kafka_records_stream(spark, ctx, kafka.topic, kafka.max_offsets_per_trigger))


def kafka_records(transactions: DataFrame) -> DataFrame:
    """Simulated transactions → Kafka records: the transaction id as key, the record as JSON value
    (the bronze record's fields, times in ISO 8601 UTC), batch or stream."""
    from pyspark.sql import functions as F

    record = F.struct(*[F.col(name) for name in RECORD_NAMES])
    return transactions.select(F.col("transaction_id").alias("key"), F.to_json(record, WRITE_OPTIONS).alias("value"))


def _kafka_writer_options(ctx: Context, topic: str | None = None) -> dict[str, str]:
    kafka = ctx.settings.ingest.kafka
    return {"kafka.bootstrap.servers": kafka.bootstrap_servers, "topic": topic or kafka.topic, **kafka.options}


def produce_batch(spark: SparkSession, ctx: Context, count: int) -> tuple[int, int]:
    """Send ``count`` simulated transactions to the topic at once, and the labels of their fraud
    rows (``label_time`` = event time + ``simulator.label_delay_seconds``, all in the past on the
    batch clock) to the labels topic; returns how many of each were sent."""
    from pyspark.sql import functions as F

    from fraudlake.simulator import generate_batch

    kafka_topics(spark, ctx, create=producer_topics(ctx))
    transactions = generate_batch(spark, ctx.settings.simulator, count).persist()
    try:
        kafka_records(transactions).write.format("kafka").options(**_kafka_writer_options(ctx)).save()
        labels = 0
        if ctx.settings.ingest.kafka.labels_topic is not None:
            delay = ctx.settings.simulator.label_delay_seconds * MICROS
            fraud = transactions.where(F.col("label_is_fraud") == 1).select(
                "transaction_id", F.timestamp_micros(F.unix_micros("event_time") + delay).alias("label_time")
            )
            labels = send_labels(ctx, fraud)
    finally:
        transactions.unpersist()
    return count, labels


def send_labels(ctx: Context, labels: DataFrame) -> int:
    """Send the simulator's fraud labels (``transaction_id``, ``label_time``) to the labels topic as
    JSON records (``label_is_fraud`` 1, ``label_source`` simulator); returns how many."""
    from pyspark.sql import functions as F

    record = F.struct(
        "transaction_id",
        F.lit(1).alias("label_is_fraud"),
        "label_time",
        F.lit(LABEL_SOURCE).alias("label_source"),
    )
    records = labels.select(F.col("transaction_id").alias("key"), F.to_json(record, WRITE_OPTIONS).alias("value"))
    records = records.persist()  # written, then counted: the labels are computed once
    try:
        records.write.format("kafka").options(
            **_kafka_writer_options(ctx, ctx.settings.ingest.kafka.labels_topic)
        ).save()
        return records.count()
    finally:
        records.unpersist()


def produce_raw(spark: SparkSession, ctx: Context, values: list[str], topic: str | None = None) -> None:
    """Send records as they are (e.g. malformed ones, to see them quarantined), to ``topic``
    (default: the transactions topic)."""
    frame = spark.createDataFrame([(value,) for value in values], "value STRING")
    frame.write.format("kafka").options(**_kafka_writer_options(ctx, topic)).save()


class ProducerWriter:
    """The ``foreachBatch`` function of the producer: a batch's transactions to the topic, then the
    simulator's labels due by its newest event time to the labels topic.

    A fraud row's label is due ``simulator.label_delay_seconds`` after its event time. Labels
    not yet due are kept in a file beside the checkpoint, written after each batch's sends: a
    crash before it replays the batch (sent again: Kafka's sink is at least once, bronze
    quarantines the repeats), so no label is lost.
    """

    def __init__(self, ctx: Context, checkpoint: str) -> None:
        self.ctx = ctx
        self.options = _kafka_writer_options(ctx)
        self.labels_topic = ctx.settings.ingest.kafka.labels_topic
        self.delay_micros = ctx.settings.simulator.label_delay_seconds * MICROS
        self.pending_file = Path(checkpoint) / "fraudlake_pending_labels.json"
        self.pending: dict[str, int] | None = None  # transaction id -> label_time (epoch micros)
        self.sent_labels = 0

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        from pyspark.sql import functions as F

        batch = batch.persist()
        try:
            kafka_records(batch).write.format("kafka").options(**self.options).save()
            if self.labels_topic is None:
                return
            fraud = F.when(F.col("label_is_fraud") == 1, F.struct("transaction_id", F.unix_micros("event_time")))
            row = batch.agg(F.max(F.unix_micros("event_time")), F.collect_list(fraud)).first()
        finally:
            batch.unpersist()
        assert row is not None  # an aggregate without grouping has one row
        pending = self._pending()
        pending.update({str(i): int(t) + self.delay_micros for i, t in row[1]})
        newest = row[0]
        if newest is not None:
            due = {i: t for i, t in pending.items() if t <= newest}
            if due:
                rows = [(i, t) for i, t in due.items()]
                frame = batch.sparkSession.createDataFrame(rows, "transaction_id STRING, micros BIGINT")
                due_labels = frame.select("transaction_id", F.timestamp_micros("micros").alias("label_time"))
                self.sent_labels += send_labels(self.ctx, due_labels)
                for i in due:
                    del pending[i]
        temporary = self.pending_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(pending))
        temporary.replace(self.pending_file)  # whole or not at all

    def _pending(self) -> dict[str, int]:
        if self.pending is None:
            self.pending = json.loads(self.pending_file.read_text()) if self.pending_file.exists() else {}
        return self.pending


def start_producer(spark: SparkSession, ctx: Context, rate: int) -> StreamingQuery:
    """Stream the simulator's transactions to the topic at ``rate`` rows/s, and their labels once
    due to the labels topic (:class:`ProducerWriter`).

    Its checkpoint (``produce_kafka``) numbers rows on across runs, as the rate source
    does. Kafka's sink delivers at least once: after a crash a record may be sent twice,
    and bronze quarantines the repeat (``duplicate_transaction_id`` in silver's quarantine,
    ``duplicate_label`` in ``bronze.label_quarantine``).
    """
    kafka_topics(spark, ctx, create=producer_topics(ctx))
    checkpoint = ctx.paths.checkpoint("produce_kafka")
    frame = rate_stream(spark, ctx.settings.simulator, rate, ctx.settings.ingest.rate_partitions)
    stream = (
        frame.writeStream.queryName("produce_kafka")
        .foreachBatch(ProducerWriter(ctx, checkpoint))
        .option("checkpointLocation", checkpoint)
    )
    return triggered(stream, ctx.settings.ingest.trigger_seconds, False).start()


def landing_lines(spark: SparkSession, ctx: Context, folder: str) -> DataFrame:
    """The lines of the files dropped in ``folder`` (and its sub-folders), with each one's ``file_path``."""
    if "://" not in folder:
        Path(folder).mkdir(parents=True, exist_ok=True)  # the file source needs the folder to exist
    return (
        spark.readStream.format("text")
        .option("maxFilesPerTrigger", ctx.settings.ingest.max_files_per_trigger)
        .option("recursiveFileLookup", True)  # files dropped in sub-folders count too
        .load(folder)
        .select("value", "_metadata.file_path")
    )


def files_stream(spark: SparkSession, ctx: Context, landing: str) -> DataFrame:
    return parse_records(landing_lines(spark, ctx, landing), source="files")


def rate_claim(ctx: Context) -> Path:
    """The file beside the rate checkpoint that records the rate, partitions and seed it began with."""
    return Path(ctx.paths.checkpoint(checkpoint_name("rate")) + ".source.json")


def claim_rate_checkpoint(ctx: Context, rate: int) -> None:
    """The rate source numbers rows as seconds × rate, so a checkpoint only resumes at the rate it began with.

    Cheap (no Spark): the CLI calls it before starting a session, to fail fast.
    """
    marker = rate_claim(ctx)
    wanted = {"rate": rate, "partitions": ctx.settings.ingest.rate_partitions, "seed": ctx.settings.simulator.seed}
    if marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded != wanted:
            raise FraudlakeError(
                f"the bronze rate checkpoint was started with {recorded}; resume it with the same values "
                f"(transaction ids derive from the rate source's row numbers) or use a new --home"
            )
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(wanted))


def source_frame(
    spark: SparkSession,
    ctx: Context,
    source: str,
    rate: int | None = None,
    landing: str | None = None,
    available_now: bool = False,
) -> DataFrame:
    """The stream of bronze rows from ``source`` (rate, files or kafka)."""
    ingest = ctx.settings.ingest
    if source == "rate":
        if available_now:
            raise FraudlakeError(
                "--available-now needs a source with an end (files, or kafka up to its latest offsets); "
                "the rate source has none"
            )
        rate = rate or ingest.rate
        claim_rate_checkpoint(ctx, rate)
        return rate_stream(spark, ctx.settings.simulator, rate, ingest.rate_partitions)
    if source == "files":
        return files_stream(spark, ctx, landing or ctx.paths.landing)
    if source == "kafka":
        return kafka_stream(spark, ctx)
    raise FraudlakeError(f"unknown source {source!r}: choose rate, files or kafka")


class BronzeWriter:
    """Appends a source's micro-batches to ``bronze.transactions``, each exactly once.

    The writer id is the query's own id (kept in its checkpoint), as Delta's streaming sink
    uses it: a checkpoint that an earlier fraudlake (or ``--layers bronze`` before it) wrote
    through the sink resumes without writing its last batch twice. The ``foreachBatch``
    function of ``--layers bronze``, and the bronze half of the combined ingest query.
    """

    def __init__(self, ctx: Context, checkpoint: str, labels: SimulatedLabels | None = None) -> None:
        self.table = table_name(ctx, BRONZE_TRANSACTIONS)
        self.checkpoint = checkpoint
        self.replays = ReplayCheck()  # only the first batch after a start may have committed already
        self._query_id: str | None = None
        self.labels = labels  # the simulator's label feed, for a rate source on its own

    def query_id(self, batch: DataFrame) -> str:
        """The query's id, the one Delta's streaming sink uses as the bronze txnAppId."""
        if self._query_id is None:
            try:
                self._query_id = json.loads((Path(self.checkpoint) / "metadata").read_text())["id"]
            except OSError:  # a checkpoint on object storage: the same id, from the query's thread
                query_id = batch.sparkSession.sparkContext.getLocalProperty("sql.streaming.queryId")
                assert query_id is not None  # Spark sets it on the thread that runs a foreachBatch
                self._query_id = query_id
        return self._query_id

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        if self.labels is None:
            append_once(batch, self.table, self.query_id(batch), batch_id, self.replays.needed(self.table))
            return
        # The label feed reads the batch too: cached, the source runs (and is counted) once.
        batch = batch.persist()
        try:
            append_once(batch, self.table, self.query_id(batch), batch_id, self.replays.needed(self.table))
            self.labels.arrive(batch.sparkSession, batch.select(*FEED_COLUMNS).toArrow())
        finally:
            batch.unpersist()


def start_bronze_ingest(
    spark: SparkSession,
    ctx: Context,
    source: str,
    rate: int | None = None,
    landing: str | None = None,
    available_now: bool = False,
) -> StreamingQuery:
    """Start the stream that appends ``source`` into ``bronze.transactions``; returns the query.

    ``available_now`` processes what the landing folder (or the topic) holds, then stops (a scheduled job's trigger).
    """
    frame = source_frame(spark, ctx, source, rate, landing, available_now)
    checkpoint = ctx.paths.checkpoint(checkpoint_name(source))
    labels = SimulatedLabels(ctx) if source == "rate" else None
    writer = (
        frame.writeStream.queryName(checkpoint_name(source))
        .foreachBatch(BronzeWriter(ctx, checkpoint, labels))
        .option("checkpointLocation", checkpoint)
    )
    return triggered(writer, ctx.settings.ingest.trigger_seconds, available_now).start()
