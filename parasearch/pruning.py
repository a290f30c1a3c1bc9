"""The study's side of early stopping while it runs: streamed points in, stop decisions out.

The decisions are parasearch.early_stopping's (pure); this module only gathers their inputs: the points
each running execution streamed (expegit's MetricsFollower hands each once, in order), and the committed
``.orchestra/metrics.jsonl`` of the study's ended executions, read once from their branches. It then asks
the session to stop an execution whose curve the rule refuses (signal, grace, SIGKILL: Controller.prune).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestra.execution import FINAL_STATES, ExecutionRecord
from orchestra.search import EarlyStoppingSpec

from parasearch.early_stopping import Curve, curve_points, decide, fidelity_values, make_curve

log = logging.getLogger(__name__)

#: (execution id, grace seconds, note for the record) -> whether it was running and is now being stopped
PruneFn = Callable[[str, float, dict[str, Any]], bool]


def trial_numbers(records: list[ExecutionRecord]) -> dict[str, int]:
    """Each execution's number in the study: its place by creation time, then id (the same on every clone)."""
    ordered = sorted(records, key=lambda r: (r.created or "", r.id))
    return {r.id: i for i, r in enumerate(ordered)}


def prune_note(spec: EarlyStoppingSpec, step: float, reason: str) -> dict[str, Any]:
    """What a pruned record says: its step, and why (its ``error`` line and its commit's subject)."""
    return {"step": step, "reason": f"at {spec.step} {step:g} by {spec.rule}: {reason}"}


class PruneWatch:
    """Follows the study's running executions' curves and stops those the rule refuses."""

    def __init__(self, spec: EarlyStoppingSpec, records: Callable[[], list[ExecutionRecord]],
                 read_metrics: Callable[[str, str | None], list[dict[str, Any]]], prune: PruneFn,
                 note: Callable[[str], None] = lambda _text: None) -> None:
        self.spec = spec
        self.records = records  # the study's records now (its state, updated as executions end)
        self.read_metrics = read_metrics  # (execution id, tip or None) -> its committed points
        self.prune = prune
        self.note = note
        self.tips: dict[str, str] = {}  # final tips told by ended()
        self.live: dict[str, list[dict[str, Any]]] = {}
        self.stopped: set[str] = set()
        # Curves of ended executions, keyed by what they were read for (tip, state, end): an ended execution's
        # curve no longer changes, so it is read once, even when it has no points (one read per ask of
        # every such execution was the cost before); one that ended again (retried) is read anew.
        self._ended: dict[str, tuple[tuple[str | None, str, str | None], Curve]] = {}

    def ended(self, record: ExecutionRecord, tip: str | None) -> None:
        """An execution of the study ended at ``tip`` (its final commit, readable in this process even
        before the writer's flush): its curve is read from there when next needed."""
        self.live.pop(record.id, None)
        if tip is not None:
            self.tips[record.id] = tip
        self._ended.pop(record.id, None)

    def _curves(self, records: list[ExecutionRecord], numbers: Mapping[str, int]) -> list[Curve]:
        out = []
        for record in records:
            if record.state not in FINAL_STATES:
                continue
            tip = self.tips.get(record.id)
            key = (tip, record.state, record.ended)
            cached = self._ended.get(record.id)
            if cached is not None and cached[0] == key:
                out.append(cached[1])
                continue
            try:
                points = self.read_metrics(record.id, tip)
                readable = True
            except Exception as exc:  # noqa: BLE001 - an unreadable branch is no evidence, not a crash
                log.debug("metrics of %s not read: %s", record.id, exc)
                points, readable = [], False
            curve = make_curve(
                numbers[record.id], curve_points(points, self.spec.metric, self.spec.step),
                created=record.created or "", ended=record.ended or record.created or "", state=record.state,
                pruned_step=record.pruned_step)
            if readable:  # a commit not found (yet) is asked again next time, never cached as "no points"
                self._ended[record.id] = (key, curve)
            out.append(curve)
        return out

    def told(self, min_points: int, objective: Callable[[ExecutionRecord], float | None]) -> dict[str, float]:
        """What the sampler is told about each ended execution (by id): :func:`fidelity_values` over the
        committed curves, with ``objective`` (a finished record's value, or None) as the final fidelity."""
        records = self.records()
        numbers = trial_numbers(records)
        finals = {numbers[r.id]: v for r in records if r.state == "finished" for v in (objective(r),) if v is not None}
        values = fidelity_values(self.spec, self._curves(records, numbers), finals, min_points)
        ids = {number: execution_id for execution_id, number in numbers.items()}
        return {ids[number]: value for number, value in values.items()}

    def on_points(self, execution_id: str, new: list[dict[str, Any]]) -> None:
        """New points of a running execution: decide on its whole curve so far; stop it if the rule says so."""
        if execution_id in self.stopped:
            return
        records = self.records()
        record = next((r for r in records if r.id == execution_id), None)
        if record is None:
            return  # not this study's
        points = self.live.setdefault(execution_id, [])
        points.extend(new)
        numbers = trial_numbers(records)
        trial = make_curve(numbers[execution_id], curve_points(points, self.spec.metric, self.spec.step),
                           created=record.created or "")
        stop = decide(self.spec, trial, self._curves(records, numbers))
        if stop is None:
            return
        note = prune_note(self.spec, stop.step, stop.reason)
        if self.prune(execution_id, self.spec.grace, note):
            self.stopped.add(execution_id)
            self.note(f"pruned  {execution_id} {note['reason']}")


__all__ = ["PruneWatch", "prune_note", "trial_numbers"]
