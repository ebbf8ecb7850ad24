"""Exactly-once writes from ``foreachBatch``: each commit names its writer and batch in
``userMetadata``, and a batch that may be a replay is first looked for among the table's
commits; DML uses Delta's idempotent (txnAppId, txnVersion) session confs.

Spark re-runs at most one micro-batch after a restart: the last one it planned, whose commit
it had not recorded. So only a writer's first write to a table after it starts can repeat a
commit; later ones cannot, and go straight to the table. Delta's own check of ``txnAppId``
on an append reconstructs the table's state: over 1 s per append on 2 cores (1.60 s against
0.36 s for the same append without it, benchmarks/results/delta_append_cost.json), paid by
every micro-batch of every query. Looking for the batch in the latest commits' metadata
once per start costs a fraction of that.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
    from pyspark.sql.streaming import DataStreamWriter

T = TypeVar("T")


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


class ReplayCheck:
    """The tables a writer has checked for a replayed batch since it started (see the module's
    docstring): ``needed(table)`` is true for the first write to each, false after."""

    def __init__(self) -> None:
        self._checked: set[str] = set()

    def needed(self, table: str) -> bool:
        if table in self._checked:
            return False
        self._checked.add(table)
        return True


# Commits read per look at a table's history when checking for a replayed batch.
HISTORY_PAGE = 100


def _newest_commit(session: SparkSession, table: str, app_id: str) -> tuple[int, int] | None:
    """``(table version, batch id)`` of ``app_id``'s newest commit to ``table``, from its
    ``userMetadata``: the latest commits first, the whole history if they hold none of the
    writer's; commits older than the table's log retention are gone from it. None if none."""
    from delta.tables import DeltaTable

    delta = DeltaTable.forName(session, table)
    for limit in (HISTORY_PAGE, None):
        rows = (delta.history(limit) if limit else delta.history()).select("version", "userMetadata").collect()
        for row in rows:  # newest first
            lineage = parse_lineage(row[1])
            if lineage is not None and lineage[0] == app_id:
                return int(row[0]), lineage[1]
        if limit is not None and len(rows) < limit:
            return None
    return None


def batch_committed(session: SparkSession, table: str, app_id: str, batch_id: int) -> bool:
    """Whether ``app_id`` has committed ``batch_id`` (or a later batch) to ``table``."""
    newest = _newest_commit(session, table, app_id)
    return newest is not None and newest[1] >= batch_id


def as_before_batch(session: SparkSession, table: str, app_id: str, batch_id: int) -> DataFrame:
    """``table`` as it was before ``app_id`` committed ``batch_id`` to it: the latest version, or the
    one before that batch's commit when a crash left it committed and the batch runs again.

    A writer that keeps state in memory and rebuilds it from its tables when it starts reads
    them so: a replayed batch then adds its rows to the state the first attempt added them
    to, once (and its writes are skipped, see :func:`append_once`).
    """
    newest = _newest_commit(session, table, app_id)
    if newest is not None and newest[1] >= batch_id:
        return session.read.option("versionAsOf", newest[0] - 1).table(table)
    return session.table(table)


def append_once(frame: DataFrame, table: str, app_id: str, batch_id: int, verify: bool = True) -> bool:
    """Append ``frame`` to a Delta table as batch ``batch_id`` of ``app_id``.

    ``verify`` (a writer's first write to the table since it started: :class:`ReplayCheck`)
    skips a batch that already committed, found by its lineage or by Delta's own
    ``txnAppId``/``txnVersion`` (commits of Delta's streaming sink carry no lineage).
    Returns False when the lineage showed the batch committed (nothing ran); Delta skips
    its own quietly, so True means the write ran, not that it added rows.
    """
    return _save_once(frame.write.mode("append"), frame.sparkSession, table, app_id, batch_id, verify)


def overwrite_once(
    frame: DataFrame, table: str, replace_where: str, app_id: str, batch_id: int, verify: bool = True
) -> bool:
    """Replace the rows of ``table`` matching ``replace_where`` with ``frame``, as :func:`append_once` appends."""
    writer = frame.write.mode("overwrite").option("replaceWhere", replace_where)
    return _save_once(writer, frame.sparkSession, table, app_id, batch_id, verify)


def _save_once(
    writer: DataFrameWriter, session: SparkSession, table: str, app_id: str, batch_id: int, verify: bool
) -> bool:
    writer = writer.format("delta").option("userMetadata", lineage_metadata(app_id, batch_id))
    if verify:
        if batch_committed(session, table, app_id, batch_id):
            return False
        writer = writer.option("txnAppId", app_id).option("txnVersion", batch_id)
    retry_on_conflict(lambda: writer.saveAsTable(table))
    return True


def retry_on_conflict(action: Callable[[], T]) -> T:
    """``action()``, tried again when another commit won the race (:func:`is_write_conflict`):
    a Delta transaction that conflicted committed nothing, so trying it again is safe."""
    for attempt in range(1, CONFLICT_ATTEMPTS):
        try:
            return action()
        except Exception as error:
            if not is_write_conflict(error):
                raise
            time.sleep(CONFLICT_BACKOFF_SECONDS * attempt)
    return action()  # the last attempt: its conflict, if any, is the caller's


# A write that lost a race with another commit (an OPTIMIZE, a re-score) committed nothing:
# it is tried again, this many times in all, after a pause that grows by this much.
CONFLICT_ATTEMPTS = 4
CONFLICT_BACKOFF_SECONDS = 0.5


def is_write_conflict(error: BaseException) -> bool:
    """Whether ``error`` is Delta's optimistic concurrency refusing a commit (``Concurrent…Exception``,
    ``DELTA_CONCURRENT_…``): the transaction committed nothing and may be tried again.

    >>> is_write_conflict(RuntimeError("[DELTA_CONCURRENT_DELETE_READ] ConcurrentDeleteReadException: ..."))
    True
    """
    text = f"{type(error).__name__} {str(error)[:2000]}"
    return (
        "DELTA_CONCURRENT_" in text
        or "ConcurrentDeleteReadException" in text
        or ("Concurrent" in text and "Exception" in text and "io.delta" in text)
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
