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

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestra.errors import ManifestError, OrchestraError, SearchError, did_you_mean
from orchestra.execution import FINAL_STATES, ExecutionRecord
from orchestra.manifest import Manifest
from orchestra.search import ALGORITHMS, BLIND_ALGORITHMS

from parasearch.space import Key, Point, Space, Trial

if TYPE_CHECKING:  # the run path imports expegit (and gevent) only when it runs
    from expegit.campaign import Campaign
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
    # A multi-objective study's (metric, goal) pairs in declared order; () for a single objective, where
    # ``metric`` and ``goal`` say everything.
    objectives: tuple[tuple[str, str], ...] = ()

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def metrics(self) -> list[str]:
        return [m for m, _ in self.objectives]

    @property
    def goals(self) -> list[str]:
        return [g for _, g in self.objectives]

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
        metric=objective.metric if objective else None, goal=objective.goal if objective else "minimize",
        objectives=tuple((o.metric, o.goal) for o in manifest.objectives) if manifest.multi_objective else ())
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
    if config.multi and (config.target is not None or config.patience is not None):
        raise SearchError("search.stop needs a single objective: a target or patience on a Pareto front is "
                          "not defined", hint="remove search.stop, or declare one objective")
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
    if manifest.multi_objective:  # single-objective studies keep the ids they always had
        identity["objective"] = [{"metric": o.metric, "goal": o.goal, "from": o.source, "pattern": o.pattern}
                                 for o in manifest.objectives]
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def make_study_sampler(manifest: Manifest, config: StudyConfig) -> tuple[Space, "Sampler"]:
    """The space and sampler, or SearchError naming the fix: called before anything is created."""
    from parasearch.sampler_factory import make_sampler

    space = Space.from_parameters(manifest.declarations())
    sampler = make_sampler(config.algorithm, space, seed=config.seed, budget=max(config.point_budget, 1),
                           goal=config.goal)
    if config.multi and config.algorithm == "bayes":  # the blind algorithms need no goal at all
        from parasearch.ehvi import multi_objective_sampler  # log-EHVI for 2 objectives, ParEGO beyond

        sampler = multi_objective_sampler(space, seed=config.seed, budget=max(config.point_budget, 1),
                                          goals=config.goals)
    return space, sampler


MAX_RESOURCE_POINTS = 4096  # combinations of placeholder parameters checked up front (each a few µs)


def resource_points(manifest: Manifest) -> list[dict[str, Any]]:
    """Every combination of the values a search may give the parameters that ``resources:`` names by
    placeholder (``gpus: "{n_gpus}"``): each choice, a fixed value, a numeric range's bounds (the largest
    value is the widest request, the smallest the one a grid of whole numbers starts at; a request grows
    with its value, so the bounds are where a range stops fitting). Checked before a study starts, so a
    space that can ask for more than a node has is refused up front rather than at the n-th proposal."""
    import itertools

    from orchestra.resources import placeholder

    if not manifest.resources:
        return []
    names = list(dict.fromkeys(n for v in manifest.resources.values() if (n := placeholder(v)) is not None))
    axes: list[list[Any]] = []
    for name in names:
        spec = manifest.parameters.get(name)
        if spec is None:
            return []  # the manifest check already refused it
        if spec.kind == "choice":
            values: list[Any] = list(spec.choices)
        elif spec.kind == "fixed":
            values = [spec.value]
        elif spec.kind in ("int", "float"):
            values = [int(v) if spec.kind == "int" else v for v in (spec.low, spec.high) if v is not None]
        else:
            values = [spec.default] if spec.default is not None else []
        axes.append(list(dict.fromkeys(values)) or [None])
    points = []
    for combo in itertools.islice(itertools.product(*axes), MAX_RESOURCE_POINTS):
        points.append({n: v for n, v in zip(names, combo) if v is not None})
    return points if names else [{}]


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

    def vector(self, metrics: Sequence[str]) -> tuple[float, ...] | None:
        """Each objective's mean over the repeats that produced all of them (a multi-objective study)."""
        vectors = [v for v in (record_vector(r, metrics) for r in self.final) if v is not None]
        if not vectors:
            return None
        return tuple(sum(v[k] for v in vectors) / len(vectors) for k in range(len(metrics)))

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


