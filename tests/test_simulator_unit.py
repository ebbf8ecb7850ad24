"""The simulator's pure parts: scenario rates, weighted picks, merchant numbering. No JVM."""

from __future__ import annotations

import pytest

from fraudlake.conf.settings import SimulatorSettings
from fraudlake.simulator import COUNTRIES, cumulative_shares, merchant_blocks, scenario_rates

MIX = {"amount_anomaly": 0.8, "compromised_merchant": 0.4, "compromised_card": 0.4}  # 1/2, 1/4, 1/4 of fraud


def test_each_scenario_gets_its_share_of_the_fraud_rate():
    rates = scenario_rates(SimulatorSettings(fraud_rate=0.02, scenario_mix=MIX))
    assert rates.amount_anomaly == pytest.approx(0.01) and rates.compromised_card == pytest.approx(0.005)
    assert 0 < rates.compromised_merchant < 0.005  # see below


def test_genuine_traffic_at_compromised_merchants_counts_towards_their_share():
    # A compromised merchant's every transaction is fraud, genuine draws landing there too: the
    # more of the merchants are compromised, the fewer of that scenario are drawn explicitly.
    def merchant_draws(compromised: int) -> float:
        sim = SimulatorSettings(
            fraud_rate=0.02, scenario_mix=MIX, n_merchants=2_000, compromised_merchants_per_period=compromised
        )
        return scenario_rates(sim).compromised_merchant

    explicit = [merchant_draws(compromised) for compromised in (1, 3, 9)]
    assert 0.005 > explicit[0] > explicit[1] > explicit[2] > 0, explicit


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
