"""The transaction simulator, written as Spark column expressions.

Every attribute of a transaction is a pure function of ``(seed, value)``, where
``value`` is a row number: ``spark.range`` gives it for a batch (training data,
``fraudlake generate``) and the ``rate`` source gives it for a stream. The same
seed and value always give the same transaction, and ``transaction_id`` is
derived from ``value``, so it is unique and a restarted stream can be checked
for gaps and duplicates.

The population (users with a home country, typical spend, active hours and
usual channels; merchants with a category and country; each user's cards) is
also a function of the seed: every attribute of user ``i`` or merchant ``j`` is
hashed from ``(seed, i)`` or ``(seed, j)``, so there is nothing to store or join.

Fraud scenarios (labelled in ``label_is_fraud`` / ``label_scenario``):

``amount_anomaly``
    A user's own card at a usual merchant, for many times their typical amount.
``compromised_merchant``
    The stream is cut into periods of ``merchant_period_rows`` transactions; in each
    period a few merchants are compromised and every transaction there is fraud.
``compromised_card``
    The stream is cut into blocks of consecutive transactions; in each block one
    stolen card makes a burst of about ``burst_size`` rapid transactions, often
    abroad or online.

Clock: one for batch and stream. Row ``value`` happens ``value / rows_per_second``
seconds after the clock's start: the ``rate`` source stamps rows that way at its rate
(``event_time`` is its timestamp, the wall clock), and a batch does the same from
``start_time`` at ``rows_per_day / 86400`` rows per second. Genuine spending and fraud
are spread evenly over the UTC day in both (a card base spread over many time zones),
so no model trained on simulated history learns an hour-of-day rule that the live
stream contradicts at another hour. ``stream_start_time`` replays the stream on the
simulated clock from a given instant instead of the wall clock (tests, demos of a
given hour); ``_ingest_time`` always records when bronze received the row. A batch
keeps stolen-card bursts as rapid as a live stream has them (within 15 minutes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from fraudlake.conf.settings import SimulatorSettings
from fraudlake.reference import UNITS_PER_USD

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

# country, currency, share of card holders
_COUNTRY_SHARES = [
    ("US", "USD", 0.32),
    ("GB", "GBP", 0.10),
    ("DE", "EUR", 0.10),
    ("FR", "EUR", 0.08),
    ("ES", "EUR", 0.05),
    ("IT", "EUR", 0.05),
    ("NL", "EUR", 0.04),
    ("CA", "CAD", 0.06),
    ("AU", "AUD", 0.04),
    ("JP", "JPY", 0.04),
    ("BR", "BRL", 0.04),
    ("MX", "MXN", 0.03),
    ("IN", "INR", 0.03),
    ("SE", "SEK", 0.02),
]
# country, currency, units of currency per USD (production's reference rates), share of card holders
COUNTRIES = [(country, currency, UNITS_PER_USD[currency], share) for country, currency, share in _COUNTRY_SHARES]

# category, share of merchants/transactions, median amount (USD), log-sd, channel
CATEGORIES = [
    ("grocery", 0.22, 45.0, 0.6, "pos"),
    ("restaurant", 0.15, 30.0, 0.6, "pos"),
    ("fuel", 0.09, 50.0, 0.4, "pos"),
    ("retail", 0.14, 70.0, 0.8, "pos"),
    ("online_retail", 0.14, 60.0, 0.9, "online"),
    ("electronics", 0.05, 250.0, 0.9, "pos"),
    ("travel", 0.04, 400.0, 0.9, "online"),
    ("entertainment", 0.06, 25.0, 0.7, "online"),
    ("health", 0.07, 40.0, 0.7, "pos"),
    ("cash_withdrawal", 0.04, 120.0, 0.6, "atm"),
]
# Categories where a card-present category may also be bought online.
ONLINE_CAPABLE = {"retail", "electronics", "travel", "entertainment"}

SCENARIOS = ("amount_anomaly", "compromised_merchant", "compromised_card")
SOURCE_RATE = "rate"
SECONDS_PER_DAY = 86_400
# On the batch clock a stolen card's burst lasts at most this long (see _batch_clock).
BURST_SECONDS = 900


@dataclass(frozen=True)
class ScenarioRates:
    """Per-transaction probabilities of each scenario, derived from the settings."""

    amount_anomaly: float
    compromised_merchant: float  # explicit draws; genuine traffic at a compromised merchant adds the rest
    compromised_card: float
    block_rows: int  # rows per stolen-card block


def scenario_rates(sim: SimulatorSettings) -> ScenarioRates:
    """Split ``fraud_rate`` over the scenarios.

    A compromised merchant turns all its traffic in the period to fraud, so part of
    that scenario's share comes from genuine draws landing there; only the rest is
    drawn explicitly.
    """
    mix = sim.scenario_mix
    total = mix.amount_anomaly + mix.compromised_merchant + mix.compromised_card
    p_a = sim.fraud_rate * mix.amount_anomaly / total
    p_b_target = sim.fraud_rate * mix.compromised_merchant / total
    p_c = sim.fraud_rate * mix.compromised_card / total
    collisions = (sim.compromised_merchants_per_period / sim.n_merchants) * (1 - sim.fraud_rate) if p_b_target else 0.0
    p_b = max(0.0, p_b_target - collisions)
    block_rows = max(sim.burst_size, round(sim.burst_size / p_c)) if p_c > 0 else 1
    return ScenarioRates(p_a, p_b, p_c, block_rows)


def cumulative_shares(weights: list[float]) -> list[float]:
    """Upper bounds of each choice's slice of [0, 1) for a weighted pick."""
    total = float(sum(weights))
    bounds, running = [], 0.0
    for w in weights:
        running += w / total
        bounds.append(running)
    bounds[-1] = 1.0
    return bounds


