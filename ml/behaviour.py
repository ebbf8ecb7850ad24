"""Behavioural features: what a card, its user and a merchant did before a transaction, defined once.

A transaction alone shows its amount, hour, category and place; fraud shows in behaviour:
a stolen card used eight times in three minutes, an amount ten times the card's usual, a
merchant whose earlier customers were defrauded. This module computes such features with
pandas and numpy, point-in-time correct:

- a row's features use only transactions of the same card, user or merchant with an
  ``event_time`` strictly earlier than its own (rows at the same instant do not see each
  other), and
- a merchant's fraud share uses only labels whose ``label_time`` is earlier than the row's
  ``event_time``.

Training calls :func:`behaviour_features` on a whole history; the silver stream keeps a
:class:`BehaviourHistory` and calls :meth:`BehaviourHistory.features` on each micro-batch,
which is the same computation on the rows the batch can see. Counts and sums are exact
(amounts as integer cents), so a row's features do not depend on how the rows were cut into
batches, nor on a restart that rebuilds the history from the rows already scored: the values
are equal, not close. A row that arrives after rows of its card with a later ``event_time``
(late data) still gets exactly its point-in-time features; the rows already scored keep the
features they had when they were scored.

Merchant risk (the Fraud Detection Handbook's terminal risk): a merchant's fraud share over a
window counts the transactions of that window shifted back by ``label_maturity`` (labels take
days to arrive: over the most recent days almost every fraud is still unknown), and of those,
the ones labelled fraud by a label that had arrived.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraudlake.reference import UNITS_PER_USD

MINUTE, HOUR, DAY = 60, 3_600, 86_400
MICROS = 1_000_000

# The card windows: count and amount (USD) of the card's earlier transactions in each.
CARD_WINDOWS = (("10m", 10 * MINUTE), ("1h", HOUR), ("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
# The merchant windows: transactions, and the fraud share among the matured ones.
MERCHANT_WINDOWS = (("1d", DAY), ("7d", 7 * DAY), ("30d", 30 * DAY))
# Distinct merchants and countries of a card are counted over this window.
DISTINCT_WINDOW = ("1h", HOUR)
# Seconds since the card's previous transaction when it had none in the longest window.
NO_PREVIOUS_SECONDS = float(CARD_WINDOWS[-1][1])
DEFAULT_LABEL_MATURITY = 7 * DAY

# What the rows must carry (labels: transaction_id, label_is_fraud, label_time). Amounts are
# converted to USD here (:func:`usd_amounts`), in training and in the stream alike.
INPUT_COLUMNS = (
    "transaction_id",
    "event_time",
    "user_id",
    "card_id",
    "merchant_id",
    "country",
    "amount",
    "currency",
)


def card_feature_names(prefix: str = "card") -> tuple[str, ...]:
    names = [f"{prefix}_count_{name}" for name, _ in CARD_WINDOWS]
    names += [f"{prefix}_amount_usd_{name}" for name, _ in CARD_WINDOWS]
    names += [
        f"{prefix}_seconds_since_previous",
        f"{prefix}_amount_vs_30d_mean",
        f"{prefix}_amount_vs_7d_mean",
        f"{prefix}_amount_vs_usual",
        f"{prefix}_max_7d_vs_usual",
        f"{prefix}_merchants_{DISTINCT_WINDOW[0]}",
        f"{prefix}_countries_{DISTINCT_WINDOW[0]}",
    ]
    return tuple(names)


def merchant_feature_names() -> tuple[str, ...]:
    windows = tuple(
        f"merchant_{what}_{name}" for what in ("count", "matured_count", "fraud_share") for name, _ in MERCHANT_WINDOWS
    )
    return windows + (
        "merchant_seconds_since_first_known_fraud",
        "merchant_seconds_since_last_known_fraud",
        "merchant_matured_since_last_known_fraud",
    )


# How a row is remembered (see _as_kept).
KEPT_COLUMNS = ("transaction_id", "event_time", "user_id", "card_id", "merchant_id", "country", "amount_usd")

CARD_FEATURES = card_feature_names()
MERCHANT_FEATURES = merchant_feature_names()
# The same windows per user (all the user's cards): a stolen card spends unlike its owner's
# other cards, and a user whose cards all spend at once stands out where one card does not.
USER_FEATURES = card_feature_names("user")
# Silver stores them in this order (the user features came last: a table gains them at the end).
BEHAVIOUR_FEATURES = CARD_FEATURES + MERCHANT_FEATURES + USER_FEATURES


# ----------------------------------------------------------------------------- conversions


def epoch_micros(values) -> np.ndarray:
    """Instants (datetimes with or without a zone, read as UTC; or epoch microseconds) as int64 microseconds."""
    series = pd.Series(values)
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.to_numpy(dtype=np.int64)
    stamps = pd.to_datetime(series, utc=True)
    return stamps.to_numpy(dtype="datetime64[us]").astype(np.int64)


def usd_amounts(amounts, currencies) -> np.ndarray:
    """Amounts in local currency as USD with the reference rates (NaN for a currency without one)."""
    rates = pd.Series(currencies).astype("string").str.upper().map(UNITS_PER_USD)
    values = pd.to_numeric(pd.Series(amounts), errors="coerce").to_numpy(dtype=float)
    return values / pd.to_numeric(rates, errors="coerce").to_numpy(dtype=float)


def cents(amounts) -> np.ndarray:
    """USD amounts as integer cents (a missing amount, e.g. an unknown currency, counts 0; a refund counts 0)."""
    values = pd.to_numeric(pd.Series(amounts), errors="coerce").to_numpy(dtype=float)
    values = np.where(np.isfinite(values), np.maximum(values, 0.0), 0.0)
    return np.rint(values * 100).astype(np.int64)


def _codes(*keys: np.ndarray) -> np.ndarray:
    """One dense int64 code per distinct key (tuple)."""
    if len(keys) == 1:
        return pd.factorize(keys[0], use_na_sentinel=False)[0].astype(np.int64)
    frame = pd.DataFrame({str(i): k for i, k in enumerate(keys)})
    return frame.groupby(list(frame.columns), sort=False, dropna=False).ngroup().to_numpy(dtype=np.int64)


@dataclass(frozen=True)
class _Sorted:
    """Rows sorted by (key, time), with a searchable composite of the key and the time's rank."""

    order: np.ndarray  # sorted position -> original row
    key: np.ndarray  # key code per sorted row
    time: np.ndarray  # epoch micros per sorted row
    instants: np.ndarray  # every distinct time, ascending
    composite: np.ndarray  # key * len(instants) + rank of time, ascending

    @classmethod
    def of(cls, key: np.ndarray, time: np.ndarray) -> _Sorted:
        order = np.lexsort((time, key))
        instants = np.unique(time)
        composite = key[order] * (len(instants) + 1) + np.searchsorted(instants, time[order])
        return cls(order, key[order], time[order], instants, composite)

    def first_at_or_after(self, key: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Per query: the sorted index of the key's first row at or after ``time`` (its rows strictly
        before ``time`` end there)."""
        rank = np.searchsorted(self.instants, time, side="left")
        return np.searchsorted(self.composite, key * (len(self.instants) + 1) + rank, side="left")


def _against_mean(amount: np.ndarray, total_cents: np.ndarray, count: np.ndarray, without: float) -> np.ndarray:
    """``amount`` (USD) against the mean of ``count`` amounts totalling ``total_cents``; ``without`` when none."""
    mean = total_cents / np.maximum(count, 1) / 100.0
    return np.where(count > 0, amount / np.maximum(mean, 0.01), without)


def _window_max(values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per query: the largest of ``values[start:end]``, 0 when empty (a sparse table: one
    maximum per power-of-two span, two looked up per query)."""
    width = end - start
    out = np.zeros(len(start), dtype=values.dtype)
    some = width > 0
    if not some.any():
        return out
    levels = [values]
    while 2 ** len(levels) <= width.max():
        half = 2 ** (len(levels) - 1)
        previous = levels[-1]
        levels.append(np.maximum(previous[:-half], previous[half:]))
    level = np.floor(np.log2(np.maximum(width, 1))).astype(np.int64)
    for k in np.unique(level[some]):
        at = some & (level == k)
        span = 2**k
        out[at] = np.maximum(levels[k][start[at]], levels[k][end[at] - span])
    return out


