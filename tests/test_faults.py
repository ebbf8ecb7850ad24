"""Faults that production brings, reproduced on a real pipeline, each followed by ``fraudlake check``.

Here: the disk filling up while the layers write. Elsewhere: a run killed with ``kill -9``, a
registry that cannot be read when silver starts, and ``maintain`` compacting and vacuuming
beside the streams (test_run_cli's kill test); a checkpoint folder deleted by hand
(test_any_hour); a table overwritten by mistake and restored (test_pipeline); the champion
moved while silver runs (test_follow_champion).
"""

from __future__ import annotations

import subprocess

import pytest

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
