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


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, ascending (by sorting: numpy's hashing ``unique`` takes seconds for
    millions of distinct timestamps)."""
    ordered = np.sort(values)
    return ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])] if len(ordered) else ordered


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
        instants = _distinct(time)
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


@dataclass(frozen=True)
class _TimeIndex:
    """Rows sorted by (key, time), answering "how many rows of key k before instant t" with two
    binary searches and without reading the rows. A merchant's counts over days add up over any
    number of such indexes (silver's history keeps a few, :class:`_Segment`), so a micro-batch
    costs the same with an hour or a month of history behind it."""

    keys: np.ndarray  # distinct keys, ascending
    instants: np.ndarray  # distinct times, ascending
    composite: np.ndarray  # per sorted row: key rank * (len(instants) + 1) + time rank, ascending

    @classmethod
    def of(cls, key: np.ndarray, time: np.ndarray) -> _TimeIndex:
        keys, code = np.unique(key, return_inverse=True)
        instants = _distinct(time)
        composite = np.sort(code.astype(np.int64) * (len(instants) + 1) + np.searchsorted(instants, time))
        return cls(keys, instants, composite)

    def before(self, key: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Per query: a position such that ``before(k, b) - before(k, a)`` is the number of rows of
        key k with a time in [a, b) (0 for a key the index does not hold). The queries are searched
        in ascending order (numpy's binary search is far faster on sorted needles: the arrays hold
        millions of rows and each probe would miss the cache)."""
        code = _searched(self.keys, key)
        present = (code < len(self.keys)) & (self.keys[np.minimum(code, len(self.keys) - 1)] == key)
        rank = np.where(present, _searched(self.instants, time), 0)
        return _searched(self.composite, code * (len(self.instants) + 1) + rank)

    def nbytes(self) -> int:
        return self.keys.nbytes + self.instants.nbytes + self.composite.nbytes


def _searched(array: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """``np.searchsorted(array, needles, side="left")``, searching the needles in ascending order."""
    order = np.argsort(needles, kind="stable")
    out = np.empty(len(needles), dtype=np.int64)
    out[order] = np.searchsorted(array, needles[order], side="left")
    return out


def _rows_before(indexes: list[_TimeIndex], key: np.ndarray, *bounds: np.ndarray) -> list[np.ndarray]:
    """Per bound: per query, the rows of its key with a time before the bound, over all ``indexes``
    (one search per index for all the bounds)."""
    keys, times = np.tile(key, len(bounds)), np.concatenate(bounds)
    total = np.zeros(len(times), dtype=np.int64)
    for index in indexes:
        total += index.before(keys, times)
    return np.split(total, len(bounds))


_FRAUD_COLUMNS = ("transaction_id", "merchant_id", "event_time", "label_time")  # all int64


def _fraud_rows(rows: pd.DataFrame, first_label: pd.Series) -> pd.DataFrame:
    """The ``rows`` (kept form) that a fraud label names: ``merchant_id``, ``event_time``, and the
    ``label_time`` of its first fraud label (epoch micros), by ``transaction_id``."""
    label_time = rows["transaction_id"].map(first_label)
    present = label_time.notna().to_numpy()
    return pd.DataFrame(
        {
            "transaction_id": rows["transaction_id"].to_numpy()[present],
            "merchant_id": rows["merchant_id"].to_numpy()[present],
            "event_time": rows["event_time"].to_numpy()[present],
            "label_time": label_time.to_numpy()[present].astype(np.int64),
        }
    )


def _no_labels() -> pd.Series:
    return pd.Series(dtype=np.int64)


def _first_fraud_labels(labels: pd.DataFrame | None) -> pd.Series:
    """When each transaction was first labelled fraud (epoch micros), by hashed ``transaction_id``."""
    if labels is None or not len(labels):
        return _no_labels()
    fraud = labels[pd.to_numeric(labels["label_is_fraud"]).astype(int) == 1]
    first = pd.Series(epoch_micros(fraud["label_time"]), index=_hashed(fraud["transaction_id"]))
    return first.groupby(level=0).min()


@dataclass(frozen=True)
class _Frauds:
    """The rows labelled fraud (:func:`_fraud_rows`) sorted by merchant and time, with when each
    label arrived: built once per change, searched by every micro-batch."""

    index: _Sorted
    merchants: pd.Index  # merchant per key code
    label_time: np.ndarray  # per sorted row

    @classmethod
    def of(cls, frauds: pd.DataFrame) -> _Frauds:
        index = _Sorted.of(_codes(frauds["merchant_id"].to_numpy()), frauds["event_time"].to_numpy(dtype=np.int64))
        merchants = pd.Index(frauds["merchant_id"].to_numpy()[index.order]).unique()  # codes ascend in sorted order
        return cls(index, merchants, frauds["label_time"].to_numpy(dtype=np.int64)[index.order])


def _merchant_features(
    indexes: list[_TimeIndex], key: np.ndarray, time: np.ndarray, frauds: _Frauds, label_maturity: int
) -> pd.DataFrame:
    """Merchant transactions per window and fraud share among the window's matured transactions,
    from the fraud labels that had arrived before each query row.

    ``indexes``: every earlier row, by merchant and time (counts only: a row at the query's own
    instant is not counted); ``frauds``: the rows labelled fraud."""
    maturity = label_maturity * MICROS
    fraud_index, fraud_label_time = frauds.index, frauds.label_time
    # Per query: its merchant's code among the fraud rows (-1 when none of its rows is fraud).
    fraud_code = frauds.merchants.get_indexer(key).astype(np.int64) if len(frauds.merchants) else np.full(len(key), -1)
    has_fraud = fraud_code >= 0
    code = np.maximum(fraud_code, 0)

    def known_frauds(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The sorted positions of the queries' merchants' fraud rows with a time in [start, end)
        whose label had arrived before the query row, and the query of each (ascending)."""
        lo = np.where(has_fraud, fraud_index.first_at_or_after(code, start), 0)
        hi = np.where(has_fraud, fraud_index.first_at_or_after(code, end), 0)
        positions = _ranges(lo, hi)
        query = np.repeat(np.arange(len(key)), np.maximum(hi - lo, 0))
        arrived = fraud_label_time[positions] < time[query]
        return positions[arrived], query[arrived]

    out: dict[str, np.ndarray] = {}
    windows = [seconds * MICROS for _, seconds in MERCHANT_WINDOWS]
    starts = [time - window for window in windows] + [time - maturity - window for window in windows]
    now, matured_end, *before_starts = _rows_before(indexes, key, time, time - maturity, *starts)
    for (name, _), window, before_start, before_matured_start in zip(
        MERCHANT_WINDOWS, windows, before_starts[: len(windows)], before_starts[len(windows) :], strict=True
    ):
        out[f"merchant_count_{name}"] = (now - before_start).astype(float)
        matured = matured_end - before_matured_start
        out[f"merchant_matured_count_{name}"] = matured.astype(float)
        frauds_known = np.bincount(known_frauds(time - maturity - window, time - maturity)[1], minlength=len(key))
        out[f"merchant_fraud_share_{name}"] = np.where(matured > 0, frauds_known / np.maximum(matured, 1), 0.0)

    # How old the merchant's known fraud is: since the first and the last known fraud of the
    # longest window (a breach goes on for a while, then stops), and how many matured transactions
    # came after the last one, none of them known as fraud: the breach ended.
    longest = MERCHANT_WINDOWS[-1][1] * MICROS
    since_first = np.full(len(key), NO_PREVIOUS_SECONDS)
    since_last = np.full(len(key), NO_PREVIOUS_SECONDS)
    clean_after = time - maturity - longest  # matured rows from here on, before time - maturity
    positions, query = known_frauds(time - maturity - longest, time)
    if len(query):
        with_known, first = np.unique(query, return_index=True)
        last = np.r_[first[1:], len(query)] - 1
        first_time, last_time = fraud_index.time[positions[first]], fraud_index.time[positions[last]]
        since_first[with_known] = (time[with_known] - first_time) / MICROS
        since_last[with_known] = (time[with_known] - last_time) / MICROS
        clean_after[with_known] = last_time + 1  # strictly after the last known fraud
    out["merchant_seconds_since_first_known_fraud"] = since_first
    out["merchant_seconds_since_last_known_fraud"] = since_last
    [before_clean] = _rows_before(indexes, key, clean_after)
    out["merchant_matured_since_last_known_fraud"] = np.maximum(matured_end - before_clean, 0).astype(float)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- one path for training and stream


def behaviour_features(
    transactions: pd.DataFrame, labels: pd.DataFrame | None = None, label_maturity: int = DEFAULT_LABEL_MATURITY
) -> pd.DataFrame:
    """The behavioural features of every row of ``transactions`` (the whole frame is the history),
    indexed like it. ``labels``: ``transaction_id``, ``label_is_fraud``, ``label_time``."""
    known = _as_kept(transactions)
    query = np.arange(len(known))
    card = _card_features(known, query)
    user = _card_features(known, query, key_column="user_id", prefix="user")
    key, time = known["merchant_id"].to_numpy(), known["event_time"].to_numpy()
    frauds = _Frauds.of(_fraud_rows(known, _first_fraud_labels(labels)))
    merchant = _merchant_features([_TimeIndex.of(key, time)], key, time, frauds, label_maturity)
    features = pd.concat([card, merchant, user], axis=1)[list(BEHAVIOUR_FEATURES)]
    features.index = transactions.index
    return features


@dataclass(frozen=True)
class _Segment:
    """Remembered rows (kept form, as arrays, in arrival order) with what finds them: per card and
    per user the order sorting them by key, per merchant a :class:`_TimeIndex`, and the order sorting
    their transaction ids."""

    rows: dict[str, np.ndarray]
    by_card: np.ndarray
    by_user: np.ndarray
    merchants: _TimeIndex
    by_transaction: np.ndarray
    newest: int

    @classmethod
    def of(cls, rows: dict[str, np.ndarray]) -> _Segment:
        return cls(
            rows,
            np.argsort(rows["card_id"], kind="stable"),
            np.argsort(rows["user_id"], kind="stable"),
            _TimeIndex.of(rows["merchant_id"], rows["event_time"]),
            np.argsort(rows["transaction_id"], kind="stable"),
            int(rows["event_time"].max()),
        )

    def __len__(self) -> int:
        return len(self.rows["event_time"])

    def nbytes(self) -> int:
        arrays = [*self.rows.values(), self.by_card, self.by_user, self.by_transaction]
        return sum(a.nbytes for a in arrays) + self.merchants.nbytes()

    def of_keys(self, column: str, keys: np.ndarray) -> np.ndarray:
        """Positions of the rows whose ``column`` (card_id, user_id or transaction_id) is one of ``keys``."""
        order = {"card_id": self.by_card, "user_id": self.by_user, "transaction_id": self.by_transaction}[column]
        values = self.rows[column]
        lo = np.searchsorted(values, keys, side="left", sorter=order)
        hi = np.searchsorted(values, keys, side="right", sorter=order)
        return order[_ranges(lo, hi)]

    def frame(self, positions: np.ndarray) -> pd.DataFrame:
        """The rows at ``positions``, in kept form."""
        return pd.DataFrame({c: a[positions] for c, a in self.rows.items()})

    def without(self, positions: np.ndarray) -> _Segment | None:
        keep = np.ones(len(self), dtype=bool)
        keep[positions] = False
        return _Segment.of({c: a[keep] for c, a in self.rows.items()}) if keep.any() else None


def _ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The integers of every [lo, hi) range, one after the other."""
    lengths = np.maximum(hi - lo, 0)
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64)
    starts = np.repeat(lo - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return starts + np.arange(lengths.sum())


# A segment holds at most this many rows: merging two into one costs sorting them (0.7 s for a
# full one on this machine's cores: a pause of the silver stream once per this many rows), and
# a micro-batch searches every segment (a few ms each).
MAX_SEGMENT_ROWS = 1 << 20


@dataclass
class BehaviourHistory:
    """The transactions (and fraud labels) a stream has seen within the longest window, for the
    features of the next micro-batch. Rebuilt on a restart from the rows already scored.

    Rows are kept as numbers (keys and ids as 64-bit hashes, times as epoch microseconds, amounts
    in USD: about 100 bytes a row with their indexes) in a few segments, merged two by two as they
    grow (a log-structured merge: a batch of n rows is sorted into O(log n) bigger segments over
    its life), and forgotten a segment at a time once all its rows are older than
    :attr:`horizon_seconds`. A micro-batch's features read only its cards' and users' rows and
    count its merchants' rows with binary searches: its cost depends on the batch and on the
    number of segments, not on how many rows the history holds."""

    label_maturity: int = DEFAULT_LABEL_MATURITY
    segments: list[_Segment] = field(default_factory=list)
    # The remembered rows labelled fraud (:func:`_fraud_rows`), and the fraud labels of rows not
    # remembered (yet): hashed id -> first label time (µs).
    frauds: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({c: pd.Series(dtype=np.int64) for c in _FRAUD_COLUMNS})
    )
    waiting_labels: pd.Series = field(default_factory=lambda: _no_labels())
    _prepared: _Frauds | None = field(default=None, repr=False)

    @property
    def horizon_seconds(self) -> int:
        """How far back a row's features look."""
        return max(CARD_WINDOWS[-1][1], self.label_maturity + MERCHANT_WINDOWS[-1][1])

    def nbytes(self) -> int:
        """The driver memory the history takes (its arrays)."""
        return (
            sum(s.nbytes() for s in self.segments)
            + self.waiting_labels.memory_usage()
            + int(self.frauds.memory_usage().sum())
        )

    def features(self, batch: pd.DataFrame) -> pd.DataFrame:
        """The features of ``batch``'s rows, given what came before (and each other), indexed like it.

        A batch replayed after a crash may find its own rows remembered (from the table it had been
        written to): they are forgotten first, not counted as its own history."""
        if batch.empty:
            return pd.DataFrame(columns=list(BEHAVIOUR_FEATURES), index=batch.index, dtype=float)
        new = _as_kept(batch)
        self._forget_hashed(new["transaction_id"].to_numpy())
        card = _card_features(*self._known(new, "card_id"))
        user = _card_features(*self._known(new, "user_id"), key_column="user_id", prefix="user")
        key, time = new["merchant_id"].to_numpy(), new["event_time"].to_numpy()
        indexes = [s.merchants for s in self.segments] + [_TimeIndex.of(key, time)]
        labelled = _fraud_rows(new, self.waiting_labels)  # rows whose label came first: rare
        if len(labelled):
            frauds = _Frauds.of(pd.concat([self.frauds, labelled], ignore_index=True))
        else:
            if self._prepared is None:
                self._prepared = _Frauds.of(self.frauds)
            frauds = self._prepared
        merchant = _merchant_features(indexes, key, time, frauds, self.label_maturity)
        features = pd.concat([card, merchant, user], axis=1)[list(BEHAVIOUR_FEATURES)]
        features.index = batch.index
        return features

    def _known(self, new: pd.DataFrame, key: str) -> tuple[pd.DataFrame, np.ndarray]:
        """The remembered rows of ``new``'s ``key`` values, then ``new``; and where ``new`` starts."""
        keys = np.unique(new[key].to_numpy())
        parts = [s.frame(s.of_keys(key, keys)) for s in self.segments]
        relevant = [p for p in parts if len(p)]
        if not relevant:
            return new, np.arange(len(new))
        known = pd.concat([*relevant, new], ignore_index=True)
        return known, np.arange(len(known) - len(new), len(known))

    def add(self, rows: pd.DataFrame, labels: pd.DataFrame | None = None) -> None:
        """Remember scored rows (and arrived labels); forget what no later row can look at."""
        if labels is not None and len(labels):
            arrived = _first_fraud_labels(labels)
            ids = arrived.index.to_numpy()
            found = [_fraud_rows(s.frame(s.of_keys("transaction_id", ids)), arrived) for s in self.segments]
            self._add_frauds(found)
            matched = np.isin(ids, self.frauds["transaction_id"].to_numpy())
            self._wait_for_rows(arrived[~matched])
        if len(rows):
            new = _as_kept(rows)
            labelled = _fraud_rows(new, self.waiting_labels)
            self._add_frauds([labelled])
            self.waiting_labels = self.waiting_labels.drop(labelled["transaction_id"].to_numpy(), errors="ignore")
            self.segments.append(_Segment.of({c: new[c].to_numpy() for c in KEPT_COLUMNS}))
            while (
                len(self.segments) >= 2
                and len(self.segments[-2]) <= len(self.segments[-1])
                and len(self.segments[-2]) + len(self.segments[-1]) <= MAX_SEGMENT_ROWS
            ):
                last, before = self.segments.pop(), self.segments.pop()
                merged = {c: np.concatenate([before.rows[c], last.rows[c]]) for c in KEPT_COLUMNS}
                self.segments.append(_Segment.of(merged))
        self._forget()

    def _add_frauds(self, found: list[pd.DataFrame]) -> None:
        """Fraud rows found (again, perhaps with an earlier label): one row per transaction, its first label."""
        found = [f for f in found if len(f)]
        if found:
            frauds = pd.concat([self.frauds, *found], ignore_index=True)
            first = frauds.groupby("transaction_id")["label_time"].transform("min")
            self.frauds = frauds.assign(label_time=first).drop_duplicates("transaction_id").reset_index(drop=True)
            self._prepared = None

    def _wait_for_rows(self, labels: pd.Series) -> None:
        """Fraud labels of rows not remembered: kept (the first of each) until their rows come."""
        if len(labels):
            self.waiting_labels = pd.concat([self.waiting_labels, labels]).groupby(level=0).min()

    def knows_labels(self, transaction_ids) -> np.ndarray:
        """Per id: whether a fraud label for it is remembered."""
        ids = _hashed(transaction_ids)
        return np.isin(ids, self.frauds["transaction_id"].to_numpy()) | np.isin(ids, self.waiting_labels.index)

    def forget_ids(self, ids) -> None:
        """Forget the rows with these ``transaction_id``s (before they are added again)."""
        self._forget_hashed(_hashed(ids))

    def _forget_hashed(self, ids: np.ndarray) -> None:
        """Forget these rows; the fraud labels of those among them wait for them to come again."""
        ids = np.unique(ids)
        kept: list[_Segment] = []
        for segment in self.segments:
            found = segment.of_keys("transaction_id", ids)
            rest = segment.without(found) if len(found) else segment
            if rest is not None:
                kept.append(rest)
        self.segments = kept
        gone = self.frauds["transaction_id"].isin(ids).to_numpy()
        if gone.any():
            forgotten = self.frauds[gone]
            self._wait_for_rows(pd.Series(forgotten["label_time"].to_numpy(), index=forgotten["transaction_id"]))
            self.frauds = self.frauds[~gone].reset_index(drop=True)
            self._prepared = None

    def _forget(self) -> None:
        if not self.segments:
            return
        oldest_kept = max(s.newest for s in self.segments) - self.horizon_seconds * MICROS
        if all(s.newest >= oldest_kept for s in self.segments):
            return
        self.segments = [s for s in self.segments if s.newest >= oldest_kept]
        self.frauds = self.frauds[self.frauds["event_time"].to_numpy() >= oldest_kept].reset_index(drop=True)
        self._prepared = None
        # A label is no earlier than its transaction: one older than that is for no row a window holds.
        self.waiting_labels = self.waiting_labels[self.waiting_labels.to_numpy() >= oldest_kept]


def _hashed(values) -> np.ndarray:
    """Keys and ids as 64-bit hashes (Python's, stable within a process: the history is rebuilt
    at each start). Training and the stream hash alike, so their features are equal even in the
    vanishing case of two keys with one hash."""
    series = pd.Series(values)
    if not (pd.api.types.is_object_dtype(series.dtype) or pd.api.types.is_string_dtype(series.dtype)):
        series = series.astype(str)
    objects = series.astype(object).where(series.notna(), None).to_numpy(dtype=object)  # one missing key
    return np.fromiter(map(hash, objects), dtype=np.int64, count=len(objects))


def _as_kept(rows: pd.DataFrame) -> pd.DataFrame:
    """The columns the features read, as numbers on a fresh index: keys and ids hashed
    (:func:`_hashed`), ``event_time`` as epoch microseconds and ``amount_usd`` (from ``amount``
    and ``currency``)."""
    kept = rows[list(INPUT_COLUMNS)].reset_index(drop=True)
    return pd.DataFrame(
        {
            "transaction_id": _hashed(kept["transaction_id"]),
            "event_time": epoch_micros(kept["event_time"]),
            "user_id": _hashed(kept["user_id"]),
            "card_id": _hashed(kept["card_id"]),
            "merchant_id": _hashed(kept["merchant_id"]),
            "country": _hashed(kept["country"]),
            "amount_usd": usd_amounts(kept["amount"], kept["currency"]),
        }
    )
