"""The transaction simulator, written as Spark column expressions.

Every attribute of a transaction is a pure function of ``(seed, value)``, where
``value`` is a row number: ``spark.range`` gives it for a batch (training data,
``fraudlake generate``) and the ``rate`` source gives it for a stream. The same
seed and value always give the same transaction, and ``transaction_id`` is
derived from ``value``, so it is unique and a restarted stream can be checked
for gaps and duplicates.

The population (users with a home country, typical spend, active hours and
usual channels; merchants with a category and country; each user's cards) is
drawn once from the seed with numpy and joined by broadcast.

Fraud scenarios (labelled in ``label_is_fraud`` / ``label_scenario``):

``amount_anomaly``
    A user's own card at a usual merchant, for many times their typical amount.
``compromised_merchant``
    The stream is cut into periods of ``merchant_period_rows`` transactions; in each
    period a few merchants are compromised and every transaction there is fraud.
``compromised_card``
    The stream is cut into blocks of consecutive transactions; in each block one
    stolen card makes a burst of about ``burst_size`` rapid transactions, often
    abroad, online, or (on the batch clock) at night.

Clocks: a stream keeps the source's timestamp as ``event_time``. A batch uses a
synthetic clock (``start_time``, ``rows_per_day``) on which genuine transactions
fall in their user's active hours and stolen-card bursts cluster at night within
minutes, so training data has realistic time features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fraudlake.conf.settings import SimulatorSettings

# country, currency, units of currency per USD, share of card holders
COUNTRIES = [
    ("US", "USD", 1.0, 0.32),
    ("GB", "GBP", 0.79, 0.10),
    ("DE", "EUR", 0.92, 0.10),
    ("FR", "EUR", 0.92, 0.08),
    ("ES", "EUR", 0.92, 0.05),
    ("IT", "EUR", 0.92, 0.05),
    ("NL", "EUR", 0.92, 0.04),
    ("CA", "CAD", 1.36, 0.06),
    ("AU", "AUD", 1.52, 0.04),
    ("JP", "JPY", 150.0, 0.04),
    ("BR", "BRL", 5.0, 0.04),
    ("MX", "MXN", 17.0, 0.03),
    ("IN", "INR", 83.0, 0.03),
    ("SE", "SEK", 10.5, 0.02),
]

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

# Active-hours profiles: (first hour, number of hours). Genuine spending stays inside them.
ACTIVE_HOURS = [(7, 15), (9, 14), (6, 13), (11, 14)]
NIGHT_HOURS = 6  # 00:00-05:59

SCENARIOS = ("amount_anomaly", "compromised_merchant", "compromised_card")
SOURCE_RATE = "rate"


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


def _weighted_choice(rng: np.random.Generator, weights: list[float], size: int) -> np.ndarray:
    w = np.asarray(weights, dtype=float)
    return rng.choice(len(w), size=size, p=w / w.sum())


def build_population(sim: SimulatorSettings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Users and merchants, drawn from the seed (same seed, same population).

    Merchants are sorted by country so that the merchants of country ``c`` are the
    contiguous indexes ``offset[c] .. offset[c] + count[c] - 1``.
    """
    rng = np.random.default_rng(sim.seed)
    country_weights = [c[3] for c in COUNTRIES]

    users = pd.DataFrame(
        {
            "user_idx": np.arange(sim.n_users, dtype=np.int64),
            "home_country_idx": _weighted_choice(rng, country_weights, sim.n_users).astype(np.int32),
            # Typical spend relative to the category median: some users spend 3x more than others.
            "spend_factor": np.exp(rng.normal(0.0, 0.5, sim.n_users)),
            "hours_profile": rng.integers(0, len(ACTIVE_HOURS), sim.n_users).astype(np.int32),
            # Usual channels: the share of online-capable purchases a user makes online.
            "online_share": rng.beta(2.0, 5.0, sim.n_users),
            "n_cards": rng.choice([1, 2], size=sim.n_users, p=[0.7, 0.3]).astype(np.int32),
        }
    )

    # Every country has at least one merchant, the rest follow the card-holder shares.
    extra = max(0, sim.n_merchants - len(COUNTRIES))
    merchant_country = np.sort(
        np.concatenate([np.arange(len(COUNTRIES)), _weighted_choice(rng, country_weights, extra)])[: sim.n_merchants]
    )
    merchants = pd.DataFrame(
        {
            "merchant_idx": np.arange(sim.n_merchants, dtype=np.int64),
            "merchant_country_idx": merchant_country.astype(np.int32),
            "category_idx": _weighted_choice(rng, [c[1] for c in CATEGORIES], sim.n_merchants).astype(np.int32),
        }
    )
    return users, merchants


