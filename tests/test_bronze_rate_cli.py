"""The bronze rate stream's checkpoint as users meet it: a different rate on it is refused before
Spark starts. (A run killed with kill -9 and restarted, bronze's ids without gap or duplicate,
is test_run_cli's.)"""

from __future__ import annotations

import pytest

from fraudlake.bronze.ingest import claim_rate_checkpoint
from tests.conftest import java_that_records_its_starts, make_context, run_cli

pytestmark = [pytest.mark.spark, pytest.mark.slow]


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
