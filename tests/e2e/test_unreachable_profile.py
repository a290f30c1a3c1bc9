"""A profile that cannot be reached: one clean line, nothing left behind, and a way to move the work."""
from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import cli, git, make_campaign

MANIFEST = """\
name: t
command: echo {i} > out.txt
parameters:
  i: {type: int, low: 1, high: 3}
outputs: [out.txt]
profiles:
  down: {kind: ssh, host: "nobody@127.0.0.1:1", ssh_config: /dev/null, slots: 1}
"""


def branches(root: Path) -> list[str]:
    return git(root, "for-each-ref", "--format=%(refname)", "refs/heads/executions").stdout.split()


def test_an_unreachable_host_gives_one_line_and_leaves_no_execution_behind(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", MANIFEST)
    for _try in range(2):  # each try used to leave its executions behind as `created` branches
        run = cli(root, "expegit", "run", "--grid", "--profile", "down")
        assert run.returncode == 5, run.stderr
        assert "Traceback" not in run.stderr and "greenlet" not in run.stderr.lower(), run.stderr
        errors = [line for line in run.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and "127.0.0.1:1" in errors[0], run.stderr
        assert branches(root) == []
    assert "0 executions" in cli(root, "expegit", "status", check=True).stdout


def test_resume_profile_moves_what_never_ran_to_another_profile(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", MANIFEST)
    # Executions left `created` on a profile that is gone (as a run before this fix, or a host that died).
    from expegit.campaign import open_campaign
    from expegit.runner import create_executions, plan_specs

    campaign = open_campaign(str(root))
    specs = plan_specs(campaign.manifest, campaign.store.head_commit(), "down", assignments=(), grid=True,
                       repeat=None)
    created = [record.id for record, _tip in create_executions(campaign, campaign.manifest, specs)]
    assert len(created) == 3 and len(branches(root)) == 3
    resume = cli(root, "expegit", "resume", "--profile", "local")
    assert resume.returncode == 0, resume.stderr
    assert "moving 3 execution(s) from profile down to local" in resume.stderr, resume.stderr
    records = json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)
    assert sorted(r["id"] for r in records) == sorted(created)
    for record in records:
        assert record["state"] == "finished" and record["profile"] == "local", record
        out = git(root, "show", f"executions/{record['id']}:out.txt").stdout.strip()
        assert out == str(record["parameters"]["i"])
    bad = cli(root, "expegit", "resume", "--profile", "nosuch")
    assert bad.returncode == 4 and "nosuch" in bad.stderr
