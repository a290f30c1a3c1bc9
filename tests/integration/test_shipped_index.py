"""The record index a campaign ships (refs/orchestra/index) against real git: pushed by `expegit push`,
fetched by `expegit clone` / `pull`, used by the first command after a clone, and never trusted over the
branches: a tampered row is ignored by a reader, and refused by the server's hook."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from expegit import collaboration as collab
from expegit import records as records_module
from expegit import shipped_index
from expegit.campaign import open_campaign
from expegit.gitstore import GitStore
from expegit.journal import Journal
from expegit.records import CACHE_NAME, RecordIndex
from expegit.runner import create_executions
from orchestra.execution import ExecutionSpec
from tests.helpers import git, make_campaign

MANIFEST = """\
name: shipped
command: python3 t.py {x}
parameters:
  x: {type: int, low: 0, high: 1000}
objective: {metric: loss, from: metrics.json}
"""
N = 24
SPOT = 4  # rows the reader checks against their records (of N)


def _finish(root: Path, n: int, start: int = 0) -> None:
    campaign = open_campaign(root)
    head = campaign.store.head_commit()
    specs = [ExecutionSpec(commit=head, parameters={"x": start + i}, profile="local") for i in range(n)]
    journal = Journal(campaign.store)
    for i, (record, tip) in enumerate(create_executions(campaign, campaign.manifest, specs)):
        record.state, record.objective, record.duration = "finished", (start + i) / 10, 1.0
        journal.append(tip, record, {"metrics.json": json.dumps({"loss": record.objective}).encode()})


@pytest.fixture()
def shared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(alice's clone holding N finished executions, pushed; the bare remote with Orchestra's server hooks)."""
    monkeypatch.setattr(records_module, "MIN_ROWS_TO_USE", 1)  # these campaigns are small
    monkeypatch.setattr(shipped_index, "SPOT_CHECK", SPOT)
    origin = make_campaign(tmp_path / "origin", MANIFEST, {"t.py": "print('hi')\n"})
    bare = tmp_path / "shared.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    collab.install_server_hooks(bare, interpreter=sys.executable)
    alice = tmp_path / "alice"
    collab.clone(str(bare), alice)
    _finish(alice, N)
    result = collab.push(GitStore(alice))
    assert result.pushed == N and result.index == f"record index of {N} executions pushed"
    return alice, bare


class Reads:
    """Which commits had their record read from git (the spy on GitStore.iter_path_batches)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.commits: list[str] = []
        original = GitStore.iter_path_batches

        def spy(store, commits, path, *args, **kwargs):  # type: ignore[no-untyped-def]
            self.commits.extend(commits)
            return original(store, commits, path, *args, **kwargs)

        monkeypatch.setattr(GitStore, "iter_path_batches", spy)


def _lines(root: Path) -> list[str]:
    return RecordIndex(GitStore(root)).lines()


def test_first_command_after_a_clone_reads_the_shipped_index(shared, tmp_path: Path, monkeypatch) -> None:
    alice, bare = shared
    assert git(bare, "for-each-ref", "--format=%(refname)", "refs/orchestra/").stdout.split() == ["refs/orchestra/index"]
    bob = tmp_path / "bob"
    assert collab.clone(str(bare), bob).executions == N
    assert GitStore(bob).ref(shipped_index.tracking_ref("origin")) is not None
    truth = _lines(alice)
    reads = Reads(monkeypatch)
    assert _lines(bob) == truth  # the same cache, line for line, as reading every record gives
    assert len(reads.commits) == SPOT  # the spot check's records, no other


def _forge(bob: Path, edit) -> GitStore:  # type: ignore[no-untyped-def]
    """Replace bob's fetched index by ``edit(rows)``'s, as a remote without Orchestra's hooks may serve it."""
    store = GitStore(bob)
    rows = shipped_index.read_rows(store, store.ref(shipped_index.tracking_ref("origin")))
    edit(rows)
    git(bob, "update-ref", shipped_index.tracking_ref("origin"), shipped_index.write_index(store, rows, None))
    (store.git_dir / "orchestra" / CACHE_NAME).unlink(missing_ok=True)
    return store


