"""Pure functions from small pandas frames (see :mod:`fraudlake.dashboards.queries`) to Plotly figures and
headline numbers. No Spark, no Dash: the live app and the static report draw the same figures,
and tests call them on hand-made frames.

A figure whose data is empty is still a figure, with its title and a message saying why it
is empty, so a fresh lakehouse shows a page that explains itself.
"""

from __future__ import annotations

import math

import pandas as pd

# Newest scored row older than this: say the pipeline looks stopped.
STALE_SECONDS = 60
PLACEHOLDER = "–"

COLOURS = {
    "transactions": "#4c78a8",
    "flagged": "#e45756",
    "precision": "#54a24b",
    "recall": "#f58518",
    "genuine": "#4c78a8",
    "fraud": "#e45756",
    "unlabelled": "#9d9d9d",
}


# ----------------------------------------------------------------------------- numbers and text


def _int(value) -> int:
    return 0 if value is None or (isinstance(value, float) and math.isnan(value)) else int(value)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def headline(models: pd.DataFrame, alert_counts: pd.DataFrame) -> dict:
    """Lifetime totals over every model version that scored silver rows, and the version in use now.

    ``models`` is ordered latest scorer first (the version silver is scoring with).
    """
    totals = {
        k: sum(_int(v) for v in models[k]) if not models.empty else 0
        for k in ("transactions", "flagged", "labelled", "true_positives", "false_positives", "false_negatives")
    }
    tp, fp, fn = totals["true_positives"], totals["false_positives"], totals["false_negatives"]
    latest = models.iloc[0] if not models.empty else None
    return {
        "transactions": totals["transactions"],
        "flagged": totals["flagged"],
        "flagged_share": _ratio(totals["flagged"], totals["transactions"]),
        "alerts": sum(_int(v) for v in alert_counts["alerts"]) if not alert_counts.empty else 0,
        "live_precision": _ratio(tp, tp + fp) if totals["labelled"] else None,
        "live_recall": _ratio(tp, tp + fn) if totals["labelled"] else None,
        "model_in_use": f"{latest['model_name']} v{latest['model_version']}" if latest is not None else None,
        "models_seen": [f"{r.model_name} v{r.model_version}" for r in models.itertuples()],
        "newest_event": latest["newest_event"] if latest is not None else None,
        "scored_age_seconds": float(models["scored_age_seconds"].min()) if not models.empty else None,
    }


def format_count(value) -> str:
    return PLACEHOLDER if value is None else f"{int(value):,}"


def format_share(value) -> str:
    return PLACEHOLDER if value is None else f"{value:.2%}"


def format_age(seconds) -> str:
    """``4 s``, ``3 min``, ``2 h 5 min``, ``3 days``; a slightly negative age (clock skew) is ``0 s``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return PLACEHOLDER
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h {minutes % 60} min"
    return f"{hours // 24} days"


def format_time(value, time_zone: str = "UTC") -> str:
    if value is None or pd.isna(value):
        return PLACEHOLDER
    return f"{pd.Timestamp(value):%Y-%m-%d %H:%M:%S} {time_zone}"


def freshness(numbers: dict, gold: dict, time_zone: str = "UTC") -> list[str]:
    """How old the data is: silver's newest scored row, and the newest gold minute (open or final)."""
    lines = []
    age = numbers.get("scored_age_seconds")
    if age is None:
        lines.append("no scored transactions yet")
    else:
        text = (
            f"newest transaction scored {format_age(age)} ago "
            f"(event time {format_time(numbers.get('newest_event'), time_zone)})"
        )
        if age > STALE_SECONDS:
            text += ": nothing new since, is the pipeline running?"
        lines.append(text)
    if gold.get("gold_through") is None:
        lines.append("no gold minutes yet (a minute appears with its first transaction in gold)")
    else:
        open_minutes = int(gold.get("open_minutes") or 0)
        still_open = (
            f"; the last {open_minutes} still open"
            if open_minutes > 1
            else ("; the last one still open" if open_minutes == 1 else "")
        )
        lines.append(
            f"gold minutes through {format_time(gold['gold_through'], time_zone)} "
            f"({format_age(gold.get('gold_age_seconds'))} ago{still_open})"
        )
    return lines


# ----------------------------------------------------------------------------- figures


def _go():
    import plotly.graph_objects as go

    return go


def _layout(figure, title: str, **layout):
    layout = {"margin": {"l": 60, "r": 30, "t": 60, "b": 50}, "legend": {"orientation": "h", "y": -0.18}, **layout}
    figure.update_layout(title={"text": title, "x": 0.01, "xanchor": "left"}, template="plotly_white", **layout)
    return figure


