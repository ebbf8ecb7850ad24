"""The simulator on real Spark: volumes, scenarios, fraud share, determinism, the stream form."""

from __future__ import annotations

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from fraudlake.cli import main
from fraudlake.conf.settings import SimulatorSettings
from fraudlake.simulator import SCENARIOS, generate_batch, simulate, summarize
from fraudlake.tables import BRONZE_COLUMNS

pytestmark = pytest.mark.spark

BRONZE_NAMES = [c.split()[0] for c in BRONZE_COLUMNS.strip().split(",\n")]
# 30,000 rows at 1.5% give ~450 frauds; binomial sd ~21 plus the merchant periods'
# share of traffic: +-0.3 percentage points is several standard deviations.
FRAUD_SHARE_TOLERANCE = 0.003


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    """`fraudlake generate --samples 30000` run in this process, read back."""
    out = tmp_path_factory.mktemp("generate") / "tx.parquet"
    home = out.parent / "home"
    assert main(["generate", "--samples", "30000", "--output", str(out), "--home", str(home)]) == 0
    frame = spark.read.parquet(str(out)).cache()
    yield frame
    frame.unpersist()


def test_generate_writes_the_requested_rows_in_the_bronze_schema(generated):
    assert generated.count() == 30_000
    assert generated.columns == BRONZE_NAMES
    assert generated.select(F.countDistinct("transaction_id")).first()[0] == 30_000


def test_all_scenarios_present_and_fraud_share_near_the_configured_rate(generated):
    summary = summarize(generated)
    assert all(summary["scenarios"][name] > 0 for name in SCENARIOS), summary
    assert abs(summary["fraud_share"] - SimulatorSettings().fraud_rate) <= FRAUD_SHARE_TOLERANCE, summary
    # Labels agree with each other: a scenario exactly when fraudulent.
    assert generated.where((F.col("label_is_fraud") == 1) != F.col("label_scenario").isNotNull()).count() == 0


def test_fraud_share_follows_the_setting(spark):
    sim = SimulatorSettings(fraud_rate=0.11)
    share = summarize(generate_batch(spark, sim, 20_000))["fraud_share"]
    assert share == pytest.approx(0.11, abs=0.01)


def test_same_seed_same_rows_other_seed_other_rows(spark):
    sim = SimulatorSettings(seed=11)
    first = generate_batch(spark, sim, 3_000).drop("_ingest_time")
    again = generate_batch(spark, sim, 3_000, partitions=3).drop("_ingest_time")
    assertDataFrameEqual(first, again)
    other = generate_batch(spark, SimulatorSettings(seed=12), 3_000).drop("_ingest_time")
    same_ids = first.alias("a").join(other.alias("b"), "transaction_id")
    assert same_ids.where(F.col("a.user_id") != F.col("b.user_id")).count() > 2_500


def test_amounts_are_heavy_tailed_and_anomalies_stand_out(generated):
    usd = generated.where("currency = 'USD'")
    q = usd.where("label_is_fraud = 0").approxQuantile("amount", [0.5, 0.99], 0.001)
    assert q[1] > 8 * q[0]  # long right tail
    anomaly_median = usd.where("label_scenario = 'amount_anomaly'").approxQuantile("amount", [0.5], 0.001)[0]
    assert anomaly_median > 5 * q[0]
    assert generated.where("amount <= 0 OR amount IS NULL").count() == 0


def test_stolen_card_bursts_are_rapid_and_online_at_any_hour(generated):
    bursts = (
        generated.where("label_scenario = 'compromised_card'")
        .groupBy("card_id")
        .agg(
            F.count("*").alias("n"), (F.max("event_time").cast("long") - F.min("event_time").cast("long")).alias("span")
        )
    )
    typical = bursts.approxQuantile("n", [0.5], 0.0)[0]
    assert typical >= 4
    assert bursts.where("n >= 4 AND span <= 900").count() >= 0.8 * bursts.where("n >= 4").count()
    card = generated.where("label_scenario = 'compromised_card'")
    genuine = generated.where("label_is_fraud = 0")

    def share(frame, condition):
        return frame.where(condition).count() / frame.count()

    assert share(card, "channel = 'online'") > 1.5 * share(genuine, "channel = 'online'")


