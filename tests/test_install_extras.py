"""What ``pip install fraudlake`` without extras gives: the CLI's help for every command, no
pyspark and no Dash needed; the live dashboard says which extra it needs. No JVM.

The interpreter below cannot import ``pyspark`` or ``dash`` (their ``sys.modules`` entries
are None, which makes ``import`` fail as for a package that is not installed).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

WITHOUT_EXTRAS = """
import sys
for name in ("pyspark", "dash", "delta"):
    sys.modules[name] = None
from fraudlake.cli import build_parser, main
if sys.argv[1] == "--each-command":
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for command in commands:
        try:
            main([command, "--help"])
        except SystemExit as stop:
            assert stop.code == 0, (command, stop.code)
    print("commands:", " ".join(commands))
else:
    sys.exit(main(sys.argv[1:]))
"""


def without_extras(*args: str, home) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "FRAUDLAKE_HOME": str(home), "HOME": str(home)},
    )


def test_every_command_shows_its_help_without_spark_or_dash(tmp_path):
    done = without_extras("--each-command", home=tmp_path)
    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("commands:")[1].split()
    assert {"run", "demo", "dashboard", "report", "audit", "train"} <= set(commands)


def test_the_dashboard_names_the_extra_it_needs(tmp_path):
    done = without_extras("dashboard", "--port", "0", home=tmp_path)
    assert done.returncode == 3  # an environment problem, as a missing pyspark is
    assert "fraudlake[dashboard]" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "warehouse").exists()  # failed before any Spark session


@pytest.mark.parametrize(
    "command",
    [
        ["run", "--layers", "bronze", "--duration", "5"],  # silver would first ask for a model
        ["ingest", "--duration", "5"],
        ["demo", "--duration", "5"],
        ["generate", "--output", "out", "--samples", "10"],
        ["tables"],
        ["sql", "SELECT 1"],
        ["train", "--samples", "100"],
        ["audit", "history", "silver.scored_transactions"],
        ["rescore", "--model", "models:/fraud_detector/1", "--since", "2026-01-01T00:00:00"],
        ["maintain"],
        ["report"],
    ],
    ids=lambda command: command[0] if command[0] != "audit" else "audit history",
)
def test_a_spark_command_without_pyspark_says_which_extra_it_needs(tmp_path, command):
    done = without_extras(*command, home=tmp_path)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr, done.stderr
    assert "fraudlake[local]" in done.stderr.strip().splitlines()[-1]
