"""Dashboard figures, headline numbers and page rendering on small hand-made frames: no JVM, no browser."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

from fraudlake.dashboards import figures as F
from fraudlake.dashboards.app import SnapshotReader, create_app, render
from fraudlake.dashboards.queries import COLUMNS, Snapshot, empty, time_unit

T0 = pd.Timestamp("2026-03-01 10:00:00")


def minutes(*rows):
    """rows: (minute offset, tx_count, flagged_count, flagged_amount)"""
    return pd.DataFrame(
        [
            {
                "minute": T0 + pd.Timedelta(minutes=m),
                "tx_count": n,
                "flagged_count": f,
                "total_amount": 10.0 * n,
                "flagged_amount": a,
                "true_positives": None,
                "false_positives": None,
            }
            for m, n, f, a in rows
        ]
    )


def models_frame():
    return pd.DataFrame(
        [
            {
                "model_name": "fraud_detector",
                "model_version": "2",
                "transactions": 900,
                "flagged": 20,
                "labelled": 900,
                "true_positives": 15,
                "false_positives": 5,
                "false_negatives": 5,
                "first_scored": T0,
                "last_scored": T0,
                "newest_event": T0,
                "scored_age_seconds": 3.2,
            },
            {
                "model_name": "fraud_detector",
                "model_version": "1",
                "transactions": 100,
                "flagged": 10,
                "labelled": 100,
                "true_positives": 5,
                "false_positives": 5,
                "false_negatives": 0,
                "first_scored": T0,
                "last_scored": T0,
                "newest_event": T0,
                "scored_age_seconds": 400.0,
            },
        ]
    )


def snapshot(**frames) -> Snapshot:
    base = {kind: empty(kind) for kind in COLUMNS}
    base.update(frames)
    return Snapshot(read_at=datetime(2026, 3, 1, 10, 5, tzinfo=timezone.utc), missing=(), **base)


def annotation_texts(figure) -> list[str]:
    return [a.text for a in figure.layout.annotations]


# ----------------------------------------------------------------------------- numbers


def test_headline_sums_model_versions_and_names_the_latest_scorer():
    counts = pd.DataFrame([{"alert_type": "model", "alerts": 30}, {"alert_type": "user_activity", "alerts": 4}])
    numbers = F.headline(models_frame(), counts)
    assert numbers["transactions"] == 1000 and numbers["flagged"] == 30 and numbers["alerts"] == 34
    assert numbers["flagged_share"] == pytest.approx(0.03)
    assert numbers["live_precision"] == pytest.approx(20 / 30)
    assert numbers["live_recall"] == pytest.approx(20 / 25)
    assert numbers["model_in_use"] == "fraud_detector v2"
    assert numbers["models_seen"] == ["fraud_detector v2", "fraud_detector v1"]
    assert numbers["scored_age_seconds"] == pytest.approx(3.2)


def test_headline_of_nothing_and_of_unlabelled_rows():
    numbers = F.headline(empty("models"), empty("alert_counts"))
    assert (numbers["transactions"], numbers["alerts"], numbers["flagged_share"], numbers["model_in_use"]) == (
        0,
        0,
        None,
        None,
    )
    unlabelled = models_frame().assign(labelled=0, true_positives=0, false_positives=0, false_negatives=0)
    numbers = F.headline(unlabelled, empty("alert_counts"))
    assert numbers["live_precision"] is None and numbers["live_recall"] is None
    assert F.format_share(numbers["live_precision"]) == F.PLACEHOLDER


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, F.PLACEHOLDER),
        (-2.0, "0 s"),
        (4.7, "4 s"),
        (119, "119 s"),
        (600, "10 min"),
        (7500, "2 h 5 min"),
        (3 * 86400 + 5, "3 days"),
    ],
)
def test_format_age(seconds, text):
    assert F.format_age(seconds) == text


def test_freshness_says_when_data_is_stale_or_gold_is_empty():
    fresh = F.freshness({"scored_age_seconds": 3.0, "newest_event": T0}, {})
    assert fresh[0] == "newest transaction scored 3 s ago (event time 2026-03-01 10:00:00 UTC)"
    assert fresh[1].startswith("no gold minutes yet")
    stale = F.freshness(
        {"scored_age_seconds": 900.0, "newest_event": T0}, {"gold_through": T0, "gold_age_seconds": 960.0}
    )
    assert "is the pipeline running?" in stale[0]
    assert stale[1] == "gold minutes through 2026-03-01 10:00:00 UTC (16 min ago)"
    live = F.freshness(
        {"scored_age_seconds": 2.0, "newest_event": T0},
        {"gold_through": T0, "gold_age_seconds": 20.0, "open_minutes": 3},
    )
    assert live[1] == "gold minutes through 2026-03-01 10:00:00 UTC (20 s ago; the last 3 still open)"
    assert F.freshness({"scored_age_seconds": None}, {})[0] == "no scored transactions yet"


def test_time_unit_fits_the_span():
    assert [time_unit(s) for s in (None, 3600, 7 * 3600, 30 * 86400, 31 * 86400)] == [
        "MINUTE",
        "MINUTE",
        "HOUR",
        "HOUR",
        "DAY",
    ]


# ----------------------------------------------------------------------------- figures


def test_volume_figure_plots_transactions_and_flagged_on_two_axes():
    figure = F.volume_figure(minutes((0, 100, 2, 50.0), (1, 120, 0, 0.0)))
    bars, line = figure.data
    assert list(bars.y) == [100, 120] and list(line.y) == [2, 0]
    assert line.yaxis == "y2" and "per minute" in figure.layout.title.text
    assert "per hour" in F.volume_figure(minutes((0, 1, 0, 0.0)), "HOUR").layout.title.text
    assert "still open" not in figure.layout.title.text


def test_an_open_minute_is_drawn_faded_and_named_in_the_title():
    volumes = minutes((0, 100, 2, 50.0), (1, 40, 1, 9.0)).assign(is_final=[True, False])
    figure = F.volume_figure(volumes)
    closed, still_open = figure.data[0].marker.opacity
    assert closed == 1.0 and still_open < 1.0
    assert "faded: minute still open" in figure.layout.title.text


def test_flagged_share_skips_empty_minutes():
    figure = F.flagged_share_figure(minutes((0, 100, 2, 0.0), (1, 0, 0, 0.0), (2, 50, 5, 0.0)))
    assert list(figure.data[0].y) == pytest.approx([0.02, 0.1])
    assert len(figure.data[0].x) == 2


def test_precision_recall_per_minute_where_labels_exist():
    quality = pd.DataFrame(
        [
            {"minute": T0, "labelled": 100, "fraud": 4, "true_positives": 3, "false_positives": 1},
            {
                "minute": T0 + pd.Timedelta(minutes=1),
                "labelled": 0,
                "fraud": 0,
                "true_positives": 0,
                "false_positives": 0,
            },
            {
                "minute": T0 + pd.Timedelta(minutes=2),
                "labelled": 100,
                "fraud": 0,
                "true_positives": 0,
                "false_positives": 0,
            },
        ]
    )
    figure = F.precision_recall_figure(quality)
    precision, recall = figure.data
    assert len(precision.x) == 2  # the unlabelled minute is left out
    assert precision.y[0] == pytest.approx(0.75) and recall.y[0] == pytest.approx(0.75)
    assert pd.isna(precision.y[1]) and pd.isna(recall.y[1])  # nothing flagged, no fraud: undefined, not 0
    assert "precision 75.00%, recall 75.00%" in figure.layout.title.text
    unlabelled = F.precision_recall_figure(quality.assign(labelled=0))
    assert not unlabelled.data and "no labelled transactions" in annotation_texts(unlabelled)[0]


def test_flagged_amount_top_users_and_scores():
    amount = F.flagged_amount_figure(minutes((0, 10, 1, 99.5), (1, 10, 0, None)))
    assert list(amount.data[0].y) == [99.5, 0.0]

    users = pd.DataFrame(
        [
            {"user_id": "u7", "tx_count": 9, "flagged_count": 6, "total_amount": 1.0, "window_start": T0},
            {"user_id": "u2", "tx_count": 3, "flagged_count": None, "total_amount": 1.0, "window_start": T0},
        ]
    )
    top = F.top_users_figure(users)
    assert list(top.data[0].y) == ["u7", "u2"] and list(top.data[0].x) == [9, 3]
    assert list(top.data[1].x) == [6, 0]

    scores = pd.DataFrame(
        [
            {"score_low": 0.0, "score_high": 0.5, "label": "genuine", "transactions": 950},
            {"score_low": 0.5, "score_high": 1.0, "label": "genuine", "transactions": 10},
            {"score_low": 0.5, "score_high": 1.0, "label": "fraud", "transactions": 12},
        ]
    )
    histogram = F.score_distribution_figure(scores)
    assert [t.name for t in histogram.data] == ["genuine", "fraud"]
    assert list(histogram.data[0].x) == [0.25, 0.75] and list(histogram.data[0].width) == [0.5, 0.5]
    assert histogram.layout.yaxis.type == "log"


def test_alerts_table_names_the_transaction_or_the_user():
    alerts = pd.DataFrame(
        [
            {
                "alert_time": T0,
                "alert_type": "model",
                "transaction_id": "tx-5",
                "user_id": "u1",
                "fraud_score": 0.91234,
                "reason": "score 0.912",
            },
            {
                "alert_time": T0,
                "alert_type": "user_activity",
                "transaction_id": None,
                "user_id": "u9",
                "fraud_score": None,
                "reason": "7 transactions",
            },
        ]
    )
    cells = F.alerts_table_figure(alerts).data[0].cells.values
    assert list(cells[2]) == ["tx-5", "user u9"]
    assert list(cells[3]) == ["0.912", F.PLACEHOLDER]
    assert list(cells[0]) == ["2026-03-01 10:00:00 UTC"] * 2


@pytest.mark.parametrize(
    "key", ["volume", "flagged-share", "precision-recall", "flagged-amount", "top-users", "scores", "alerts"]
)
def test_every_figure_explains_an_empty_frame(key):
    figure = F.dashboard_figures(snapshot())[key]
    assert not figure.data
    [message] = annotation_texts(figure)
    assert message and figure.layout.title.text
    json.loads(figure.to_json())  # serialisable for Dash and the report


# ----------------------------------------------------------------------------- the page


def test_render_an_empty_home_shows_how_to_start_the_pipeline():
    empty_home = Snapshot(
        read_at=datetime.now(timezone.utc),
        missing=("spark_catalog.silver.scored_transactions",),
        **{kind: empty(kind) for kind in COLUMNS},
    )
    page = render(empty_home, home="/data/home", refresh_seconds=5)
    assert page[("empty-state", "style")] == {"display": "block"}
    text = str(page[("empty-state", "children")])
    assert "No lakehouse tables yet" in text and "/data/home" in text and "fraudlake run" in text
    assert "spark_catalog.silver.scored_transactions" in text
    assert page[("kpi-transactions", "children")] == "0"
    assert page[("kpi-precision", "children")] == F.PLACEHOLDER

    no_rows = render(snapshot(), home="/data/home", refresh_seconds=5)
    assert "No scored transactions yet" in str(no_rows[("empty-state", "children")])


def test_render_a_populated_snapshot():
    page = render(snapshot(models=models_frame(), volumes=minutes((0, 100, 2, 5.0))), home="h", refresh_seconds=2)
    assert page[("empty-state", "style")] == {"display": "none"} and page[("empty-state", "children")] is None
    assert page[("kpi-transactions", "children")] == "1,000"
    assert page[("kpi-flagged-share", "children")] == "3.00%"
    assert page[("kpi-recall", "children")] == "80.00%"
    status = str(page[("status", "children")])
    assert "fraud_detector v2" in status and "versions seen: fraud_detector v2, fraud_detector v1" in status
    assert list(page[("fig-volume", "figure")].data[0].y) == [100]


def _post_refresh(app) -> dict:
    """The request the page's interval makes, through Flask's test client."""
    from fraudlake.dashboards.app import outputs

    keys = outputs()
    body = {
        "output": ".." + "...".join(f"{element}.{prop}" for element, prop in keys) + "..",
        "outputs": [{"id": element, "property": prop} for element, prop in keys],
        "inputs": [{"id": "refresh", "property": "n_intervals", "value": 1}],
        "changedPropIds": ["refresh.n_intervals"],
    }
    client = app.server.test_client()
    assert client.get("/").status_code == 200
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.data[:500]
    return response.get_json()["response"]


def test_the_refresh_callback_fills_the_page_and_survives_a_failed_read():
    reads = []

    def read():
        reads.append(1)
        if len(reads) > 1:
            raise RuntimeError("DELTA_TABLE_NOT_FOUND: table vanished\n  at org.apache...")
        return snapshot(models=models_frame())

    errors = []
    app = create_app(SnapshotReader(read, min_age=0), refresh_seconds=2, home="h", on_error=errors.append)
    first = _post_refresh(app)
    assert first["kpi-transactions"]["children"] == "1,000"
    assert first["fig-volume"]["figure"]["layout"]["annotations"]
    second = _post_refresh(app)
    assert second["problem"]["style"] == {"display": "block"}
    assert second["problem"]["children"].startswith("Could not read the lakehouse: DELTA_TABLE_NOT_FOUND")
    assert "org.apache" not in second["problem"]["children"]
    assert "kpi-transactions" not in second  # the last good numbers stay on the page
    assert len(errors) == 1


def test_snapshot_reader_shares_a_fresh_snapshot_between_tabs():
    calls = []
    reader = SnapshotReader(lambda: calls.append(1) or len(calls), min_age=60)
    assert (reader(), reader()) == (1, 1)
    assert SnapshotReader(lambda: calls.append(1) or len(calls), min_age=0)() == 2


def test_snapshot_reader_answers_at_once_while_a_slow_read_runs():
    import threading
    import time

    release = threading.Event()
    reads = []

    def read():
        reads.append(1)
        if len(reads) > 1:
            release.wait(10)  # the second read is slow
        return len(reads)

    reader = SnapshotReader(read, min_age=0)
    assert reader() == 1
    slow = threading.Thread(target=reader)
    slow.start()
    while len(reads) < 2:
        time.sleep(0.01)
    assert reader() == 1  # the previous snapshot
    # Answered while the slow read was still blocked (only `release` ends it), with no read of its own.
    assert slow.is_alive() and len(reads) == 2
    release.set()
    slow.join(10)
    assert reader() == 3 and len(reads) == 3  # the next call reads again
