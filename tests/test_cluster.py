"""``fraudlake run --master spark://…`` on a real Spark standalone cluster on this machine (a
master and two workers, started by ``fraudlake.standalone`` as ``fraudlake cluster start`` does):
every layer runs with executors in the workers' JVMs, not the driver's, and the lakehouse's
invariants hold."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fraudlake import standalone
from tests.conftest import fraudlake, free_port

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def _executors() -> dict[int, int]:
    """Executor JVMs on this machine: pid → parent pid."""
    found = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
    executors = {}
    for pid in map(int, found.stdout.split()):
        try:
            executors[pid] = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:  # ended meanwhile
            continue
    return executors


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = standalone.Cluster(tmp_path_factory.mktemp("cluster") / "cluster", port=free_port(), web_port=free_port())
    standalone.start(cluster, workers=2, cores=1, memory="1g")
    yield cluster
    standalone.stop(cluster)


def test_every_layer_runs_on_executors_of_the_workers_and_the_invariants_hold(
    spark, shared_champion, capsys, tmp_path, cluster
):
    home = tmp_path / "home"
    registry = [f"--set=ml.{key}={value}" for key, value in shared_champion.items()]
    workers = {pid for name, pid in cluster.pids().items() if name != "master"}
    before = set(_executors())
    driver = subprocess.Popen(
        [sys.executable, "-m", "fraudlake.cli", "--home", str(home), "run", "--master", cluster.url]
        + ["--rate", "100", "--duration", "8", *registry],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: dict[int, int] = {}
    while driver.poll() is None:
        seen.update({pid: parent for pid, parent in _executors().items() if pid not in before})
        time.sleep(1)
    out, err = driver.communicate()
    assert driver.returncode == 0, err[-3000:]

    # Two executors, one per worker, each a JVM the worker started: processes of their own, not
    # the driver's (the run's process, or the JVM it started).
    assert len(seen) == 2 and set(seen.values()) == workers, (seen, workers)
    assert driver.pid not in seen and driver.pid not in seen.values(), seen
    # What they wrote holds every invariant (bronze = silver + quarantine, lineage, once).
    code, out, err = fraudlake(capsys, home, "check", "--full", *registry)
    assert code == 0 and "rate: " in out, out + err
