"""Settings: strict validation, one clear line for a typo, conf and home resolution. No JVM."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from fraudlake.conf.settings import Settings
from fraudlake.errors import ConfigError
from fraudlake.settings import (
    Context,
    Paths,
    load_settings,
    packaged_conf,
    parse_settings,
    resolve_conf_path,
    resolve_home,
)


def test_packaged_local_conf_matches_the_model_defaults():
    # local.yaml documents every default; drifting apart would make the docs lie.
    assert load_settings("local") == Settings()


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.simulator.seed = 1  # type: ignore[misc]


def test_unknown_key_names_the_dotted_key():
    with pytest.raises(ConfigError) as info:
        parse_settings({"simulator": {"fraud_rat": 0.1}}, "my.yaml")
    assert str(info.value) == "my.yaml: simulator.fraud_rat: unknown key"


def test_bad_value_names_the_key_and_the_value():
    with pytest.raises(ConfigError) as info:
        parse_settings({"ingest": {"rate": -5}}, "my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: ingest.rate: ")
    assert "-5" in message and "\n" not in message


def test_several_problems_stay_on_one_line():
    with pytest.raises(ConfigError) as info:
        parse_settings({"spark": {"masterr": "x"}, "simulator": {"fraud_rate": 2}}, "c.yaml")
    message = str(info.value)
    assert "spark.masterr: unknown key" in message and "simulator.fraud_rate" in message
    assert "\n" not in message


def test_yaml_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_settings(str(path))


def test_broken_yaml_is_reported_with_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("spark:\n  master: [local\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(str(path))


def test_missing_conf_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read conf"):
        load_settings(str(tmp_path / "nope.yaml"))


def test_conf_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("FRAUDLAKE_CONF", raising=False)
    assert resolve_conf_path(None) == packaged_conf("local")
    monkeypatch.setenv("FRAUDLAKE_CONF", str(tmp_path / "env.yaml"))
    assert resolve_conf_path(None) == tmp_path / "env.yaml"
    assert resolve_conf_path(str(tmp_path / "flag.yaml")) == tmp_path / "flag.yaml"
    assert resolve_conf_path("local") == packaged_conf("local")


def test_home_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("FRAUDLAKE_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_home(None) == tmp_path / ".fraudlake"
    monkeypatch.setenv("FRAUDLAKE_HOME", str(tmp_path / "env-home"))
    assert resolve_home(None) == tmp_path / "env-home"
    assert resolve_home(str(tmp_path / "flag-home")) == tmp_path / "flag-home"


def test_relative_storage_lives_under_home_and_absolute_is_kept(tmp_path):
    settings = parse_settings({"storage": {"checkpoints": "/Volumes/main/fraud/checkpoints"}})
    paths = Paths.of(settings, tmp_path)
    assert paths.warehouse == str(tmp_path / "warehouse")
    assert paths.checkpoints == "/Volumes/main/fraud/checkpoints"
    assert paths.checkpoint("bronze_rate") == "/Volumes/main/fraud/checkpoints/bronze_rate"


def test_with_settings_validates_overrides(tmp_path):
    ctx = Context.load("local", str(tmp_path))
    assert ctx.with_settings(simulator={"seed": 7}).settings.simulator.seed == 7
    with pytest.raises(ConfigError, match="simulator.fraud_rate"):
        ctx.with_settings(simulator={"fraud_rate": 0.9})


def test_cli_bad_conf_key_exits_2_with_one_line(tmp_path):
    conf = tmp_path / "typo.yaml"
    conf.write_text("spark:\n  shuffle_partitons: 4\n")
    result = subprocess.run(
        [sys.executable, "-m", "fraudlake.cli", "--conf", str(conf), "tables"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == [f"fraudlake: error: {conf}: spark.shuffle_partitons: unknown key"]
    assert result.stdout == ""


def test_cli_conf_after_the_subcommand_works_too(tmp_path):
    conf = tmp_path / "typo.yaml"
    conf.write_text("ingest:\n  rate: fast\n")
    from fraudlake.cli import main

    assert main(["tables", "--conf", str(conf), "--home", str(tmp_path)]) == 2


def test_an_unknown_environment_name_is_a_conf_error():
    with pytest.raises(ConfigError, match="cannot read conf .*staging.yaml"):
        load_settings("staging")