def pruned_value(point: PointResult, state: "StudyState") -> float | None:
    """What the model is told about a point whose executions were pruned before any fidelity has enough
    values to fit a model on (see StudyState.trials' ``told``): a penalised observation, the worst objective
    among the finished points (None before any: then it counts as failed).

    Why not "failed": the model would learn nothing of where bad points lie, and ask near them again.
    Why not its last intermediate value: an early epoch's loss is no final loss; among finished points it
    would rank a stopped run by a number it never reached. A pruned point lost at a rung to points that
    went on, so "as bad as the worst finished" is what the study knows of it (the README's "Early stopping").
    """
    finished = [p.value for p in state.points.values() if p is not point and p.value is not None]
    if not finished:
        return None
    return min(finished) if state.config.goal == "maximize" else max(finished)


def record_vector(record: ExecutionRecord, metrics: Sequence[str]) -> tuple[float, ...] | None:
    """The objective values of a finished multi-objective execution in ``metrics`` order, or None."""
    if record_value(record) is None or not isinstance(record.objectives, Mapping):
        return None
    out = []
    for metric in metrics:
        value = record.objectives.get(metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(float(value)):
            return None
        out.append(float(value))
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class VectorTrial(Trial):
    """A trial of a multi-objective study: ``value`` is the primary objective, ``values`` all of them."""

    values: tuple[float, ...] | None = None


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
        done = failed = unfinished = pruned = 0
        for record in self.records:
            if record.state not in FINAL_STATES:
                unfinished += 1
            elif record.state == "pruned":
                pruned += 1
            elif record_value(record) is None:
                failed += 1
            else:
                done += 1
        return {"done": done, "failed": failed, "unfinished": unfinished, "pruned": pruned}

    def remaining(self) -> int:
        return max(self.config.budget - self.executions, 0)

    # -- what the sampler sees ---------------------------------------------------------------------
    def complete(self, point: PointResult) -> bool:
        return len(point.final) >= self.config.repeats

    def trials(self, told: Mapping[str, float] | None = None) -> list[Trial]:
        """One Trial per point whose repeats are all final, in completion order (failed if none has a value).

        ``told``: with early stopping, the value of each ended execution (by id) at the fidelity the model
        is fitted at (parasearch.early_stopping.fidelity_values); a point's value is then the mean over its
        executions in it. Empty, or for a point none of whose executions is in it: the objective, and the
        penalty for a pruned point (:func:`pruned_value`).
        """
        out = []
        for point in sorted((p for p in self.points.values() if self.complete(p)), key=lambda p: (p.ended, p.ids)):
            if self.config.multi:
                vector = point.vector(self.config.metrics)
                out.append(VectorTrial(dict(point.params), None if vector is None else vector[0],
                                       failed=vector is None, values=vector))
                continue
            fidelity = [told[r.id] for r in point.final if told and r.id in told]
            value = sum(fidelity) / len(fidelity) if fidelity else point.value
            if value is None and any(r.state == "pruned" for r in point.final):
                value = pruned_value(point, self)
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

    def front(self) -> list[tuple[PointResult, tuple[float, ...]]]:
        """A multi-objective study's Pareto front: complete points with every value, each with its vector,
        sorted by the first objective (best first), then the next ones, then completion."""
        from orchestra.pareto import oriented, pareto_front  # numpy: only for multi-objective studies

        scored = [(p, v) for p in self.points.values() if self.complete(p)
                  for v in (p.vector(self.config.metrics),) if v is not None]
        if not scored:
            return []
        Y = oriented([v for _, v in scored], self.config.goals)
        keep = pareto_front(Y)
        return [scored[i] for i in sorted(keep, key=lambda i: (*Y[i].tolist(), scored[i][0].ended, scored[i][0].ids))]

    def hypervolume(self) -> tuple[float, list[float]] | None:
        """(hypervolume of the front, the reference point in raw units) by pareto.reference_point's rule
        over every complete point's values; None before the first."""
        from orchestra.pareto import hypervolume, oriented, reference_point

        vectors = [v for p in self.points.values() if self.complete(p)
                   for v in (p.vector(self.config.metrics),) if v is not None]
        if not vectors:
            return None
        Y = oriented(vectors, self.config.goals)
        ref = reference_point(Y)
        sign = [-1.0 if g == "maximize" else 1.0 for g in self.config.goals]
        return hypervolume(Y, ref), [float(r * s) for r, s in zip(ref, sign)]

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
        pruned = f"{counts['pruned']} pruned, " if counts["pruned"] else ""
        lines.append(f"  {state.executions}/{config.budget} executions{budget_note}: {counts['done']} done, "
                     f"{pruned}{counts['failed']} failed, {counts['unfinished']} running or not run yet")
    best = None if config.multi else state.best()
    if config.multi:
        front, volume = state.front(), state.hypervolume()
        if front and volume is not None:
            lines.append(f"  Pareto front: {len(front)} point(s) over {', '.join(config.metrics)}; hypervolume "
                         f"{volume[0]:.6g} (reference {_values_text(volume[1])}); `parasearch best` lists them")
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


def front_data(study: Study, top: int | None = None) -> dict[str, Any]:
    """A multi-objective study's Pareto front as data: what `parasearch best --json` prints.

    Each point has its objectives (means over repeats), each repeat's values and its execution ids; the
    hypervolume is measured against ``reference`` (pareto.reference_point's rule, in raw units).
    """
    config = study.config
    front = study.state.front()
    volume = study.state.hypervolume()
    points = []
    for rank, (point, vector) in enumerate(front[:top] if top is not None else front, 1):
        points.append({"rank": rank, "objectives": dict(zip(config.metrics, vector)),
                       "parameters": dict(point.params),
                       "values": [dict(zip(config.metrics, v)) if v is not None else None
                                  for v in (record_vector(r, config.metrics) for r in point.final)],
                       "executions": point.ids})
    return {"study": study.id, "objectives": [{"metric": m, "goal": g} for m, g in config.objectives],
            "front_size": len(front), "hypervolume": None if volume is None else volume[0],
            "reference": None if volume is None else dict(zip(config.metrics, volume[1])), "front": points}


def _values_text(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def front_text(data: Mapping[str, Any]) -> str:
    """The front as a table sorted by the first objective: one column per objective, then the point."""
    if not data["front"]:
        return "no finished point with every objective yet"
    metrics = [o["metric"] for o in data["objectives"]]
    head = ["#", *(f"{o['metric']} ({'min' if o['goal'] == 'minimize' else 'max'})" for o in data["objectives"]),
            "parameters", "executions"]
    rows = [[str(p["rank"]), *(f"{p['objectives'][m]:.6g}" for m in metrics), describe_point(p["parameters"]),
             " ".join(i[:12] for i in p["executions"])] for p in data["front"]]
    widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
    lines = ["  ".join(c.rjust(w) if 0 < k <= len(metrics) else c.ljust(w) for k, (c, w) in
                       enumerate(zip(r, widths))).rstrip() for r in [head, *rows]]
    shown = len(data["front"])
    more = f", {shown} shown" if shown < data["front_size"] else ""
    lines.append(f"Pareto front of {data['front_size']} point(s){more}; hypervolume {data['hypervolume']:.6g} "
                 f"(reference {_values_text(list(data['reference'].values()))})")
    return "\n".join(lines)


def best_text(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "no finished point with an objective yet"
    return "\n".join(f"{r['rank']:>3}. {r['metric']} = {r['objective']:.6g}  {describe_point(r['parameters'])}  "
                     f"[{' '.join(i[:12] for i in r['executions'])}]" for r in rows)


__all__ = ["StudyConfig", "StudyState", "PointResult", "Study", "StudyRun", "study_config", "study_id",
           "make_study_sampler", "search_problems", "load_study", "slots_for_search", "profile_capacity", "status_text", "best_rows",
           "best_text", "record_value", "describe_point", "front_data", "front_text", "record_vector", "VectorTrial"]

