"""The recent user minutes gold keeps in driver memory, to find activity bursts without
reading ``gold.user_activity_minute`` back in every micro-batch.

A user-activity alert looks at the 5-minute windows holding a user minute the batch
changed: the sum of five user minutes. Only open minutes change, and a window holding an
open minute starts at most four minutes before it, so the minutes a batch can need are
those of the last ``WINDOW + MINUTE + lateness``: a few per active user. The writer keeps
them here, adds each micro-batch's sums to them, and drops those no open window can hold
any more. Python and Arrow, no Spark: times are epoch microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fraudlake.gold.aggregates import MINUTE_MICROS, WINDOW_MINUTES

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class UserMinute:
    """One user's transactions in one minute (starting at ``minute``, epoch µs), as
    ``gold.user_activity_minute`` holds them; ``total_amount`` is None when no transaction of
    the minute had a USD rate."""

    user_id: str
    minute: int
    tx_count: int
    total_amount: float | None
    flagged_count: int
    last_event_time: int


@dataclass(frozen=True)
class Window:
    """A user's 5-minute window (``start`` epoch µs): the sums of the user minutes it holds."""

    user_id: str
    start: int
    tx_count: int
    total_amount: float | None
    flagged_count: int
    last_event_time: int


def window_starts_of(minute: int) -> range:
    """The starts of the 5-minute windows sliding every minute that hold ``minute``.

    >>> [s // MINUTE_MICROS for s in window_starts_of(10 * MINUTE_MICROS)]
    [6, 7, 8, 9, 10]
    """
    return range(minute - (WINDOW_MINUTES - 1) * MINUTE_MICROS, minute + 1, MINUTE_MICROS)


USER_MINUTE_SCHEMA = (
    ("user_id", "string"),
    ("minute", "int64"),
    ("tx_count", "int64"),
    ("total_amount", "float64"),
    ("flagged_count", "int64"),
    ("last_event_time", "int64"),
)


def user_minute_table(minutes: Iterable[UserMinute]) -> pa.Table:
    """User minutes as an Arrow table with the columns of :class:`UserMinute`."""
    import pyarrow as pa

    rows = list(minutes)
    return pa.table({name: pa.array([getattr(m, name) for m in rows], type=kind) for name, kind in USER_MINUTE_SCHEMA})


