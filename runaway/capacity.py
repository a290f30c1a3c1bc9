"""What a node offers (cores, GPU devices, memory): declared by the profile, else detected.

Every text a node gives about itself (``nvidia-smi -L``, ``/proc/driver/nvidia/gpus/*/information``,
``/proc/meminfo``) has a pure parser here, so detection is tested without the hardware; ``detect_local``
is the only function that reads this machine.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import ProfileError
from orchestra.resources import parse_size

from .placement import NodeCapacity

_SMI_LINE = re.compile(r"^GPU\s+(\d+):")
_MINOR = re.compile(r"^Device Minor:\s*(\d+)\s*$", re.MULTILINE)
_MEMTOTAL = re.compile(r"^MemTotal:\s*(\d+)\s*kB\s*$", re.MULTILINE)


def parse_nvidia_smi_list(text: str) -> tuple[str, ...]:
    """``nvidia-smi -L`` ("GPU 0: NVIDIA H200 (UUID: GPU-...)") -> the device indices, as CUDA numbers them."""
    found = []
    for line in text.splitlines():
        match = _SMI_LINE.match(line.strip())
        if match:
            found.append(match.group(1))
    return tuple(found)


def parse_proc_nvidia_gpus(informations: Iterable[str]) -> tuple[str, ...]:
    """The ``information`` files of ``/proc/driver/nvidia/gpus/*/`` -> device minors, sorted.

    Why minors: without nvidia-smi they are the /dev/nvidiaN numbers; CUDA's order can differ (it sorts
    fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID), so nvidia-smi is asked first."""
    minors: set[int] = set()
    for text in informations:  # one file each, or several concatenated (the remote probe's `cat`)
        minors.update(int(minor) for minor in _MINOR.findall(text))
    return tuple(str(minor) for minor in sorted(minors))


def parse_meminfo(text: str) -> int | None:
    """``/proc/meminfo`` -> MemTotal in bytes."""
    match = _MEMTOTAL.search(text)
    return int(match.group(1)) * 1024 if match else None


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """A kernel CPU list (``0-3,8,10-11``, as in cpuset files and Slurm's CPU_IDs) -> core numbers."""
    cores: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise ValueError(f"{text!r} is not a CPU list like 0-3,8")
        cores.extend(range(int(low), int(high or low) + 1))
    return tuple(sorted(set(cores)))


def render_cpu_list(cores: Sequence[int]) -> str:
    """Core numbers -> the kernel's compact form (``0-3,8``): how records and `expegit show` print them."""
    ordered = sorted(set(cores))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts)


# What a remote host says about itself, in one command (no python needed): the cores its processes may
# use, its memory, and its GPUs from nvidia-smi, else from the driver's /proc files.
PROBE_COMMAND = ("grep '^Cpus_allowed_list' /proc/self/status; grep '^MemTotal' /proc/meminfo; "
                 "echo '--- nvidia-smi'; nvidia-smi -L 2>/dev/null; "
                 "echo '--- proc'; cat /proc/driver/nvidia/gpus/*/information 2>/dev/null; true")


def parse_probe(text: str, name: str, declared: Mapping[str, Any]) -> NodeCapacity:
    """PROBE_COMMAND's output as the host's capacity, under what the profile declares for it."""
    head, _, rest = text.partition("--- nvidia-smi")
    smi, _, proc = rest.partition("--- proc")
    cores: tuple[int, ...] = ()
    for line in head.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            cores = parse_cpu_list(line.split(":", 1)[1])
    if not cores:
        raise ProfileError(f"host {name}: could not read which cores it has (/proc/self/status)")
    gpus = parse_nvidia_smi_list(smi) or parse_proc_nvidia_gpus([proc])
    return local_capacity(name, declared, gpus_detected=gpus, cores_available=cores, meminfo=head)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def detect_local_gpus() -> tuple[str, ...]:
    """This machine's NVIDIA devices: nvidia-smi when installed, else the driver's /proc files."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
            if done.returncode == 0:
                return parse_nvidia_smi_list(done.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    root = Path("/proc/driver/nvidia/gpus")
    try:
        texts = [_read(str(entry / "information")) or "" for entry in sorted(root.iterdir())]
    except OSError:
        return ()
    return parse_proc_nvidia_gpus(texts)


def available_cores() -> tuple[int, ...]:
    """The cores this process may run on (a cpuset or a Slurm step may give fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return tuple(sorted(os.sched_getaffinity(0)))
    return tuple(range(os.cpu_count() or 1))


def local_capacity(name: str, declared: Mapping[str, Any], *, gpus_detected: Sequence[str] | None = None,
                   cores_available: Sequence[int] | None = None, meminfo: str | None = None) -> NodeCapacity:
    """This machine's capacity: the profile's ``cpus`` / ``gpus`` / ``memory`` where given, else detected.

    Declared GPUs are taken as they are (a fake-GPU profile on a machine without any is how placement
    and binding are tested); declared cores must exist here, since executions are bound to them."""
    cores = tuple(cores_available) if cores_available is not None else available_cores()
    if "cpus" in declared:
        wanted = int(declared["cpus"])
        if wanted > len(cores):
            raise ProfileError(f"{name}: cpus: {wanted}, but it gives only {len(cores)} "
                               f"cores ({render_cpu_list(cores)})", )
        cores = cores[:wanted]
    if "gpus" in declared:
        gpus = tuple(str(g) for g in declared["gpus"])
    else:
        gpus = tuple(gpus_detected) if gpus_detected is not None else detect_local_gpus()
    memory: int | None
    if "memory" in declared:
        memory = parse_size(declared["memory"])
    else:
        memory = parse_meminfo(meminfo if meminfo is not None else (_read("/proc/meminfo") or ""))
    return NodeCapacity(name, cores, gpus, memory)


__all__ = ["PROBE_COMMAND", "parse_probe", "available_cores", "detect_local_gpus", "local_capacity", "parse_cpu_list", "parse_meminfo",
           "parse_nvidia_smi_list", "parse_proc_nvidia_gpus", "render_cpu_list"]
