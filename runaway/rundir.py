"""What every backend agrees on about a run directory: the wrapper that launches an execution detached
and the files it leaves behind (pid, exit_code, stdout, stderr under ``.orchestra/``).

The wrapper is POSIX sh so it runs on any host. The user's command runs in a subshell so that its own
``exit`` or ``cd`` cannot skip the exit-code bookkeeping; ``exit_code`` is written last, so a reader that
finds a number in it (blank: not yet; see WRAPPER) knows the execution is over.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

# The agent (stdlib-only, shipped to hosts) holds the one definition of both.
from .agent import META_DIR, result_files

PID_FILE = f"{META_DIR}/pid"
EXIT_FILE = f"{META_DIR}/exit_code"
STDOUT_FILE = f"{META_DIR}/stdout"
STDERR_FILE = f"{META_DIR}/stderr"
# The scheduler node a launch ran on, so a resume records where it ran: written by the shell launch and,
# as a meta file, by the agent (both launchers' run directories are read by the same probe).
NODE_META = "node"
NODE_FILE = f"{META_DIR}/{NODE_META}"
MARKER = "orchestra-run"
STOP_GRACE = 5.0  # seconds between TERM and KILL of an execution's process group

# $1: the command line (already quoted by Orchestra). Run with cwd = the run directory.
# Only shell builtins besides the command itself: every extra process costs throughput on short runs.
# The caller creates .orchestra/ first. The user's command is eval'ed in the wrapper shell itself (no
# subshell fork); the EXIT trap writes the exit code even when the command calls `exit` or `cd`s away,
# which is why the directory is captured as an absolute path first. A command that may replace the shell
# (`exec python train.py`, common in Slurm scripts, or a sourced script that ends in exec) runs in a
# subshell instead: eval'ed here, its exec would replace the wrapper, so no exit code would be written and
# the process the pid file names would lose the marker that stop and kill check before signalling. The
# fork (~0.5 ms) is paid only by commands that say exec, source or `. `. pid and exit_code are written with
# `1<>` (open without truncating) and padded to a fixed width: in a recycled run directory that overwrites
# the last execution's files, which the agent blanked, instead of creating or truncating a file (see
# agent.write_in_place). So an execution is over once exit_code holds a number, not once it exists.
# ORCHESTRA_METRICS is exported here (a builtin, no file created) so that every launcher gives executions
# the same absolute path for their intermediate metrics (expegit/metrics_stream.py).
WRAPPER = (
    '__orchestra="$PWD/.orchestra"; printf \'%-10s\\n\' $$ 1<>"$__orchestra/pid"; '
    'export ORCHESTRA_METRICS="$__orchestra/metrics.jsonl"; '
    'trap \'printf "%-10s\\n" $? 1<>"$__orchestra/exit_code"\' EXIT; '
    'case $1 in *exec*|*source*|*". "*) ( eval "$1" ) ;; *) eval "$1" ;; esac '
    '> "$__orchestra/stdout" 2> "$__orchestra/stderr" < /dev/null'
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

    The agent's reader, so that an execution's outputs are the same whether the agent sent them or
    they are read here after a resume: symlinks are never followed or collected, ``.orchestra/`` never.
    """
    return [rel for rel in result_files(str(run_dir), list(patterns)) if not rel.startswith(META_DIR + "/")]


def glob_matches(path: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(path, p) for p in patterns)
