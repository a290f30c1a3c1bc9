"""Parameter declarations: their model, values given on the command line, grids, and defaults.

The grid expansion and the canonical form of a value live here once: ``expegit run --grid`` and
parasearch's grid search (``parasearch.space``) both call :func:`expand_grid`, so they agree on which
points exist, in which order, and that ``True`` is not ``1`` (while ``1`` and ``1.0`` are one value).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from .errors import UsageError

Value = str | int | float | bool


@dataclasses.dataclass(frozen=True)
class ParameterSpec:
    """One declared parameter. ``kind`` is float, int, str, choice or fixed."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    steps: int | None = None
    choices: tuple[Value, ...] = ()
    value: Value | None = None
    default: Value | None = None
    when: Mapping[str, tuple[Value, ...]] = dataclasses.field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.kind == "fixed" or self.default is not None

    def default_value(self) -> Value | None:
        return self.value if self.kind == "fixed" else self.default

    def as_declaration(self) -> dict[str, Any]:
        """The plain-dict form the manifest used (what parasearch's Space consumes)."""
        out: dict[str, Any] = {}
        if self.kind in ("float", "int"):
            out.update(type=self.kind, low=self.low, high=self.high, log=self.log)
            if self.steps is not None:
                out["steps"] = self.steps
        elif self.kind == "str":
            out["type"] = "str"
        elif self.kind == "choice":
            out["choices"] = list(self.choices)
        else:
            out["value"] = self.value
        if self.default is not None:
            out["default"] = self.default
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out

    def parse(self, text: str) -> Value:
        """A value given as text (``-p name=text``) converted to the parameter's type, or UsageError."""
        if self.kind == "float":
            try:
                value = float(text)
            except ValueError:
                raise UsageError(f"-p {self.name}={text}: not a number (parameter {self.name} is a float)")
            self.check(value)
            return value
        if self.kind == "int":
            try:
                value_i = int(text, 0)
            except ValueError:
                raise UsageError(f"-p {self.name}={text}: not an integer (parameter {self.name} is an int)")
            self.check(value_i)
            return value_i
        if self.kind == "choice":
            for choice in self.choices:
                if _text_of(choice) == text:
                    return choice
            raise UsageError(f"-p {self.name}={text}: not one of the choices "
                             f"{', '.join(_text_of(c) for c in self.choices)}")
        if self.kind == "fixed":
            if _text_of(self.value) != text:
                raise UsageError(f"-p {self.name}={text}: parameter {self.name} is fixed to {_text_of(self.value)}")
            return self.value  # type: ignore[return-value]
        return text

    def check(self, value: Value) -> None:
        if self.kind in ("float", "int") and self.low is not None and self.high is not None:
            if not (self.low <= float(value) <= self.high):
                raise UsageError(f"-p {self.name}={value}: outside [{_text_of(self.low)}, {_text_of(self.high)}]")

    def grid(self) -> list[Value]:
        """The values a grid takes along this parameter, or UsageError if it has no finite grid."""
        if self.kind == "fixed":
            return [self.value]  # type: ignore[list-item]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "str":
            if self.default is None:
                raise UsageError(f"parameter {self.name} is a free string: give it with -p {self.name}=... for --grid")
            return [self.default]
        assert self.low is not None and self.high is not None
        if self.kind == "int" and self.steps is None:
            return list(range(int(self.low), int(self.high) + 1))
        if self.steps is None:
            raise UsageError(f"parameter {self.name} is a float range without steps: add `steps: N` to it "
                             f"in orchestra.yaml or fix it with -p {self.name}=...")
        return range_grid(self.low, self.high, self.steps, log=self.log, integer=self.kind == "int")

    def grid_size(self) -> int:
        """An upper bound of ``len(self.grid())`` that never enumerates (0: no finite grid)."""
        if self.kind in ("fixed", "str"):
            return 1
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int" and self.steps is None and self.low is not None and self.high is not None:
            return int(self.high) - int(self.low) + 1
        return self.steps or 0


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def range_grid(low: float, high: float, steps: int, *, log: bool, integer: bool) -> list[Value]:
    """``steps`` evenly spaced values over [low, high] (log-spaced if ``log``); one step is the midpoint."""
    if steps == 1:
        raw = [math.exp((math.log(low) + math.log(high)) / 2) if log else (low + high) / 2]
    elif log:
        raw = [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (steps - 1)) for i in range(steps)]
    else:
        raw = [low + (high - low) * i / (steps - 1) for i in range(steps)]
    if integer:
        return list(dict.fromkeys(int(round(p)) for p in raw))
    return [float(f"{p:.12g}") for p in raw]


#: Significant digits kept when comparing floats: git/YAML round trips must not make a point "new".
KEY_DIGITS = 10


def canonical_value(value: Any) -> Any:
    """A hashable, type-tagged form of a value: equal for ``1``/``1.0``, different for ``True``/``1``.

    Python's ``==`` says ``True == 1``: comparing parameter values with it would let ``choices: [1, true]``
    collapse to one point, or a ``when: {flag: 1}`` fire for ``flag: true``.
    """
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        x = float(value)
        if math.isfinite(x):
            return ("n", float(f"{x:.{KEY_DIGITS}g}"))
        return ("n", x)
    if isinstance(value, str):
        return ("s", value)
    if value is None:
        return ("0", None)
    return ("r", repr(value))


