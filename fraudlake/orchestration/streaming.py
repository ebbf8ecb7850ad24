"""Running streaming queries from the CLI: one progress line per interval, clean stops, a summary.

Progress comes from Spark's :class:`~pyspark.sql.streaming.StreamingQueryListener`
(:mod:`.listener`, imported once a session exists; polling ``recentProgress`` where a listener cannot be added) and the layers' own
batch stats; what is shown is built by pure functions (:func:`format_progress`,
:func:`progress_event`, :func:`format_left_behind`), so it is tested without Spark.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fraudlake.errors import FraudlakeError
from fraudlake.output import note

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

    from fraudlake.orchestration.listener import ProgressListener

# How long each later stage of a timed run may take to read what the stage before
# committed, before it is stopped anyway (and what it did not read is reported).
DRAIN_SECONDS = 90.0
# How long a source may take to commit what arrived until the stop.
SOURCE_STOP_SECONDS = 30.0
# After that, how long it may take to reach its next batch boundary before it is cut mid-batch.
SOURCE_GRACE_SECONDS = 90.0


@contextmanager
def scheduler_pool(spark: SparkSession, name: str) -> Iterator[None]:
    """Queries started in this block run their jobs in the fair-scheduler pool ``name``.

    With ``spark.scheduler.mode=FAIR`` (the local conf sets it; Databricks clusters use
    it by default) pools share the cores: a silver micro-batch gets task slots while a
    gold batch is still running, instead of queueing behind all of its tasks. A query
    keeps the pool it was started with. Sessions without a SparkContext (Spark
    Connect) schedule on their own, and this does nothing there.
    """
    try:
        context = spark.sparkContext
    except Exception:  # Spark Connect has no SparkContext
        yield
        return
    previous = context.getLocalProperty("spark.scheduler.pool")
    context.setLocalProperty("spark.scheduler.pool", name)
    try:
        yield
    finally:
        # None (no pool before) removes the property; pyspark types the value as str only.
        context.setLocalProperty("spark.scheduler.pool", previous)  # type: ignore[arg-type]


@dataclass
class QueryTally:
    """What one query has done in this run, summed from its progress reports."""

    name: str
    batches: int = 0
    rows: int = 0
    last_batch_id: int = -1
    last_batch_seconds: float = 0.0
    input_rate: float = 0.0
    processed_rate: float = 0.0
    backlog_files: int | None = None  # Delta source: files committed upstream, not yet read

    def absorb(self, progress: dict) -> bool:
        """Count a progress report once; returns True if it was new."""
        batch_id = progress.get("batchId", -1)
        if batch_id <= self.last_batch_id:
            return False
        self.last_batch_id = batch_id
        rows = int(progress.get("numInputRows") or 0)
        self.rows += rows
        if rows:
            self.batches += 1
        self.input_rate = float(progress.get("inputRowsPerSecond") or 0.0)
        self.processed_rate = float(progress.get("processedRowsPerSecond") or 0.0)
        self.last_batch_seconds = (progress.get("durationMs") or {}).get("triggerExecution", 0) / 1000.0
        outstanding = [
            int(source["metrics"]["numFilesOutstanding"])
            for source in progress.get("sources") or []
            if "numFilesOutstanding" in (source.get("metrics") or {})
        ]
        self.backlog_files = sum(outstanding) if outstanding else None
        return True


def _drain(query: StreamingQuery, tally: QueryTally) -> None:
    for progress in query.recentProgress:
        tally.absorb(progress)


def rows_processed(query: StreamingQuery) -> int:
    """Input rows of the query's recent micro-batches (Spark keeps the last 100 reports)."""
    tally = QueryTally(query.name or "")
    _drain(query, tally)
    return tally.rows


# -- what a person (or a program) sees: pure functions ------------------------------------


