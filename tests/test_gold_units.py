"""Gold's pure pieces, without a JVM: which activity-alert candidates raise an alert, and the
5-minute windows summed from the recent user minutes gold keeps in memory."""

from __future__ import annotations

import random

from fraudlake.gold.aggregates import first_alert_per_burst
from fraudlake.gold.bursts import RecentUserMinutes, UserMinute, window_starts_of

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


# ---------------------------------------------------------------- recent user minutes (bursts)


def _user_minutes(transactions: list[tuple[str, int, float | None]]) -> dict[tuple[str, int], UserMinute]:
    """Transactions ``(user, event time µs, amount USD or None)`` → their sums per user minute, as a gold batch adds them."""
    minutes: dict[tuple[str, int], UserMinute] = {}
    for user, at, amount in transactions:
        key = (user, at - at % MINUTE)
        old = minutes.get(key)
        total = (old.total_amount if old else None, amount)
        known = [a for a in total if a is not None]
        minutes[key] = UserMinute(
            user,
            key[1],
            (old.tx_count if old else 0) + 1,
            sum(known) if known else None,
            0,
            max(at, old.last_event_time if old else at),
        )
    return minutes


def _windows_from_transactions(transactions, threshold: int) -> set[tuple[str, int, int]]:
    """Every busy sliding window ``(user, start, tx_count)``, counted from the transactions themselves."""
    counts: dict[tuple[str, int], int] = {}
    for user, at, _ in transactions:
        for start in window_starts_of(at - at % MINUTE):
            counts[(user, start)] = counts.get((user, start), 0) + 1
    return {(user, start, n) for (user, start), n in counts.items() if n >= threshold}


def test_windows_summed_from_batches_of_user_minutes_equal_windows_counted_from_the_transactions():
    rng = random.Random(7)
    transactions = [
        (f"u{rng.randrange(4)}", rng.randrange(0, 30 * MINUTE), rng.choice([1.0, 2.5, None])) for _ in range(400)
    ]
    transactions.sort(key=lambda t: t[1])
    recent = RecentUserMinutes()
    found: set[tuple[str, int, int]] = set()
    # Micro-batches of 40 transactions: each adds its sums per user minute to the ones kept.
    for end in range(40, len(transactions) + 1, 40):
        changed = _user_minutes(transactions[end - 40 : end])
        recent.add(changed.values())
        found |= {(w.user_id, w.start, w.tx_count) for w in recent.busy_windows(changed, threshold=6)}
        recent.forget_before(transactions[end - 1][1] - 6 * MINUTE)  # the oldest minute still open, less a window
    assert found  # the draw has busy windows
    # Every busy window was seen, and its last sighting carried its full count.
    expected = _windows_from_transactions(transactions, threshold=6)
    last_seen = {(user, start): n for user, start, n in sorted(found, key=lambda w: w[2])}
    assert {(user, start, n) for (user, start), n in last_seen.items()} == expected


def test_a_window_sums_known_amounts_and_is_unknown_only_when_every_amount_is():
    minutes = _user_minutes([("u1", 0, None), ("u1", MINUTE, 4.0), ("u2", 0, None)])
    recent = RecentUserMinutes(minutes.values())
    assert recent.window("u1", 0).total_amount == 4.0
    assert recent.window("u2", 0).total_amount is None
    assert recent.window("u2", 0).tx_count == 1
    assert recent.window("u3", 0) is None


def test_sums_added_in_two_batches_equal_the_sums_of_one():
    transactions = [("u1", 0, None), ("u1", 10, 2.0), ("u1", 20, None), ("u1", MINUTE, None)]
    in_two = RecentUserMinutes(_user_minutes(transactions[:1]).values())
    in_two.add(_user_minutes(transactions[1:]).values())
    in_one = RecentUserMinutes(_user_minutes(transactions).values())
    assert in_two.window("u1", 0) == in_one.window("u1", 0)
    assert (in_two.window("u1", 0).tx_count, in_two.window("u1", 0).total_amount) == (4, 2.0)
    assert in_two.window("u1", 0).last_event_time == MINUTE


def test_a_window_holding_only_minutes_of_other_users_or_outside_it_is_not_busy():
    minutes = _user_minutes([("u1", 0, 1.0)] * 3 + [("u1", 5 * MINUTE, 1.0)] * 3 + [("u2", MINUTE, 1.0)] * 3)
    recent = RecentUserMinutes(minutes.values())
    # u1's minutes 0 and 5 are six transactions, but no 5-minute window holds both.
    assert recent.busy_windows([("u1", 5 * MINUTE)], threshold=4) == []
    assert [(w.start, w.tx_count) for w in recent.busy_windows([("u1", 5 * MINUTE)], threshold=3)] == [
        (start, 3) for start in range(1 * MINUTE, 6 * MINUTE, MINUTE)
    ]


def test_forgotten_minutes_no_longer_count():
    recent = RecentUserMinutes(_user_minutes([("u1", 0, 1.0), ("u1", 2 * MINUTE, 1.0)]).values())
    assert recent.window("u1", 0).tx_count == 2
    recent.forget_before(MINUTE)
    assert recent.window("u1", 0).tx_count == 1
    assert len(recent) == 1
