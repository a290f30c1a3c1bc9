"""The progress display (core/progress.py): what a user reads while a run waits or works."""
from __future__ import annotations

import io

from orchestra.progress import Progress


def test_plain_output_says_once_per_change_what_the_run_waits_on():
    out = io.StringIO()
    progress = Progress(10, out, live=False)
    for _ in range(3):
        progress.wait_on("allocation 12 pending (Resources)")
    progress.wait_on("allocation 12 starting on node[1-4]")
    progress.wait_on(None)
    progress.wait_on(None)
    assert out.getvalue().splitlines() == ["waiting: allocation 12 pending (Resources)",
                                           "waiting: allocation 12 starting on node[1-4]"]


def test_quiet_output_says_nothing_of_it():
    out = io.StringIO()
    Progress(10, out, live=False, quiet=True).wait_on("allocation 12 pending (Priority)")
    assert out.getvalue() == ""


def test_the_live_line_shows_the_wait_only_while_nothing_runs():
    out = io.StringIO()
    progress = Progress(10, out, live=True)
    progress.wait_on("allocation 12 pending (Priority)")
    assert out.getvalue().endswith("waiting: allocation 12 pending (Priority)")
    progress.started()
    assert "waiting" not in progress.line()
    progress.ended(True, "finished x")
    assert progress.line().endswith("waiting: allocation 12 pending (Priority)")
    progress.wait_on(None)
    assert "waiting" not in progress.line()
