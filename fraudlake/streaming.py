"""Running streaming queries from the CLI: progress lines, clean stops, a summary."""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from fraudlake.errors import FraudlakeError
from fraudlake.output import note


@contextmanager
def scheduler_pool(spark, name: str):
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
        context.setLocalProperty("spark.scheduler.pool", previous)


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


def _drain(query, tally: QueryTally) -> None:
    for progress in query.recentProgress:
        tally.absorb(progress)


def rows_processed(query) -> int:
    """Input rows of the query's recent micro-batches (Spark keeps the last 100 reports)."""
    tally = QueryTally(query.name or "")
    _drain(query, tally)
    return tally.rows


def _format_progress(elapsed: float, tally: QueryTally, detail: str = "") -> str:
    backlog = f"  backlog {tally.backlog_files:,} files" if tally.backlog_files is not None else ""
    return (
        f"[{tally.name}] {elapsed:6.0f}s  batches {tally.batches:,}  rows {tally.rows:,}  "
        f"in {tally.input_rate:,.0f}/s  done {tally.processed_rate:,.0f}/s  last batch {tally.last_batch_seconds:.2f}s"
        f"{backlog}{'  ' + detail if detail else ''}"
    )


def _stop_when(queries, ready, timeout: float) -> None:
    """Stop each query as soon as ``ready(query)`` (all watched at once); after ``timeout``, stop the rest."""
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


def stop_between_batches(queries, timeout: float = 30.0) -> None:
    """Stop each query as soon as it is between micro-batches.

    Stopping mid-batch is safe too (the checkpoint replays the batch and the idempotent
    writes skip what had landed), but a clean stop leaves nothing to replay.
    """
    _stop_when(queries, lambda query: not query.status.get("isTriggerActive"), timeout)


def stop_after_next_batch(queries, timeout: float = 30.0) -> None:
    """Stop sources once they have committed what arrived until now.

    Each query gets one more micro-batch (it reads up to the present), unless it reports
    nothing to read; so a timed ``ingest --rate R --duration S`` lands about R × S rows.
    """
    seen = {id(q): (q.lastProgress or {}).get("batchId", -1) for q in queries}

    def read_up_to_now(query) -> bool:
        status, progress = query.status, query.lastProgress or {}
        if status.get("isTriggerActive"):
            return False
        return not status.get("isDataAvailable") or progress.get("batchId", -1) > seen[id(query)]

    _stop_when(queries, read_up_to_now, timeout)


def _caught_up(query, since: float, interval: float) -> bool:
    """True once a trigger that began after ``since`` (a full interval later) found no new data."""
    if not query.isActive:
        return True
    status = query.status
    return time.monotonic() >= since + interval + 0.5 and not status.get("isTriggerActive") and not status.get(
        "isDataAvailable"
    )


def drain_in_stages(queries: dict, stages: list[list[str]], intervals: dict[str, float], timeout: float = 90.0) -> None:
    """Stop a pipeline so every layer ends level with the one before it.

    The first stage (the sources) stops after committing what arrived until now; each
    later stage keeps running until it has read everything the stages before it
    committed, then stops. Without this, a timed run would end with bronze ahead of
    silver, and silver ahead of gold.
    """
    stop_after_next_batch([queries[name] for name in stages[0]])
    for stage in stages[1:]:
        since, deadline = time.monotonic(), time.monotonic() + timeout
        waiting = [name for name in stage if name in queries]
        while waiting and time.monotonic() < deadline:
            waiting = [name for name in waiting if not _caught_up(queries[name], since, intervals.get(name, 0.0))]
            time.sleep(0.1)
        stop_between_batches([queries[name] for name in stage if name in queries])


def run_queries(
    queries: dict,
    duration: float | None,
    progress_seconds: float,
    quiet: bool = False,
    details: dict | None = None,
    stages: list[list[str]] | None = None,
    intervals: dict[str, float] | None = None,
) -> dict:
    """Watch queries until ``duration`` seconds pass (``None``: until Ctrl-C), then stop them cleanly.

    ``details`` maps a query name to a function returning extra text for its progress line.
    ``stages`` (upstream first) and their trigger ``intervals`` make the stop drain
    each stage into the next (:func:`drain_in_stages`); without them every query stops
    between batches.
    Raises a :class:`FraudlakeError` naming the query if one fails. Returns the per-query tallies.
    """
    details = details or {}
    tallies = {name: QueryTally(name) for name in queries}
    started = time.monotonic()
    next_report = started + progress_seconds
    interrupted = False
    try:
        while True:
            for name, query in queries.items():
                if not query.isActive:
                    error = query.exception()
                    if error is not None:
                        raise FraudlakeError(f"{name} query failed: {_first_line(str(error))}")
            if not any(query.isActive for query in queries.values()):
                break  # every query finished on its own (available-now triggers)
            now = time.monotonic()
            if duration is not None and now - started >= duration:
                break
            if now >= next_report:
                for name, query in queries.items():
                    _drain(query, tallies[name])
                    if not quiet:
                        detail = details[name]() if name in details else ""
                        note(_format_progress(now - started, tallies[name], detail))
                next_report = now + progress_seconds
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        note("stopping (Ctrl-C): letting the current batches commit...")
    finally:
        if stages and not interrupted:
            note("stopping: the sources first, then each layer once it has caught up...")
            drain_in_stages(queries, stages, intervals or {})
        else:
            stop_between_batches(list(queries.values()))
    for name, query in queries.items():
        _drain(query, tallies[name])
    elapsed = time.monotonic() - started
    return {
        name: {
            "batches": t.batches,
            "rows": t.rows,
            "seconds": round(elapsed, 1),
            "rows_per_second": round(t.rows / elapsed, 1) if elapsed else 0.0,
            "interrupted": interrupted,
        }
        for name, t in tallies.items()
    }


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)
