"""Orchestra's git hooks against real `git push` to real bare repositories (a path, and the loopback sshd)."""
from __future__ import annotations

import os
import shlex
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path

import pytest

from expegit.collaboration import install_client_hooks, install_server_hooks, parse_push_porcelain
from expegit.gitstore import FILE_MODE, GitStore
from expegit.journal import Journal
from orchestra.execution import RECORD_PATH, ExecutionRecord, new_execution_id
from orchestra_hooks import common, rewrite_policy
from orchestra_hooks.install import render_shim
from tests.helpers import git, make_campaign

ROOT = Path(__file__).resolve().parents[2]
GIT = shutil.which("git") or "git"
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
    assert shim.startswith("#!/bin/sh\n")
    assert "'orchestra_hooks.pre_receive'" in shim and "INTERPRETER=/opt/py/bin/python3\n" in shim
    compile(shim, "pre-receive", "exec")
    # a path with a quote survives both languages; one that would end the sh part early is refused
    quoted = render_shim("post-receive", "/opt/it's/python")
    compile(quoted, "post-receive", "exec")
    assert "INTERPRETER='/opt/it'\"'\"'s/python'\n" in quoted
    for bad in ("/a\\b/python", "/a'''b/python", "/a\nb", ""):
        with pytest.raises(ValueError):
            render_shim("pre-receive", bad)


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


ME = rewrite_policy.unix_user()


def pushed_execution(root: Path) -> str:
    execution = add_execution(root)
    git(root, "push", "-q", "origin", "main", f"executions/{execution}")
    return execution


def remote_has(bare: Path, branch: str) -> bool:
    return git(bare, "rev-parse", "--verify", "-q", branch, check=False).returncode == 0


def read_log(bare: Path) -> list[rewrite_policy.LogEntry]:
    path = Path(rewrite_policy.log_path(str(bare)))
    return [rewrite_policy.parse_log_entry(line) for line in path.read_text().splitlines()] if path.exists() else []


