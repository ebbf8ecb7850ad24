"""``--source kafka`` against a real broker (KRaft, started by ``fraudlake.broker`` as
``fraudlake kafka start`` does): every record produced lands in bronze once, traceable to its
topic, partition and offset; a record that does not parse is quarantined with its reason."""

from __future__ import annotations

import socket

import pytest
from pyspark.sql import functions as F

from fraudlake import broker as kafka_broker
from fraudlake.bronze.ingest import produce_batch, produce_raw
from tests.conftest import fraudlake, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]

MALFORMED = ["not json at all", '{"transaction_id": "tx-cut", "amount": 1', ""]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    """A broker of its own for the module, stopped after it."""
    broker = kafka_broker.Broker(tmp_path_factory.mktemp("broker") / "kafka", "127.0.0.1", _free_port())
    kafka_broker.start(broker)
    yield broker.address
    kafka_broker.stop(broker)


def test_every_record_lands_in_bronze_once_and_malformed_ones_in_quarantine(
    spark, shared_champion, capsys, tmp_path, bootstrap
):
    home = tmp_path / "home"
    kafka = {"bootstrap_servers": bootstrap, "topic": "tx-every-record"}
    ctx = make_context(home, ingest={"kafka": kafka})
    produced = produce_batch(spark, ctx, 400)
    produce_raw(spark, ctx, MALFORMED)

    settings = [f"--set=ingest.kafka.{key}={value}" for key, value in kafka.items()]
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    code, _, err = fraudlake(capsys, home, "run", "--source", "kafka", "--duration", "6", *settings, *registry)
    assert code == 0, err[-3000:]

    warehouse = home / "warehouse"
    bronze = spark.read.format("delta").load(str(warehouse / "bronze" / "transactions"))
    assert bronze.count() == produced + len(MALFORMED)
    # Each row names its record (kafka:<topic>:<partition>:<offset>:<timestamp ms>), each record once,
    # and a partition's offsets have no gap: nothing lost, nothing twice.
    where = bronze.select(F.split("_source", ":").alias("s")).select(
        F.col("s")[0].alias("kind"),
        F.col("s")[1].alias("topic"),
        F.col("s")[2].cast("int").alias("partition"),
        F.col("s")[3].cast("long").alias("offset"),
    )
    assert {(r.kind, r.topic) for r in where.select("kind", "topic").distinct().collect()} == {
        ("kafka", "tx-every-record")
    }
    per_partition = where.groupBy("partition").agg(
        F.count("*").alias("n"),
        F.countDistinct("offset").alias("distinct"),
        F.min("offset").alias("low"),
        F.max("offset").alias("high"),
    )
    for row in per_partition.collect():
        assert row.n == row.distinct == row.high - row.low + 1 and row.low == 0, row
    assert sorted(r._raw for r in bronze.where(F.col("transaction_id").isNull()).collect()) == sorted(MALFORMED)

    quarantine = spark.read.format("delta").load(str(warehouse / "silver" / "quarantine"))
    reasons = {r._raw: r.quarantine_reason for r in quarantine.collect()}
    assert set(reasons) == set(MALFORMED) and all(reasons.values()), reasons
    code, out, err = fraudlake(capsys, home, "check", "--full", *settings, *registry)
    assert code == 0 and "kafka: 403 = 400 + 3" in out, out + err
