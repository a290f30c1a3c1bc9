"""Slots made by packing: what a backend that places by resources keeps (the Packer, the binding of each
slot handed out, who waits for capacity) and what it adds to a launch (environment, affinity, memory limit,
the binding line a resume reads back). Shared by the local and SSH backends; the rule itself is pure, in
runaway/placement.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import gevent.event

from orchestra.errors import ResourceError
from orchestra.resources import Request

from .backend import Job, NoSlot, Slot
from .placement import (BINDING_FILE, Binding, NodeCapacity, Packer, bound_env, impossible, memory_limit_line,
                        parse_binding, render_binding)


@dataclasses.dataclass(frozen=True)
class BoundLaunch:
    """A job as it is launched under its binding."""

    job: Job
    env: dict[str, str]
    affinity: tuple[int, ...]
    meta: dict[str, str]
    binding: Binding


class PackedSlots:
    def __init__(self, profile: str, limit_memory: bool | None = None) -> None:
        self.profile = profile
        # RLIMIT_AS counts address space, not memory: CUDA reserves tens of GB of it per process, so an
        # execution with GPUs gets the limit only where the profile asks for it (limit_memory: true).
        self.limit_memory = limit_memory
        self.packer: Packer | None = None
        self.bindings: dict[Slot, Binding] = {}
        self.held: dict[str, Binding] = {}  # of executions re-attached after a restart
        self._freed = gevent.event.Event()
        self._stopping = False

    @property
    def active(self) -> bool:
        return self.packer is not None

    def configure(self, capacities: Sequence[NodeCapacity]) -> None:
        if self.packer is None:
            self.packer = Packer(capacities)

    def check(self, requests: Sequence[Request]) -> None:
        assert self.packer is not None, "configure() first"
        nodes = self.packer.capacities()
        for request in dict.fromkeys(requests):
            why = impossible(request, nodes, self.profile)
            if why is not None:
                raise ResourceError(why)

    def acquire(self, requests: Sequence[Request], wait: bool = True) -> tuple[int, Slot] | None:
        assert self.packer is not None, "configure() first"
        while True:
            if self._stopping:
                raise NoSlot()
            chosen = self.packer.choose(requests)
            if chosen is not None:
                index, binding = chosen
                used = {slot.index for slot in self.bindings if slot.host == binding.node}
                number = next(i for i in range(len(used) + 1) if i not in used)  # the lowest free on the node
                slot = Slot(binding.node, number)
                self.bindings[slot] = binding
                return index, slot
            if not wait:
                return None
            self._freed.clear()
            self._freed.wait()

    def release(self, slot: Slot) -> bool:
        """Give a packed slot's binding back; False for a slot that is not one."""
        binding = self.bindings.pop(slot, None)
        if binding is None or self.packer is None:
            return False
        self.packer.release(binding)
        self._freed.set()
        return True

    def stop_waiting(self) -> None:
        self._stopping = True
        self._freed.set()

    def bound(self, slot: Slot, job: Job, env: dict[str, str]) -> BoundLaunch | None:
        """The launch of ``job`` on a packed slot (None: not one; launch as before)."""
        binding = self.bindings.get(slot)
        if binding is None:
            return None
        limit = self.limit_memory if self.limit_memory is not None else not binding.gpus
        if binding.memory is not None and not limit:
            binding = dataclasses.replace(binding, memory=None)
        if binding.memory is not None:
            job = dataclasses.replace(job, command=f"{memory_limit_line(binding.memory)}\n{job.command}")
        return BoundLaunch(job, bound_env(binding, env), binding.cores, {BINDING_FILE: render_binding(binding)},
                           binding)

    def hold(self, execution_id: str, node: str, text: str | None) -> Binding | None:
        """A re-attached execution keeps the cores and devices its binding line names until it ends."""
        if self.packer is None or text is None or execution_id in self.held:
            return None
        binding = parse_binding(text, node)
        if binding is None:
            return None
        held = self.packer.hold(binding)
        if held is not None:
            self.held[execution_id] = held
        return binding

    def unhold(self, execution_id: str) -> None:
        held = self.held.pop(execution_id, None)
        if held is not None and self.packer is not None:
            self.packer.release(held)
            self._freed.set()


__all__ = ["BoundLaunch", "PackedSlots"]
