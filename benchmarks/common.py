"""Shared by the benchmark scripts: machine facts and writing results as data."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import pyspark

    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def under_profile(ctx, profile: str):
    """``ctx`` (a :class:`fraudlake.settings.Context`) with the stream profile ``profile``, as
    ``fraudlake run --profile`` sets it: the profile fills every stream key the conf leaves out."""
    from fraudlake.settings import Context, parse_settings

    data = ctx.settings.model_dump()  # leaves out values a profile filled in
    data["profile"] = profile
    return Context(parse_settings(data, "benchmark"), ctx.paths)


def fresh_context(base=None, **sections):
    """A :class:`fraudlake.settings.Context` on a new temporary home: ``base``'s settings (default:
    fraudlake's defaults) with ``sections`` replaced, e.g. ``spark={"shuffle_partitions": 2}``."""
    from fraudlake.conf.settings import Settings
    from fraudlake.settings import Context, Paths

    settings = base.settings if base is not None else Settings()
    ctx = Context(settings, Paths.of(settings, Path(tempfile.mkdtemp(prefix="fraudlake-bench-"))))
    return ctx.with_settings(**sections) if sections else ctx