def when_cycle(when: Mapping[str, Mapping[str, Sequence[Any]]]) -> list[str] | None:
    """Names whose ``when`` conditions depend on each other in a circle (None if there is no circle)."""
    remaining = {name: set(parents) & set(when) for name, parents in when.items()}
    while remaining:
        ready = [name for name, parents in remaining.items() if not parents & set(remaining)]
        if not ready:
            return sorted(remaining)
        for name in ready:
            del remaining[name]
    return None


def parse_assignments(texts: Sequence[str], specs: Mapping[str, ParameterSpec]) -> dict[str, list[Value]]:
    """``-p name=value`` options (repeatable per name: a sweep) into typed values per parameter."""
    given: dict[str, list[Value]] = {}
    for text in texts:
        name, sep, raw = text.partition("=")
        if not sep or not name:
            raise UsageError(f"-p {text}: expected name=value")
        if name not in specs:
            known = ", ".join(specs) or "(none declared)"
            raise UsageError(f"-p {text}: no parameter {name!r} in orchestra.yaml; declared: {known}")
        value = specs[name].parse(raw)
        values = given.setdefault(name, [])
        if all(canonical_value(value) != canonical_value(v) for v in values):
            values.append(value)
    return given


def is_active(spec: ParameterSpec, point: Mapping[str, Any]) -> bool:
    """Active iff every parent is in ``point`` (itself active) with one of the allowed values."""
    return _active(spec.when, point)


def _active(when: Mapping[str, Sequence[Any]], point: Mapping[str, Any]) -> bool:
    for parent, allowed in when.items():
        if parent not in point:
            return False
        value = canonical_value(point[parent])
        if all(canonical_value(a) != value for a in allowed):
            return False
    return True


_INACTIVE = object()


def expand_grid(axes: Sequence[tuple[str, Sequence[Any]]],
                when: Mapping[str, Mapping[str, Sequence[Any]]]) -> Iterator[dict[str, Any]]:
    """Every point of the product of ``axes`` (name, values), with conditional parameters present only
    where their ``when`` holds, each point once, lazily (a grid of millions is never held in memory).

    Order: declaration order, last parameter fastest, an inactive parameter before its values. It is a
    depth-first walk where a conditional parameter may also be "absent"; each branch is kept only if
    that choice matches its condition, checked as soon as the parameter and its parents are placed, so
    no point is produced twice and none needs remembering. Values equal canonically appear once.
    """
    names = [name for name, _ in axes]
    index = {name: i for i, name in enumerate(names)}
    options: list[list[Any]] = []
    for name, values in axes:
        seen: set[Any] = set()
        distinct = []
        for value in values:
            key = canonical_value(value)
            if key not in seen:
                seen.add(key)
                distinct.append(value)
        options.append(([_INACTIVE] if when.get(name) else []) + distinct)
    # check_at[d]: the parameters whose activity is decided once the first d + 1 are placed.
    check_at: list[list[int]] = [[] for _ in names]
    for i, name in enumerate(names):
        conditions = when.get(name) or {}
        unknown = [parent for parent in conditions if parent not in index]
        if unknown:
            raise ValueError(f"parameter {name}: `when` names unknown parameter {unknown[0]!r}")
        check_at[max([i] + [index[parent] for parent in conditions])].append(i)
    allowed = [{parent: {canonical_value(v) for v in values} for parent, values in (when.get(name) or {}).items()}
               for name in names]
    chosen: list[Any] = [None] * len(names)

    def consistent(i: int) -> bool:
        active = all(chosen[index[parent]] is not _INACTIVE and canonical_value(chosen[index[parent]]) in values
                     for parent, values in allowed[i].items())
        return active == (chosen[i] is not _INACTIVE)

    def walk(depth: int) -> Iterator[dict[str, Any]]:
        if depth == len(names):
            yield {name: chosen[i] for i, name in enumerate(names) if chosen[i] is not _INACTIVE}
            return
        for value in options[depth]:
            chosen[depth] = value
            if all(consistent(i) for i in check_at[depth]):
                yield from walk(depth + 1)

    if all(options):
        yield from walk(0)


def expand_points(specs: Mapping[str, ParameterSpec], given: Mapping[str, list[Value]],
                  *, grid: bool) -> Iterator[dict[str, Value]]:
    """Every parameter point of a run: the product of the given values, with the grid (or defaults) for the rest.

    A generator, so a grid of millions is never held in memory at once.
    """
    axes: list[tuple[str, list[Any]]] = []
    for name, spec in specs.items():
        if name in given:
            axes.append((name, list(given[name])))
        elif grid:
            axes.append((name, spec.grid()))
        elif spec.has_default:
            axes.append((name, [spec.default_value()]))
        elif spec.when:
            axes.append((name, [None]))  # must be inactive wherever it has no value
        else:
            raise UsageError(f"parameter {name} has no value: give -p {name}=..., a `default:` in "
                             f"orchestra.yaml, or use --grid")
    try:
        points = expand_grid(axes, {name: spec.when for name, spec in specs.items()})
        for point in points:
            for name, value in point.items():
                if value is None:
                    raise UsageError(f"parameter {name} is active for {point} but has no value: give -p {name}=...")
            yield point
    except ValueError as exc:
        raise UsageError(str(exc)) from None