def merchant_blocks(sim: SimulatorSettings) -> tuple[list[int], list[int]]:
    """Merchants are numbered country by country: country ``c`` owns ``offset[c] .. offset[c] + count[c] - 1``.

    Counts follow the card-holder shares, with at least one merchant per country.
    """
    shares = [c[3] for c in COUNTRIES]
    total = sum(shares)
    counts = [max(1, int(sim.n_merchants * w / total)) for w in shares]
    counts[0] += sim.n_merchants - sum(counts)  # rounding goes to the largest market
    offsets = [sum(counts[:i]) for i in range(len(counts))]
    return offsets, counts


# ----------------------------------------------------------------------------- expressions
#
# The simulation is one chain of projections with no joins and no large literals:
# population attributes are hashed from their ids, and a random draw that later
# steps read more than once is hashed once into a column. (Spark keeps such
# projections apart rather than inline, and so recompute, an expensive expression.)


def _uniform(seed: int, salt: str, *keys: Column) -> Column:
    """A deterministic uniform [0, 1) from the seed, a salt and key columns."""
    from pyspark.sql import functions as F

    bits = F.xxhash64(F.lit(seed), F.lit(salt), *keys).bitwiseAND(F.lit((1 << 53) - 1))
    return bits.cast("double") / float(1 << 53)


def _pick(values: list, index_col: Column) -> Column:
    """``values[index]`` for a small literal list."""
    from pyspark.sql import functions as F

    return F.element_at(F.array(*[F.lit(v) for v in values]), index_col.cast("int") + 1)


def _weighted_index(u: Column, weights: list[float]) -> Column:
    """An index drawn with the given weights from a uniform column."""
    from pyspark.sql import functions as F

    bounds = cumulative_shares(weights)
    pick = F.when(u < bounds[0], F.lit(0))
    for i, bound in enumerate(bounds[1:-1], start=1):
        pick = pick.when(u < bound, F.lit(i))
    return pick.otherwise(F.lit(len(bounds) - 1))


def _block_of(index: Column, offsets: list[int]) -> Column:
    """Which block ``index`` falls in, for blocks starting at ``offsets`` (ascending, first 0)."""
    from pyspark.sql import functions as F

    block = F.when(index < offsets[1], F.lit(0))
    for i, start in enumerate(offsets[2:], start=1):
        block = block.when(index < start, F.lit(i))
    return block.otherwise(F.lit(len(offsets) - 1))


