"""The simulator's label feed in the driver: which labels are due, when, and never twice. No JVM."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from fraudlake.bronze.labels import SimulatedLabels
from tests.conftest import make_context

T0 = pd.Timestamp("2026-06-01T12:00:00Z")


def bronze_rows(offsets_seconds: list[float], fraud: list[int], ids: list[str], source: str = "rate") -> pa.Table:
    times = [T0 + pd.Timedelta(seconds=s) for s in offsets_seconds]
    return pa.table(
        {
            "transaction_id": ids,
            "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
            "label_is_fraud": pa.array(fraud, pa.int32()),
            "_source": [source] * len(ids),
        }
    )


def feed(tmp_path, delay: int = 60) -> SimulatedLabels:
    labels = SimulatedLabels(make_context(tmp_path, simulator={"label_delay_seconds": delay}))
    labels.pending = pd.DataFrame({"transaction_id": pd.Series(dtype=str), "label_time": pd.Series(dtype="int64")})
    return labels  # as after a start on an empty lakehouse: nothing pending


def test_a_fraud_is_labelled_once_the_streams_clock_reaches_its_label_time(tmp_path):
    labels = feed(tmp_path, delay=60)
    first = labels.due(None, bronze_rows([0, 1, 2], [0, 1, 1], ["a", "b", "c"]))
    assert first.empty  # the frauds' labels are a minute away
    not_yet = labels.due(None, bronze_rows([60.5], [0], ["d"]))
    assert not_yet["transaction_id"].tolist() == []  # b is due at 61 s
    arrived = labels.due(None, bronze_rows([61.5], [0], ["e"]))
    assert arrived["transaction_id"].tolist() == ["b"]
    assert arrived["label_time"].tolist() == [T0 + pd.Timedelta(seconds=61)] and set(arrived["label_is_fraud"]) == {1}
    later = labels.due(None, bronze_rows([300], [0], ["f"]))
    assert later["transaction_id"].tolist() == ["c"]  # and b is not labelled again
    assert labels.pending.empty


def test_only_the_simulators_frauds_get_labels_and_a_row_seen_twice_gets_one(tmp_path):
    labels = feed(tmp_path, delay=10)
    labels.due(None, bronze_rows([0, 0], [1, 1], ["a", "x"], source="files"))  # a file's rows carry their own
    labels.due(None, bronze_rows([1, 1], [1, 1], ["b", "b"]))  # one id twice in a batch
    arrived = labels.due(None, bronze_rows([20], [0], ["c"]))
    assert arrived["transaction_id"].tolist() == ["b"]
