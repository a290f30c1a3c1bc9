"""What every backend agrees on about a run directory: the wrapper that launches an execution detached
and the files it leaves behind (pid, exit_code, stdout, stderr under ``.orchestra/``).

The wrapper is POSIX sh so it runs on any host. The user's command runs in a subshell so that its own
``exit`` or ``cd`` cannot skip the exit-code bookkeeping; ``exit_code`` is written last, so a reader that
finds it (non-empty) knows the execution is over.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

META_DIR = ".orchestra"
PID_FILE = f"{META_DIR}/pid"
EXIT_FILE = f"{META_DIR}/exit_code"
STDOUT_FILE = f"{META_DIR}/stdout"
STDERR_FILE = f"{META_DIR}/stderr"
MARKER = "orchestra-run"

# $1: the command line (already quoted by Orchestra). Run with cwd = the run directory.
# Only shell builtins besides the command itself: every extra process costs throughput on short runs.
# The caller creates .orchestra/ first. The user's command is eval'ed in the wrapper shell itself (no
# subshell fork); the EXIT trap writes the exit code even when the command calls `exit` or `cd`s away,
# which is why the directory is captured as an absolute path first.
WRAPPER = (
    '__orchestra="$PWD/.orchestra"; echo $$ > "$__orchestra/pid"; '
    'trap \'echo $? > "$__orchestra/exit_code"\' EXIT; '
    'eval "$1" > "$__orchestra/stdout" 2> "$__orchestra/stderr" < /dev/null'
)


def parse_exit_code(text: str) -> int | None:
    """The wrapper's exit_code file, or None while it is still being written."""
    text = text.strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def match_outputs(run_dir: Path, patterns: tuple[str, ...]) -> list[str]:
    """Relative paths of regular files under ``run_dir`` matching the output globs.

    Symlinks are never followed or collected: an output must be a file the execution wrote in its run
    directory, not a link to something outside it.
    """
    found: set[str] = set()
    for pattern in patterns:
        if pattern.strip("/") in ("", "."):
            pattern = "**"  # the whole run directory, as the agent reads it (pathlib refuses "." here)
        for path in run_dir.glob(pattern):
            try:
                rel = path.relative_to(run_dir)
            except ValueError:
                continue
            if rel.parts and rel.parts[0] == META_DIR:
                continue
            if path.is_symlink() or not path.is_file():
                if path.is_dir() and not path.is_symlink():
                    for sub in path.rglob("*"):
                        sub_rel = sub.relative_to(run_dir)
                        if sub_rel.parts[0] == META_DIR:  # `**` matches the run directory itself
                            continue
                        if sub.is_file() and not sub.is_symlink() and not _has_link(run_dir, sub):
                            found.add(sub_rel.as_posix())
                continue
            if not _has_link(run_dir, path):
                found.add(rel.as_posix())
    return sorted(found)


def _has_link(root: Path, path: Path) -> bool:
    current = path.parent
    while current != root and root in current.parents:
        if current.is_symlink():
            return True
        current = current.parent
    return False


def glob_matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in patterns)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().split(b") ", 1)[1][:1] != b"Z"
    except OSError:
        return True
