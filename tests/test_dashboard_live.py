"""The dashboard and the report on a real lakehouse: the dashboard as its own process, read in headless
Chromium while a stream writes; the queries and ``fraudlake report`` in process.

One ``fraudlake dashboard`` serves the whole module. It starts on an empty home, whose page
is read before the home is filled in process (a short history of simulated transactions
through every layer, scored by the session's shared champion), and a rate stream (``fraudlake
run``'s bronze + silver query, in process) writes more while the page is read. The fixtures
order this, not the tests: any of them may run alone or first.

The browser is Debian's chromium driven by its chromedriver (``apt-get install chromium
chromium-driver``); nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyspark.sql import functions as F

from fraudlake.cli import main
from fraudlake.dashboards.queries import read_snapshot
from fraudlake.orchestration.pipeline import LAYERS, catch_up, preflight, start_pipeline
from fraudlake.simulator import generate_batch
from fraudlake.tables import (
    GOLD_DASHBOARD_MINUTE,
    GOLD_FRAUD_ALERTS,
    GOLD_MODEL_QUALITY,
    GOLD_USER_ACTIVITY,
    SILVER_SCORED,
    ensure_tables,
    table_name,
)
from tests.conftest import attached, make_context

pytestmark = [pytest.mark.spark, pytest.mark.slow]  # streams a lakehouse

HISTORY_ROWS = 2_000
HISTORY_SECONDS = 40 * 60
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FIGURE_IDS = (
    "fig-volume",
    "fig-flagged-share",
    "fig-precision-recall",
    "fig-flagged-amount",
    "fig-top-users",
    "fig-scores",
    "fig-alerts",
)


# ----------------------------------------------------------------------------- the dashboard process


class Dashboard:
    """``fraudlake dashboard`` in its own process; its stderr is collected by a thread."""

    def __init__(self, home: Path):
        env = {**os.environ, "FRAUDLAKE_HOME": str(home)}
        env.pop("FRAUDLAKE_CONF", None)
        home.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fraudlake.cli",
                "dashboard",
                "--port",
                "0",
                "--refresh",
                "3",
                "--master",
                "local[1]",
            ],
            env=env,
            cwd=str(home.parent),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._url: str | None = None

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def url(self) -> str:
        deadline = time.time() + 180
        while self._url is None:
            found = [m for line in self.lines if (m := re.search(r"dashboard: (http://\S+)", line))]
            if found:
                self._url = found[0].group(1)
            elif self.process.poll() is not None or time.time() > deadline:
                raise AssertionError("fraudlake dashboard did not start:\n" + "\n".join(self.lines[-30:]))
            else:
                time.sleep(0.3)
        return self._url

    def stop(self) -> int:
        """Ctrl-C, as a user would stop it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(30)
        self._reader.join(10)
        return code


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dashboard") / "home"


@pytest.fixture(scope="module")
def dashboard(home):
    """Started on the still-empty home; its JVM boots while this process goes on."""
    server = Dashboard(home)
    yield server
    code = server.stop()
    assert code == 0 and "dashboard stopped" in server.lines, "\n".join(server.lines[-40:])


@pytest.fixture(scope="module")
def champion(home, shared_champion):
    return make_context(home, ml=shared_champion)


@pytest.fixture(scope="module")
def filled(spark, champion, request):
    """The last 40 minutes of simulated transactions through bronze, silver and gold, as a scheduled job would."""
    # The empty home's page, if a test of this run looks at it, is read before the home is filled.
    here = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    if any("empty_page" in item.fixturenames for item in here):
        request.getfixturevalue("empty_page")
    ctx = champion
    ensure_tables(spark, ctx)
    start = int(time.time()) - HISTORY_SECONDS
    history = (
        generate_batch(spark, ctx.settings.simulator, HISTORY_ROWS)
        .drop("_raw", "_source", "_ingest_time")
        .withColumn("transaction_id", F.concat(F.lit("history-"), "transaction_id"))
        .withColumn("event_time", F.timestamp_seconds(F.lit(start) + (F.rand(7) * (HISTORY_SECONDS - 10)).cast("long")))
    )
    history.coalesce(1).write.mode("overwrite").json(str(ctx.paths.home / "landing" / "history"))
    catch_up(spark, ctx, LAYERS)
    return ctx


@pytest.fixture
def lakehouse(spark, filled):
    """The filled home, the session's table names on its tables (a test may point them at its own)."""
    return attached(spark, filled)


def delta_tables(home: Path) -> list[Path]:
    """Delta tables under the home's warehouse (Spark itself creates the empty warehouse folder at start)."""
    return [log.parent for log in (home / "warehouse").rglob("_delta_log")]


