"""`expegit resume`: finish what an interrupted or killed controller left behind.

Re-attach to what still runs (its journal completed where the dead controller left it short), collect what
ended unwatched, re-run what never ran or died, and give back the allocations a dead controller held.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any


from orchestra.errors import (OrchestraError, ProfileError, RepositoryError)
from orchestra.execution import (RESUMABLE_STATES, ExecutionRecord)
from orchestra.manifest import Manifest
from orchestra.progress import Progress
from runaway.backend import RunHandle
from runaway.allocation_ledger import orphaned_profiles
from runaway.factory import campaign_backend as make_backend
from runaway.controller import Task

from .campaign import Campaign
from .journal import iso_from_epoch
from .records import RecordIndex
from .run_summary import RunSummary
from .runner import ControllerRegistry, Session, check_requests, job_for


def resume_campaign(campaign: Campaign, *, slots: int | None = None, progress: Progress | None = None,
                    retry_failed: bool = False, leave: str = "none", profile: str | None = None) -> RunSummary:
    """`expegit resume`: re-attach to what still runs, collect what ended, re-run what was interrupted."""
    with ControllerRegistry(campaign) as registry:
        others = registry.others_alive()
        if others:
            raise RepositoryError(f"another controller (pid {others[0]}) is running this campaign",
                                  hint="wait for it to end or stop it, then resume")
        return _resume(campaign, slots=slots, progress=progress, retry_failed=retry_failed, leave=leave,
                       profile=profile)


def _release_orphaned_allocations(campaign: Campaign, manifest: Manifest, profiles: Iterable[str],
                                  progress: Progress) -> None:
    """Allocations a dead controller still holds for profiles with nothing left to resume: give them back
    now (the profiles being resumed give theirs back once what they re-attached has ended)."""
    for profile in sorted(profiles):
        try:
            backend = make_backend(profile, manifest, campaign.workdir)
        except ProfileError as exc:
            progress.note(f"allocations of profile {profile} are left as they are: {exc}")
            continue
        try:
            released = backend.release_orphans()
        finally:
            backend.close()
        if released:
            progress.note(f"released allocation(s) {', '.join(released)} of profile {profile}: "
                          "their controller is gone")


def adopt_reattached(record: ExecutionRecord, handle: RunHandle, attempt: int) -> bool:
    """Fill what the dead controller never journaled about an execution it launched; True if its
    "running" commit is missing (the caller then journals it).

    The dead controller may have launched it without its "running" commit reaching disk (local runs skip
    that commit for short executions; a remote one can be killed between the launch and the writer's next
    flush). The record must still tell that attempt's story: which attempt, where, and since when. Without
    this the finished record said attempt 0, no start time and no node (issue 10, "Record defects").
    """
    missing = record.state == "created"
    record.state = "running"
    record.attempt = attempt
    if missing or record.host is None:
        record.host = handle.slot.host
    if handle.slot.node is not None:
        record.node = handle.slot.node
    if handle.slot.index >= 0 and (missing or record.slot is None or record.slot < 0):
        record.slot = handle.slot.index
    if missing or not record.remote_dir:
        record.remote_dir = handle.remote_dir
    if record.started is None:
        record.started = iso_from_epoch(handle.started)
    return missing


def _move_to_profile(campaign: Campaign, manifest: Manifest, by_profile: dict[str, dict[str, ExecutionRecord]],
                     target: str, progress: Progress) -> dict[str, dict[str, ExecutionRecord]]:
    """`resume --profile P`: what is left to run goes to P; what still runs elsewhere stays watched there.

    An execution recorded running keeps its profile (it may still run; moving it would run it twice). One
    recorded created may have been launched by a dead controller without its running commit: it is looked
    for on its own profile first, and moves only if nothing is found there or that profile cannot be
    reached (the reason to move, usually: a host that is gone).
    """
    moved: dict[str, dict[str, ExecutionRecord]] = {target: dict(by_profile.get(target, {}))}
    counts: dict[str, int] = {}
    for name, records in by_profile.items():
        if name == target:
            continue
        stay: dict[str, ExecutionRecord] = {}
        unreachable = False
        backend: Any = None
        for record in records.values():
            if record.state == "running":
                stay[record.id] = record
                continue
            if record.state == "created" and not unreachable:
                try:
                    if backend is None:
                        backend = make_backend(name, manifest, campaign.workdir)
                    if backend.reattach(record.id, record.host, record.slot, record.remote_dir) is not None:
                        stay[record.id] = record
                        continue
                except OrchestraError as exc:
                    unreachable = True
                    progress.note(f"profile {name} cannot be reached ({exc}): its executions move to {target}")
            record.profile = target
            moved[target][record.id] = record
            counts[name] = counts.get(name, 0) + 1
        if backend is not None:
            backend.close()
        if stay:
            moved[name] = stay
    for name, count in sorted(counts.items()):
        progress.note(f"moving {count} execution(s) from profile {name} to {target}")
    return {name: records for name, records in moved.items() if records}


def _resume(campaign: Campaign, *, slots: int | None, progress: Progress | None, retry_failed: bool,
            leave: str, profile: str | None = None) -> RunSummary:
    manifest = campaign.manifest
    index = RecordIndex(campaign.store)
    all_records, tips, _problems = index.load()
    wanted = RESUMABLE_STATES | ({"failed"} if retry_failed else set())
    todo = {i: r for i, r in all_records.items() if r.state in wanted}
    by_profile: dict[str, dict[str, ExecutionRecord]] = {}
    for record in sorted(todo.values(), key=lambda r: (r.created or "", r.id)):
        by_profile.setdefault(record.profile, {})[record.id] = record
    progress = progress or Progress(len(todo))
    if profile is not None:
        make_backend(profile, manifest, campaign.workdir, slots=slots)  # a bad profile fails before anything
        by_profile = _move_to_profile(campaign, manifest, by_profile, profile, progress)
    _release_orphaned_allocations(campaign, manifest, set(orphaned_profiles(campaign.workdir / "allocations"))
                                  - set(by_profile), progress)
    progress.total = len(todo)
    groups = []
    for profile, records in by_profile.items():
        backend = make_backend(profile, manifest, campaign.workdir, slots=slots)
        check_requests(manifest, backend, (record.parameters for record in records.values()))
        tasks: list[Task] = []
        adopted: list[str] = []
        for record in records.values():
            handle = None
            if record.state in ("running", "created"):
                handle = backend.reattach(record.id, record.host, record.slot, record.remote_dir)
            if handle is not None:
                progress.note(f"re-attached {record.id}: it went on while no controller watched it")
                attempt = max(1, record.attempt)  # the same attempt, watched again
                if adopt_reattached(record, handle, attempt):
                    adopted.append(record.id)
            elif record.state == "created" and record.attempt == 0:
                attempt = 1  # never launched
            else:
                attempt = max(1, record.attempt) + 1  # launched before and lost, stopped or failed: a new attempt
            tasks.append(Task(job_for(manifest, record), handle=handle, attempt=attempt))
        groups.append((profile, records, {i: tips[i] for i in records}, tasks, backend, None, adopted))
    session = Session(campaign, manifest, slots=slots, progress=progress, leave=leave)
    summary = session.run(groups)
    summary.total = len(todo)
    summary.ids = sorted(todo)
    return summary
