"""Test helpers: real git repositories built with the real `git` binary, and the CLIs run as a user would."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test Researcher", "GIT_AUTHOR_EMAIL": "researcher@example.org",
    "GIT_COMMITTER_NAME": "Test Researcher", "GIT_COMMITTER_EMAIL": "researcher@example.org",
}


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=check, capture_output=True, text=True)


def cli(cwd: Path, *args: str, check: bool = False, timeout: float = 300, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `expegit ...` (or another console script given as args[0] with a path) in a subprocess."""
    command = list(args)
    if command[0] in ("expegit", "parasearch", "runaway"):
        command = [sys.executable, "-m", {"expegit": "expegit", "parasearch": "parasearch",
                                          "runaway": "runaway"}[command[0]], *command[1:]]
    full_env = dict(os.environ, **GIT_ENV)
    full_env.update(env or {})
    result = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                            input=input, stdin=None if input is not None else subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


def make_campaign(root: Path, manifest: str, files: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    (root / "orchestra.yaml").write_text(textwrap.dedent(manifest))
    for name, content in (files or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(content))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "campaign code")
    return root


