"""The fixed backend (``kind: ssh``): a provider of fixed places (hosts with their slots) plus a launcher
(the resident agent, or the shell way) over one SSH transport per host.

Executions re-attached after a controller restart are watched through their run-directory files,
which needs nothing from any agent (the launcher's fallback); their slots are claimed until they end.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import gevent
import gevent.event

from orchestra.errors import ProfileError

from orchestra.resources import Request

from .agent import META_DIR
from .backend import AllocationInfo, CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from .capacity import PROBE_COMMAND, parse_probe
from .checkpoint_copy import CheckpointCopies
from .checkpoints import ENV_NAME as CHECKPOINT_ENV, checkpoint_dir, parse_prepare, render_prepare, render_remove
from .launchers.agent import AgentLauncher
from .launchers.shell import ShellLauncher
from .packed import PackedSlots
from .placement import BINDING_FILE, NodeCapacity
from .launchers import Launcher, Place
from .profiles import SSHHostConfig, SSHProfile
from .providers.fixed import FixedProvider
from .remote_runs import RemoteRuns, q
from .slots import SlotPool
from .transports import Transport


class FixedBackend:
    name = "ssh"

    def __init__(self, profile: SSHProfile, provider: FixedProvider, launcher: Launcher,
                 runs: dict[str, RemoteRuns], copies: CheckpointCopies | None = None) -> None:
        self.profile = profile
        # The controller's copies of checkpoint directories: hosts that share no filesystem (`shared:
        # false`, the default for ssh) lose them with their disk, and a retry may go to another host.
        self.copies = None if profile.shared else copies
        self.provider = provider
        self.launcher = launcher
        self.runs = runs
        self.hosts: dict[str, Transport] = {name: r.host for name, r in runs.items()}
        self.pool = SlotPool()
        self.running_commit_delay = launcher.running_commit_delay
        self.submitted = gevent.event.Event()
        self.submitted.set()  # nothing to ask a scheduler for
        self._run_listing: dict[str, set[str]] | None = None
        self._reattached: dict[str, Slot] = {}
        self.packed = PackedSlots(profile.name, profile.limit_memory)  # used once resources: are declared

    def start(self, expected: int = 0) -> None:
        jobs = [gevent.spawn(self._start_host, place) for place in self.provider.places()]
        gevent.joinall(jobs)
        for job in jobs:
            if job.exception is not None:
                raise job.exception
        for slot in self.provider.slots():
            self.pool.add(slot)

    def _start_host(self, place: Place) -> None:
        runs = self.runs[place.host]
        if not runs.workdir:
            runs.prepare()
        self.launcher.places_up([place])

    def acquire(self, need: float | None = None) -> Slot:
        return self.pool.acquire()  # hosts have no walltime: any slot fits

    def expires(self, slot: Slot) -> float | None:
        return None

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        self.launcher.warn(handle, signal, grace)

    def drop_checkpoint(self, execution_id: str) -> None:
        for runs in self.runs.values():  # an attempt may have run on any host
            if runs.workdir:
                runs.host.run(render_remove(checkpoint_dir(runs.workdir, execution_id)), warn=True, timeout=60)
        if self.copies is not None:
            self.copies.drop(execution_id)

    def save_checkpoint(self, handle: RunHandle) -> float | None:
        if self.copies is None:
            return None  # the hosts share the workdir: the directory is where the next attempt looks
        runs = self._runs(handle.slot.host)
        return self.copies.pull(runs.host, checkpoint_dir(runs.workdir, handle.execution_id), handle.execution_id)

    def stop_waiting(self) -> None:
        self.packed.stop_waiting()  # fixed slots always come back; only packing waits on a release

    def waiting_for(self) -> str | None:
        return None

    def release(self, slot: Slot) -> None:
        if not self.packed.release(slot):
            self.pool.release(slot)

    # --- packing by resources ----------------------------------------------------------------------------
    def capacities(self) -> list[NodeCapacity]:
        """Each host's capacity: what the profile declares, the rest probed in one command per host."""
        def probe(cfg: SSHHostConfig) -> NodeCapacity:
            # Asked even when all is declared: executions are bound to cores, which must exist there.
            result = self.hosts[cfg.destination].run(PROBE_COMMAND, warn=True, timeout=60)
            return parse_probe(result.stdout, cfg.destination, dict(cfg.capacity))

        jobs = [gevent.spawn(probe, cfg) for cfg in self.profile.hosts]
        gevent.joinall(jobs)
        for job in jobs:
            if job.exception is not None:
                raise job.exception
        return [job.get() for job in jobs]

    def check_requests(self, requests: Sequence[Request]) -> None:
        # Both launchers bind: the agent at spawn, the shell launcher by lines of its wrapper shell.
        self.packed.configure(self.capacities())
        self.packed.check(requests)

    def acquire_for(self, requests: Sequence[Request], wait: bool = True) -> tuple[int, Slot] | None:
        if not self.packed.active:
            self.check_requests(requests)
        return self.packed.acquire(requests, wait)

    def _runs(self, host: str) -> RemoteRuns:
        try:
            return self.runs[host]
        except KeyError:
            raise ProfileError(f"profile {self.profile.name}: no host {host!r}; hosts: "
                               f"{', '.join(self.runs)}") from None

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        self._runs(slot.host)
        env = {**self.profile.env, **job.env, "ORCHESTRA_EXECUTION_ID": job.execution_id,
               "ORCHESTRA_SLOT": str(slot.index)}
        resumed_from = None
        if job.checkpoint is not None:
            # Per host; without a shared filesystem, the controller's copy (taken on the host of an
            # earlier attempt) is restored first where this host has none or an older one.
            runs = self.runs[slot.host]
            directory = checkpoint_dir(runs.workdir, job.execution_id)
            resumed_from = parse_prepare(runs.host.run(render_prepare(directory), warn=True, timeout=60).stdout)
            if self.copies is not None:
                resumed_from = self.copies.restore(runs.host, directory, job.execution_id, resumed_from)
            env[CHECKPOINT_ENV] = directory
            handle = self._launch(slot, job, code, env)
            handle.resumed_from = resumed_from
            return handle
        return self._launch(slot, job, code, env)

    def _launch(self, slot: Slot, job: Job, code: CodeArchive, env: dict[str, str]) -> RunHandle:
        bound = self.packed.bound(slot, job, env)
        if bound is None:
            return self.launcher.launch(Place(slot.host), slot, job, code, env)
        assert isinstance(self.launcher, (AgentLauncher, ShellLauncher))  # the launchers that bind
        handle = self.launcher.launch(Place(slot.host), slot, bound.job, code, bound.env, affinity=bound.affinity,
                                      meta=bound.meta)
        handle.binding = bound.binding
        return handle

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        try:
            return self.launcher.wait(handle, timeout)
        finally:
            if self._reattached.pop(handle.execution_id, None) is not None:
                # The controller holds no slot for a re-attached execution: give its slot back here.
                self.pool.unclaim(handle.slot)
            self.packed.unhold(handle.execution_id)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        return self.launcher.collect(handle, job, dest)

    def discard(self, handle: RunHandle) -> None:
        self.launcher.discard(handle)

    def stop(self, handle: RunHandle) -> None:
        self.launcher.stop(handle)

    def read_output(self, handle: RunHandle, offsets: tuple[int, int]) -> tuple[bytes, bytes]:
        return self.launcher.read_output(handle, offsets)

    def read_meta(self, handle: RunHandle, name: str, offset: int) -> bytes:
        return self.launcher.read_meta(handle, name, offset)

    def _host_holding(self, execution_id: str) -> str | None:
        """The host whose workdir has this execution's run directory (one listing per host per resume)."""
        if self._run_listing is None:
            listing: dict[str, set[str]] = {}
            for name, runs in self.runs.items():
                if not runs.workdir:
                    runs.prepare()
                result = runs.host.run(f"ls -1 {q(runs.workdir)}/runs", warn=True, timeout=120)
                listing[name] = set(result.stdout.split())
            self._run_listing = listing
        return next((name for name, ids in self._run_listing.items() if execution_id in ids), None)

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        if host is None and self.running_commit_delay > 0:
            host = self._host_holding(execution_id)  # launched within the running-commit delay
        if host is None or host not in self.runs:
            return None
        found = self.launcher.find(execution_id, host, remote_dir)
        if found is None:
            return None
        index = slot if slot is not None else found.slot
        the_slot = Slot(host, index if index is not None else 0)
        if index is not None and index < self.provider.slot_count(host) and the_slot not in self._reattached.values():
            self.pool.claim(the_slot)  # held until the re-attached execution ends (see wait)
            self._reattached[execution_id] = the_slot
        handle = RunHandle(execution_id, the_slot, found.remote_dir, pid=found.pid, started=found.started)
        if self.packed.active:  # it keeps its cores and devices until it ends
            result = self.hosts[host].run(f"cat {q(found.remote_dir)}/{META_DIR}/{BINDING_FILE}", warn=True,
                                          timeout=60)
            handle.binding = self.packed.hold(execution_id, host, result.stdout if result.ok else None)
        return handle

    def release_orphans(self) -> list[str]:
        return []  # no allocations

    def allocation_of(self, slot: Slot) -> AllocationInfo | None:
        return None

    def transports(self) -> list[Transport]:
        return list(self.hosts.values())

    def workdirs(self) -> dict[str, str]:
        return {name: runs.workdir for name, runs in self.runs.items()}

    def close(self) -> None:
        self.launcher.drain()  # the last removals
        self.launcher.close()
        for runs in self.runs.values():
            runs.stop_watching()
        for host in self.hosts.values():
            host.close()


__all__ = ["FixedBackend"]
