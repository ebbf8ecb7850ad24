"""The model's features, defined once as Spark column expressions.

Training (simulator or input file → Spark → :func:`add_features` → pandas) and
serving (the silver stream → :func:`add_features` → the registered pyfunc) call the
same function, so a feature cannot mean one thing in training and another when
scoring. Behavioural features (card velocity, merchant risk) need the rows before a
transaction: :mod:`fraudlake.ml.behaviour` computes them, again once for both paths.

Every function here is a pure ``DataFrame -> DataFrame`` transformation that works
on batch and streaming frames alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES
from fraudlake.reference import UNITS_PER_USD

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Time features of silver.scored_transactions (see fraudlake.tables.FEATURE_COLUMNS).
TIME_FEATURES = ("tx_hour", "tx_day_of_week", "is_weekend", "is_night")
# Features silver keeps beside the transaction (time features and the amount in USD).
SILVER_FEATURES = TIME_FEATURES + ("amount_usd",)
NIGHT_END_HOUR = 6  # night is 00:00-05:59 UTC

# Model input: numbers (scaled) and categories (one-hot encoded), by name. The transaction's
# own features are Spark columns (add_features); its behavioural features (what its card and
# merchant did before it) are computed over a history by fraudlake.ml.behaviour.
TRANSACTION_NUMERIC_FEATURES = ("log_amount", "log_amount_usd", "tx_hour", "tx_day_of_week", "is_weekend", "is_night")
NUMERIC_FEATURES = TRANSACTION_NUMERIC_FEATURES + BEHAVIOUR_FEATURES
CATEGORICAL_FEATURES = ("merchant_category", "country", "currency", "channel")
TRANSACTION_INPUT_COLUMNS = TRANSACTION_NUMERIC_FEATURES + CATEGORICAL_FEATURES
MODEL_INPUT_COLUMNS = NUMERIC_FEATURES + CATEGORICAL_FEATURES
# Inputs that may be null (an optional bronze column, or an amount in an unknown currency).
NULLABLE_FEATURES = ("log_amount_usd",) + CATEGORICAL_FEATURES

SECONDS_PER_DAY = 86_400
# 1970-01-01 was a Thursday, day 5 in Spark's dayofweek numbering (1 = Sunday).
EPOCH_DAY_OF_WEEK = 5


def time_feature_columns(time_column: str = "event_time") -> dict[str, Column]:
    """``tx_hour`` (0-23), ``tx_day_of_week`` (1 = Sunday … 7 = Saturday, as Spark's
    ``dayofweek``), ``is_weekend`` and ``is_night`` (00:00-05:59), all in UTC, as columns.

    Computed from epoch seconds rather than ``hour()``/``dayofweek()``, which follow
    ``spark.sql.session.timeZone``: a cluster in another time zone must compute the
    same features as the session the model was trained in.
    """
    from pyspark.sql import functions as F

    seconds = F.unix_seconds(F.col(time_column))
    day_of_week = (F.pmod(F.floor(seconds / SECONDS_PER_DAY) + (EPOCH_DAY_OF_WEEK - 1), 7) + 1).cast("int")
    hour = F.floor(F.pmod(seconds, SECONDS_PER_DAY) / 3600).cast("int")
    return {
        "tx_hour": hour,
        "tx_day_of_week": day_of_week,
        "is_weekend": day_of_week.isin(1, 7),
        "is_night": hour < NIGHT_END_HOUR,
    }


def amount_feature_columns() -> dict[str, Column]:
    """``amount_usd`` and ``log_amount_usd`` (null for a currency without a reference rate, see
    :mod:`fraudlake.reference`) and ``log_amount`` (local currency), as columns.

    Amounts are heavy-tailed and in local currency (a JPY or INR amount is ~100x the
    same purchase in USD): the log makes them comparable in scale, the USD
    conversion makes them comparable across currencies.
    """
    from pyspark.sql import functions as F

    rates = F.create_map(*[F.lit(x) for pair in sorted(UNITS_PER_USD.items()) for x in pair])
    # Negative amounts (refunds) have no log; they count as zero spend.
    amount = F.greatest(F.col("amount").cast("double"), F.lit(0.0))
    rate = F.try_element_at(rates, F.upper(F.col("currency")))
    return {
        "amount_usd": F.round(F.col("amount").cast("double") / rate, 2),
        "log_amount": F.log1p(amount),
        "log_amount_usd": F.log1p(amount / rate),
    }


def add_time_features(df: DataFrame, time_column: str = "event_time") -> DataFrame:
    """``df`` with the columns of :func:`time_feature_columns`."""
    return df.withColumns(time_feature_columns(time_column))


def add_amount_features(df: DataFrame) -> DataFrame:
    """``df`` with the columns of :func:`amount_feature_columns`."""
    return df.withColumns(amount_feature_columns())


def add_features(df: DataFrame) -> DataFrame:
    """Every per-transaction model input column, added to transactions in the bronze schema.

    The one feature step of training and of the silver stream: one projection, so a
    micro-batch's plan is analysed once for all of them, not once per column; the
    columns are built once per JVM.
    """
    from fraudlake.spark import built_once

    return df.withColumns(built_once("features", lambda: {**amount_feature_columns(), **time_feature_columns()}))
