"""Transports: how bytes and commands reach a place (fabric/invoke's Context: ``run`` returns a Result).

Two implementations: :mod:`runaway.transports.local` (this machine) and :mod:`runaway.transports.ssh`
(a host reached by SSH, wrapping :class:`runaway.hosts.Host`). Launchers and providers talk only to this
protocol, so a new way of reaching machines (a container exec, a Kubernetes pod) is one new module here
and nothing else changes. Why protocols and not a base class: the SSH transport's types live behind
paramiko, which a local profile must never import.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol


class CommandResult(Protocol):
    """What one command left (``runaway.hosts.Result`` over SSH, ``LocalResult`` here)."""

    @property
    def command(self) -> str: ...

    @property
    def exit_code(self) -> int | None:
        """None: it did not end (timed out, link dropped)."""

    @property
    def stdout(self) -> str: ...

    @property
    def stderr(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    def tail(self, lines: int = 10) -> str: ...


class Session(Protocol):
    """A long-lived command whose stdin and stdout stay open both ways (the agent's attach)."""

    cmd: str

    def send(self, data: bytes) -> None: ...

    def recv(self) -> bytes:
        """The next bytes of stdout; b"" once the command ended or the link dropped."""
        ...

    def stderr_tail(self) -> str: ...

    def close(self) -> None: ...


class Transport(Protocol):
    name: str

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None,
            warn: bool = False) -> CommandResult:
        """Run a shell line; raise on failure unless ``warn``."""
        ...

    def put_stream(self, chunks: Iterable[bytes], remote_cmd: str, timeout: float | None = None,
                   warn: bool = False) -> CommandResult:
        """Stream bytes into a command's stdin (a tar into ``tar -x``)."""
        ...

    def get_stream(self, remote_cmd: str, timeout: float | None = None) -> Iterator[bytes]:
        """A command's stdout as it arrives; raises at the end if the command failed."""
        ...

    def open_session(self, remote_cmd: str) -> Session: ...

    def check(self) -> None:
        """Connect now, raising the error a user can act on."""
        ...

    def describe(self) -> str:
        """Where it reaches, for humans (``user@host:port``)."""
        ...

    def close(self) -> None: ...


__all__ = ["CommandResult", "Session", "Transport"]
