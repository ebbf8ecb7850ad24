"""Label records from outside → ``bronze.labels``: Kafka's labels topic and label exports in files.

A bank's fraud labels (chargebacks, confirmed cases) come as records of their own, days after
the purchase: a JSON object (or a CSV line) with ``transaction_id``, ``label_is_fraud`` (1 fraud,
0 genuine), ``label_time`` (when the label was known, ISO 8601; no offset means UTC) and,
optionally, ``label_source`` (default: the source kind, ``kafka`` or ``files``).

A query of its own reads them (``labels_kafka`` or ``labels_files``, every
``ingest.labels_trigger_seconds``) and routes every record once: a usable label to
``bronze.labels``, anything else to ``bronze.label_quarantine`` with its text and a reason:

- ``malformed_record``: not a JSON object (or CSV line) of the label's fields;
- ``missing_transaction_id``, ``missing_label_time``, ``invalid_label`` (``label_is_fraud`` not 0 or 1);
- ``duplicate_label``: the same verdict on the same transaction arrived before (a producer's
  retry); another verdict on it is a new label (a correction).

Both appends carry the query's id and batch id (:func:`~fraudlake.streaming_io.append_once`),
and a replayed batch looks for repeats in ``bronze.labels`` as it was before its own commit:
``kill -9`` loses no label and doubles none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fraudlake.bronze.ingest import PARSE_OPTIONS, landing_lines, text_records
from fraudlake.bronze.kafka import kafka_lineage, kafka_records_stream, kafka_topics
from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context
from fraudlake.streaming_io import ReplayCheck, append_once, as_before_batch, triggered, writer_app_id
from fraudlake.tables import BRONZE_LABEL_QUARANTINE, BRONZE_LABELS, table_name

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.streaming import StreamingQuery

LABEL_RECORD_SCHEMA = "transaction_id STRING, label_is_fraud INT, label_time TIMESTAMP, label_source STRING"
LABEL_RECORD_NAMES = ("transaction_id", "label_is_fraud", "label_time", "label_source")
LABEL_SOURCES = ("kafka", "files")


def checkpoint_name(source: str) -> str:
    return f"labels_{source}"


def parse_label_records(records: DataFrame, parsed: Column, raw: Column, source: Column, kind: str) -> DataFrame:
    """Label records → ``bronze.labels`` columns, ``_raw`` and ``quarantine_reason`` (null for a
    usable label; repeats are found later, by :class:`LabelWriter`). Pure: batch or stream."""
    from pyspark.sql import functions as F

    r = F.col("r")
    nothing_read = r["transaction_id"].isNull() & r["label_is_fraud"].isNull() & r["label_time"].isNull()
    reason = (
        F.when(r.isNull() | nothing_read, "malformed_record")
        .when(r["transaction_id"].isNull() | (F.trim(r["transaction_id"]) == ""), "missing_transaction_id")
        .when(r["label_time"].isNull(), "missing_label_time")
        .when(r["label_is_fraud"].isNull() | ~r["label_is_fraud"].isin(0, 1), "invalid_label")
    )
    return records.select(parsed.alias("r"), raw.alias("_raw"), source.alias("_source")).select(
        r["transaction_id"].alias("transaction_id"),
        r["label_is_fraud"].alias("label_is_fraud"),
        r["label_time"].alias("label_time"),
        F.coalesce(r["label_source"], F.lit(kind)).alias("label_source"),
        F.current_timestamp().alias("_ingest_time"),
        "_source",
        "_raw",
        reason.alias("quarantine_reason"),
    )


def kafka_label_stream(spark: SparkSession, ctx: Context) -> DataFrame:
    """The label records of ``ingest.kafka.labels_topic``, parsed (see :func:`parse_label_records`)."""
    from pyspark.sql import functions as F

    topic = ctx.settings.ingest.kafka.labels_topic
    if topic is None:
        raise FraudlakeError("ingest.kafka.labels_topic is not set: there is no labels topic to read")
    text = F.col("value").cast("string")
    parsed = F.from_json(text, LABEL_RECORD_SCHEMA, PARSE_OPTIONS)
    return parse_label_records(kafka_records_stream(spark, ctx, topic), parsed, text, kafka_lineage(), "kafka")


def files_label_stream(spark: SparkSession, ctx: Context, folder: str | None = None) -> DataFrame:
    """The label records of the files in ``storage.labels_landing`` (JSON lines, or CSV with a header
    line when the file ends in ``.csv``), parsed (see :func:`parse_label_records`)."""
    from pyspark.sql import functions as F

    lines = landing_lines(spark, ctx, folder or ctx.paths.labels_landing)
    records, parsed = text_records(lines, LABEL_RECORD_SCHEMA, LABEL_RECORD_NAMES[0])
    return parse_label_records(records, parsed, F.col("value"), F.lit("files"), "files")


class LabelWriter:
    """The ``foreachBatch`` function of a label query: usable labels to ``bronze.labels``, the
    rest (and repeats) to ``bronze.label_quarantine``, each batch once."""

    def __init__(self, ctx: Context, checkpoint: str) -> None:
        self.labels_table = table_name(ctx, BRONZE_LABELS)
        self.quarantine_table = table_name(ctx, BRONZE_LABEL_QUARANTINE)
        self.app_id = writer_app_id(checkpoint, "labels")
        self.replays = ReplayCheck()
        self.stats = {"batches": 0, "labels": 0, "quarantined": 0}

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        session = batch.sparkSession
        rows = batch.toArrow()  # label records are few: one job, then the driver routes them
        if not rows.num_rows:
            return
        frame = rows.to_pandas()
        verify = self.replays.needed(self.labels_table)
        seen = self._known(session, frame, batch_id, verify)
        reasons = frame["quarantine_reason"].copy()
        usable = reasons.isna()
        key = frame["transaction_id"].astype(str) + "\x1f" + frame["label_is_fraud"].astype("Int64").astype(str)
        repeat = usable & (key.isin(seen) | key.where(usable).duplicated())
        reasons[repeat] = "duplicate_label"
        frame["quarantine_reason"] = reasons
        good = frame[reasons.isna()]
        bad = frame[reasons.notna()]
        verify_quarantine = self.replays.needed(self.quarantine_table)
        if len(good):
            labels = good.drop(columns=["_raw", "quarantine_reason"]).astype({"label_is_fraud": "int32"})
            append_once(_frame(session, labels, LABELS_DDL), self.labels_table, self.app_id, batch_id, verify)
        if len(bad):
            quarantined = bad[["_raw", "_source", "quarantine_reason", "_ingest_time"]]
            append_once(
                _frame(session, quarantined, QUARANTINE_DDL),
                self.quarantine_table,
                self.app_id,
                batch_id,
                verify_quarantine,
            )
        self.stats["batches"] += 1
        self.stats["labels"] += len(good)
        self.stats["quarantined"] += len(bad)

    def _known(self, session: SparkSession, frame: pd.DataFrame, batch_id: int, replay: bool) -> set[str]:
        """``transaction_id``/verdict keys of the batch's labels that ``bronze.labels`` holds (as it
        was before this batch, when this batch may be a replay whose append committed)."""
        from pyspark.sql import functions as F

        ids = frame.loc[frame["quarantine_reason"].isna(), "transaction_id"].dropna().unique().tolist()
        if not ids:
            return set()
        table = (
            as_before_batch(session, self.labels_table, self.app_id, batch_id)
            if replay
            else session.table(self.labels_table)
        )
        wanted = session.createDataFrame([(i,) for i in ids], "transaction_id STRING")
        found = (
            table.join(F.broadcast(wanted), "transaction_id")
            .select("transaction_id", "label_is_fraud")
            .distinct()
            .collect()
        )
        return {f"{row[0]}\x1f{row[1]}" for row in found}


LABELS_DDL = (
    "transaction_id STRING, label_is_fraud INT, label_time TIMESTAMP, label_source STRING, "
    "_ingest_time TIMESTAMP, _source STRING"
)
QUARANTINE_DDL = "_raw STRING, _source STRING, quarantine_reason STRING, _ingest_time TIMESTAMP"


def _frame(session: SparkSession, rows: pd.DataFrame, ddl: str) -> DataFrame:
    """Rows in the driver as a DataFrame of the table's columns (times as UTC instants)."""
    import pyarrow as pa

    return session.createDataFrame(pa.Table.from_pandas(rows, preserve_index=False)).selectExpr(
        *[f"CAST({c.split()[0]} AS {c.split()[1]}) AS {c.split()[0]}" for c in ddl.split(", ")]
    )


