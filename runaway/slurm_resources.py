"""Slurm and resources: the node size a request must fit, the allocation request derived from what the
executions need, and what each node of a running allocation was given, read back from the scheduler.

Pure: every text Slurm gives (``sinfo -N -o '%N|%c|%m|%G'``, ``scontrol show job -d``, the node probe run
as one srun step per node) has a parse function here, and the ``#SBATCH`` lines a render function, all
tested in tests/unit/test_slurm_resources.py without a cluster. runaway/allocation_backend.py runs the
commands; runaway/placement.py packs executions onto the capacities built here.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction

from orchestra.errors import SchedulerError
from orchestra.resources import Request, render_size

from .capacity import parse_cpu_list
from .placement import NodeCapacity
from .slurm_nodelist import parse_nodelist

MB = 2**20


@dataclasses.dataclass(frozen=True)
class NodeSize:
    """What one node of a partition has (``sinfo``) or what the profile says its nodes have."""

    cpus: int
    gpus: int
    memory: int | None  # bytes; None: unknown
    names: tuple[str, ...] = ()

    def describe(self) -> str:
        memory = "" if self.memory is None else f", {render_size(self.memory)} memory"
        return f"{self.cpus} cores, {self.gpus} GPUs{memory}"

    def fits(self, request: Request) -> bool:
        return (request.cpus <= self.cpus and request.gpus <= self.gpus
                and (request.memory is None or self.memory is None or request.memory <= self.memory))


@dataclasses.dataclass(frozen=True)
class NodeRequest:
    """What an allocation asks for on each of its nodes (``--cpus-per-task`` with one task per node,
    ``--gres=gpu:N`` or ``--gpus-per-node=N``, ``--mem``)."""

    cpus: int
    gpus: int = 0
    memory: int | None = None  # bytes
    gpu_option: str = "gres"  # or "gpus-per-node"


# ------------------------------------------------------------------------------------ pure: sinfo
SINFO_FORMAT = "%N|%c|%m|%G"
_GPU_GRES = re.compile(r"^gpu(?::[^:(]+)?:(\d+)")


def render_sinfo(partition: str | None) -> str:
    part = f" -p {shlex.quote(partition)}" if partition else ""
    return f"sinfo -N -h{part} -o {shlex.quote(SINFO_FORMAT)}"


def parse_gres_gpus(text: str) -> int:
    """The GPU count of a node's Gres (``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,nic:1``, ``(null)``)."""
    total = 0
    for item in re.split(r",(?![^(]*\))", text.strip()):
        match = _GPU_GRES.match(item.strip())
        if match:
            total += int(match.group(1))
    return total


def parse_sinfo_nodes(text: str) -> list[NodeSize]:
    """``sinfo -N -h -o '%N|%c|%m|%G'`` -> the distinct node sizes, each with its node names.

    A node listed in several partitions appears once per partition: it is counted once."""
    sizes: dict[tuple[int, int, int | None], list[str]] = {}
    seen: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        parts = line.split("|")
        if len(parts) != 4 or not parts[1].strip().isdigit():
            raise SchedulerError(f"unexpected sinfo line {line!r} (format {SINFO_FORMAT})")
        name, cpus, memory, gres = (p.strip() for p in parts)
        if name in seen:
            continue
        seen.add(name)
        mem = int(memory) * MB if memory.isdigit() and int(memory) > 1 else None  # 1: Slurm's "not set"
        sizes.setdefault((int(cpus), parse_gres_gpus(gres), mem), []).append(name)
    return [NodeSize(cpus, gpus, mem, tuple(names)) for (cpus, gpus, mem), names in sizes.items()]


