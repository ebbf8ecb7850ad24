"""The simulator's pure parts: scenario rates, weighted picks, merchant numbering. No JVM."""

from __future__ import annotations

import pytest

from fraudlake.conf.settings import SimulatorSettings
from fraudlake.simulator import COUNTRIES, cumulative_shares, merchant_blocks, scenario_rates


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


def test_cumulative_shares_end_at_one_and_follow_the_weights():
    assert cumulative_shares([1, 1, 2]) == pytest.approx([0.25, 0.5, 1.0])
    assert cumulative_shares([0.1, 0.2, 0.3])[-1] == 1.0


@pytest.mark.parametrize("n_merchants", [20, 2000, 12345])
def test_every_country_owns_a_contiguous_non_empty_block_of_merchants(n_merchants):
    offsets, counts = merchant_blocks(SimulatorSettings(n_merchants=n_merchants))
    assert len(offsets) == len(counts) == len(COUNTRIES)
    assert min(counts) >= 1 and sum(counts) == n_merchants
    assert offsets[0] == 0
    assert all(offsets[i] + counts[i] == offsets[i + 1] for i in range(len(COUNTRIES) - 1))


def test_too_few_merchants_for_the_countries_is_a_settings_error():
    with pytest.raises(ValueError, match="n_merchants"):
        SimulatorSettings(n_merchants=5)
