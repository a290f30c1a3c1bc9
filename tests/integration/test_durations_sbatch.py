"""The duration parser against what sbatch itself reads: each notation is submitted as a held job's
``--time`` on the dev cluster's real Slurm, and scontrol's TimeLimit is compared with the parser."""
from __future__ import annotations

import math
import re

import pytest

from orchestra.durations import parse_duration, parse_slurm_time, render_slurm_time

# Every clock form Slurm documents for --time, plus overflowing fields (which sbatch accepts).
SLURM_FORMS = ["30:00", "05:30", "90:75", "04:00:00", "1:30:00", "1-12", "2-06:30", "1-02:30:15", "0-00:00:30"]
UNIT_FORMS = ["90", "90s", "30m", "2h", "1h30m", "1d", "1.5h"]


def _time_limit(devcluster, time_arg: str) -> float | None:
    """sbatch's reading of ``--time=time_arg`` in seconds, from a held job that never runs."""
    out = devcluster.slurm(f"sbatch -H --parsable -J orchestra-durations -o /dev/null -t '{time_arg}' --wrap true")
    job_id = out.strip().split(";")[0]
    assert job_id.isdigit(), f"sbatch -t {time_arg!r} refused: {out!r}"
    try:
        shown = devcluster.slurm(f"scontrol show job {job_id}")
        match = re.search(r"\bTimeLimit=(\S+)", shown)
        assert match, shown
        return parse_slurm_time(match.group(1))
    finally:
        devcluster.slurm(f"scancel {job_id}")


def _minutes_up(seconds: float) -> float:
    return math.ceil(seconds / 60) * 60.0  # Slurm keeps limits in whole minutes, rounding up


@pytest.mark.parametrize("text", SLURM_FORMS)
def test_sbatch_reads_slurm_notation_as_the_parser_does(devcluster, text: str) -> None:
    assert _time_limit(devcluster, text) == _minutes_up(parse_duration(text))


@pytest.mark.parametrize("text", SLURM_FORMS + UNIT_FORMS)
def test_rendered_walltime_is_what_sbatch_grants(devcluster, text: str) -> None:
    assert _time_limit(devcluster, render_slurm_time(parse_duration(text))) == _minutes_up(parse_duration(text))


def test_a_bare_number_is_minutes_to_sbatch_and_seconds_to_orchestra(devcluster) -> None:
    # The one Slurm form Orchestra reads differently (README: a bare number is seconds): rendering must
    # therefore never pass a bare number on, and parse_slurm_time (Slurm's output) reads it as minutes.
    assert _time_limit(devcluster, "30") == 1800 == parse_slurm_time("30")
    assert parse_duration("30") == 30
    assert _time_limit(devcluster, render_slurm_time(parse_duration("30"))) == 60
