"""``--set section.key=value``: one setting overridden from the command line (how the
Databricks jobs pass their catalog and volume), validated like the YAML. No JVM."""

from __future__ import annotations

import pytest

from fraudlake.cli import build_parser, context_from, main
from fraudlake.conf.settings import Settings
from fraudlake.errors import ConfigError
from fraudlake.settings import apply_assignments


def test_values_take_the_type_of_their_setting():
    s = apply_assignments(
        Settings(),
        [
            "ingest.rate=5",
            "spark.ui_enabled=true",
            "ml.tracking_uri=databricks",
            "ml.precision_at_k=[10, 20]",
            "streams.model_uri=null",
            "simulator.scenario_mix.amount_anomaly=0.5",
            "catalog.catalog=on",  # a name, although YAML 1.1 would read it as true
        ],
    )
    assert s.ingest.rate == 5 and s.spark.ui_enabled is True
    assert s.ml.tracking_uri == "databricks" and s.ml.precision_at_k == (10, 20)
    assert s.streams.model_uri is None and s.simulator.scenario_mix.amount_anomaly == 0.5
    assert s.catalog.catalog == "on"
    assert s.simulator.seed == Settings().simulator.seed  # everything else untouched


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("catalog.catalgo=main", "--set: catalog.catalgo: unknown key"),
        ("catalogue.catalog=main", "--set: catalogue: unknown key"),
        ("ingest.rate.max=3", "--set: ingest.rate: a value, not a section ('ingest.rate.max=3')"),
    ],
)
def test_a_wrong_key_is_named(assignment, message):
    with pytest.raises(ConfigError) as info:
        apply_assignments(Settings(), [assignment])
    assert str(info.value) == message


def test_a_wrong_value_is_named_with_its_key():
    with pytest.raises(ConfigError) as info:
        apply_assignments(Settings(), ["ingest.rate=-5"])
    assert str(info.value).startswith("--set: ingest.rate: ") and "'-5'" in str(info.value)


def test_set_before_and_after_the_command_both_apply_in_order(tmp_path, monkeypatch):
    monkeypatch.delenv("FRAUDLAKE_CONF", raising=False)
    args = build_parser().parse_args(
        [
            "--set",
            "ingest.rate=7",
            "--set",
            "simulator.seed=1",
            "tables",
            "--home",
            str(tmp_path),
            "--set",
            "simulator.seed=3",
        ]
    )
    ctx = context_from(args)
    assert ctx.settings.ingest.rate == 7 and ctx.settings.simulator.seed == 3


def test_a_malformed_set_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["tables", "--set", "catalog.catalog"])
    assert info.value.code == 2
    assert "expected SECTION.KEY=VALUE" in capsys.readouterr().err


def test_set_applies_before_the_environment_check(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert main(["tables", "--home", str(tmp_path), "--set", "environment=databricks"]) == 3
    assert "targets Databricks" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()  # refused before Spark
