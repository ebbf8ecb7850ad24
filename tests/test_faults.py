"""Faults that production brings, reproduced on a real pipeline, each followed by ``fraudlake check``.

Here: the disk filling up while the layers write. Elsewhere: a run killed with ``kill -9``, a
registry that cannot be read when silver starts, and ``maintain`` compacting and vacuuming
beside the streams (test_run_cli's kill test); a checkpoint folder deleted by hand
(test_any_hour); a table overwritten by mistake and restored (test_pipeline); the champion
moved while silver runs (test_follow_champion).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.conftest import fraudlake

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


def _rate_ids(spark, home: Path) -> tuple[int, int, int]:
    """Bronze's rate rows: count, distinct numbers, highest number + 1 (equal when nothing is missing)."""
    bronze = spark.read.format("delta").load(str(home / "warehouse" / "bronze" / "transactions"))
    values = bronze.select(F.regexp_extract("transaction_id", r"(\d+)$", 1).cast("long").alias("v"))
    row = values.agg(F.count("*"), F.countDistinct("v"), F.max("v") + 1).first()
    return row[0], row[1], row[2]


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
    rows, distinct, numbered = _rate_ids(spark, home)
    assert rows == distinct == numbered > 0  # every row the source numbered, once
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0, out + err
