"""``--source kafka`` against a real broker (KRaft, started by ``fraudlake.broker`` as
``fraudlake kafka start`` does): every record produced lands in bronze once, traceable to its
topic, partition and offset, across a ``kill -9``; a record that does not parse is quarantined
with its reason. The same for label records on the labels topic (``bronze.labels`` and
``bronze.label_quarantine``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from fraudlake import broker as kafka_broker
from fraudlake.bronze.ingest import produce_batch, produce_raw
from tests.conftest import fraudlake, free_port, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]

MALFORMED = ["not json at all", '{"transaction_id": "tx-cut", "amount": 1', ""]
LABEL_TIME = "2026-01-02T00:00:00Z"
# Label records that are not a usable label, by the reason they are quarantined for; and a
# label sent twice (a producer's retry): the second is a repeat.
MALFORMED_LABELS = {
    "not a label": "malformed_record",
    f'{{"transaction_id": "tx-x", "label_is_fraud": 2, "label_time": "{LABEL_TIME}"}}': "invalid_label",
    f'{{"label_is_fraud": 1, "label_time": "{LABEL_TIME}"}}': "missing_transaction_id",
    '{"transaction_id": "tx-y", "label_is_fraud": 1}': "missing_label_time",
}
REPEATED_LABEL = (
    f'{{"transaction_id": "tx-twice", "label_is_fraud": 1, "label_time": "{LABEL_TIME}", "label_source": "chargeback"}}'
)


def records_once(spark, warehouse: Path, topic: str, *tables: str) -> int:
    """The rows of ``topic`` in ``tables`` (default bronze's transactions), asserting that each names
    one record of it and that every partition's offsets run from 0 without a gap or a repeat:
    nothing lost, nothing twice. Returns how many."""
    frames = [
        spark.read.format("delta").load(str(warehouse / table)).select("_source")
        for table in tables or ("bronze/transactions",)
    ]
    bronze = frames[0]
    for frame in frames[1:]:
        bronze = bronze.unionByName(frame)
    where = bronze.select(F.split("_source", ":").alias("s")).select(
        F.col("s")[0].alias("kind"),
        F.col("s")[1].alias("topic"),
        F.col("s")[2].cast("int").alias("partition"),
        F.col("s")[3].cast("long").alias("offset"),
    )
    assert {(r.kind, r.topic) for r in where.select("kind", "topic").distinct().collect()} == {("kafka", topic)}
    per_partition = where.groupBy("partition").agg(
        F.count("*").alias("n"),
        F.countDistinct("offset").alias("distinct"),
        F.min("offset").alias("low"),
        F.max("offset").alias("high"),
    )
    for row in per_partition.collect():
        assert row.n == row.distinct == row.high - row.low + 1 and row.low == 0, row
    return bronze.count()


@pytest.fixture(scope="module")
def bootstrap(tmp_path_factory):
    """A broker of its own for the module, stopped after it."""
    broker = kafka_broker.Broker(tmp_path_factory.mktemp("broker") / "kafka", "127.0.0.1", free_port())
    kafka_broker.start(broker)
    yield broker.address
    kafka_broker.stop(broker)


def test_every_record_lands_once_across_a_kill_and_malformed_ones_in_quarantine(
    spark, shared_champion, capsys, tmp_path, bootstrap
):
    """``kill -9`` of a run reading the topic 200 records a micro-batch; the restart resumes from
    the offsets in its checkpoint, and the batch the kill interrupted lands once. Records that
    are not transactions land in bronze as they came and in quarantine with their reason.
    The simulator's labels of the fraud rows, sent to the labels topic, land in bronze.labels
    once; label records that are not labels, or repeat one, in bronze.label_quarantine."""
    home = tmp_path / "home"
    kafka = {"bootstrap_servers": bootstrap, "topic": "tx-killed", "labels_topic": "labels-killed"}
    ctx = make_context(home, ingest={"kafka": kafka})
    produced, labelled = produce_batch(spark, ctx, 3_000)
    produce_raw(spark, ctx, MALFORMED)
    produce_raw(spark, ctx, [*MALFORMED_LABELS, REPEATED_LABEL, REPEATED_LABEL], topic=kafka["labels_topic"])
    settings = [f"--set=ingest.kafka.{key}={value}" for key, value in kafka.items()]
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    run = ["run", "--source", "kafka", *settings, *registry]

    victim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fraudlake.cli",
            "--home",
            str(home),
            *run,
            "--set=ingest.kafka.max_offsets_per_trigger=200",
        ],
        cwd=tmp_path,
        env={key: value for key, value in os.environ.items() if key != "FRAUDLAKE_CONF"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bronze = home / "warehouse" / "bronze" / "transactions"
    try:
        deadline, landed = time.time() + 240, 0
        while landed < 400 and time.time() < deadline:
            time.sleep(0.5)
            if any((bronze / "_delta_log").glob("*.json")):
                landed = spark.read.format("delta").load(str(bronze)).count()
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
    assert 400 <= landed < produced, f"killed with {landed} of {produced} records in bronze"

    code, _, err = fraudlake(capsys, home, *run, "--duration", "5")
    assert code == 0, err[-3000:]
    warehouse = home / "warehouse"
    assert records_once(spark, warehouse, kafka["topic"]) == produced + len(MALFORMED)
    rows = spark.read.format("delta").load(str(bronze))
    assert sorted(r._raw for r in rows.where(F.col("transaction_id").isNull()).collect()) == sorted(MALFORMED)
    quarantine = spark.read.format("delta").load(str(warehouse / "silver" / "quarantine"))
    reasons = {r._raw: r.quarantine_reason for r in quarantine.collect()}
    assert set(reasons) == set(MALFORMED) and all(reasons.values()), reasons
    code, out, err = fraudlake(capsys, home, "check", "--full", *settings, *registry)
    assert code == 0 and f"kafka: {produced + len(MALFORMED):,} = {produced:,} + {len(MALFORMED)}" in out, out + err

    label_records = labelled + len(MALFORMED_LABELS) + 2
    labels_tables = ("bronze/labels", "bronze/label_quarantine")
    assert records_once(spark, warehouse, kafka["labels_topic"], *labels_tables) == label_records
    labels = spark.read.format("delta").load(str(warehouse / "bronze" / "labels"))
    fraud = rows.where(F.col("label_is_fraud") == 1).select("transaction_id")
    assert labelled > 10 and fraud.count() == labelled
    assert {r.transaction_id for r in labels.collect()} == {r.transaction_id for r in fraud.collect()} | {"tx-twice"}
    assert labels.where("transaction_id = 'tx-twice'").first().label_source == "chargeback"
    label_quarantine = spark.read.format("delta").load(str(warehouse / "bronze" / "label_quarantine"))
    reasons = sorted((r._raw, r.quarantine_reason) for r in label_quarantine.collect())
    assert reasons == sorted([*MALFORMED_LABELS.items(), (REPEATED_LABEL, "duplicate_label")])


def test_a_broker_that_is_not_there_is_named_in_one_line(spark, tmp_path):
    """The topics are looked up before any query starts: no broker at the address is one clear error."""
    from fraudlake.bronze.kafka import kafka_topics
    from fraudlake.errors import FraudlakeError

    address = f"127.0.0.1:{free_port()}"
    kafka = {
        "bootstrap_servers": address,
        "options": {"kafka.default.api.timeout.ms": "2000", "kafka.request.timeout.ms": "1000"},
    }
    ctx = make_context(tmp_path / "home", ingest={"kafka": kafka})
    with pytest.raises(FraudlakeError, match=f"cannot reach Kafka at {address}: .*Timeout") as raised:
        kafka_topics(spark, ctx, create=("fraudlake.transactions",))
    assert "\n" not in str(raised.value)