def _normal(u1: Column, u2: Column) -> Column:
    """A standard normal from two uniforms (Box-Muller)."""
    from pyspark.sql import functions as F

    return F.sqrt(-2.0 * F.log(u1 + 1e-12)) * F.cos(2 * math.pi * u2)


def _index_below(u: Column, n: Column | int) -> Column:
    """An integer in ``[0, n)`` from a uniform column (``n`` a column or int)."""
    from pyspark.sql import functions as F

    return F.floor(u * n).cast("long")


def _padded(prefix: str, number: Column, width: int) -> Column:
    """``prefix`` + the number, zero-padded to at least ``width`` digits and never cut:
    ids stay distinct for any population the settings accept."""
    from pyspark.sql import functions as F

    return F.format_string(f"{prefix}%0{width}d", number.cast("long"))


def simulate(
    df: DataFrame,
    sim: SimulatorSettings,
    clock: str = "batch",
    source: str = SOURCE_RATE,
    rows_per_second: float | None = None,
) -> DataFrame:
    """Turn rows with a ``value`` column (and ``timestamp``, for ``clock="source"``) into transactions.

    ``clock="batch"``: row ``value`` happens ``value / (rows_per_day / 86400)`` seconds after
    ``sim.start_time``. ``clock="source"``: the source's ``timestamp``, or, with
    ``sim.stream_start_time`` set, ``value / rows_per_second`` seconds after it.
    Returns the bronze columns, in the bronze order. Pure: no I/O, works on batch and streaming frames.
    """
    from pyspark.sql import functions as F

    if clock not in ("batch", "source"):
        raise ValueError(f"clock must be 'batch' or 'source', not {clock!r}")
    rates = scenario_rates(sim)
    offsets, counts = merchant_blocks(sim)
    if clock == "batch":
        event_time = _batch_clock(sim, rates)
    elif sim.stream_start_time is not None:
        if not rows_per_second:
            raise ValueError("a stream on the simulated clock (stream_start_time) needs its rows_per_second")
        event_time = simulated_clock(sim.stream_start_time, rows_per_second)
    else:
        event_time = F.col("timestamp")
    seed, col = sim.seed, F.col

    def u(salt: str, *keys: Column) -> Column:
        return _uniform(seed, salt, *(keys or (col("value"),)))

    user, merchant = col("user_idx"), col("merchant_idx")

    k = sim.compromised_merchants_per_period
    p_a, p_b, p_c = rates.amount_anomaly, rates.compromised_merchant, rates.compromised_card
    r = col("_r")
    scenario = (
        F.when(r < p_a, F.lit("amount_anomaly"))
        .when(r < p_a + p_b, F.lit("compromised_merchant"))
        .when(r < p_a + p_b + p_c, F.lit("compromised_card"))
    )
    is_card = col("_scenario") == "compromised_card"

    # 1. Which scenario; which period (merchant breaches) and block (stolen-card bursts).
    steps = df.select(
        col("value").cast("long").alias("value"),
        *([col("timestamp")] if clock == "source" else []),
    ).select(
        "*",
        u("scenario").alias("_r"),
        F.floor(col("value") / sim.merchant_period_rows).alias("_period"),
        F.floor(col("value") / rates.block_rows).alias("_block"),
    )
    steps = steps.select("*", scenario.alias("_scenario")).drop("_r")
    # 2. Who pays: a random user, or the victim of this block's stolen card.
    steps = steps.select(
        "*",
        F.when(is_card, _index_below(u("victim", col("_block")), sim.n_users))
        .otherwise(_index_below(u("user"), sim.n_users))
        .alias("user_idx"),
    )
    steps = steps.select(
        "*",
        # The user's profile: home country, typical spend (log-normal, 3x spread between
        # the 10th and 90th percentile), how often they buy online, cards.
        _weighted_index(u("home", user), [c[3] for c in COUNTRIES]).alias("_home"),
        F.exp(0.5 * _normal(u("spend1", user), u("spend2", user))).alias("_spend"),
        (0.05 + 0.5 * F.pow(u("online_share", user), 2)).alias("_online_share"),
        F.when(u("cards", user) < 0.3, 2).otherwise(1).alias("_n_cards"),
        F.array(
            *[
                _index_below(_uniform(seed, "merchant_breach", col("_period"), F.lit(j)), sim.n_merchants)
                for j in range(k)
            ]
        ).alias("_breached"),
        F.when(is_card, u("abroad") < 0.6).otherwise(u("travel") < 0.04).alias("_abroad"),
    )
    # 3. Where: a merchant in the home country (or abroad), or one of the period's breached merchants.
    foreign = F.pmod(col("_home") + 1 + _index_below(u("where"), len(COUNTRIES) - 1), len(COUNTRIES))
    steps = steps.select("*", F.when(col("_abroad"), foreign).otherwise(col("_home")).alias("_tx_country"))
    local_merchant = _pick(offsets, col("_tx_country")) + _index_below(u("merchant"), _pick(counts, col("_tx_country")))
    breached_pick = F.element_at(col("_breached"), (_index_below(u("breach_pick"), k) + 1).cast("int"))
    steps = steps.select(
        "*",
        F.when(col("_scenario") == "compromised_merchant", breached_pick)
        .otherwise(local_merchant)
        .alias("merchant_idx"),
    )
    # A breached merchant's genuine-looking traffic in its period is fraud too.
    steps = steps.withColumn(
        "_scenario",
        F.when(
            col("_scenario").isNull() & F.array_contains(col("_breached"), col("merchant_idx")),
            F.lit("compromised_merchant"),
        ).otherwise(col("_scenario")),
    ).select(
        # Merchants are numbered by country (merchant_blocks); each has one category.
        _block_of(merchant, offsets).alias("_country"),
        _weighted_index(u("category", merchant), [c[1] for c in CATEGORIES]).alias("_category"),
        "*",
    )

    # Amounts: heavy-tailed (log-normal) around the category median, scaled by the
    # user's typical spend, then by the scenario, then into the local currency.
    category, country = col("_category"), col("_country")
    z = _normal(u("amount_u1"), u("amount_u2"))
    log_median = _pick([math.log(c[2]) for c in CATEGORIES], category)
    base_usd = F.exp(log_median + _pick([c[3] for c in CATEGORIES], category) * z)
    multiplier = (
        F.when(col("_scenario") == "amount_anomaly", 6.0 + 24.0 * u("anomaly"))
        .when(col("_scenario") == "compromised_merchant", 1.5 + 2.5 * u("breach_amount"))
        .when(is_card, 1.0 + 3.0 * u("card_amount"))
        .otherwise(F.lit(1.0))
    )
    amount = F.round(base_usd * col("_spend") * multiplier * _pick([c[2] for c in COUNTRIES], country), 2)

    category_channel = _pick([c[4] for c in CATEGORIES], category)
    online_capable = category.isin([i for i, c in enumerate(CATEGORIES) if c[0] in ONLINE_CAPABLE])
    # A stolen card's details are mostly used card-not-present, wherever that is possible at all.
    online_capable = online_capable | (
        is_card & (category_channel != "atm") & (_pick([c[0] for c in CATEGORIES], category) != "fuel")
    )
    goes_online = F.when(is_card, u("card_online") < 0.6).otherwise(u("online") < col("_online_share"))
    channel = F.when(online_capable & goes_online, F.lit("online")).otherwise(category_channel)

    # Cards: a user's first or second card; a stolen card is always the victim's first.
    card_idx = F.when(is_card, F.lit(0)).otherwise(_index_below(u("card"), col("_n_cards")))
    card_id = F.concat(
        F.lit("card_"), F.lower(F.hex(F.xxhash64(F.lit(seed), F.lit("card"), col("user_idx"), card_idx)))
    )

    return steps.select(
        _padded("tx-", col("value"), 12).alias("transaction_id"),
        event_time.cast("timestamp").alias("event_time"),
        _padded("u", col("user_idx"), 6).alias("user_id"),
        card_id.alias("card_id"),
        _padded("m", col("merchant_idx"), 5).alias("merchant_id"),
        _pick([c[0] for c in CATEGORIES], category).alias("merchant_category"),
        amount.cast("double").alias("amount"),
        _pick([c[1] for c in COUNTRIES], country).alias("currency"),
        _pick([c[0] for c in COUNTRIES], country).alias("country"),
        channel.alias("channel"),
        col("_scenario").isNotNull().cast("int").alias("label_is_fraud"),
        col("_scenario").alias("label_scenario"),
        F.lit(None).cast("string").alias("_raw"),
        F.lit(source).alias("_source"),
        F.current_timestamp().alias("_ingest_time"),
    )


