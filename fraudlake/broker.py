"""A local Apache Kafka broker (KRaft mode, no ZooKeeper, no Docker) for ``--source kafka``:
``fraudlake kafka start|stop|status``, and what the tests start.

The broker's jars come from Maven Central (``org.apache.kafka:kafka_2.13`` with its
dependencies, fetched once with Maven into a cache folder); its data, log and process id
live under ``HOME/kafka``. One broker per home, listening where ``ingest.kafka.bootstrap_servers``
points (its controller on the next port). For a real cluster, point ``bootstrap_servers`` at it
instead and start nothing here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

from fraudlake.errors import EnvironmentProblem, FraudlakeError
from fraudlake.output import note
from fraudlake.processes import port_open, running_pid, stop_process
from fraudlake.spark import SCALA_BINARY, find_java

KAFKA_VERSION = "4.1.1"
START_SECONDS = 90.0

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>fraudlake</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


@dataclass(frozen=True)
class Broker:
    """Where a home's broker lives and listens."""

    folder: Path  # HOME/kafka
    host: str
    port: int

    @classmethod
    def of(cls, home: Path, bootstrap_servers: str) -> Broker:
        first = bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        if not host or not port.isdigit():
            raise FraudlakeError(f"ingest.kafka.bootstrap_servers is not host:port: {bootstrap_servers!r}")
        return cls(Path(home) / "kafka", host, int(port))

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.folder / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "broker.log"

    def pid(self) -> int | None:
        """The broker's process id while it runs, else None."""
        return running_pid(self.pid_file)

    def listening(self) -> bool:
        return port_open(self.host, self.port)


def libs_folder() -> Path:
    """The cached jars of the broker's version (``$XDG_CACHE_HOME/fraudlake``, else ``~/.cache/fraudlake``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fraudlake" / f"kafka_{SCALA_BINARY}-{KAFKA_VERSION}" / "libs"


def fetch_libs() -> Path:
    """The broker's jars, fetched with Maven from Maven Central the first time (Maven's ``~/.m2`` first)."""
    libs = libs_folder()
    if (libs / f"kafka_{SCALA_BINARY}-{KAFKA_VERSION}.jar").exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise EnvironmentProblem(
            "the Kafka broker's jars come from Maven Central through Maven: install it (e.g. apt-get install maven)"
        )
    note(f"fetching org.apache.kafka:kafka_{SCALA_BINARY}:{KAFKA_VERSION} and its dependencies (first start only)...")
    build = libs.parent / "build"
    build.mkdir(parents=True, exist_ok=True)
    (build / "pom.xml").write_text(_POM.format(scala=SCALA_BINARY, version=KAFKA_VERSION))
    partial = libs.with_name("libs.partial")
    shutil.rmtree(partial, ignore_errors=True)
    fetched = subprocess.run(
        [mvn, "-q", "-B", "-f", str(build / "pom.xml"), "dependency:copy-dependencies", f"-DoutputDirectory={partial}"],
        capture_output=True,
        text=True,
    )
    if fetched.returncode != 0:
        raise EnvironmentProblem(f"Maven could not fetch the Kafka broker: {(fetched.stdout + fetched.stderr)[-800:]}")
    partial.rename(libs)
    return libs


def _java() -> str:
    java = find_java()
    if java is None:
        raise EnvironmentProblem("Java was not found: install a JDK 17 or 21 or set JAVA_HOME")
    return java


def _properties(broker: Broker) -> str:
    controller = f"{broker.host}:{broker.port + 1}"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{controller}",
            f"listeners=PLAINTEXT://{broker.address},CONTROLLER://{controller}",
            f"advertised.listeners=PLAINTEXT://{broker.address}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={broker.folder / 'data'}",
            "num.partitions=2",  # a new topic: two partitions, one per core of a small machine
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def start(broker: Broker, timeout: float = START_SECONDS) -> int:
    """Start the broker unless it runs; returns its process id once it accepts connections."""
    running = broker.pid()
    if running is not None:
        return running
    if broker.listening():
        raise FraudlakeError(
            f"something else listens on {broker.address}: stop it or set ingest.kafka.bootstrap_servers"
        )
    libs, java = fetch_libs(), _java()
    classpath = f"{libs}/*"
    broker.folder.mkdir(parents=True, exist_ok=True)
    config = broker.folder / "server.properties"
    config.write_text(_properties(broker))
    if not (broker.folder / "data" / "meta.properties").exists():
        cluster_id = urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formatted = subprocess.run(
            [java, "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config)],
            capture_output=True,
            text=True,
        )
        if formatted.returncode != 0:
            raise FraudlakeError(f"the broker's storage could not be formatted: {formatted.stderr[-800:]}")
    with broker.log_file.open("ab") as log:
        process = subprocess.Popen(
            [java, "-Xmx512m", "-XX:+UseSerialGC", "-cp", classpath, "kafka.Kafka", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command that started it
        )
    broker.pid_file.write_text(str(process.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise FraudlakeError(f"the Kafka broker exited with {process.returncode}; see {broker.log_file}")
        if broker.listening():
            return process.pid
        time.sleep(0.3)
    process.kill()
    raise FraudlakeError(
        f"the Kafka broker did not listen on {broker.address} within {timeout:g} s; see {broker.log_file}"
    )


def stop(broker: Broker, timeout: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL after ``timeout``); False if none ran."""
    pid = broker.pid()
    if pid is None:
        return False
    stop_process(pid, timeout)
    broker.pid_file.unlink(missing_ok=True)
    return True
