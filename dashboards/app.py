"""The live dashboard: a Dash page that re-reads the gold (and silver) tables on an interval.

The wiring is thin on purpose: a ``dcc.Interval`` fires one callback, which asks a
reader for a :class:`~fraudlake.dashboards.queries.Snapshot` and turns it into page
content with :func:`render` (pure, tested without a browser or a JVM) and the
figures of :mod:`fraudlake.dashboards.figures`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timezone

from fraudlake.dashboards import figures as F
from fraudlake.dashboards.queries import Snapshot

KPIS = (  # element id suffix, label
    ("transactions", "transactions scored"),
    ("flagged", "flagged"),
    ("flagged-share", "flagged share"),
    ("alerts", "alerts"),
    ("precision", "live precision"),
    ("recall", "live recall"),
)
FIGURES = ("volume", "flagged-share", "precision-recall", "flagged-amount", "top-users", "scores", "alerts")

CSS = """
body { font-family: system-ui, -apple-system, sans-serif; margin: 0; background: #f6f7f9; color: #222; }
.page { max-width: 1500px; margin: 0 auto; padding: 1rem 1.5rem 2rem; }
h1 { font-size: 1.4rem; margin: 0.2rem 0 0.4rem; }
.status { font-size: 0.9rem; color: #444; line-height: 1.5; }
.status b { color: #222; }
.problem { background: #fdecea; border: 1px solid #f5c2bd; padding: 0.6rem 1rem; margin: 0.8rem 0; border-radius: 6px; }
.empty-state { background: #fff8e1; border: 1px solid #f0d98a; padding: 0.8rem 1.2rem; margin: 0.8rem 0;
               border-radius: 6px; line-height: 1.5; }
.empty-state code { background: #f3ecd0; padding: 0 0.25rem; border-radius: 3px; }
.kpis { display: grid; grid-template-columns: repeat(6, 1fr); gap: 0.8rem; margin: 1rem 0; }
.kpi { background: #fff; border-radius: 8px; padding: 0.7rem 1rem; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.kpi-label { display: block; font-size: 0.8rem; color: #666; text-transform: uppercase; letter-spacing: .03em; }
.kpi-value { display: block; font-size: 1.6rem; font-weight: 600; margin-top: 0.2rem; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0.8rem; }
.card { background: #fff; border-radius: 8px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
.wide { grid-column: 1 / -1; }
"""

INDEX = (
    """<!DOCTYPE html>
<html lang="en"><head>{%metas%}<title>{%title%}</title>{%favicon%}{%css%}<style>"""
    + CSS
    + """</style></head>
<body>{%app_entry%}<footer>{%config%}{%scripts%}{%renderer%}</footer></body></html>"""
)


def _html():
    from dash import dcc, html

    return dcc, html


def layout(refresh_seconds: float):
    dcc, html = _html()
    graphs = [
        html.Div(
            dcc.Graph(id=f"fig-{key}", config={"displaylogo": False}, style={"height": "400px"}),
            className="card wide" if key == "alerts" else "card",
        )
        for key in FIGURES
    ]
    return html.Div(
        className="page",
        children=[
            html.H1("fraudlake: live card-fraud dashboard"),
            html.Div(id="status", className="status", children="reading the lakehouse..."),
            html.Div(id="problem", className="problem", style={"display": "none"}),
            html.Div(id="empty-state", className="empty-state", style={"display": "none"}),
            html.Div(
                className="kpis",
                children=[
                    html.Div(
                        className="kpi",
                        children=[
                            html.Span(label, className="kpi-label"),
                            html.Span(F.PLACEHOLDER, id=f"kpi-{key}", className="kpi-value"),
                        ],
                    )
                    for key, label in KPIS
                ],
            ),
            html.Div(className="grid", children=graphs),
            dcc.Interval(id="refresh", interval=int(refresh_seconds * 1000), n_intervals=0),
        ],
    )


def empty_state(snapshot: Snapshot, home: str, refresh_seconds: float):
    """The message for a lakehouse with nothing to show yet, or None when there are scored rows."""
    _, html = _html()
    if not snapshot.models.empty:
        return None
    start = [
        "Start the pipeline in another terminal: ",
        html.Code("fraudlake train"),
        " once, then ",
        html.Code("fraudlake run"),
        " (or ",
        html.Code("fraudlake demo"),
        f" for the whole story), with the same home. This page looks again every {refresh_seconds:g} s.",
    ]
    if snapshot.missing:
        head = [html.B("No lakehouse tables yet"), f" in {home} (not created: {', '.join(snapshot.missing)})."]
    else:
        head = [html.B("No scored transactions yet"), f" in {home}: the tables exist but silver is empty."]
    return [html.Div(head), html.Div(start)]


def status_line(snapshot: Snapshot, numbers: dict, refresh_seconds: float):
    _, html = _html()
    model = numbers["model_in_use"] or F.PLACEHOLDER
    seen = numbers["models_seen"]
    history = f" (versions seen: {', '.join(seen)})" if len(seen) > 1 else ""
    window = f"last {snapshot.window_minutes} min of data" if snapshot.window_minutes else "all data"
    read_at = snapshot.read_at.astimezone(timezone.utc)
    return [
        html.Div(["model in use: ", html.B(model, id="model-in-use"), history]),
        html.Div(id="freshness", children=" · ".join(F.freshness(numbers, snapshot.gold, snapshot.time_zone))),
        html.Div(
            id="refreshed-at",
            children=f"charts: {window}; read {read_at:%H:%M:%S} UTC, refreshing every {refresh_seconds:g} s",
        ),
    ]


def render(snapshot: Snapshot, *, home: str, refresh_seconds: float) -> dict:
    """Everything the refresh callback sets, keyed by element id and property."""
    numbers = F.headline(snapshot.models, snapshot.alert_counts)
    empty = empty_state(snapshot, home, refresh_seconds)
    values = {
        "transactions": F.format_count(numbers["transactions"]),
        "flagged": F.format_count(numbers["flagged"]),
        "flagged-share": F.format_share(numbers["flagged_share"]),
        "alerts": F.format_count(numbers["alerts"]),
        "precision": F.format_share(numbers["live_precision"]),
        "recall": F.format_share(numbers["live_recall"]),
    }
    out = {
        ("status", "children"): status_line(snapshot, numbers, refresh_seconds),
        ("problem", "children"): None,
        ("problem", "style"): {"display": "none"},
        ("empty-state", "children"): empty,
        ("empty-state", "style"): {"display": "none" if empty is None else "block"},
    }
    out.update({(f"kpi-{key}", "children"): values[key] for key, _ in KPIS})
    out.update({(f"fig-{key}", "figure"): figure for key, figure in F.dashboard_figures(snapshot).items()})
    return out


def problem(error: Exception, refresh_seconds: float) -> dict:
    """A failed read: one line on the page; the last good content stays."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    return {
        ("problem", "children"): f"Could not read the lakehouse: {first[:300]} (trying again every "
        f"{refresh_seconds:g} s)",
        ("problem", "style"): {"display": "block"},
    }


def outputs() -> list[tuple[str, str]]:
    keys = [
        ("status", "children"),
        ("problem", "children"),
        ("problem", "style"),
        ("empty-state", "children"),
        ("empty-state", "style"),
    ]
    keys += [(f"kpi-{key}", "children") for key, _ in KPIS]
    keys += [(f"fig-{key}", "figure") for key in FIGURES]
    return keys


def create_app(read: Callable[[], Snapshot], *, refresh_seconds: float, home: str, on_error=None):
    """The Dash app. ``read`` returns a fresh snapshot; it is called from the refresh callback."""
    from dash import Dash, Input, Output, no_update

    # update_title=None: no "Updating..." tab title; Dash accepts None though its signature says str.
    app = Dash(__name__, title="fraudlake live", update_title=None, serve_locally=True)  # type: ignore[arg-type]
    app.index_string = INDEX
    app.layout = layout(refresh_seconds)
    keys = outputs()

    @app.callback([Output(element, prop) for element, prop in keys], Input("refresh", "n_intervals"))
    def refresh(_n_intervals):
        try:
            values = render(read(), home=home, refresh_seconds=refresh_seconds)
        except Exception as error:  # a table vanished, a query failed: say so, keep the last page
            if on_error is not None:
                on_error(error)
            values = problem(error, refresh_seconds)
        return [values.get(key, no_update) for key in keys]

    return app


class SnapshotReader:
    """Reads snapshots for the app, one at a time, without making the page wait for Spark.

    The page's interval fires every few seconds, in every open tab. A snapshot younger
    than ``min_age`` seconds is shared instead of running the same queries again, and
    while one request is reading, the others get the last snapshot at once: Dash drops
    a response that arrives after the next interval has fired, so a page whose every
    refresh waited for a read slower than the interval would never update.
    """

    def __init__(self, read: Callable[[], Snapshot], min_age: float):
        self._read = read
        self._min_age = min_age
        self._lock = threading.Lock()
        self._last: tuple[float, Snapshot] | None = None

    def __call__(self) -> Snapshot:
        last = self._last
        if not self._lock.acquire(blocking=last is None):
            assert last is not None  # without a snapshot the acquire blocks, so it never fails
            return last[1]  # a read is running: show the previous snapshot now
        try:
            last = self._last
            if last is not None and time.monotonic() - last[0] < self._min_age:
                return last[1]
            snapshot = self._read()
            self._last = (time.monotonic(), snapshot)
            return snapshot
        finally:
            self._lock.release()


def make_server(app, host: str, port: int):
    """A threaded WSGI server bound now (so a busy port fails before Spark starts); serve with serve_forever()."""
    import logging

    from werkzeug.serving import make_server as werkzeug_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = werkzeug_server(host, port, app.server, threaded=True)
    # Closing the server waits for requests in flight: a refresh still inside a Spark call
    # when the interpreter shuts down would abort it.
    # threaded=True makes a ThreadedWSGIServer; werkzeug's make_server is typed as returning its base class.
    server.daemon_threads = False  # type: ignore[attr-defined]
    return server
