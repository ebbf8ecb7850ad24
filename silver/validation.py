"""Validation rules for bronze rows: a row is valid or carries one ``quarantine_reason``.

Pure ``DataFrame -> DataFrame`` functions; the silver stream routes on the result.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# Must be present (and of the right type: a value that did not parse is null in bronze).
REQUIRED_COLUMNS = (
    "transaction_id",
    "event_time",
    "user_id",
    "card_id",
    "merchant_id",
    "amount",
    "currency",
    "country",
)
CHANNELS = ("pos", "online", "atm")
UNPARSEABLE = "unparseable record"
# A transaction_id that silver has scored already, or that came twice in one micro-batch.
DUPLICATE = "duplicate_transaction_id"
BAD_AMOUNT = "amount not positive and finite"
UNKNOWN_CURRENCY = "unknown currency"
UNKNOWN_COUNTRY = "unknown country"
UNKNOWN_CHANNEL = "unknown channel"
IN_THE_FUTURE = "event_time in the future"


def missing(column: str) -> str:
    return f"missing or invalid {column}"


@lru_cache(maxsize=1)
def iso_codes() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """ISO 3166 alpha-2 country codes and ISO 4217 currency codes (pycountry's tables)."""
    import pycountry

    countries = tuple(sorted(c.alpha_2 for c in pycountry.countries))
    currencies = tuple(sorted(c.alpha_3 for c in pycountry.currencies))
    return countries, currencies


def quarantine_reason(max_future_seconds: int) -> Column:
    """A column: the first rule a row breaks, or null for a valid row. Built once per JVM: the
    rules hold ~430 ISO codes, and making their literals costs ~0.6 s of calls to the JVM,
    which a micro-batch should not pay."""
    from fraudlake.spark import built_once

    return built_once(("quarantine_reason", max_future_seconds), lambda: _quarantine_reason(max_future_seconds))


def _quarantine_reason(max_future_seconds: int) -> Column:
    from pyspark.sql import functions as F

    countries, currencies = iso_codes()
    col = F.col
    parsed_nothing = col("_raw").isNotNull() & F.coalesce(*[col(c).cast("string") for c in REQUIRED_COLUMNS]).isNull()
    reason = F.when(parsed_nothing, F.lit(UNPARSEABLE))
    for name in REQUIRED_COLUMNS:
        reason = reason.when(col(name).isNull() | (col(name).cast("string") == ""), F.lit(missing(name)))
    amount = col("amount")
    # "In the future" is judged against when bronze received the row, not the clock of
    # whoever validates it: a replayed micro-batch routes every row as it did the first time.
    received = F.coalesce(col("_ingest_time"), F.current_timestamp())
    return (
        reason.when(F.isnan(amount) | (amount <= 0) | (amount == float("inf")), F.lit(BAD_AMOUNT))
        .when(~col("currency").isin(*currencies), F.lit(UNKNOWN_CURRENCY))
        .when(~col("country").isin(*countries), F.lit(UNKNOWN_COUNTRY))
        .when(col("channel").isNotNull() & ~col("channel").isin(*CHANNELS), F.lit(UNKNOWN_CHANNEL))
        .when(
            col("event_time") > received + F.make_dt_interval(secs=F.lit(max_future_seconds)),
            F.lit(IN_THE_FUTURE),
        )
    )


def validate(bronze: DataFrame, max_future_seconds: int) -> DataFrame:
    """Bronze rows + ``quarantine_reason`` (null when valid). A second row with an id seen
    earlier in the same frame is a duplicate: the first (by ingest time, then raw text) stays valid.
    Ids scored in earlier micro-batches are checked by the silver stream (:func:`mark_repeats`)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    checked = bronze.withColumn("quarantine_reason", quarantine_reason(max_future_seconds))
    first_seen = Window.partitionBy("transaction_id").orderBy(
        F.col("quarantine_reason").asc_nulls_first(), "_ingest_time", "_raw"
    )
    rank = F.when(F.col("transaction_id").isNotNull(), F.row_number().over(first_seen))
    return checked.withColumn(
        "quarantine_reason",
        F.when(F.col("quarantine_reason").isNull() & (rank > 1), F.lit(DUPLICATE)).otherwise(
            F.col("quarantine_reason")
        ),
    )


def mark_repeats(checked: DataFrame, scored: DataFrame) -> DataFrame:
    """Valid rows whose ``transaction_id`` silver already holds *for another bronze row* get
    the reason :data:`DUPLICATE`: an id is scored once.

    ``scored`` has ``transaction_id``, ``event_time`` and ``_ingest_time`` of silver rows. A
    bronze row is its id, event time and ingest time; silver holding this very row means an
    earlier attempt of the same micro-batch committed it before a crash, and the replay
    must route it as that attempt did (its appends are then skipped), not call it a repeat.
    """
    from pyspark.sql import functions as F

    col = F.col
    seen = scored.select(
        col("transaction_id").alias("_s_id"),
        col("event_time").alias("_s_event"),
        col("_ingest_time").alias("_s_ingest"),
    )
    same_row = (col("event_time") == col("_s_event")) & col("_ingest_time").eqNullSafe(col("_s_ingest"))
    other_row = (col("transaction_id") == col("_s_id")) & ~same_row
    repeated = (
        checked.join(seen, other_row, "left_semi")
        .select(
            col("transaction_id").alias("_r_id"),
            col("event_time").alias("_r_event"),
            col("_ingest_time").alias("_r_ingest"),
        )
        .distinct()
    )
    joined = checked.join(
        repeated,
        (col("transaction_id") == col("_r_id"))
        & col("event_time").eqNullSafe(col("_r_event"))
        & col("_ingest_time").eqNullSafe(col("_r_ingest")),
        "left",
    )
    repeat = col("quarantine_reason").isNull() & col("_r_id").isNotNull()
    return joined.withColumn(
        "quarantine_reason", F.when(repeat, F.lit(DUPLICATE)).otherwise(col("quarantine_reason"))
    ).drop("_r_id", "_r_event", "_r_ingest")


def drop_routed(checked: DataFrame, scored: DataFrame, quarantined: DataFrame) -> DataFrame:
    """``checked`` without the bronze rows that were already routed where they are routed now.

    A bronze row is routed once. The combined ingest query (bronze and silver in one
    micro-batch) routes the rows it writes to bronze; a silver query reading bronze
    afterwards (``--layers silver``, a scheduled catch-up) finds them routed and leaves
    them alone, as it does on the replay of a batch whose quarantine append had committed.
    A row is the same when ``transaction_id``, ``event_time``, ``_ingest_time`` (and for
    quarantine ``_raw``; nulls equal) are. Routes are compared too, so of two identical
    lines in one file, the one kept valid is dropped only when silver holds it and its
    twin only when quarantine holds it as a repeat: a quarantine append of the same batch
    never hides a valid row.

    ``scored``: silver's ``transaction_id``, ``event_time``, ``_ingest_time`` near the batch;
    ``quarantined``: quarantine's identity columns and ``quarantine_reason`` near it.
    """
    from pyspark.sql import functions as F

    col = F.col
    valid = col("quarantine_reason").isNull()
    in_silver = scored.select(
        col("transaction_id").alias("_s_id"),
        col("event_time").alias("_s_event"),
        col("_ingest_time").alias("_s_ingest"),
    )
    kept = checked.join(
        in_silver,
        valid
        & (col("transaction_id") == col("_s_id"))
        & (col("event_time") == col("_s_event"))
        & col("_ingest_time").eqNullSafe(col("_s_ingest")),
        "left_anti",
    )
    identity = ("transaction_id", "event_time", "_ingest_time", "_raw")
    in_quarantine = quarantined.select(
        *[col(name).alias(f"_q{i}") for i, name in enumerate(identity)], col("quarantine_reason").alias("_q_reason")
    )
    same = col("quarantine_reason") == col("_q_reason")
    for i, name in enumerate(identity):
        same = same & col(name).eqNullSafe(col(f"_q{i}"))
    return kept.join(in_quarantine, same, "left_anti")
