"""From a profile to a backend: the ONE place that knows every kind of profile.

A backend is a provider (where places come from) plus a launcher (how executions start and are
watched) over transports (how commands reach the places)::

    local    LocalBackend: this machine, its agent through a unix socket
    ssh      FixedBackend(FixedProvider(hosts), AgentLauncher | ShellLauncher, SSHTransport per host)
    slurm    AllocationBackend(SlurmProvider, AgentLauncher(NodeAgents) | ShellLauncher(srun), SSHTransport)
    command  AllocationBackend(CommandProvider(templates), ShellLauncher(launch template), SSHTransport)
    oar      AllocationBackend(OARProvider, ShellLauncher(oarsh prefix), SSHTransport)

Everything remote is imported late, so a local profile never imports paramiko.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import ProfileError

from .backend import Backend
from .profiles import CommandProfile, LocalProfile, Profile, SlurmProfile, SSHProfile, resolve_profile

if TYPE_CHECKING:
    from orchestra.manifest import Manifest

    from .launchers import Launcher

    from .providers import AllocationProvider


def profile_for(name: str, manifest: "Manifest") -> Profile:
    """The typed profile: the manifest's shared one with ~/.config/orchestra/profiles/NAME.yaml over it."""
    return resolve_profile(name, manifest.profiles)


def campaign_backend(name: str, manifest: "Manifest", workdir: Path, *, slots: int | None = None) -> Backend:
    """A backend for profile ``name`` of a campaign; ``workdir`` is its private directory (local runs,
    and the ledger of the allocations it holds)."""
    return make_backend(profile_for(name, manifest), workdir=workdir, state_dir=workdir, slots=slots)


def default_local_workdir() -> Path:
    """Where `runaway exec` runs local executions outside a campaign."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestra" / "runaway"


def make_backend(profile: Profile, *, workdir: Path | None = None, state_dir: Path | None = None,
                 slots: int | None = None) -> Backend:
    """The backend for ``profile``.

    ``workdir``: where a local profile without its own ``workdir`` runs (default: the user's cache);
    ``state_dir``: the campaign's private directory, where allocation backends record the allocations
    they hold (runaway/allocation_ledger.py); None outside a campaign (`runaway exec`);
    ``slots``: the `--slots` override, for local profiles only."""
    if isinstance(profile, LocalProfile):
        from .local import LocalBackend

        base = Path(profile.workdir).expanduser() if profile.workdir else (workdir or default_local_workdir())
        return LocalBackend(base, slots or profile.slots, dict(profile.env), capacity=dict(profile.capacity),
                            limit_memory=profile.limit_memory, profile=profile.name)
    if slots is not None:
        raise ProfileError(f"--slots applies to local profiles; profile {profile.name!r} is {profile.kind}: set its "
                           f"slots (ssh) or slots_per_node and allocation.nodes (slurm) instead")
    # Where the controller keeps copies of checkpoint directories of places without a shared workdir.
    copies_store = state_dir or default_local_workdir()
    if isinstance(profile, SlurmProfile):  # CommandProfile included
        return _allocation_backend(profile, state_dir, copies_store)
    if isinstance(profile, SSHProfile):
        return _fixed_backend(profile, copies_store)
    raise ProfileError(f"profile {profile.name!r}: kind {profile.kind} has no backend")


def _fixed_backend(profile: SSHProfile, copies_store: Path) -> Backend:
    from .checkpoint_copy import CheckpointCopies
    from .fixed_backend import FixedBackend
    from .launchers.agent import AgentLauncher, HostAgents
    from .launchers.shell import ShellLauncher
    from .providers.fixed import FixedProvider
    from .remote_runs import RemoteRuns
    from .transports.ssh import connect

    runs = {cfg.destination: RemoteRuns(connect(cfg.destination, profile), profile.workdir, python=profile.python,
                                        poll_interval=profile.poll_interval)
            for cfg in profile.hosts}
    shell = ShellLauncher(runs.__getitem__, setup=profile.setup)
    launcher: Launcher = (AgentLauncher(HostAgents(runs.__getitem__, profile.python), shell, setup=profile.setup)
                          if profile.launcher == "agent" else shell)
    provider = FixedProvider([(cfg.destination, cfg.slots) for cfg in profile.hosts])
    return FixedBackend(profile, provider, launcher, runs, CheckpointCopies(copies_store))


def allocation_provider(profile: SlurmProfile) -> "AllocationProvider":
    """Which scheduler a profile's allocations come from (a new scheduler is one more branch here)."""
    if isinstance(profile, CommandProfile):
        from .providers.command import CommandProvider
        return CommandProvider(profile)
    if profile.kind == "oar":
        from .providers.oar import OARProvider
        return OARProvider(profile)
    from .providers.slurm import SlurmProvider
    return SlurmProvider()


def _allocation_backend(profile: SlurmProfile, state_dir: Path | None, copies_store: Path) -> Backend:
    from .allocation_backend import AllocationBackend
    from .checkpoint_copy import CheckpointCopies
    from .allocation_ledger import AllocationLedger
    from .launchers.agent import AgentLauncher
    from .launchers.shell import ShellLauncher
    from .launchers.srun import NodeAgents, node_prefix
    from .remote_runs import LAUNCHER_PID_FILE, RemoteRuns
    from .transports.ssh import connect

    provider = allocation_provider(profile)
    # The poll proves an execution alive by its launcher (the srun on the frontend; the wrapper is on a node).
    runs = RemoteRuns(connect(profile.host, profile), profile.workdir, python=profile.python,
                      poll_interval=profile.poll_interval, pid_file=LAUNCHER_PID_FILE, marker=provider.step_marker)
    shell = ShellLauncher(lambda _host: runs, setup=profile.setup, prefix_of=node_prefix(provider.launcher),
                          wait_pid=10.0)
    launcher: Launcher = shell
    if profile.launcher == "agent" and provider.supports_agent:
        launcher = AgentLauncher(NodeAgents(runs, profile.python, profile.name), shell, setup=profile.setup,
                                 running_commit_delay=0.0, lost_error="its allocation ended")
    ledger = AllocationLedger(state_dir / "allocations", profile.name) if state_dir is not None else None
    return AllocationBackend(profile, provider, launcher, runs, ledger, CheckpointCopies(copies_store))


__all__ = ["allocation_provider", "campaign_backend", "default_local_workdir", "make_backend", "profile_for"]