def label_stream(spark: SparkSession, ctx: Context, source: str) -> DataFrame:
    if source == "kafka":
        return kafka_label_stream(spark, ctx)
    if source == "files":
        return files_label_stream(spark, ctx)
    raise FraudlakeError(f"labels are read from kafka or files, not {source!r}")


def reads_labels(spark: SparkSession, ctx: Context, source: str) -> bool:
    """Whether a run from ``source`` has a label query: files always; Kafka when the labels topic
    is set and exists (a topic created under a subscribed query fails it), else it says why not."""
    from fraudlake.output import note

    if source == "files":
        return True
    topic = ctx.settings.ingest.kafka.labels_topic
    if source != "kafka" or topic is None:
        return False
    if topic in kafka_topics(spark, ctx):
        return True
    note(
        f"no topic {topic} at {ctx.settings.ingest.kafka.bootstrap_servers}: no labels are read this run "
        "(fraudlake produce creates it; or set ingest.kafka.labels_topic: null)"
    )
    return False


def start_label_ingest(
    spark: SparkSession, ctx: Context, source: str, available_now: bool = False
) -> tuple[StreamingQuery, LabelWriter]:
    """Start the query that routes ``source``'s label records (see the module's docstring)."""
    name = checkpoint_name(source)
    checkpoint = ctx.paths.checkpoint(name)
    writer = LabelWriter(ctx, checkpoint)
    stream = (
        label_stream(spark, ctx, source)
        .writeStream.queryName(name)
        .foreachBatch(writer)
        .option("checkpointLocation", checkpoint)
    )
    return triggered(stream, ctx.settings.ingest.labels_trigger_seconds, available_now).start(), writer