def empty_figure(title: str, message: str):
    """A titled figure with no axes and ``message`` in the middle."""
    figure = _go().Figure()
    figure.add_annotation(
        text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font={"size": 14, "color": "#666"}
    )
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return _layout(figure, title)


def _per(unit: str) -> str:
    return unit.lower()


NO_GOLD = "no minutes in gold.dashboard_minute yet"
OPEN_OPACITY = 0.45  # a bar for a minute (or window) that is still open: it may still grow


def _opacity(frame: pd.DataFrame) -> list[float]:
    """Full for final rows, faded for open ones (``is_final`` false); full where unknown."""
    if "is_final" not in frame:
        return [1.0] * len(frame)
    return [OPEN_OPACITY if final is False or final == 0 else 1.0 for final in frame["is_final"]]


def _open_note(frame: pd.DataFrame, what: str) -> str:
    opacity = _opacity(frame)
    return f" (faded: {what} still open)" if any(o < 1.0 for o in opacity) else ""


def volume_figure(volumes: pd.DataFrame, unit: str = "MINUTE"):
    """Transactions (bars, left axis) and flagged transactions (line, right axis: they are ~1% of the bars)."""
    title = f"Transactions and flagged transactions per {_per(unit)}"
    if volumes.empty:
        return empty_figure(title, NO_GOLD)
    go = _go()
    figure = go.Figure()
    figure.add_trace(
        go.Bar(
            x=volumes["minute"],
            y=volumes["tx_count"],
            name="transactions",
            marker={"color": COLOURS["transactions"], "opacity": _opacity(volumes)},
        )
    )
    title += _open_note(volumes, _per(unit))
    figure.add_trace(
        go.Scatter(
            x=volumes["minute"],
            y=volumes["flagged_count"],
            name="flagged",
            yaxis="y2",
            mode="lines+markers",
            line={"color": COLOURS["flagged"]},
        )
    )
    most = pd.to_numeric(volumes["flagged_count"]).fillna(0).max()
    return _layout(
        figure,
        title,
        yaxis={"title": "transactions", "rangemode": "tozero"},
        yaxis2={
            "title": "flagged",
            "overlaying": "y",
            "side": "right",
            "rangemode": "tozero",
            "showgrid": False,
            "tick0": 0,
            "dtick": max(1, math.ceil(most / 5)),
        },
    )  # whole counts


def flagged_share_figure(volumes: pd.DataFrame, unit: str = "MINUTE"):
    title = f"Flagged share per {_per(unit)}"
    rows = volumes[pd.to_numeric(volumes["tx_count"]) > 0] if not volumes.empty else volumes
    if rows.empty:
        return empty_figure(title, NO_GOLD)
    share = pd.to_numeric(rows["flagged_count"]).fillna(0) / pd.to_numeric(rows["tx_count"])
    go = _go()
    figure = go.Figure(
        go.Scatter(
            x=rows["minute"], y=share, mode="lines+markers", name="flagged share", line={"color": COLOURS["flagged"]}
        )
    )
    return _layout(figure, title, yaxis={"title": "flagged / transactions", "tickformat": ".1%", "rangemode": "tozero"})


def precision_recall_figure(quality: pd.DataFrame, unit: str = "MINUTE"):
    """Live precision and recall per time unit, where the rows carry ground-truth labels."""
    title = f"Live precision and recall per {_per(unit)}"
    labelled = quality[pd.to_numeric(quality["labelled"]) > 0] if not quality.empty else quality
    if labelled.empty:
        return empty_figure(title, "no labelled transactions: precision and recall need ground truth")
    tp = pd.to_numeric(labelled["true_positives"]).astype(float)
    flagged = tp + pd.to_numeric(labelled["false_positives"]).astype(float)
    fraud = pd.to_numeric(labelled["fraud"]).astype(float)
    precision = (tp / flagged).where(flagged > 0)
    recall = (tp / fraud).where(fraud > 0)
    overall_p, overall_r = _ratio(tp.sum(), flagged.sum()), _ratio(tp.sum(), fraud.sum())
    go = _go()
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=labelled["minute"],
            y=precision,
            name="precision",
            mode="lines+markers",
            line={"color": COLOURS["precision"]},
        )
    )
    figure.add_trace(
        go.Scatter(
            x=labelled["minute"], y=recall, name="recall", mode="lines+markers", line={"color": COLOURS["recall"]}
        )
    )
    summary = f" (over the period: precision {format_share(overall_p)}, recall {format_share(overall_r)})"
    return _layout(figure, title + summary, yaxis={"range": [0, 1.05], "tickformat": ".0%"})


