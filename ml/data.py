"""Training and evaluation data: labelled transactions → features → pandas, and the split.

Input files are read with Spark and conformed to the bronze schema, so a file made
by ``fraudlake generate``, an export of ``bronze.transactions``, a pandas ``to_parquet``
and a hand-made CSV all go through :func:`fraudlake.ml.features.add_features` like the
stream does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fraudlake.errors import FraudlakeError, first_line
from fraudlake.ml.behaviour import behaviour_features
from fraudlake.ml.features import TRANSACTION_INPUT_COLUMNS, add_features
from fraudlake.simulator import SOURCE_RATE
from fraudlake.tables import BRONZE_COLUMNS
from fraudlake.timeutil import iso_utc

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import DataType

LABEL = "label_is_fraud"
SCENARIO = "label_scenario"

# Bronze column → Spark type, in bronze order.
BRONZE_TYPES = dict(line.split() for line in (c.strip() for c in BRONZE_COLUMNS.strip().split(",\n")))
# Without these a row cannot be featurised (event_time, amount) or learned from (the label).
REQUIRED_COLUMNS = ("event_time", "amount", LABEL)
# Carried beside the features so metrics can be broken down and rows traced back.
KEY_COLUMNS = ("transaction_id", "event_time", LABEL, SCENARIO)
# When a row's label became known (optional in an input; else event_time + ml.label_delay_seconds).
LABEL_TIME = "label_time"
# What the behavioural features read beyond the key and the transaction's own inputs.
HISTORY_COLUMNS = ("user_id", "card_id", "merchant_id", "amount")

INPUT_FORMATS = ("delta", "parquet", "csv", "json")
SPLITS = ("random", "time")

# What each bronze type can be read from, said in an error when a column is something else.
EXPECTED_INPUT = {
    "TIMESTAMP": "a timestamp, a date or ISO-8601 text such as 2026-01-02T10:00:00Z",
    "DOUBLE": "a number or numeric text",
    "INT": "0/1, a boolean or a number",
    "STRING": "text or a single value",
}
NANOS_AS_LONG = "spark.sql.legacy.parquet.nanosAsLong"
COERCE_HINT = "write microseconds instead, e.g. pandas to_parquet(..., coerce_timestamps='us')"


def input_format(path: str) -> str:
    """The file format of a path that is not a Delta table: by suffix, of the path or of the files in the folder."""
    location = Path(path)
    names = [location.name]
    if location.is_dir():
        names = [p.name for p in sorted(location.iterdir()) if p.is_file() and not p.name.startswith(("_", "."))]
    for name in names:
        suffix = name.lower().rsplit(".", 1)[-1] if "." in name else ""
        if suffix in ("csv", "json", "jsonl"):
            return "json" if suffix == "jsonl" else suffix
        if suffix == "parquet":
            return "parquet"
    return "parquet"


def _is_delta_table(spark: SparkSession, path: str) -> bool:
    """Asked of Delta itself, so it holds for a folder, object storage or a volume alike."""
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def read_transactions(spark: SparkSession, path: str) -> DataFrame:
    """Read a Delta, Parquet, CSV or JSON-lines file (or folder) of transactions, as stored.

    CSV columns are read as text and typed by :func:`conform_to_bronze`, like every other format.
    Parquet timestamps in nanoseconds (pandas' and pyarrow's default), which Spark refuses,
    become Spark timestamps (microseconds); a tz-aware one is its UTC instant, a naive one
    is read as UTC. For those, the session's ``spark.sql.legacy.parquet.nanosAsLong`` is
    switched on and left on: Spark reads the files again each time the frame is computed,
    and the setting changes nothing for files it could read without it.

    >>> transactions = read_transactions(spark, "history.parquet")  # e.g. pandas' df.to_parquet
    """
    from pyspark.errors import PySparkException

    if "://" not in path and not Path(path).exists():
        raise FraudlakeError(f"input {path} does not exist")
    fmt = "delta" if _is_delta_table(spark, path) else input_format(path)
    nanos, nested_nanos = _nanosecond_timestamps(path) if fmt == "parquet" else (set(), False)
    if nanos or nested_nanos:
        try:
            spark.conf.set(NANOS_AS_LONG, "true")
        except PySparkException as error:  # e.g. a runtime that does not let a job change it
            column = min(nanos) if nanos else "a nested column"
            raise FraudlakeError(
                f"{path}: column {column} holds nanosecond timestamps, which this Spark cannot read "
                f"({first_line(error)}); {COERCE_HINT}"
            ) from None
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true").option("inferSchema", "false")
    try:
        stored = reader.load(path)
    except PySparkException as error:
        hint = f"; {COERCE_HINT}" if "TIMESTAMP(NANOS" in str(error) else ""
        raise FraudlakeError(f"cannot read {path} as {fmt}: {first_line(error)}{hint}") from None
    return _nanos_to_timestamps(stored, nanos)


def _nanosecond_timestamps(path: str) -> tuple[set[str], bool]:
    """The Parquet files' top-level columns stored as nanosecond timestamps, and whether a nested one is.

    Read from the footers with pyarrow (the Parquet types, not the Arrow schema pandas
    stores beside them); a location pyarrow cannot open counts as having none.
    """
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    top_level, nested = set(), False
    try:
        if "://" in path:
            filesystem, root = pafs.FileSystem.from_uri(path)
        else:
            filesystem, root = pafs.LocalFileSystem(), str(Path(path).resolve())
        files = [root]
        if filesystem.get_file_info(root).type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
            files = [f.path for f in found if f.type == pafs.FileType.File and not _hidden(f.path[len(root) :])]
        for file in files:
            with filesystem.open_input_file(file) as handle:
                schema = pq.ParquetFile(handle).schema
            for column in (schema.column(i) for i in range(len(schema))):
                logical = column.logical_type
                if logical.type != "TIMESTAMP" or json.loads(logical.to_json()).get("timeUnit") != "nanoseconds":
                    continue
                if column.path == column.name:  # a leaf at the top: not inside a struct, list or map
                    top_level.add(column.name)
                else:
                    nested = True
    except (OSError, pa.ArrowException):
        return set(), False
    return top_level, nested


def _hidden(relative: str) -> bool:
    """Spark skips files and folders whose name starts with ``_`` or ``.`` (``_SUCCESS``, ``.crc``)."""
    return any(part.startswith(("_", ".")) for part in relative.split("/") if part)


def _nanos_to_timestamps(df: DataFrame, names: set[str]) -> DataFrame:
    """Nanosecond columns, read by Spark as longs (nanoseconds since the epoch, UTC), as timestamps."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import LongType

    converted = {}
    for field in df.schema.fields:
        if field.name in names and isinstance(field.dataType, LongType):
            quoted = "`" + field.name.replace("`", "``") + "`"
            # Floored to Spark's microseconds in integer arithmetic: a double loses nanoseconds.
            converted[field.name] = F.expr(f"timestamp_micros(({quoted} - pmod({quoted}, 1000)) div 1000)")
    return df.withColumns(converted) if converted else df


