"""The compare view's package lists (packages.js): pure render/parse, escaping, the cap, and the page's note."""
from __future__ import annotations

from pathlib import Path

import pytest

from expegit.report import write_report
from expegit.report.demo import repeats_report
from expegit.report.packagesfile import PACKAGES_FILE, parse_packages_js, render_packages_js
from orchestra.errors import UsageError

HOSTILE_VERSION = "file:///x/</script><script>alert(1)</script><!--"


def test_render_parse_round_trip_and_script_safety() -> None:
    lists = {"c" * 40: {"numpy": "1.26.4", "évil": HOSTILE_VERSION}, "d" * 40: {}}
    text = render_packages_js(lists, left_out=3)
    assert "</script>" not in text.lower() and "<!--" not in text and "<" not in text.split("*/", 1)[1]
    assert text.isascii()
    assert parse_packages_js(text) == (lists, 3)


def test_parse_refuses_other_files() -> None:
    with pytest.raises(UsageError):
        parse_packages_js("window.ORCHESTRA_REPORT = {};")
    with pytest.raises(UsageError):
        parse_packages_js('window.ORCHESTRA_PACKAGES = {"format": "other"};')


def test_site_ships_the_lists_once_and_only_compare_loads_them(tmp_path: Path) -> None:
    data = repeats_report()
    site = write_report(data, tmp_path / "site").parent
    lists, left_out = parse_packages_js((site / PACKAGES_FILE).read_text())
    assert lists == {k: dict(v) for k, v in data.packages.items()} and left_out == 0
    assert f'<script src="{PACKAGES_FILE}">' in (site / "compare.html").read_text()
    assert PACKAGES_FILE not in (site / "executions.html").read_text()
    assert "left out" not in (site / "compare.html").read_text()


def test_page_says_when_lists_were_left_out(tmp_path: Path) -> None:
    import dataclasses

    data = dataclasses.replace(repeats_report(), packages_left_out=7)
    site = write_report(data, tmp_path / "site").parent
    assert "7 more package lists were left out" in (site / "compare.html").read_text()