def _count(spark, ctx, spec) -> int:
    return spark.table(table_name(ctx, spec)).count()


# ----------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMEDRIVER).exists():
        pytest.fail(
            "chromedriver not found: the dashboard tests drive Debian's chromium; install it with "
            "apt-get install -y chromium chromium-driver (.ci/run does this)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,2100",
    ):
        options.add_argument(argument)
    if Path(CHROMIUM).exists():
        options.binary_location = CHROMIUM
    # An explicit driver path: Selenium Manager is not consulted, nothing is downloaded.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _text(browser, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return browser.find_element(By.ID, element_id).text
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def shown_total(browser) -> int | None:
    """The "transactions scored" number on the page."""
    text = _text(browser, "kpi-transactions").replace(",", "")
    return int(text) if text.isdigit() else None


def page_state(browser) -> str:
    return " | ".join(
        f"{element}: {_text(browser, element)!r}"
        for element in ("kpi-transactions", "problem", "empty-state", "freshness", "refreshed-at")
    )


def wait_for(condition, timeout: float, what: str, browser=None, interval: float = 0.5):
    """Poll ``condition`` until it is truthy; the timeouts are generous bounds for a loaded machine."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.time() > deadline:
            state = f"; the page shows {page_state(browser)}" if browser is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{state}")
        time.sleep(interval)


def charts_drawn(browser) -> bool:
    """Plotly has drawn every graph of the page (an empty one too: its title and message)."""
    from selenium.webdriver.common.by import By

    return all(browser.find_elements(By.CSS_SELECTOR, f"#{figure} .main-svg") for figure in FIGURE_IDS)


@pytest.fixture(scope="module")
def empty_page(dashboard, champion, browser, home, tmp_path_factory) -> SimpleNamespace:
    """The page on the home with a champion and no table yet, as the browser showed it."""
    assert not delta_tables(home), "the home was filled before its empty page was read"
    browser.get(dashboard.url)
    message = wait_for(lambda: _text(browser, "empty-state"), 120, "the empty state", browser)
    charts = wait_for(lambda: charts_drawn(browser), 60, "the (empty) charts")
    browser.save_screenshot(str(tmp_path_factory.mktemp("dashboard-empty") / "dashboard-empty.png"))
    return SimpleNamespace(
        message=message,
        charts=charts,
        model_in_use=_text(browser, "model-in-use"),
        source=browser.page_source,
        tables=delta_tables(home),
    )


# ----------------------------------------------------------------------------- tests


def test_dashboard_on_an_empty_home_shows_how_to_start(empty_page, home):
    message = empty_page.message
    assert "No lakehouse tables yet" in message and str(home) in message and "fraudlake run" in message
    assert "Traceback" not in empty_page.source
    assert empty_page.charts
    assert empty_page.model_in_use == "–"
    assert empty_page.tables == []  # the dashboard only reads: it created no table


def test_page_shows_the_sql_count_of_scored_transactions(lakehouse, dashboard, browser, spark, tmp_path):
    ctx = lakehouse
    expected = _count(spark, ctx, SILVER_SCORED)
    assert expected > HISTORY_ROWS * 0.9
    browser.get(dashboard.url)  # a fresh load; the open page would pick the tables up too
    wait_for(lambda: shown_total(browser) == expected, 180, f"the page to show {expected:,} transactions", browser)
    assert wait_for(lambda: charts_drawn(browser), 60, "the charts")
    assert _text(browser, "empty-state") == ""
    assert _text(browser, "model-in-use") == "fraud_detector v1"
    assert _text(browser, "kpi-alerts") == f"{_count(spark, ctx, GOLD_FRAUD_ALERTS):,}"
    assert "newest transaction scored" in _text(browser, "freshness")
    from selenium.webdriver.common.by import By

    # The figures refresh in their own callback, after the total: wait for the minutes' bars.
    bars = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, "#fig-volume .trace.bars .point"),
        120,
        "the volume figure's bars",
        browser,
    )
    assert len(bars) >= 20  # the closed minutes of the 40-minute history
    shot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def test_page_keeps_refreshing_while_a_stream_writes(lakehouse, dashboard, browser, spark, tmp_path):
    """A rate stream scores into silver while the page is open: the page's total follows silver's
    count as the stream commits, and settles on the final count once the stream stops.

    The stream is ``fraudlake run --layers bronze,silver --source rate``'s query, started in this
    process: the dashboard's JVM and this one read and write the same tables, as a run and the
    dashboard do, without a third JVM on two cores (the run itself, as its own process, is
    test_run_cli's).
    """
    ctx = lakehouse
    browser.get(dashboard.url)
    before = wait_for(lambda: shown_total(browser), 120, "a total on the page", browser)
    preflight(ctx, ("bronze", "silver"), "rate", 50)
    stream = start_pipeline(spark, ctx, ("bronze", "silver"), "rate", rate=50)
    try:
        first = wait_for(lambda: (t := shown_total(browser)) and t > before and t, 180, "the total to grow", browser)
        # The stream commits past what the page showed before it is stopped: the page's last
        # refresh below must then show a newer total than its first.
        wait_for(lambda: _count(spark, ctx, SILVER_SCORED) > first, 90, "silver to grow past the shown total")
        browser.save_screenshot(str(tmp_path / "dashboard-while-running.png"))
    except AssertionError as error:
        raise AssertionError(f"{error}\nthe dashboard said:\n" + "\n".join(dashboard.lines[-20:])) from None
    finally:
        for query in stream.queries.values():
            query.stop()
    # Once the stream has stopped, the page settles on the table's count: refreshed again.
    final = _count(spark, ctx, SILVER_SCORED)
    assert before < first < final
    wait_for(lambda: shown_total(browser) == final, 90, f"the page to show the final {final:,}", browser)


def test_snapshot_queries_agree_with_the_tables(lakehouse, spark):
    ctx = lakehouse
    snapshot = read_snapshot(spark, ctx, window_minutes=None)
    silver = spark.table(table_name(ctx, SILVER_SCORED))
    n = silver.count()
    assert snapshot.missing == ()
    assert int(snapshot.models["transactions"].sum()) == n
    assert list(snapshot.models["model_version"]) == ["1"]
    assert int(snapshot.scores["transactions"].sum()) == n  # every score in one bucket
    assert int(snapshot.quality["labelled"].sum()) == n  # simulated rows are all labelled
    gold = spark.table(table_name(ctx, GOLD_DASHBOARD_MINUTE)).agg(F.sum("tx_count"), F.sum("flagged_count")).first()
    assert (int(snapshot.volumes["tx_count"].sum()), int(snapshot.volumes["flagged_count"].sum())) == tuple(gold)
    busiest = spark.table(table_name(ctx, GOLD_USER_ACTIVITY)).agg(F.max("tx_count")).first()[0]
    assert int(snapshot.top_users["tx_count"].iloc[0]) == busiest
    assert len(snapshot.alerts) == min(20, _count(spark, ctx, GOLD_FRAUD_ALERTS))
    assert list(snapshot.alerts["alert_time"]) == sorted(snapshot.alerts["alert_time"], reverse=True)

    recent = read_snapshot(spark, ctx, window_minutes=10)  # the last 10 minutes of data
    newest = silver.agg(F.max("event_time")).first()[0]
    in_window = silver.where(F.col("event_time") >= F.lit(newest) - F.expr("INTERVAL 10 MINUTES")).count()
    assert int(recent.quality["labelled"].sum()) == in_window < n


def _plotly_bundle_inline(page: str) -> bool:
    """plotly.js is in the page itself, and no script is fetched from anywhere."""
    return "plotly.js v" in page and len(page) > 3_000_000 and not re.search(r"<script[^>]+src=", page)


def test_report_writes_one_offline_html_file(lakehouse, spark, capsys):
    ctx = lakehouse
    reports = ctx.paths.home / "reports"
    before = set(reports.glob("lakehouse-*.html")) if reports.exists() else set()
    assert main(["--home", str(ctx.paths.home), "report", "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    path = Path(summary["report"])
    assert set(reports.glob("lakehouse-*.html")) - before == {path}
    assert summary["transactions"] == _count(spark, ctx, SILVER_SCORED)
    assert summary["model_in_use"] == "fraud_detector v1"
    page = path.read_text()
    assert _plotly_bundle_inline(page)
    assert page.count("Plotly.newPlot") == 7
    assert "fraud_detector v1" in page and "Top alerts" in page
    # Quality per hour from gold.model_quality_hourly: one table row per hour and model version.
    hours = _count(spark, ctx, GOLD_MODEL_QUALITY)
    quality = page.split("Live model quality per hour", 1)[1].split("<h2>", 1)[0]
    assert hours > 0 and quality.count("<tr>") == hours + 1  # and its header


def test_report_on_an_empty_home_says_what_is_missing(spark, tmp_path, capsys):
    home = tmp_path / "empty-home"
    out = tmp_path / "report.html"
    assert main(["--home", str(home), "report", "--output", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    assert _plotly_bundle_inline(page)
    assert "not created" in page and "no scored transactions yet" in page
    assert not delta_tables(home)
