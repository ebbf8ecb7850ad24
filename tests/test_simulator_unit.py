"""The simulator's pure parts: scenario rates and the population. No JVM."""

from __future__ import annotations

import pandas as pd
import pytest

from fraudlake.conf.settings import SimulatorSettings
from fraudlake.simulator import COUNTRIES, build_population, country_offsets, scenario_rates


def test_scenario_rates_add_up_to_the_fraud_rate_with_merchant_collisions():
    sim = SimulatorSettings(fraud_rate=0.02)
    rates = scenario_rates(sim)
    collisions = sim.compromised_merchants_per_period / sim.n_merchants * (1 - sim.fraud_rate)
    total = rates.amount_anomaly + rates.compromised_merchant + collisions + rates.compromised_card
    assert total == pytest.approx(0.02)
    assert rates.amount_anomaly == pytest.approx(0.02 * 0.4)


def test_stolen_card_blocks_hold_one_burst_of_the_configured_size():
    sim = SimulatorSettings(fraud_rate=0.015, burst_size=8)
    rates = scenario_rates(sim)
    assert rates.block_rows * rates.compromised_card == pytest.approx(8, rel=0.01)


def test_a_scenario_with_zero_share_is_never_drawn():
    sim = SimulatorSettings(scenario_mix={"amount_anomaly": 1, "compromised_merchant": 0, "compromised_card": 0})
    rates = scenario_rates(sim)
    assert rates.compromised_merchant == 0 and rates.compromised_card == 0
    assert rates.amount_anomaly == pytest.approx(sim.fraud_rate)


def test_population_is_deterministic_per_seed():
    a_users, a_merchants = build_population(SimulatorSettings(seed=3, n_users=500, n_merchants=100))
    b_users, b_merchants = build_population(SimulatorSettings(seed=3, n_users=500, n_merchants=100))
    c_users, _ = build_population(SimulatorSettings(seed=4, n_users=500, n_merchants=100))
    pd.testing.assert_frame_equal(a_users, b_users)
    pd.testing.assert_frame_equal(a_merchants, b_merchants)
    assert not a_users.equals(c_users)


def test_every_country_has_contiguous_merchants():
    _, merchants = build_population(SimulatorSettings(n_merchants=20))
    offsets, counts = country_offsets(merchants)
    assert len(offsets) == len(COUNTRIES) and min(counts) >= 1 and sum(counts) == 20
    for country, (offset, count) in enumerate(zip(offsets, counts)):
        block = merchants.iloc[offset : offset + count]
        assert (block["merchant_country_idx"] == country).all()


def test_typical_spend_varies_between_users():
    users, _ = build_population(SimulatorSettings(n_users=2000))
    spread = users["spend_factor"].quantile(0.9) / users["spend_factor"].quantile(0.1)
    assert spread > 2
