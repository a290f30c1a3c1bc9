"""`expegit logs -f`, `expegit status` and intermediate metrics while an execution runs on this machine."""
from __future__ import annotations

import shutil
from pathlib import Path

from expegit import open_campaign
from tests.helpers import cli
from tests.live_scenario import check_live_result, gate_dir, live_campaign, run_live_scenario


def test_logs_follow_and_metrics_while_running_local(tmp_path: Path) -> None:
    gates = gate_dir()
    try:
        root = live_campaign(tmp_path / "camp", gates)
        seen = run_live_scenario(root, gates)
        check_live_result(seen)
        # a finished execution's output comes from its branch; --stderr picks the other stream
        assert cli(root, "expegit", "logs", seen["id"][:6], check=True).stdout.splitlines() == [
            "line one", "line two", "step=3 loss=0.125"]
        assert cli(root, "expegit", "logs", "--stderr", seen["id"], check=True).stdout == ""
        c = open_campaign(root)
        assert [p["step"] for p in c.metrics(seen["id"])] == [1, 2, 3]
        # the report draws them: a learning curve on the plots page and on the execution's page
        index = Path(cli(root, "expegit", "report", check=True).stdout.strip())
        assert 'data-plot="curves"' in (index.parent / "plots.html").read_text()
        assert (index.parent / "curves" / f"{seen['id']}.svg").read_text().count("<polyline") == 1  # loss against step
        frame = c.metrics(seen["id"], frame=True)
        assert list(frame["step"]) == [1, 2, 3] and list(frame["loss"]) == [0.5, 0.25, 0.125]
    finally:
        shutil.rmtree(gates, ignore_errors=True)


def test_logs_of_an_unknown_id_is_a_usage_error(tmp_path: Path) -> None:
    root = live_campaign(tmp_path / "camp", tmp_path)
    result = cli(root, "expegit", "logs", "abcdef")
    assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.count("\n") == 1
