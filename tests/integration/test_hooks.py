"""Orchestra's git hooks against real `git push` to real bare repositories (a path, and the loopback sshd)."""
from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from expegit.collaboration import install_client_hooks, install_server_hooks, parse_push_porcelain
from expegit.gitstore import FILE_MODE, GitStore
from expegit.journal import Journal
from orchestra.execution import RECORD_PATH, ExecutionRecord, new_execution_id
from orchestra.hooks import common
from orchestra.hooks.install import render_shim
from tests.helpers import git, make_campaign

MANIFEST = """\
name: hooked
command: python -c "print(1)"
parameters:
  x: {type: int, low: 0, high: 9}
"""


# --- pure parse functions ----------------------------------------------------------------------------------
def test_parse_ref_update_lines() -> None:
    a, b = "a" * 40, "b" * 40
    update = common.parse_ref_update(f"{a} {b} refs/heads/executions/0123456789ab\n")
    assert (update.old, update.new, update.ref) == (a, b, "refs/heads/executions/0123456789ab")
    assert update.is_execution and not update.is_deletion and not update.is_creation
    assert common.parse_ref_update(f"{common.ZERO} {b} refs/heads/main").is_creation
    assert common.parse_ref_update(f"{a} {common.ZERO} refs/heads/executions/0123456789ab").is_deletion
    assert not common.parse_ref_update(f"{a} {b} refs/heads/executions/nothex").is_execution
    for bad in ("", "x y z", f"{a} {b}", f"{a} {b} ref extra", f"{a[:39]} {b} refs/heads/main"):
        with pytest.raises(ValueError):
            common.parse_ref_update(bad)
    assert common.parse_ref_updates([f"{a} {b} refs/heads/main\n", "\n"]) == [common.RefUpdate(a, b, "refs/heads/main")]


def test_parse_pre_push_lines() -> None:
    a = "c" * 40
    ref = common.parse_pushed_ref(f"refs/heads/executions/0123456789ab {a} refs/heads/executions/0123456789ab {common.ZERO}")
    assert ref.is_execution and not ref.is_deletion and ref.local_sha == a
    assert common.parse_pushed_ref(f"(delete) {common.ZERO} refs/heads/x {a}").is_deletion
    with pytest.raises(ValueError):
        common.parse_pushed_ref(f"refs/heads/main {a} refs/heads/main")


def test_push_options_and_shim() -> None:
    env = {"GIT_PUSH_OPTION_COUNT": "2", "GIT_PUSH_OPTION_0": "a", "GIT_PUSH_OPTION_1": common.OVERRIDE_OPTION}
    assert common.push_options(env) == ["a", common.OVERRIDE_OPTION]
    assert common.push_options({"GIT_PUSH_OPTION_COUNT": "x"}) == []
    shim = render_shim("pre-receive", "/opt/py/bin/python3")
    assert shim.startswith("#!/usr/bin/env python3\n")
    assert "'orchestra.hooks.pre_receive'" in shim and "'/opt/py/bin/python3'" in shim
    compile(shim, "pre-receive", "exec")


def test_parse_push_porcelain() -> None:
    out = ("To ../remote.git\n=\trefs/heads/main:refs/heads/main\t[up to date]\n"
           "*\trefs/heads/executions/0123456789ab:refs/heads/executions/0123456789ab\t[new branch]\n"
           "!\trefs/heads/executions/aaaaaaaaaaaa:refs/heads/executions/aaaaaaaaaaaa\t[remote rejected] (pre-receive hook declined)\n"
           "Done\n")
    statuses = parse_push_porcelain(out)
    assert [s.flag for s in statuses] == ["=", "*", "!"]
    assert statuses[2].rejected and statuses[2].destination == "refs/heads/executions/aaaaaaaaaaaa"
    assert "pre-receive" in statuses[2].summary


# --- helpers -------------------------------------------------------------------------------------------
def add_execution(root: Path, commit: str | None = None) -> str:
    store = GitStore(root)
    record = ExecutionRecord(id=new_execution_id(), campaign="hooked", commit=commit or store.head_commit(),
                             command="true", parameters={"x": 1}, profile="local", state="finished", exit_code=0)
    Journal(store).create(record)
    return record.id


