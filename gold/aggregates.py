"""Gold transformations: pure ``DataFrame -> DataFrame`` functions over silver rows.

Each aggregate is written so that the aggregate of a union is the sum of the aggregates
of its parts (counts and sums, a sum of nulls being null): the gold stream aggregates
each micro-batch of silver rows and adds it to what the table holds (Delta MERGE), so a
window is visible while it is open, and gold equals these functions over all of silver.
"""

from __future__ import annotations

WINDOW = "5 minutes"
SLIDE = "1 minute"
MODEL_ALERT = "model"
ACTIVITY_ALERT = "user_activity"


def user_windows(silver):
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


def user_activity_5m(silver):
    """Per user, 5-minute windows sliding every minute; ``total_amount`` in USD: the table's values."""
    return user_windows(silver).drop("last_event_time")


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


def activity_alerts(busy_windows, *keep: str):
    """An alert row per busy user window (its table values plus ``last_event_time``), timed at the
    newest transaction counted: the one that took it over the threshold when it first gets there.
    ``keep`` names further columns to pass through. One burst fills several sliding windows; the
    gold stream keeps the first alert of each burst (:func:`first_alert_per_burst`)."""
    from pyspark.sql import functions as F

    return busy_windows.select(
        F.lit(ACTIVITY_ALERT).alias("alert_type"),
        F.lit(None).cast("string").alias("transaction_id"),
        "user_id",
        F.lit(None).cast("double").alias("fraud_score"),
        F.format_string(
            "%d transactions (%d flagged, %.2f USD) between %s and %s UTC", "tx_count", "flagged_count",
            "total_amount", F.date_format("window_start", "HH:mm"), F.date_format("window_end", "HH:mm"),
        ).alias("reason"),
        F.col("last_event_time").alias("alert_time"),
        *keep,
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


# How a micro-batch's aggregate adds to what a gold table holds: per column, plain
# addition (counts) or null-aware addition (sums that are null over no values, and the
# label counts that are null while no label is known). Read by the gold stream's MERGE.
USER_WINDOW_SUMS = {"tx_count": "count", "total_amount": "nullable", "flagged_count": "count"}
MINUTE_SUMS = {
    "tx_count": "count", "flagged_count": "count", "total_amount": "nullable", "flagged_amount": "nullable",
    "true_positives": "nullable", "false_positives": "nullable", "unknown_currency_count": "count",
}


def merged_sums(sums: dict[str, str], held: str = "t", added: str = "s") -> dict[str, str]:
    """SQL expressions for a MERGE's update: each column of ``sums`` as held + added.

    >>> merged_sums({"tx_count": "count"})
    {'tx_count': 't.tx_count + s.tx_count'}
    """
    expressions = {}
    for column, kind in sums.items():
        plus = f"{held}.{column} + {added}.{column}"
        expressions[column] = plus if kind == "count" else f"coalesce({plus}, {held}.{column}, {added}.{column})"
    return expressions
