"""Shell completion of execution ids (argcomplete completer; see orchestra.cli for the wiring)."""
from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

__all__ = ["complete_execution_ids", "complete_profiles"]


def complete_profiles(prefix: str, parsed_args: Any = None, **kwargs: Any) -> Iterable[str]:
    """runaway's completer, imported on a Tab press only: every `expegit` command builds the parser that
    names this function, and importing runaway.profiles up front cost `expegit status` a tenth of its time."""
    from runaway.completion import complete_profiles as complete

    return complete(prefix, parsed_args, **kwargs)


def complete_execution_ids(prefix: str, parsed_args: Any = None, **_kwargs: Any) -> Iterable[str]:
    """Ids of the campaign's execution branches starting with ``prefix``: one `git for-each-ref`, which
    reads packed-refs and stays fast on 100,000 branches, where loading records would not."""
    directory = getattr(parsed_args, "directory", None) or "."
    try:
        out = subprocess.run(["git", "-C", directory, "for-each-ref", "--format=%(refname:lstrip=3)",
                              f"refs/heads/executions/{prefix}*" if prefix else "refs/heads/executions/"],
                             capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in out.splitlines() if line.startswith(prefix)]
