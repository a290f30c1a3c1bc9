"""Packing executions onto nodes by what they need (pure: no I/O, no gevent).

The rule is first-fit by decreasing size (HyperQueue's greedy rule), applied to a window of waiting
executions each time capacity frees up:
- waiting requests are ordered widest first (GPUs, then cores, then memory), each placed on the first
  node where it fits; one that fits nowhere *now* does not block narrower ones behind it, so a grid over
  ``n_gpus: [1, 2, 4]`` keeps every node busy instead of idling for the widest;
- widest first means that when a node frees enough room for a wide execution, it is chosen before the
  narrow ones that would otherwise fragment the node again;
- within a node, whole GPUs are the lowest-numbered free devices; a fractional request goes to the fullest
  shared device it still fits on (best fit), so shares pile up on few devices and whole ones stay free.
Why not an optimal packing: bin packing is NP-hard and executions arrive and end at unknown times;
greedy FFD is within 11/9 of the optimum for the static problem and costs microseconds per decision.

Invariants (tests/unit/test_placement.py checks them with Hypothesis): no core and no whole device is
given twice; the shares on one device never pass 1; memory never passes the node's.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from fractions import Fraction

from orchestra.resources import Request, render_gpus, render_size

ONE = Fraction(1)


@dataclasses.dataclass(frozen=True)
class NodeCapacity:
    """What one node offers: the cores executions may be bound to, GPU device ids, memory in bytes."""

    name: str
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()
    memory: int | None = None  # None: unknown, not limited

    def describe(self) -> str:
        parts = [f"{len(self.cores)} cores", f"{len(self.gpus)} GPUs"]
        if self.memory is not None:
            exact = render_size(self.memory)
            shown = exact if exact[-1] in "GTP" else f"{self.memory / 2**30:.1f}G"
            parts.append(f"{shown} memory")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Binding:
    """What one execution was given on its node."""

    node: str
    cores: tuple[int, ...]
    gpus: tuple[str, ...] = ()
    gpu_share: Fraction = Fraction(0)  # of each device in ``gpus``: 1 for whole devices, else the fraction
    memory: int | None = None  # the limit it runs under, or None


def size_key(request: Request) -> tuple[Fraction, int, int]:
    return (request.gpus, request.cpus, request.memory or 0)


def fits_empty(request: Request, node: NodeCapacity) -> bool:
    """Whether the request fits the node when nothing else runs on it."""
    if request.cpus > len(node.cores):
        return False
    if request.gpus > len(node.gpus):
        return False
    return not (request.memory is not None and node.memory is not None and request.memory > node.memory)


def impossible(request: Request, nodes: Sequence[NodeCapacity], profile: str) -> str | None:
    """Why no node of the profile can ever run the request (with the fix), or None."""
    if not nodes or any(fits_empty(request, node) for node in nodes):
        return None
    sizes = sorted({node.describe() for node in nodes})
    return (f"resources {request.render()} fit no node of profile {profile!r} (nodes: {'; '.join(sizes)}); "
            f"ask for less, or give the profile bigger nodes")


class NodeState:
    """Free cores, free device shares and free memory of one node."""

    def __init__(self, capacity: NodeCapacity) -> None:
        self.capacity = capacity
        self.free_cores: list[int] = sorted(capacity.cores)
        self.free_share: dict[str, Fraction] = {gpu: ONE for gpu in capacity.gpus}
        self.free_memory = capacity.memory
        self.running = 0

    def _gpus_for(self, request: Request) -> tuple[tuple[str, ...], Fraction] | None:
        if not request.gpus:
            return (), Fraction(0)
        if request.gpus >= 1:
            whole = [gpu for gpu in self.capacity.gpus if self.free_share[gpu] == ONE]
            count = int(request.gpus)
            return (tuple(whole[:count]), ONE) if len(whole) >= count else None
        # Best fit: the fullest device that still has room, so that free devices stay whole.
        candidates = [gpu for gpu in self.capacity.gpus if self.free_share[gpu] >= request.gpus]
        if not candidates:
            return None
        best = min(candidates, key=lambda gpu: (self.free_share[gpu], self.capacity.gpus.index(gpu)))
        return (best,), request.gpus

    def fits(self, request: Request) -> bool:
        if request.cpus > len(self.free_cores):
            return False
        if request.memory is not None and self.free_memory is not None and request.memory > self.free_memory:
            return False
        return self._gpus_for(request) is not None

    def take(self, request: Request) -> Binding | None:
        if request.cpus > len(self.free_cores):
            return None
        if request.memory is not None and self.free_memory is not None and request.memory > self.free_memory:
            return None
        chosen = self._gpus_for(request)
        if chosen is None:
            return None
        gpus, share = chosen
        cores = tuple(self.free_cores[:request.cpus])
        del self.free_cores[:request.cpus]
        for gpu in gpus:
            self.free_share[gpu] -= share
        if request.memory is not None and self.free_memory is not None:
            self.free_memory -= request.memory
        self.running += 1
        return Binding(self.capacity.name, cores, gpus, share, request.memory)

    def hold(self, binding: Binding) -> Binding:
        """Take exactly what a re-attached execution holds (what is still free of it): it runs on."""
        cores = tuple(c for c in binding.cores if c in self.free_cores)
        self.free_cores = [c for c in self.free_cores if c not in cores]
        gpus = tuple(g for g in binding.gpus if g in self.free_share and self.free_share[g] >= binding.gpu_share)
        for gpu in gpus:
            self.free_share[gpu] -= binding.gpu_share
        memory = binding.memory
        if memory is not None and self.free_memory is not None:
            memory = min(memory, self.free_memory)
            self.free_memory -= memory
        self.running += 1
        return Binding(self.capacity.name, cores, gpus, binding.gpu_share, memory)

    def give(self, binding: Binding) -> None:
        self.free_cores = sorted(set(self.free_cores) | set(binding.cores))
        for gpu in binding.gpus:
            self.free_share[gpu] = min(ONE, self.free_share[gpu] + binding.gpu_share)
        if binding.memory is not None and self.free_memory is not None:
            self.free_memory += binding.memory
        self.running -= 1

    def idle(self) -> bool:
        return self.running == 0


class Packer:
    """The nodes of a backend and what runs on them; the controller's waiting requests are placed here."""

    def __init__(self, nodes: Sequence[NodeCapacity] = ()) -> None:
        self.nodes: dict[str, NodeState] = {}
        for node in nodes:
            self.add(node)

    def add(self, node: NodeCapacity) -> None:
        self.nodes[node.name] = NodeState(node)

    def remove(self, name: str) -> None:
        self.nodes.pop(name, None)

    def capacities(self) -> list[NodeCapacity]:
        return [state.capacity for state in self.nodes.values()]

    def place(self, request: Request) -> Binding | None:
        """First fit: the first node (in the order they came) where it fits now."""
        for state in self.nodes.values():
            binding = state.take(request)
            if binding is not None:
                return binding
        return None

    def choose(self, requests: Sequence[Request]) -> tuple[int, Binding] | None:
        """The widest waiting request that fits somewhere now, placed (ties: the one waiting longest)."""
        order = sorted(range(len(requests)), key=lambda i: (size_key(requests[i]), -i), reverse=True)
        for index in order:
            binding = self.place(requests[index])
            if binding is not None:
                return index, binding
        return None

    def hold(self, binding: Binding) -> Binding | None:
        state = self.nodes.get(binding.node)
        return state.hold(binding) if state is not None else None

    def release(self, binding: Binding) -> None:
        state = self.nodes.get(binding.node)
        if state is not None:  # its node may have gone (an allocation ended)
            state.give(binding)


