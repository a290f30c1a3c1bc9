"""The error hierarchy every Orchestra component raises.

One root class so the CLIs can catch "a user's mistake or an environment problem" in one place and
print one line; one subclass per failure a user can act on, each with its own exit code so scripts can
tell them apart without parsing messages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable


class OrchestraError(Exception):
    """Root of every error a user can act on. ``str(err)`` is the one-line message the CLI prints."""

    exit_code: int = 10

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message


class ManifestError(OrchestraError):
    """orchestra.yaml is malformed or inconsistent; the message starts with ``file:line:col:``."""

    exit_code = 3

    def __init__(self, message: str, *, path: str = "orchestra.yaml", line: int | None = None,
                 col: int | None = None, hint: str | None = None) -> None:
        self.path = path
        self.line = line
        self.col = col
        where = path if line is None else f"{path}:{line}:{col if col is not None else 1}"
        super().__init__(f"{where}: {message}", hint=hint)


class ProfileError(OrchestraError):
    """A profile is unknown or invalid (manifest or ~/.config/orchestra/profiles)."""

    exit_code = 4


class ResourceError(ProfileError):
    """What an execution asks for (``resources:``, ``--gpus``) fits no node of its profile: refused before
    anything is created. A ProfileError (the fix is a smaller request or bigger nodes) with its own exit
    code, so a script can tell "too big for this profile" from "this profile is broken"."""

    exit_code = 11


class ConnectionError_(OrchestraError):
    """A host could not be reached or authenticated (including host-key mismatches)."""

    exit_code = 5


class SchedulerError(OrchestraError):
    """A scheduler command (sbatch, squeue, a command template) failed or answered nonsense."""

    exit_code = 6


class ExecutionError(OrchestraError):
    """An execution could not be created, launched or collected (not: its program exited non-zero)."""

    exit_code = 7


class RepositoryError(OrchestraError):
    """The campaign repository is missing, dirty, or a ref moved under us."""

    exit_code = 8


class SearchError(OrchestraError):
    """A parameter search is misdeclared or cannot continue."""

    exit_code = 9


class UsageError(OrchestraError):
    """The command line itself is wrong in a way argparse cannot see (bad -p syntax, unknown id)."""

    exit_code = 2


def did_you_mean(word: object, choices: "Iterable[str]") -> str | None:
    """The hint for a misspelt key or value, shared so that manifests and profiles suggest alike."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    if not close and isinstance(word, str):  # a case slip (`Parameters`) is closer than difflib thinks
        close = [c for c in map(str, choices) if c.lower() == word.lower()][:1]
    return f"did you mean {close[0]!r}?" if close else None


# Exit codes that are not errors: kept here so every CLI agrees on them.
EXIT_OK = 0
EXIT_EXECUTIONS_FAILED = 1
EXIT_INTERRUPTED = 130

__all__ = [
    "OrchestraError", "ManifestError", "ProfileError", "ResourceError", "ConnectionError_", "SchedulerError",
    "ExecutionError", "RepositoryError", "SearchError", "UsageError",
    "EXIT_OK", "EXIT_EXECUTIONS_FAILED", "EXIT_INTERRUPTED", "did_you_mean",
]
