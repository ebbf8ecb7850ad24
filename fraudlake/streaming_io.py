"""Exactly-once writes from ``foreachBatch``: Delta's idempotent (txnAppId, txnVersion) appends and DML,
each commit naming its writer and batch in ``userMetadata``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming import DataStreamWriter


def writer_app_id(checkpoint: str, query: str) -> str:
    """A stable id for one checkpoint's writes, kept beside it.

    Delta skips an append whose (app id, batch id) it has committed, which makes a
    replayed micro-batch harmless. A new checkpoint starts batch ids at 0 again, so
    it must get a new app id: the id lives in a file that goes with the checkpoint.
    """
    marker = Path(checkpoint) / "fraudlake_writer_id"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"fraudlake-{query}-{uuid.uuid4()}")
    return marker.read_text().strip()


def triggered(writer: DataStreamWriter, seconds: float, available_now: bool = False) -> DataStreamWriter:
    """``writer`` (a ``DataStreamWriter``) with its trigger: everything available, then stop
    (a scheduled job); a micro-batch every ``seconds``; or, at 0, one batch after another."""
    if available_now:
        return writer.trigger(availableNow=True)
    if seconds > 0:
        return writer.trigger(processingTime=f"{seconds} seconds")
    return writer


def append_once(frame: DataFrame, table: str, app_id: str, batch_id: int) -> None:
    """Append ``frame`` to a Delta table unless this (app id, batch id) already committed there."""
    (
        frame.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
        .option("userMetadata", lineage_metadata(app_id, batch_id))
        .saveAsTable(table)
    )


# Delta's idempotent DML: MERGE, UPDATE and DELETE read the transaction id from these session confs.
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"
# A commit's free-text metadata (``userMetadata`` in ``DESCRIBE HISTORY``), for DML that has no write option.
USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
LINEAGE_PREFIX = "fraudlake-writer "


def lineage_metadata(app_id: str, batch_id: int) -> str:
    """The ``userMetadata`` of an idempotent commit: which writer and which of its batches.

    ``DESCRIBE HISTORY`` shows it wherever the table lives (a folder, object storage, Unity
    Catalog), so audits name a commit's writer without reading the log's files.

    >>> lineage_metadata("fraudlake-silver-1f2e", 7)
    'fraudlake-writer {"app_id": "fraudlake-silver-1f2e", "batch_id": 7}'
    >>> parse_lineage(lineage_metadata("fraudlake-silver-1f2e", 7))
    ('fraudlake-silver-1f2e', 7)
    """
    return LINEAGE_PREFIX + json.dumps({"app_id": app_id, "batch_id": int(batch_id)})


def parse_lineage(user_metadata: str | None) -> tuple[str, int] | None:
    """``(writer id, batch id)`` from a commit's ``userMetadata``, or None if fraudlake did not write it.

    >>> parse_lineage("nightly fix by ops") is None
    True
    """
    if not user_metadata or not user_metadata.startswith(LINEAGE_PREFIX):
        return None
    try:
        fields = json.loads(user_metadata[len(LINEAGE_PREFIX) :])
        return str(fields["app_id"]), int(fields["batch_id"])
    except (ValueError, KeyError, TypeError):
        return None


@contextmanager
def committed_once(session: SparkSession, app_id: str, batch_id: int) -> Iterator[None]:
    """Within this block a Delta MERGE/UPDATE/DELETE commits unless (app id, batch id) already has.

    Pass the micro-batch's own session (``batch.sparkSession`` in ``foreachBatch``): a
    streaming query runs on a clone of the session, so the confs set here do not leak
    into the other queries' writes running at the same time.
    """
    conf = session.conf
    conf.set(TXN_APP_ID, app_id)
    conf.set(TXN_VERSION, str(batch_id))
    conf.set(USER_METADATA, lineage_metadata(app_id, batch_id))
    try:
        yield
    finally:
        conf.unset(TXN_APP_ID)
        conf.unset(TXN_VERSION)
        conf.unset(USER_METADATA)
