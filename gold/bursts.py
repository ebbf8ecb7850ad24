"""The recent user minutes gold keeps in driver memory, to find activity bursts without
reading ``gold.user_activity_minute`` back in every micro-batch.

A user-activity alert looks at the 5-minute windows holding a user minute the batch
changed: the sum of five user minutes. Only open minutes change, and a window holding an
open minute starts at most four minutes before it, so the minutes a batch can need are
those of the last ``WINDOW + MINUTE + lateness``: a few per active user. The writer keeps
them here, adds each micro-batch's sums to them, and drops those no open window can hold
any more. Pure Python, no Spark: times are epoch microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fraudlake.gold.aggregates import MINUTE_MICROS, WINDOW_MINUTES


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


class RecentUserMinutes:
    """The user minutes recent enough to be in a window that may still change."""

    def __init__(self, minutes: Iterable[UserMinute] = ()) -> None:
        self._by_user: dict[str, dict[int, UserMinute]] = {}
        self.add(minutes)

    def __len__(self) -> int:
        return sum(len(minutes) for minutes in self._by_user.values())

    def add(self, sums: Iterable[UserMinute]) -> None:
        """Add a batch's sums per user minute to what is kept (an amount unknown on both sides stays unknown)."""
        for m in sums:
            kept = self._by_user.setdefault(m.user_id, {})
            old = kept.get(m.minute)
            if old is not None:
                m = UserMinute(
                    m.user_id,
                    m.minute,
                    old.tx_count + m.tx_count,
                    plus_known(old.total_amount, m.total_amount),
                    old.flagged_count + m.flagged_count,
                    max(old.last_event_time, m.last_event_time),
                )
            kept[m.minute] = m

    def window(self, user_id: str, start: int) -> Window | None:
        """The user's window starting at ``start``, or None when it holds none of their minutes."""
        kept = self._by_user.get(user_id, {})
        held = [kept[m] for m in range(start, start + WINDOW_MINUTES * MINUTE_MICROS, MINUTE_MICROS) if m in kept]
        if not held:
            return None
        amounts = [m.total_amount for m in held if m.total_amount is not None]
        return Window(
            user_id,
            start,
            sum(m.tx_count for m in held),
            sum(amounts) if amounts else None,
            sum(m.flagged_count for m in held),
            max(m.last_event_time for m in held),
        )

    def busy_windows(self, touched: Iterable[tuple[str, int]], threshold: int) -> list[Window]:
        """The windows holding a touched ``(user_id, minute)`` with at least ``threshold``
        transactions, each once, in (user, start) order."""
        starts = sorted({(user, start) for user, minute in touched for start in window_starts_of(minute)})
        windows = (self.window(user, start) for user, start in starts)
        return [w for w in windows if w is not None and w.tx_count >= threshold]

    def forget_before(self, minute: int) -> None:
        """Drop the minutes starting before ``minute``: no window that can still change holds them."""
        for user in list(self._by_user):
            kept = {m: v for m, v in self._by_user[user].items() if m >= minute}
            if kept:
                self._by_user[user] = kept
            else:
                del self._by_user[user]


def plus_known(a: float | None, b: float | None) -> float | None:
    """A sum where None is unknown (as Spark's ``sum`` of no known value): unknown only when both are.

    >>> plus_known(None, 2.5), plus_known(None, None), plus_known(1, 2)
    (2.5, None, 3)
    """
    if a is None:
        return b
    return a if b is None else a + b