def conform_to_bronze(df: DataFrame, source: str, required=REQUIRED_COLUMNS) -> DataFrame:
    """Transactions in the bronze schema: every bronze column, typed; optional ones null when absent.

    Raises :class:`FraudlakeError` for a missing required column, a column whose type
    cannot become the bronze type, values that do not parse (``'abc'`` as an amount),
    labels other than 0/1, and an input without rows.
    """
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    present = {name.lower(): name for name in df.columns}
    missing = [c for c in required if c not in present]
    if not df.columns:
        raise FraudlakeError(f"{source} is empty: no transactions")
    if missing:
        raise FraudlakeError(
            f"{source} has no {', '.join(missing)} column{'s' if len(missing) > 1 else ''}"
            f" (found: {', '.join(df.columns)})"
        )
    for name, spark_type in BRONZE_TYPES.items():
        if name in present and not _convertible(df.schema[present[name]].dataType, spark_type):
            found = df.schema[present[name]].dataType.simpleString()
            raise FraudlakeError(
                f"{source}: column {present[name]} has the wrong type ({found}); expected {EXPECTED_INPUT[spark_type]}"
            )
    columns = []
    for name, spark_type in BRONZE_TYPES.items():
        if name in present:
            columns.append(F.col(f"`{present[name]}`").try_cast(spark_type).alias(name))
        else:
            columns.append(F.lit(None).cast(spark_type).alias(name))
    # An input's own label arrival times (a label export's), typed as event_time is.
    label_time = (
        [F.col(f"`{present[LABEL_TIME]}`").try_cast("TIMESTAMP").alias(LABEL_TIME)] if LABEL_TIME in present else []
    )
    try:
        typed = df.select(
            *columns, *label_time, *[F.col(f"`{present[c]}`").alias(f"_in_{c}") for c in BRONZE_TYPES if c in present]
        )
    except PySparkException as error:
        raise FraudlakeError(f"{source}: a column has the wrong type: {first_line(error)}") from None
    _check_values(typed, source, [c for c in BRONZE_TYPES if c in present])
    return typed.select(*BRONZE_TYPES, *([LABEL_TIME] if label_time else []))


