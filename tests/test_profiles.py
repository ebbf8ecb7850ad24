"""Stream profiles: presets for intervals and batch sizes, explicit settings winning. No JVM."""

from __future__ import annotations

import pytest

from fraudlake.conf.settings import Settings
from fraudlake.errors import ConfigError
from fraudlake.settings import Context, apply_assignments, load_settings, parse_settings


def _throughput() -> Settings:
    """What choosing the throughput profile, and nothing else, gives."""
    return parse_settings({"profile": "throughput"})


def _stream_values(settings: Settings) -> dict[str, float]:
    return {
        "bronze": settings.ingest.trigger_seconds,
        "silver": settings.streams.silver_trigger_seconds,
        "gold": settings.streams.gold_trigger_seconds,
    }


def test_latency_is_the_default_and_batches_more_often_than_throughput():
    latency, throughput = Settings(), _throughput()
    assert latency.profile == "latency"
    fast, slow = _stream_values(latency), _stream_values(throughput)
    assert all(fast[layer] < slow[layer] for layer in fast), (fast, slow)
    assert throughput.streams.silver_max_files_per_trigger > latency.streams.silver_max_files_per_trigger
    assert throughput.ingest.max_files_per_trigger > latency.ingest.max_files_per_trigger


def test_a_value_set_in_the_conf_wins_over_its_profile(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("profile: throughput\nstreams:\n  gold_trigger_seconds: 12\n")
    settings = load_settings(str(conf))
    assert settings.streams.gold_trigger_seconds == 12
    assert settings.streams.silver_trigger_seconds == _throughput().streams.silver_trigger_seconds
    assert settings.explicit_stream_keys() == {"streams.gold_trigger_seconds"}


def test_switching_profile_with_set_keeps_explicit_values_and_moves_the_rest(tmp_path):
    # --set re-validates a dump of the loaded settings: values the first profile filled in
    # must follow the new profile, values the conf set must not.
    conf = tmp_path / "c.yaml"
    conf.write_text("ingest:\n  trigger_seconds: 2\n")
    ctx = Context.load(str(conf), str(tmp_path), assignments=["profile=throughput"])
    assert ctx.settings.ingest.trigger_seconds == 2
    assert _stream_values(ctx.settings) == {**_stream_values(_throughput()), "bronze": 2}


def test_a_set_value_wins_over_the_profile_in_either_order():
    for assignments in (
        ["profile=throughput", "streams.gold_trigger_seconds=7"],
        ["streams.gold_trigger_seconds=7", "profile=throughput"],
    ):
        settings = apply_assignments(Settings(), assignments)
        assert settings.streams.gold_trigger_seconds == 7, assignments
        assert settings.ingest.trigger_seconds == _throughput().ingest.trigger_seconds


def test_other_overrides_keep_following_the_profile():
    settings = apply_assignments(_throughput(), ["ingest.rate=50"])
    assert settings.ingest.rate == 50
    assert _stream_values(settings) == _stream_values(_throughput())
    assert settings.explicit_stream_keys() == frozenset()


def test_an_unknown_profile_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError) as info:
        parse_settings({"profile": "fast"}, "my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml: profile: ")
    assert "'latency'" in message and "'throughput'" in message and "'fast'" in message
    assert "\n" not in message


def test_the_packaged_confs_leave_the_presets_to_the_profile():
    # A preset key pinned in the shipped conf would make --profile silently change nothing.
    for name in ("local", "databricks"):
        assert load_settings(name).explicit_stream_keys() == frozenset(), name


def test_a_section_built_in_code_keeps_only_what_it_set():
    from fraudlake.conf.settings import IngestSettings

    settings = Settings(profile="throughput", ingest=IngestSettings(rate=9))
    assert settings.ingest.rate == 9
    assert settings.ingest.trigger_seconds == _throughput().ingest.trigger_seconds


def _run_args(*args: str):
    from fraudlake.cli import build_parser

    return build_parser().parse_args(["--conf", "local", "--home", "/tmp/unused-home", *args])


def test_run_and_demo_take_the_profile_and_set_values_still_win():
    from fraudlake.cli import context_from

    ctx = context_from(_run_args("run", "--profile", "throughput", "--set", "streams.gold_trigger_seconds=7"))
    assert ctx.settings.profile == "throughput"
    assert ctx.settings.streams.gold_trigger_seconds == 7
    assert ctx.settings.ingest.trigger_seconds == _throughput().ingest.trigger_seconds
    assert context_from(_run_args("demo", "--profile", "throughput")).settings.profile == "throughput"
    assert context_from(_run_args("run")).settings.profile == "latency"


def test_an_unknown_profile_on_the_command_line_is_bad_usage_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as info:
        _run_args("run", "--profile", "fast")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--profile: invalid choice: 'fast'" in err and "latency" in err and "throughput" in err


def test_the_start_message_names_the_profile_and_marks_what_conf_set():
    from fraudlake.orchestration.pipeline import LAYERS, describe_profile

    settings = parse_settings({"profile": "throughput", "streams": {"gold_trigger_seconds": 12}})
    # Bronze and silver run as one query, on bronze's interval; silver alone has its own.
    assert (
        describe_profile(settings, LAYERS)
        == "profile throughput: micro-batches every bronze+silver 5 s, gold 12 s (set)"
    )
    assert describe_profile(settings, ("silver",)) == "profile throughput: micro-batches every silver 5 s"
