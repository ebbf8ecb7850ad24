"""``fraudlake report``: one self-contained HTML page summing up what is in the lakehouse.

The page draws the dashboard's figures over the whole history (bucketed by minute,
hour or day to fit) and inlines plotly.js once, so it opens offline and survives the run.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from fraudlake.dashboards import figures as F
from fraudlake.dashboards.queries import read_snapshot, table_rows
from fraudlake.settings import Context

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REPORT_FIGURES = ("volume", "flagged-share", "precision-recall", "flagged-amount", "scores", "top-users", "alerts")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _facts(rows: list[tuple[str, str]]) -> str:
    return (
        "<table>"
        + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def model_rows(models: pd.DataFrame, time_zone: str) -> list[list]:
    """One row per model version that scored silver rows, with its own live precision and recall."""
    rows = []
    for m in models.itertuples():
        tp, fp, fn = (F._int(getattr(m, k)) for k in ("true_positives", "false_positives", "false_negatives"))
        labelled = F._int(m.labelled) > 0
        rows.append(
            [
                f"{m.model_name} v{m.model_version}",
                F.format_count(m.transactions),
                F.format_count(m.flagged),
                F.format_share(F._ratio(tp, tp + fp) if labelled else None),
                F.format_share(F._ratio(tp, tp + fn) if labelled else None),
                F.format_time(m.first_scored, time_zone),
                F.format_time(m.last_scored, time_zone),
            ]
        )
    return rows


QUALITY_HOURS = 48  # the newest hours of gold.model_quality_hourly the report lists


def quality_rows(spark: SparkSession, ctx: Context, time_zone: str) -> list[list] | None:
    """The newest hours of ``gold.model_quality_hourly`` (precision, recall and average precision
    from the fraud labels arrived so far), or None where the view does not exist yet."""
    from pyspark.errors import AnalysisException

    from fraudlake.tables import GOLD_MODEL_QUALITY, table_name

    try:
        hours: pd.DataFrame = (
            spark.table(table_name(ctx, GOLD_MODEL_QUALITY))
            .orderBy("hour", "model_version", ascending=[False, True])
            .limit(QUALITY_HOURS)
            .toPandas()
        )
    except AnalysisException:
        return None
    return [
        [
            F.format_time(h.hour, time_zone),
            f"{h.model_name} v{h.model_version}",
            F.format_count(h.tx_count),
            F.format_count(h.flagged_count),
            F.format_count(h.fraud_labelled),
            F.format_share(None if pd.isna(h.precision) else h.precision),
            F.format_share(None if pd.isna(h.recall) else h.recall),
            F.PLACEHOLDER if pd.isna(h.average_precision) else f"{h.average_precision:.3f}",
        ]
        for h in hours.itertuples()
    ]


def write_lakehouse_report(spark: SparkSession, ctx: Context, path: Path | None = None) -> tuple[Path, dict]:
    """Write the report (default ``<reports>/lakehouse-<UTC time>.html``); return its path and headline numbers."""
    from fraudlake.ml.registry import reports_dir

    snapshot = read_snapshot(spark, ctx, window_minutes=None, top_users=20, alerts=25, alert_order="top")
    numbers = F.headline(snapshot.models, snapshot.alert_counts)
    rows = table_rows(spark, ctx, snapshot.missing)
    tz = snapshot.time_zone
    generated = datetime.now(timezone.utc)
    path = path or reports_dir(ctx) / f"lakehouse-{generated:%Y%m%dT%H%M%SZ}.html"

    figures = F.dashboard_figures(snapshot, alerts_title="Top alerts (highest model scores)")
    parts = [
        figures[key].to_html(full_html=False, include_plotlyjs=(i == 0), default_height="430px")
        for i, key in enumerate(REPORT_FIGURES)
    ]
    facts = [
        ("home", str(ctx.paths.home)),
        ("transactions scored", F.format_count(numbers["transactions"])),
        ("flagged", f"{F.format_count(numbers['flagged'])} ({F.format_share(numbers['flagged_share'])})"),
        ("live precision", F.format_share(numbers["live_precision"])),
        ("live recall", F.format_share(numbers["live_recall"])),
        ("alerts", F.format_count(numbers["alerts"])),
        ("model in use", numbers["model_in_use"] or F.PLACEHOLDER),
        ("freshness", "; ".join(F.freshness(numbers, snapshot.gold, tz))),
        ("charts", f"whole history, per {snapshot.unit.lower()}"),
    ]
    by_type = [[r.alert_type, F.format_count(r.alerts)] for r in snapshot.alert_counts.itertuples()]
    quality = quality_rows(spark, ctx, tz)
    quality_header = ["hour", "model", "transactions", "flagged", "fraud labelled", "precision", "recall", "AP"]
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fraudlake lakehouse report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1.2rem; }}
th, td {{ text-align: left; padding: 0.2rem 1rem 0.2rem 0; border-bottom: 1px solid #ddd; font-size: 0.9rem; }}
th {{ font-weight: 600; }}
.figures > div {{ max-width: 1100px; margin-bottom: 1.5rem; }}
</style></head>
<body>
<h1>fraudlake lakehouse report</h1>
<p>Generated {generated:%Y-%m-%d %H:%M:%S} UTC by fraudlake.</p>
{_facts(facts)}
<h2>Tables</h2>
{_table(["table", "rows"], [[name, "not created" if n is None else f"{n:,}"] for name, n in rows.items()])}
<h2>Model versions seen in silver</h2>
{
        _table(
            ["model", "transactions", "flagged", "live precision", "live recall", "first scored", "last scored"],
            model_rows(snapshot.models, tz),
        )
        if not snapshot.models.empty
        else "<p>none yet</p>"
    }
<h2>Live model quality per hour</h2>
<p>From the fraud labels that have arrived (bronze.labels): until its label comes, a fraud counts as genuine.</p>
{_table(quality_header, quality) if quality else "<p>none yet</p>"}
<h2>Alerts by type</h2>
{_table(["type", "alerts"], by_type) if by_type else "<p>none yet</p>"}
<div class="figures">{"".join(f"<div>{part}</div>" for part in parts)}</div>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    summary = {
        key: numbers[key]
        for key in ("transactions", "flagged_share", "live_precision", "live_recall", "alerts", "model_in_use")
    }
    return path, summary
