"""The evaluation report: one self-contained HTML page of Plotly figures (plotly.js inline, works offline)."""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fraudlake.ml.metrics import top_k_order


def confusion_figure(cm: dict[str, int]):
    """Counts as text; colour by share of the true class, so the small fraud row is as readable as the genuine one."""
    import plotly.graph_objects as go

    counts = [[cm["tn"], cm["fp"]], [cm["fn"], cm["tp"]]]
    shares = [[v / max(sum(row), 1) for v in row] for row in counts]
    figure = go.Figure(
        go.Heatmap(
            z=shares,
            x=["not flagged", "flagged"],
            y=["genuine", "fraud"],
            text=[
                [f"{v:,} ({s:.1%})" for v, s in zip(row, share, strict=True)]
                for row, share in zip(counts, shares, strict=True)
            ],
            texttemplate="%{text}",
            colorscale="Blues",
            zmin=0,
            zmax=1,
            showscale=False,
        )
    )
    figure.update_layout(
        title="Confusion matrix at the flag threshold (share of each true class)",
        yaxis={"autorange": "reversed", "title": "true class"},
        xaxis_title="model",
    )
    return figure


def score_distribution_figure(labels: np.ndarray, scores: np.ndarray, threshold: float):
    """Densities on a log axis: at 1.5% fraud, counts would hide the fraud histogram beside the genuine one."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for value, name in ((0, "genuine"), (1, "fraud")):
        figure.add_trace(
            go.Histogram(x=scores[labels == value], name=name, histnorm="probability density", opacity=0.6, nbinsx=60)
        )
    figure.add_vline(x=threshold, line_dash="dash", annotation_text="flag threshold")
    figure.update_layout(
        barmode="overlay",
        title="Score distribution by class",
        xaxis_title="fraud score",
        yaxis_title="density (log)",
        yaxis_type="log",
    )
    return figure


def precision_recall_figure(labels: np.ndarray, scores: np.ndarray, threshold: float, average_precision):
    import plotly.graph_objects as go
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    flagged = scores >= threshold
    tp = int((flagged & (labels == 1)).sum())
    figure = go.Figure(go.Scatter(x=recall, y=precision, mode="lines", name="model"))
    figure.add_trace(
        go.Scatter(
            x=[tp / max(int(labels.sum()), 1)],
            y=[tp / max(int(flagged.sum()), 1)],
            mode="markers",
            marker={"size": 12, "symbol": "x"},
            name="at the flag threshold",
        )
    )
    figure.add_hline(y=float(labels.mean()), line_dash="dot", annotation_text="fraud share (random ranking)")
    ap = f"{average_precision:.3f}" if average_precision is not None else "n/a"
    figure.update_layout(
        title=f"Precision-recall curve (average precision {ap})",
        xaxis_title="recall",
        yaxis_title="precision",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1.05],
    )
    return figure


def precision_at_k_figure(labels: np.ndarray, scores: np.ndarray, ks):
    """Precision of the top-k alerts for every k up to twice the largest configured one."""
    import plotly.graph_objects as go

    ranked = labels[top_k_order(scores)]
    limit = min(len(ranked), 2 * max(ks))
    k = np.arange(1, limit + 1)
    figure = go.Figure(go.Scatter(x=k, y=np.cumsum(ranked[:limit]) / k, mode="lines", name="precision@k"))
    for marker in ks:
        if marker <= limit:
            figure.add_vline(x=marker, line_dash="dot", annotation_text=f"k={marker}")
    figure.update_layout(
        title="Precision of the top-k alerts",
        xaxis_title="k (alerts reviewed, highest scores first)",
        yaxis_title="precision",
        yaxis_range=[0, 1.05],
    )
    return figure


def scenario_recall_figure(recall_by_scenario: dict[str, float]):
    import plotly.graph_objects as go

    names = list(recall_by_scenario)
    figure = go.Figure(go.Bar(x=names, y=[recall_by_scenario[n] for n in names]))
    figure.update_layout(
        title="Recall per fraud scenario at the flag threshold", yaxis_title="recall", yaxis_range=[0, 1.05]
    )
    return figure


def importance_figure(importance: dict[str, float]):
    import plotly.graph_objects as go

    names = list(importance)[::-1]  # largest on top
    figure = go.Figure(go.Bar(x=[importance[n] for n in names], y=names, orientation="h"))
    figure.update_layout(
        title="Permutation importance: average precision lost when an input is shuffled",
        xaxis_title="average precision lost",
    )
    return figure


def _metrics_table(metrics: dict) -> str:
    rows = []
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.4f}"
        rows.append(f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def write_report(path: Path, *, title: str, facts: dict, metrics: dict, labels, scores, ks) -> Path:
    """Write the HTML report; plotly.js is inlined once, so the file opens offline."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype="float64")
    threshold = metrics["flag_threshold"]
    figures = [
        confusion_figure(metrics["confusion_matrix"]),
        score_distribution_figure(labels, scores, threshold),
        precision_recall_figure(labels, scores, threshold, metrics.get("average_precision")),
        precision_at_k_figure(labels, scores, ks),
    ]
    if metrics.get("recall_by_scenario"):
        figures.append(scenario_recall_figure(metrics["recall_by_scenario"]))
    if metrics.get("permutation_importance"):
        figures.append(importance_figure(metrics["permutation_importance"]))
    parts = [
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), default_height="460px") for i, fig in enumerate(figures)
    ]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ text-align: left; padding: 0.2rem 1rem 0.2rem 0; border-bottom: 1px solid #ddd; font-size: 0.9rem; }}
th {{ font-weight: 600; }}
.figures > div {{ max-width: 1000px; margin-bottom: 1.5rem; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p>Generated {generated} by fraudlake.</p>
{_metrics_table(facts)}
<h2>Metrics</h2>
{_metrics_table(metrics)}
<div class="figures">{"".join(f"<div>{part}</div>" for part in parts)}</div>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
