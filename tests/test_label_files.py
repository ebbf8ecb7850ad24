"""Label exports as files (``storage.labels_landing``): every label record lands once, in
``bronze.labels`` or, with its reason, in ``bronze.label_quarantine``; a label sent again in a
later file is a repeat, another verdict on the same transaction a correction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fraudlake.bronze.label_records import start_label_ingest
from fraudlake.tables import BRONZE_LABEL_QUARANTINE, BRONZE_LABELS, ensure_tables, table_name
from fraudlake.timeutil import from_row, shown_utc

pytestmark = pytest.mark.spark


def label(transaction_id: str, verdict: int = 1, when: str = "2026-03-04T10:00:00Z", **more) -> str:
    return json.dumps({"transaction_id": transaction_id, "label_is_fraud": verdict, "label_time": when, **more})


# Each record with the reason it is quarantined for (None: a label).
FIRST = [
    (label("tx-1", label_source="chargeback"), None),
    (label("tx-2", 0, "2026-03-04T11:30:00+02:00"), None),  # genuine, confirmed; an offset is honoured
    (label("tx-1", label_source="chargeback"), "duplicate_label"),  # the same record twice in one file
    ("{not json", "malformed_record"),
    (label("tx-3", 5), "invalid_label"),
    (json.dumps({"transaction_id": "tx-4", "label_is_fraud": 1}), "missing_label_time"),
]
CSV = [
    "transaction_id,label_is_fraud,label_time,label_source",
    "tx-5,1,2026-03-05T08:00:00Z,case_review",
    ",1,2026-03-05T08:00:00Z,case_review",
]
LATER = [
    (label("tx-1"), "duplicate_label"),  # the same verdict, in a later export
    (label("tx-2", 1, "2026-03-06T09:00:00Z", label_source="chargeback"), None),  # a correction
]


def test_label_exports_land_once_and_bad_records_in_quarantine(spark, ctx):
    ensure_tables(spark, ctx)
    folder = Path(ctx.paths.labels_landing)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "export-1.json").write_text("\n".join(raw for raw, _ in FIRST) + "\n\n")
    (folder / "export-2.csv").write_text("\n".join(CSV) + "\n")
    query, _ = start_label_ingest(spark, ctx, "files", available_now=True)
    query.awaitTermination(120)
    assert query.exception() is None
    (folder / "export-3.json").write_text("\n".join(raw for raw, _ in LATER) + "\n")
    query, _ = start_label_ingest(spark, ctx, "files", available_now=True)
    query.awaitTermination(120)
    assert query.exception() is None

    labels = spark.table(table_name(ctx, BRONZE_LABELS)).collect()
    got = sorted((r.transaction_id, r.label_is_fraud, r.label_source, r._source) for r in labels)
    assert got == [
        ("tx-1", 1, "chargeback", "files"),
        ("tx-2", 0, "files", "files"),
        ("tx-2", 1, "chargeback", "files"),
        ("tx-5", 1, "case_review", "files"),
    ]
    genuine = next(r for r in labels if r.label_is_fraud == 0)
    assert shown_utc(from_row(genuine.label_time)).isoformat() == "2026-03-04T09:30:00"
    quarantine = spark.table(table_name(ctx, BRONZE_LABEL_QUARANTINE)).collect()
    reasons = sorted((r._raw, r.quarantine_reason) for r in quarantine)
    expected = [(raw, why) for raw, why in [*FIRST, *LATER] if why]
    expected.append((CSV[2], "missing_transaction_id"))
    assert reasons == sorted(expected)
    # Every non-blank line that is not the CSV header is one record, in one of the two tables.
    assert len(labels) + len(quarantine) == len(FIRST) + len(CSV) - 1 + len(LATER)


def test_a_chargeback_exported_late_is_known_from_its_arrival_in_silver_and_in_training(spark, ctx):
    """A chargeback filed nine days ago and exported today: the merchant's rows in between could
    not know it, a row after its arrival does; silver and training (which recomputes the
    features from bronze.labels) agree on both."""
    import pandas as pd
    import pyarrow as pa

    from fraudlake.ml.behaviour import BEHAVIOUR_FEATURES, NO_PREVIOUS_SECONDS, behaviour_features
    from fraudlake.ml.data import label_known_at
    from fraudlake.silver.stream import SilverBehaviour
    from fraudlake.tables import SILVER_SCORED

    ensure_tables(spark, ctx)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    purchase, filed = now - pd.Timedelta(days=10), now - pd.Timedelta(days=9)
    folder = Path(ctx.paths.labels_landing)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chargebacks.json").write_text(label("tx-a", when=filed.isoformat()) + "\n")
    query, _ = start_label_ingest(spark, ctx, "files", available_now=True)
    query.awaitTermination(120)
    assert query.exception() is None

    times = [purchase, now - pd.Timedelta(days=5), now + pd.Timedelta(hours=1)]  # the fraud, between, after
    rows = pd.DataFrame(
        {
            "transaction_id": ["tx-a", "tx-b", "tx-c"],
            "event_time": times,
            "user_id": ["u-1", "u-2", "u-3"],
            "card_id": ["c-1", "c-2", "c-3"],
            "merchant_id": "m-1",
            "country": "US",
            "amount": 20.0,
            "currency": "USD",
        }
    )
    silver = SilverBehaviour(table_name(ctx, SILVER_SCORED), table_name(ctx, BRONZE_LABELS), 86_400)
    featured, _ = silver.features(spark, pa.Table.from_pandas(rows, preserve_index=False))
    streamed = featured.select(list(BEHAVIOUR_FEATURES)).to_pandas()
    since = streamed["merchant_seconds_since_last_known_fraud"]
    assert since[1] == NO_PREVIOUS_SECONDS  # filed, not yet arrived: unknown
    assert since[2] == (times[2] - purchase).total_seconds()  # arrived: known

    known = spark.table(table_name(ctx, BRONZE_LABELS)).select(
        "transaction_id", "label_is_fraud", label_known_at().alias("label_time")
    )
    trained = behaviour_features(rows, known.toPandas(), label_maturity=86_400)
    pd.testing.assert_frame_equal(streamed, trained, check_exact=True)