def interval_p95(freshness: Iterable[tuple[float, int, float]], since: float) -> float | None:
    """95th percentile of freshness over the batches committed after ``since`` (epoch s).

    ``freshness`` holds one ``(commit time, rows, p95 seconds)`` per batch. Rows count:
    the smallest batch p95 at or below which 95% of the interval's rows lie. None if no
    batch with rows committed in the interval.

    >>> interval_p95([(10.0, 900, 1.0), (11.0, 100, 4.0)], since=0.0)
    4.0
    """
    batches = sorted((p95, rows) for at, rows, p95 in freshness if at > since and rows > 0)
    total = sum(rows for _, rows in batches)
    if not total:
        return None
    covered = 0
    for p95, rows in batches:
        covered += rows
        if covered >= 0.95 * total:
            return p95
    return batches[-1][0]


@dataclass(frozen=True)
class IntervalProgress:
    """The whole pipeline over one progress interval: a line for people, an event for programs.

    ``lag_seconds`` per query, upstream first (None: no batch yet): for a source, its
    last batch's duration; for a layer that reports freshness, what it adds after the
    layer before it (its p95 from ``_ingest_time`` to its commit, minus that layer's).
    ``freshness_p95_seconds``: ``_ingest_time`` to the commit of the last layer. Both
    over the batches committed in the interval, or a layer's last batch if it committed
    none in it. Counters are since the start of the run; None where the layer does not
    run here.
    """

    elapsed_seconds: float
    input_rows_per_second: float | None
    lag_seconds: dict[str, float | None]
    freshness_p95_seconds: float | None = None
    rows: dict[str, int] = field(default_factory=dict)
    scored: int | None = None
    flagged: int | None = None
    quarantined: int | None = None
    model_alerts: int | None = None
    activity_alerts: int | None = None


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}s" if value < 100 else f"{value:,.0f}s"


def format_progress(progress: IntervalProgress) -> str:
    """One line for the whole pipeline, e.g.
    ``[  35s] in 1,002 rows/s · lag bronze 0.6s silver 1.9s gold 5.6s · fresh p95 7.5s ·
    scored 34,210 · flagged 402 · quarantined 3 · alerts 37 (model 30, activity 7)``.
    """
    rate = "-" if progress.input_rows_per_second is None else f"{progress.input_rows_per_second:,.0f}"
    parts = [f"[{progress.elapsed_seconds:4.0f}s] in {rate} rows/s"]
    if progress.lag_seconds:
        parts.append("lag " + " ".join(f"{name} {_secs(lag)}" for name, lag in progress.lag_seconds.items()))
    freshness_known = any(v is not None for v in (progress.scored, progress.model_alerts))
    if freshness_known:
        parts.append(f"fresh p95 {_secs(progress.freshness_p95_seconds)}")
    if progress.scored is not None:
        parts += [
            f"scored {progress.scored:,}",
            f"flagged {progress.flagged or 0:,}",
            f"quarantined {progress.quarantined or 0:,}",
        ]
    if progress.model_alerts is not None:
        model, activity = progress.model_alerts, progress.activity_alerts or 0
        parts.append(f"alerts {model + activity:,} (model {model:,}, activity {activity:,})")
    return " · ".join(parts)


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)


def progress_event(progress: IntervalProgress) -> dict:
    """The interval as one JSON object (``--format json``): the fields of the line, by name, in seconds and rows."""
    alerts = None
    if progress.model_alerts is not None:
        activity = progress.activity_alerts or 0
        alerts = {"total": progress.model_alerts + activity, "model": progress.model_alerts, "activity": activity}
    return {
        "event": "progress",
        "elapsed_seconds": _round(progress.elapsed_seconds),
        "input_rows_per_second": _round(progress.input_rows_per_second),
        "lag_seconds": {name: _round(lag, 2) for name, lag in progress.lag_seconds.items()},
        "freshness_p95_seconds": _round(progress.freshness_p95_seconds, 2),
        "rows": dict(progress.rows),
        "scored": progress.scored,
        "flagged": progress.flagged,
        "quarantined": progress.quarantined,
        "alerts": alerts,
    }


def progress_printer(fmt: str) -> Callable[[IntervalProgress], None]:
    """Where progress goes: stderr (stdout holds a command's result), as :func:`format_progress`
    lines, or with ``fmt`` ``json`` as one :func:`progress_event` object per line."""
    if fmt == "json":
        return lambda progress: note(json.dumps(progress_event(progress)))
    return lambda progress: note(format_progress(progress))