def append_raw_record(root: Path, execution_id: str, text: bytes) -> str:
    """A journal commit whose record is whatever ``text`` is (what a buggy tool or hand edit may produce)."""
    store = GitStore(root)
    ref = f"refs/heads/executions/{execution_id}"
    tip = store.ref(ref)
    tree = store.tree_with(store.tree_of(tip), {RECORD_PATH: (FILE_MODE, store.write_blob(text))})
    sha = store.write_commit(tree, [tip], "hand-edited record\n")
    assert store.update_ref(ref, tip, sha)
    return sha


def campaign_with_remote(tmp_path: Path) -> tuple[Path, Path]:
    root = make_campaign(tmp_path / "campaign", MANIFEST)
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(root, "remote", "add", "origin", str(bare))
    return root, bare


# --- client pre-push -----------------------------------------------------------------------------------
def test_pre_push_refuses_malformed_record(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_client_hooks(GitStore(root))
    good = add_execution(root)
    bad = add_execution(root)
    append_raw_record(root, bad, b"id: [unclosed\n")
    result = git(root, "push", "origin", "main", f"executions/{good}", f"executions/{bad}", check=False)
    assert result.returncode != 0
    assert f"executions/{bad}: malformed execution record" in result.stderr
    assert "fix it with a new commit" in result.stderr
    assert git(bare, "for-each-ref", "refs/heads/executions/").stdout == ""  # nothing pushed
    # the good one alone goes through, with its code
    git(root, "push", "origin", "main", f"executions/{good}")
    assert git(bare, "rev-parse", f"executions/{good}").stdout.strip() == GitStore(root).ref(f"refs/heads/executions/{good}")


def test_pre_push_refuses_code_commit_missing_on_remote(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_client_hooks(GitStore(root))
    git(root, "push", "-q", "origin", "main")
    git(root, "checkout", "-q", "-b", "experiment")
    (root / "new.txt").write_text("new code\n")
    git(root, "add", "new.txt")
    git(root, "commit", "-q", "-m", "unpushed code")
    execution = add_execution(root)
    result = git(root, "push", "origin", f"executions/{execution}", check=False)
    assert result.returncode != 0
    assert "is neither in this push nor on origin" in result.stderr
    assert "git push origin main" in result.stderr or "expegit push" in result.stderr
    # pushing the code branch along makes it acceptable
    git(root, "push", "-q", "origin", "experiment", f"executions/{execution}")
    assert git(bare, "rev-parse", "--verify", f"executions/{execution}", check=False).returncode == 0


# --- server pre-receive / post-receive through a path -----------------------------------------------------
def rewrite_execution(root: Path, execution_id: str) -> None:
    """Replace the branch's tip by a sibling commit: a non-fast-forward."""
    store = GitStore(root)
    ref = f"refs/heads/executions/{execution_id}"
    tip = store.ref(ref)
    parent = store.parents(tip)[0]
    sha = store.write_commit(store.tree_of(tip), [parent], "rewritten\n")
    assert store.update_ref(ref, tip, sha)


def test_pre_receive_append_only_with_override(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    assert git(bare, "config", "receive.advertisePushOptions").stdout.strip() == "true"
    execution = add_execution(root)
    git(root, "push", "-q", "origin", "main", f"executions/{execution}")
    branch = f"executions/{execution}"

    rewrite_execution(root, execution)
    forced = git(root, "push", "--force", "origin", branch, check=False)
    assert forced.returncode != 0 and "non-fast-forward update refused" in forced.stderr
    deleted = git(root, "push", "origin", f":{branch}", check=False)
    assert deleted.returncode != 0 and "deleting an execution branch is refused" in deleted.stderr
    assert git(bare, "rev-parse", "--verify", branch, check=False).returncode == 0

    # an appended journal commit is a fast-forward and passes; a malformed one does not
    append_raw_record(root, execution, b"not: a record\n")
    malformed = git(root, "push", "--force", "origin", branch, check=False)
    assert malformed.returncode != 0 and "malformed execution record" in malformed.stderr

    # the administrator's override: a push option (the record is still checked, so fix it first)
    good = add_execution(root)
    git(root, "push", "-q", "origin", f"executions/{good}")
    rewrite_execution(root, good)
    git(root, "push", "-q", "--force", "-o", common.OVERRIDE_OPTION, "origin", f"executions/{good}")
    git(root, "push", "-q", "-o", common.OVERRIDE_OPTION, "origin", f":executions/{good}")
    assert git(bare, "rev-parse", "--verify", f"executions/{good}", check=False).returncode != 0
    # ... or the repository's config switch
    git(bare, "config", common.OVERRIDE_CONFIG, "true")
    git(root, "push", "-q", "origin", f":{branch}")


def test_post_receive_renders_report(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    site = tmp_path / "site"
    install_server_hooks(bare, report_dir=site)
    executions = [add_execution(root) for _ in range(3)]
    result = git(root, "push", "origin", "main", *[f"executions/{i}" for i in executions])
    assert "regenerating the report" in result.stderr
    from expegit.report import parse_report_data

    deadline = time.monotonic() + 60
    records: list = []
    while time.monotonic() < deadline:
        if (site / "index.html").exists():
            records = parse_report_data(site / "index.html")
            if len(records) == 3:
                break
        time.sleep(0.2)
    log = (bare / "orchestra" / "report.log")
    assert sorted(r["id"] for r in records) == sorted(executions), log.read_text() if log.exists() else "no log"
    assert "rendered" in log.read_text()


# --- through the loopback sshd, as the devcluster's `orchestra` user ------------------------------------------
def _ssh(devcluster, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-F", devcluster.ssh_config, devcluster.host, command],
                          capture_output=True, text=True, timeout=60)


def test_server_hooks_over_ssh(tmp_path: Path, devcluster) -> None:
    """The server's python3 (/usr/bin/python3) cannot import Orchestra: the shim falls back to its copy."""
    if os.geteuid() != 0:
        reason = "installing hooks into the orchestra user's home needs root"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: cluster tests must not be skipped)")
        pytest.skip(reason)
    name = f"hooks-{os.getpid()}-{time.monotonic_ns()}.git"
    home = Path("/home/orchestra")
    bare = home / name
    try:
        git(home, "init", "-q", "--bare", str(bare))  # as root, then handed over (git refuses foreign repos)
        install_server_hooks(bare, interpreter="/usr/bin/python3")
        subprocess.run(["chown", "-R", "orchestra:", str(bare)], check=True)
        root = make_campaign(tmp_path / "campaign", MANIFEST)
        url = f"ssh://{devcluster.host}/home/orchestra/{name}"
        git(root, "remote", "add", "origin", url)
        env = dict(os.environ, GIT_SSH_COMMAND=f"ssh -F {shlex.quote(devcluster.ssh_config)}")

        def push(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)

        execution = add_execution(root)
        ok = push("push", "origin", "main", f"executions/{execution}")
        assert ok.returncode == 0, ok.stderr
        rewrite_execution(root, execution)
        forced = push("push", "--force", "origin", f"executions/{execution}")
        assert forced.returncode != 0 and "non-fast-forward update refused" in forced.stderr, forced.stderr
        deleted = push("push", "origin", f":executions/{execution}")
        assert deleted.returncode != 0 and "deleting an execution branch is refused" in deleted.stderr
        bad = add_execution(root)
        append_raw_record(root, bad, b"id: 12\n")
        malformed = push("push", "origin", f"executions/{bad}")
        assert malformed.returncode != 0 and "malformed execution record" in malformed.stderr, malformed.stderr
        forced_ok = push("push", "--force", "-o", common.OVERRIDE_OPTION, "origin", f"executions/{execution}")
        assert forced_ok.returncode == 0, forced_ok.stderr
    finally:
        _ssh(devcluster, f"rm -rf {shlex.quote(name)}")
