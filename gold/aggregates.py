"""Gold transformations: pure ``DataFrame -> DataFrame`` functions over silver rows.

:func:`user_activity_5m` and :func:`dashboard_minute` define gold's windows over a batch
of silver rows. The gold stream computes the same values incrementally with one
stateful aggregation (:func:`live_keys`, :func:`live_sums`): every transaction is keyed
by its user's minute and by its minute, so one state store keeps every open minute, and
each micro-batch emits the minutes it changed with their absolute values. The 5-minute
user windows are sums of five user minutes: the view ``gold.user_activity_5m`` adds them up
when read, and the stream finds activity bursts in the recent ones it keeps in memory
(:mod:`fraudlake.gold.bursts`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

WINDOW = "5 minutes"
WINDOW_MINUTES = 5
MINUTE_MICROS = 60_000_000
WINDOW_MICROS = WINDOW_MINUTES * MINUTE_MICROS
USER_KIND = "user"  # a live key: a user's 5-minute window
MINUTE_KIND = "minute"  # a live key: a dashboard minute
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
    """Per minute: volume, flagged volume (amounts in USD), and true/false positives where labels
    are known. A transaction in a currency without a USD rate counts in ``tx_count`` and in
    ``unknown_currency_count``, and in no amount."""
    from pyspark.sql import functions as F

    flagged = F.col("is_flagged")
    label = F.col("label_is_fraud")
    labelled = label.isNotNull()
    return (
        silver.groupBy(F.window("event_time", "1 minute").alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum(flagged.cast("long")).alias("flagged_count"),
            F.sum("amount_usd").alias("total_amount"),
            F.sum(F.when(flagged, F.col("amount_usd")).otherwise(0.0)).alias("flagged_amount"),
            # null (not 0) for a minute without labels: unknown is not "no fraud".
            F.sum(F.when(labelled, (flagged & (label == 1)).cast("long"))).alias("true_positives"),
            F.sum(F.when(labelled, (flagged & (label == 0)).cast("long"))).alias("false_positives"),
            F.count_if(F.col("amount_usd").isNull()).alias("unknown_currency_count"),
        )
        .select(
            F.col("w.start").alias("minute"),
            "tx_count",
            "flagged_count",
            "total_amount",
            "flagged_amount",
            "true_positives",
            "false_positives",
            "unknown_currency_count",
        )
    )


def live_keys(silver: DataFrame) -> DataFrame:
    """Each silver row twice: once for its user's minute (``kind`` :data:`USER_KIND`) and once
    for its minute (:data:`MINUTE_KIND`, ``user_id`` null), both keyed by the minute's ``end``;
    plus the columns :func:`live_sums` adds up. A 5-minute user window is the sum of five
    user minutes (``gold.user_activity_5m`` adds them up when read), so the state holds one
    key per user and minute, not five windows. Keyed by the end, so one watermark closes a
    user minute and a dashboard minute alike. Minutes are cut from epoch microseconds: no
    session time zone enters."""
    from pyspark.sql import functions as F

    micros = F.unix_micros("event_time")
    minute_end = F.timestamp_micros(micros - micros % F.lit(MINUTE_MICROS) + F.lit(MINUTE_MICROS))
    keys = [
        F.struct(F.lit(USER_KIND).alias("kind"), F.col("user_id").alias("user_id"), minute_end.alias("end")),
        F.struct(
            F.lit(MINUTE_KIND).alias("kind"), F.lit(None).cast("string").alias("user_id"), minute_end.alias("end")
        ),
    ]
    return (
        silver.select(
            F.explode(F.array(*keys)).alias("k"),
            "event_time",
            "_ingest_time",
            "amount_usd",
            "is_flagged",
            "label_is_fraud",
        )
        .select("k.*", "*")
        .drop("k")
    )


def live_sums(keyed: DataFrame) -> DataFrame:
    """Per ``(kind, user_id, end)``: the sums of :func:`user_activity_5m` and :func:`dashboard_minute`
    (a user minute uses the first three), ``last_event_time`` (when an alert on it fires) and
    ``newest_ingest`` (the latest ``_ingest_time`` counted, for freshness)."""
    from pyspark.sql import functions as F

    flagged, label = F.col("is_flagged"), F.col("label_is_fraud")
    labelled = label.isNotNull()
    return keyed.groupBy("kind", "user_id", "end").agg(
        F.count("*").alias("tx_count"),
        F.sum("amount_usd").alias("total_amount"),
        F.sum(flagged.cast("long")).alias("flagged_count"),
        F.sum(F.when(flagged, F.col("amount_usd")).otherwise(0.0)).alias("flagged_amount"),
        F.sum(F.when(labelled, (flagged & (label == 1)).cast("long"))).alias("true_positives"),
        F.sum(F.when(labelled, (flagged & (label == 0)).cast("long"))).alias("false_positives"),
        F.count_if(F.col("amount_usd").isNull()).alias("unknown_currency_count"),
        F.max("event_time").alias("last_event_time"),
        F.max("_ingest_time").alias("newest_ingest"),
    )


def model_alerts(silver: DataFrame) -> DataFrame:
    """One alert per flagged transaction."""
    from pyspark.sql import functions as F

    return silver.where("is_flagged").select(
        F.lit(MODEL_ALERT).alias("alert_type"),
        "transaction_id",
        "user_id",
        "fraud_score",
        F.format_string(
            "score %.3f from %s v%s: %.2f %s %s in %s",
            "fraud_score",
            "model_name",
            "model_version",
            "amount",
            "currency",
            F.coalesce("channel", F.lit("?")),
            "country",
        ).alias("reason"),
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