def country_offsets(merchants: pd.DataFrame) -> tuple[list[int], list[int]]:
    counts = merchants.groupby("merchant_country_idx").size().reindex(range(len(COUNTRIES)), fill_value=0)
    offsets = np.concatenate([[0], np.cumsum(counts.to_numpy())[:-1]])
    return [int(x) for x in offsets], [int(x) for x in counts]


# ----------------------------------------------------------------------------- expressions


def _uniform(seed: int, salt: str, *keys):
    """A deterministic uniform [0, 1) from the seed, a salt and key columns."""
    from pyspark.sql import functions as F

    bits = F.xxhash64(F.lit(seed), F.lit(salt), *keys).bitwiseAND(F.lit((1 << 53) - 1))
    return bits.cast("double") / float(1 << 53)


def _pick(values: list, index_col):
    """``values[index]`` for a small literal list."""
    from pyspark.sql import functions as F

    return F.element_at(F.array(*[F.lit(v) for v in values]), index_col.cast("int") + 1)


def _index_below(u, n):
    """An integer in ``[0, n)`` from a uniform column (``n`` a column or int)."""
    from pyspark.sql import functions as F

    return F.floor(u * n).cast("long")


def simulate(df, sim: SimulatorSettings, clock: str = "batch", source: str = SOURCE_RATE):
    """Turn rows with a ``value`` column (and ``timestamp``, for ``clock="source"``) into transactions.

    Returns the bronze columns, in the bronze order. Pure: no I/O, works on batch and streaming frames.
    """
    from pyspark.sql import functions as F

    if clock not in ("batch", "source"):
        raise ValueError(f"clock must be 'batch' or 'source', not {clock!r}")
    spark = df.sparkSession
    rates = scenario_rates(sim)
    users_pd, merchants_pd = build_population(sim)
    offsets, counts = country_offsets(merchants_pd)
    users = F.broadcast(spark.createDataFrame(users_pd))
    merchants = F.broadcast(spark.createDataFrame(merchants_pd))
    seed = sim.seed
    v = F.col("value")

    def u(salt: str, *keys):
        return _uniform(seed, salt, *(keys or (v,)))

    # Which scenario, if any, this draw is.
    r = u("scenario")
    scenario = (
        F.when(r < rates.amount_anomaly, F.lit("amount_anomaly"))
        .when(r < rates.amount_anomaly + rates.compromised_merchant, F.lit("compromised_merchant"))
        .when(
            r < rates.amount_anomaly + rates.compromised_merchant + rates.compromised_card,
            F.lit("compromised_card"),
        )
    )

    period = F.floor(v / sim.merchant_period_rows)
    block = F.floor(v / rates.block_rows)
    k = sim.compromised_merchants_per_period
    compromised_set = F.array(*[_index_below(_uniform(seed, "merchant_breach", period, F.lit(j)), sim.n_merchants) for j in range(k)])

    steps = (
        df.select(v.cast("long").alias("value"), *([F.col("timestamp")] if clock == "source" else []))
        .withColumn("_scenario", scenario)
        .withColumn(
            "user_idx",
            F.when(F.col("_scenario") == "compromised_card", _index_below(u("victim", block), sim.n_users)).otherwise(
                _index_below(u("user"), sim.n_users)
            ),
        )
        .join(users, "user_idx")
    )

    card_scenario = F.col("_scenario") == "compromised_card"
    abroad = F.when(card_scenario, u("abroad") < 0.6).otherwise(u("travel") < 0.04)
    foreign_idx = F.pmod(F.col("home_country_idx") + 1 + _index_below(u("where"), len(COUNTRIES) - 1), len(COUNTRIES))
    tx_country_idx = F.when(abroad, foreign_idx).otherwise(F.col("home_country_idx"))
    local_merchant = _pick(offsets, tx_country_idx) + _index_below(u("merchant"), _pick(counts, tx_country_idx))
    breached_merchant = F.element_at(compromised_set, (_index_below(u("breach_pick"), k) + 1).cast("int"))

    steps = (
        steps.withColumn(
            "merchant_idx",
            F.when(F.col("_scenario") == "compromised_merchant", breached_merchant).otherwise(local_merchant),
        )
        # A compromised merchant's genuine-looking traffic in its period is fraud too.
        .withColumn(
            "_scenario",
            F.when(
                F.col("_scenario").isNull() & F.array_contains(compromised_set, F.col("merchant_idx")),
                F.lit("compromised_merchant"),
            ).otherwise(F.col("_scenario")),
        )
        .join(merchants, "merchant_idx")
    )

    # Amounts: heavy-tailed (log-normal) around the category median, scaled by the
    # user's typical spend, then by the scenario, then into the local currency.
    category = F.col("category_idx")
    z = F.sqrt(-2.0 * F.log(u("amount_u1") + 1e-12)) * F.cos(2 * math.pi * u("amount_u2"))
    base_usd = F.exp(F.log(_pick([c[2] for c in CATEGORIES], category)) + _pick([c[3] for c in CATEGORIES], category) * z)
    multiplier = (
        F.when(F.col("_scenario") == "amount_anomaly", 6.0 + 24.0 * u("anomaly"))
        .when(F.col("_scenario") == "compromised_merchant", 1.5 + 2.5 * u("breach_amount"))
        .when(card_scenario, 1.0 + 3.0 * u("card_amount"))
        .otherwise(F.lit(1.0))
    )
    country = F.col("merchant_country_idx")
    amount = F.round(base_usd * F.col("spend_factor") * multiplier * _pick([c[2] for c in COUNTRIES], country), 2)

    category_channel = _pick([c[4] for c in CATEGORIES], category)
    online_capable = category.isin([i for i, c in enumerate(CATEGORIES) if c[0] in ONLINE_CAPABLE])
    goes_online = F.when(card_scenario, u("card_online") < 0.6).otherwise(u("online") < F.col("online_share"))
    channel = F.when(online_capable & goes_online, F.lit("online")).otherwise(category_channel)

    # Cards: a user's first or second card; a stolen card is always the victim's first.
    card_idx = F.when(card_scenario, F.lit(0)).otherwise(_index_below(u("card"), F.col("n_cards")))
    card_id = F.concat(F.lit("card_"), F.lower(F.hex(F.xxhash64(F.lit(seed), F.lit("card"), F.col("user_idx"), card_idx))))

    if clock == "source":
        event_time = F.col("timestamp")
    else:
        event_time = _batch_clock(sim, rates, v, block, card_scenario, u)

    label = F.col("_scenario").isNotNull().cast("int")
    return steps.select(
        F.format_string("tx-%012d", v).alias("transaction_id"),
        event_time.cast("timestamp").alias("event_time"),
        F.format_string("u%06d", F.col("user_idx")).alias("user_id"),
        card_id.alias("card_id"),
        F.format_string("m%05d", F.col("merchant_idx")).alias("merchant_id"),
        _pick([c[0] for c in CATEGORIES], category).alias("merchant_category"),
        amount.cast("double").alias("amount"),
        _pick([c[1] for c in COUNTRIES], country).alias("currency"),
        _pick([c[0] for c in COUNTRIES], country).alias("country"),
        channel.alias("channel"),
        label.alias("label_is_fraud"),
        F.col("_scenario").alias("label_scenario"),
        F.lit(None).cast("string").alias("_raw"),
        F.lit(source).alias("_source"),
        F.current_timestamp().alias("_ingest_time"),
    )


