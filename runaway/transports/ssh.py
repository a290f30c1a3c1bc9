"""The SSH transport: a place reached through :class:`runaway.hosts.Host` (its public API only).

Why a wrapper and not Host itself: Host is SSH's whole machinery (connections, channels, host keys) and
changes with it; launchers and providers see only the :class:`runaway.transports.Transport` operations,
so the rest of runaway never learns which SSH library is underneath. Importing this module imports
paramiko: only remote profiles do (runaway.factory imports it late).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..hosts import Host, RemoteCommandError, Result, Session

if TYPE_CHECKING:
    from ..profiles import SSHProfile, SlurmProfile


class SSHTransport:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.name = host.name

    @property
    def commands(self) -> int:
        """Channels opened so far (tests check that polls and launches do not scale with executions)."""
        return self.host.commands

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None,
            warn: bool = False) -> Result:
        return self.host.run(cmd, stdin=stdin, timeout=timeout, warn=warn)

    def put_stream(self, chunks: Iterable[bytes], remote_cmd: str, timeout: float | None = None,
                   warn: bool = False) -> Result:
        return self.host.put_stream(chunks, remote_cmd, timeout=timeout, warn=warn)

    def get_stream(self, remote_cmd: str, timeout: float | None = None) -> Iterator[bytes]:
        return self.host.get_stream(remote_cmd, timeout=timeout)

    def open_session(self, remote_cmd: str) -> Session:
        return self.host.open_session(remote_cmd)

    def check(self) -> None:
        self.host.check()

    def describe(self) -> str:
        spec = getattr(self.host, "spec", None)
        if spec is None:
            return self.name
        return f"{spec.user}@{spec.hostname}:{spec.port}"

    def close(self) -> None:
        self.host.close()

    def __repr__(self) -> str:
        return f"SSHTransport({self.name!r})"


def connect(destination: str, profile: "SSHProfile | SlurmProfile") -> SSHTransport:
    """The transport to ``destination`` with the profile's SSH settings (nothing connects yet)."""
    return SSHTransport(Host(destination, ssh_config=profile.ssh_config, connections=profile.connections,
                             channels_per_connection=profile.channels_per_connection,
                             accept_new_host_keys=profile.accept_new_host_keys))


__all__ = ["RemoteCommandError", "SSHTransport", "connect"]
