"""Reading a running execution's run-directory files from another process than its controller.

Used by `expegit logs -f` and `expegit status`: the record on the execution's branch names the place
(profile, host, remote dir); this module reaches it the way the profile does (a file read on this machine,
one ``tail -c +OFFSET`` over SSH for ssh hosts and for a Slurm frontend, whose workdir the nodes share as
runaway already requires for shipping code once per host).

Why read the place directly rather than ask the controller through a local socket: it works when no
controller runs (killed, before `expegit resume`), from a collaborator's shell on the cluster, and for
`runaway` runs, with nothing to serve, authenticate or keep compatible; its cost is one short command per
follow interval on one SSH connection, which the host already allows the controller many of.
"""
from __future__ import annotations

import os
from typing import Protocol

from .launchers.shell import parse_read_meta, render_read_meta
from .profiles import LocalProfile, Profile


class PlaceFiles(Protocol):
    def read(self, remote_dir: str, name: str, offset: int) -> bytes:
        """``<remote_dir>/.orchestra/NAME`` past ``offset``; b"" when it is not there (yet, or any more)."""

    def close(self) -> None: ...


class LocalPlaceFiles:
    def read(self, remote_dir: str, name: str, offset: int) -> bytes:
        try:
            with open(os.path.join(remote_dir, ".orchestra", name), "rb") as stream:
                stream.seek(offset)
                return stream.read()
        except (FileNotFoundError, NotADirectoryError):
            return b""

    def close(self) -> None:
        return None


class RemotePlaceFiles:
    def __init__(self, host: str, profile: Profile) -> None:
        from .transports.ssh import connect

        self.transport = connect(host, profile)  # type: ignore[arg-type]

    def read(self, remote_dir: str, name: str, offset: int) -> bytes:
        return parse_read_meta(self.transport.run(render_read_meta(remote_dir, name, offset), timeout=30).stdout)

    def close(self) -> None:
        self.transport.close()


def place_files(profile: Profile, host: str | None) -> PlaceFiles:
    """The reader for a place of ``profile``: this machine for a local profile, else ``host`` over SSH."""
    if isinstance(profile, LocalProfile) or not host:
        return LocalPlaceFiles()
    return RemotePlaceFiles(host, profile)


__all__ = ["LocalPlaceFiles", "PlaceFiles", "RemotePlaceFiles", "place_files"]
