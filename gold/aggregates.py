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
    """Per user, 5-minute windows sliding every minute."""
    from pyspark.sql import functions as F

    return (
        silver.groupBy("user_id", F.window("event_time", WINDOW, SLIDE).alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum("amount").alias("total_amount"),
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
    """Per minute: volume, flagged volume, and true/false positives where labels are known."""
    from pyspark.sql import functions as F

    flagged = F.col("is_flagged")
    label = F.col("label_is_fraud")
    labelled = label.isNotNull()
    return (
        silver.groupBy(F.window("event_time", "1 minute").alias("w"))
        .agg(
            F.count("*").alias("tx_count"),
            F.sum(flagged.cast("long")).alias("flagged_count"),
            F.sum("amount").alias("total_amount"),
            F.sum(F.when(flagged, F.col("amount")).otherwise(0.0)).alias("flagged_amount"),
            # null (not 0) for a minute without labels: unknown is not "no fraud".
            F.sum(F.when(labelled, (flagged & (label == 1)).cast("long"))).alias("true_positives"),
            F.sum(F.when(labelled, (flagged & (label == 0)).cast("long"))).alias("false_positives"),
        )
        .select(F.col("w.start").alias("minute"), "tx_count", "flagged_count", "total_amount",
                "flagged_amount", "true_positives", "false_positives")
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
    """One alert per user window with at least ``threshold`` transactions."""
    from pyspark.sql import functions as F

    return user_activity.where(F.col("tx_count") >= threshold).select(
        F.lit(ACTIVITY_ALERT).alias("alert_type"),
        F.lit(None).cast("string").alias("transaction_id"),
        "user_id",
        F.lit(None).cast("double").alias("fraud_score"),
        F.format_string(
            "%d transactions (%d flagged, %.2f total) between %s and %s", "tx_count", "flagged_count",
            "total_amount", F.date_format("window_start", "HH:mm"), F.date_format("window_end", "HH:mm"),
        ).alias("reason"),
        F.col("window_end").alias("alert_time"),
    )
