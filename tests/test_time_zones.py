"""Times do not depend on the host's time zone.

The unit tests check :mod:`fraudlake.timeutil` against PySpark's own conversions (pure
Python, no JVM) with the process switched to other zones by ``time.tzset()``, New York's
repeated hour included. Every other test runs off UTC too: ``tests/conftest.py`` puts the
whole suite in ``Asia/Kolkata`` (a machine in UTC would hide a local time mislabelled as
UTC; ahead of UTC it shows as a time in the future, behind it as an earlier version).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from fraudlake.timeutil import from_row, given_utc, parse_utc, row_in_utc, shown_utc

# A zone behind UTC with DST, and one ahead of it at a half-hour offset without DST.
ZONES = ("America/New_York", "Asia/Kolkata")


@pytest.fixture(params=("UTC", *ZONES))
def host_zone(request):
    """This process in another time zone for one test (``TZ`` + ``time.tzset``), restored after."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()


def _collected(instant: datetime) -> datetime:
    """What ``collect()`` gives for a timestamp column holding ``instant``."""
    from pyspark.sql.types import TimestampType

    micros = (instant - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    return TimestampType().fromInternal(micros)


def _as_spark_reads(value: datetime) -> datetime:
    """The instant Spark stores for ``value`` passed in from Python (``F.lit``, ``createDataFrame``)."""
    from pyspark.sql.types import TimestampType

    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=TimestampType().toInternal(value))


INSTANTS = (
    datetime(2026, 11, 28, 18, 0, 0, 123456, tzinfo=timezone.utc),
    datetime(2026, 7, 1, 3, 30, tzinfo=timezone.utc),  # summer time in New York
    # New York's clocks go back at 06:00 UTC on 2026-11-01: 01:30 local happens twice.
    datetime(2026, 11, 1, 5, 30, tzinfo=timezone.utc),
    datetime(2026, 11, 1, 6, 30, tzinfo=timezone.utc),
)


@pytest.mark.parametrize("instant", INSTANTS, ids=lambda t: t.isoformat())
def test_a_collected_time_is_the_instant_spark_holds(host_zone, instant):
    collected = _collected(instant)
    assert collected.tzinfo is None  # PySpark's naive local time
    assert from_row(collected) == instant and from_row(collected).utcoffset() == timedelta(0)
    assert shown_utc(from_row(collected)) == instant.replace(tzinfo=None)
    # Labelling the collected value UTC (what the audit did) is right only in UTC.
    assert (collected.replace(tzinfo=timezone.utc) == instant) == (host_zone == "UTC")


@pytest.mark.parametrize("instant", INSTANTS, ids=lambda t: t.isoformat())
def test_a_given_time_reaches_spark_as_that_instant(host_zone, instant):
    naive_utc = instant.replace(tzinfo=None)
    assert _as_spark_reads(given_utc(naive_utc)) == instant
    assert _as_spark_reads(given_utc(instant.astimezone(timezone(timedelta(hours=-3))))) == instant
    if host_zone != "UTC":  # a naive time passed straight in is read as the host's local time
        assert _as_spark_reads(naive_utc) != instant


def test_parse_utc_reads_iso_8601_and_a_missing_offset_as_utc(host_zone):
    expected = datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
    for text in (
        "2026-11-28T18:00:00Z",
        "2026-11-28 18:00",
        " 2026-11-28T18:00:00+00:00 ",
        "2026-11-28T23:30+05:30",
        "2026-11-28T13:00:00-05:00",
    ):
        parsed = parse_utc(text)
        assert parsed == expected and parsed.tzinfo == timezone.utc, text
    with pytest.raises(ValueError):
        parse_utc("yesterday")


def test_shown_times_are_naive_utc():
    aware = datetime(2026, 11, 28, 23, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    assert shown_utc(aware) == datetime(2026, 11, 28, 18, 0)
    assert shown_utc(datetime(2026, 11, 28, 18, 0)) == datetime(2026, 11, 28, 18, 0)  # naive: UTC already
    assert shown_utc(None) is None and from_row(None) is None and given_utc(None) is None


def test_a_collected_row_is_shown_in_utc(host_zone):
    instant = INSTANTS[0]
    row = row_in_utc({"event_time": _collected(instant), "amount": 3.5, "user_id": "u1", "scored_at": None})
    assert row == {"event_time": instant.replace(tzinfo=None), "amount": 3.5, "user_id": "u1", "scored_at": None}


def test_the_cli_reads_timestamps_as_utc(host_zone):
    """``--as-of-timestamp``, ``rescore --since`` and ``train --since`` read times without an offset as UTC."""
    import argparse

    from fraudlake.cli.common import utc_timestamp
    from fraudlake.timeutil import iso_utc

    assert utc_timestamp("2026-11-28 18:00") == datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
    assert utc_timestamp("2026-11-28T19:00+01:00") == datetime(2026, 11, 28, 18, 0, tzinfo=timezone.utc)
    assert iso_utc(utc_timestamp("2026-11-28T19:00+01:00")) == "2026-11-28T18:00:00Z"  # how errors and runs show it
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO timestamp"):
        utc_timestamp("28/11/2026")


# ----------------------------------------------------------------------------- the suite off UTC


def test_the_suite_runs_with_the_host_off_utc():
    """conftest puts this process (and the JVM and subprocesses it starts) in a zone off UTC, so
    every JVM test, not only these, would show a local time mislabelled as UTC."""
    assert time.localtime(0).tm_gmtoff != 0, os.environ.get("TZ")
