"""Behavioural features (fraudlake.ml.behaviour): point in time, and the same values however the
rows reach them, whole or micro-batch by micro-batch with a restart. Pure pandas: no JVM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fraudlake.ml.behaviour import (
    BEHAVIOUR_FEATURES,
    NO_PREVIOUS_SECONDS,
    BehaviourHistory,
    behaviour_features,
)

T0 = pd.Timestamp("2026-03-01T00:00:00Z")


def transactions(n: int = 6_000, days: int = 50, cards: int = 150, merchants: int = 40, seed: int = 3) -> pd.DataFrame:
    """Random cards at random merchants over ``days``, in time order, with shared instants."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, days * 86_400, n))
    seconds[1::97] = seconds[::97][: len(seconds[1::97])]  # some rows at the very same instant
    seconds.sort()
    card = rng.integers(0, cards, n)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{i:06d}" for i in range(n)],
            "event_time": T0 + pd.to_timedelta(seconds, unit="s"),
            "user_id": (card // 3).astype(str),  # a user has up to three cards
            "card_id": card.astype(str),
            "merchant_id": rng.integers(0, merchants, n).astype(str),
            "country": rng.choice(["US", "GB", "DE", "JP"], n),
            "amount": np.round(rng.lognormal(3.5, 1.0, n), 2),
            "currency": rng.choice(["USD", "GBP", "JPY"], n),
        }
    )


def labels_for(rows: pd.DataFrame, share: float = 0.08, seed: int = 4) -> pd.DataFrame:
    """Fraud labels for a share of the rows, arriving 0-14 days after the transaction."""
    rng = np.random.default_rng(seed)
    fraud = rows.sample(frac=share, random_state=seed)
    delay = pd.to_timedelta(rng.integers(0, 14 * 86_400, len(fraud)), unit="s")
    return pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"].to_numpy(),
            "label_is_fraud": 1,
            "label_time": (fraud["event_time"] + delay).to_numpy(),
        }
    )


@pytest.fixture(scope="module")
def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = transactions()
    return rows, labels_for(rows)


@pytest.fixture(scope="module")
def whole(history) -> pd.DataFrame:
    rows, labels = history
    return behaviour_features(rows, labels)


def test_micro_batches_with_a_restart_give_the_whole_historys_values_exactly(history, whole):
    rows, labels = history
    state = BehaviourHistory()
    state.add(rows.iloc[:0], labels)  # labels known up front; each row uses only those arrived before it
    parts = []
    for number, batch in enumerate(rows.iloc[i : i + 163] for i in range(0, len(rows), 163)):
        if number == 20:  # a restart: the history is rebuilt from the rows already scored
            scored = pd.concat(parts)
            state = BehaviourHistory()
            state.add(rows.loc[scored.index], labels)
        parts.append(state.features(batch))
        state.add(batch)
    streamed = pd.concat(parts)
    assert list(streamed.columns) == list(BEHAVIOUR_FEATURES)
    pd.testing.assert_frame_equal(streamed, whole, check_exact=True)


