"""The console script started by its absolute path, its environment not activated (pipx, cron,
a service manager): Spark's Python workers must run the interpreter fraudlake runs in,
not the first ``python3`` on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fraudlake.spark import local_spark_conf
from tests.conftest import fraudlake, make_context

WORKER_ENV = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


def _conf(tmp_path: Path, **spark_settings) -> dict[str, str]:
    return local_spark_conf(make_context(tmp_path / "home", spark={"extra": {}, **spark_settings}))


def test_workers_run_the_interpreter_fraudlake_runs_in(tmp_path, monkeypatch):
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    assert _conf(tmp_path)["spark.pyspark.python"] == sys.executable


@pytest.mark.parametrize("name", WORKER_ENV)
def test_an_interpreter_set_in_the_environment_is_left_to_spark(tmp_path, monkeypatch, name):
    for other in WORKER_ENV:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv(name, "/opt/python/bin/python3")
    assert "spark.pyspark.python" not in _conf(tmp_path)


def test_an_interpreter_set_in_the_settings_wins(tmp_path, monkeypatch):
    for name in WORKER_ENV:
        monkeypatch.delenv(name, raising=False)
    conf = _conf(tmp_path, extra={"spark.pyspark.python": "/opt/python/bin/python3"})
    assert conf["spark.pyspark.python"] == "/opt/python/bin/python3"


def _path_without_pandas(tmp_path: Path) -> str:
    """A PATH whose ``python3`` and ``python`` are this interpreter without site-packages."""
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in ("python3", "python"):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        shim.chmod(0o755)
    return f"{shims}{os.pathsep}{os.environ['PATH']}"


@pytest.mark.spark
@pytest.mark.slow
def test_console_script_outside_its_environment_scores_rows(spark, capsys, tmp_path):
    script = Path(sys.executable).parent / "fraudlake"
    assert script.is_file(), f"no console script next to {sys.executable}"
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in (*WORKER_ENV, "FRAUDLAKE_CONF")}
    env.update(FRAUDLAKE_HOME=str(home), PATH=_path_without_pandas(tmp_path))
    lacks_pandas = subprocess.run(["python3", "-c", "import pandas"], env=env, capture_output=True)
    assert lacks_pandas.returncode != 0, "the python3 first on PATH imports pandas: the test would prove nothing"

    # The model is trained in this process; the console script runs the streams, whose Python
    # workers score the rows (pandas, the model) and would fail on the wrong interpreter.
    assert fraudlake(capsys, home, "train", "--samples", "2000", "--set", "ml.isolation_forest_trees=20")[0] == 0
    result = subprocess.run(
        [str(script), "run", "--layers", "bronze,silver", "--rate", "50", "--duration", "20", "--format", "json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"fraudlake run exited {result.returncode}:\n{result.stderr[-4000:]}"
    summary = json.loads(result.stdout)
    assert summary["rows"]["spark_catalog.silver.scored_transactions"] > 0, summary
    assert summary["model_versions"] == ["fraud_detector v1"], summary
