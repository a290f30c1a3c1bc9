"""The few questions asked of the `git` binary itself: revision expressions and `git diff --stat`.

dulwich is the object layer everywhere else; it reads no revision syntax (``HEAD~2``, short ids, tags'
``^{commit}``) and writes no diffstat, and users expect exactly git's answers to both, so git answers them.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from orchestra.errors import RepositoryError, UsageError


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=root, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepositoryError(f"cannot run git: {exc}", hint="install git and put it on PATH") from exc


def rev_parse(root: Path, revision: str) -> str:
    """The full commit id ``revision`` names (any of git's spellings), or UsageError."""
    if revision.startswith("-"):
        raise UsageError(f"--at {revision}: not a commit", hint="give a commit id, a branch or a tag")
    result = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{revision}^{{commit}}")
    sha = result.stdout.strip()
    if result.returncode != 0 or len(sha) != 40:
        raise UsageError(f"--at {revision}: names no commit of this repository",
                         hint="give a commit id, a branch or a tag (`git log` lists them)")
    return sha


def diff_stat(root: Path, a: str, b: str) -> str:
    """`git diff --stat A B` between two code commits ('' when they are the same)."""
    if a == b:
        return ""
    result = _git(root, "diff", "--stat", "--no-color", "--no-ext-diff", a, b, "--")
    if result.returncode != 0:
        return f"(git diff --stat failed: {result.stderr.strip().splitlines()[0] if result.stderr.strip() else ''})"
    return result.stdout.rstrip("\n")
