"""The one duration parser: Slurm's clock notation with Slurm's meanings, and the unit notation."""
from __future__ import annotations

import pytest

from orchestra.durations import parse_duration, parse_slurm_time, render_slurm_time

CLOCK = [  # Slurm's meanings (sbatch(1), --time); tests/integration/test_durations_sbatch.py asks sbatch itself
    ("30:00", 1800),            # MM:SS: 30 minutes, not 30 hours
    ("05:30", 330),
    ("90:75", 90 * 60 + 75),    # fields after the first may overflow, as sbatch allows
    ("04:00:00", 14400),        # HH:MM:SS
    ("1:30:00", 5400),
    ("1-12", 129600),           # D-HH
    ("2-06:30", 196200),        # D-HH:MM
    ("1-02:30:15", 95415),      # D-HH:MM:SS
    ("0-00:00:30", 30),
]
UNITS = [("90", 90), ("90.5", 90.5), (45, 45), (2.5, 2.5), ("90s", 90), ("30m", 1800), ("2h", 7200),
         ("1h30m", 5400), ("1d", 86400), ("1.5h", 5400), (" 2H ", 7200), ("1d 2h", 93600)]


@pytest.mark.parametrize("text,seconds", CLOCK + UNITS)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 parsecs", "-3", "0", "00:00", "0-0", "1h and then", "1:2:3:4",
                                  "1-2-3", ":30", "30:", "1-:30", True, float("inf"), float("nan"), -1, None])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(text)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_rejection_says_what_is_accepted() -> None:
    with pytest.raises(ValueError, match=r"'soon' is not a duration: write .*30m.*D-HH:MM:SS \(30:00 is 30 minutes\)"):
        parse_duration("soon")


@pytest.mark.parametrize("seconds,text", [(1800, "00:30:00"), (5400, "01:30:00"), (90061, "1-01:01:01"),
                                          (0.2, "00:00:01"), (59.5, "00:01:00"), (86400, "1-00:00:00"),
                                          (100 * 86400, "100-00:00:00")])
def test_render_slurm_time(seconds: float, text: str) -> None:
    assert render_slurm_time(seconds) == text


@pytest.mark.parametrize("text,seconds", CLOCK + UNITS)
def test_render_then_parse_is_the_rounded_up_duration(text: str | float, seconds: float) -> None:
    rendered = render_slurm_time(parse_duration(text))
    assert ":" in rendered  # never a bare number: Slurm would read it as minutes
    assert parse_duration(rendered) == -(-seconds // 1)
    assert parse_slurm_time(rendered) == -(-seconds // 1)


@pytest.mark.parametrize("bad", [0, -5, float("inf")])
def test_render_slurm_time_rejects_non_positive(bad: float) -> None:
    with pytest.raises(ValueError):
        render_slurm_time(bad)


@pytest.mark.parametrize("text,seconds", [("30", 1800), ("1-02:00:00", 93600), ("00:30:00", 1800),
                                          ("05:30", 330), ("1-12", 129600), ("UNLIMITED", None),
                                          ("INVALID", None), ("", None), ("NOT_SET", None)])
def test_parse_slurm_time_reads_a_bare_number_as_minutes(text: str, seconds: float | None) -> None:
    assert parse_slurm_time(text) == seconds


def test_parse_slurm_time_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a Slurm time"):
        parse_slurm_time("soon")


def test_the_profile_schema_accepts_what_the_parser_does() -> None:
    # The schema's pattern (for editors, and the first check of a profile) must not refuse a duration
    # the parser reads, nor let through text the parser refuses.
    import re

    from orchestra.manifest import load_schema

    pattern = load_schema("profile.schema.json")["$defs"]["duration"]["oneOf"][1]["pattern"]
    for text, _seconds in CLOCK + UNITS:
        if isinstance(text, str):
            assert re.search(pattern, text), text
    for text in ["soon", "5 parsecs", "-3", "1h and then", "1:2:3:4", "1-2-3", ":30", "30:", "1-:30"]:
        assert not re.search(pattern, text), text


@pytest.mark.parametrize("text,seconds", [("30:00", 1800), ("1-12", 129600), ("2h", 7200), (90, 90)])
def test_every_caller_reads_durations_alike(text: str | int, seconds: float) -> None:
    from orchestra.manifest import parse_manifest
    from runaway.cli import _duration
    from runaway.profiles import build_profile

    manifest, errors = parse_manifest(f"name: d\ncommand: 'true'\ntimeout: {text!r}\n" if isinstance(text, str)
                                      else f"name: d\ncommand: 'true'\ntimeout: {text}\n")
    assert not errors and manifest is not None and manifest.timeout == seconds
    profile = build_profile("c", {"kind": "slurm", "host": "h", "allocation": {"walltime": text}})
    assert profile.allocation.walltime == seconds  # type: ignore[attr-defined]
    assert _duration(str(text)) == seconds