def push_as(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    from tests.helpers import GIT_ENV

    full = dict(os.environ, **GIT_ENV, **(env or {}))
    return subprocess.run(["git", *args], cwd=root, env=full, capture_output=True, text=True, timeout=120)


def test_pre_receive_append_only(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    assert git(bare, "config", "receive.advertisePushOptions").stdout.strip() == "true"
    execution = pushed_execution(root)
    branch = f"executions/{execution}"

    rewrite_execution(root, execution)
    forced = git(root, "push", "--force", "origin", branch, check=False)
    assert forced.returncode != 0 and "non-fast-forward update refused" in forced.stderr
    deleted = git(root, "push", "origin", f":{branch}", check=False)
    assert deleted.returncode != 0 and "deleting an execution branch is refused" in deleted.stderr
    # nobody is allowed here: the refusal says whom to ask, and does not advertise the push option
    for refused in (forced, deleted):
        assert "administrator" in refused.stderr and common.OVERRIDE_OPTION not in refused.stderr
    assert remote_has(bare, branch)

    # an appended journal commit is a fast-forward and passes; a malformed one does not
    append_raw_record(root, execution, b"not: a record\n")
    malformed = git(root, "push", "--force", "origin", branch, check=False)
    assert malformed.returncode != 0 and "malformed execution record" in malformed.stderr


def test_push_option_alone_and_client_settings_grant_nothing(tmp_path: Path) -> None:
    """Every knob a pusher holds, alone or together, leaves results untouched."""
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    execution = pushed_execution(root)
    branch = f"executions/{execution}"
    rewrite_execution(root, execution)
    global_config = tmp_path / "pusher.gitconfig"
    global_config.write_text(f"[orchestra]\n\trewriteUsers = {ME}\n\tallowRewrite = true\n"
                             f"\tpusherVariable = GL_USER\n")
    client_env = {"ORCHESTRA_ALLOW_REWRITE": "1", "GIT_CONFIG_GLOBAL": str(global_config), "GL_USER": ME,
                  "GITEA_PUSHER_NAME": ME, "USER": ME, "LOGNAME": ME}
    option = ["-o", common.OVERRIDE_OPTION]
    attempts = [
        ["push", *option, "origin", f":{branch}"],
        ["push", "--force", *option, "origin", branch],
        ["-c", f"orchestra.rewriteUsers={ME}", "-c", "orchestra.allowRewrite=true", "push", *option, "origin",
         f":{branch}"],
    ]
    for args in attempts:
        result = push_as(root, *args, env=client_env)
        assert result.returncode != 0, (args, result.stderr)
        assert "is not enough" in result.stderr and "administrator" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    # the old server-side switch no longer grants anything either
    git(bare, "config", common.LEGACY_OVERRIDE_CONFIG, "true")
    legacy = push_as(root, "push", *option, "origin", f":{branch}")
    assert legacy.returncode != 0 and "is not enough" in legacy.stderr, legacy.stderr
    # a hosting layer's user variable is trusted only once the administrator opts in to it
    git(bare, "config", common.REWRITE_USERS_CONFIG, "alice")
    alice = push_as(root, "push", *option, "origin", f":{branch}",
                    env={"GL_USER": "alice", "GIT_CONFIG_GLOBAL": str(global_config)})
    assert alice.returncode != 0 and f"{ME} may not rewrite" in alice.stderr, alice.stderr
    assert remote_has(bare, branch) and read_log(bare) == []


def test_allowed_user_rewrites_with_the_option_and_is_logged(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    git(bare, "config", "--add", common.REWRITE_USERS_CONFIG, "someone-else")
    git(bare, "config", "--add", common.REWRITE_USERS_CONFIG, f"admin2, {ME}")
    execution = pushed_execution(root)
    branch = f"executions/{execution}"
    old = GitStore(root).ref(f"refs/heads/{branch}")
    rewrite_execution(root, execution)
    new = GitStore(root).ref(f"refs/heads/{branch}")

    # allowed, but without the option: refused, and told exactly what to add
    forced = git(root, "push", "--force", "origin", branch, check=False)
    assert forced.returncode != 0 and f"-o {common.OVERRIDE_OPTION}" in forced.stderr and ME in forced.stderr
    assert read_log(bare) == []

    forced = git(root, "push", "--force", "-o", common.OVERRIDE_OPTION, "origin", branch, check=False)
    assert forced.returncode == 0, forced.stderr
    assert "logged" in forced.stderr
    assert git(bare, "rev-parse", branch).stdout.strip() == new
    deleted = git(root, "push", "-o", common.OVERRIDE_OPTION, "origin", f":{branch}", check=False)
    assert deleted.returncode == 0, deleted.stderr
    assert not remote_has(bare, branch)
    entries = read_log(bare)
    assert [(e.user, e.action, e.ref, e.old, e.new) for e in entries] == [
        (ME, "rewrite", f"refs/heads/{branch}", old, new),
        (ME, "delete", f"refs/heads/{branch}", new, common.ZERO)]
    assert all(e.time.endswith("Z") for e in entries)


def test_pusher_variable_when_the_administrator_opts_in(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    git(bare, "config", common.REWRITE_USERS_CONFIG, "alice")
    git(bare, "config", common.PUSHER_VARIABLE_CONFIG, "GL_USER")
    execution = pushed_execution(root)
    branch = f"executions/{execution}"
    option = ["-o", common.OVERRIDE_OPTION]
    bob = push_as(root, "push", *option, "origin", f":{branch}", env={"GL_USER": "bob"})
    assert bob.returncode != 0 and "bob may not rewrite" in bob.stderr
    alice = push_as(root, "push", *option, "origin", f":{branch}", env={"GL_USER": "alice"})
    assert alice.returncode == 0, alice.stderr
    assert [(e.user, e.action) for e in read_log(bare)] == [("alice", "delete")]


def test_rewrite_that_cannot_be_logged_is_refused(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    install_server_hooks(bare)
    git(bare, "config", common.REWRITE_USERS_CONFIG, ME)
    execution = pushed_execution(root)
    Path(rewrite_policy.log_path(str(bare))).mkdir()  # not a file: the append fails, even for root
    deleted = git(root, "push", "-o", common.OVERRIDE_OPTION, "origin", f":executions/{execution}", check=False)
    assert deleted.returncode != 0 and "cannot record the rewrite" in deleted.stderr
    assert remote_has(bare, f"executions/{execution}")


def wait_for_render(bare: Path, previous: str | None = None) -> str:
    """The text of BARE/orchestra/report.status once a render (after ``previous``) has ended."""
    status = bare / "orchestra" / "report.status"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        text = status.read_text() if status.exists() else None
        if text and text != previous:
            return text
        time.sleep(0.2)
    log = bare / "orchestra" / "report.log"
    raise AssertionError(f"no render ended; log: {log.read_text() if log.exists() else 'none'}")


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
    while "rendered" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # the site is written before the renderer's process ends and the line is logged
    assert "rendered" in log.read_text()


    assert wait_for_render(bare).startswith("ok ")


def plain_shell_env(path: str) -> dict[str, str]:
    """A collaborator's shell: Orchestra's virtualenv not activated, PATH as given."""
    from tests.helpers import GIT_ENV

    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    return dict(env, **GIT_ENV, PATH=path)


def make_venv(path: Path, *, with_orchestra: bool) -> Path:
    """A virtualenv whose python is a symlink to the base interpreter; with Orchestra importable, or bare."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, capture_output=True)
    python = path / "bin" / "python"
    if with_orchestra:
        site_dir = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
        # This test process's site directories (their .pth files included: an editable install) and sys.path.
        dirs = [*site.getsitepackages(), *[p for p in sys.path if p and os.path.isdir(p)], str(ROOT)]
        Path(site_dir, "orchestra-test.pth").write_text(
            "".join(f"import site; site.addsitedir({d!r})\n" for d in dict.fromkeys(dirs)))
    return python


def test_post_receive_finds_its_virtualenv_whatever_the_path(tmp_path: Path) -> None:
    """The venv's python is not on PATH. First there: another python3 that is a link to the same base
    interpreter (a virtualenv without Orchestra), then the base interpreter itself: the issue's shape."""
    root, bare = campaign_with_remote(tmp_path)
    python = make_venv(tmp_path / "venv", with_orchestra=True)
    other = make_venv(tmp_path / "other-venv", with_orchestra=False)
    assert os.path.islink(python) and os.path.realpath(python) == os.path.realpath(other)
    site_dir = tmp_path / "site"
    install_server_hooks(bare, report_dir=site_dir, interpreter=str(python))
    base_bin = os.path.dirname(os.path.realpath(python))
    env = plain_shell_env(f"{other.parent}:{base_bin}:/usr/bin:/bin")
    executions = [add_execution(root) for _ in range(2)]
    result = push_as_env(root, env, "push", "origin", "main", *[f"executions/{i}" for i in executions])
    assert result.returncode == 0, result.stderr
    assert "regenerating the report" in result.stderr and "warning" not in result.stderr, result.stderr
    assert wait_for_render(bare).startswith("ok "), (bare / "orchestra" / "report.log").read_text()
    from expegit.report import parse_report_data

    assert sorted(r["id"] for r in parse_report_data(site_dir / "index.html")) == sorted(executions)
    assert f"with {python}\n" in (bare / "orchestra" / "report.log").read_text()


def push_as_env(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GIT, *args], cwd=root, env=env, capture_output=True, text=True, timeout=120)


def test_post_receive_warns_the_pusher_when_rendering_cannot_work(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    bare_python = make_venv(tmp_path / "bare-venv", with_orchestra=False)
    env = plain_shell_env(f"{bare_python.parent}:/usr/bin:/bin")
    site_dir = tmp_path / "site"
    gone = tmp_path / "gone" / "bin" / "python"
    for interpreter, why in ((gone, f"{gone}, does not exist"), (bare_python, "has no Orchestra installed")):
        install_server_hooks(bare, report_dir=site_dir, interpreter=str(interpreter))
        execution = add_execution(root)
        result = push_as_env(root, env, "push", "origin", "main", f"executions/{execution}")
        assert result.returncode == 0, result.stderr  # the record check still ran, from the stdlib copy
        assert "remote: orchestra: warning: the report" in result.stderr, result.stderr
        assert "NOT regenerated" in result.stderr and why in result.stderr, result.stderr
        assert "--python" in result.stderr
    assert not (bare / "orchestra" / "report.log").exists() and not site_dir.exists()


def test_hooks_without_any_python_say_so(tmp_path: Path) -> None:
    from orchestra_hooks import install as hook_install

    root, bare = campaign_with_remote(tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = plain_shell_env(str(empty))  # git adds its exec-path; no python3 anywhere on PATH
    gone = str(tmp_path / "gone" / "python")
    hook_install.install(bare, ("post-receive",), interpreter=gone)
    git(bare, "config", "orchestra.reportDir", str(tmp_path / "site"))
    execution = add_execution(root)
    result = push_as_env(root, env, "push", "origin", "main", f"executions/{execution}")
    assert result.returncode == 0, result.stderr
    assert "cannot run the post-receive hook" in result.stderr and "report is NOT regenerated" in result.stderr
    hook_install.install(bare, ("pre-receive",), interpreter=gone)
    other = add_execution(root)
    refused = push_as_env(root, env, "push", "origin", f"executions/{other}")
    assert refused.returncode != 0 and "cannot run the pre-receive hook" in refused.stderr, refused.stderr
    assert not remote_has(bare, f"executions/{other}")


def test_post_receive_warns_at_the_next_push_after_a_failed_render(tmp_path: Path) -> None:
    root, bare = campaign_with_remote(tmp_path)
    site_file = tmp_path / "site"
    site_file.write_text("a file where the report directory should be\n")
    install_server_hooks(bare, report_dir=site_file)
    first = git(root, "push", "origin", "main", f"executions/{add_execution(root)}")
    assert "warning" not in first.stderr
    assert wait_for_render(bare).startswith("failed ")
    second = git(root, "push", "origin", f"executions/{add_execution(root)}")
    assert "remote: orchestra: warning: the last report render" in second.stderr, second.stderr
    assert "failed" in second.stderr and "report.log" in second.stderr


# --- through the loopback sshd, as the devcluster's user ------------------------------------------
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
    import pwd

    name = f"hooks-{os.getpid()}-{time.monotonic_ns()}.git"
    user = os.environ.get("ORCHESTRA_DEVCLUSTER_USER", "orchestra")
    home = Path(pwd.getpwnam(user).pw_dir)
    bare = home / name
    try:
        git(home, "init", "-q", "--bare", str(bare))  # as root, then handed over (git refuses foreign repos)
        install_server_hooks(bare, interpreter="/usr/bin/python3")
        git(bare, "config", common.REWRITE_USERS_CONFIG, user)
        subprocess.run(["chown", "-R", f"{user}:", str(bare)], check=True)
        root = make_campaign(tmp_path / "campaign", MANIFEST)
        url = f"ssh://{devcluster.host}{bare}"
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


def test_server_install_tells_the_administrator_who_may_rewrite(tmp_path: Path) -> None:
    from tests.helpers import cli

    _root, bare = campaign_with_remote(tmp_path)
    first = cli(tmp_path, "expegit", "hooks", "install", "--server", str(bare))
    assert first.returncode == 0, first.stderr
    assert "nobody may rewrite or delete results here" in first.stdout
    assert f"config --add {common.REWRITE_USERS_CONFIG} NAME" in first.stdout
    git(bare, "config", common.REWRITE_USERS_CONFIG, "alice bob")
    git(bare, "config", common.LEGACY_OVERRIDE_CONFIG, "true")
    again = cli(tmp_path, "expegit", "hooks", "install", "--server", str(bare))
    assert "rewritten or deleted here by: alice, bob" in again.stdout
    assert f"{common.LEGACY_OVERRIDE_CONFIG} is set but no longer allows anything" in again.stdout
    assert "denyNonFastForwards" not in again.stdout
    git(bare, "config", "receive.denyNonFastForwards", "true")
    shared = cli(tmp_path, "expegit", "hooks", "install", "--server", str(bare))
    assert "receive.denyNonFastForwards is true here" in shared.stdout
    bad = cli(tmp_path, "expegit", "hooks", "install", "--server", str(bare), "--python", "/a\nb")
    assert bad.returncode != 0 and "cannot record the interpreter path" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) <= 2, bad.stderr
