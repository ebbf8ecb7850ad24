"""A Spark standalone cluster on this machine, from the installed pyspark's own launcher
(``bin/spark-class``): a master and workers in JVMs of their own, for ``fraudlake run
--master spark://HOST:PORT`` (``fraudlake cluster start|stop|status``).

Executors then run in the workers' processes, not in the driver's: what a Databricks or
self-run cluster does. On one machine every executor sees the home's checkpoints, tables and
model artifacts at the same paths, and the Python workers run fraudlake's interpreter
(``spark.pyspark.python``); on several machines those paths must be shared storage.
Pid files, logs and the workers' scratch space live under ``HOME/cluster``.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fraudlake.errors import EnvironmentProblem, FraudlakeError
from fraudlake.processes import port_open, running_pid, stop_process

START_SECONDS = 90.0
MASTER = "org.apache.spark.deploy.master.Master"
WORKER = "org.apache.spark.deploy.worker.Worker"


@dataclass(frozen=True)
class Cluster:
    """Where a home's cluster lives and listens."""

    folder: Path  # HOME/cluster
    host: str = "127.0.0.1"
    port: int = 7077
    web_port: int = 8080

    @property
    def url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def pid_files(self) -> list[Path]:
        """The master's pid file first, then each worker's."""
        return sorted(self.folder.glob("*.pid"), key=lambda path: (path.stem != "master", path.stem))

    def pids(self) -> dict[str, int]:
        """Running processes by name (master, worker-1, ...)."""
        running = {path.stem: running_pid(path) for path in self.pid_files()}
        return {name: pid for name, pid in running.items() if pid is not None}

    def listening(self) -> bool:
        return port_open(self.host, self.port)


def spark_class() -> Path:
    """``bin/spark-class`` of the installed pyspark (its launcher builds the JVM's class path)."""
    try:
        import pyspark
    except ImportError:
        raise EnvironmentProblem("pyspark is not installed: pip install 'fraudlake[local]'") from None
    launcher = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not launcher.exists():
        raise EnvironmentProblem(f"no {launcher}: this pyspark cannot start a standalone cluster")
    return launcher


def _launch(cluster: Cluster, name: str, args: list[str]) -> int:
    env = {**os.environ, "SPARK_NO_DAEMONIZE": "1", "SPARK_LOG_DIR": str(cluster.folder)}
    env.pop("SPARK_HOME", None)  # the launcher finds pyspark's own
    with (cluster.folder / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            [str(spark_class()), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # outlives the command that started it
        )
    (cluster.folder / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def _workers_registered(cluster: Cluster) -> int:
    """Workers the master lists as ALIVE (its web UI's JSON)."""
    import json
    from urllib.request import urlopen

    try:
        with urlopen(f"http://{cluster.host}:{cluster.web_port}/json/", timeout=2) as response:
            state = json.load(response)
    except OSError:
        return 0
    return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


def start(
    cluster: Cluster, workers: int = 2, cores: int = 1, memory: str = "2g", timeout: float = START_SECONDS
) -> str:
    """Start the master and ``workers`` workers (``cores`` and ``memory`` each) unless they run;
    returns the master URL once every worker has registered."""
    if cluster.pids():
        if _workers_registered(cluster) >= 1:
            return cluster.url
        stop(cluster)
    if cluster.listening():
        raise FraudlakeError(f"something else listens on {cluster.host}:{cluster.port}: stop it or choose --port")
    cluster.folder.mkdir(parents=True, exist_ok=True)
    _launch(
        cluster,
        "master",
        [MASTER, "--host", cluster.host, "--port", str(cluster.port), "--webui-port", str(cluster.web_port)],
    )
    for number in range(1, workers + 1):
        scratch = cluster.folder / f"worker-{number}"
        scratch.mkdir(exist_ok=True)
        _launch(
            cluster,
            f"worker-{number}",
            [WORKER, cluster.url, "--host", cluster.host, "--cores", str(cores), "--memory", memory]
            + ["--work-dir", str(scratch), "--webui-port", "0"],
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _workers_registered(cluster) >= workers:
            return cluster.url
        if len(cluster.pids()) < workers + 1:
            stop(cluster)
            raise FraudlakeError(f"the cluster did not start: see the logs in {cluster.folder}")
        time.sleep(0.5)
    stop(cluster)
    raise FraudlakeError(
        f"{workers} workers did not register with {cluster.url} within {timeout:g} s: see {cluster.folder}"
    )


def stop(cluster: Cluster, timeout: float = 30.0) -> list[str]:
    """Stop the workers, then the master (SIGTERM to the launcher and the JVM it started, SIGKILL
    after ``timeout``); returns what was stopped."""
    running = cluster.pids()
    order = [name for name in running if name != "master"] + [name for name in running if name == "master"]
    for name in order:
        stop_process(running[name], timeout, group=True)
        (cluster.folder / f"{name}.pid").unlink(missing_ok=True)
    return order