def test_a_row_at_another_tip_or_of_a_missing_branch_is_not_used(shared, tmp_path: Path, monkeypatch) -> None:
    alice, bare = shared
    bob = tmp_path / "bob"
    collab.clone(str(bare), bob)
    monkeypatch.setattr(shipped_index, "SPOT_CHECK", 0)
    truth = _lines(alice)
    moved: list[str] = []

    def edit(rows: list) -> None:  # type: ignore[type-arg]
        record = json.loads(rows[0][2])
        record["objective"] = -1000.0
        moved.append(rows[1][0])
        rows[1] = (rows[1][0], rows[0][1], json.dumps(record))  # a lie, at another branch's tip
        rows.append(("0123456789ab", rows[2][1], rows[2][2].replace(rows[2][0], "0123456789ab")))

    store = _forge(bob, edit)
    reads = Reads(monkeypatch)
    assert _lines(bob) == truth
    assert reads.commits == [store.execution_tips()[moved[0]]]  # that branch alone was read


def test_a_row_that_lies_at_the_right_tip_is_caught_by_the_spot_check(shared, tmp_path: Path, monkeypatch) -> None:
    """Telling a lie at the right tip from the truth takes reading the record: the server's hook does it
    for every row; a reader checks SPOT_CHECK rows at random and, on one lie, uses none of the index."""
    alice, bare = shared
    bob = tmp_path / "bob"
    collab.clone(str(bare), bob)
    monkeypatch.setattr(shipped_index, "SPOT_CHECK", N)

    def edit(rows: list) -> None:  # type: ignore[type-arg]
        record = json.loads(rows[5][2])
        record["objective"] = -1000.0
        rows[5] = (rows[5][0], rows[5][1], json.dumps(record))

    _forge(bob, edit)
    truth = _lines(alice)
    reads = Reads(monkeypatch)
    assert _lines(bob) == truth
    assert len(reads.commits) == N + N  # the spot check, then every record


def test_a_malformed_index_is_ignored_whole(shared, tmp_path: Path, monkeypatch) -> None:
    alice, bare = shared
    bob = tmp_path / "bob"
    collab.clone(str(bare), bob)
    store = GitStore(bob)
    blob = store.write_blob(b"orchestra-index\t1\t5\nnot a row\n")
    tree = store.tree_with(None, {"00000.tsv": (0o100644, blob)})
    git(bob, "update-ref", shipped_index.tracking_ref("origin"), store.write_commit(tree, [], "junk"))
    (store.git_dir / "orchestra" / CACHE_NAME).unlink(missing_ok=True)
    truth = _lines(alice)
    reads = Reads(monkeypatch)
    assert _lines(bob) == truth
    assert len(reads.commits) == N  # no spot check: the index was refused before any row was used


def test_the_server_refuses_an_index_that_lies(shared) -> None:
    alice, bare = shared
    store = GitStore(alice)
    tracking = shipped_index.tracking_ref("origin")
    accepted = store.ref(tracking)
    rows = shipped_index.read_rows(store, accepted)
    record = json.loads(rows[3][2])
    record["objective"] = -1000.0
    rows[3] = (rows[3][0], rows[3][1], json.dumps(record))
    for parent in ([accepted], []):  # as a fast-forward, and as a rewrite
        lie = shipped_index.write_index(store, rows, parent[0] if parent else None)
        force = "" if parent else "+"
        pushed = git(alice, "push", "origin", f"{force}{lie}:{shipped_index.INDEX_REF}", check=False)
        assert pushed.returncode != 0
        assert f"{rows[3][0]} at {rows[3][1][:12]}: its row differs from the record" in pushed.stderr
    assert git(bare, "rev-parse", shipped_index.INDEX_REF).stdout.strip() == accepted
    junk = store.write_commit(store.tree_with(None, {"notes.txt": (0o100644, store.write_blob(b"hi"))}), [], "x")
    pushed = git(alice, "push", "origin", f"+{junk}:{shipped_index.INDEX_REF}", check=False)
    assert pushed.returncode != 0 and "not a record index" in pushed.stderr
    # it is a cache: deleting it costs the next clone time, not results
    assert git(alice, "push", "origin", f":{shipped_index.INDEX_REF}", check=False).returncode == 0


def test_push_and_pull_keep_the_index_current_and_merged(shared, tmp_path: Path, monkeypatch) -> None:
    """Bob pushes his own executions without having pulled Alice's latest: the index he pushes keeps her
    rows; a pull brings the new index, and a clone then reads nothing."""
    alice, bare = shared
    bob = tmp_path / "bob"
    collab.clone(str(bare), bob)
    _finish(alice, 5, start=100)
    assert collab.push(GitStore(alice)).index == f"record index of {N + 5} executions pushed"
    _finish(bob, 3, start=200)
    result = collab.push(GitStore(bob))  # his index was fetched before Alice's push: merged on retry
    assert result.pushed == 3 and result.index == f"record index of {N + 8} executions pushed"
    assert collab.pull(GitStore(alice)).new == 3
    alice_store = GitStore(alice)
    rows = shipped_index.read_rows(alice_store, alice_store.ref(shipped_index.tracking_ref("origin")))
    assert len(rows) == N + 8
    carol = tmp_path / "carol"
    collab.clone(str(bare), carol)
    truth = _lines(alice)
    reads = Reads(monkeypatch)
    assert _lines(carol) == truth
    assert len(reads.commits) == SPOT
    assert collab.push(GitStore(alice)).index == "record index up to date"


