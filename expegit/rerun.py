"""`expegit rerun`: the same execution again (same parameters, same command, same or another code commit).

A rerun is a new execution, never a rewrite of the original: branches are append-only. Its record names the
original in ``rerun_of``, so `git log` and `expegit compare` can put the two side by side.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from orchestra.errors import UsageError
from orchestra.execution import ExecutionRecord, ExecutionSpec
from orchestra.progress import Progress

from .campaign import Campaign
from .gitcli import rev_parse
from .records import RecordIndex
from .runner import RunSummary, run_specs


def rerun_specs(originals: Sequence[ExecutionRecord], *, at: str | None = None, profile: str | None = None
                ) -> list[ExecutionSpec]:
    """One spec per original. The command is the original's verbatim: a manifest edited since then must
    not change what a reproduction runs. Not the search's: a rerun is the user's repeat, not a proposal."""
    return [ExecutionSpec(commit=at or r.commit, parameters=dict(r.parameters), profile=profile or r.profile,
                          repeat=r.repeat, rerun_of=r.id, command=r.command) for r in originals]


def failed_without_rerun(records: Sequence[ExecutionRecord]) -> list[ExecutionRecord]:
    """Failed executions no rerun was made of yet: a second `rerun --failed` retries each failure chain once
    more (the failed rerun, not its original again)."""
    rerun = {r.rerun_of for r in records if r.rerun_of}
    return [r for r in records if r.state == "failed" and r.id not in rerun]


def select_originals(campaign: Campaign, ids: Sequence[str], *, failed: bool) -> list[ExecutionRecord]:
    if not ids and not failed:
        raise UsageError("rerun needs execution ids or --failed", hint="`expegit list` shows the ids")
    index = RecordIndex(campaign.store)
    records, _tips, _problems = index.load()
    chosen: dict[str, ExecutionRecord] = {}
    for prefix in ids:
        execution_id = index.resolve(prefix)
        if execution_id not in records:
            raise UsageError(f"execution {execution_id} has an unreadable record: it cannot be rerun",
                             hint="`expegit list` names the problem")
        chosen[execution_id] = records[execution_id]
    if failed:
        ordered = sorted(records.values(), key=lambda r: (r.created or "", r.id))
        for record in failed_without_rerun(ordered):
            chosen.setdefault(record.id, record)
    return list(chosen.values())


def rerun_campaign(campaign: Campaign, ids: Sequence[str] = (), *, failed: bool = False, at: str | None = None,
                   profile: str | None = None, slots: int | None = None,
                   progress: Callable[[], Progress] | None = None,
                   leave: str = "none") -> tuple[RunSummary, list[tuple[str, str]]]:
    """Run the reruns; (summary, [(original id, new id)]). Originals on several profiles run one profile
    after the other, each through `expegit run`'s own path (``progress`` makes each one's progress line)."""
    campaign.manifest  # a broken manifest is reported before anything is created
    originals = select_originals(campaign, ids, failed=failed)
    commit = rev_parse(campaign.root, at) if at is not None else None
    specs = rerun_specs(originals, at=commit, profile=profile)
    total = RunSummary()
    pairs: list[tuple[str, str]] = []
    by_profile: dict[str, list[ExecutionSpec]] = {}
    for spec in specs:
        by_profile.setdefault(spec.profile, []).append(spec)
    for group in by_profile.values():
        summary = run_specs(campaign, group, slots=slots, progress=progress() if progress else None, leave=leave)
        records = RecordIndex(campaign.store).load()[0]
        pairs.extend((records[i].rerun_of or "", i) for i in summary.ids if i in records)
        for name in ("total", "finished", "failed", "cancelled", "not_started"):
            setattr(total, name, getattr(total, name) + getattr(summary, name))
        total.errors.extend(summary.errors)
        total.ids.extend(summary.ids)
        total.interrupted = total.interrupted or summary.interrupted
        if summary.interrupted:
            break
    return total, pairs
