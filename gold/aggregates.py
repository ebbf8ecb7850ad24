"""Gold transformations: pure ``DataFrame -> DataFrame`` functions over silver rows.

The windowed ones expect a watermark on ``event_time`` when run on a stream
(:func:`with_watermark`); in append mode Spark then emits each window once, when it
is final, which is what lets gold be plain Delta appends.
"""

from __future__ import annotations

WINDOW = "5 minutes"
SLIDE = "1 minute"
MODEL_ALERT = "model"
ACTIVITY_ALERT = "user_activity"


def with_watermark(silver, watermark_seconds: int):
    return silver.withWatermark("event_time", f"{watermark_seconds} seconds")


def user_activity_5m(silver):
    """Per user, 5-minute windows sliding every minute; ``total_amount`` in USD."""
    from pyspark.sql import functions as F

    return (
        silver.groupBy("user_id", F.window("event_time", WINDOW, SLIDE).alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum("amount_usd").alias("total_amount"),
            F.sum(F.col("is_flagged").cast("long")).alias("flagged_count"),
        )
        .select(
            "user_id",
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "tx_count",
            "total_amount",
            "flagged_count",
        )
    )


def dashboard_minute(silver):
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
        .select(F.col("w.start").alias("minute"), "tx_count", "flagged_count", "total_amount",
                "flagged_amount", "true_positives", "false_positives", "unknown_currency_count")
    )


def model_alerts(silver):
    """One alert per flagged transaction."""
    from pyspark.sql import functions as F

    return silver.where("is_flagged").select(
        F.lit(MODEL_ALERT).alias("alert_type"),
        "transaction_id",
        "user_id",
        "fraud_score",
        F.format_string(
            "score %.3f from %s v%s: %.2f %s %s in %s", "fraud_score", "model_name", "model_version",
            "amount", "currency", F.coalesce("channel", F.lit("?")), "country",
        ).alias("reason"),
        F.col("event_time").alias("alert_time"),
    )


def activity_alerts(user_activity, threshold: int):
    """An alert candidate per user window with at least ``threshold`` transactions.

    Windows slide every minute, so one burst fills several windows; the gold stream keeps
    the first candidate of each burst (:func:`first_alert_per_burst`)."""
    from pyspark.sql import functions as F

    return user_activity.where(F.col("tx_count") >= threshold).select(
        F.lit(ACTIVITY_ALERT).alias("alert_type"),
        F.lit(None).cast("string").alias("transaction_id"),
        "user_id",
        F.lit(None).cast("double").alias("fraud_score"),
        F.format_string(
            "%d transactions (%d flagged, %.2f USD) between %s and %s UTC", "tx_count", "flagged_count",
            "total_amount", F.date_format("window_start", "HH:mm"), F.date_format("window_end", "HH:mm"),
        ).alias("reason"),
        F.col("window_end").alias("alert_time"),
    )


def first_alert_per_burst(candidates, last_alerted: dict, cooldown_micros: int) -> list:
    """The candidates that raise an alert: per user, a window ending at least ``cooldown``
    after that user's previous alert (``last_alerted``: user -> its time, or absent).

    ``candidates`` are ``(user_id, window_end)`` pairs, times as integers (epoch
    microseconds) so nothing depends on a time zone. Windows of one user are taken in
    time order, and a kept one starts the next cool-down. Pure Python, no Spark.

    >>> first_alert_per_burst([("u1", 300), ("u1", 360), ("u2", 360)], {}, 300)
    [('u1', 300), ('u2', 360)]
    """
    last = dict(last_alerted)
    kept = []
    for user, end in sorted(candidates, key=lambda c: (c[1], c[0])):
        previous = last.get(user)
        if previous is None or end - previous >= cooldown_micros:
            kept.append((user, end))
            last[user] = end
    return kept
