"""Profiles: where executions run, loaded from the manifest and ~/.config/orchestra/profiles/NAME.yaml.

Why a schema plus dataclasses: the schema (``schemas/profile.schema.json``) gives every mistake a path
and the list of valid keys; the frozen dataclasses give the backends typed, defaulted values so no
backend re-validates. A personal profile file with the same name as a shared one is merged over it, so a
campaign can share ``cluster: {kind: slurm, ...}`` while each user adds their own ``account``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from orchestra.durations import parse_duration
from orchestra.errors import ProfileError, did_you_mean
from orchestra.resources import parse_size

KINDS = ("local", "ssh", "slurm", "oar", "command")
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "profile.schema.json"


@dataclasses.dataclass(frozen=True)
class SSHHostConfig:
    destination: str
    slots: int = 1
    # The declared part of its capacity {cpus, gpus, memory}; the rest is probed over SSH when a manifest
    # declares `resources:` (runaway/capacity.py).
    capacity: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class AllocationSpec:
    """What one allocation asks the scheduler for."""

    nodes: int = 1
    walltime: float = 3600.0  # seconds
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    extra: tuple[str, ...] = ()
    # With `resources:` in the manifest (Slurm): what to ask for on each node instead of what the
    # executions' requests derive (runaway/slurm_resources.py), and how GPUs are asked for.
    cpus_per_node: int | None = None
    gpus_per_node: int | None = None
    memory_per_node: int | None = None  # bytes
    gpu_option: str = "gres"  # --gres=gpu:N, or gpus-per-node: --gpus-per-node=N
    exclusive: bool | None = None  # None: whole nodes (--exclusive) without resources:, not with them


@dataclasses.dataclass(frozen=True)
class _RemoteCommon:
    name: str
    workdir: str = "~/.orchestra"
    setup: tuple[str, ...] = ()
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    ssh_config: str | None = None
    connections: int = 2
    channels_per_connection: int = 8
    poll_interval: float = 1.0
    accept_new_host_keys: bool = False
    python: str = "python3"
    # Whether every place of the profile, and the next attempt's, sees the workdir (a cluster's shared
    # filesystem): checkpoint directories stay in place. Otherwise they are copied back to the controller
    # and restored before the next attempt (runaway/checkpoint_copy.py). Schedulers' default: shared.
    shared: bool = True


@dataclasses.dataclass(frozen=True)
class LocalProfile:
    name: str
    slots: int | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    workdir: str | None = None
    kind: str = "local"
    # Capacity for packing by resources: the declared part of {cpus, gpus, memory} (the rest is detected
    # by runaway/capacity.py when a manifest declares `resources:`), and whether memory requests become
    # an RLIMIT_AS.
    capacity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    limit_memory: bool | None = None  # None: for executions without GPUs (see LocalBackend.launch)


@dataclasses.dataclass(frozen=True)
class SSHProfile(_RemoteCommon):
    hosts: tuple[SSHHostConfig, ...] = ()
    # agent: one resident process per host fed through one session (runaway/agent.py);
    # shell: a remote shell per batch of launches, polls and collects (hosts whose python3 is < 3.6)
    launcher: str = "agent"
    kind: str = "ssh"
    limit_memory: bool | None = None  # as LocalProfile's
    shared: bool = False  # hosts have their own disks, unless the profile says they share one


@dataclasses.dataclass(frozen=True)
class SlurmProfile(_RemoteCommon):
    host: str = ""
    slots_per_node: int = 1
    allocation: AllocationSpec = AllocationSpec()
    max_allocations: int = 1
    idle_release: float = 30.0
    walltime_margin: float | None = None  # default: min(120 s, 10% of the walltime)
    squeue_interval: float = 2.0
    launcher: str = "agent"  # agent: one resident step per node (runaway/agent.py); srun: one step per execution
    kind: str = "slurm"
    limit_memory: bool | None = None  # as LocalProfile's (Slurm's own limit is the allocation's cgroup)


@dataclasses.dataclass(frozen=True)
class CommandProfile(SlurmProfile):
    """A scheduler driven through command templates (OAR, PBS, ...): see runaway/examples/."""

    start: str = ""
    job_id_regex: str | None = None
    list_nodes: str = ""
    cancel: str = ""
    launch: str = ""
    launcher: str = "srun"  # the launch template is the launcher: one step per execution
    kind: str = "command"


Profile = LocalProfile | SSHProfile | SlurmProfile | CommandProfile


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    try:  # installed: schemas/ is package data of orchestra (setup.py maps it to orchestra.schemas)
        from importlib import resources

        text = resources.files("orchestra.schemas").joinpath("profile.schema.json").read_text("utf-8")
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        text = SCHEMA_PATH.read_text("utf-8")  # a source checkout
    return jsonschema.Draft202012Validator(json.loads(text))


def _schema_props(kind: str) -> list[str]:
    schema = _validator().schema
    return sorted(schema["$defs"]["slurm" if kind == "oar" else kind]["properties"])  # oar has slurm's keys


def validate(name: str, data: Any, source: str = "profile") -> None:
    """Raise ProfileError naming the profile, the key path and what is valid there.

    When ``source`` is a file load_profile_file() read, the message starts with ``FILE:LINE:COL:`` of the
    key or value at fault, as manifest errors do."""
    if not isinstance(data, Mapping):
        raise ProfileError(f"{_where(source, [])}: profile {name!r} must be a mapping, not {type(data).__name__}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise ProfileError(f"{_where(source, ['kind'])}: profile {name!r}: kind {kind!r} is not one of "
                           f"{', '.join(KINDS)}", hint=did_you_mean(kind, KINDS))
    valid = _schema_props(kind)
    unknown = sorted(set(data) - set(valid), key=lambda k: (_position(source, [], k) or (0, 0), str(k)))
    if unknown:
        raise ProfileError(f"{_where(source, [], key=unknown[0])}: profile {name!r}: unknown key {unknown[0]!r} "
                           f"for kind {kind}; valid keys: {', '.join(valid)}", hint=did_you_mean(unknown[0], valid))
    if kind == "ssh" and "host" not in data and "hosts" not in data:
        raise ProfileError(f"{_where(source, [])}: profile {name!r}: kind ssh needs `host: ALIAS` or `hosts: [ALIAS, ...]`")
    errors = sorted(_validator().iter_errors(dict(data)), key=lambda e: (len(e.absolute_path), e.message))
    if errors:
        err = max(errors, key=lambda e: len(e.absolute_path))  # the most specific one
        path = list(err.absolute_path)
        where = ".".join(str(p) for p in path) or "(top)"
        if err.validator == "additionalProperties" and isinstance(err.instance, Mapping):
            allowed = list((err.schema.get("properties") or {}).keys())
            extra = next((k for k in err.instance if k not in allowed), None)
            if extra is not None:
                raise ProfileError(f"{_where(source, path, key=extra)}: profile {name!r}: {where}: unknown key "
                                   f"{extra!r}; valid keys: {', '.join(allowed)}", hint=did_you_mean(extra, allowed))
        raise ProfileError(f"{_where(source, path)}: profile {name!r}: {where}: {err.message}")


# The positions of the profile files load_profile_file() read, by the path it was given as text: validate()
# is called with that path as ``source`` (resolve_profile), so its messages can say FILE:LINE:COL.
_documents: dict[str, Any] = {}


def _position(source: str, path: list[Any], key: Any = None) -> tuple[int, int] | None:
    """Where the file ``source`` wrote ``path`` (or ``key`` in it); None when the value came from
    elsewhere (the manifest's shared profile it was merged over)."""
    doc = _documents.get(source)
    if doc is None:
        return None
    node = doc.data
    for part in [*path, key] if key is not None else path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc.key_position(path, key) if key is not None else doc.position(path)


def _where(source: str, path: list[Any], *, key: Any = None) -> str:
    position = _position(source, path, key)
    return source if position is None else f"{source}:{position[0]}:{position[1]}"


def _duration(value: Any, what: str, name: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ProfileError(f"profile {name!r}: {what}: {exc}") from None


def _setup(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _env(value: Any) -> dict[str, str]:
    out = {}
    for key, val in (value or {}).items():
        out[key] = ("true" if val else "false") if isinstance(val, bool) else str(val)
    return out


def _common(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "setup": _setup(data.get("setup")), "env": _env(data.get("env"))}
    for key in ("workdir", "ssh_config", "connections", "channels_per_connection", "accept_new_host_keys", "python",
                "shared"):
        if key in data:
            out[key] = os.path.expanduser(data[key]) if key == "ssh_config" else data[key]
    if "poll_interval" in data:
        out["poll_interval"] = _duration(data["poll_interval"], "poll_interval", name)
    return out


def _allocation(name: str, data: Mapping[str, Any] | None) -> AllocationSpec:
    data = data or {}
    extra = data.get("extra") or ()
    return AllocationSpec(nodes=int(data.get("nodes", 1)),
                          walltime=_duration(data.get("walltime", 3600), "allocation.walltime", name),
                          partition=data.get("partition"), account=data.get("account"), qos=data.get("qos"),
                          extra=(extra,) if isinstance(extra, str) else tuple(extra),
                          cpus_per_node=data.get("cpus_per_node"), gpus_per_node=data.get("gpus_per_node"),
                          memory_per_node=_size(data.get("memory_per_node"), "allocation.memory_per_node", name),
                          gpu_option=data.get("gpu_option", "gres"), exclusive=data.get("exclusive"))


def _size(value: Any, where: str, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ProfileError(f"profile {name!r}: {where}: {exc}") from None


def build_profile(name: str, data: Mapping[str, Any], source: str = "profile") -> Profile:
    """Validate ``data`` and return the typed profile."""
    validate(name, data, source)
    kind = data["kind"]
    if kind == "local":
        capacity = {key: data[key] for key in ("cpus", "gpus", "memory") if key in data}
        if "memory" in capacity:
            try:
                parse_size(capacity["memory"])
            except ValueError as exc:
                raise ProfileError(f"{_where(source, ['memory'])}: profile {name!r}: memory: {exc}") from None
        return LocalProfile(name, slots=data.get("slots"), env=_env(data.get("env")), workdir=data.get("workdir"),
                            capacity=capacity, limit_memory=data.get("limit_memory"))
    if kind == "ssh":
        per_host = int(data.get("slots", 1))
        entries = list(data.get("hosts") or []) + ([data["host"]] if "host" in data else [])
        shared = {key: data[key] for key in ("cpus", "gpus", "memory") if key in data}
        hosts = tuple(SSHHostConfig(e, per_host, shared) if isinstance(e, str) else
                      SSHHostConfig(e["host"], int(e.get("slots", per_host)),
                                    {**shared, **{k: e[k] for k in ("cpus", "gpus", "memory") if k in e}})
                      for e in entries)
        for i, cfg in enumerate(hosts):
            if "memory" in cfg.capacity:
                try:
                    parse_size(cfg.capacity["memory"])
                except ValueError as exc:
                    raise ProfileError(f"{source}: profile {name!r}: host {cfg.destination}: memory: {exc}") from None
        if len({h.destination for h in hosts}) != len(hosts):
            raise ProfileError(f"{source}: profile {name!r}: a host is listed twice")
        return SSHProfile(**_common(name, data), hosts=hosts, launcher=data.get("launcher", "agent"),
                          limit_memory=data.get("limit_memory"))
    values = _common(name, data)
    values.update(host=data["host"], slots_per_node=int(data.get("slots_per_node", 1)),
                  allocation=_allocation(name, data.get("allocation")),
                  max_allocations=int(data.get("max_allocations", 1)))
    for key in ("idle_release", "walltime_margin", "squeue_interval"):
        if key in data:
            values[key] = _duration(data[key], key, name)
    margin = values.get("walltime_margin")
    if margin is not None and margin >= values["allocation"].walltime:
        raise ProfileError(f"{source}: profile {name!r}: walltime_margin ({margin:g}s) must be shorter than "
                           f"allocation.walltime ({values['allocation'].walltime:g}s)")
    if kind == "slurm":
        return SlurmProfile(**values, launcher=data.get("launcher", "agent"), limit_memory=data.get("limit_memory"))
    if kind == "oar":
        # The same allocation settings as Slurm's; executions start through oarsh on the nodes (the agent
        # needs a binary-clean step, which oarsh's ssh is not: runaway/providers/oar.py).
        return SlurmProfile(**values, launcher="srun", kind="oar")
    for key in ("start", "job_id_regex", "list_nodes", "cancel", "launch"):
        if key in data:
            values[key] = data[key]
    for key, needed in (("list_nodes", "job_id"), ("cancel", "job_id"), ("launch", "node")):
        if "{" + needed + "}" not in data[key]:
            raise ProfileError(f"{source}: profile {name!r}: {key} must use {{{needed}}}: {data[key]!r}")
    return CommandProfile(**values)


def merge(shared: Mapping[str, Any] | None, personal: Mapping[str, Any] | None) -> dict[str, Any]:
    """Personal values over shared ones, recursively for mappings (allocation, env)."""
    out: dict[str, Any] = dict(shared or {})
    for key, value in (personal or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def personal_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "orchestra" / "profiles"


def load_profile_file(path: Path) -> dict[str, Any]:
    """The mapping in a personal profile file; ProfileError with FILE:LINE:COL for what cannot be read."""
    from orchestra.yamlio import YamlError, duplicate_error, load_located, read_text

    try:
        doc = load_located(read_text(path), string_keys=True)
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror}") from None
    except YamlError as exc:
        raise ProfileError(f"{path}:{exc.line}:{exc.col}: {exc.message}", hint=exc.hint) from None
    if doc.duplicates:
        twice = duplicate_error(doc.duplicates[0])
        raise ProfileError(f"{path}:{twice.line}:{twice.col}: {twice.message}", hint=twice.hint)
    if not isinstance(doc.data, Mapping):
        raise ProfileError(f"{path}:{doc.start[0]}:{doc.start[1]}: a profile file holds one mapping "
                           f"(kind: ..., ...)")
    if len(_documents) > 64:  # a long-lived process resolving many files: positions are a courtesy
        _documents.clear()
    _documents[str(path)] = doc
    return dict(doc.data)


def resolve_profile(name: str, shared: Mapping[str, Mapping[str, Any]] | None = None,
                    directory: Path | None = None) -> Profile:
    """The profile ``name``: the manifest's shared one, with ``<dir>/<name>.yaml`` merged over it."""
    shared = shared or {}
    directory = directory or personal_dir()
    path = directory / f"{name}.yaml"
    personal = load_profile_file(path) if path.is_file() else None
    if name not in shared and personal is None:
        if name == "local":
            return LocalProfile("local")
        known = sorted({"local", *shared, *(p.stem for p in directory.glob("*.yaml"))} if directory.is_dir()
                       else {"local", *shared})
        close = difflib.get_close_matches(name, known, n=1)
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(known)}",
                           hint=f"did you mean {close[0]!r}?" if close else
                           f"declare it under profiles: or in {directory}/{name}.yaml")
    source = str(path) if personal is not None else "orchestra.yaml"
    return build_profile(name, merge(shared.get(name), personal), source)


__all__ = ["AllocationSpec", "CommandProfile", "LocalProfile", "Profile", "SSHHostConfig", "SSHProfile",
           "SlurmProfile", "build_profile", "merge", "resolve_profile", "validate"]
