"""One session-scoped local Spark + Delta for every JVM test; a temp home per test.

The whole suite runs with the host in a time zone off UTC (``Asia/Kolkata``, a half-hour
offset; ``FRAUDLAKE_TEST_TZ`` chooses another): a machine in UTC hides a local time
mislabelled as UTC, and here such a time shows as wrong in whichever test meets it. The
JVM, the dashboard and every ``fraudlake`` subprocess the tests start inherit the zone.

What a test changes on the shared session (a conf, the current catalog or database, a
stream left running) is undone after it; temporary views, and what a module's fixtures
changed, after the module: no test passes or fails because of another that ran before
it. fraudlake itself switches some session confs on and leaves them on (reading
nanosecond Parquet, the dashboard's bound SQL parameters); they are undone too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class SessionState:
    """What a test can change on the shared session and leave changed."""

    conf: dict[str, str]
    temp_views: frozenset[str] | None  # None: not looked at (SHOW VIEWS is a query, ~0.15 s)
    catalog: str
    database: str
    streams: frozenset[str]

    @classmethod
    def of(cls, session, views: bool = True) -> SessionState:
        return cls(
            conf=dict(session.conf.getAll),
            temp_views=cls.temp_view_names(session) if views else None,
            catalog=session.catalog.currentCatalog(),
            database=session.catalog.currentDatabase(),
            streams=frozenset(query.id for query in session.streams.active),
        )

    @staticmethod
    def temp_view_names(session) -> frozenset[str]:
        rows = session.sql("SHOW VIEWS").where("isTemporary").select("viewName").collect()
        return frozenset(row[0] for row in rows)

    def restore(self, session) -> None:
        for query in session.streams.active:
            if query.id not in self.streams:
                query.stop()
        if self.temp_views is not None:
            for view in SessionState.temp_view_names(session) - self.temp_views:
                session.catalog.dropTempView(view)
        if session.catalog.currentCatalog() != self.catalog:
            session.catalog.setCurrentCatalog(self.catalog)
        if session.catalog.currentDatabase() != self.database:
            session.catalog.setCurrentDatabase(self.database)
        now = dict(session.conf.getAll)
        changed = {key for key in now.keys() | self.conf.keys() if now.get(key) != self.conf.get(key)}
        for key in sorted(changed):
            if not session.conf.isModifiable(key):  # fixed when the session started: nothing to undo
                continue
            if key in self.conf:
                session.conf.set(key, self.conf[key])
            else:
                session.conf.unset(key)


_SESSION: list = []  # the shared session once started, and its state as it started


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from fraudlake.spark import get_spark

    home = tmp_path_factory.mktemp("spark-session")
    ctx = make_context(home, spark={"shuffle_partitions": 2})
    session = get_spark(ctx, master="local[2]")
    _SESSION[:] = [session, SessionState.of(session)]
    yield session
    _SESSION.clear()
    session.stop()


@pytest.fixture(scope="session")
def shared_champion(spark, tmp_path_factory) -> dict[str, str]:
    """``ml`` settings that point a home at one registry, trained once for the session: its
    champion is what ``fraudlake demo`` trains (gradient boosting on the default simulated
    history), ``fraud_detector`` version 1.

    For modules that only score with a champion; a module that trains, promotes or
    re-scores keeps a registry of its own. ``make_context(home, ml=shared_champion)``.
    """
    from fraudlake.ml.train import train_model

    folder = tmp_path_factory.mktemp("shared-registry")
    ml = {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "artifact_location": str(folder / "mlruns")}
    train_model(spark, make_context(folder / "home", ml=ml), model="gradient_boosting")
    return ml


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_the_session_as_it_started():
    """After a module (its fixtures included), the shared session as it was when it started."""
    yield
    if _SESSION:
        session, started = _SESSION
        started.restore(session)


@pytest.fixture(autouse=True)
def _test_leaves_the_session_as_it_found_it(request):
    """After a test, the shared session as the test found it (its module's fixtures' changes kept)."""
    if "spark" not in request.fixturenames:
        yield
        return
    session = request.getfixturevalue("spark")
    # Temporary views are dropped after each module: a view a test leaves behind can only
    # meet a later test of its own module, and looking for them costs two queries a test.
    found = SessionState.of(session, views=False)
    yield
    found.restore(session)


@pytest.fixture
def ctx(tmp_path) -> Context:
    return make_context(tmp_path / "home")


def attached(spark, ctx: Context) -> Context:
    """``ctx``, the session's table names pointed at its home's tables as a reader does
    (:func:`fraudlake.tables.attach_tables`; nothing is created or committed).

    The names are the session's (``spark_catalog.silver.scored_transactions``), and any test
    that registers a home of its own points them there. A module whose tests share one home
    attaches it before each test, so every test reads that home whatever ran before it.
    """
    from fraudlake.tables import attach_tables

    attach_tables(spark, ctx)
    return ctx


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


def java_that_records_its_starts(folder: Path) -> tuple[dict[str, str], Path]:
    """Environment variables whose ``java`` (``JAVA_HOME``, and first on ``PATH``) writes its
    arguments to a file and fails, and that file: a command run with them that starts a JVM
    (Spark's launcher runs this ``java``) leaves the file behind, one that starts none does not."""
    starts = folder / "java-starts"
    java = folder / "java-home" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text(f'#!/bin/sh\necho "$@" >> "{starts}"\nexit 1\n')
    java.chmod(0o755)
    return {"JAVA_HOME": str(java.parent.parent), "PATH": f"{java.parent}{os.pathsep}{os.environ['PATH']}"}, starts


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


def rate_rows_once(spark, table: Path) -> int:
    """The rate source's rows in the bronze table at ``table`` (a folder), asserting no duplicate
    and no gap: the numbers behind the ids are exactly 0..n-1. Returns n."""
    from pyspark.sql import functions as F

    bronze = spark.read.format("delta").load(str(table))
    values = bronze.select(F.regexp_extract("transaction_id", r"(\d+)$", 1).cast("long").alias("v"))
    stats = values.agg(
        F.count("*").alias("n"), F.countDistinct("v").alias("d"), F.min("v").alias("lo"), F.max("v").alias("hi")
    ).first()
    assert stats["n"] == stats["d"], f"duplicates: {stats}"
    assert (stats["lo"], stats["hi"]) == (0, stats["n"] - 1), f"gaps: {stats}"
    return stats["n"]


def free_port() -> int:
    """A TCP port nothing listens on now (for a broker or a cluster a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
