"""Running a study: asking points as slots free up, creating and running their executions, and resuming
what an earlier controller of this clone left (parasearch.study reads the study; this module drives it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.execution import FINAL_STATES, ExecutionRecord, ExecutionSpec
from orchestra.progress import Progress

from parasearch.study import (Study, _budget_path, describe_best, describe_point, load_study, record_value,
                              remember_budget, resource_points, slots_for_search)

if TYPE_CHECKING:  # the run path imports expegit (and gevent) only when it runs
    from expegit.campaign import Campaign
    from expegit.run_summary import RunSummary


# -- running a study -----------------------------------------------------------------------------------
@dataclasses.dataclass
class StudyRun:
    """What `parasearch run` reports: the session's summary plus the study's view of it."""

    study: Study
    summary: "RunSummary"
    stop_reason: str | None = None
    resumed: int = 0
    exhausted: bool = False
    without_objective: int = 0  # finished with exit 0 but no objective value: failed, for the search
    objective_missing: bool = False  # stopped because executions never produced the objective


def _ledger_path(campaign: "Campaign", sid: str) -> Path:
    # Ids of the study's executions created from this clone: unfinished ones among them were left by a
    # controller of ours and are resumed; unfinished ones not in it belong to a collaborator (pulled
    # branches) and only count as pending, so nothing runs twice.
    return campaign.workdir / "studies" / f"{sid}.ids"


def _read_ledger(path: Path) -> set[str]:
    try:
        return set(path.read_text("utf-8").split())
    except OSError:
        return set()


@contextlib.contextmanager
def _ask_lock(path: Path) -> Iterator[None]:
    """Serialise refresh -> ask -> create among controllers of one clone, so two never pick the same point.

    Waits cooperatively (non-blocking flock plus gevent sleeps): the hub keeps watching executions.
    """
    import fcntl

    import gevent

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                gevent.sleep(0.01)
        yield
    finally:
        os.close(fd)  # releases the lock


def _append_ledger(path: Path, ids: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(i + "\n" for i in ids))
        f.flush()
        os.fsync(f.fileno())


#: Executions that must all exit 0 without the objective's value before a study stops asking: enough to
#: not stop on one unlucky run, few enough that a typo in the metric costs seconds, not the budget.
MISSING_OBJECTIVE_LIMIT = 3


class _Driver:
    """The lazy task source and result sink of one `parasearch run` (runs inside the controller's greenlet)."""

    def __init__(self, campaign: "Campaign", study: Study, *, commit: str, profile: str, progress: Progress,
                 ledger: Path) -> None:
        import gevent.event

        self.campaign = campaign
        self.study = study
        self.commit = commit
        self.profile = profile
        self.progress = progress
        self.ledger = ledger
        self.inflight: set[str] = set()
        self.wake = gevent.event.Event()
        self.session: Any = None
        self.records: dict[str, ExecutionRecord] = {}
        self.tips: dict[str, str] = {}
        self.stop_reason: str | None = None
        self.exhausted = False
        self.objective_missing = False
        self.config_metric_seen = any(record_value(r) is not None for r in study.state.records)
        # Earlier runs count: a study whose executions never had the objective stops at once, not after
        # another few executions of every `run`.
        self.missing_objective: list[ExecutionRecord] = [] if self.config_metric_seen else [
            r for r in study.state.records if r.state == "finished" and r.exit_code == 0]
        if len(self.missing_objective) >= MISSING_OBJECTIVE_LIMIT:
            self.stop_reason = self._missing_objective_reason()
        self.without_objective = 0
        self.best_value = study.state.best().value if study.state.best() else None  # type: ignore[union-attr]
        self.pruning = _prune_watch(campaign, study, self, progress)

    # -- results ---------------------------------------------------------------------------------
    def on_result(self, record: ExecutionRecord, tip: str) -> None:
        """``tip``: the execution's final commit (staged; on disk after the writer's next flush)."""
        if record.search != self.study.id:
            return
        self.study.state.update(dataclasses.replace(record, parameters=dict(record.parameters)))
        # Not into study.tips: that is what _refresh last read from disk, and this commit may not be there
        # yet (a refresh meanwhile would then read the older record and never correct it).
        if self.pruning is not None:
            self.pruning.ended(record, tip)
        self.inflight.discard(record.id)
        self._watch_objective(record)
        if self.study.config.multi:  # no single best: the live line shows the front's size instead
            size = len(self.study.state.front())
            self.progress.best = f"front: {size} point(s)" if size else None
            self.wake.set()
            return
        best = self.study.state.best()
        if best is not None and best.value is not None and (self.best_value is None or best.value != self.best_value):
            improved = self.best_value is None or self.study.state._better(best.value, self.best_value)
            self.best_value = best.value
            self.progress.best = describe_best(best)
            if improved and not self.progress.live:
                self.progress.note(f"best    {self.study.config.metric}={best.value:.6g} "
                                   f"{describe_point(best.params)} ({best.ids[0]})")
        self.wake.set()

    def _watch_objective(self, record: ExecutionRecord) -> None:
        """Stop asking when the first executions all exit 0 without the objective's value.

        Why: a metric missing from its file (a typo in `objective.metric`, a script that writes another
        key) used to burn the whole budget with exit 0, each execution "finished" yet useless to the
        search. After the first few that all miss it, no further point is worth running.
        """
        if record_value(record) is not None:
            self.config_metric_seen = True
            return
        if record.exit_code != 0 or record.state != "finished":
            return  # failures have their own story (exit codes, retries); this is about the objective
        self.without_objective += 1
        if self.config_metric_seen or self.stop_reason is not None:
            return
        self.missing_objective.append(record)
        if len(self.missing_objective) >= MISSING_OBJECTIVE_LIMIT:
            self.stop_reason = self._missing_objective_reason()

    def _missing_objective_reason(self) -> str:
        objective = self.study.manifest.objective
        where = ("not every objective was read" if self.study.config.multi  # the problem names which
                 else f"{objective.source} has no {objective.metric!r}" if objective and objective.source
                 else f"their stdout has no {objective.metric!r} matching objective.pattern" if objective
                 else "no objective was read")
        problem = next((r.error for r in reversed(self.missing_objective) if r.error), None)
        self.objective_missing = True
        return (f"the first {len(self.missing_objective)} executions exited 0 but {where}"
                f"{f' ({problem})' if problem else ''}: fix objective: in orchestra.yaml or what the script writes")

    def _prune_errors(self) -> None:
        if self.session is None:
            return
        for controller in self.session.controllers:
            for execution_id, _exc in controller.errors:
                self.inflight.discard(execution_id)

    def _stopping(self) -> bool:
        return self.session is not None and (self.session.summary.interrupted or any(
            c.stopping.is_set() for c in self.session.controllers))

    def _wait_for_room(self) -> bool:
        """Block (cooperatively) until fewer than ``parallel`` executions are in flight; False if stopping."""
        while True:
            self._prune_errors()
            if self._stopping():
                return False
            if len(self.inflight) < self.study.config.parallel:
                return True
            self.wake.clear()
            self.wake.wait(0.5)

    def _refresh(self) -> None:
        """Fold in what other writers put on the branches since (another controller, `expegit resume`).

        Reading the refs is one file; only branches whose tip moved are read, so asking stays cheap.
        """
        from orchestra.errors import ExecutionError

        from expegit.records import RecordIndex

        index = RecordIndex(self.campaign.store)
        for execution_id, tip in self.campaign.store.execution_tips().items():
            if self.study.tips.get(execution_id) == tip or execution_id in self.records:
                continue  # unchanged, or ours and in flight (told by on_result)
            self.study.tips[execution_id] = tip
            try:
                record = index.record_at(tip)
            except ExecutionError:
                continue
            if record.search == self.study.id:
                self.study.state.update(record)

    def _told(self) -> dict[str, float] | None:
        """With early stopping, what each fidelity taught the model (PruneWatch.told); the level needs the
        space's dimension plus 2 values (BOHB's minimum for a model: fewer would not pin down a slope per
        parameter)."""
        if self.pruning is None or self.study.config.multi:
            return None
        return self.pruning.told(self.study.space.dim + 2, record_value)

    # -- tasks -----------------------------------------------------------------------------------
    def _create(self, items: Sequence[tuple[dict[str, Any], int]]) -> list[ExecutionRecord]:
        from expegit.runner import create_executions

        specs = [ExecutionSpec(commit=self.commit, parameters=params, profile=self.profile, repeat=repeat,
                               search=self.study.id) for params, repeat in items]
        created = []
        for record, tip in create_executions(self.campaign, self.study.manifest, specs):
            self.records[record.id] = record
            self.tips[record.id] = tip
            self.study.tips[record.id] = tip
            created.append(record)
        _append_ledger(self.ledger, [r.id for r in created])
        for record in created:
            self.study.state.update(dataclasses.replace(record, parameters=dict(record.parameters)))
        return created

    def tasks(self, leftovers: Sequence[Any]) -> Iterator[Any]:
        """Re-attached or re-run leftovers first, then missing repeats, then new points asked one at a time."""
        from expegit.runner import job_for
        from runaway.controller import Task

        for task in leftovers:
            if not self._wait_for_room():
                return
            self.inflight.add(task.job.execution_id)
            yield task
        config, state = self.study.config, self.study.state
        queue: list[ExecutionRecord] = []
        missing = state.missing_repeats()
        if missing:
            queue.extend(self._create(missing[:state.remaining()]))
        while True:
            if not self._wait_for_room():
                return
            if self.stop_reason is not None:
                return  # results showed that asking more is pointless (see _watch_objective)
            if not queue:
                with _ask_lock(self.ledger.with_suffix(".lock")):
                    self._refresh()
                    self.stop_reason = state.stop_reason()
                    if self.stop_reason is not None or state.remaining() < config.repeats:
                        return
                    points = self.study.sampler.ask(1, state.trials(self._told()), state.pending())
                    if not points:
                        self.exhausted = True
                        return
                    queue.extend(self._create([(points[0], i) for i in range(config.repeats)]))
            record = queue.pop(0)
            self.inflight.add(record.id)
            yield Task(job_for(self.study.manifest, record), attempt=1)


def _prune_watch(campaign: "Campaign", study: Study, driver: _Driver, progress: Progress) -> Any:
    """The early stopping watch of a study whose manifest asks for it (None otherwise: nothing is followed)."""
    spec = study.manifest.early_stopping
    if spec is None:
        return None
    from expegit.metrics_stream import METRICS_PATH, parse_metrics_text

    from parasearch.pruning import PruneWatch

    def read_metrics(execution_id: str, tip: str | None) -> list[dict[str, Any]]:
        tip = tip or study.tips.get(execution_id) or campaign.store.execution_tip(execution_id)
        if tip is None:
            return []
        campaign.store.tree_of(tip)  # a commit not found raises: the watch asks again, never caches "no points"
        raw = campaign.store.read_path(tip, METRICS_PATH)
        return parse_metrics_text(raw) if raw else []

    def prune(execution_id: str, grace: float, note: dict[str, Any]) -> bool:
        return driver.session is not None and driver.session.prune(execution_id, grace, note)

    return PruneWatch(spec, lambda: study.state.records, read_metrics, prune, progress.note)


def _leftover_tasks(campaign: "Campaign", study: Study, backend_for: Any, own: set[str], progress: Progress,
                    adopted: dict[str, list[str]]
                    ) -> dict[str, tuple[dict[str, ExecutionRecord], dict[str, str], list[Any]]]:
    """Tasks for the study's unfinished executions a dead controller of this clone left, by profile.

    Like `expegit resume`: re-attach to what still runs or ended unwatched, run again what never ran.
    """
    from expegit.records import RecordIndex
    from expegit.resume import adopt_reattached
    from expegit.runner import job_for
    from runaway.controller import Task

    _records, tips, _problems = RecordIndex(campaign.store).load()
    groups: dict[str, tuple[dict[str, ExecutionRecord], dict[str, str], list[Any]]] = {}
    todo = sorted((r for r in study.state.records if r.state not in FINAL_STATES and r.id in own),
                  key=lambda r: (r.created or "", r.id))
    for record in todo:
        record = dataclasses.replace(record, parameters=dict(record.parameters), outputs=list(record.outputs))
        backend = backend_for(record.profile)
        handle = None
        if record.state in ("running", "created"):
            handle = backend.reattach(record.id, record.host, record.slot, record.remote_dir)
        if handle is not None:
            progress.note(f"re-attached {record.id} (left by an earlier controller)")
            attempt = max(1, record.attempt)
            if adopt_reattached(record, handle, attempt):
                adopted.setdefault(record.profile, []).append(record.id)
        else:
            if record.state in ("running", "cancelled"):
                record.attempt = max(record.attempt, 1)
            attempt = max(1, record.attempt + (record.attempt > 0))
        records, group_tips, tasks = groups.setdefault(record.profile, ({}, {}, []))
        records[record.id] = record
        group_tips[record.id] = tips[record.id]
        tasks.append(Task(job_for(study.manifest, record), handle=handle, attempt=attempt))
    return groups


def run_study(campaign: "Campaign", *, algorithm: str | None = None, budget: int | None = None,
              parallel: int | None = None, profile: str | None = None, slots: int | None = None,
              progress: Progress | None = None, leave: str = "none", snapshot: bool = False) -> StudyRun:
    """`parasearch run`: continue the study from the branches, asking points as slots free up."""
    from expegit.runner import ControllerRegistry, check_requests, code_commit
    from runaway.factory import campaign_backend as make_backend, profile_for

    study = load_study(campaign, algorithm=algorithm, budget=budget, parallel=parallel)
    study.sampler  # noqa: B018 - a sampler that cannot be built fails before anything is created
    manifest = study.manifest
    profile = profile or manifest.profile
    slots, note = slots_for_search(profile_for(profile, manifest), slots, study.config.parallel)
    backend = make_backend(profile, manifest, campaign.workdir, slots=slots)  # a bad profile fails here
    if manifest.resources:  # ...and so does a space whose values can ask more than a node has
        try:
            check_requests(manifest, backend, resource_points(manifest))
        finally:
            backend.close()
    commit = code_commit(campaign, snapshot=snapshot)
    progress = progress or Progress(0)
    if note:
        progress.note(f"parasearch: {note}")
    if budget is not None:
        remember_budget(_budget_path(campaign, study.id), budget, (manifest.search or {}).get("budget"))
    ledger = _ledger_path(campaign, study.id)
    with ControllerRegistry(campaign) as registry:
        # The ledger is read before looking for other controllers (and after registering): what a
        # controller that this one does not see yet creates cannot be in it.
        own = _read_ledger(ledger)
        if registry.others_alive():
            own = set()  # another live controller may be driving them
        return _run_study(campaign, study, profile=profile, slots=slots, progress=progress, commit=commit,
                          ledger=ledger, own=own, leave=leave)


def _run_study(campaign: "Campaign", study: Study, *, profile: str, slots: int | None, progress: Progress,
               commit: str, ledger: Path, own: set[str], leave: str) -> StudyRun:
    from expegit.runner import Session
    from runaway.factory import campaign_backend as make_backend

    manifest = study.manifest
    backends: dict[str, Any] = {}

    def backend_for(name: str) -> Any:
        if name not in backends:
            backends[name] = make_backend(name, manifest, campaign.workdir, slots=slots)
        return backends[name]

    adopted: dict[str, list[str]] = {}
    leftovers = _leftover_tasks(campaign, study, backend_for, own, progress, adopted)
    resumed = sum(len(tasks) for _r, _t, tasks in leftovers.values())
    config, state = study.config, study.state
    new = max(state.remaining() - len(state.missing_repeats()), 0) // config.repeats * config.repeats
    progress.total = resumed + min(len(state.missing_repeats()), state.remaining()) + new
    progress.best = describe_best(state.best())
    driver = _Driver(campaign, study, commit=commit, profile=profile, progress=progress, ledger=ledger)
    main_records, main_tips, main_leftovers = leftovers.pop(profile, ({}, {}, []))
    driver.records.update(main_records)
    driver.tips.update(main_tips)
    # Each profile's backend is the one its leftovers were re-attached through: it knows which
    # executions it watches through their files and which slots they hold.
    # Re-attached leftovers hold their slots: the controller drives them at once, beside the asker (which
    # only advances when a slot is free, and no slot frees while they hold them all).
    held = [task for task in main_leftovers if task.handle is not None]
    driver.inflight.update(task.job.execution_id for task in held)
    groups: list[tuple[Any, ...]] = [
        (profile, driver.records, driver.tips, driver.tasks([t for t in main_leftovers if t.handle is None]),
         backends.get(profile), None, adopted.get(profile, ()), held)]
    for other, (records, tips, tasks) in leftovers.items():
        groups.append((other, records, tips, tasks, backends.get(other), None, adopted.get(other, ())))
    session = Session(campaign, manifest, slots=slots, progress=progress, on_result=driver.on_result, leave=leave,
                      on_points=driver.pruning.on_points if driver.pruning is not None else None)
    driver.session = session
    summary = session.run(groups)
    summary.total = summary.finished + summary.failed + summary.cancelled + summary.pruned
    summary.not_started = sum(1 for r in driver.records.values() if r.state == "created")
    return StudyRun(study, summary, stop_reason=driver.stop_reason or study.state.stop_reason(),
                    resumed=resumed, exhausted=driver.exhausted, without_objective=driver.without_objective,
                    objective_missing=driver.objective_missing)


__all__ = ["StudyRun", "run_study"]
