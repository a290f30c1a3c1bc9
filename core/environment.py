"""The software and hardware an execution ran on: the record's ``environment`` section, and how two differ.

The capture happens on the node, in the launchers; this module fixes the shape they fill, so the record, the
comparison and the report agree on it. Large texts (``pip freeze``, ``conda list --export``) are not in the
record: they are blobs committed on the branch, named here by their sha, so identical environments share
one object (git deduplicates it) and a record stays small enough to be read by the thousand.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

# Paths of the blobs on an execution's branch that packages_blob / conda_blob name.
PIP_FREEZE_PATH = ".orchestra/pip-freeze.txt"
CONDA_EXPORT_PATH = ".orchestra/conda-export.txt"


@dataclasses.dataclass(frozen=True)
class Gpu:
    name: str
    memory_mib: int | None = None
    uuid: str | None = None


@dataclasses.dataclass(frozen=True)
class Environment:
    """What `environment:` in a record holds. Every field is optional: a node tells what it can."""

    os: str | None = None            # "Ubuntu 22.04.4 LTS" (PRETTY_NAME of /etc/os-release)
    kernel: str | None = None        # uname -r
    cpu: str | None = None           # the CPU model name
    cores: int | None = None         # logical CPUs of the node (not the execution's binding)
    memory: int | None = None        # bytes of RAM of the node
    gpus: tuple[Gpu, ...] = ()
    driver: str | None = None        # the GPU driver's version
    cuda: str | None = None          # the CUDA version the driver offers
    python: str | None = None        # "3.11.9 /usr/bin/python3": version, then the interpreter's path
    packages_blob: str | None = None  # sha of the `pip freeze` blob at PIP_FREEZE_PATH on the branch
    conda_blob: str | None = None     # sha of the `conda list --export` blob at CONDA_EXPORT_PATH
    modules: tuple[str, ...] = ()     # `module list`, where environment modules exist
    vars: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the manifest's record_env: values

    def to_dict(self) -> dict[str, Any]:
        """The record's form: only what is known, so an empty capture leaves an empty section."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None or value == () or value == {}:
                continue
            if field.name == "gpus":
                value = [{k: v for k, v in dataclasses.asdict(g).items() if v is not None} for g in value]
            elif field.name == "modules":
                value = list(value)
            elif field.name == "vars":
                value = dict(value)
            out[field.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Environment":
        """Lenient: a record written by a newer capture (more keys) or edited by hand still reads."""
        known = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        gpus = []
        for item in values.get("gpus") or ():
            if isinstance(item, Mapping) and "name" in item:
                gpus.append(Gpu(name=str(item["name"]), memory_mib=item.get("memory_mib"), uuid=item.get("uuid")))
            elif isinstance(item, str):
                gpus.append(Gpu(name=item))
        values["gpus"] = tuple(gpus)
        values["modules"] = tuple(str(m) for m in values.get("modules") or ())
        values["vars"] = {str(k): str(v) for k, v in (values.get("vars") or {}).items()}
        return cls(**values)

    def summary(self) -> str:
        """One short line for tables (the notebook DataFrame, the report)."""
        parts = [p for p in (self.os, f"python {self.python.split()[0]}" if self.python else None) if p]
        if self.gpus:
            names = sorted({g.name for g in self.gpus})
            parts.append(f"{len(self.gpus)}x {'/'.join(names)}")
        if self.driver:
            parts.append(f"driver {self.driver}")
        return ", ".join(parts)

    def columns(self) -> dict[str, Any]:
        """The notebook DataFrame's environment columns (``env.*``; ``env.var.NAME`` per record_env value),
        flat scalars so that a groupby or a filter on them works."""
        out: dict[str, Any] = {f"env.{name}": getattr(self, name)
                               for name in ("os", "kernel", "cpu", "cores", "memory", "driver", "cuda")}
        out["env.python"] = self.python.split()[0] if self.python else None
        out["env.python_path"] = self.python.split(" ", 1)[1] if self.python and " " in self.python else None
        names = sorted({g.name for g in self.gpus})
        out["env.gpus"] = f"{len(self.gpus)}x {'/'.join(names)}" if self.gpus else None
        out["env.packages"] = self.packages_blob  # one id per distinct pip freeze: equal ids, equal packages
        for name, value in sorted(self.vars.items()):
            out[f"env.var.{name}"] = value
        return out


_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(===|==|@|=)\s*(.+?)\s*$")


def canonical_name(name: str) -> str:
    """PEP 503's normalised project name: `Foo_Bar` and `foo-bar` are one package."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pip_freeze(text: str) -> dict[str, str]:
    """{canonical name: version or reference} of a `pip freeze` (or `conda list --export`) text.

    ``name==1.0``, ``name @ file:///...`` (direct references: the URL is the version) and conda's
    ``name=1.0=build`` are read; comments, options (``-e``, ``--index-url``) and blank lines are skipped.
    """
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        name, op, version = match.groups()
        if op == "=":  # conda: name=version=build
            version = version.split("=")[0]
        out[canonical_name(name)] = version
    return out


@dataclasses.dataclass(frozen=True)
class PackageDiff:
    added: dict[str, str]                    # in B only: name → version
    removed: dict[str, str]                  # in A only
    changed: dict[str, tuple[str, str]]      # name → (version in A, version in B)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed,
                "changed": {k: list(v) for k, v in self.changed.items()}}


def diff_packages(a: str, b: str) -> PackageDiff:
    """What changed from freeze text ``a`` to freeze text ``b``, each part sorted by name."""
    pa, pb = parse_pip_freeze(a), parse_pip_freeze(b)
    return PackageDiff(
        added={k: pb[k] for k in sorted(set(pb) - set(pa))},
        removed={k: pa[k] for k in sorted(set(pa) - set(pb))},
        changed={k: (pa[k], pb[k]) for k in sorted(set(pa) & set(pb)) if pa[k] != pb[k]})


def diff_environments(a: Environment, b: Environment) -> dict[str, tuple[Any, Any]]:
    """Fields (blobs aside: their content is compared by diff_packages) whose values differ: name → (a, b)."""
    out: dict[str, tuple[Any, Any]] = {}
    left, right = a.to_dict(), b.to_dict()
    for name in [f.name for f in dataclasses.fields(Environment)]:
        if name in ("packages_blob", "conda_blob"):
            continue
        if left.get(name) != right.get(name):
            out[name] = (left.get(name), right.get(name))
    return out
