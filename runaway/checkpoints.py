"""Where an execution's checkpoint directory lives on a place, and the commands that prepare and remove it.

The directory is ``<workdir>/checkpoints/<id>/``, beside ``runs/`` and ``code/``: a run directory is
recycled between attempts, the checkpoint directory is not, so the next attempt finds what the last one
saved. On the local profile that is the campaign's ``.git/orchestra/checkpoints/<id>/`` (never committed);
on a Slurm or PBS profile the workdir is on the filesystem the nodes share, so an attempt on any node of
any allocation finds it in place. Where a profile's places share nothing (``shared: false``, the default
of ssh hosts), runaway/checkpoint_copy.py keeps the controller's copy and restores it before an attempt.
Pure render and parse functions (tests/unit/test_walltime.py), and the local twins for this machine.
"""
from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

ENV_NAME = "ORCHESTRA_CHECKPOINT_DIR"


def checkpoint_dir(workdir: str, execution_id: str) -> str:
    return f"{workdir.rstrip('/')}/checkpoints/{execution_id}"


def render_prepare(directory: str) -> str:
    """Make the directory and print the modification time of its newest file (nothing when empty): the
    checkpoint the attempt resumes from, named in its journal commit. One command per launch, and only
    for executions that declare `checkpoint:`."""
    d = shlex.quote(directory)
    return (f"mkdir -p {d} && find {d} -type f -exec stat -c %Y {{}} + 2>/dev/null | sort -n | tail -n 1")


def parse_prepare(text: str) -> float | None:
    """The newest checkpoint file's epoch from render_prepare's output; None for an empty directory."""
    words = text.split()
    if not words:
        return None
    try:
        return float(words[-1])
    except ValueError:
        return None


def guarded(command: str, signal: str) -> str:
    """The command line of a checkpointing execution: the wrapper shell (which evaluates the command in
    itself, runaway/rundir.py) catches the warning instead of dying of it. A caught signal waits until
    the foreground command ends, so the wrapper still writes the exit code once the program has saved
    its checkpoint; and a caught signal is reset to its default in the program, which gets it as sent
    (an ignored one would stay ignored there). ``signal`` is a name from walltime.signal_name."""
    assert signal.isalnum(), signal
    return f"trap : {signal}; {command}"


def render_remove(directory: str) -> str:
    """Remove the directory and what a restore (runaway/checkpoint_copy.py) may have left beside it."""
    d = shlex.quote(directory)
    return f"rm -rf -- {d} {d}.old {d}.incoming.*"


def prepare_local(directory: Path) -> float | None:
    """render_prepare's twin on this machine."""
    directory.mkdir(parents=True, exist_ok=True)
    newest: float | None = None
    for root, _dirs, files in os.walk(directory):
        for name in files:
            try:
                stamp = os.stat(os.path.join(root, name)).st_mtime
            except OSError:
                continue
            newest = stamp if newest is None else max(newest, stamp)
    return newest


def remove_local(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


__all__ = ["ENV_NAME", "checkpoint_dir", "parse_prepare", "prepare_local", "remove_local", "render_prepare",
           "render_remove"]
