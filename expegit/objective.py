"""Reading an execution's objective value from its outputs or its stdout."""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable

from orchestra.manifest import Manifest, Objective
from runaway.rundir import STDOUT_FILE

MAX_STDOUT_SCAN = 8 * 1024 * 1024  # the last 8 MiB: a pattern's last match is what counts


def read_objective(objective: Objective, read: Callable[[str], bytes | None]) -> tuple[float | None, str | None]:
    """(value, problem): a finite float, or None with a one-line reason an analyst can act on.

    ``read`` gives the bytes of a run-relative path (an output file, or ``.orchestra/stdout``), or None.
    """
    if objective.source is not None:
        raw = read(objective.source)
        if raw is None:
            return None, f"objective file {objective.source} was not written"
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            return None, f"objective file {objective.source} is not JSON: {exc}"
        value: object = data
        for part in objective.metric.split("."):
            if not isinstance(value, dict) or part not in value:
                if isinstance(data, dict) and objective.metric in data:  # a key with dots in its name
                    value = data[objective.metric]
                    break
                return None, f"objective {objective.metric} is missing from {objective.source}"
            value = value[part]
        return _number(value, objective.metric)
    assert objective.pattern is not None
    stdout = read(STDOUT_FILE)
    if stdout is None:
        return None, "no stdout to read the objective from"
    text = stdout[-MAX_STDOUT_SCAN:].decode("utf-8", "replace")
    matches = list(re.finditer(objective.pattern, text))
    if not matches:
        return None, f"objective pattern {objective.pattern!r} did not match stdout"
    return _number(matches[-1].group(1), objective.metric)


def read_objectives(manifest: Manifest, read: Callable[[str], bytes | None]
                    ) -> tuple[float | None, dict[str, float] | None, str | None]:
    """(primary value, every value by metric or None, problem) for the record of a finished execution.

    A multi-objective execution counts only with all its values: a point missing one cannot be placed
    on the front, so the first problem is the record's error and no value is kept (the search sees a
    failed trial, as for a single objective). ``objectives`` stays None for single-objective campaigns,
    so their records keep their shape.
    """
    if not manifest.objectives:
        return None, None, None
    values: dict[str, float] = {}
    for objective in manifest.objectives:
        value, problem = read_objective(objective, read)
        if problem is not None or value is None:
            return None, None, problem
        values[objective.metric] = value
    primary = values[manifest.objectives[0].metric]
    return primary, (values if manifest.multi_objective else None), None


def _number(value: object, metric: str) -> tuple[float | None, str | None]:
    if isinstance(value, bool):
        return None, f"objective {metric} is a boolean, not a number"
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None, f"objective {metric} is not a number: {str(value)[:40]!r}"
    if not math.isfinite(number):
        return None, f"objective {metric} is {number}"
    return number, None