def _batch_clock(sim: SimulatorSettings, rates: ScenarioRates, v, block, card_scenario, u):
    """Synthetic event time for batch data: day from the row number, hour from behaviour."""
    from pyspark.sql import functions as F

    start = int(sim.start_time.timestamp())
    day_start = F.lit(start) + F.floor(v / sim.rows_per_day) * 86400
    profile = F.col("hours_profile")
    first_hour = _pick([p[0] for p in ACTIVE_HOURS], profile)
    span = _pick([p[1] for p in ACTIVE_HOURS], profile)
    genuine_seconds = (first_hour * 3600 + F.floor(u("time") * span * 3600)) % 86400

    # A burst happens within ~15 minutes, at night more often than not.
    block_day_start = F.lit(start) + F.floor(block * rates.block_rows / sim.rows_per_day) * 86400
    burst_hour = F.when(u("burst_night", block) < 0.6, F.floor(u("burst_hour", block) * NIGHT_HOURS)).otherwise(
        F.floor(u("burst_hour", block) * 24)
    )
    burst_seconds = burst_hour * 3600 + F.floor(u("burst_offset") * 900)

    epoch = F.when(card_scenario, block_day_start + burst_seconds).otherwise(day_start + genuine_seconds)
    return F.timestamp_seconds(epoch)


def generate_batch(spark, sim: SimulatorSettings, n: int, partitions: int | None = None):
    """``n`` transactions on the synthetic clock, values ``0 .. n-1``."""
    rows = spark.range(0, n, numPartitions=partitions or spark.sparkContext.defaultParallelism)
    return simulate(rows.withColumnRenamed("id", "value"), sim, clock="batch", source="simulator")


def rate_stream(spark, sim: SimulatorSettings, rows_per_second: int, partitions: int):
    """An endless stream of transactions at ``rows_per_second`` from Spark's ``rate`` source."""
    rows = (
        spark.readStream.format("rate")
        .option("rowsPerSecond", rows_per_second)
        .option("numPartitions", partitions)
        .load()
    )
    return simulate(rows, sim, clock="source", source=SOURCE_RATE)


def summarize(transactions) -> dict:
    """Row count, fraud share and rows per scenario of a transactions DataFrame."""
    from pyspark.sql import functions as F

    totals = transactions.agg(F.count("*").alias("rows"), F.sum("label_is_fraud").alias("fraud")).first()
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