def test_later_transactions_and_later_labels_change_no_earlier_row(history, whole):
    rows, labels = history
    cut = rows["event_time"].iloc[len(rows) // 2]
    earlier = rows[rows["event_time"] < cut]
    known = labels[labels["label_time"] < cut]
    pd.testing.assert_frame_equal(behaviour_features(earlier, known), whole.loc[earlier.index], check_exact=True)


def test_rows_at_the_same_instant_do_not_see_each_other():
    rows = transactions(n=4, days=1, cards=1, merchants=1).assign(event_time=T0)
    features = behaviour_features(rows)
    assert (features["card_count_10m"] == 0).all()
    assert (features["card_seconds_since_previous"] == NO_PREVIOUS_SECONDS).all()


def burst(times_seconds: list[int], amounts: list[float], merchants: list[str], countries: list[str]) -> pd.DataFrame:
    n = len(times_seconds)
    return pd.DataFrame(
        {
            "transaction_id": [f"b{i}" for i in range(n)],
            "event_time": T0 + pd.to_timedelta(times_seconds, unit="s"),
            "user_id": "victim",
            "card_id": "stolen",
            "merchant_id": merchants,
            "country": countries,
            "amount": amounts,
            "currency": "USD",
        }
    )


def test_a_stolen_cards_burst_shows_in_its_card_features():
    # A month of one purchase a day around 40 USD, then eight purchases in three minutes abroad.
    usual = [day * 86_400 for day in range(30)]
    spree = [30 * 86_400 + 20 * k for k in range(8)]
    rows = burst(
        usual + spree,
        [40.0] * 30 + [400.0] * 8,
        ["m-home"] * 30 + [f"m-{k % 3}" for k in range(8)],
        ["US"] * 30 + ["BR", "BR", "MX", "BR", "MX", "BR", "BR", "MX"],
    )
    last = behaviour_features(rows).iloc[-1]
    assert last["card_count_10m"] == 7 and last["card_count_1h"] == 7
    assert last["card_amount_usd_10m"] == pytest.approx(7 * 400.0)
    assert last["card_seconds_since_previous"] == 20
    assert last["card_merchants_1h"] == 3 and last["card_countries_1h"] == 2
    # The usual purchases in the 30 days before it: 29 days of 40 USD and seven of the spree's 400.
    assert last["card_count_30d"] == 29 + 7
    assert last["card_amount_vs_30d_mean"] == pytest.approx(400.0 / ((29 * 40.0 + 7 * 400.0) / 36))
    # Its usual is the weeks before the last one (days 1-23 here): 40 USD, a tenth of the spree's.
    assert last["card_amount_vs_usual"] == pytest.approx(10.0)
    assert last["card_max_7d_vs_usual"] == pytest.approx(10.0)
    first = behaviour_features(rows).iloc[0]
    assert first["card_count_30d"] == 0 and first["card_amount_vs_30d_mean"] == 1.0


def test_a_users_features_count_all_its_cards_and_a_cards_only_its_own():
    # A user buys with one card on two days, then a second card of theirs is used three times.
    times = [0, 86_400 + 600, 2 * 86_400 + 60, 2 * 86_400 + 120, 2 * 86_400 + 180]
    rows = burst(times, [20.0] * 5, ["m"] * 5, ["US"] * 5)
    rows["card_id"] = ["first", "first", "second", "second", "second"]
    last = behaviour_features(rows).iloc[-1]
    assert last["card_count_1d"] == 2 and last["card_count_7d"] == 2
    assert last["user_count_1d"] == 3 and last["user_count_7d"] == 4
    assert last["user_seconds_since_previous"] == last["card_seconds_since_previous"] == 60
    other_user = rows.assign(user_id=["a", "a", "b", "b", "b"])
    assert behaviour_features(other_user).iloc[-1]["user_count_7d"] == 2


def test_a_merchants_fraud_share_uses_only_labels_that_had_arrived():
    day = 86_400
    rows = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d"],
            # Three purchases on day 0 at one merchant, then one on day 8.
            "event_time": T0 + pd.to_timedelta([0, 60, 120, 8 * day], unit="s"),
            "user_id": ["1", "2", "3", "4"],
            "card_id": ["1", "2", "3", "4"],
            "merchant_id": "m",
            "country": "US",
            "amount": 10.0,
            "currency": "USD",
        }
    )
    labelled_in_time = pd.DataFrame(
        {"transaction_id": ["a"], "label_is_fraud": [1], "label_time": [T0 + pd.Timedelta(days=3)]}
    )
    labelled_late = labelled_in_time.assign(label_time=T0 + pd.Timedelta(days=9))
    in_time = behaviour_features(rows, labelled_in_time, label_maturity=7 * day).iloc[-1]
    late = behaviour_features(rows, labelled_late, label_maturity=7 * day).iloc[-1]
    assert in_time["merchant_matured_count_7d"] == 3
    assert in_time["merchant_fraud_share_7d"] == pytest.approx(1 / 3)
    assert in_time["merchant_seconds_since_last_known_fraud"] == 8 * day
    assert late["merchant_fraud_share_7d"] == 0.0  # the label came after the purchase it would score
    assert late["merchant_seconds_since_last_known_fraud"] == NO_PREVIOUS_SECONDS
    assert in_time["merchant_count_1d"] == 0 and in_time["merchant_count_30d"] == 3


def test_a_late_row_gets_its_point_in_time_features_and_earlier_scored_rows_keep_theirs():
    rows = transactions(n=400, days=3, cards=5, merchants=3, seed=9)
    late = rows.iloc[[150]]
    on_time = rows.drop(index=late.index)
    state = BehaviourHistory()
    first = state.features(on_time)
    state.add(on_time)
    arrived_late = state.features(late)
    reference = behaviour_features(rows)
    pd.testing.assert_frame_equal(arrived_late, reference.loc[late.index], check_exact=True)
    pd.testing.assert_frame_equal(first, behaviour_features(on_time), check_exact=True)


def test_a_batch_replayed_after_a_crash_gets_the_features_it_had_and_keeps_its_frauds(history, whole):
    """The batch had been committed when the writer died: the restart's history, read back from
    the table, holds its rows. They are not its own history, and the fraud labels of those rows
    still count for the merchants' later rows once the batch is added again."""
    rows, labels = history
    before, batch, later = rows.iloc[:3000], rows.iloc[3000:3400], rows.iloc[3400:3800]
    assert labels["transaction_id"].isin(batch["transaction_id"]).any()
    rebuilt = BehaviourHistory()
    rebuilt.add(pd.concat([before, batch]), labels)
    pd.testing.assert_frame_equal(rebuilt.features(batch), whole.loc[batch.index], check_exact=True)
    rebuilt.forget_ids(batch["transaction_id"])  # as silver does before adding a replayed batch
    rebuilt.add(batch)
    pd.testing.assert_frame_equal(rebuilt.features(later), whole.loc[later.index], check_exact=True)


def test_missing_amounts_and_refunds_count_as_transactions_with_no_spend():
    rows = burst([0, 10, 20], [np.nan, -25.0, 30.0], ["m"] * 3, ["US"] * 3)
    last = behaviour_features(rows).iloc[-1]
    assert last["card_count_10m"] == 2 and last["card_amount_usd_10m"] == 0.0
