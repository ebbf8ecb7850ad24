"""The streaming listener that hands micro-batch progress reports to the thread that prints them.

A module of its own because defining it imports pyspark: :mod:`.streaming` imports it only
once a Spark session exists, so the CLI starts (and says what is missing) without pyspark.
"""

from __future__ import annotations

import json
import queue
from typing import TYPE_CHECKING

from pyspark.sql.streaming import StreamingQueryListener

if TYPE_CHECKING:
    from pyspark.sql.streaming.listener import (
        QueryIdleEvent,
        QueryProgressEvent,
        QueryStartedEvent,
        QueryTerminatedEvent,
    )


class ProgressListener(StreamingQueryListener):
    """Keeps the progress report of every micro-batch as Spark posts it.

    Spark calls it on its listener thread; :meth:`reports` hands the reports over to the
    thread that prints progress. Example::

        listener = ProgressListener()
        spark.streams.addListener(listener)
        ...
        for report in listener.reports():
            print(report["name"], report["numInputRows"])
    """

    def __init__(self) -> None:
        self._reports: queue.SimpleQueue = queue.SimpleQueue()

    def onQueryStarted(self, event: QueryStartedEvent) -> None:
        pass

    def onQueryProgress(self, event: QueryProgressEvent) -> None:
        self._reports.put(json.loads(event.progress.json))

    def onQueryIdle(self, event: QueryIdleEvent) -> None:
        pass

    def onQueryTerminated(self, event: QueryTerminatedEvent) -> None:
        pass

    def reports(self) -> list[dict]:
        """The reports received since the last call, oldest first."""
        received = []
        while True:
            try:
                received.append(self._reports.get_nowait())
            except queue.Empty:
                return received