def test_every_hour_of_the_utc_day_has_genuine_spending_and_the_same_fraud_share(generated):
    """One clock for batch and stream: no hour-of-day rule for a model to learn that a live
    stream would contradict at another hour (the rate stream's hours are the wall clock's)."""
    hours = (
        generated.groupBy(F.hour("event_time").alias("h"))
        .agg(
            F.count("*").alias("n"),
            F.sum(1 - F.col("label_is_fraud")).alias("genuine"),
            F.avg("label_is_fraud").alias("fraud"),
        )
        .collect()
    )
    assert len(hours) == 24
    counts = [h["n"] for h in hours]
    assert max(counts) < 1.3 * min(counts)
    night = generated.where("hour(event_time) < 6").agg(F.avg("label_is_fraud")).first()[0]
    day = generated.where("hour(event_time) >= 6").agg(F.avg("label_is_fraud")).first()[0]
    assert abs(night - day) < 0.006


def test_compromised_merchants_are_fraudulent_for_their_period(generated):
    breached = generated.where("label_scenario = 'compromised_merchant'").select("merchant_id").distinct()
    assert 1 <= breached.count() <= 3  # 30,000 rows < one 50,000-row period: one set of 3 merchants
    at_breached = generated.join(breached, "merchant_id")
    assert at_breached.where("label_is_fraud = 0").count() == 0


def test_the_same_expressions_run_as_a_stream(spark, tmp_path):
    """simulate() on the rate source: ids follow the source's row numbers."""
    rows = spark.readStream.format("rate").option("rowsPerSecond", 200).load()
    stream = simulate(rows, SimulatorSettings(), clock="source")
    query = (
        stream.writeStream.format("memory")
        .queryName("simulated_stream")
        .option("checkpointLocation", str(tmp_path / "cp"))
        .trigger(processingTime="1 second")
        .start()
    )
    try:
        # Not processAllAvailable(): the rate source has new rows every second, so on a machine
        # slow enough that a batch outlasts a second it never runs out of them and that call never returns.
        import time

        deadline = time.time() + 60
        while spark.table("simulated_stream").count() < 200 and time.time() < deadline:
            time.sleep(0.5)
    finally:
        query.stop()
    try:
        got = spark.table("simulated_stream")
        assert got.count() >= 200
        assert got.columns == BRONZE_NAMES
        batch = generate_batch(spark, SimulatorSettings(), 200).drop("_ingest_time", "event_time", "_source")
        streamed = got.where("transaction_id < 'tx-000000000200'").drop("_ingest_time", "event_time", "_source")
        assertDataFrameEqual(streamed, batch)
    finally:
        spark.catalog.dropTempView("simulated_stream")  # the memory sink's table


def test_the_stream_can_run_on_the_simulated_clock_from_a_chosen_instant(spark):
    """stream_start_time: row n at n / rate seconds after it, whatever the wall clock says."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 11, 28, 3, 0, tzinfo=timezone.utc)
    rows = spark.range(0, 400).withColumnRenamed("id", "value").withColumn("timestamp", F.current_timestamp())
    stream = simulate(rows, SimulatorSettings(stream_start_time=start), clock="source", rows_per_second=200)
    got = stream.select(F.unix_micros("event_time").alias("us"), "transaction_id").orderBy("transaction_id").collect()
    expected = [int((start + timedelta(seconds=v / 200)).timestamp() * 1_000_000) for v in range(400)]
    assert [r["us"] for r in got] == expected


def test_ids_never_truncate_for_large_populations(spark):
    sim = SimulatorSettings(n_users=50_000_000, n_merchants=2_000_000)
    ids = generate_batch(spark, sim, 5_000).select(
        F.regexp_extract("user_id", r"^u(\d{6,})$", 1).cast("long").alias("user"),
        F.regexp_extract("merchant_id", r"^m(\d{5,})$", 1).cast("long").alias("merchant"),
    )
    stats = ids.agg(
        F.max("user"), F.max("merchant"), F.count_if(F.col("user").isNull() | F.col("merchant").isNull())
    ).first()
    assert stats[0] >= 1_000_000 and stats[0] < sim.n_users  # 7- and 8-digit users keep every digit
    assert stats[1] >= 100_000 and stats[1] < sim.n_merchants
    assert stats[2] == 0