class RecentUserMinutes:
    """The user minutes recent enough to be in a window that may still change.

    Kept as the Arrow tables of the batches that added them (a user minute several batches
    counted is in several): adding a batch's sums costs nothing per row, and a batch's
    bursts are looked for only among the users it touched whose kept transactions reach
    the threshold at all, a handful of the thousands a batch touches (most users make one
    transaction in a window). Pure Python and Arrow, no Spark.
    """

    def __init__(self, minutes: pa.Table | Iterable[UserMinute] = ()) -> None:
        self._chunks: list[pa.Table] = []
        self.add(minutes)

    def __len__(self) -> int:
        """How many user minutes are kept (each once, however many batches counted it)."""
        return self._summed(self._held(None)).num_rows

    def add(self, sums: pa.Table | Iterable[UserMinute]) -> None:
        """Add a batch's sums per user minute (an Arrow table with the columns of
        :class:`UserMinute`, or the user minutes) to what is kept."""
        import pyarrow as pa

        table = sums if isinstance(sums, pa.Table) else user_minute_table(sums)
        if table.num_rows:
            self._chunks.append(table.select([name for name, _ in USER_MINUTE_SCHEMA]).cast(_schema()))

    def window(self, user_id: str, start: int) -> Window | None:
        """The user's window starting at ``start``, or None when it holds none of their minutes."""
        import pyarrow as pa
        import pyarrow.compute as pc

        windows = _windows(self._summed(self._held(pa.array([user_id], pa.string()))))
        found = windows.filter(pc.equal(windows.column("start"), start)).to_pylist()
        return Window(**found[0]) if found else None

    def busy_windows(self, touched: pa.Table | Iterable[tuple[str, int]], threshold: int) -> list[Window]:
        """The windows holding a touched user minute (a table with ``user_id`` and ``minute``,
        or ``(user_id, minute)`` pairs) with at least ``threshold`` transactions, each once, in
        (user, start) order."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not isinstance(touched, pa.Table):
            pairs = list(touched)
            touched = pa.table(
                {
                    "user_id": pa.array([u for u, _ in pairs], pa.string()),
                    "minute": pa.array([m for _, m in pairs], pa.int64()),
                }
            )
        held = self._summed(self._held(pc.unique(touched.column("user_id"))))
        # A window holds at most every transaction kept for its user: a user below the
        # threshold in all of them has no busy window.
        totals = held.group_by("user_id").aggregate([("tx_count", "sum")])
        busy_users = totals.filter(pc.greater_equal(totals.column("tx_count_sum"), threshold)).column("user_id")
        if not len(busy_users):
            return []
        held = held.filter(pc.is_in(held.column("user_id"), value_set=busy_users))
        # Each user minute counts in the five windows that hold it; the windows that matter hold a
        # touched one. All in Arrow: at tens of thousands of rows a second most users are busy.
        windows = _windows(held)
        windows = windows.filter(pc.greater_equal(windows.column("tx_count"), threshold))
        near = touched.filter(pc.is_in(touched.column("user_id"), value_set=busy_users))
        starts = _by_window_start(near.select(["user_id", "minute"])).group_by(["user_id", "start"]).aggregate([])
        windows = windows.join(starts, keys=["user_id", "start"], join_type="inner").sort_by(
            [("user_id", "ascending"), ("start", "ascending")]
        )
        return [Window(**w) for w in windows.to_pylist()]

    def forget_before(self, minute: int) -> None:
        """Drop the minutes starting before ``minute``: no window that can still change holds them."""
        import pyarrow.compute as pc

        kept = []
        for chunk in self._chunks:
            extremes = pc.min_max(chunk.column("minute"))
            if extremes["max"].as_py() < minute:
                continue
            kept.append(
                chunk
                if extremes["min"].as_py() >= minute
                else chunk.filter(pc.greater_equal(chunk.column("minute"), minute))
            )
        self._chunks = kept

    def _held(self, users: pa.Array | None) -> pa.Table:
        """The kept rows of ``users`` (every user's: None), one per batch that counted a user minute."""
        import pyarrow as pa
        import pyarrow.compute as pc

        chunks = (
            self._chunks
            if users is None
            else [c.filter(pc.is_in(c.column("user_id"), value_set=users)) for c in self._chunks]
        )
        return pa.concat_tables(chunks) if chunks else _schema().empty_table()

    @staticmethod
    def _summed(held: pa.Table) -> pa.Table:
        """One row per user minute: the sums of the batches that counted it."""
        return _added_up(held, ["user_id", "minute"])


# How user minutes add up, into one user minute or into a window: counts and amounts are
# summed (an amount unknown in every row stays unknown: Arrow's sum of nulls is null, as
# Spark's is), and the newest event time is kept.
ADDED_UP = (("tx_count", "sum"), ("total_amount", "sum"), ("flagged_count", "sum"), ("last_event_time", "max"))


def _added_up(rows: pa.Table, keys: list[str]) -> pa.Table:
    """``rows`` (user minutes) added up per ``keys``, the columns keeping their names."""
    grouped = rows.group_by(keys).aggregate(list(ADDED_UP))
    return grouped.rename_columns({f"{column}_{how}": column for column, how in ADDED_UP})


def _windows(minutes: pa.Table) -> pa.Table:
    """The 5-minute windows that hold ``minutes`` (one row per user minute), with the columns of
    :class:`Window`."""
    return _added_up(_by_window_start(minutes), ["user_id", "start"])


def _by_window_start(minutes: pa.Table) -> pa.Table:
    """``minutes`` (with ``minute``) once for each 5-minute window holding it, with the window's ``start``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pa.concat_tables(
        [
            minutes.append_column("start", pc.subtract(minutes.column("minute"), back * MINUTE_MICROS))
            for back in range(WINDOW_MINUTES)
        ]
    )


def _schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in USER_MINUTE_SCHEMA])


def plus_known(a: float | None, b: float | None) -> float | None:
    """A sum where None is unknown (as Spark's ``sum`` of no known value): unknown only when both are.

    >>> plus_known(None, 2.5), plus_known(None, None), plus_known(1, 2)
    (2.5, None, 3)
    """
    if a is None:
        return b
    return a if b is None else a + b
