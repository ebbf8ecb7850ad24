"""The console script started by its absolute path, its environment not activated (pipx, cron,
a service manager): Spark's Python workers must run the interpreter fraudlake runs in,
not the first ``python3`` on PATH. The conf is checked here; the kill -9 test in
``test_run_cli.py`` runs the whole pipeline that way, the first ``python3`` on PATH lacking pandas."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fraudlake.spark import local_spark_conf
from tests.conftest import WORKER_ENV, make_context


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
