"""The background processes fraudlake starts on this machine (a Kafka broker, a Spark
standalone cluster): their pid files, whether they answer, and stopping them."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def port_open(host: str, port: int) -> bool:
    """Whether something accepts connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def running_pid(pid_file: Path) -> int | None:
    """The process id in ``pid_file`` while that process runs, else None."""
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it when this process started it (the tests do)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except OSError:
        return True
    return False


def stop_process(pid: int, timeout: float = 30.0, group: bool = False) -> None:
    """SIGTERM to ``pid`` (its process group with ``group``), SIGKILL if it still runs after ``timeout``."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, signal.SIGTERM)
    except OSError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return
        time.sleep(0.2)
    try:
        kill(pid, signal.SIGKILL)
    except OSError:
        pass
