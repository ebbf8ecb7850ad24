"""One session-scoped local Spark + Delta for every JVM test; a temp home per test.

The whole suite runs with the host in a time zone off UTC (``Asia/Kolkata``, a half-hour
offset; ``FRAUDLAKE_TEST_TZ`` chooses another): a machine in UTC hides a local time
mislabelled as UTC, and here such a time shows as wrong in whichever test meets it. The
JVM, the dashboard and every ``fraudlake`` subprocess the tests start inherit the zone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ["TZ"] = os.environ.get("FRAUDLAKE_TEST_TZ", "Asia/Kolkata")
time.tzset()

from fraudlake.conf.settings import Settings  # noqa: E402 - after the time zone is set
from fraudlake.settings import Context, Paths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_context(home: Path, **sections) -> Context:
    """A context with default settings plus section overrides, e.g. ``simulator={"seed": 7}``."""
    data = Settings().model_dump()
    for section, updates in sections.items():
        data[section] = {**data[section], **updates}
    settings = Settings.model_validate(data)
    return Context(settings=settings, paths=Paths.of(settings, home))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from fraudlake.spark import get_spark

    home = tmp_path_factory.mktemp("spark-session")
    ctx = make_context(home, spark={"shuffle_partitions": 2})
    session = get_spark(ctx, master="local[2]")
    yield session
    session.stop()


@pytest.fixture
def ctx(tmp_path) -> Context:
    return make_context(tmp_path / "home")


def fraudlake(capsys, home: Path, *args: str) -> tuple[int, str, str]:
    """``fraudlake --home HOME ARGS`` in this process: (exit code, stdout, stderr)."""
    from fraudlake.cli import main

    capsys.readouterr()
    code = main(["--home", str(home), *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*args: str, home: Path, timeout: float = 300, env: dict | None = None, check: bool = True):
    """Run ``fraudlake`` in its own process (its own JVM), as a user would."""
    full_env = {**os.environ, "FRAUDLAKE_HOME": str(home), **(env or {})}
    full_env.pop("FRAUDLAKE_CONF", None) if "FRAUDLAKE_CONF" not in (env or {}) else None
    result = subprocess.run(
        [sys.executable, "-m", "fraudlake.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=str(home.parent),
    )
    if check and result.returncode != 0:
        raise AssertionError(f"fraudlake {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


WORKER_ENV = ("PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")


def console_outside_its_environment(tmp_path: Path, home: Path) -> tuple[Path, dict[str, str]]:
    """The ``fraudlake`` console script and an environment as pipx, cron or a service manager
    give it: started by its absolute path, with a ``python3`` first on PATH that lacks pandas
    (this interpreter without site-packages), so Spark's Python workers must be told which
    interpreter to run."""
    script = Path(sys.executable).parent / "fraudlake"
    assert script.is_file(), f"no console script next to {sys.executable}"
    shims = tmp_path / "bin"
    shims.mkdir()
    for name in ("python3", "python"):
        shim = shims / name
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in (*WORKER_ENV, "FRAUDLAKE_CONF")}
    env.update(FRAUDLAKE_HOME=str(home), PATH=f"{shims}{os.pathsep}{os.environ['PATH']}")
    lacks_pandas = subprocess.run(["python3", "-c", "import pandas"], env=env, capture_output=True)
    assert lacks_pandas.returncode != 0, "the python3 first on PATH imports pandas: the test would prove nothing"
    return script, env