def _convertible(data_type: DataType, bronze_type: str) -> bool:
    """Whether a column of ``data_type`` can hold values of the bronze type (a timestamp, not an
    epoch number whose unit is a guess; an amount, not a boolean); text is parsed value by value."""
    from pyspark.sql import types as T

    if isinstance(data_type, (T.StringType, T.CharType, T.VarcharType, T.NullType)):
        return True
    if bronze_type == "TIMESTAMP":
        return isinstance(data_type, (T.TimestampType, T.TimestampNTZType, T.DateType))
    if bronze_type == "DOUBLE":
        return isinstance(data_type, T.NumericType)
    if bronze_type == "INT":
        return isinstance(data_type, (T.NumericType, T.BooleanType))
    return isinstance(data_type, T.AtomicType)  # STRING: any single value, not a struct, list or map


def _check_values(typed: DataFrame, source: str, present: list[str]) -> None:
    """One pass over the data: rows, and per column the values that did not convert."""
    from pyspark.sql import functions as F

    failed = {
        c: F.sum((F.col(f"_in_{c}").isNotNull() & F.col(c).isNull()).cast("int"))
        for c in present
        if BRONZE_TYPES[c] != "STRING"
    }
    bad_label = (
        F.sum((F.col(LABEL).isNotNull() & ~F.col(LABEL).isin(0, 1)).cast("int")) if LABEL in present else F.lit(0)
    )
    counts = typed.agg(
        F.count(F.lit(1)).alias("_rows"),
        bad_label.alias("_bad_label"),
        *[expr.alias(c) for c, expr in failed.items()],
    ).first()
    assert counts is not None  # an aggregate without grouping has one row
    if counts["_rows"] == 0:
        raise FraudlakeError(f"{source} is empty: no transactions")
    for column in failed:
        if counts[column]:
            failing = typed.where(F.col(f"_in_{column}").isNotNull() & F.col(column).isNull()).first()
            assert failing is not None  # the count above found such rows
            example = failing[f"_in_{column}"]
            raise FraudlakeError(
                f"{source}: column {column} has {counts[column]:,} value(s) that are not "
                f"{BRONZE_TYPES[column].lower()} (e.g. {example!r})"
            )
    if counts["_bad_label"]:
        raise FraudlakeError(f"{source}: {LABEL} must be 0 or 1; {counts['_bad_label']:,} row(s) have other values")


def labelled_features(transactions: DataFrame) -> DataFrame:
    """Transactions in the bronze schema → the key columns and every model input column.

    Rows that cannot be featurised or learned from (null event_time, amount or label)
    are left out; :func:`count_unusable` says how many.
    """
    from pyspark.sql import functions as F

    usable = transactions.where(
        F.col("event_time").isNotNull() & F.col("amount").isNotNull() & F.col(LABEL).isNotNull()
    )
    label_time = [LABEL_TIME] if LABEL_TIME in transactions.columns else []
    return add_features(usable).select(*KEY_COLUMNS, *label_time, *HISTORY_COLUMNS, *TRANSACTION_INPUT_COLUMNS)


def label_known_at() -> Column:
    """When a label of ``bronze.labels`` became known: its ``label_time``, or its arrival in the
    table (``_ingest_time``) when that is later. A chargeback filed on Monday and exported on
    Friday was not known on Wednesday: silver cannot have used it for Wednesday's rows, and
    training must not either. The simulator's own feed (``_source`` rate) arrives on the
    stream's clock, at its ``label_time``: its ``_ingest_time`` is the wall clock of a replay."""
    from pyspark.sql import functions as F

    arrived = F.greatest(F.col("label_time"), F.coalesce(F.col("_ingest_time"), F.col("label_time")))
    return F.when(F.col("_source") == SOURCE_RATE, F.col("label_time")).otherwise(arrived)


