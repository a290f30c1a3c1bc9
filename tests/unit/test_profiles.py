"""Profile loading and validation (runaway.profiles + schemas/profile.schema.json)."""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.errors import ProfileError
from runaway.profiles import (AllocationSpec, CommandProfile, LocalProfile, SlurmProfile, SSHHostConfig,
                              SSHProfile, build_profile, load_profile_file, merge, resolve_profile)

EXAMPLES = Path(__file__).resolve().parents[2] / "runaway" / "examples"


def test_ssh_profile_defaults_and_hosts():
    profile = build_profile("lab", {"kind": "ssh", "hosts": ["a", {"host": "b", "slots": 8}], "slots": 2,
                                    "env": {"OMP_NUM_THREADS": 1, "DEBUG": True}, "setup": "source venv/bin/activate"})
    assert isinstance(profile, SSHProfile)
    assert profile.hosts == (SSHHostConfig("a", 2), SSHHostConfig("b", 8))
    assert profile.workdir == "~/.orchestra" and profile.channels_per_connection == 8
    assert profile.env == {"OMP_NUM_THREADS": "1", "DEBUG": "true"}
    assert profile.setup == ("source venv/bin/activate",)
    single = build_profile("one", {"kind": "ssh", "host": "user@box:2200"})
    assert single.hosts == (SSHHostConfig("user@box:2200", 1),)


def test_slurm_profile_parses_durations():
    profile = build_profile("cluster", {"kind": "slurm", "host": "mycluster", "slots_per_node": 16,
                                        "allocation": {"nodes": 2, "walltime": "04:00:00", "partition": "cpu",
                                                       "extra": "--constraint=haswell"},
                                        "idle_release": "2m", "squeue_interval": 5})
    assert isinstance(profile, SlurmProfile)
    assert profile.allocation == AllocationSpec(2, 14400.0, "cpu", None, None, ("--constraint=haswell",))
    assert (profile.idle_release, profile.squeue_interval, profile.max_allocations) == (120.0, 5.0, 1)


@pytest.mark.parametrize("data, needle", [
    ({"kind": "slurm"}, "'host' is a required property"),
    ({"kind": "slurm", "host": "h", "slot_per_node": 4}, "did you mean 'slots_per_node'"),
    ({"kind": "slurm", "host": "h", "allocation": {"nodes": 0}}, "allocation.nodes"),
    ({"kind": "slurm", "host": "h", "allocation": {"walltime": "forever"}}, "allocation.walltime"),
    ({"kind": "slurm", "host": "h", "allocation": {"gpus": 1}}, "gpus"),
    ({"kind": "ssh"}, "host"),
    ({"kind": "ssh", "host": "h", "channels_per_connection": 0}, "channels_per_connection"),
    ({"kind": "sssh", "host": "h"}, "did you mean 'ssh'"),
    ({"kind": "command", "host": "h", "start": "x", "list_nodes": "x", "cancel": "x {job_id}",
      "launch": "x {node}"}, "list_nodes must use {job_id}"),
    ({"kind": "ssh", "host": "h", "env": {"BAD-NAME": "x"}}, "env"),
    ({"kind": "slurm", "host": "h", "allocation": {"walltime": "1h"}, "walltime_margin": "2h"}, "walltime_margin"),
])
def test_invalid_profiles_name_the_problem(data, needle):
    with pytest.raises(ProfileError) as err:
        build_profile("p", data)
    assert needle in str(err.value)
    assert "'p'" in str(err.value)


def test_examples_are_valid_profiles():
    pbs = build_profile("pbs", load_profile_file(EXAMPLES / "pbs.yaml"))
    assert isinstance(pbs, CommandProfile) and "{job_id}" in pbs.list_nodes
    oar = build_profile("oar", load_profile_file(EXAMPLES / "oar.yaml"))
    assert isinstance(oar, CommandProfile)
    slurm = build_profile("cluster", load_profile_file(EXAMPLES / "slurm.yaml"))
    assert isinstance(slurm, SlurmProfile) and slurm.allocation.nodes == 2


def test_personal_profile_is_merged_over_shared(tmp_path):
    (tmp_path / "cluster.yaml").write_text("allocation: {account: my-proj}\nslots_per_node: 8\n")
    shared = {"cluster": {"kind": "slurm", "host": "c", "allocation": {"nodes": 2, "walltime": "1h"}}}
    profile = resolve_profile("cluster", shared, tmp_path)
    assert profile.allocation == AllocationSpec(2, 3600.0, None, "my-proj")
    assert profile.slots_per_node == 8
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}}


def test_unknown_profile_lists_known_ones(tmp_path):
    (tmp_path / "mine.yaml").write_text("kind: ssh\nhost: x\n")
    with pytest.raises(ProfileError) as err:
        resolve_profile("mien", {"shared": {"kind": "local"}}, tmp_path)
    assert "local, mine, shared" in str(err.value) and "did you mean 'mine'" in str(err.value)
    assert isinstance(resolve_profile("local", {}, tmp_path), LocalProfile)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("kind: [unclosed\n")
    with pytest.raises(ProfileError) as err:
        load_profile_file(path)
    assert str(path) in str(err.value)


def test_profile_file_errors_give_line_and_column(tmp_path):
    # Each message starts FILE:LINE:COL at the key or value at fault, as manifest errors do.
    cases = {
        "typo.yaml": ("kind: slurm\nhost: h\nslot_per_node: 4\n", ":3:1: profile 'typo': unknown key 'slot_per_node'",
                      "did you mean 'slots_per_node'"),
        "nested.yaml": ("kind: slurm\nhost: h\nallocation:\n  nodes: 0\n", ":4:10: profile 'nested': allocation.nodes", ""),
        "nestedkey.yaml": ("kind: slurm\nhost: h\nallocation:\n  gpus: 1\n", ":4:3: profile 'nestedkey': allocation: unknown "
                           "key 'gpus'", ""),
        "kind.yaml": ("host: h\nkind: sssh\n", ":2:7: profile 'kind': kind 'sssh'", "did you mean 'ssh'"),
    }
    for name, (text, needle, hint) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ProfileError) as err:
            resolve_profile(name[:-5], {}, tmp_path)
        assert str(err.value).startswith(str(tmp_path / name) + needle), str(err.value)
        assert hint in str(err.value)


def test_profile_file_yaml_problems_are_located(tmp_path):
    for text, needle in [("kind: ssh\nhost: a\nhost: b\n", ":3:1: key 'host' appears twice, at line 2 and line 3"),
                         ("kind: ssh\nhost: [a\n", ":3:1: YAML syntax error"),
                         (b"kind: ssh\nhost: \xff\n", ":2:7: not UTF-8 text"),
                         ("- kind: ssh\n", ":1:1: a profile file holds one mapping"),
                         ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                          "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
                          "nodes")]:
        path = tmp_path / "p.yaml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ProfileError) as err:
            load_profile_file(path)
        assert str(err.value).startswith(str(path) + ":") and needle in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
