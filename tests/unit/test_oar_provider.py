"""The OAR provider's pure formats (golden files) and its node prefix, run for real through a stand-in
``oarsh`` that behaves as the real one does (joins its arguments and re-parses them in a shell)."""
from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from orchestra.errors import ProfileError, SchedulerError
from runaway.profiles import AllocationSpec, build_profile
from runaway.providers import JobState
from runaway.providers.oar import (OARProvider, parse_oarstat_output, parse_oarsub_output, render_oar_walltime,
                                   render_oardel, render_oarsh_prefix, render_oarstat, render_oarsub)

GOLDEN = Path(__file__).parent / "golden"


def test_render_oarsub_golden():
    full = AllocationSpec(nodes=2, walltime=27 * 3600 + 61, partition="production", account="my-project",
                          extra=("--property=gpu='YES'",))
    assert render_oarsub(full, job_name="orchestra-cluster") + "\n" == (GOLDEN / "oarsub_full.txt").read_text()
    minimal = AllocationSpec(nodes=1, walltime=600)
    assert render_oarsub(minimal, job_name="orchestra") + "\n" == (GOLDEN / "oarsub_minimal.txt").read_text()


@pytest.mark.parametrize("seconds, text", [(600, "0:10:00"), (59.2, "0:01:00"), (97261, "27:01:01"), (3600, "1:00:00")])
def test_oar_walltime_counts_hours_past_a_day(seconds, text):
    assert render_oar_walltime(seconds) == text


@pytest.mark.parametrize("field, value", [("partition", "q;rm -rf ~"), ("account", "a b")])
def test_render_oarsub_refuses_values_no_option_needs(field, value):
    with pytest.raises(ProfileError, match=field):
        render_oarsub(dataclasses.replace(AllocationSpec(nodes=1, walltime=60), **{field: value}), job_name="o")


def test_parse_oarsub_output():
    text = "[ADMISSION RULE] Modify resource description with type constraints\nOAR_JOB_ID=4211\n"
    assert parse_oarsub_output(text) == "4211"
    with pytest.raises(SchedulerError, match="no job id"):
        parse_oarsub_output("[ADMISSION RULE] Error: walltime too long\n")


def test_parse_oarstat_golden():
    jobs = parse_oarstat_output((GOLDEN / "oarstat_jobs.json").read_text(), now=1764000000 + 1800)
    assert jobs["4211"] == JobState("4211", "RUNNING", 5400.0, ("node-3.grid", "node-7.grid"))
    assert jobs["4212"].pending and jobs["4212"].nodes == () and "matching resources" in jobs["4212"].reason
    assert jobs["4200"].state == "COMPLETED"  # ended: the allocation backend drops it


def test_parse_oarstat_refuses_what_it_does_not_know():
    assert parse_oarstat_output("", now=0) == {}
    with pytest.raises(SchedulerError, match="no JSON"):
        parse_oarstat_output("oarstat: cannot connect to database", now=0)
    with pytest.raises(SchedulerError, match="unknown state 'Frozen'"):
        parse_oarstat_output('{"7": {"state": "Frozen"}}', now=0)


def test_render_oarstat_and_oardel_one_command_for_all_jobs():
    assert render_oarstat(["12", "13"]) == "oarstat -f -J -j 12 -j 13"
    assert render_oardel(["12", "13"]) == "oardel 12 13"
    with pytest.raises(SchedulerError, match="not an OAR job id"):
        render_oardel(["12; reboot"])


def test_oarsh_prefix_keeps_argv_and_env_through_a_remote_shell(tmp_path):
    """oarsh re-parses its arguments in a shell on the node: the prefix quotes each word once more and
    carries the environment, so the node sees exactly the words and variables given after it."""
    fake = tmp_path / "bin" / "oarsh"
    fake.parent.mkdir()
    # Like ssh: the first argument is the node, the rest is joined with spaces and run by a shell there.
    fake.write_text('#!/bin/sh\nnode=$1; shift\necho "node=$node job=$OAR_JOB_ID" >&2\nexec env -i /bin/sh -c "$*"\n')
    fake.chmod(0o755)
    hostile = "a b; touch pwned $(id) 'q' \"dq\" \\ é"
    line = (f"env ORCHESTRA_EXECUTION_ID='e 1' {render_oarsh_prefix('4211', 'node-3.grid')}"
            "/bin/sh -c 'printf \"[%s]\\n\" \"$@\"; echo \"id=$ORCHESTRA_EXECUTION_ID\"' marker "
            + shlex.quote(hostile))
    done = subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True, cwd=tmp_path, timeout=30,
                          env={**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"[{hostile}]", "id=e 1"]
    assert "node=node-3.grid job=4211" in done.stderr
    assert not (tmp_path / "pwned").exists()


def test_factory_builds_oar_profiles_on_the_oar_provider_with_the_shell_launcher():
    """`kind: oar` profiles: the same keys as slurm's; the factory puts the OAR provider under them."""
    from runaway.allocation_backend import AllocationBackend
    from runaway.factory import make_backend
    from runaway.launchers.shell import ShellLauncher

    slurm = build_profile("grid", {"kind": "slurm", "host": "frontend.example.org", "ssh_config": os.devnull,
                                   "allocation": {"nodes": 2, "walltime": "1h"}})
    backend = make_backend(dataclasses.replace(slurm, kind="oar"))
    try:
        assert isinstance(backend, AllocationBackend) and backend.name == "oar"
        assert isinstance(backend.provider, OARProvider) and isinstance(backend.launcher, ShellLauncher)
        assert backend.provider.launcher("4211", "node-3.grid").startswith("env OAR_JOB_ID=4211 python3 -c ")
    finally:
        backend.close()


def test_an_oar_profile_is_a_kind_of_its_own_built_by_the_one_factory(tmp_path):
    from runaway.allocation_backend import AllocationBackend
    from runaway.factory import make_backend
    from runaway.profiles import build_profile, validate

    data = {"kind": "oar", "host": "frontend.example", "slots_per_node": 4,
            "allocation": {"nodes": 2, "walltime": "1-00:00:00", "partition": "default"}}
    validate("grid5000", data)
    profile = build_profile("grid5000", data)
    assert profile.kind == "oar" and profile.allocation.walltime == 86400 and profile.launcher == "srun"
    backend = make_backend(profile, state_dir=tmp_path)  # builds only: nothing connects before start()
    assert isinstance(backend, AllocationBackend) and isinstance(backend.provider, OARProvider)
    backend.close()
