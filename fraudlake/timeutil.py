"""Times between Spark and Python, independent of the host's time zone.

Spark stores a ``timestamp`` as an instant and the session shows it in UTC
(``spark.sql.session.timeZone``), but PySpark does not hand it over that way:

- a ``Row`` from ``collect()``/``first()`` holds a *naive local* datetime (PySpark
  builds it with ``datetime.fromtimestamp``, in the Python process's time zone);
- a naive datetime given to Spark (``F.lit(dt)``, ``createDataFrame``) is read as
  local time too;
- ``toPandas()`` (Arrow) gives naive wall times in the session time zone, UTC here.

So a naive value means three things depending on where it came from. These pure
functions make it one: aware UTC datetimes inside the program, naive UTC ones in
what it shows (like Spark SQL's own output in a UTC session). Example::

    committed = from_row(spark.sql("DESCRIBE HISTORY t").first()["timestamp"])
    F.col("event_time") >= F.lit(given_utc(since))   # since from a user: naive means UTC
    print(shown_utc(committed))                       # 2026-11-28 18:00:00.123000
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, overload


@overload
def from_row(value: datetime) -> datetime: ...
@overload
def from_row(value: None) -> None: ...
def from_row(value: datetime | None) -> datetime | None:
    """A datetime collected from a Spark ``Row`` as an aware UTC datetime.

    A naive one is the host's local time (how PySpark builds ``TimestampType`` values),
    and ``astimezone`` converts it exactly, the repeated hour of a DST change included
    (PySpark sets ``fold``). An aware one is only converted to UTC. Not for
    ``TIMESTAMP_NTZ`` columns, whose values belong to no zone.
    """
    if value is None:
        return None
    return value.astimezone(timezone.utc)


@overload
def given_utc(value: datetime) -> datetime: ...
@overload
def given_utc(value: None) -> None: ...
def given_utc(value: datetime | None) -> datetime | None:
    """A time from a user or a caller as an aware UTC datetime: naive means UTC (the
    documented meaning of ``--as-of-timestamp 2026-11-28 18:00``), aware is converted.
    Aware values are what to pass to ``F.lit``: PySpark converts them exactly."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def parse_utc(text: str) -> datetime:
    """ISO 8601 text as an aware UTC datetime: ``2026-11-28T18:00:00Z``, ``2026-11-28 18:00``
    (no offset: UTC), ``2026-11-28T19:00+01:00``. Raises ``ValueError`` on anything else."""
    return given_utc(datetime.fromisoformat(text.strip()))


@overload
def shown_utc(value: datetime) -> datetime: ...
@overload
def shown_utc(value: None) -> None: ...
def shown_utc(value: datetime | None) -> datetime | None:
    """An aware datetime as the naive UTC one results show (a naive one is taken as UTC already)."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def row_in_utc(mapping: dict[str, Any]) -> dict[str, Any]:
    """A collected row's values (``Row.asDict()``) with every datetime as naive UTC, for showing."""
    return {key: shown_utc(from_row(v)) if isinstance(v, datetime) else v for key, v in mapping.items()}


def iso_utc(value: datetime) -> str:
    """An instant as ISO 8601 UTC to the second, ``2026-11-28T18:00:00Z`` (naive means UTC, as
    :func:`given_utc` reads it; a value collected from a ``Row`` goes through :func:`from_row` first)."""
    return given_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_clock(micros: int, fmt: str = "%H:%M:%S") -> str:
    """An instant given as epoch microseconds, formatted in UTC (``fmt`` as for ``strftime``).

    >>> utc_clock(1_772_355_600_000_000, "%H:%M")
    '09:00'
    """
    return datetime.fromtimestamp(micros / 1e6, tz=timezone.utc).strftime(fmt)
