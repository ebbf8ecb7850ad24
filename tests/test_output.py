"""Rendering for people and machines. No JVM."""

from __future__ import annotations

import json

import pandas as pd

from fraudlake.output import render_frame, render_mapping


def test_json_rows_keep_types_and_iso_timestamps():
    frame = pd.DataFrame({"n": [3], "at": [pd.Timestamp("2026-01-01T10:00:00")], "name": ["x"]})
    [row] = json.loads(render_frame(frame, "json"))
    assert row == {"n": 3, "at": "2026-01-01T10:00:00.000000", "name": "x"}


def test_csv_has_a_header_and_no_index():
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    assert render_frame(frame, "csv").splitlines() == ["a,b", "1,x", "2,y"]


def test_empty_results_say_so_in_tables_and_stay_valid_json():
    frame = pd.DataFrame({"a": []})
    assert render_frame(frame, "table") == "(no rows)"
    assert json.loads(render_frame(frame, "json")) == []


def test_mapping_renders_aligned_for_people_and_as_an_object_for_machines():
    summary = {"rows": 30000, "fraud_share": 0.0151, "scenarios": {"a": 1}}
    assert json.loads(render_mapping(summary, "json")) == summary
    text = render_mapping(summary, "table").splitlines()
    assert text[0] == "rows         30,000"
    assert text[2] == "scenarios    a=1"


def test_lists_render_inline_and_commands_one_per_line_in_their_column():
    text = render_mapping({"versions": ["v1", "v2"], "next": ["fraudlake tables", "fraudlake models"]}, "table")
    assert text.splitlines() == ["versions  v1, v2", "next      fraudlake tables", "          fraudlake models"]