def known_labels(frame: pd.DataFrame, label_delay_seconds: int) -> pd.DataFrame:
    """The fraud labels of ``frame``'s rows and when each became known: the row's ``label_time``,
    or its ``event_time`` + ``label_delay_seconds`` when it has none."""
    fraud = frame[frame[LABEL].astype(int) == 1]
    arrived = pd.to_datetime(fraud["event_time"], utc=True) + pd.Timedelta(seconds=label_delay_seconds)
    if LABEL_TIME in fraud.columns:
        arrived = pd.to_datetime(fraud[LABEL_TIME], utc=True).fillna(arrived)
    return pd.DataFrame({"transaction_id": fraud["transaction_id"], LABEL: 1, "label_time": arrived})


def with_behaviour(frame: pd.DataFrame, label_delay_seconds: int) -> pd.DataFrame:
    """``frame`` (from :func:`to_pandas`) with the behavioural features of every row, over the
    whole frame: each row's history is the rows before it, and the labels known before it."""
    labels = known_labels(frame, label_delay_seconds)
    return pd.concat([frame, behaviour_features(frame, labels, label_maturity=label_delay_seconds)], axis=1)


def in_time_range(frame: pd.DataFrame, since: datetime | None, until: datetime | None) -> pd.DataFrame:
    """The rows with ``since <= event_time < until`` (either bound may be open)."""
    times = pd.to_datetime(frame["event_time"], utc=True)
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= times >= pd.Timestamp(since)
    if until is not None:
        keep &= times < pd.Timestamp(until)
    return frame[keep].reset_index(drop=True)


def time_range_text(since: datetime | None, until: datetime | None) -> str:
    """``from 2026-01-01T00:00:00Z until 2026-01-08T00:00:00Z``, for notes and errors."""
    parts = []
    if since is not None:
        parts.append(f"from {iso_utc(since)}")
    if until is not None:
        parts.append(f"until {iso_utc(until)}")
    return " ".join(parts)


def count_unusable(transactions: DataFrame) -> int:
    from pyspark.sql import functions as F

    return transactions.where(F.col("event_time").isNull() | F.col("amount").isNull() | F.col(LABEL).isNull()).count()


def to_pandas(features: DataFrame) -> pd.DataFrame:
    """Collect the feature frame, ordered by event time so that every run sees the rows in one order.

    Sorted in pandas: a few thousand rows sort faster there than through a Spark shuffle.
    """
    frame: pd.DataFrame = features.toPandas()
    frame[LABEL] = frame[LABEL].astype("int64")
    return frame.sort_values(["event_time", "transaction_id"], kind="mergesort").reset_index(drop=True)


@dataclass(frozen=True)
class Split:
    """Train fits the model, validation chooses the flag threshold, test (the holdout) is reported."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    method: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def split_frame(frame: pd.DataFrame, method: str, validation_share: float, test_share: float, seed: int) -> Split:
    """``time``: the oldest rows train, the newest are the holdout (as in production);
    ``random``: a shuffle stratified by the label, so every part has its share of fraud."""
    if method not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {method!r}")
    n = len(frame)
    n_test = int(round(n * test_share))
    n_validation = int(round(n * validation_share))
    if min(n - n_test - n_validation, n_test, n_validation) < 1:
        raise FraudlakeError(f"{n:,} labelled rows are too few to split into train, validation and test")
    if method == "time":
        ordered = frame.sort_values(["event_time", "transaction_id"], kind="mergesort").reset_index(drop=True)
        train_end = n - n_test - n_validation
        parts = ordered.iloc[:train_end], ordered.iloc[train_end : n - n_test], ordered.iloc[n - n_test :]
    else:
        parts = _stratified_parts(frame, n_validation, n_test, seed)
    train, validation, test = (part.reset_index(drop=True) for part in parts)
    return Split(train, validation, test, method=method)


def _stratified_parts(frame: pd.DataFrame, n_validation: int, n_test: int, seed: int):
    from sklearn.model_selection import train_test_split

    labels = frame[LABEL]
    stratify = labels if labels.value_counts().min() >= 3 else None  # too few of a class to stratify
    rest, test = train_test_split(frame, test_size=n_test, random_state=seed, stratify=stratify)
    stratify_rest = rest[LABEL] if stratify is not None else None
    train, validation = train_test_split(rest, test_size=n_validation, random_state=seed, stratify=stratify_rest)
    return train, validation, test


def class_counts(frame: pd.DataFrame) -> tuple[int, int]:
    """(rows, fraud rows)."""
    return len(frame), int(np.asarray(frame[LABEL]).sum())
