"""The bronze rate stream as users run it: separate processes, clean stops, kill -9, restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from fraudlake.bronze.ingest import claim_rate_checkpoint
from tests.conftest import fraudlake, java_that_records_its_starts, make_context, run_cli

pytestmark = [pytest.mark.spark, pytest.mark.slow]

RATE = 500


def _commits(table: Path) -> int:
    return len(list((table / "_delta_log").glob("*.json")))


def _assert_contiguous_ids(spark, table: Path) -> int:
    """No duplicate and no missing id: the values behind the ids are exactly 0..n-1."""
    bronze = spark.read.format("delta").load(str(table))
    values = bronze.select(F.regexp_extract("transaction_id", r"tx-(\d+)", 1).cast("long").alias("v"))
    stats = values.agg(
        F.count("*").alias("n"), F.countDistinct("v").alias("d"), F.min("v").alias("lo"), F.max("v").alias("hi")
    ).first()
    assert stats["n"] == stats["d"], f"duplicates: {stats}"
    assert (stats["lo"], stats["hi"]) == (0, stats["n"] - 1), f"gaps: {stats}"
    return stats["n"]


def test_stop_kill_and_restart_lose_nothing_and_duplicate_nothing(spark, capsys, tmp_path):
    home = tmp_path / "home"
    table = home / "warehouse" / "bronze" / "transactions"
    common = ["ingest", "--source", "rate", "--rate", str(RATE), "--master", "local[2]"]

    # 1. A first run killed with SIGKILL (the whole process group: Python and its JVM) mid-stream.
    env = {**os.environ, "FRAUDLAKE_HOME": str(home)}
    victim = subprocess.Popen(
        [sys.executable, "-m", "fraudlake.cli", *common],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while _commits(table) < 4 and time.time() < deadline:  # the table's creation, then three batches
        time.sleep(0.2)
    assert _commits(table) >= 4, "the killed run never wrote"
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    after_kill = _assert_contiguous_ids(spark, table)

    # 2. A timed restart (in this process: another JVM than the one killed): resumes from the
    # checkpoint, replays the interrupted batch once, stops cleanly.
    code, out, err = fraudlake(capsys, home, *common, "--duration", "8", "--format", "json")
    assert code == 0, err[-4000:]
    summary = json.loads(out)
    # A batch that started as the stop came may commit before it is interrupted: the
    # table can hold more than the progress reports counted, never less.
    assert summary["table_rows"] >= summary["rows"] > 0
    # Progress as JSON events on stderr (--format json), one per interval.
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e["event"] == "progress" for e in events), err
    after_restart = _assert_contiguous_ids(spark, table)
    assert after_restart > after_kill > 0

    # 3. A reader finds the table by its name in the home with SQL.
    code, out, err = fraudlake(
        capsys,
        home,
        "sql",
        "SELECT count(*) AS n, count(DISTINCT transaction_id) AS d FROM spark_catalog.bronze.transactions",
        "--format",
        "json",
    )
    assert code == 0, err
    [row] = json.loads(out)
    assert row == {"n": after_restart, "d": after_restart}


def test_a_different_rate_on_the_same_checkpoint_is_refused_before_spark_starts(tmp_path):
    home = tmp_path / "home"
    claim_rate_checkpoint(make_context(home), 50)  # what a first `ingest --rate 50` records
    (record,) = home.rglob("*.source.json")
    recorded = record.read_text()
    # A java that records every start: the refusal must come before Spark launches one.
    java, starts = java_that_records_its_starts(tmp_path)
    for command in (["ingest"], ["run", "--layers", "bronze"]):
        result = run_cli(
            *command, "--source", "rate", "--rate", "60", "--duration", "3", home=home, env=java, check=False
        )
        assert result.returncode == 1
        assert "'rate': 50" in result.stderr and "resume it with the same values" in result.stderr
        assert "Traceback" not in result.stderr
        assert not starts.exists(), f"{command[0]} started a JVM before refusing: {starts.read_text()}"
        # Under the home only the record, unchanged: no Spark log, warehouse or metastore.
        assert sorted(home.rglob("*")) == [record.parent, record] and record.read_text() == recorded

    # The same java does see a start: the rate the checkpoint began with gets past the check.
    accepted = run_cli(
        "ingest", "--source", "rate", "--rate", "50", "--duration", "3", home=home, env=java, check=False
    )
    assert accepted.returncode != 0 and starts.exists(), accepted.stderr
