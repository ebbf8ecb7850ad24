"""Exactly-once writes from ``foreachBatch``: Delta's idempotent (txnAppId, txnVersion) appends and DML."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path


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


def triggered(writer, seconds: float, available_now: bool = False):
    """``writer`` (a ``DataStreamWriter``) with its trigger: everything available, then stop
    (a scheduled job); a micro-batch every ``seconds``; or, at 0, one batch after another."""
    if available_now:
        return writer.trigger(availableNow=True)
    if seconds > 0:
        return writer.trigger(processingTime=f"{seconds} seconds")
    return writer


def append_once(frame, table: str, app_id: str, batch_id: int) -> None:
    """Append ``frame`` to a Delta table unless this (app id, batch id) already committed there."""
    (
        frame.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
        .saveAsTable(table)
    )


# Delta's idempotent DML: MERGE, UPDATE and DELETE read the transaction id from these session confs.
TXN_APP_ID = "spark.databricks.delta.write.txnAppId"
TXN_VERSION = "spark.databricks.delta.write.txnVersion"


@contextmanager
def committed_once(session, app_id: str, batch_id: int):
    """Within this block a Delta MERGE/UPDATE/DELETE commits unless (app id, batch id) already has.

    Pass the micro-batch's own session (``batch.sparkSession`` in ``foreachBatch``): a
    streaming query runs on a clone of the session, so the confs set here do not leak
    into the other queries' writes running at the same time.
    """
    conf = session.conf
    conf.set(TXN_APP_ID, app_id)
    conf.set(TXN_VERSION, str(batch_id))
    try:
        yield
    finally:
        conf.unset(TXN_APP_ID)
        conf.unset(TXN_VERSION)
