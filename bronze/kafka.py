"""Kafka for bronze: the connector's reader, where a record came from, and the topics (Kafka's
admin client, the one Spark's Kafka connector brings: no client library of fraudlake's own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fraudlake.errors import FraudlakeError
from fraudlake.settings import Context

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession


def kafka_lineage() -> Column:
    """Where a Kafka record came from, for ``_source``: ``kafka:<topic>:<partition>:<offset>:<timestamp ms>``
    (topic names hold no ``:``), so a row leads back to its record."""
    from pyspark.sql import functions as F

    return F.concat_ws(":", F.lit("kafka"), "topic", "partition", "offset", F.unix_millis("timestamp").cast("string"))


def kafka_records_stream(spark: SparkSession, ctx: Context, topic: str, max_offsets: int | None = None) -> DataFrame:
    """The records of ``topic`` at ``ingest.kafka``'s servers, as Spark's Kafka connector reads them."""
    kafka = ctx.settings.ingest.kafka
    reader = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", kafka.bootstrap_servers)
        .option("subscribe", topic)
        .option("startingOffsets", kafka.starting_offsets)
        # Records the broker deleted before bronze read them are a loss to be told, not skipped.
        .option("failOnDataLoss", "true")
    )
    if max_offsets is not None:
        reader = reader.option("maxOffsetsPerTrigger", max_offsets)
    for key, value in kafka.options.items():
        reader = reader.option(key, value)
    return reader.load()


def _admin_properties(spark: SparkSession, ctx: Context):
    """The consumer settings of ``ingest.kafka`` as a ``java.util.Properties`` for Kafka's admin client."""
    kafka = ctx.settings.ingest.kafka
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a classic session: the driver's JVM holds the Kafka client
    properties = jvm.java.util.Properties()
    properties.put("bootstrap.servers", kafka.bootstrap_servers)
    properties.put("default.api.timeout.ms", "30000")
    for key, value in kafka.options.items():
        if key.startswith("kafka."):  # the connector's own options are not the client's
            properties.put(key.removeprefix("kafka."), value)
    return properties


def kafka_topics(spark: SparkSession, ctx: Context, create: tuple[str, ...] = ()) -> set[str]:
    """The topics at ``ingest.kafka.bootstrap_servers``, after creating those of ``create`` that are
    missing (the broker's default partitions and replication), with the Kafka client that Spark's
    connector brings. A topic that appears while a query is subscribed to it fails the query
    (Spark reads a partition whose leader is not elected yet): topics exist before queries start."""
    from py4j.protocol import Py4JJavaError

    jvm = spark.sparkContext._jvm
    assert jvm is not None
    try:
        admin = jvm.org.apache.kafka.clients.admin.Admin.create(_admin_properties(spark, ctx))
        try:
            names = set(admin.listTopics().names().get())
            missing = [topic for topic in create if topic not in names]
            if missing:
                _create_topics(jvm, admin, missing)
            return names | set(missing)
        finally:
            admin.close()
    except Py4JJavaError as error:  # no broker there, a setting it refuses: Kafka's own words, in one line
        servers = ctx.settings.ingest.kafka.bootstrap_servers
        cause = error.java_exception
        while cause.getCause() is not None:
            cause = cause.getCause()
        raise FraudlakeError(f"cannot reach Kafka at {servers}: {cause.toString()}") from None


def _create_topics(jvm, admin, topics: list[str]) -> None:
    """Create ``topics`` with the broker's default partitions and replication; one that another
    producer created meanwhile exists, as wanted."""
    new = jvm.java.util.ArrayList()
    empty = jvm.java.util.Optional.empty()
    for topic in topics:
        new.add(jvm.org.apache.kafka.clients.admin.NewTopic(topic, empty, empty))
    try:
        admin.createTopics(new).all().get()
    except Exception as error:
        if "TopicExistsException" not in str(error):
            raise


def producer_topics(ctx: Context) -> tuple[str, ...]:
    """The topics ``fraudlake produce`` writes: the transactions' and, when set, the labels'."""
    kafka = ctx.settings.ingest.kafka
    return (kafka.topic,) if kafka.labels_topic is None else (kafka.topic, kafka.labels_topic)
