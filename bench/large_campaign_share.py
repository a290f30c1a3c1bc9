"""`expegit push` / `clone` / `pull` of a large campaign over the loopback sshd, beside plain git.

The remote is a bare repository in the devcluster's user's home, reached as ``ssh://devcluster/...``
through the devcluster's ssh_config (tests/cluster/devcluster.sh), with Orchestra's server hooks
installed (pre-receive checks every pushed record; post-receive has no report directory, so renders
nothing), as `expegit hooks install --server` sets a shared remote up. Used by large_campaign_write.py.
"""
from __future__ import annotations

import os
import pwd
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import GIT_ENV

CLUSTER = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))
HOST = os.environ.get("ORCHESTRA_DEVCLUSTER_HOST", "devcluster")
USER = os.environ.get("ORCHESTRA_DEVCLUSTER_USER", "orchestra")


def _env() -> dict[str, str]:
    config = CLUSTER / "ssh" / "ssh_config"
    return dict(os.environ, **GIT_ENV, GIT_SSH_COMMAND=f"ssh -F {shlex.quote(str(config))}")


def _run(command: list[str], cwd: Path) -> float:
    os.sync()
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{command} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def _bare(name: str) -> tuple[Path, str]:
    """A new bare repository owned by the devcluster user, with the server hooks; (path, ssh URL)."""
    from expegit.collaboration import install_server_hooks

    home = Path(pwd.getpwnam(USER).pw_dir)
    bare = home / f"bench-share-{os.getpid()}-{name}.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    install_server_hooks(bare, interpreter="/usr/bin/python3")
    subprocess.run(["chown", "-R", f"{USER}:", str(bare)], check=True)
    return bare, f"ssh://{HOST}{bare}"


def _executions(root: Path) -> int:
    # The bare remotes belong to the devcluster's user: git refuses such a repository without safe.directory.
    out = subprocess.run(["git", "-c", "safe.directory=*", "for-each-ref", "--format=x", "refs/heads/executions"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    return out.count("x")


def share_rows(base: Path, rounds: int, workdir: Path) -> list[str]:
    if not (CLUSTER / "ssh" / "ssh_config").exists():
        return ["", "(push/clone/pull not measured: the devcluster's sshd is not set up here)"]
    expegit = [sys.executable, "-m", "expegit"]
    times: dict[str, list[float]] = {}
    count = _executions(base)

    def timed(key: str, command: list[str], cwd: Path) -> None:
        # Each step as it ends: at 100,000 a round takes about an hour, and a session cut short keeps them.
        times.setdefault(key, []).append(_run(command, cwd))
        print(f"  {key}: {times[key][-1]:.1f}s", flush=True)
    for index in range(rounds):
        source = workdir / f"share-src{index}"
        subprocess.run(["cp", "-a", str(base), str(source)], check=True)
        bares: list[Path] = []
        try:
            # push: every branch to an empty bare remote
            git_bare, git_url = _bare(f"g{index}")
            exp_bare, exp_url = _bare(f"e{index}")
            bares += [git_bare, exp_bare]
            timed("push: git", ["git", "push", "-q", "--mirror", git_url], source)
            subprocess.run(["git", "remote", "add", "origin", exp_url], cwd=source, check=True)
            timed("push: expegit", [*expegit, "push"], source)
            assert _executions(exp_bare) == count, "expegit push left branches behind"
            # clone: everything the remote has
            timed("clone: git", ["git", "clone", "-q", exp_url, str(workdir / f"gclone{index}")], workdir)
            timed("clone: expegit", [*expegit, "clone", exp_url, str(workdir / f"eclone{index}")], workdir)
            assert _executions(workdir / f"eclone{index}") == count
            # the first command in each clone: from the shipped index, and (plain git clone) from every record
            timed("first status: expegit clone", [*expegit, "status"], workdir / f"eclone{index}")
            # pull: a clone of the code branch alone, then every execution branch
            for who in ("g", "e"):
                subprocess.run(["git", "clone", "-q", "--single-branch", "-b", "main", exp_url,
                                str(workdir / f"{who}pull{index}")], env=_env(), check=True)
            timed("pull: git", ["git", "fetch", "-q", "origin", "+refs/heads/*:refs/remotes/origin/*"],
                  workdir / f"gpull{index}")
            timed("pull: expegit", [*expegit, "pull"], workdir / f"epull{index}")
            assert _executions(workdir / f"epull{index}") == count
            print(f"share round {index + 1}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
        finally:
            for bare in bares:
                shutil.rmtree(bare, ignore_errors=True)
            for name in ("share-src", "gclone", "eclone", "gpull", "epull"):
                shutil.rmtree(workdir / f"{name}{index}", ignore_errors=True)
    lines = ["", f"Sharing {count} execution branches over the loopback sshd (`ssh://devcluster/...`) with Orchestra's "
                 f"server hooks installed on the bare remote; seconds, best and median of {rounds}. git does the same "
                 "transfer: `git push --mirror` to an empty bare remote, `git clone`, and `git fetch` of "
                 "every branch into a clone of the code branch alone.", "",
             "| transfer | expegit: best | expegit: median | git: best | git: median | expegit / git (medians) | goal |",
             "|---|---|---|---|---|---|---|"]
    for what in ("push", "clone", "pull"):
        ours, theirs = times[f"{what}: expegit"], times[f"{what}: git"]
        ratio = statistics.median(ours) / statistics.median(theirs)
        lines.append(f"| {what} | {min(ours):.1f} s | {statistics.median(ours):.1f} s | {min(theirs):.1f} s | "
                     f"{statistics.median(theirs):.1f} s | **{ratio:.2f}x** | <= 1.5x |")
    first = times["first status: expegit clone"]
    lines += ["", f"The first command in the `expegit clone` (`expegit status`, its record cache built from the shipped "
                  f"index): best {min(first):.1f} s, median {statistics.median(first):.1f} s (goal < 15 s at 100,000)."]
    return lines