def _rows(n: int) -> str:
    return f"{n:,} row" if n == 1 else f"{n:,} rows"


def _names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def format_left_behind(
    left: dict[str, int], limit_reached: dict[str, float] | None = None, interrupted: bool = False
) -> str:
    """What each layer had not read of what the layer before committed, when the run ended.

    ``limit_reached`` names the queries stopped at the drain limit (name → seconds).
    Empty when no layer here reads another (a bronze-only run).

    >>> format_left_behind({"silver": 0, "gold": 1200}, {"gold": 90.0})
    'left behind: silver 0 rows, gold 1,200 rows (gold reached the drain limit of 90 s)'
    """
    if not left:
        return ""
    text = "left behind: " + ", ".join(f"{layer} {_rows(n)}" for layer, n in left.items())
    reasons = []
    if interrupted:
        reasons.append("stopped with Ctrl-C, without draining")
    by_limit: dict[float, list[str]] = {}
    for name, limit in (limit_reached or {}).items():
        by_limit.setdefault(limit, []).append(name)
    for limit, names in by_limit.items():
        reasons.append(f"{_names(names)} reached the drain limit of {limit:g} s")
    return text + (f" ({'; '.join(reasons)})" if reasons else "")


# -- collecting progress -------------------------------------------------------------------


def _entries(freshness) -> tuple:
    """A copy of a stats deque that a foreachBatch thread may be appending to."""
    for _ in range(3):
        try:
            return tuple(freshness or ())
        except RuntimeError:  # mutated while copied
            continue
    return ()


