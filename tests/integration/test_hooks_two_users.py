"""Two unix users push to one shared bare remote over the loopback sshd, as collaborators do.

The dev cluster's main user is the remote's administrator-approved rewriter (``orchestra.rewriteUsers``);
its peer user (``ORCHESTRA_DEVCLUSTER_PEER``, host alias ``ORCHESTRA_DEVCLUSTER_PEER_HOST``) is an ordinary
collaborator. Both are members of the remote's group, which owns the repository (``--shared=group``).
"""
from __future__ import annotations

import os
import pwd
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from expegit.collaboration import install_server_hooks
from expegit.gitstore import GitStore
from orchestra_hooks import common, rewrite_policy
from tests.helpers import GIT_ENV, git, make_campaign
from tests.integration.test_hooks import MANIFEST, add_execution, rewrite_execution

SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "cluster" / "devcluster.sh"
OPTION = ("-o", common.OVERRIDE_OPTION)


def parse_exports(text: str) -> dict[str, str]:
    """``export K=V`` lines (what `devcluster.sh env` prints) -> {K: V}."""
    found = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            found[key.strip()] = value.strip()
    return found


def test_parse_exports() -> None:
    assert parse_exports("export A=1\n# c\nexport B=/x y\nC=3\n") == {"A": "1", "B": "/x y"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + " (CI=true: cluster tests must not be skipped)")
    pytest.skip(reason)