# ---------------------------------------------------------------------------- pure: the request
def executions_per_node(request: Request, node: NodeSize) -> int:
    """How many executions of this request a node holds at once (0: it does not fit)."""
    if not node.fits(request):
        return 0
    counts = [node.cpus // request.cpus]
    if request.gpus:
        counts.append(int(node.gpus / request.gpus))
    if request.memory is not None and node.memory is not None:
        counts.append(node.memory // request.memory)
    return max(0, min(counts))


def derive_node_request(requests: Sequence[Request], node: NodeSize, *, per_node: int | None = None,
                        gpu_option: str = "gres") -> NodeRequest:
    """What to ask for on each node: room for as many executions of each kind as the node holds
    (``per_node`` caps it: a campaign of 2 executions on 1 node does not hold the whole node), the
    widest kind deciding each resource, so any mix of the campaign's requests fills the node.

    Why per kind and not the sum: executions of different kinds come and go in any order; asking for
    the most any one kind can use keeps a node of a homogeneous campaign exactly full and a mixed one
    never smaller than its widest execution."""
    cpus, gpus, memory = 1, Fraction(0), 0
    any_memory = False
    for request in dict.fromkeys(requests):
        count = executions_per_node(request, node)
        if count == 0:
            continue
        if per_node is not None:
            count = max(1, min(count, per_node))
        cpus = max(cpus, count * request.cpus)
        gpus = max(gpus, count * request.gpus)
        if request.memory is not None:
            any_memory = True
            memory = max(memory, count * request.memory)
    whole = min(node.gpus, math.ceil(gpus)) if gpus else 0
    return NodeRequest(min(cpus, node.cpus), whole, memory if any_memory else None, gpu_option)


def render_node_request(request: NodeRequest) -> list[str]:
    """The ``#SBATCH`` lines of a per-node request (one task per node holding all its cores, since the
    node's agent step places the executions inside it)."""
    lines = [f"#SBATCH --cpus-per-task={int(request.cpus)}"]
    if request.gpus:
        lines.append(f"#SBATCH --gpus-per-node={int(request.gpus)}" if request.gpu_option == "gpus-per-node"
                     else f"#SBATCH --gres=gpu:{int(request.gpus)}")
    if request.memory is not None:
        lines.append(f"#SBATCH --mem={max(1, math.ceil(request.memory / MB))}M")
    return lines


# ------------------------------------------------------------------ pure: scontrol show job -d
@dataclasses.dataclass(frozen=True)
class NodeGrant:
    """What the scheduler gave one node of a job: its CPU ids, memory (None when not tracked), GPU indices."""

    cpu_ids: tuple[int, ...]
    memory: int | None
    gpus: tuple[str, ...]


_NODE_LINE = re.compile(r"^\s*Nodes=(\S+)\s+CPU_IDs=(\S*)\s+Mem=(\d+)(?:\s+GRES=(.*))?$")
_IDX = re.compile(r"gpu(?::[^:(]+)?(?::\d+)?\(IDX:([^)]*)\)")
_MIN_MEMORY = re.compile(r"\bMinMemoryNode=(\d+)([KMGT]?)\b")


def parse_gres_indices(text: str) -> tuple[str, ...]:
    """The GPU indices of a node's GRES in ``scontrol show job -d`` (``gpu:2(IDX:0-1)``, ``gpu:a100:1(IDX:3)``,
    ``gpu(IDX:0,2)``); ``N/A`` for none."""
    found: list[int] = []
    for match in _IDX.finditer(text or ""):
        body = match.group(1).strip()
        if body and body.upper() != "N/A":
            found.extend(parse_cpu_list(body))
    return tuple(str(i) for i in sorted(set(found)))


def parse_scontrol_job(text: str) -> dict[str, NodeGrant]:
    """``scontrol show job -d J`` -> each node's grant, node lists expanded (``Nodes=node[1-2] ...``
    stands for every node it names)."""
    grants: dict[str, NodeGrant] = {}
    for line in text.splitlines():
        match = _NODE_LINE.match(line)
        if not match:
            continue
        nodes, cpu_ids, mem, gres = match.groups()
        memory = int(mem) * MB if int(mem) > 0 else None  # Mem=0: memory is not a consumable here
        grant = NodeGrant(parse_cpu_list(cpu_ids) if cpu_ids else (), memory, parse_gres_indices(gres or ""))
        for node in parse_nodelist(nodes):
            grants[node] = grant
    return grants


def parse_min_memory(text: str) -> int | None:
    """The per-node memory the job asked for (``MinMemoryNode=1000M``), in bytes, or None."""
    match = _MIN_MEMORY.search(text)
    if not match or int(match.group(1)) == 0:
        return None
    unit = {"": MB, "K": 2**10, "M": MB, "G": 2**30, "T": 2**40}[match.group(2)]
    return int(match.group(1)) * unit


# ------------------------------------------------------------------------------ pure: the probe
def render_probe(job_id: str, nodes: int) -> str:
    """One command on the frontend: the job's grants, then one task per node saying what a step sees
    there (its node, the cores it may use, its CUDA_VISIBLE_DEVICES), as the node agents will.

    ``--whole``: the step gets every core the job holds on the node (a plain -n1 step gets one under
    task/affinity or task/cgroup); GPUs of the job go to a step by default."""
    step = ("printf 'probe|%s|%s|%s\\n' \"$SLURMD_NODENAME\" "
            "\"$(grep '^Cpus_allowed_list' /proc/self/status | cut -f2)\" \"${CUDA_VISIBLE_DEVICES-unset}\"")
    jid = shlex.quote(job_id)
    return (f"scontrol show job -d {jid}; echo '--- probe'; srun --jobid={jid} --overlap --whole -N{int(nodes)} "
            f"--ntasks-per-node=1 --quiet --kill-on-bad-exit=0 sh -c {shlex.quote(step)}")


@dataclasses.dataclass(frozen=True)
class StepView:
    cores: tuple[int, ...]
    gpus: tuple[str, ...] | None  # None: the step's CUDA_VISIBLE_DEVICES was not set


def parse_probe_lines(text: str) -> dict[str, StepView]:
    views: dict[str, StepView] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 4 or parts[0] != "probe":
            continue
        _, node, cores, gpus = parts
        try:
            core_list = parse_cpu_list(cores)
        except ValueError:
            continue
        views[node] = StepView(core_list, None if gpus == "unset" else tuple(g for g in gpus.split(",") if g))
    return views


def node_capacities(text: str, job_id: str, asked: NodeRequest | None = None) -> list[NodeCapacity]:
    """render_probe's output -> the capacity of each node of the allocation, for the Packer.

    - GPUs: the ids a step sees in CUDA_VISIBLE_DEVICES (what an execution's CUDA_VISIBLE_DEVICES must
      name there: relative ids under ConstrainDevices), else Slurm's indices.
    - Cores: Slurm's CPU ids when the step may run on all of them (a task plugin bound it, or the node is
      the machine); else (a node that claims more CPUs than its machine has, as a test cluster's nodes
      do) as many of the step's cores as Slurm granted, at most what exists: bound to cores that exist.
    - Memory: what Slurm tracks for the node, else what the allocation asked for, else not limited.
    Capacity names are ``<job id>/<node>``: two allocations may share a node."""
    head, _, probe = text.partition("--- probe")
    grants = parse_scontrol_job(head)
    views = parse_probe_lines(probe)
    asked_memory = asked.memory if asked is not None else parse_min_memory(head)
    capacities: list[NodeCapacity] = []
    for node, grant in grants.items():
        view = views.get(node)
        if view is None:
            raise SchedulerError(f"allocation {job_id}: node {node} did not answer the probe step")
        if set(grant.cpu_ids) <= set(view.cores):
            cores = grant.cpu_ids
        else:
            cores = view.cores[:len(grant.cpu_ids) or len(view.cores)]
        gpus = view.gpus if view.gpus is not None and len(view.gpus) == len(grant.gpus) else grant.gpus
        memory = grant.memory if grant.memory is not None else asked_memory
        capacities.append(NodeCapacity(f"{job_id}/{node}", tuple(cores), tuple(gpus), memory))
    if not capacities:
        raise SchedulerError(f"allocation {job_id}: `scontrol show job -d` named no node: {head.strip()[:200]!r}")
    return capacities


def grant_devices(text: str) -> Mapping[str, tuple[str, ...]]:
    """Each node's GPU indices, as Slurm says (tests compare them with what executions saw)."""
    return {node: grant.gpus for node, grant in parse_scontrol_job(text).items()}


def describe_sizes(sizes: Iterable[NodeSize]) -> str:
    return "; ".join(sorted({size.describe() for size in sizes}))


__all__ = ["NodeGrant", "NodeRequest", "NodeSize", "SINFO_FORMAT", "StepView", "derive_node_request",
           "describe_sizes", "executions_per_node", "grant_devices", "node_capacities", "parse_gres_gpus",
           "parse_gres_indices", "parse_min_memory", "parse_probe_lines", "parse_scontrol_job",
           "parse_sinfo_nodes", "render_node_request", "render_probe", "render_sinfo"]