def flagged_amount_figure(volumes: pd.DataFrame, unit: str = "MINUTE"):
    title = f"Amount flagged per {_per(unit)}"
    if volumes.empty:
        return empty_figure(title, NO_GOLD)
    go = _go()
    figure = go.Figure(
        go.Bar(
            x=volumes["minute"],
            y=pd.to_numeric(volumes["flagged_amount"]).fillna(0),
            name="flagged amount",
            marker={"color": COLOURS["flagged"], "opacity": _opacity(volumes)},
        )
    )
    return _layout(
        figure, title + _open_note(volumes, _per(unit)), yaxis={"title": "amount flagged (USD)", "rangemode": "tozero"}
    )


def top_users_figure(top_users: pd.DataFrame):
    """Users by their busiest 5-minute window: a stolen card's burst stands out here."""
    title = "Top users by 5-minute activity (busiest window)"
    if top_users.empty:
        return empty_figure(title, "no 5-minute windows in gold.user_activity_5m yet")
    go = _go()
    figure = go.Figure()
    opacity = _opacity(top_users)
    figure.add_trace(
        go.Bar(
            y=top_users["user_id"],
            x=top_users["tx_count"],
            orientation="h",
            name="transactions",
            marker={"color": COLOURS["transactions"], "opacity": opacity},
        )
    )
    figure.add_trace(
        go.Bar(
            y=top_users["user_id"],
            x=pd.to_numeric(top_users["flagged_count"]).fillna(0),
            orientation="h",
            name="flagged",
            marker={"color": COLOURS["flagged"], "opacity": opacity},
        )
    )
    return _layout(
        figure,
        title + _open_note(top_users, "window"),
        barmode="overlay",
        xaxis={"title": "transactions in the window"},
        yaxis={"autorange": "reversed", "type": "category"},
    )


def score_distribution_figure(scores: pd.DataFrame):
    """Histogram of fraud scores by label, log counts: fraud is ~1.5% and would vanish on a linear axis."""
    title = "Fraud-score distribution"
    if scores.empty:
        return empty_figure(title, "no scored transactions yet")
    go = _go()
    figure = go.Figure()
    for label in ("genuine", "fraud", "unlabelled"):
        rows = scores[scores["label"] == label]
        if rows.empty:
            continue
        low, high = pd.to_numeric(rows["score_low"]), pd.to_numeric(rows["score_high"])
        figure.add_trace(
            go.Bar(
                x=(low + high) / 2,
                y=rows["transactions"],
                width=high - low,
                name=label,
                opacity=0.65,
                marker_color=COLOURS[label],
            )
        )
    return _layout(
        figure,
        title,
        barmode="overlay",
        xaxis={"title": "fraud score (higher = more suspicious)"},
        yaxis={"title": "transactions (log)", "type": "log"},
    )


def alerts_table_figure(alerts: pd.DataFrame, title: str = "Latest alerts", time_zone: str = "UTC"):
    if alerts.empty:
        return empty_figure(title, "no alerts yet")
    go = _go()
    subject = [
        t if isinstance(t, str) and t else f"user {u}"
        for t, u in zip(alerts["transaction_id"], alerts["user_id"], strict=True)
    ]
    scores = [PLACEHOLDER if s is None or pd.isna(s) else f"{float(s):.3f}" for s in alerts["fraud_score"]]
    times = [format_time(t, time_zone) for t in alerts["alert_time"]]
    figure = go.Figure(
        go.Table(
            columnwidth=[1.4, 0.9, 1.2, 0.6, 4],
            header={
                "values": ["time", "type", "transaction / user", "score", "reason"],
                "align": "left",
                "fill_color": "#eef2f7",
                "font": {"size": 12},
            },
            cells={
                "values": [times, list(alerts["alert_type"]), subject, scores, list(alerts["reason"])],
                "align": "left",
                "font": {"size": 11},
                "height": 24,
            },
        )
    )
    return _layout(figure, title, margin={"l": 10, "r": 10, "t": 50, "b": 10})


def dashboard_figures(snapshot, alerts_title: str = "Latest alerts") -> dict:
    """Every figure of the live page (and the report), keyed by its element id."""
    unit = snapshot.unit
    return {
        "volume": volume_figure(snapshot.volumes, unit),
        "flagged-share": flagged_share_figure(snapshot.volumes, unit),
        "precision-recall": precision_recall_figure(snapshot.quality, unit),
        "flagged-amount": flagged_amount_figure(snapshot.volumes, unit),
        "top-users": top_users_figure(snapshot.top_users),
        "scores": score_distribution_figure(snapshot.scores),
        "alerts": alerts_table_figure(snapshot.alerts, alerts_title, snapshot.time_zone),
    }
