"""The metrics line format and the stream cursor (pure), `metrics:` in the manifest, status's elapsed time."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from expegit.metrics_stream import (MetricsCursor, describe_latest, final_points, parse_metric_line,
                                    parse_metrics_text, parse_pattern_line, render_metric_line,
                                    render_metrics_text, split_complete)
from expegit.running import render_elapsed
from orchestra.manifest import check_manifest


def test_render_parse_roundtrip() -> None:
    points = [{"step": 10, "loss": 0.31}, {"step": 20, "loss": 0.25, "phase": "val"}]
    text = render_metrics_text(points)
    assert text.count("\n") == 2
    assert parse_metrics_text(text) == points
    assert parse_metrics_text(text.encode()) == points


def test_bad_lines_are_skipped_and_non_finite_dropped() -> None:
    assert parse_metric_line("not json") is None
    assert parse_metric_line("[1, 2]") is None
    assert parse_metric_line("") is None
    assert parse_metric_line('{"loss": NaN, "step": 3}') == {"step": 3}
    assert render_metric_line({"loss": float("inf"), "step": 1}) == '{"step": 1}\n'


def test_split_complete_keeps_a_half_written_line() -> None:
    lines, used = split_complete(b'{"a": 1}\n{"a": 2}\n{"a"')
    assert lines == [b'{"a": 1}', b'{"a": 2}'] and used == 18
    assert split_complete(b'{"a"') == ([], 0)


def test_cursor_consumes_each_line_once_across_partial_reads() -> None:
    stream = render_metrics_text([{"step": i} for i in range(5)]).encode()
    cursor = MetricsCursor()
    # reads cut at arbitrary bytes, each from the cursor's acknowledged offset, as the follower does
    for cut in (3, 11, 12, 30, len(stream)):
        cursor.feed_file(stream[cursor.file_offset:cut])
    cursor.feed_file(stream[cursor.file_offset:])  # a repeated read past the end adds nothing
    assert cursor.points == [{"step": i} for i in range(5)]
    assert cursor.file_offset == len(stream)


def test_pattern_points_from_stdout() -> None:
    pattern = re.compile(r"step=(?P<step>\d+) loss=(?P<loss>[0-9.e-]+)")
    assert parse_pattern_line("epoch 1 step=10 loss=3e-4", pattern) == {"step": 10, "loss": 0.0003}
    assert parse_pattern_line("nothing here", pattern) is None
    cursor = MetricsCursor(pattern)
    cursor.feed_stdout(b"hello\nstep=1 loss=0.5\nstep=2 lo")
    assert cursor.points == [{"step": 1, "loss": 0.5}]
    assert final_points(b'{"x": 1}\n', b"step=1 loss=0.5\n", pattern) == [{"x": 1}, {"step": 1, "loss": 0.5}]


def test_describe_latest() -> None:
    assert describe_latest([{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.123456}]) == "step=2 loss=0.1235"


def test_render_elapsed() -> None:
    assert [render_elapsed(s) for s in (5, 65, 3 * 3600 + 420, 90000)] == ["5s", "1m05s", "3h07m", "1d01h"]


@pytest.mark.parametrize("pattern, message", [
    ("'step=(\\d+'", "metrics.pattern: invalid regular expression"),
    ("'step=(\\d+)'", "metrics.pattern: needs named groups"),
])
def test_check_reports_a_bad_metrics_pattern_at_its_line(tmp_path: Path, pattern: str, message: str) -> None:
    path = tmp_path / "orchestra.yaml"
    path.write_text(f"name: t\ncommand: echo hi\nmetrics:\n  pattern: {pattern}\n")
    manifest, errors = check_manifest(path)
    assert manifest is None and len(errors) == 1
    text = str(errors[0])
    assert message in text and ":4:12:" in text, text


def test_metrics_spec_loaded(tmp_path: Path) -> None:
    path = tmp_path / "orchestra.yaml"
    path.write_text("name: t\ncommand: echo hi\nmetrics: {pattern: 'l=(?P<l>[0-9.]+)', every: 2m}\n")
    manifest, errors = check_manifest(path)
    assert not errors and manifest is not None and manifest.metrics is not None
    assert manifest.metrics.every == 120 and manifest.metrics.pattern == "l=(?P<l>[0-9.]+)"
