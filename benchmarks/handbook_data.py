"""Transactions in the design of the Fraud Detection Handbook's simulator (Le Borgne et al.,
*Reproducible Machine Learning for Credit Card Fraud Detection*, chapter 3), in fraudlake's
bronze columns, with the fraud labels as their own frame.

The design, as published:

- 5,000 customers and 10,000 terminals at random points of a 100 x 100 square; a customer
  uses the terminals within a radius of 5; spends a normal amount around their own mean
  (uniform 5-100, sd half the mean) and makes Poisson(uniform 0-4) transactions a day, at
  times of day normally spread around noon;
- fraud scenario 1: every amount above 220 is fraud;
- scenario 2 (compromised terminals): each day 2 terminals are compromised for the next 28
  days, and every transaction there is fraud;
- scenario 3 (compromised cards): each day 3 customers' cards are compromised for the next
  14 days, and a third of their transactions are fraud, for 5 times the amount.

A customer is a card (``card_id``, ``user_id``), a terminal a merchant (``merchant_id``);
amounts are USD in one country. The protocol: train on one week, leave a one-week gap for the
labels to arrive, test on the week after; the test week leaves out the cards already known
to be compromised (a fraud in the training week or labelled in the gap).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

START = datetime(2018, 4, 1, tzinfo=timezone.utc)
DAYS = 183
TRAIN_START = datetime(2018, 7, 25, tzinfo=timezone.utc)
TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = 7, 7, 7
SCENARIOS = {1: "large_amount", 2: "compromised_merchant", 3: "compromised_card"}


def generate(
    seed: int = 0, customers: int = 5_000, terminals: int = 10_000, days: int = DAYS, radius: float = 5.0
) -> pd.DataFrame:
    """Every transaction, in time order, with ``label_is_fraud`` and ``label_scenario``."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    where = rng.uniform(0, 100, size=(customers, 2))
    mean_amount = rng.uniform(5, 100, customers)
    per_day = rng.uniform(0, 4, customers)
    terminal_at = rng.uniform(0, 100, size=(terminals, 2))
    nearby = cKDTree(terminal_at).query_ball_point(where, r=radius)

    # Transactions: a Poisson count per customer and day, times of day around noon.
    counts = rng.poisson(np.tile(per_day, days))  # day-major: day d, customer c at d * customers + c
    day = np.repeat(np.repeat(np.arange(days), customers), counts)
    customer = np.repeat(np.tile(np.arange(customers), days), counts)
    seconds = rng.normal(86_400 / 2, 20_000, len(day))
    inside = (seconds > 0) & (seconds < 86_400)
    day, customer, seconds = day[inside], customer[inside], seconds[inside].astype(np.int64)
    amount = rng.normal(mean_amount[customer], mean_amount[customer] / 2)
    negative = amount < 0
    amount[negative] = rng.uniform(0, 2 * mean_amount[customer[negative]])
    choices = np.array([len(n) for n in nearby])
    usable = choices[customer] > 0
    day, customer, seconds, amount = day[usable], customer[usable], seconds[usable], amount[usable]
    pick = (rng.uniform(size=len(day)) * choices[customer]).astype(np.int64)
    terminal = np.array([nearby[c][k] for c, k in zip(customer, pick, strict=True)], dtype=np.int64)

    scenario = np.zeros(len(day), dtype=np.int64)
    scenario[amount > 220] = 1
    # Scenario 2: terminals compromised on day d stay so for days d .. d + 27.
    compromised_until = np.full(terminals, -1)
    compromised_from = np.full(terminals, -1)
    for d in range(days):
        for t in rng.choice(terminals, 2, replace=False):
            compromised_from[t], compromised_until[t] = d, d + 27
        # (a terminal drawn again is compromised again from the later day)
        hit = (day == d) & (compromised_from[terminal] >= 0) & (day <= compromised_until[terminal])
        hit &= day >= compromised_from[terminal]
        scenario[hit & (scenario == 0)] = 2
    # Scenario 3: cards compromised on day d: a third of their transactions on days d .. d + 13.
    stolen_until = np.full(customers, -1)
    stolen_from = np.full(customers, -1)
    draws = rng.uniform(size=len(day))
    for d in range(days):
        for c in rng.choice(customers, 3, replace=False):
            stolen_from[c], stolen_until[c] = d, d + 13
        hit = (day == d) & (stolen_from[customer] >= 0) & (day >= stolen_from[customer])
        hit &= day <= stolen_until[customer]
        hit &= (draws < 1 / 3) & (scenario == 0)
        amount[hit] *= 5
        scenario[hit] = 3

    event_time = pd.Timestamp(START) + pd.to_timedelta(day * 86_400 + seconds, unit="s")
    frame = pd.DataFrame(
        {
            "event_time": event_time,
            "user_id": np.char.add("c", customer.astype(str)),
            "card_id": np.char.add("card_c", customer.astype(str)),
            "merchant_id": np.char.add("t", terminal.astype(str)),
            "merchant_category": None,
            "amount": np.round(amount, 2),
            "currency": "USD",
            "country": "US",
            "channel": None,
            "label_is_fraud": (scenario > 0).astype(np.int32),
            "label_scenario": pd.Series(scenario).map(SCENARIOS).to_numpy(),
        }
    )
    frame = frame.sort_values("event_time", kind="stable").reset_index(drop=True)
    frame.insert(0, "transaction_id", [f"hb-{i:08d}" for i in range(len(frame))])
    frame["amount_usd"] = frame["amount"]
    return frame


def fraud_labels(transactions: pd.DataFrame, delay_days: float = DELAY_DAYS) -> pd.DataFrame:
    """A label per fraud, arriving ``delay_days`` after the transaction (the protocol's gap)."""
    fraud = transactions[transactions["label_is_fraud"] == 1]
    return pd.DataFrame(
        {
            "transaction_id": fraud["transaction_id"].to_numpy(),
            "label_is_fraud": 1,
            "label_time": (fraud["event_time"] + timedelta(days=delay_days)).to_numpy(),
            "label_source": "chargeback",
        }
    )


def protocol_split(transactions: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Masks of the training week and of the test week. As the Handbook's protocol, a test day
    leaves out the cards known compromised by then: a fraud in the training week, or one of the
    gap whose label has had the delay to arrive (up to the day before, one gap earlier)."""
    time = transactions["event_time"]
    day = (time - pd.Timestamp(TRAIN_START)).dt.days  # 0 = the training week's first day
    fraud = transactions["label_is_fraud"] == 1
    train = (day >= 0) & (day < TRAIN_DAYS)
    test = pd.Series(False, index=transactions.index)
    for d in range(TEST_DAYS):
        test_day = TRAIN_DAYS + DELAY_DAYS + d
        known = set(transactions.loc[fraud & (day >= 0) & (day < TRAIN_DAYS + d), "card_id"])
        test |= (day == test_day) & ~transactions["card_id"].isin(known)
    return train, test