def test_the_index_rides_in_the_branches_push(shared, monkeypatch) -> None:
    """One `git push` for the execution branches and the index: each push walks the campaign's history on
    both sides, which at 100,000 branches cost as much as 25 s for the index commit alone."""
    alice, bare = shared
    _finish(alice, 3, start=300)
    pushes: list[tuple[str, ...]] = []
    original = collab.run_git

    def spy(cwd, *args, **kwargs):  # type: ignore[no-untyped-def]
        if args[0] == "push":
            pushes.append(args)
        return original(cwd, *args, **kwargs)

    monkeypatch.setattr(collab, "run_git", spy)
    result = collab.push(GitStore(alice))
    assert result.pushed == 3 and result.index == f"record index of {N + 3} executions pushed"
    assert len(pushes) == 2  # the code branch, then the branches with the index
    assert any(arg.endswith(f":{shipped_index.INDEX_REF}") for arg in pushes[1])
    store = GitStore(alice)
    assert git(bare, "rev-parse", shipped_index.INDEX_REF).stdout.strip() == store.ref(shipped_index.tracking_ref("origin"))


def test_an_index_the_server_refuses_does_not_keep_the_branches_back(shared, monkeypatch) -> None:
    """The server's hook refuses a push whole; when what it refused was the index (here a cache that went
    wrong), the branches are pushed alone and the index is reported as not pushed."""
    alice, bare = shared
    _finish(alice, 3, start=400)
    original = shipped_index.rows_of_cache

    def lying(fields):  # type: ignore[no-untyped-def]
        rows = original(fields)
        record = json.loads(rows[0][2])
        record["objective"] = -1000.0
        return [(rows[0][0], rows[0][1], json.dumps(record)), *rows[1:]]

    monkeypatch.setattr(shipped_index, "rows_of_cache", lying)
    before = git(bare, "rev-parse", shipped_index.INDEX_REF).stdout.strip()
    result = collab.push(GitStore(alice))
    assert result.pushed == 3
    assert result.index.startswith("record index not pushed") and "the branches were" in result.index
    assert len(git(bare, "for-each-ref", "refs/heads/executions/").stdout.splitlines()) == N + 3
    assert git(bare, "rev-parse", shipped_index.INDEX_REF).stdout.strip() == before


def test_the_hooks_standard_library_copy_checks_the_index_over_ssh(tmp_path: Path, devcluster) -> None:
    """On a server whose python3 cannot import Orchestra, the hooks' copy (index_check, index_format) runs."""
    import os
    import pwd
    import shlex
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("installing hooks into the orchestra user's home needs root")
    user = os.environ.get("ORCHESTRA_DEVCLUSTER_USER", "orchestra")
    bare = Path(pwd.getpwnam(user).pw_dir) / f"shipped-{os.getpid()}-{tmp_path.name}.git"
    monkey = pytest.MonkeyPatch()
    monkey.setenv("GIT_SSH_COMMAND", f"ssh -F {shlex.quote(devcluster.ssh_config)}")
    try:
        git(bare.parent, "init", "-q", "--bare", str(bare))
        collab.install_server_hooks(bare, interpreter="/usr/bin/python3")
        subprocess.run(["chown", "-R", f"{user}:", str(bare)], check=True)
        root = make_campaign(tmp_path / "c", MANIFEST, {"t.py": "print('hi')\n"})
        git(root, "remote", "add", "origin", f"ssh://{devcluster.host}{bare}")
        _finish(root, 6)
        assert collab.push(GitStore(root)).index == "record index of 6 executions pushed"
        store = GitStore(root)
        accepted = store.ref(shipped_index.tracking_ref("origin"))
        rows = shipped_index.read_rows(store, accepted)
        record = json.loads(rows[2][2])
        record["objective"] = -5.0
        rows[2] = (rows[2][0], rows[2][1], json.dumps(record))
        lie = shipped_index.write_index(store, rows, accepted)
        pushed = git(root, "push", "origin", f"{lie}:{shipped_index.INDEX_REF}", check=False)
        assert pushed.returncode != 0 and "its row differs from the record" in pushed.stderr, pushed.stderr
    finally:
        monkey.undo()
        subprocess.run(["rm", "-rf", str(bare)], check=False)
