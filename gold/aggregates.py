"""Gold transformations: pure ``DataFrame -> DataFrame`` functions over silver rows.

:func:`user_activity_5m` and :func:`dashboard_minute` define gold's windows over a batch
of silver rows. The gold stream computes the same values incrementally: each micro-batch
brings :func:`live_rows` to the driver and adds them up per minute and per user minute
there (:mod:`fraudlake.gold.stream`). The 5-minute user windows are sums of five user
minutes: the view ``gold.user_activity_5m`` adds them up when read, and the stream finds
activity bursts in the recent ones it keeps in memory (:mod:`fraudlake.gold.bursts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

WINDOW = "5 minutes"
WINDOW_MINUTES = 5
MINUTE_MICROS = 60_000_000
WINDOW_MICROS = WINDOW_MINUTES * MINUTE_MICROS
SLIDE = "1 minute"
MODEL_ALERT = "model"
ACTIVITY_ALERT = "user_activity"


def user_windows(silver: DataFrame) -> DataFrame:
    """Per user, 5-minute windows sliding every minute (``total_amount`` in USD), plus
    ``last_event_time``: the newest transaction counted, which is when an alert on the window fires."""
    from pyspark.sql import functions as F

    return (
        silver.groupBy("user_id", F.window("event_time", WINDOW, SLIDE).alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum("amount_usd").alias("total_amount"),
            F.sum(F.col("is_flagged").cast("long")).alias("flagged_count"),
            F.max("event_time").alias("last_event_time"),
        )
        .select(
            "user_id",
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "tx_count",
            "total_amount",
            "flagged_count",
            "last_event_time",
        )
    )


def user_activity_5m(silver: DataFrame) -> DataFrame:
    """Per user, 5-minute windows sliding every minute; ``total_amount`` in USD: the table's values."""
    return user_windows(silver).drop("last_event_time")


def dashboard_minute(silver: DataFrame) -> DataFrame:
    """Per minute: volume and flagged volume (amounts in USD). A transaction in a currency without
    a USD rate counts in ``tx_count`` and in ``unknown_currency_count``, and in no amount. Model
    quality is not here: a minute is final long before its fraud labels arrive (``gold.model_quality_hourly``
    counts the labels that have)."""
    from pyspark.sql import functions as F

    flagged = F.col("is_flagged")
    return (
        silver.groupBy(F.window("event_time", "1 minute").alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum(flagged.cast("long")).alias("flagged_count"),
            F.sum("amount_usd").alias("total_amount"),
            F.sum(F.when(flagged, F.col("amount_usd")).otherwise(0.0)).alias("flagged_amount"),
            F.count_if(F.col("amount_usd").isNull()).alias("unknown_currency_count"),
        )
        .select(
            F.col("w.start").alias("minute"),
            "tx_count",
            "flagged_count",
            "total_amount",
            "flagged_amount",
            "unknown_currency_count",
        )
    )


def user_minute_totals(user_minutes: DataFrame) -> DataFrame:
    """``gold.user_activity_minute`` added up per user and minute (each gold micro-batch that
    counted a user minute appended a row of its own): the sums, the newest transaction counted
    and when the minute last changed."""
    from pyspark.sql import functions as F

    return user_minutes.groupBy("user_id", "minute").agg(
        F.sum("tx_count").alias("tx_count"),
        F.sum("total_amount").alias("total_amount"),
        F.sum("flagged_count").alias("flagged_count"),
        F.max("last_event_time").alias("last_event_time"),
        F.max("updated_at").alias("updated_at"),
    )


def live_rows(silver: DataFrame) -> DataFrame:
    """What the gold stream adds up, one row per silver row: its user and minute (``minute``,
    epoch µs: cut from epoch microseconds, so no session time zone enters), event and ingest
    times (epoch µs), and the measures :func:`dashboard_minute` and :func:`user_activity_5m` sum
    (``one``, ``amount_usd``, ``flagged``, ``flagged_amount``, ``unknown_currency``); its ``transaction_id``; plus, for a flagged row,
    its model alert (``alert_reason``, ``fraud_score``; null otherwise)."""
    from pyspark.sql import functions as F

    micros = F.unix_micros("event_time")
    flagged = F.col("is_flagged")
    return silver.select(
        "user_id",
        (micros - F.pmod(micros, F.lit(MINUTE_MICROS))).alias("minute"),
        micros.alias("event_time"),
        F.unix_micros("_ingest_time").alias("ingest_time"),
        F.lit(1).cast("long").alias("one"),
        "amount_usd",
        flagged.cast("long").alias("flagged"),
        F.when(flagged, F.col("amount_usd")).otherwise(0.0).alias("flagged_amount"),
        F.col("amount_usd").isNull().cast("long").alias("unknown_currency"),
        F.when(flagged, model_alert_reason()).alias("alert_reason"),
        "transaction_id",
        F.when(flagged, F.col("fraud_score")).alias("fraud_score"),
    )


def model_alert_reason() -> Column:
    """The reason of a transaction's model alert, e.g. ``score 0.912 from fraud_detector v3: 950.00 EUR online in DE``."""
    from pyspark.sql import functions as F

    return F.format_string(
        "score %.3f from %s v%s: %.2f %s %s in %s",
        "fraud_score",
        "model_name",
        "model_version",
        "amount",
        "currency",
        F.coalesce("channel", F.lit("?")),
        "country",
    )


def model_alerts(silver: DataFrame) -> DataFrame:
    """One alert per flagged transaction."""
    from pyspark.sql import functions as F

    return silver.where("is_flagged").select(
        F.lit(MODEL_ALERT).alias("alert_type"),
        "transaction_id",
        "user_id",
        "fraud_score",
        model_alert_reason().alias("reason"),
        F.col("event_time").alias("alert_time"),
    )


def activity_reason(tx_count: int, flagged_count: int, total_amount: float | None, start_micros: int) -> str:
    """The reason of a user-activity alert on the window starting at ``start_micros`` (UTC).

    >>> activity_reason(8, 1, 420.5, 1_772_355_600_000_000)
    '8 transactions (1 flagged, 420.50 USD) between 09:00 and 09:05 UTC'
    """
    from fraudlake.timeutil import utc_clock

    return (
        f"{tx_count} transactions ({flagged_count} flagged, {total_amount or 0.0:.2f} USD) "
        f"between {utc_clock(start_micros, '%H:%M')} and {utc_clock(start_micros + WINDOW_MICROS, '%H:%M')} UTC"
    )


def first_alert_per_burst(candidates, last_alerted: dict, cooldown_micros: int) -> list:
    """The candidates that raise an alert: per user, one at least ``cooldown`` after that
    user's previous alert (``last_alerted``: user -> its time, or absent).

    ``candidates`` are tuples ``(user_id, alert_time, ...)``, times as integers (epoch
    microseconds) so nothing depends on a time zone; further items (e.g. the window's
    start) only break ties. A user's candidates are taken in time order, and a kept one
    starts the next cool-down. Pure Python, no Spark.

    >>> first_alert_per_burst([("u1", 300), ("u1", 360), ("u2", 360)], {}, 300)
    [('u1', 300), ('u2', 360)]
    """
    last = dict(last_alerted)
    kept = []
    for candidate in sorted(candidates, key=lambda c: (c[1], c[0], *c[2:])):
        user, end = candidate[0], candidate[1]
        previous = last.get(user)
        if previous is None or end - previous >= cooldown_micros:
            kept.append(candidate)
            last[user] = end
    return kept
