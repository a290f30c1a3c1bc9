"""clone / push / pull of campaigns between real repositories, through a path and the loopback sshd."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from expegit import collaboration as collab
from expegit.gitstore import GitStore
from expegit.journal import Journal
from orchestra.errors import RepositoryError
from orchestra.execution import ExecutionRecord, new_execution_id
from tests.helpers import cli, git


def test_pure_helpers() -> None:
    assert collab.default_clone_directory("ssh://host/srv/camp.git") == "camp"
    assert collab.default_clone_directory("host:camp.git/") == "camp"
    assert collab.default_clone_directory("/tmp/x/camp") == "camp"
    assert collab.batches(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]
    e = collab.EXECUTIONS
    ids_ = [f"{d}{k:011x}" for d in "0a" for k in range(300)]
    assert collab.push_groups(ids_[:3], None) == [([f"{e}{i}:{e}{i}" for i in ids_[:3]], 3)]
    assert collab.push_groups(ids_[:3], 2) == [([f"{e}{i}:{e}{i}" for i in ids_[:2]], 2), ([f"{e}{ids_[2]}:{e}{ids_[2]}"], 1)]
    assert collab.push_groups(ids_, None) == [([f"{e}*:{e}*"], 600)]
    assert collab.push_groups(ids_, 400) == [([f"{e}0*:{e}0*"], 300), ([f"{e}a*:{e}a*"], 300)]
    assert [n for _r, n in collab.push_groups(ids_, 30)] == [300, 300]  # two-digit prefixes "00", "0a"...
    assert collab.push_groups([], 10) == []
    a = "a" * 40
    text = f"{a}\trefs/heads/main\n{a}\trefs/heads/executions/0123456789ab\n"
    assert collab.parse_ls_remote(text) == {"0123456789ab": a}


def ids(root: Path) -> set[str]:
    result = cli(root, "expegit", "list", "--json", check=True)
    return {r["id"] for r in json.loads(result.stdout)}


def test_two_clones_push_to_one_remote_and_pull(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(origin), check=True)
    bare = tmp_path / "shared.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))

    alice, bob = tmp_path / "alice", tmp_path / "bob"
    assert "0 executions" in cli(tmp_path, "expegit", "clone", str(bare), str(alice), check=True).stdout
    cli(tmp_path, "expegit", "clone", str(bare), str(bob), check=True)
    cli(alice, "expegit", "hooks", "install", check=True)
    cli(alice, "expegit", "run", "-p", "lr=0.01", "-p", "lr=0.02", "-q", check=True)
    cli(bob, "expegit", "run", "-p", "lr=0.03", "-q", check=True)
    # both push to the same remote: disjoint branches, no conflict, whoever goes first
    assert "2 execution branches pushed" in cli(alice, "expegit", "push", check=True).stdout
    assert "1 execution branches pushed" in cli(bob, "expegit", "push", check=True).stdout
    assert "2 new" in cli(bob, "expegit", "pull", check=True).stdout
    assert "1 new" in cli(alice, "expegit", "pull", check=True).stdout
    assert ids(alice) == ids(bob) and len(ids(alice)) == 3
    # nothing left to do
    assert "0 execution branches pushed" in cli(alice, "expegit", "push", check=True).stdout
    assert "0 new and 0 updated" in cli(bob, "expegit", "pull", check=True).stdout
    # a fresh clone has them all, and the report and status see them
    carol = tmp_path / "carol"
    assert "3 executions" in cli(tmp_path, "expegit", "clone", str(bare), str(carol), check=True).stdout
    assert "3 executions" in cli(carol, "expegit", "status", check=True).stdout + \
        cli(carol, "expegit", "status", check=True).stderr


def make_execution(store: GitStore, commit: str) -> str:
    record = ExecutionRecord(id=new_execution_id(), campaign="c", commit=commit, command="true",
                             parameters={"i": 0}, profile="local", state="created")
    Journal(store).create(record)
    return record.id


def test_pull_refuses_to_overwrite_a_diverged_branch(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(origin), check=True)
    bare = tmp_path / "shared.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    a, b = tmp_path / "a", tmp_path / "b"
    collab.clone(str(bare), a)
    store_a = GitStore(a)
    shared = make_execution(store_a, store_a.head_commit())
    other = make_execution(store_a, store_a.head_commit())
    collab.push(store_a, "origin")
    collab.clone(str(bare), b)
    store_b = GitStore(b)
    journal_a, journal_b = Journal(store_a), Journal(store_b)
    for store, journal, state in ((store_a, journal_a, "running"), (store_b, journal_b, "cancelled")):
        tip = store.ref(f"refs/heads/executions/{shared}")
        record = ExecutionRecord(id=shared, campaign="c", commit=store.head_commit(), command="true",
                                 parameters={"i": 0}, profile="local", state=state)
        journal.append(tip, record)
    tip = store_a.ref(f"refs/heads/executions/{other}")
    journal_a.append(tip, ExecutionRecord(id=other, campaign="c", commit=store_a.head_commit(), command="true",
                                          parameters={"i": 0}, profile="local", state="finished"))
    collab.push(store_a, "origin")
    mine = store_b.ref(f"refs/heads/executions/{shared}")
    with pytest.raises(RepositoryError, match=f"executions/{shared}"):
        collab.pull(store_b, "origin")
    assert store_b.ref(f"refs/heads/executions/{shared}") == mine  # never overwritten
    # the other branch was fast-forwarded all the same
    assert store_b.ref(f"refs/heads/executions/{other}") == store_a.ref(f"refs/heads/executions/{other}")
    # and the remote refuses the diverged one on push (never forced)
    with pytest.raises(RepositoryError, match="refused"):
        collab.push(store_b, "origin")


class Interrupt(Exception):
    pass


def test_batched_push_resumes_after_interruption(tmp_path: Path) -> None:
    origin = tmp_path / "origin"
    cli(tmp_path, "expegit", "init", "--example", "quadratic", str(origin), check=True)
    bare = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(origin, "remote", "add", "origin", str(bare))
    store = GitStore(origin)
    head = store.head_commit()
    journal = Journal(store)
    created = []
    with store.batch():
        for i in range(1200):
            record = ExecutionRecord(id=new_execution_id(), campaign="c", commit=head, command="true",
                                     parameters={"i": i}, profile="local", state="created")
            created.append((record.id, journal.create_commit(record)))
    journal.create_branches(created)
    calls: list[tuple[int, int]] = []

    def interrupt_after_first_batch(done: int, total: int) -> None:
        calls.append((done, total))
        if done > 0:
            raise Interrupt

    started = time.monotonic()
    with pytest.raises(Interrupt):
        collab.push(store, "origin", batch_size=500, progress=interrupt_after_first_batch)
    remote = git(bare, "for-each-ref", "--format=%(refname)", "refs/heads/executions/").stdout.split()
    first = calls[1][0]  # groups by the first hex digit of the id: 1200 / 16 on average
    assert calls == [(0, 1200), (first, 1200)] and 0 < first < 500 and len(remote) == first
    result = collab.push(store, "origin", batch_size=500)
    assert (result.pushed, result.up_to_date, result.total) == (1200 - first, first, 1200)
    assert result.batches == len({i[0] for i, _ in created}) - 1
    remote = git(bare, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/executions/").stdout
    assert len(remote.split("\n")) - 1 == 1200
    assert {line.split()[0].rsplit("/", 1)[1] for line in remote.splitlines()} == {i for i, _ in created}
    assert collab.push(store, "origin").pushed == 0
    # the tracking refs that make the resume possible were written in packed-refs edits, not by git as a
    # loose file per branch (collab.push_target)
    loose = origin / ".git" / "refs" / "remotes" / "origin" / "executions"
    assert not loose.exists() or not any(loose.iterdir())
    assert store.refs_under(b"refs/remotes/origin/executions/") == {i: sha for i, sha in created}
    # a fresh clone gets every branch
    clone = collab.clone(str(bare), tmp_path / "clone")
    assert clone.executions == 1200 and len(GitStore(clone.root).execution_tips()) == 1200
    assert time.monotonic() - started < 300


def test_execution_branches_go_to_the_push_url_with_the_remote_s_own_settings(tmp_path: Path) -> None:
    store = GitStore.init(tmp_path / "c")
    git(store.root, "remote", "add", "origin", "/srv/fetch.git")
    assert collab.push_target(store, "origin") == ("/srv/fetch.git", [])
    git(store.root, "remote", "set-url", "--push", "origin", "/srv/push.git")
    git(store.root, "config", "remote.origin.receivepack", "/opt/git/bin/git-receive-pack")
    assert collab.push_target(store, "origin") == ("/srv/push.git", ["--receive-pack=/opt/git/bin/git-receive-pack"])
    git(store.root, "remote", "set-url", "--add", "--push", "origin", "/srv/mirror.git")
    assert collab.push_target(store, "origin") == ("origin", [])  # git pushes to each: leave it to git
    assert collab.push_target(store, "/srv/any.git") == ("/srv/any.git", [])  # a URL: as given


def test_clone_push_pull_over_ssh(tmp_path: Path, devcluster) -> None:
    if os.geteuid() != 0:
        reason = "creating a repository in the orchestra user's home needs root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: cluster tests must not be skipped)")
        pytest.skip(reason)
    name = f"sync-{os.getpid()}-{time.monotonic_ns()}.git"
    bare = Path("/home/orchestra") / name
    env = {"GIT_SSH_COMMAND": f"ssh -F {shlex.quote(devcluster.ssh_config)}"}
    origin = tmp_path / "origin"
    try:
        cli(tmp_path, "expegit", "init", "--example", "quadratic", str(origin), check=True)
        git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
        subprocess.run(["chown", "-R", "orchestra:", str(bare)], check=True)
        url = f"{devcluster.host}:{name}"  # scp-like, through the ssh_config alias
        cli(tmp_path, "expegit", "clone", url, "a", check=True, env=env)
        cli(tmp_path, "expegit", "clone", url, "b", check=True, env=env)
        cli(tmp_path / "a", "expegit", "run", "-p", "lr=0.01", "-q", check=True)
        cli(tmp_path / "a", "expegit", "push", check=True, env=env)
        assert "1 new" in cli(tmp_path / "b", "expegit", "pull", check=True, env=env).stdout
        assert ids(tmp_path / "a") == ids(tmp_path / "b") and len(ids(tmp_path / "b")) == 1
    finally:
        subprocess.run(["rm", "-rf", str(bare)], check=False)
