"""Campaign-level facts for the overview, computed once from the records (pure, tested directly)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
from collections import Counter, defaultdict
from collections.abc import Sequence

from orchestra.execution import STATES, ExecutionRecord

from .fmt import is_number, parse_time, state_class


@dataclasses.dataclass
class Group:
    """Executions sharing a key (a commit, or an author on a host)."""

    count: int = 0
    states: Counter[str] = dataclasses.field(default_factory=Counter)
    compute: float = 0.0
    first: _dt.datetime | None = None

    def add(self, r: ExecutionRecord) -> None:
        self.count += 1
        self.states[state_class(r.state)] += 1
        if is_number(r.duration):
            self.compute += float(r.duration)  # type: ignore[arg-type]
        t = parse_time(r.started) or parse_time(r.created)
        if t is not None and (self.first is None or t < self.first):
            self.first = t


@dataclasses.dataclass
class Summary:
    total: int
    states: Counter[str]
    best_index: int | None
    ranked: list[int]  # indices of executions with an objective, best first
    first: _dt.datetime | None
    last: _dt.datetime | None
    compute: float
    commits: dict[str, Group]
    people: dict[tuple[str, str], Group]

    @property
    def state_order(self) -> list[str]:
        return [s for s in (*STATES, "unknown") if self.states.get(s)]


def summarize(records: Sequence[ExecutionRecord], goal: str, generated: str) -> Summary:
    states: Counter[str] = Counter(state_class(r.state) for r in records)
    scored = [i for i, r in enumerate(records) if is_number(r.objective)]
    ranked = sorted(scored, key=lambda i: float(records[i].objective),  # type: ignore[arg-type]
                    reverse=(goal == "maximize"))
    first: _dt.datetime | None = None
    last: _dt.datetime | None = None
    now = parse_time(generated)
    commits: dict[str, Group] = defaultdict(Group)
    people: dict[tuple[str, str], Group] = defaultdict(Group)
    compute = 0.0
    for r in records:
        begin = parse_time(r.started) or parse_time(r.created)
        end = parse_time(r.ended) or (now if r.state == "running" else None) or begin
        if begin is not None and (first is None or begin < first):
            first = begin
        if end is not None and (last is None or end > last):
            last = end
        if is_number(r.duration):
            compute += float(r.duration)  # type: ignore[arg-type]
        commits[str(r.commit)].add(r)
        people[(str(r.author or "unknown"), str(r.host or "—"))].add(r)
    return Summary(len(records), states, ranked[0] if ranked else None, ranked, first, last, compute,
                   dict(commits), dict(people))