def _batch_clock(sim: SimulatorSettings, rates: ScenarioRates) -> Column:
    """The simulated clock at the batch's rate, with one exception: a stolen card's burst
    keeps the pace it has in a live stream. Its rows happen within ``BURST_SECONDS`` of the
    block's first row (at a live rate of a few hundred rows a second a block passes in
    seconds; at ``rows_per_day`` it would take a day), so training data has rapid bursts
    too, at any hour of the day; on a clock as quick as a live stream's, at its pace."""
    from pyspark.sql import functions as F

    rows_per_second = sim.rows_per_day / SECONDS_PER_DAY
    block_start = F.col("_block") * rates.block_rows
    # Seconds between a burst's rows: the live pace of the clock's rate when that is quicker.
    spacing = min(BURST_SECONDS / rates.block_rows, 1 / rows_per_second)
    within_block = (F.col("value") - block_start) * spacing
    is_card = F.col("_scenario") == "compromised_card"
    value = F.when(is_card, block_start + within_block * rows_per_second).otherwise(F.col("value"))
    return simulated_clock(sim.start_time, rows_per_second, value)


def simulated_clock(start: datetime, rows_per_second: float, value: Column | None = None) -> Column:
    """Event time of row ``value`` on a clock that starts at ``start`` and ticks ``rows_per_second``
    rows a second, to the microsecond: the rate source's own numbering, so batch and stream agree."""
    from pyspark.sql import functions as F

    value = F.col("value") if value is None else value
    start_micros = int(start.timestamp()) * 1_000_000 + start.microsecond
    return F.timestamp_micros(F.lit(start_micros) + F.floor(value * (1_000_000 / rows_per_second)).cast("long"))


