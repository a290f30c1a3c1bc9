"""The study: a search declared in ``orchestra.yaml`` whose history is the campaign's execution branches.

Git is the storage. A study has an id (a hash of what defines it: algorithm, seed, repeats, the parameter
declarations and the objective), every execution it creates carries that id in its record's ``search``
field, and everything the study knows is re-read from those records: after a crash, on a collaborator's
clone after a pull, or with a raised budget, ``parasearch run`` continues from every result on the
branches. Budget and parallelism are not part of the id, so raising the budget continues the same study.

The pure part (:class:`StudyState`: points from records, aggregation over repeats, budget, stop
conditions, best points) knows nothing about git or processes and is what the unit tests pin. The run
part (:func:`run_study`) asks the sampler lazily, inside the task iterator the runaway controller advances
only when a slot is free, so a slot that frees up immediately gets a point chosen with every result so far.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import ManifestError, OrchestraError, SearchError, did_you_mean
from orchestra.execution import FINAL_STATES, ExecutionRecord, ExecutionSpec
from orchestra.manifest import Manifest
from orchestra.progress import Progress
from orchestra.search import ALGORITHMS, BLIND_ALGORITHMS

from parasearch.space import Key, Point, Space, Trial

if TYPE_CHECKING:  # the run path imports expegit (and gevent) only when it runs
    from expegit.campaign import Campaign
    from expegit.runner import RunSummary
    from parasearch.samplers import Sampler


# -- configuration and identity ----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The ``search:`` section with command-line overrides applied."""

    algorithm: str
    budget: int
    parallel: int = 1
    seed: int = 0
    repeats: int = 1
    target: float | None = None
    patience: int | None = None
    metric: str | None = None
    goal: str = "minimize"

    @property
    def point_budget(self) -> int:
        """Parameter points the budget pays for: a point is started only if all its repeats fit."""
        return max(self.budget // self.repeats, 0)


def study_config(manifest: Manifest, *, algorithm: str | None = None, budget: int | None = None,
                 parallel: int | None = None) -> StudyConfig:
    """The study's configuration: the manifest's ``search:`` with the command line's overrides."""
    search = dict(manifest.search or {})
    if not search and algorithm is None:
        raise SearchError(f"{manifest.path} has no `search:` section",
                          hint="add e.g. `search: {algorithm: bayes, budget: 40, parallel: 4}`, "
                               "or give --algorithm and --budget")
    algo = algorithm or search.get("algorithm")
    total = budget if budget is not None else search.get("budget")
    if total is None:
        raise SearchError("the search has no budget", hint="add `budget:` to search: or give --budget N")
    stop = search.get("stop") or {}
    objective = manifest.objective
    config = StudyConfig(
        algorithm=str(algo), budget=int(total),
        parallel=int(parallel if parallel is not None else search.get("parallel", 1)),
        seed=int(search.get("seed", 0)), repeats=int(search.get("repeats", manifest.repeats or 1)),
        target=None if stop.get("target") is None else float(stop["target"]),
        patience=None if stop.get("patience") is None else int(stop["patience"]),
        metric=objective.metric if objective else None, goal=objective.goal if objective else "minimize")
    _check_config(config, objective is not None)
    return config


def _check_config(config: StudyConfig, has_objective: bool) -> None:
    if config.algorithm not in ALGORITHMS:
        close = did_you_mean(config.algorithm, ALGORITHMS)  # as the manifest's own check says it
        raise SearchError(f"unknown search algorithm {config.algorithm!r}; use one of {', '.join(ALGORITHMS)}",
                          hint=close)
    if config.budget < 1:
        raise SearchError(f"search budget must be at least 1, got {config.budget}")
    if config.parallel < 1:
        raise SearchError(f"search parallel must be at least 1, got {config.parallel}")
    if config.repeats < 1:
        raise SearchError(f"search repeats must be at least 1, got {config.repeats}")
    if config.budget < config.parallel:
        raise SearchError(f"search budget ({config.budget}) is below parallel ({config.parallel})",
                          hint="raise the budget or lower parallel")
    if config.budget < config.repeats:
        raise SearchError(f"search budget ({config.budget}) cannot pay for one point of {config.repeats} repeats",
                          hint="raise the budget or lower repeats")
    if not has_objective and (config.algorithm not in BLIND_ALGORITHMS or config.target is not None
                              or config.patience is not None):
        raise SearchError(f"the {config.algorithm} search{' with stop conditions' if config.algorithm in BLIND_ALGORITHMS else ''}"
                          f" needs an objective", hint="declare `objective: {metric: ..., from: ..., goal: ...}`")


def study_id(manifest: Manifest, config: StudyConfig) -> str:
    """A stable hash of what defines the study (not budget, parallel nor stop: they may change mid-study)."""
    objective = manifest.objective
    identity = {
        "algorithm": config.algorithm, "seed": config.seed, "repeats": config.repeats,
        "parameters": manifest.declarations(),
        "objective": None if objective is None else {"metric": objective.metric, "goal": objective.goal,
                                                     "from": objective.source, "pattern": objective.pattern},
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def make_study_sampler(manifest: Manifest, config: StudyConfig) -> tuple[Space, "Sampler"]:
    """The space and sampler, or SearchError naming the fix: called before anything is created."""
    from parasearch.samplers import make_sampler

    space = Space.from_parameters(manifest.declarations())
    sampler = make_sampler(config.algorithm, space, seed=config.seed, budget=max(config.point_budget, 1),
                           goal=config.goal)
    return space, sampler


def search_problems(manifest: Manifest, text: str | None = None) -> list[OrchestraError]:
    """Problems of the manifest's own ``search:`` section that only the space and samplers see, positioned
    at it. Loading the manifest already ran orchestra.search's checks (what `expegit check` reports)."""
    if manifest.search is None:
        return []
    try:
        config = study_config(manifest)
        Space.from_parameters(manifest.declarations()).check(config.algorithm)
    except SearchError as exc:
        line, col = _search_position(manifest, text)
        return [ManifestError(f"search: {exc.message}", path=manifest.path, line=line, col=col, hint=exc.hint)]
    return []


def _search_position(manifest: Manifest, text: str | None) -> tuple[int | None, int | None]:
    try:
        from orchestra.yamlio import load_located  # bounded and fast: a manifest may be megabytes

        doc = load_located(text if text is not None else Path(manifest.path).read_text("utf-8"), string_keys=True)
        return doc.position(["search", "algorithm"])
    except Exception:  # a position is a courtesy: the message stands without it
        return None, None


# -- the pure state of a study -------------------------------------------------------------------------
@dataclasses.dataclass
class PointResult:
    """One parameter point of the study and every execution of it (its repeats)."""

    key: Key
    params: dict[str, Any]
    records: list[ExecutionRecord] = dataclasses.field(default_factory=list)

    @property
    def final(self) -> list[ExecutionRecord]:
        return [r for r in self.records if r.state in FINAL_STATES]

    @property
    def values(self) -> list[float]:
        return [v for v in (record_value(r) for r in self.final) if v is not None]

    @property
    def value(self) -> float | None:
        """The aggregated objective: the mean over the repeats that produced a value."""
        values = self.values
        return sum(values) / len(values) if values else None

    @property
    def ended(self) -> str:
        return max((r.ended or r.created or "" for r in self.final), default="")

    @property
    def ids(self) -> list[str]:
        return [r.id for r in sorted(self.records, key=lambda r: (r.repeat, r.created or "", r.id))]


def record_value(record: ExecutionRecord) -> float | None:
    """The objective of a finished execution, or None (failed, no metric, NaN): a failed trial."""
    if record.state != "finished" or record.objective is None or isinstance(record.objective, bool):
        return None
    try:
        value = float(record.objective)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class StudyState:
    """Everything a study knows, derived from its execution records alone (so it survives any crash)."""

    def __init__(self, space: Space, config: StudyConfig, records: Iterable[ExecutionRecord] = ()) -> None:
        self.space = space
        self.config = config
        self.points: dict[Key, PointResult] = {}
        self.by_id: dict[str, Key] = {}
        for record in records:
            self.update(record)

    def update(self, record: ExecutionRecord) -> None:
        """Add an execution of the study, or replace its earlier state."""
        old = self.by_id.get(record.id)
        if old is not None:
            point = self.points[old]
            point.records = [record if r.id == record.id else r for r in point.records]
            return
        key = self.space.key(record.parameters)
        point = self.points.get(key)
        if point is None:
            point = self.points[key] = PointResult(key, self.space.ordered(
                {k: v for k, v in record.parameters.items() if k in self.space.by_name}))
        point.records.append(record)
        self.by_id[record.id] = key

    # -- counts ------------------------------------------------------------------------------------
    @property
    def records(self) -> list[ExecutionRecord]:
        return [r for p in self.points.values() for r in p.records]

    @property
    def executions(self) -> int:
        """Every execution of the study in any state: what the budget counts."""
        return len(self.by_id)

    def counts(self) -> dict[str, int]:
        done = failed = unfinished = 0
        for record in self.records:
            if record.state not in FINAL_STATES:
                unfinished += 1
            elif record_value(record) is None:
                failed += 1
            else:
                done += 1
        return {"done": done, "failed": failed, "unfinished": unfinished}

    def remaining(self) -> int:
        return max(self.config.budget - self.executions, 0)

    # -- what the sampler sees ---------------------------------------------------------------------
    def complete(self, point: PointResult) -> bool:
        return len(point.final) >= self.config.repeats

    def trials(self) -> list[Trial]:
        """One Trial per point whose repeats are all final, in completion order (failed if none has a value)."""
        out = []
        for point in sorted((p for p in self.points.values() if self.complete(p)), key=lambda p: (p.ended, p.ids)):
            value = point.value
            out.append(Trial(dict(point.params), value, failed=value is None))
        return out

    def pending(self) -> list[Point]:
        """Points launched but not complete: no sampler may hand them out again."""
        return [dict(p.params) for p in self.points.values() if not self.complete(p)]

    def missing_repeats(self) -> list[tuple[dict[str, Any], int]]:
        """(point, repeat index) for points with fewer executions than repeats (a controller died midway)."""
        out = []
        for point in self.points.values():
            have = {r.repeat for r in point.records}
            if len(point.records) < self.config.repeats:
                free = [i for i in range(self.config.repeats) if i not in have]
                out.extend((dict(point.params), i) for i in free[:self.config.repeats - len(point.records)])
        return out

    # -- results -----------------------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return a > b if self.config.goal == "maximize" else a < b

    def ranked(self) -> list[PointResult]:
        """Complete points with a value, best first (ties: the earlier one)."""
        scored = [p for p in self.points.values() if self.complete(p) and p.value is not None]
        sign = -1.0 if self.config.goal == "maximize" else 1.0
        return sorted(scored, key=lambda p: (sign * p.value, p.ended, p.ids))  # type: ignore[operator]

    def best(self) -> PointResult | None:
        ranked = self.ranked()
        return ranked[0] if ranked else None

    def stop_reason(self) -> str | None:
        """Why the study should ask no more points (target reached, patience exhausted), or None."""
        target, patience = self.config.target, self.config.patience
        if target is None and patience is None:
            return None
        best: float | None = None
        since = 0
        for point in sorted((p for p in self.points.values() if self.complete(p)), key=lambda p: (p.ended, p.ids)):
            value = point.value
            if value is not None and (best is None or self._better(value, best)):
                best, since = value, 0
            else:
                since += len(point.final)
        if target is not None and best is not None and (best == target or self._better(best, target)):
            return f"target {target:g} reached ({self.config.metric} = {best:g})"
        if patience is not None and since >= patience:
            return f"no improvement in the last {since} executions (patience {patience})"
        return None


def describe_point(params: Mapping[str, Any]) -> str:
    parts = []
    for name, value in params.items():
        if isinstance(value, float):
            parts.append(f"{name}={value:.4g}")
        elif isinstance(value, bool):
            parts.append(f"{name}={'true' if value else 'false'}")
        else:
            parts.append(f"{name}={value}")
    return " ".join(parts)


def describe_best(point: PointResult | None) -> str | None:
    if point is None or point.value is None:
        return None
    return f"{point.value:.6g} ({describe_point(point.params)})"


# -- reading a study from a campaign ---------------------------------------------------------------
@dataclasses.dataclass
class Study:
    """A study as read from a campaign's branches: its id, configuration, space, sampler and state.

    The sampler is built on first use: `status` and `best` never ask, and building one imports numpy and
    scipy (about a second, measured: 0.6-1.35 s for `parasearch status` against 0.15 s for `expegit list`).
    """

    id: str
    config: StudyConfig
    space: Space
    _sampler: "Sampler | None"
    state: StudyState
    manifest: Manifest
    tips: dict[str, str] = dataclasses.field(default_factory=dict)  # every execution branch when read
    budget_from: str = "manifest"  # where config.budget came from: manifest, command line, or remembered

    @property
    def sampler(self) -> "Sampler":
        if self._sampler is None:
            self._sampler = make_study_sampler(self.manifest, self.config)[1]
        return self._sampler


def _budget_path(campaign: "Campaign", sid: str) -> Path:
    return campaign.workdir / "studies" / f"{sid}.budget"


def remembered_budget(path: Path, manifest_budget: int | None) -> int | None:
    """The budget a `run --budget N` of this clone gave the study, while the manifest's is unchanged.

    Why remembered: after `run --budget 12` over a manifest saying 8, `status` showed 12/8 and the next
    plain `run` went back to 8. A later edit of the manifest's budget wins: it is the newer decision.
    """
    try:
        data = json.loads(path.read_text("utf-8"))
        if data.get("manifest_budget") == manifest_budget and int(data["budget"]) >= 1:
            return int(data["budget"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def remember_budget(path: Path, budget: int, manifest_budget: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"budget": budget, "manifest_budget": manifest_budget}), "utf-8")
    os.replace(tmp, path)


def load_study(campaign: "Campaign", *, algorithm: str | None = None, budget: int | None = None,
               parallel: int | None = None) -> Study:
    """Validate the search (SearchError/ManifestError before anything is created) and read its history."""
    from expegit.records import RecordIndex

    manifest = campaign.manifest
    if manifest.search is not None:
        problems = search_problems(manifest, campaign.manifest_path.read_text("utf-8"))
        if problems:
            raise problems[0]
    config = study_config(manifest, algorithm=algorithm, budget=budget, parallel=parallel)
    space = Space.from_parameters(manifest.declarations())  # a bad space fails here, before anything exists
    sid = study_id(manifest, config)
    budget_from = "command line" if budget is not None else "manifest"
    if budget is None:
        kept = remembered_budget(_budget_path(campaign, sid), (manifest.search or {}).get("budget"))
        if kept is not None and kept != config.budget:
            config = dataclasses.replace(config, budget=kept)
            budget_from = "remembered"
    records, tips, _problems = RecordIndex(campaign.store).load()
    mine = sorted((r for r in records.values() if r.search == sid), key=lambda r: (r.created or "", r.id))
    return Study(sid, config, space, None, StudyState(space, config, mine), manifest, dict(tips), budget_from)


def status_text(study: Study) -> str:
    state, config = study.state, study.config
    counts = state.counts()
    budget_note = {"manifest": "", "command line": " (budget from --budget)",
                   "remembered": " (budget from the last `run --budget`)"}[study.budget_from]
    lines = [f"study {study.id}: {config.algorithm}, seed {config.seed}, {config.repeats} repeat(s) per point"]
    if state.executions == 0:
        lines.append(f"  0/{config.budget} executions{budget_note}: none yet; `parasearch run` starts the study")
    else:
        lines.append(f"  {state.executions}/{config.budget} executions{budget_note}: {counts['done']} done, "
                     f"{counts['failed']} failed, {counts['unfinished']} running or not run yet")
    best = state.best()
    if best is not None:
        lines.append(f"  best {config.metric} = {best.value:.6g} ({describe_point(best.params)}; "
                     f"{', '.join(i[:12] for i in best.ids)})")
    for note in bound_notes(study.space, best.params if best is not None else None):
        lines.append(f"  note: {note}")
    capacity = _capacity_note(study)
    if capacity:
        lines.append(f"  note: {capacity}")
    reason = state.stop_reason()
    if reason:
        lines.append(f"  stopped: {reason}")
    elif state.remaining() < config.repeats:
        lines.append(f"  budget spent: give `parasearch run --budget N` with N above {state.executions}, "
                     f"or raise search.budget, to continue")
    return "\n".join(lines)


def _capacity_note(study: Study) -> str | None:
    """What `run` would say about slots against parallel on the manifest's profile (None: nothing)."""
    try:
        from runaway.factory import profile_for

        profile = profile_for(study.manifest.profile, study.manifest)
    except OrchestraError:
        return None  # a bad profile is `run`'s error to report, with its fix
    capacity, explicit = profile_capacity(profile, None)
    if explicit and capacity < study.config.parallel:
        return slots_for_search(profile, None, study.config.parallel)[1]
    return None


def bound_notes(space: Space, params: Mapping[str, Any] | None, *, edge: float = 0.01) -> list[str]:
    """A line for each numeric parameter whose best value sits on a bound of its range.

    Why: the optimum may lie beyond the box the user declared, and no search can find it there; a user
    reading only the best value cannot tell a bound that limits the search from a true optimum. ``edge``
    is in unit-cube coordinates (log-warped where the range is), so 1% of the searched span.
    """
    if not params:
        return []
    notes = []
    for p in space.params:
        if p.kind not in ("int", "float") or p.name not in params or params[p.name] is None:
            continue
        if p.kind == "int" and p.high - p.low < 2:
            continue  # a range of one or two integers is all bounds
        value = params[p.name]
        if p.kind == "int":  # an integer owns a cell of the unit cube: on a bound means equal to it
            low, high = value <= p.low, value >= p.high
        else:
            u = p.to_unit(value)
            low, high = u <= edge, u >= 1 - edge
        for side, near, bound in (("lower", low, p.low), ("upper", high, p.high)):
            if near:
                notes.append(f"the best {p.name} ({params[p.name]:.6g}) is at its {side} bound {bound:.6g}: the "
                             f"optimum may lie beyond it; widen parameters.{p.name} to search there")
    return notes


def best_rows(study: Study, top: int = 1) -> list[dict[str, Any]]:
    """The best points: aggregated objective over repeats, the repeats' values and execution ids."""
    rows = []
    for rank, point in enumerate(study.state.ranked()[:max(top, 0)], 1):
        rows.append({"rank": rank, "objective": point.value, "metric": study.config.metric,
                     "goal": study.config.goal, "parameters": dict(point.params),
                     "values": [record_value(r) for r in point.final], "executions": point.ids,
                     "study": study.id})
    return rows


def best_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no finished point with an objective yet"
    return "\n".join(f"{r['rank']:>3}. {r['metric']} = {r['objective']:.6g}  {describe_point(r['parameters'])}  "
                     f"[{' '.join(i[:12] for i in r['executions'])}]" for r in rows)


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

    # -- results ---------------------------------------------------------------------------------
    def on_result(self, record: ExecutionRecord) -> None:
        if record.search != self.study.id:
            return
        self.study.state.update(dataclasses.replace(record, parameters=dict(record.parameters)))
        self.inflight.discard(record.id)
        self._watch_objective(record)
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
        where = (f"{objective.source} has no {objective.metric!r}" if objective and objective.source
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
                    points = self.study.sampler.ask(1, state.trials(), state.pending())
                    if not points:
                        self.exhausted = True
                        return
                    queue.extend(self._create([(points[0], i) for i in range(config.repeats)]))
            record = queue.pop(0)
            self.inflight.add(record.id)
            yield Task(job_for(self.study.manifest, record), attempt=1)


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
    from expegit.runner import ControllerRegistry, code_commit
    from runaway.factory import campaign_backend as make_backend, profile_for

    study = load_study(campaign, algorithm=algorithm, budget=budget, parallel=parallel)
    study.sampler  # noqa: B018 - a sampler that cannot be built fails before anything is created
    manifest = study.manifest
    profile = profile or manifest.profile
    slots, note = slots_for_search(profile_for(profile, manifest), slots, study.config.parallel)
    make_backend(profile, manifest, campaign.workdir, slots=slots)  # a bad profile fails before anything exists
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


def profile_capacity(profile: Any, slots: int | None) -> tuple[int, bool]:
    """How many executions the profile runs at once, and whether the user set that number."""
    kind = getattr(profile, "kind", "local")
    if kind == "local":
        if slots is not None or profile.slots is not None:
            return int(slots or profile.slots), True
        return os.cpu_count() or 1, False
    if kind == "ssh":
        return sum(h.slots for h in profile.hosts), True
    return profile.slots_per_node * profile.allocation.nodes * max(profile.max_allocations, 1), True


def slots_for_search(profile: Any, slots: int | None, parallel: int) -> tuple[int | None, str | None]:
    """The --slots to run the study with, and a line for the user when slots and parallel disagree.

    Why: `parallel: 4` on the default local profile (slots = the CPU count, 2 here) never had more than 2
    executions in flight and nothing said so. A local profile whose slots nobody set is sized for the
    search (the user asked for that many at once); a profile whose slots were set is obeyed, and said.
    """
    capacity, explicit = profile_capacity(profile, slots)
    if capacity >= parallel:
        return slots, None
    if not explicit:
        return parallel, (f"{parallel} executions in flight (search.parallel) on {capacity} CPU(s): profile "
                          f"{profile.name} sets no slots, so it gets {parallel}")
    return slots, (f"at most {capacity} executions in flight, not {parallel}: profile {profile.name} has "
                   f"{capacity} slot(s) (raise its slots, or --slots, or lower search.parallel)")


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
    groups: list[tuple[Any, ...]] = [
        (profile, driver.records, driver.tips, driver.tasks(main_leftovers), backends.get(profile), None,
         adopted.get(profile, ()))]
    for other, (records, tips, tasks) in leftovers.items():
        groups.append((other, records, tips, tasks, backends.get(other), None, adopted.get(other, ())))
    session = Session(campaign, manifest, slots=slots, progress=progress, on_result=driver.on_result, leave=leave)
    driver.session = session
    summary = session.run(groups)
    summary.total = summary.finished + summary.failed + summary.cancelled
    summary.not_started = sum(1 for r in driver.records.values() if r.state == "created")
    return StudyRun(study, summary, stop_reason=driver.stop_reason or study.state.stop_reason(),
                    resumed=resumed, exhausted=driver.exhausted, without_objective=driver.without_objective,
                    objective_missing=driver.objective_missing)


__all__ = ["StudyConfig", "StudyState", "PointResult", "Study", "StudyRun", "study_config", "study_id",
           "make_study_sampler", "search_problems", "load_study", "run_study", "status_text", "best_rows",
           "best_text", "record_value", "describe_point"]