class ProgressTracker:
    """Sums up the queries of a run, interval by interval.

    ``stats`` maps a query name to its writer's stats (``SilverStats``, ``GoldStats``):
    counters and a ``freshness`` deque of ``(commit time, rows, p95 seconds)`` per batch.
    Progress reports come from a :class:`ProgressListener` when ``spark`` is given and
    accepts one, else from each query's ``recentProgress``.
    """

    def __init__(
        self,
        queries: dict[str, StreamingQuery],
        stats: dict | None = None,
        spark: SparkSession | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queries = queries
        self.stats = stats or {}
        self.tallies = {name: QueryTally(name) for name in queries}
        self._names = {str(query.id): name for name, query in queries.items()}
        self._clock = clock
        self.started = self._since = clock()
        self._rate: tuple[float, int, float | None] = (self.started, 0, None)  # (when, source rows, rows/s)
        self.listener: ProgressListener | None = None
        self._spark = spark
        if spark is not None:
            from fraudlake.orchestration.listener import ProgressListener

            listener = ProgressListener()
            try:
                spark.streams.addListener(listener)
                self.listener = listener
            except Exception as error:  # noqa: BLE001 - e.g. a session without Python callbacks: poll instead
                note(f"(progress from polling: no streaming listener here: {str(error).splitlines()[0]})")

    def collect(self) -> None:
        """Take in the reports that arrived; with no listener, poll the queries."""
        if self.listener is not None:
            for report in self.listener.reports():
                name = self._names.get(str(report.get("id")))
                if name is not None:
                    self.tallies[name].absorb(report)
        else:
            for name, query in self.queries.items():
                _drain(query, self.tallies[name])

    def finish(self) -> None:
        """After the queries stopped: every report, including ones the listener had not delivered yet."""
        self.collect()
        for name, query in self.queries.items():
            _drain(query, self.tallies[name])
        if self.listener is not None:
            assert self._spark is not None  # a listener is only added to a session
            with suppress(Exception):  # a session that is stopping has nothing left to clean up
                self._spark.streams.removeListener(self.listener)
            self.listener = None

    def interval(self) -> IntervalProgress:
        """The interval since the previous call (or the start)."""
        self.collect()
        now = self._clock()
        first = next(iter(self.queries), None)
        lag: dict[str, float | None] = {}
        upstream_p95: float | None = None
        freshness_p95: float | None = None
        for name, tally in self.tallies.items():
            freshness = getattr(self.stats.get(name), "freshness", None)
            if freshness is None:  # a source: how long its last batch took
                lag[name] = tally.last_batch_seconds if tally.last_batch_id >= 0 else None
                continue
            entries = _entries(freshness)
            # No batch in the interval (a gold trigger longer than it): the layer's last batch.
            freshness_p95 = interval_p95(entries, self._since) if entries else None
            if freshness_p95 is None and entries:
                freshness_p95 = entries[-1][2]
            if freshness_p95 is not None and upstream_p95 is not None:
                lag[name] = max(freshness_p95 - upstream_p95, 0.0)
            else:
                lag[name] = freshness_p95
            upstream_p95 = freshness_p95 if freshness_p95 is not None else upstream_p95
        silver, gold = self.stats.get("silver"), self.stats.get("gold")
        progress = IntervalProgress(
            elapsed_seconds=now - self.started,
            input_rows_per_second=self._input_rate(self.tallies[first], now) if first else None,
            lag_seconds=lag,
            freshness_p95_seconds=freshness_p95,
            rows={name: tally.rows for name, tally in self.tallies.items()},
            scored=getattr(silver, "scored", None),
            flagged=getattr(silver, "flagged", None),
            quarantined=getattr(silver, "quarantined", None),
            model_alerts=getattr(gold, "model_alerts", None),
            activity_alerts=getattr(gold, "activity_alerts", None),
        )
        self._since = now
        return progress

    def _input_rate(self, source: QueryTally, now: float) -> float:
        """Rows/s the source landed since it last landed rows. Rows land when a micro-batch
        commits: while one longer than the interval is still running, the rate measured at the
        last commit stands (no line of 0 rows/s between two batches); a source whose last
        batch ended longer ago than half as long again as that batch took is idle: 0."""
        since, rows_then, rate = self._rate
        if source.rows > rows_then:
            rate = (source.rows - rows_then) / max(now - since, 1e-9)
            self._rate = (now, source.rows, rate)
            return rate
        if rate is not None and now - since <= 1.5 * source.last_batch_seconds:
            return rate
        return 0.0


# -- stopping ------------------------------------------------------------------------------


def _stop_when(
    queries: Iterable[StreamingQuery], ready: Callable[[StreamingQuery], bool], timeout: float
) -> list[StreamingQuery]:
    """Stop each query as soon as ``ready(query)`` (all watched at once); after ``timeout``, stop the rest.

    Returns the queries stopped because the time was up.
    """
    pending = [q for q in queries if q.isActive]
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for query in list(pending):
            if not query.isActive or ready(query):
                query.stop()
                pending.remove(query)
        time.sleep(0.05)
    for query in pending:
        query.stop()
    return pending


def stop_between_batches(queries: Iterable[StreamingQuery], timeout: float = 30.0) -> list[StreamingQuery]:
    """Stop each query as soon as it is between micro-batches; returns those stopped mid-batch at ``timeout``.

    Stopping mid-batch is safe too (the checkpoint replays the batch and the idempotent
    writes skip what had landed), but a clean stop leaves nothing to replay.
    """
    return _stop_when(queries, lambda query: not query.status.get("isTriggerActive"), timeout)


def stop_after_next_batch(
    queries: Sequence[StreamingQuery], timeout: float = SOURCE_STOP_SECONDS, grace: float = SOURCE_GRACE_SECONDS
) -> list[StreamingQuery]:
    """Stop sources once they have committed what arrived until now; returns those stopped mid-batch.

    Each query gets one more micro-batch, one whose trigger began after the stop (it reads
    up to the present), unless it reports nothing to read; so a timed ``ingest --rate R
    --duration S`` lands about R × S rows. A batch replayed from the checkpoint after a
    crash was planned before it and does not count: a restarted run stopped during that
    batch still lands the rows of its downtime. A query that runs its batches back to back
    (each longer than its trigger interval) is never seen between two; it stops once such
    a batch has committed, interrupting the one that has just begun (replayed from the
    checkpoint by the next run).

    A query that has not read up to the present after ``timeout`` (batches slower than
    that, e.g. on a busy machine) stops at its next batch boundary instead, so a query
    that writes two tables per batch (bronze and silver) is not cut between them; only
    one still inside a batch ``grace`` seconds later is stopped mid-batch.
    """
    stopped_at = time.time()
    soft_deadline = time.monotonic() + timeout
    at_deadline: dict[int, int] = {}

    def read_up_to_now(query: StreamingQuery) -> bool:
        status, progress = query.status, _last_progress(query)
        if time.monotonic() >= soft_deadline:
            batch_id = progress.get("batchId", -1)
            first = at_deadline.setdefault(id(query), batch_id)
            if not status.get("isTriggerActive") or batch_id > first:
                return True  # between batches, or one has just committed and the next just begun
        # A batch whose trigger began after the stop has committed: it read up to the present.
        # One that began before (or none yet) may be a batch replayed from the checkpoint after
        # a crash, planned then: it ends the wait only if the source has nothing more to read.
        began = _trigger_began(progress)
        if began is not None and began >= stopped_at:
            return True
        return not status.get("isTriggerActive") and not status.get("isDataAvailable")

    return _stop_when(queries, read_up_to_now, timeout + grace)


def _last_progress(query: StreamingQuery) -> dict[str, Any]:
    """The query's latest progress report; empty before its first one."""
    return query.lastProgress or {}


def _caught_up(query: StreamingQuery, since: float, interval: float, since_epoch: float) -> bool:
    """True once the query has read everything the stages before it committed until ``since``.

    That is, once a batch whose trigger began after ``since_epoch`` (the same instant on
    the wall clock) has committed: it read up to the present. A layer with nothing left to
    read runs no such batch (Spark reports idle triggers only now and then); it is caught up
    once a trigger that began a full interval after ``since`` found no new data.
    """
    if not query.isActive:
        return True
    status = query.status
    if status.get("isTriggerActive"):
        return False
    began = _trigger_began(_last_progress(query))
    if began is not None and began >= since_epoch:
        return True
    return time.monotonic() >= since + interval + 0.5 and not status.get("isDataAvailable")


def _trigger_began(progress: dict[str, Any]) -> float | None:
    """When the reported batch's trigger began (epoch seconds; ``timestamp`` is ISO 8601 UTC)."""
    stamp = progress.get("timestamp")
    if not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def drain_limit(timeout: float, intervals: Iterable[float]) -> float:
    """A stage's drain limit: ``timeout``, or longer for long triggers: a stage needs one
    trigger to read the rest and another to see that nothing is left (:func:`_caught_up`)."""
    return max([timeout, *(3 * interval + 1 for interval in intervals)])


def drain_in_stages(
    queries: dict[str, StreamingQuery],
    stages: list[list[str]],
    intervals: dict[str, float],
    timeout: float = DRAIN_SECONDS,
) -> dict[str, float]:
    """Stop a pipeline so every layer ends level with the one before it.

    The first stage (the sources) stops after committing what arrived until now; each
    later stage keeps running until it has read everything the stages before it
    committed, then stops. Without this, a timed run would end with bronze ahead of
    silver, and silver ahead of gold. A stage that has not caught up within its
    :func:`drain_limit` is stopped anyway. Returns the queries stopped at their limit
    (name → the limit in seconds).
    """
    reached: dict[str, float] = {}
    sources = [name for name in stages[0] if name in queries]
    for query in stop_after_next_batch([queries[name] for name in sources]):
        name = next(name for name in sources if queries[name] is query)
        note(
            f"{name} was still inside a batch {SOURCE_STOP_SECONDS + SOURCE_GRACE_SECONDS:g} s after the stop: "
            "stopped mid-batch; its next run replays that batch"
        )
        reached[name] = SOURCE_STOP_SECONDS + SOURCE_GRACE_SECONDS
    for stage in stages[1:]:
        waiting = [name for name in stage if name in queries]
        limit = drain_limit(timeout, (intervals.get(name, 0.0) for name in waiting))
        since, since_epoch, deadline = time.monotonic(), time.time(), time.monotonic() + limit
        while waiting and time.monotonic() < deadline:
            waiting = [
                name for name in waiting if not _caught_up(queries[name], since, intervals.get(name, 0.0), since_epoch)
            ]
            time.sleep(0.1)
        for name in waiting:
            note(
                f"{name} had not caught up after {limit:g} s (the drain limit): stopping it; "
                "what it has not read stays for its next run"
            )
            reached[name] = limit
        stop_between_batches([queries[name] for name in stage if name in queries])
    return reached


def run_queries(
    queries: dict[str, StreamingQuery],
    duration: float | None,
    progress_seconds: float,
    quiet: bool = False,
    stats: dict | None = None,
    stages: list[list[str]] | None = None,
    intervals: dict[str, float] | None = None,
    spark: SparkSession | None = None,
    report: Callable[[IntervalProgress], None] | None = None,
    drain_seconds: float = DRAIN_SECONDS,
) -> dict:
    """Watch queries until ``duration`` seconds pass (``None``: until Ctrl-C), then stop them cleanly.

    Every ``progress_seconds`` one :class:`IntervalProgress` for all queries goes to
    ``report`` (default: :func:`format_progress` on stderr; nothing if ``quiet``).
    ``stats`` maps a query name to its writer's stats (see :class:`ProgressTracker`);
    ``spark`` lets progress come from a listener instead of polling.
    ``stages`` (upstream first) and their trigger ``intervals`` make the stop drain
    each stage into the next (:func:`drain_in_stages`); without them every query stops
    between batches.

    Raises a :class:`FraudlakeError` naming the query if one fails. Returns per query:
    batches, rows, seconds, rows_per_second, interrupted (Ctrl-C), and
    drain_limit_seconds (the limit it was stopped at before catching up, else None).
    """
    if report is None:
        report = (lambda progress: None) if quiet else (lambda progress: note(format_progress(progress)))
    tracker = ProgressTracker(queries, stats, spark)
    started = time.monotonic()
    next_report = started + progress_seconds
    interrupted = False
    reached: dict[str, float] = {}
    try:
        while True:
            for name, query in queries.items():
                if not query.isActive:
                    error = query.exception()
                    if error is not None:
                        raise FraudlakeError(f"{name} query failed: {failure_summary(str(error))}")
            if not any(query.isActive for query in queries.values()):
                break  # every query finished on its own (available-now triggers)
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now >= next_report:
                report(tracker.interval())
                next_report = now + progress_seconds
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        note("stopping (Ctrl-C): letting the current batches commit...")
    finally:
        if stages and not interrupted:
            note("stopping: the sources first, then each layer once it has caught up...")
            reached = drain_in_stages(queries, stages, intervals or {}, drain_seconds)
        else:
            stop_between_batches(list(queries.values()))
        tracker.finish()
    elapsed = time.monotonic() - started
    return {
        name: {
            "batches": t.batches,
            "rows": t.rows,
            "seconds": round(elapsed, 1),
            "rows_per_second": round(t.rows / elapsed, 1) if elapsed else 0.0,
            "interrupted": interrupted,
            "drain_limit_seconds": reached.get(name),
        }
        for name, t in tracker.tallies.items()
    }


def failure_summary(text: str) -> str:
    """One line that says why a query failed: the root cause of a Java error (its last
    ``Caused by:``), else the exception a ``foreachBatch`` function raised (the last
    ``SomeError: …`` line of its Python traceback), else the first line.

    >>> failure_summary("An exception was raised by the Python Proxy.\nTraceback ...\nOSError: [Errno 28] No space left on device")
    'OSError: [Errno 28] No space left on device'
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line.removeprefix("Caused by:").strip() for line in lines if line.startswith("Caused by:")]
    if causes:
        return causes[-1][:500]
    raised = [line for line in lines if _RAISED.match(line)]
    if raised and lines[0].startswith("An exception was raised by the Python Proxy"):
        return raised[-1][:500]
    return (lines[0] if lines else text)[:500]


# A Python traceback's last line: the exception's type (dotted, maybe with an error class) and message.
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b[^:]*: ")
