"""From a profile name to a backend: the one place that knows every kind of profile."""
from __future__ import annotations

from pathlib import Path

from orchestra.errors import ProfileError
from orchestra.manifest import Manifest

from .backend import Backend
from .local import LocalBackend
from .profiles import LocalProfile, Profile, resolve_profile


def profile_for(name: str, manifest: Manifest) -> Profile:
    """The typed profile: the manifest's shared one with ~/.config/orchestra/profiles/NAME.yaml over it."""
    return resolve_profile(name, manifest.profiles)


def make_backend(name: str, manifest: Manifest, workdir: Path, *, slots: int | None = None) -> Backend:
    """A backend for profile ``name``; ``workdir`` is the campaign's private directory (local runs)."""
    profile = profile_for(name, manifest)
    if isinstance(profile, LocalProfile):
        count = slots or profile.slots
        base = Path(profile.workdir).expanduser() if profile.workdir else workdir
        return LocalBackend(base, count, dict(profile.env))
    if slots is not None:
        raise ProfileError(f"--slots applies to local profiles; profile {name!r} is {profile.kind}: set its "
                           f"slots (ssh) or slots_per_node and allocation.nodes (slurm) instead")
    from .profiles import make_backend as make_remote_backend  # paramiko is imported only for remote profiles

    return make_remote_backend(profile, state_dir=workdir)