BINDING_FILE = "binding"  # under the run directory's .orchestra/: what a resume holds again


def render_binding(binding: Binding) -> str:
    """One line kept beside a bound execution, so that a later controller re-attaching to it holds its
    cores and devices (else new executions would be given them while it still runs)."""
    memory = "" if binding.memory is None else str(binding.memory)
    share = f"{binding.gpu_share.numerator}/{binding.gpu_share.denominator}"
    return (f"cores={','.join(map(str, binding.cores))} gpus={','.join(binding.gpus)} share={share} "
            f"memory={memory}\n")


def parse_binding(text: str, node: str) -> Binding | None:
    """render_binding's line back; None for anything else (a file from another version: nothing held)."""
    fields = dict(part.partition("=")[::2] for part in text.split())
    try:
        cores = tuple(int(c) for c in fields["cores"].split(",") if c)
        gpus = tuple(g for g in fields["gpus"].split(",") if g)
        share = Fraction(fields["share"])
        memory = int(fields["memory"]) if fields["memory"] else None
    except (KeyError, ValueError, ZeroDivisionError):
        return None
    return Binding(node, cores, gpus, share, memory)


def binding_env(binding: Binding) -> dict[str, str]:
    """The variables an execution sees: its devices, and thread pools sized to its cores.

    CUDA renumbers the visible devices from 0, so ORCHESTRA_GPUS keeps the node's ids for logs. Thread
    counts are only defaults: the manifest's or profile's env, applied after, wins."""
    threads = str(len(binding.cores))
    env = {name: threads for name in THREAD_VARIABLES}
    devices = ",".join(binding.gpus)
    env.update({"CUDA_VISIBLE_DEVICES": devices, "ROCR_VISIBLE_DEVICES": devices, "HIP_VISIBLE_DEVICES": devices,
                "ORCHESTRA_GPUS": devices, "ORCHESTRA_CPUS": threads})
    if binding.gpus and binding.gpu_share < 1:
        env["ORCHESTRA_GPU_SHARE"] = render_gpus(binding.gpu_share)
    return env


def bound_env(binding: Binding, env: Mapping[str, str]) -> dict[str, str]:
    """The execution's environment: thread counts as defaults under the job's env, devices over it (a
    manifest's CUDA_VISIBLE_DEVICES must not undo the binding that keeps two executions apart)."""
    bound = binding_env(binding)
    out = {name: bound[name] for name in THREAD_VARIABLES}
    out.update(env)
    out.update({name: value for name, value in bound.items() if name not in THREAD_VARIABLES})
    return out


def memory_limit_line(memory: int) -> str:
    """The shell line that limits the execution's address space (RLIMIT_AS, in KiB for ulimit -v).

    A line of the wrapper shell (no extra process); where the hard limit is lower, the execution still
    runs and its stderr says the limit was not applied."""
    kib = max(1, memory // 1024)
    return (f"ulimit -v {kib} 2>/dev/null || echo 'orchestra: could not set the memory limit "
            f"(ulimit -v {kib})' >&2")


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")


__all__ = ["BINDING_FILE", "Binding", "parse_binding", "render_binding", "NodeCapacity", "NodeState", "Packer", "THREAD_VARIABLES", "binding_env", "bound_env",
           "fits_empty", "impossible", "memory_limit_line", "size_key"]
