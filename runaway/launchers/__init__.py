"""Launchers: how one execution starts on a place and how it is watched there (Parsl's launchers).

Three implementations, one module each:

- :mod:`.agent` -- a resident agent per place, reached through one long-lived session: a launch is one
  line written, an exit one frame read with its results (ssh hosts, Slurm nodes, this machine);
- :mod:`.shell` -- no agent: a detached wrapper started by a shell command, watched through the files
  of its run directory with one poll per host (ssh hosts);
- :mod:`.srun` -- the shell way through an allocation's node prefix (``srun --jobid --overlap``, or a
  ``command`` profile's ``launch`` template), and the agent started as one srun step per node.

A backend holds ONE launcher and calls it for every execution; which way an execution was started is
the launcher's business (an agent launcher watches what an earlier controller left through files).
Room left for what comes next: the binding of an execution on its node (CUDA_VISIBLE_DEVICES, CPU
affinity, memory limit) is an ``env``/prefix a launcher applies at launch; checkpoint signals before
walltime and live output are launcher operations beside ``stop`` and ``read_output``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ..backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot


@dataclasses.dataclass(frozen=True)
class Place:
    """One machine executions start on: an SSH host, or one node of an allocation held through a host."""

    host: str  # the transport's name (an allocation's frontend)
    node: str | None = None
    allocation: str | None = None  # the scheduler's job id


@dataclasses.dataclass(frozen=True)
class Found:
    """What an earlier controller left for an execution: its run directory, pid, start time, slot."""

    remote_dir: str
    pid: int | None
    started: float | None
    slot: int | None  # the slot index its launch recorded, if any
    node: str | None = None  # the scheduler node its launch recorded, if any


def place_of(slot: Slot) -> Place:
    """The place a slot is on (its host, node and allocation say it all)."""
    return Place(slot.host, slot.node, slot.allocation)


class Launcher(Protocol):
    # Seconds before a "running" journal commit (see Backend.running_commit_delay).
    running_commit_delay: float

    def start(self) -> None:
        """Once the places' workdirs exist: install what launches need (the agent)."""

    def places_up(self, places: Sequence[Place]) -> None:
        """Places that can take executions now (hosts at start, an allocation's nodes when it runs)."""

    def places_down(self, places: Sequence[Place], error: str) -> None:
        """Places that are gone: what runs there is lost with ``error``, now."""

    def launch(self, place: Place, slot: Slot, job: Job, code: CodeArchive, env: Mapping[str, str]) -> RunHandle:
        """Ship the code if the place lacks it and start the job detached."""

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome: ...

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected: ...

    def discard(self, handle: RunHandle) -> None: ...

    def stop(self, handle: RunHandle) -> None: ...

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        """The checkpoint warning before the walltime: ``signal``, then SIGKILL after ``grace``."""

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        """stdout and stderr written since ``offsets`` (bytes already read), while it runs."""

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        """The run directory's ``.orchestra/NAME`` past ``offset`` (intermediate metrics), while it runs."""

    def find(self, execution_id: str, host: str, remote_dir: str | None) -> Found | None:
        """What an earlier controller launched on ``host`` (running or ended), or None; from then on the
        launcher watches that execution through its files (a resume's re-attach)."""

    def drain(self) -> None:
        """Let the last removals reach the places (before close)."""

    def close(self) -> None: ...


__all__ = ["Found", "Launcher", "Place", "place_of"]