def generate_batch(spark: SparkSession, sim: SimulatorSettings, n: int, partitions: int | None = None) -> DataFrame:
    """``n`` transactions on the synthetic clock, values ``0 .. n-1``."""
    rows = spark.range(0, n, numPartitions=partitions or spark.sparkContext.defaultParallelism)
    return simulate(rows.withColumnRenamed("id", "value"), sim, clock="batch", source="simulator")


def rate_stream(spark: SparkSession, sim: SimulatorSettings, rows_per_second: int, partitions: int) -> DataFrame:
    """An endless stream of transactions at ``rows_per_second`` from Spark's ``rate`` source,
    on the wall clock or, with ``sim.stream_start_time``, on the simulated clock."""
    rows = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", rows_per_second)
        .option("numPartitions", partitions)
        .load()
    )
    return simulate(rows, sim, clock="source", source=SOURCE_RATE, rows_per_second=rows_per_second)


def summarize(transactions: DataFrame) -> dict:
    """Row count, fraud share and rows per scenario of a transactions DataFrame."""
    from pyspark.sql import functions as F

    totals = transactions.agg(F.count("*").alias("rows"), F.sum("label_is_fraud").alias("fraud")).first()
    assert totals is not None  # an aggregate without grouping has one row
    rows, fraud = int(totals["rows"]), int(totals["fraud"] or 0)
    by_scenario = {
        r["label_scenario"]: int(r["count"])
        for r in transactions.where(F.col("label_scenario").isNotNull()).groupBy("label_scenario").count().collect()
    }
    return {
        "rows": rows,
        "fraud_rows": fraud,
        "fraud_share": round(fraud / rows, 5) if rows else 0.0,
        "scenarios": {name: by_scenario.get(name, 0) for name in SCENARIOS},
    }
