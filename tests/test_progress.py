"""What `fraudlake run`/`demo` say while streaming and when they stop. No JVM: fake queries and stats."""

from __future__ import annotations

import json
import time
from collections import deque
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from fraudlake.errors import FraudlakeError
from fraudlake.orchestration.listener import ProgressListener
from fraudlake.orchestration.pipeline import Pipeline
from fraudlake.orchestration.streaming import (
    IntervalProgress,
    ProgressTracker,
    drain_in_stages,
    format_left_behind,
    format_progress,
    interval_p95,
    progress_event,
    progress_printer,
    run_queries,
    stop_after_next_batch,
)

WHOLE_PIPELINE = IntervalProgress(
    elapsed_seconds=35.2,
    input_rows_per_second=1002.4,
    lag_seconds={"bronze": 0.61, "silver": 1.94, "gold": 5.6},
    freshness_p95_seconds=7.54,
    rows={"bronze": 35_080, "silver": 34_213, "gold": 33_900},
    scored=34_210,
    flagged=402,
    quarantined=3,
    model_alerts=30,
    activity_alerts=7,
)


def report(query_id: str, batch: int, rows: int, seconds: float = 0.4, began: float | None = None) -> dict:
    """A progress report as Spark's listener and ``recentProgress`` give it (the fields used): the
    batch's trigger began at ``began`` (epoch seconds; default now), stamped as Spark does (ISO 8601, UTC)."""
    moment = datetime.fromtimestamp(time.time() if began is None else began, timezone.utc)
    return {
        "id": query_id,
        "batchId": batch,
        "numInputRows": rows,
        "durationMs": {"triggerExecution": seconds * 1000},
        "timestamp": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class FakeQuery:
    def __init__(self, query_id: str, reports=(), active: bool = True, has_more: bool = False, error=None):
        self.id, self.name = query_id, query_id
        self.recentProgress = list(reports)
        self.isActive = active
        self.has_more = has_more  # a layer that never catches up
        self.error = error

    @property
    def lastProgress(self):
        return self.recentProgress[-1] if self.recentProgress else None

    @property
    def status(self):
        return {"isTriggerActive": False, "isDataAvailable": self.has_more}

    def stop(self):
        self.isActive = False

    def exception(self):
        return self.error


class Clock:
    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the line people read ------------------------------------------------------------------


def test_one_line_says_the_whole_pipeline():
    assert format_progress(WHOLE_PIPELINE) == (
        "[  35s] in 1,002 rows/s · lag bronze 0.6s silver 1.9s gold 5.6s · fresh p95 7.5s · "
        "scored 34,210 · flagged 402 · quarantined 3 · alerts 37 (model 30, activity 7)"
    )


def test_a_bronze_only_run_shows_only_what_bronze_knows():
    line = format_progress(IntervalProgress(elapsed_seconds=5, input_rows_per_second=200, lag_seconds={"bronze": 0.3}))
    assert line == "[   5s] in 200 rows/s · lag bronze 0.3s"


def test_a_layer_without_a_batch_yet_shows_a_dash_not_zero():
    progress = IntervalProgress(
        elapsed_seconds=5,
        input_rows_per_second=0.0,
        lag_seconds={"silver": None, "gold": None},
        scored=0,
        flagged=0,
        quarantined=0,
        model_alerts=0,
        activity_alerts=0,
    )
    assert format_progress(progress).startswith("[   5s] in 0 rows/s · lag silver - gold - · fresh p95 - · scored 0")


def test_a_long_lag_drops_the_decimal():
    line = format_progress(IntervalProgress(elapsed_seconds=600, input_rows_per_second=1, lag_seconds={"gold": 1234.5}))
    assert "lag gold 1,234s" in line  # a backlog of 20 minutes does not need tenths


# -- the JSON event programs read ----------------------------------------------------------


def test_the_json_event_carries_the_line_by_name_on_one_line():
    text = json.dumps(progress_event(WHOLE_PIPELINE))
    assert "\n" not in text
    event = json.loads(text)
    assert event == {
        "event": "progress",
        "elapsed_seconds": 35.2,
        "input_rows_per_second": 1002.4,
        "lag_seconds": {"bronze": 0.61, "silver": 1.94, "gold": 5.6},
        "freshness_p95_seconds": 7.54,
        "rows": {"bronze": 35_080, "silver": 34_213, "gold": 33_900},
        "scored": 34_210,
        "flagged": 402,
        "quarantined": 3,
        "alerts": {"total": 37, "model": 30, "activity": 7},
    }


def test_progress_goes_to_stderr_and_stdout_stays_for_the_result(capsys):
    progress_printer("json")(WHOLE_PIPELINE)
    progress_printer("table")(WHOLE_PIPELINE)
    progress_printer("csv")(WHOLE_PIPELINE)  # CSV is for the result; progress stays for people
    out, err = capsys.readouterr()
    assert out == ""
    event, line, csv_line = err.splitlines()
    assert json.loads(event)["event"] == "progress"
    assert line == csv_line == format_progress(WHOLE_PIPELINE)


def test_the_json_event_keeps_its_keys_when_layers_are_missing():
    event = progress_event(
        IntervalProgress(elapsed_seconds=5, input_rows_per_second=None, lag_seconds={"bronze": None})
    )
    assert set(event) == set(progress_event(WHOLE_PIPELINE))  # a consumer can always index it
    assert event["scored"] is None and event["alerts"] is None and event["lag_seconds"] == {"bronze": None}


# -- freshness over an interval --------------------------------------------------------------


def test_interval_p95_weighs_batches_by_rows_and_ignores_older_ones():
    freshness = [(90.0, 10_000, 60.0), (101.0, 950, 1.0), (102.0, 50, 9.0)]
    # The 60 s batch committed before the interval; of the rest, 95% of rows were within 1 s.
    assert interval_p95(freshness, since=100.0) == 1.0
    assert interval_p95(freshness, since=101.5) == 9.0
    assert interval_p95(freshness, since=200.0) is None
    assert interval_p95([(101.0, 0, 5.0)], since=100.0) is None  # an empty batch says nothing


# -- collecting: lag per layer, input rate ---------------------------------------------------


def _pipeline(clock: Clock):
    bronze = FakeQuery("b", [report("b", 0, 500, 0.2), report("b", 1, 1_500, 0.6)])
    silver, gold = FakeQuery("s"), FakeQuery("g")
    stats = {
        "silver": SimpleNamespace(scored=1_990, flagged=20, quarantined=10, freshness=deque()),
        "gold": SimpleNamespace(model_alerts=20, activity_alerts=2, freshness=deque()),
    }
    tracker = ProgressTracker({"bronze": bronze, "silver": silver, "gold": gold}, stats, clock=clock)
    return tracker, stats, bronze


def test_each_layer_shows_what_it_adds_and_fresh_is_end_to_end():
    clock = Clock(1_000.0)
    tracker, stats, _ = _pipeline(clock)
    stats["silver"].freshness.extend([(1_001.0, 1_000, 1.5), (1_004.0, 990, 2.0)])
    stats["gold"].freshness.append((1_004.5, 1_990, 6.5))
    clock.now = 1_005.0
    progress = tracker.interval()
    assert progress.lag_seconds == {"bronze": 0.6, "silver": 2.0, "gold": 4.5}
    assert progress.freshness_p95_seconds == 6.5
    assert progress.input_rows_per_second == 400.0  # 2,000 bronze rows in 5 s
    assert "alerts 22 (model 20, activity 2)" in format_progress(progress)


def test_a_layer_idle_in_the_interval_keeps_its_last_batch_and_the_rate_falls_to_zero():
    clock = Clock(1_000.0)
    tracker, stats, _ = _pipeline(clock)
    stats["silver"].freshness.append((1_001.0, 2_000, 1.5))
    stats["gold"].freshness.append((1_002.0, 2_000, 20.0))
    clock.now = 1_005.0
    tracker.interval()
    stats["silver"].freshness.append((1_007.0, 100, 1.0))
    clock.now = 1_010.0  # gold (a 30 s trigger) committed nothing in this interval
    progress = tracker.interval()
    assert progress.lag_seconds["gold"] == 19.0 and progress.freshness_p95_seconds == 20.0
    assert progress.input_rows_per_second == 0.0


def test_a_source_batch_longer_than_the_interval_keeps_its_rate_instead_of_zero():
    clock = Clock(1_000.0)
    slow = FakeQuery("b", [report("b", 0, 4_000, 8.0)])  # a bronze+silver batch of 8 s: 4,000 rows
    tracker = ProgressTracker({"bronze": slow}, clock=clock)
    clock.now = 1_005.0
    assert tracker.interval().input_rows_per_second == 800.0
    clock.now = 1_010.0  # the next batch is still running: nothing committed in this interval
    assert tracker.interval().input_rows_per_second == 800.0
    slow.recentProgress.append(report("b", 1, 3_000, 8.0))
    clock.now = 1_015.0
    assert tracker.interval().input_rows_per_second == 300.0  # 3,000 rows since the rate was last measured
    clock.now = 1_035.0  # 20 s without a commit, after batches of 8 s: the source is idle
    assert tracker.interval().input_rows_per_second == 0.0


def test_progress_comes_from_the_listener_when_spark_accepts_one():
    added = []
    spark = SimpleNamespace(streams=SimpleNamespace(addListener=added.append, removeListener=added.remove))
    query = FakeQuery("q-1")  # no recentProgress: only the listener knows
    tracker = ProgressTracker({"bronze": query}, spark=spark)
    [listener] = added
    for batch, rows in ((0, 100), (1, 300), (1, 300)):  # Spark may post a report twice
        listener.onQueryProgress(SimpleNamespace(progress=SimpleNamespace(json=json.dumps(report("q-1", batch, rows)))))
    assert tracker.interval().rows == {"bronze": 400}
    tracker.finish()
    assert added == []  # the listener is removed at the end


def test_without_a_listener_progress_is_polled(capsys):
    def refuse(listener):
        raise RuntimeError("listeners are not supported here")

    spark = SimpleNamespace(streams=SimpleNamespace(addListener=refuse))
    tracker = ProgressTracker({"bronze": FakeQuery("q", [report("q", 0, 250)])}, spark=spark)
    assert tracker.interval().rows == {"bronze": 250}
    assert "progress from polling" in capsys.readouterr().err


def test_the_listener_hands_over_reports_once_in_order():
    listener = ProgressListener()
    for batch in range(3):
        listener.onQueryProgress(SimpleNamespace(progress=SimpleNamespace(json=json.dumps(report("q", batch, 1)))))
    assert [r["batchId"] for r in listener.reports()] == [0, 1, 2]
    assert listener.reports() == []


# -- stopping: what was left behind --------------------------------------------------------


def test_left_behind_says_zero_and_the_drain_limit():
    assert format_left_behind({"silver": 0, "gold": 1_200}, {"gold": 90.0}) == (
        "left behind: silver 0 rows, gold 1,200 rows (gold reached the drain limit of 90 s)"
    )
    assert format_left_behind({"silver": 1, "gold": 0}) == "left behind: silver 1 row, gold 0 rows"
    assert format_left_behind({"silver": 5, "gold": 7}, {"silver": 90.0, "gold": 90.0}).endswith(
        "(silver and gold reached the drain limit of 90 s)"
    )


def test_left_behind_after_ctrl_c_says_there_was_no_drain():
    assert format_left_behind({"gold": 40}, interrupted=True) == (
        "left behind: gold 40 rows (stopped with Ctrl-C, without draining)"
    )


def test_a_bronze_only_run_has_nothing_to_report():
    assert format_left_behind({}) == ""


def test_a_layer_that_never_catches_up_is_stopped_at_the_limit_and_named(capsys):
    bronze, silver, gold = FakeQuery("b"), FakeQuery("s"), FakeQuery("g", has_more=True)
    reached = drain_in_stages(
        {"bronze": bronze, "silver": silver, "gold": gold}, [["bronze"], ["silver"], ["gold"]], {}, timeout=1.0
    )
    assert reached == {"gold": 1.0}
    assert not any(q.isActive for q in (bronze, silver, gold))
    assert "gold had not caught up after 1 s (the drain limit)" in capsys.readouterr().err


def test_a_layer_whose_batch_began_after_the_stop_is_caught_up_without_waiting_its_interval():
    # Gold's last batch began after silver stopped: it read everything silver committed, even
    # though its status still says data was available when it last looked.
    gold = FakeQuery("g", [report("g", 7, 500, began=time.time() + 60)], has_more=True)
    reached = drain_in_stages({"silver": FakeQuery("s"), "gold": gold}, [["silver"], ["gold"]], {}, timeout=2.0)
    assert reached == {} and not gold.isActive


def test_a_layer_whose_last_batch_began_before_the_stop_is_not_caught_up_by_it(capsys):
    gold = FakeQuery("g", [report("g", 7, 500, began=time.time() - 60)], has_more=True)
    reached = drain_in_stages({"silver": FakeQuery("s"), "gold": gold}, [["silver"], ["gold"]], {}, timeout=1.0)
    assert reached == {"gold": 1.0} and not gold.isActive


def test_a_producer_put_first_is_stopped_first_and_its_rate_is_the_input_rate():
    # fraudlake demo --source kafka: the simulator's producer upstream of bronze + silver and gold.
    pipeline = Pipeline()
    pipeline.add_stage({"silver": FakeQuery("s")}, 1.0)
    pipeline.add_stage({"gold": FakeQuery("g")}, 10.0)
    producer = FakeQuery("p")
    pipeline.add_source_first("produce", producer, 1.0)
    assert pipeline.stages == [["produce"], ["silver"], ["gold"]]
    assert list(pipeline.queries) == ["produce", "silver", "gold"] and pipeline.intervals["produce"] == 1.0
    assert drain_in_stages(pipeline.queries, pipeline.stages, pipeline.intervals, timeout=1.0) == {}
    assert not any(query.isActive for query in pipeline.queries.values())


class RestartedSource(FakeQuery):
    """A rate source just restarted after a crash, stopped during its first batch: the batch
    replayed from the checkpoint (planned before the crash) commits, then one planned now."""

    def __init__(self):
        super().__init__("restarted", has_more=True)
        self.looks = 0

    @property
    def status(self):
        self.looks += 1
        if self.looks == 2:
            self.recentProgress.append(report("restarted", 4, 500, began=time.time() - 30))  # the replayed batch
        elif self.looks == 5:
            self.recentProgress.append(report("restarted", 5, 500))  # the downtime's rows
        return {"isTriggerActive": False, "isDataAvailable": True}


def test_a_batch_replayed_after_a_crash_does_not_end_a_sources_last_batch():
    source = RestartedSource()
    assert stop_after_next_batch([source], timeout=5.0, grace=1.0) == []
    assert [r["batchId"] for r in source.recentProgress] == [4, 5] and not source.isActive


class BusySource(FakeQuery):
    """A source whose batches run back to back: always mid-batch, one more committed per look."""

    def __init__(self):
        super().__init__("busy", [report("busy", 0, 10)])

    @property
    def status(self):
        last = self.recentProgress[-1]["batchId"]
        self.recentProgress.append(report("busy", last + 1, 10))
        return {"isTriggerActive": True, "isDataAvailable": True}


def test_a_source_that_is_never_between_batches_stops_after_two_more_not_at_the_limit():
    source = BusySource()
    assert drain_in_stages({"bronze": source}, [["bronze"]], {}) == {}
    assert not source.isActive
    assert source.recentProgress[-1]["batchId"] <= 3


class SlowSource(FakeQuery):
    """A source whose batches take longer than the stop allows: each commits after 20 looks.
    Like the combined bronze + silver query, it writes its first table early in a batch, so
    only a stop at the look right after a commit leaves no batch half written."""

    def __init__(self):
        super().__init__("slow", [report("slow", 0, 10)])
        self.looks = 0
        self.stopped_after_looks = None

    @property
    def status(self):
        self.looks += 1
        if self.looks == 20:
            self.recentProgress.append(report("slow", self.recentProgress[-1]["batchId"] + 1, 10))
            self.looks = 0
        return {"isTriggerActive": True, "isDataAvailable": True}

    def stop(self):
        self.stopped_after_looks = self.looks
        super().stop()


def test_a_source_slower_than_the_stop_limit_is_stopped_at_a_batch_boundary_not_between_its_writes():
    source = SlowSource()
    assert stop_after_next_batch([source], timeout=0.0, grace=30.0) == []
    assert source.stopped_after_looks == 0  # the batch had just begun: nothing of it written yet


def test_run_reports_the_queries_and_the_drain_limit_per_query():
    queries = {"bronze": FakeQuery("b", [report("b", 0, 10)]), "gold": FakeQuery("g", has_more=True)}
    seen = []
    result = run_queries(
        queries, duration=0.1, progress_seconds=60, stages=[["bronze"], ["gold"]], report=seen.append, drain_seconds=1.0
    )
    assert result["bronze"]["rows"] == 10 and result["bronze"]["drain_limit_seconds"] is None
    assert result["gold"]["drain_limit_seconds"] == 1.0
    assert seen == []  # shorter than one progress interval


def test_a_failed_query_ends_the_run_with_its_name():
    queries = {"silver": FakeQuery("s", active=False, error=RuntimeError("boom\n  at the JVM"))}
    with pytest.raises(FraudlakeError, match="^silver query failed: boom$"):
        run_queries(queries, duration=5, progress_seconds=60, quiet=True)


def test_the_run_summary_says_none_rather_than_a_blank():
    from fraudlake.output import render_mapping

    text = render_mapping({"left_behind": {"silver": 0, "gold": 1_200}, "drain_limit_reached": {}}, "table")
    assert text.splitlines() == ["left_behind          silver=0, gold=1,200", "drain_limit_reached  none"]


def test_a_failed_query_is_summed_up_by_its_cause_not_the_proxys_first_line():
    from fraudlake.orchestration.streaming import failure_summary

    proxy = "An exception was raised by the Python Proxy. Return Message: Traceback (most recent call last):"
    java = (
        f'{proxy}\n  File "/x/silver/stream.py", line 392, in route\n    append_once(...)\n'
        "py4j.protocol.Py4JJavaError: An error occurred while calling o812.saveAsTable.\n"
        ": org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows\n"
        "\tat org.apache.spark.sql.errors.QueryExecutionErrors$.taskFailedWhileWritingRowsError\n"
        "Caused by: org.apache.hadoop.fs.FSError: java.io.IOException: No space left on device\n"
        "\tat org.apache.hadoop.fs.RawLocalFileSystem\n"
        "Caused by: java.io.IOException: No space left on device\n\tat java.base/java.io.FileOutputStream.writeBytes\n"
    )
    assert failure_summary(java) == "java.io.IOException: No space left on device"
    python = f"{proxy}\n  File \"/x/gold/stream.py\", line 3\nKeyError: 'minute'\n"
    assert failure_summary(python) == "KeyError: 'minute'"
    assert failure_summary("[STREAM_FAILED] Query [id = 1] terminated\nmore detail") == (
        "[STREAM_FAILED] Query [id = 1] terminated"
    )