def _distinct_before(sorted_rows: _Sorted, values: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per query: how many distinct ``values`` (aligned with the sorted rows) the sorted rows ``start:end`` hold."""
    # previous[j]: the sorted index of the previous row with the same key and value, -1 if none.
    pair = _codes(sorted_rows.key, values)
    previous = np.full(len(pair), -1, dtype=np.int64)
    by_pair = np.lexsort((np.arange(len(pair)), pair))
    same = pair[by_pair][1:] == pair[by_pair][:-1]
    previous[by_pair[1:][same]] = by_pair[:-1][same]
    width = end - start
    out = width.copy()  # zero or one row: as many distinct values
    for i in np.flatnonzero(width > 1):
        s, e = start[i], end[i]
        out[i] = np.count_nonzero(previous[s:e] < s)
    return out


# ----------------------------------------------------------------------------- card features


def _card_features(
    known: pd.DataFrame, query: np.ndarray, key_column: str = "card_id", prefix: str = "card"
) -> pd.DataFrame:
    """Card (or user, with ``key_column="user_id"``) features of the ``query`` rows of ``known``."""
    key = _codes(known[key_column].to_numpy())
    time = known["event_time"].to_numpy(dtype=np.int64)
    rows = _Sorted.of(key, time)
    amount = cents(known["amount_usd"])[rows.order]
    running = np.concatenate([[0], np.cumsum(amount)])

    q_key, q_time = key[query], time[query]
    end = rows.first_at_or_after(q_key, q_time)
    out: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    starts: dict[str, np.ndarray] = {}
    for name, seconds in CARD_WINDOWS:
        start = rows.first_at_or_after(q_key, q_time - seconds * MICROS)
        starts[name] = start
        counts[name] = end - start
        sums[name] = running[end] - running[start]
    for name, _ in CARD_WINDOWS:
        out[f"{prefix}_count_{name}"] = counts[name].astype(float)
    for name, _ in CARD_WINDOWS:
        out[f"{prefix}_amount_usd_{name}"] = sums[name] / 100.0

    longest = CARD_WINDOWS[-1][0]
    has_previous = counts[longest] > 0
    previous_time = rows.time[np.maximum(end - 1, 0)]
    out[f"{prefix}_seconds_since_previous"] = np.where(
        has_previous, (q_time - previous_time) / MICROS, NO_PREVIOUS_SECONDS
    )
    # The amount against the card's own usual: its mean over the last 30 and 7 days, and over the
    # weeks before the last one (a stolen card's recent purchases do not count as its usual); 1
    # without such history. And the card's largest purchase of the last 7 days against that usual.
    q_amount = np.maximum(pd.to_numeric(known["amount_usd"], errors="coerce").to_numpy(dtype=float)[query], 0.0)
    usual_cents = sums["30d"] - sums["7d"]
    usual_count = counts["30d"] - counts["7d"]
    out[f"{prefix}_amount_vs_30d_mean"] = _against_mean(q_amount, sums["30d"], counts["30d"], 1.0)
    out[f"{prefix}_amount_vs_7d_mean"] = _against_mean(q_amount, sums["7d"], counts["7d"], 1.0)
    out[f"{prefix}_amount_vs_usual"] = _against_mean(q_amount, usual_cents, usual_count, 1.0)
    recent_max = _window_max(amount, starts["7d"], end) / 100.0
    out[f"{prefix}_max_7d_vs_usual"] = np.where(
        counts["7d"] > 0, _against_mean(recent_max, usual_cents, usual_count, 0.0), 0.0
    )

    window = DISTINCT_WINDOW[0]
    start = starts[window]
    for column, label in (("merchant_id", "merchants"), ("country", "countries")):
        values = known[column].to_numpy()[rows.order]
        out[f"{prefix}_{label}_{window}"] = _distinct_before(rows, values, start, end).astype(float)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- merchant features


def _merchant_features(
    known: pd.DataFrame, query: np.ndarray, labels: pd.DataFrame | None, label_maturity: int
) -> pd.DataFrame:
    """Merchant transactions per window and fraud share among the window's matured transactions,
    from the fraud labels that had arrived before each query row."""
    key = _codes(known["merchant_id"].to_numpy())
    time = known["event_time"].to_numpy(dtype=np.int64)
    rows = _Sorted.of(key, time)
    q_key, q_time = key[query], time[query]
    end = rows.first_at_or_after(q_key, q_time)

    # The known rows that are fraud by some label, and when that label arrived.
    label_time = np.full(len(known), np.iinfo(np.int64).max, dtype=np.int64)
    if labels is not None and len(labels):
        fraud = labels[labels["label_is_fraud"].astype(int) == 1]
        fraud = fraud.assign(_label=epoch_micros(fraud["label_time"]))
        first = fraud.groupby("transaction_id")["_label"].min()
        matched = known["transaction_id"].map(first)
        present = matched.notna().to_numpy()
        label_time[present] = matched[present].to_numpy(dtype=np.int64)
    sorted_label_time = label_time[rows.order]
    is_fraud = sorted_label_time < np.iinfo(np.int64).max
    fraud_positions = np.flatnonzero(is_fraud)
    fraud_running = np.concatenate([[0], np.cumsum(is_fraud)])

    out: dict[str, np.ndarray] = {}
    matured_end = rows.first_at_or_after(q_key, q_time - label_maturity * MICROS)
    for name, seconds in MERCHANT_WINDOWS:
        start = rows.first_at_or_after(q_key, q_time - seconds * MICROS)
        out[f"merchant_count_{name}"] = (end - start).astype(float)
        m_start = rows.first_at_or_after(q_key, q_time - (label_maturity + seconds) * MICROS)
        matured = matured_end - m_start
        out[f"merchant_matured_count_{name}"] = matured.astype(float)
        frauds = fraud_running[matured_end] - fraud_running[m_start]
        # Of those frauds, the ones whose label had not arrived before the query row are unknown to it.
        for i in np.flatnonzero(frauds):
            lo = np.searchsorted(fraud_positions, m_start[i])
            hi = np.searchsorted(fraud_positions, matured_end[i])
            frauds[i] = np.count_nonzero(sorted_label_time[fraud_positions[lo:hi]] < q_time[i])
        out[f"merchant_fraud_share_{name}"] = np.where(matured > 0, frauds / np.maximum(matured, 1), 0.0)

    # How old the merchant's known fraud is: since the first and the last known fraud of the
    # longest window (a breach goes on for a while, then stops).
    longest = MERCHANT_WINDOWS[-1][1]
    start = rows.first_at_or_after(q_key, q_time - (label_maturity + longest) * MICROS)
    since_first = np.full(len(query), NO_PREVIOUS_SECONDS)
    since_last = np.full(len(query), NO_PREVIOUS_SECONDS)
    # Matured transactions after the last known fraud, none of them known as fraud: the breach ended.
    clean_since = (matured_end - start).astype(float)
    candidates = fraud_running[end] - fraud_running[start]
    for i in np.flatnonzero(candidates):
        lo = np.searchsorted(fraud_positions, start[i])
        hi = np.searchsorted(fraud_positions, end[i])
        positions = fraud_positions[lo:hi]
        known = positions[sorted_label_time[positions] < q_time[i]]
        if len(known):
            since_first[i] = (q_time[i] - rows.time[known[0]]) / MICROS
            since_last[i] = (q_time[i] - rows.time[known[-1]]) / MICROS
            clean_since[i] = max(0, matured_end[i] - known[-1] - 1)
    out["merchant_seconds_since_first_known_fraud"] = since_first
    out["merchant_seconds_since_last_known_fraud"] = since_last
    out["merchant_matured_since_last_known_fraud"] = clean_since
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- one path for training and stream


def _features(known: pd.DataFrame, query: np.ndarray, labels: pd.DataFrame | None, label_maturity: int) -> pd.DataFrame:
    """The features of the ``query`` rows of ``known`` (input columns, ``event_time`` as epoch
    microseconds: see :func:`_as_kept`), whatever rows ``known`` holds besides."""
    card = _card_features(known, query)
    user = _card_features(known, query, key_column="user_id", prefix="user")
    merchant = _merchant_features(known, query, labels, label_maturity)
    return pd.concat([card, merchant, user], axis=1)[list(BEHAVIOUR_FEATURES)]


def behaviour_features(
    transactions: pd.DataFrame, labels: pd.DataFrame | None = None, label_maturity: int = DEFAULT_LABEL_MATURITY
) -> pd.DataFrame:
    """The behavioural features of every row of ``transactions`` (the whole frame is the history),
    indexed like it. ``labels``: ``transaction_id``, ``label_is_fraud``, ``label_time``."""
    known = _as_kept(transactions)
    features = _features(known, np.arange(len(known)), labels, label_maturity)
    features.index = transactions.index
    return features


@dataclass
class BehaviourHistory:
    """The transactions (and fraud labels) a stream has seen within the longest window, for the
    features of the next micro-batch. Rebuilt on a restart from the rows already scored.

    Rows are kept with their ``event_time`` as epoch microseconds, and forgotten a day of event
    time at a time once older than :attr:`horizon_seconds` (a row that old counts in no window)."""

    label_maturity: int = DEFAULT_LABEL_MATURITY
    rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(KEPT_COLUMNS)))
    labels: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["transaction_id", "label_is_fraud", "label_time"])
    )

    @property
    def horizon_seconds(self) -> int:
        """How far back a row's features look."""
        return max(CARD_WINDOWS[-1][1], self.label_maturity + MERCHANT_WINDOWS[-1][1])

    def features(self, batch: pd.DataFrame) -> pd.DataFrame:
        """The features of ``batch``'s rows, given what came before (and each other), indexed like it.

        Each pass (card, user, merchant) reads only the remembered rows of the batch's own keys of
        its kind: a row's features depend on no other row, so the values are those of one pass over
        everything, at the cost of the batch's keys rather than of the whole history."""
        if batch.empty:
            return pd.DataFrame(columns=list(BEHAVIOUR_FEATURES), index=batch.index, dtype=float)
        new = _as_kept(batch)
        card = _card_features(*self._known(new, "card_id"))
        user = _card_features(*self._known(new, "user_id"), key_column="user_id", prefix="user")
        labels = self.labels if len(self.labels) else None
        merchant = _merchant_features(*self._known(new, "merchant_id"), labels, self.label_maturity)
        features = pd.concat([card, merchant, user], axis=1)[list(BEHAVIOUR_FEATURES)]
        features.index = batch.index
        return features

    def _known(self, new: pd.DataFrame, key: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The remembered rows of ``new``'s ``key`` values, then ``new``; and where ``new`` starts."""
        relevant = self._relevant(new, key)
        if not len(relevant):
            return new, np.arange(len(new))
        return pd.concat([relevant, new], ignore_index=True), np.arange(len(relevant), len(relevant) + len(new))

    def add(self, rows: pd.DataFrame, labels: pd.DataFrame | None = None) -> None:
        """Remember scored rows (and arrived labels); forget what no later row can look at."""
        if len(rows):
            new = _as_kept(rows)
            self.rows = (
                new.reset_index(drop=True) if self.rows.empty else pd.concat([self.rows, new], ignore_index=True)
            )
        if labels is not None and len(labels):
            new_labels = labels[["transaction_id", "label_is_fraud", "label_time"]]
            self.labels = (
                new_labels.reset_index(drop=True)
                if self.labels.empty
                else pd.concat([self.labels, new_labels], ignore_index=True)
            )
        self._forget()

    def _relevant(self, batch: pd.DataFrame, key: str) -> pd.DataFrame:
        """The remembered rows of the batch's ``key`` values (no other row changes the features of
        that kind), except the batch's own: a batch replayed after a crash finds its rows remembered
        from the table it had been written to, and must not count them twice."""
        if self.rows.empty:
            return self.rows
        relevant = self.rows[self.rows[key].isin(batch[key])]
        return relevant[~relevant["transaction_id"].isin(batch["transaction_id"])]

    def forget_ids(self, ids) -> None:
        """Forget the rows with these ``transaction_id``s (before they are added again)."""
        if not self.rows.empty:
            self.rows = self.rows[~self.rows["transaction_id"].isin(pd.Series(ids))].reset_index(drop=True)

    def _forget(self) -> None:
        if self.rows.empty:
            return
        times = self.rows["event_time"].to_numpy()
        oldest_kept = times.max() - self.horizon_seconds * MICROS
        if times.min() < oldest_kept - DAY * MICROS:
            keep = times >= oldest_kept
            forgotten = self.rows.loc[~keep, "transaction_id"]
            self.rows = self.rows[keep].reset_index(drop=True)
            self.labels = self.labels[~self.labels["transaction_id"].isin(forgotten)].reset_index(drop=True)


def _as_kept(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns the features read, on a fresh index: the identity and keys, ``event_time`` as
    epoch microseconds and ``amount_usd`` (from ``amount`` and ``currency``)."""
    kept = rows[list(INPUT_COLUMNS)].reset_index(drop=True)
    return pd.DataFrame(
        {
            "transaction_id": kept["transaction_id"],
            "event_time": epoch_micros(kept["event_time"]),
            "user_id": kept["user_id"],
            "card_id": kept["card_id"],
            "merchant_id": kept["merchant_id"],
            "country": kept["country"],
            "amount_usd": usd_amounts(kept["amount"], kept["currency"]),
        }
    )
