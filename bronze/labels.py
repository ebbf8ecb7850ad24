"""The simulator's fraud labels → ``bronze.labels``, arriving after the purchase as real ones do.

The simulator knows at once which of its transactions are fraud (``label_is_fraud`` rides
along in bronze for the benchmarks and the audits); a bank learns it days later, from a
chargeback. :class:`SimulatedLabels` plays that part: each fraud row of the rate source
gets a label whose ``label_time`` is its ``event_time`` + ``simulator.label_delay_seconds``,
appended to ``bronze.labels`` by the first ingest micro-batch whose newest event time has
reached it. The stream's own clock, not the host's, says when a label has arrived: on the
simulated clock (``simulator.stream_start_time``) labels arrive as the replay goes.

Labels that are due wait in the driver. At a start they are found again in the tables: the
simulator's fraud rows in bronze that have no label yet. A crash therefore loses none and a
restart writes none twice (a label append is one Delta commit: it landed, or it is still due).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from fraudlake.settings import Context
from fraudlake.simulator import SOURCE_RATE
from fraudlake.tables import BRONZE_LABELS, BRONZE_TRANSACTIONS, table_name

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

LABEL_SOURCE = "simulator"
LABEL_COLUMNS = ("transaction_id", "label_is_fraud", "label_time")
# What the feed reads of a batch of bronze rows.
FEED_COLUMNS = ("transaction_id", "event_time", "label_is_fraud", "_source")
MICROS = 1_000_000


class SimulatedLabels:
    """Labels of the simulator's fraud rows, each appended once its ``label_time`` has come."""

    def __init__(self, ctx: Context) -> None:
        self.table = table_name(ctx, BRONZE_LABELS)
        self.transactions = table_name(ctx, BRONZE_TRANSACTIONS)
        self.delay_micros = ctx.settings.simulator.label_delay_seconds * MICROS
        self.pending: pd.DataFrame | None = None  # transaction_id, label_time (epoch micros)

    def arrive(self, session: SparkSession, rows: pa.Table) -> pd.DataFrame:
        """:meth:`due`, then :meth:`append`: the labels that arrived with this batch, in bronze."""
        arrived = self.due(session, rows)
        self.append(session, arrived)
        return arrived

    def due(self, session: SparkSession, rows: pa.Table) -> pd.DataFrame:
        """Take note of a batch of bronze rows (``transaction_id``, ``event_time``, ``label_is_fraud``,
        ``_source``): its fraud rows are labelled later. Returns the labels due by its newest event
        time (:data:`LABEL_COLUMNS`), which the caller appends (:meth:`append`)."""
        import pyarrow.compute as pc

        first = self.pending is None
        if self.pending is None:
            self.pending = self._unlabelled(session)
        fraud = rows.filter(
            pc.and_(
                pc.and_(pc.equal(rows.column("label_is_fraud"), 1), pc.equal(rows.column("_source"), SOURCE_RATE)),
                pc.is_valid(rows.column("event_time")),
            )
        )
        if fraud.num_rows and first:  # a replayed batch: its rows may be in bronze and labelled already
            fraud = fraud.filter(
                pc.invert(pc.is_in(fraud.column("transaction_id"), value_set=self._labelled(session, fraud)))
            )
        if fraud.num_rows:
            new = pd.DataFrame(
                {
                    "transaction_id": fraud.column("transaction_id").to_pandas(),
                    "label_time": fraud.column("event_time").cast("int64").to_numpy() + self.delay_micros,
                }
            )
            self.pending = pd.concat([self.pending, new], ignore_index=True).drop_duplicates("transaction_id")
        newest = pc.max(rows.column("event_time").cast("int64")).as_py()
        if newest is None or self.pending.empty:
            return _labels(self.pending.iloc[:0])
        due = self.pending["label_time"] <= newest
        arrived = _labels(self.pending[due])
        self.pending = self.pending[~due].reset_index(drop=True)
        return arrived

    def append(self, session: SparkSession, arrived: pd.DataFrame) -> None:
        """Append labels to ``bronze.labels`` (none: no commit)."""
        from pyspark.sql import functions as F

        if not len(arrived):
            return

        # Epoch microseconds into Spark: no time zone on the way.
        micros = arrived["label_time"].to_numpy(dtype="datetime64[us]").astype("int64")
        frame = session.createDataFrame(arrived.assign(label_time=micros))
        frame.select(
            "transaction_id",
            F.col("label_is_fraud").cast("int"),
            F.timestamp_micros("label_time").alias("label_time"),
            F.lit(LABEL_SOURCE).alias("label_source"),
            F.current_timestamp().alias("_ingest_time"),
            F.lit(SOURCE_RATE).alias("_source"),
        ).write.format("delta").mode("append").saveAsTable(self.table)

    def _labelled(self, session: SparkSession, fraud: pa.Table) -> pa.Array:
        """The ids among ``fraud``'s that ``bronze.labels`` holds."""
        from pyspark.sql import functions as F

        ids = fraud.column("transaction_id").to_pylist()
        found = session.table(self.table).where(F.col("transaction_id").isin(ids)).select("transaction_id")
        return found.toArrow().column("transaction_id").combine_chunks()

    def _unlabelled(self, session: SparkSession) -> pd.DataFrame:
        """The simulator's fraud rows in bronze that have no label yet, with the time each is due."""
        from pyspark.sql import functions as F

        fraud = session.table(self.transactions).where(
            (F.col("label_is_fraud") == 1) & (F.col("_source") == SOURCE_RATE) & F.col("event_time").isNotNull()
        )
        labelled = session.table(self.table).select("transaction_id")
        rows: pd.DataFrame = (
            fraud.join(labelled, "transaction_id", "left_anti")
            .select("transaction_id", (F.unix_micros("event_time") + F.lit(self.delay_micros)).alias("label_time"))
            .toPandas()
        )
        return rows.astype({"label_time": "int64"}).drop_duplicates("transaction_id").reset_index(drop=True)


def _labels(due: pd.DataFrame) -> pd.DataFrame:
    """Pending rows as labels: fraud, known at ``label_time`` (UTC)."""
    return pd.DataFrame(
        {
            "transaction_id": due["transaction_id"].to_numpy(),
            "label_is_fraud": 1,
            "label_time": pd.to_datetime(due["label_time"].to_numpy(dtype="int64"), unit="us", utc=True),
        }
    )
