"""Paging long output on a terminal, the way git does: `expegit list` of 100,000 executions should open
at its first screen, not scroll 100,000 lines past the user."""
from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import TextIO


def pager_command(environ: dict[str, str] | os._Environ[str]) -> list[str] | None:
    """git's choice: $GIT_PAGER, then $PAGER, then ``less``; an empty value or ``cat`` means no pager."""
    for name in ("GIT_PAGER", "PAGER"):
        if name in environ:
            text = environ[name].strip()
            return None if text in ("", "cat") else shlex.split(text)
    return ["less"]


@contextlib.contextmanager
def paged_stdout(*, enabled: bool = True) -> Iterator[TextIO]:
    """stdout, or the stdin of a pager when stdout is a terminal. ``LESS=FRX`` as git sets it: less quits at
    once when everything fits on one screen and leaves the output on the terminal."""
    command = pager_command(os.environ) if enabled and sys.stdout.isatty() else None
    if command is None:
        yield sys.stdout
        return
    env = dict(os.environ)
    env.setdefault("LESS", "FRX")
    try:
        pager = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
    except OSError:
        yield sys.stdout  # no such pager: print, as git does when it cannot start one
        return
    assert pager.stdin is not None
    out = io.TextIOWrapper(pager.stdin, encoding=sys.stdout.encoding or "utf-8", errors="replace")
    try:
        yield out
        out.flush()
    except BrokenPipeError:
        pass  # the user quit the pager before the end: not an error
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            out.close()
        pager.wait()
