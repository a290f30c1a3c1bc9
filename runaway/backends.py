"""From a profile name to a running backend: the one place that knows every kind of profile."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from orchestra.errors import ProfileError
from orchestra.manifest import Manifest, list_personal_profiles
from orchestra.yamlio import load_plain

from .backend import Backend
from .local import LocalBackend

KINDS = ("local", "ssh", "slurm", "command")


def resolve_profile(name: str, manifest: Manifest) -> dict[str, Any]:
    """The profile's settings: personal profiles (~/.config/orchestra/profiles) win over shared ones."""
    personal = list_personal_profiles()
    if name in personal:
        try:
            data = load_plain(personal[name].read_text("utf-8"))
        except Exception as exc:  # YAML errors: one line with the file
            raise ProfileError(f"{personal[name]}: not valid YAML: {str(exc).splitlines()[0]}")
        if not isinstance(data, Mapping):
            raise ProfileError(f"{personal[name]}: a profile must be a mapping with a `kind`")
        return dict(data)
    if name in manifest.profiles:
        return dict(manifest.profiles[name])
    if name == "local":
        return {"kind": "local"}
    known = sorted({"local", *manifest.profiles, *personal})
    raise ProfileError(f"unknown profile {name!r}; known: {', '.join(known)}",
                       hint="declare it under profiles: in orchestra.yaml or in ~/.config/orchestra/profiles/")


def make_backend(name: str, manifest: Manifest, workdir: Path, *, slots: int | None = None) -> Backend:
    settings = resolve_profile(name, manifest)
    kind = settings.get("kind")
    if kind == "local":
        unknown = sorted(set(settings) - {"kind", "slots", "env", "workdir"})
        if unknown:
            raise ProfileError(f"profile {name}: unknown key {unknown[0]!r} for kind local; valid: slots, env, workdir")
        count = slots or settings.get("slots")
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ProfileError(f"profile {name}: slots must be a positive integer, got {count!r}")
        base = Path(settings["workdir"]).expanduser() if settings.get("workdir") else workdir
        env = {str(k): str(v) for k, v in (settings.get("env") or {}).items()}
        return LocalBackend(base, count, env)
    if kind in ("ssh", "slurm", "command"):
        try:
            from . import profiles as remote_profiles  # fabric is imported only when a remote profile is used
        except ImportError as exc:
            raise ProfileError(f"profile {name}: kind {kind} is not available in this installation ({exc})")
        return remote_profiles.make_remote_backend(name, settings, slots=slots)
    raise ProfileError(f"profile {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
