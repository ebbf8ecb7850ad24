"""Gold's pure pieces, without a JVM: which activity-alert candidates raise an alert."""

from __future__ import annotations

from fraudlake.gold.aggregates import first_alert_per_burst

MINUTE = 60 * 1_000_000
COOLDOWN = 5 * MINUTE


def _windows(user: str, first_end_minute: int, count: int) -> list[tuple[str, int]]:
    """``count`` sliding windows of one user, ending a minute apart."""
    return [(user, (first_end_minute + i) * MINUTE) for i in range(count)]


def test_one_burst_in_five_sliding_windows_raises_one_alert():
    kept = first_alert_per_burst(_windows("u1", 10, 5), {}, COOLDOWN)
    assert kept == [("u1", 10 * MINUTE)]


def test_a_second_burst_after_the_cool_down_raises_a_second_alert():
    candidates = _windows("u1", 10, 4) + _windows("u1", 30, 4)
    assert first_alert_per_burst(candidates, {}, COOLDOWN) == [("u1", 10 * MINUTE), ("u1", 30 * MINUTE)]


def test_an_alert_from_an_earlier_micro_batch_silences_the_rest_of_its_burst():
    # The first window of the burst was alerted in the previous batch; these arrive later.
    assert first_alert_per_burst(_windows("u1", 11, 3), {"u1": 10 * MINUTE}, COOLDOWN) == []
    assert first_alert_per_burst([("u1", 15 * MINUTE)], {"u1": 10 * MINUTE}, COOLDOWN) == [("u1", 15 * MINUTE)]


def test_users_do_not_silence_each_other_and_order_of_arrival_does_not_matter():
    candidates = _windows("u2", 10, 3) + _windows("u1", 10, 3)
    kept = first_alert_per_burst(list(reversed(candidates)), {"u3": 10 * MINUTE}, COOLDOWN)
    assert sorted(kept) == [("u1", 10 * MINUTE), ("u2", 10 * MINUTE)]


def test_without_a_cool_down_every_window_alerts():
    assert len(first_alert_per_burst(_windows("u1", 10, 5), {}, 0)) == 5


def test_windows_of_one_burst_alerting_at_the_same_transaction_raise_one_alert_for_the_earliest_window():
    # Live alerts are timed at the transaction that fills the window: every sliding window holding it
    # crosses at that same time. The tie is broken by the window's start, whatever the arrival order.
    at = 12 * MINUTE
    candidates = [("u1", at, start * MINUTE, f"window {start}") for start in (9, 7, 8)]
    assert first_alert_per_burst(candidates, {}, COOLDOWN) == [("u1", at, 7 * MINUTE, "window 7")]