class SharedRemote:
    def __init__(self, devcluster, bare: Path, cluster: dict[str, str]) -> None:
        self.bare = bare
        self.owner = cluster["ORCHESTRA_DEVCLUSTER_USER"]
        self.peer = cluster["ORCHESTRA_DEVCLUSTER_PEER"]
        self.group = cluster["ORCHESTRA_DEVCLUSTER_GROUP"]
        self.owner_url = f"ssh://{devcluster.host}{bare}"
        self.peer_url = f"ssh://{cluster['ORCHESTRA_DEVCLUSTER_PEER_HOST']}{bare}"
        self.env = dict(os.environ, **GIT_ENV, GIT_SSH_COMMAND=f"ssh -F {shlex.quote(devcluster.ssh_config)}")

    def push(self, root: Path, url: str, *refspecs: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "push", *options, url, *refspecs], cwd=root, env=self.env,
                              capture_output=True, text=True, timeout=120)

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """git in the bare repository as root, which git would refuse there (another user owns it)."""
        return subprocess.run(["git", "-c", "safe.directory=*", "-C", str(self.bare), *args], capture_output=True,
                              text=True, check=check)

    def peer_config(self, *args: str) -> None:
        """Edit the peer's own ~/.gitconfig on the server (root writes it; the file stays the peer's)."""
        path = Path(pwd.getpwnam(self.peer).pw_dir) / ".gitconfig"
        subprocess.run(["git", "config", "--file", str(path), *args], check=False, capture_output=True)
        subprocess.run(["chown", f"{self.peer}:", str(path)], check=False)  # git wrote a new file, root's

    def has(self, branch: str) -> bool:
        return self.git("rev-parse", "--verify", "-q", branch, check=False).returncode == 0

    def log(self) -> list[rewrite_policy.LogEntry]:
        path = Path(rewrite_policy.log_path(str(self.bare)))
        return [rewrite_policy.parse_log_entry(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def shared_remote(devcluster) -> Iterator[SharedRemote]:
    if os.geteuid() != 0:
        _unavailable("making a shared remote in the cluster user's home needs root")
    out = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout
    cluster = parse_exports(out)
    peer_host = cluster.get("ORCHESTRA_DEVCLUSTER_PEER_HOST", "")
    probe = subprocess.run(["ssh", "-F", devcluster.ssh_config, "-o", "BatchMode=yes", peer_host, "true"],
                           capture_output=True, text=True, timeout=60) if peer_host else None
    if probe is None or probe.returncode != 0:
        _unavailable("the dev cluster has no peer user (brought up by an older devcluster.sh?): run "
                     "`sudo bash tests/cluster/devcluster.sh up` again, which adds it without a restart"
                     + (f" ({probe.stderr.strip()})" if probe is not None else ""))
    owner = cluster["ORCHESTRA_DEVCLUSTER_USER"]
    bare = Path(pwd.getpwnam(owner).pw_dir) / f"hooks-shared-{os.getpid()}-{time.monotonic_ns()}.git"
    try:
        git(bare.parent, "init", "-q", "--bare", "--shared=group", str(bare))
        # /usr/bin/python3: what the server's users can run (the test's virtualenv is root's).
        install_server_hooks(bare, interpreter="/usr/bin/python3")
        git(bare, "config", common.REWRITE_USERS_CONFIG, owner)  # the administrator's decision
        subprocess.run(["chown", "-R", f"{owner}:{cluster['ORCHESTRA_DEVCLUSTER_GROUP']}", str(bare)], check=True)
        remote = SharedRemote(devcluster, bare, cluster)
        yield remote
    finally:
        subprocess.run(["rm", "-rf", str(bare)], check=False)
        if "remote" in locals():
            remote.peer_config("--unset-all", common.REWRITE_USERS_CONFIG)


def test_only_the_administrators_choice_lets_a_user_rewrite_results(tmp_path: Path, shared_remote: SharedRemote) -> None:
    remote = shared_remote
    owner_repo = make_campaign(tmp_path / "owner", MANIFEST)
    mine = add_execution(owner_repo)
    ok = remote.push(owner_repo, remote.owner_url, "main", f"executions/{mine}")
    assert ok.returncode == 0, ok.stderr

    # the peer collaborates through the same group-owned repository: a new execution goes in
    peer_repo = tmp_path / "peer"
    subprocess.run(["git", "clone", "-q", "-b", "main", remote.owner_url, str(peer_repo)], env=remote.env, check=True,
                   capture_output=True, timeout=120)
    theirs = add_execution(peer_repo)
    ok = remote.push(peer_repo, remote.peer_url, f"executions/{theirs}")
    assert ok.returncode == 0, ok.stderr

    # ... but can neither delete nor rewrite anything, even with the push option, even their own, even
    # naming themselves in their own git config on the server (which a pusher with a shell there controls)
    remote.peer_config("--add", common.REWRITE_USERS_CONFIG, remote.peer)
    plain = remote.push(peer_repo, remote.peer_url, f":refs/heads/executions/{mine}")
    assert plain.returncode != 0 and "deleting an execution branch is refused" in plain.stderr, plain.stderr
    assert "administrator" in plain.stderr and common.OVERRIDE_OPTION not in plain.stderr
    for execution in (mine, theirs):
        refused = remote.push(peer_repo, remote.peer_url, f":refs/heads/executions/{execution}", options=OPTION)
        assert refused.returncode != 0, refused.stderr
        assert f"{remote.peer} may not rewrite results" in refused.stderr, refused.stderr
    rewrite_execution(peer_repo, theirs)
    forced = remote.push(peer_repo, remote.peer_url, f"executions/{theirs}", options=("--force", *OPTION))
    assert forced.returncode != 0 and "non-fast-forward update refused" in forced.stderr, forced.stderr
    assert remote.has(f"executions/{mine}") and remote.has(f"executions/{theirs}")
    assert remote.log() == []

    # the allowed user: told what to add, then allowed with it, and logged
    deleted = remote.push(owner_repo, remote.owner_url, f":refs/heads/executions/{mine}")
    assert deleted.returncode != 0 and f"-o {common.OVERRIDE_OPTION}" in deleted.stderr, deleted.stderr
    old_mine = remote.git("rev-parse", f"executions/{mine}").stdout.strip()
    deleted = remote.push(owner_repo, remote.owner_url, f":refs/heads/executions/{mine}", options=OPTION)
    assert deleted.returncode == 0, deleted.stderr
    assert not remote.has(f"executions/{mine}")
    subprocess.run(["git", "fetch", "-q", remote.owner_url, f"executions/{theirs}"], cwd=owner_repo, env=remote.env,
                   check=True, capture_output=True, timeout=120)
    git(owner_repo, "branch", "-q", f"executions/{theirs}", "FETCH_HEAD")
    old_theirs = GitStore(owner_repo).ref(f"refs/heads/executions/{theirs}")
    rewrite_execution(owner_repo, theirs)
    new_theirs = GitStore(owner_repo).ref(f"refs/heads/executions/{theirs}")
    forced = remote.push(owner_repo, remote.owner_url, f"executions/{theirs}", options=("--force", *OPTION))
    # `git init --shared` made git itself refuse non-fast-forwards: the hook says so, and logs nothing
    assert forced.returncode != 0 and "receive.denyNonFastForwards" in forced.stderr, forced.stderr
    assert len(remote.log()) == 1
    remote.git("config", "--unset", "receive.denyNonFastForwards")
    forced = remote.push(owner_repo, remote.owner_url, f"executions/{theirs}", options=("--force", *OPTION))
    assert forced.returncode == 0, forced.stderr
    assert [(e.user, e.action, e.ref, e.old, e.new) for e in remote.log()] == [
        (remote.owner, "delete", f"refs/heads/executions/{mine}", old_mine, common.ZERO),
        (remote.owner, "rewrite", f"refs/heads/executions/{theirs}", old_theirs, new_theirs)]

    # the log is the group's: once the administrator lists the peer, the peer's rewrite is appended to it
    log_path = Path(rewrite_policy.log_path(str(remote.bare)))
    assert log_path.stat().st_mode & 0o020, oct(log_path.stat().st_mode)
    remote.git("config", "--add", common.REWRITE_USERS_CONFIG, remote.peer)
    deleted = remote.push(peer_repo, remote.peer_url, f":refs/heads/executions/{theirs}", options=OPTION)
    assert deleted.returncode == 0, deleted.stderr
    assert [(e.user, e.action) for e in remote.log()][-1] == (remote.peer, "delete")
