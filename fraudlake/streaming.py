"""Running streaming queries from the CLI: progress lines, clean stops, a summary."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fraudlake.errors import FraudlakeError
from fraudlake.output import note


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
        return True


def _drain(query, tally: QueryTally) -> None:
    for progress in query.recentProgress:
        tally.absorb(progress)


def _format_progress(elapsed: float, tally: QueryTally) -> str:
    return (
        f"[{tally.name}] {elapsed:6.0f}s  batches {tally.batches:,}  rows {tally.rows:,}  "
        f"in {tally.input_rate:,.0f}/s  done {tally.processed_rate:,.0f}/s  last batch {tally.last_batch_seconds:.2f}s"
    )


def _stop_gracefully(query, timeout: float = 60.0) -> None:
    """Stop after the next micro-batch commits, so what arrived until now is written.

    Stopping mid-batch would be safe too (the checkpoint replays it), but a clean stop
    leaves the table current and the next start quick.
    """
    deadline = time.monotonic() + timeout
    last = query.lastProgress
    seen = last["batchId"] if last else -1
    while query.isActive and time.monotonic() < deadline:
        progress, status = query.lastProgress, query.status
        if status.get("isTriggerActive"):
            pass
        elif not status.get("isDataAvailable") or (progress and progress["batchId"] > seen):
            break
        time.sleep(0.1)
    query.stop()


def run_queries(queries: dict, duration: float | None, progress_seconds: float, quiet: bool = False) -> dict:
    """Watch queries until ``duration`` seconds pass (``None``: until Ctrl-C), then stop them cleanly.

    Raises a :class:`FraudlakeError` naming the query if one fails. Returns the per-query tallies.
    """
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
                        note(_format_progress(now - started, tallies[name]))
                next_report = now + progress_seconds
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        note("stopping (Ctrl-C): letting the current batches commit...")
    finally:
        for query in queries.values():
            if query.isActive:
                _stop_gracefully(query)
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
