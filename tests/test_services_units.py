"""The local services' pure parts, without a JVM: where a broker listens, the topic names conf
accepts, and stopping a background process for good."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from conf.settings import KafkaSettings
from fraudlake.broker import Broker
from fraudlake.errors import FraudlakeError
from fraudlake.processes import port_open, running_pid, stop_process


def test_the_broker_listens_where_the_first_bootstrap_server_points(tmp_path):
    broker = Broker.of(tmp_path, "127.0.0.1:19092,other:9092")
    assert (broker.host, broker.port, broker.folder) == ("127.0.0.1", 19092, tmp_path / "kafka")


@pytest.mark.parametrize("servers", ["localhost", "localhost:port", ":9092"])
def test_a_bootstrap_server_without_host_and_port_is_refused_by_name(tmp_path, servers):
    with pytest.raises(FraudlakeError, match="bootstrap_servers is not host:port"):
        Broker.of(tmp_path, servers)


@pytest.mark.parametrize("topic", ["fraud:tx", "a b", "", "ü"])
def test_conf_refuses_a_topic_name_kafka_would(topic):
    with pytest.raises(ValidationError, match="not a Kafka topic name"):
        KafkaSettings(topic=topic)


def test_a_port_is_open_only_while_something_listens():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", port)


def test_a_stopped_process_is_gone_and_its_pid_file_says_so(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pid_file = tmp_path / "child.pid"
    pid_file.write_text(str(child.pid))
    assert running_pid(pid_file) == child.pid
    stop_process(child.pid, timeout=10)
    assert running_pid(pid_file) is None and child.poll() is not None


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    child.stdout.readline()  # its handler is set
    stop_process(child.pid, timeout=0.5)
    assert child.wait(5) == -9


def test_no_pid_file_or_garbage_in_it_means_not_running(tmp_path):
    assert running_pid(tmp_path / "missing.pid") is None
    (tmp_path / "garbage.pid").write_text("not a pid")
    assert running_pid(Path(tmp_path / "garbage.pid")) is None
