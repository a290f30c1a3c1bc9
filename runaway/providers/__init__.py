"""Providers: where places come from (Parsl's providers).

- :mod:`.fixed` -- places that simply exist: this machine, a list of SSH hosts with their slots;
- :mod:`.slurm` -- allocations held from Slurm (``sbatch`` of a placeholder job, ``squeue``, ``scancel``);
- :mod:`.command` -- allocations from any scheduler driven by a profile's command templates (PBS/Torque);
- :mod:`.oar` -- allocations from OAR (``oarsub``/``oarstat``/``oardel``), rendered and parsed here.

An allocation provider's operations are :class:`AllocationProvider`'s: start an allocation, say the
state of those held (with their nodes), cancel them, and say how a command reaches one node of one
(the prefix the srun launcher and the node agents use). All of them run on the frontend through a
transport. Which allocations a controller holds is recorded beside the campaign by
runaway/allocation_ledger.py, so a resume gives back what a dead controller left.

Room for what comes next: a :class:`JobState` may carry each node's capacity (cpus, gpus, memory) for
the controller to pack executions by resources; ``time_left`` is what a checkpoint signal before
walltime needs.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..profiles import AllocationSpec
    from ..transports import Transport


@dataclasses.dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, ... (Slurm's words; other providers map theirs onto them)
    time_left: float | None  # seconds; None when unlimited or unknown
    nodes: tuple[str, ...]
    reason: str = ""
    # When it (last) started, as the scheduler writes it; "" when unknown. A job requeued and started
    # again between two polls (preemption, `scontrol requeue`) shows RUNNING both times, with a new start.
    started: str = ""

    @property
    def running(self) -> bool:
        return self.state in ("RUNNING",)

    @property
    def pending(self) -> bool:
        return self.state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
                              "SUSPENDED")


# States after which an allocation's nodes are gone.
ENDED_STATES = frozenset(("COMPLETING", "COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                          "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"))


class AllocationProvider(Protocol):
    """Where allocations come from: every command runs on the frontend ``host``."""

    # Part of the command line of the process that reaches a node (its pid is the launcher pid of a run
    # directory): "srun" for Slurm, "" when a template's launcher cannot be recognised.
    step_marker: str
    # Whether the agent can run on the nodes as one step each (needs an overlapping step launcher).
    supports_agent: bool
    # Whether placeholder jobs write a ready file under <workdir>/ready (removed with the allocation).
    writes_ready_files: bool

    def prepare(self, host: "Transport", workdir: str) -> None:
        """Once the frontend workdir exists (Slurm: the directory its placeholder jobs write into)."""

    def submit(self, host: "Transport", spec: "AllocationSpec", job_name: str) -> str:
        """Start an allocation; return its job id."""

    def poll(self, host: "Transport", job_ids: list[str]) -> dict[str, JobState]:
        """The state (and nodes) of the given allocations; one missing from the answer has ended."""

    def cancel(self, host: "Transport", job_ids: list[str]) -> None: ...

    def launcher(self, job_id: str, node: str) -> str:
        """A command prefix (ending with a space) that runs what follows on ``node`` of ``job_id``."""

    def wait_ready(self, host: "Transport", job_id: str, timeout: float) -> tuple[float, list[str]] | None:
        """Block until the allocation says it started ((start epoch, nodes)); None when it cannot tell."""


__all__ = ["AllocationProvider", "ENDED_STATES", "JobState"]
