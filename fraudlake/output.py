"""Rendering results for people (aligned table) and machines (json, csv)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any

import pandas as pd

FORMATS = ("table", "json", "csv")


def render_frame(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", date_unit="us", force_ascii=False)
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if frame.empty:
        return "(no rows)" if len(frame.columns) else "(no result)"
    return frame.to_string(index=False)


def render_records(records: Iterable[dict[str, Any]], fmt: str) -> str:
    return render_frame(pd.DataFrame(list(records)), fmt)


def render_mapping(mapping: dict[str, Any], fmt: str) -> str:
    """A summary: ``key  value`` lines for people, one JSON object for machines."""
    if fmt == "json":
        return json.dumps(mapping, default=str)
    if fmt == "csv":
        return render_frame(pd.DataFrame([mapping]), "csv")
    width = max((len(k) for k in mapping), default=0)
    indent = "\n" + " " * (width + 2)  # a multi-line value (a list of commands) stays in its column
    return "\n".join(f"{k.ljust(width)}  {_human(v).replace(chr(10), indent)}" for k, v in mapping.items())


def _human(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (dict, list, tuple)) and not value:
        return "none"  # an empty mapping or list, e.g. no query reached the drain limit
    if isinstance(value, dict):
        return ", ".join(f"{k}={_human(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "\n".join(_human(v) for v in value) if any(" " in str(v) for v in value) else ", ".join(map(str, value))
    return str(value)


def emit(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def note(text: str) -> None:
    """Progress and hints: stderr, so stdout stays machine-readable."""
    print(text, file=sys.stderr, flush=True)
