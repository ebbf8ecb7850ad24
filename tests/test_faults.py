"""Faults that production brings, reproduced on a real pipeline, each followed by ``fraudlake check``.

Here: the disk filling up while the layers write; a checkpoint file truncated and a checkpoint
folder deleted by hand; the clock jumping ahead and back. Elsewhere: a run killed with ``kill -9``, a
registry that cannot be read when silver starts, and ``maintain`` compacting and vacuuming
beside the streams (test_run_cli's kill test); the rate source's checkpoint deleted
by hand (test_any_hour); a table overwritten by mistake and restored (test_pipeline); the champion
moved while silver runs (test_follow_champion).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import functions as F

from tests.conftest import fraudlake, rate_rows_once

pytestmark = [pytest.mark.spark, pytest.mark.slow]

DISK_MB = 12
ROOM_MB = 2  # left free on the small disk: a few seconds of the layers' writes at RATE
RATE = 1000


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of DISK_MB mounted for the test (root, as .ci/run runs; the machine has tmpfs)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full test (needs root): {mounted.stderr.decode()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_up_stops_the_run_and_a_run_with_room_loses_nothing(
    spark, shared_champion, capsys, small_disk
):
    home = small_disk / "home"
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    run = ["run", "--rate", str(RATE), *registry]
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (DISK_MB - ROOM_MB) * 1024 * 1024)

    # The disk fills up under the layers' writes: the run stops with the error, not silently.
    code, _, err = fraudlake(capsys, home, *run, "--duration", "120")
    failed = err.strip().splitlines()[-1]
    assert code == 1 and failed.startswith("fraudlake: error: ") and "No space left on device" in failed, err[-3000:]
    assert "Traceback" not in failed

    # Room made, the same run again: it resumes from its checkpoints.
    ballast.unlink()
    code, _, err = fraudlake(capsys, home, *run, "--duration", "5")
    assert code == 0, err[-3000:]
    assert rate_rows_once(spark, home / "warehouse" / "bronze" / "transactions") > 0  # every row numbered, once
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0, out + err


def test_a_damaged_checkpoint_is_refused_in_one_line_and_its_reset_loses_nothing(
    spark, shared_champion, capsys, tmp_path
):
    home = tmp_path / "home"
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    run = ["run", "--rate", "200", *registry]
    assert fraudlake(capsys, home, *run, "--duration", "6")[0] == 0
    bronze = home / "warehouse" / "bronze" / "transactions"
    produced = rate_rows_once(spark, bronze)

    # The newest offsets file of the ingest query cut short (a failing disk), and gold's
    # checkpoint folder deleted by hand: each refused before Spark starts, named, with its recovery.
    checkpoints = home / "checkpoints"
    offsets = checkpoints / "bronze_rate" / "offsets"
    newest = max((p for p in offsets.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    newest.write_bytes(newest.read_bytes()[:60])
    shutil.rmtree(checkpoints / "gold_live")

    def refused(expected: str) -> None:
        code, _, err = fraudlake(capsys, home, *run, "--duration", "5")
        assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err[-3000:]
        assert err.startswith(f"fraudlake: error: the {expected}"), err

    refused(f"bronze_rate checkpoint is damaged: offsets/{newest.name} ")
    code, out, err = fraudlake(capsys, home, "reset-checkpoint", "bronze_rate")
    assert code == 0 and (checkpoints / "_set_aside").is_dir(), out + err
    refused("gold_live checkpoint is missing while gold's tables hold what it counted")
    code, out, err = fraudlake(capsys, home, "reset-checkpoint", "gold_live", *registry)
    assert code == 0 and "gold.fraud_alerts" in out, out + err

    # The documented recovery ran: the source started over, gold is recomputed from silver.
    code, _, err = fraudlake(capsys, home, *run, "--duration", "5")
    assert code == 0, err[-3000:]
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0, out + err
    # Bronze kept every row the source produced before the damage; its numbering began again at 0,
    # and silver quarantined each row it had seen as a repeat.
    numbers = (
        spark.read.format("delta")
        .load(str(bronze))
        .select(F.regexp_extract("transaction_id", r"(\d+)$", 1).cast("long").alias("n"))
    )
    assert numbers.where(F.col("n") < produced).distinct().count() == produced
    quarantine = spark.read.format("delta").load(str(home / "warehouse" / "silver" / "quarantine"))
    assert quarantine.where("quarantine_reason = 'duplicate_transaction_id'").count() > 0


def test_a_clock_that_jumps_forward_and_back_loses_nothing_and_names_the_late_rows(
    spark, shared_champion, capsys, tmp_path
):
    """The rate source stamps rows with the machine's clock. That clock is an hour ahead (the
    simulated clock set there, as a run sees a jumped host clock), then jumps back: the rows
    stamped ahead are scored and counted, and the rows after the jump back, for minutes gold has
    closed, are recorded as late, not counted twice or lost."""
    home = tmp_path / "home"
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    run = ["run", "--rate", "200", "--set", "streams.watermark_seconds=5", *registry]
    ahead = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for clock in (["--set", f"simulator.stream_start_time={ahead}"], []):
        code, _, err = fraudlake(capsys, home, *run, *clock, "--duration", "5")
        assert code == 0, err[-3000:]
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0, out + err

    warehouse = home / "warehouse"
    silver = spark.read.format("delta").load(str(warehouse / "silver" / "scored_transactions"))
    late = spark.read.format("delta").load(str(warehouse / "gold" / "late_transactions"))
    newest = silver.agg(F.max("event_time")).first()[0]
    # Every row after the jump back is an hour behind gold's newest minute: late, each recorded once.
    behind = silver.where(F.col("event_time") < F.lit(newest) - F.expr("INTERVAL 30 MINUTES"))
    jumped_back = behind.join(late.select("transaction_id"), "transaction_id")
    assert late.count() == late.select("transaction_id").distinct().count() == jumped_back.count() > 0
