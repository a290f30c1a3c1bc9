"""Parameter spaces: what a search may propose, and the maps every sampler shares.

The manifest's ``parameters:`` mapping arrives here as plain dicts (``ParameterSpec.as_declaration()``).
A space is immutable and knows three things the samplers need and must agree on:

* the *unit cube*: one coordinate in [0, 1] per searched parameter (log-warped where ``log: true``,
  integers owning equal-width cells, categoricals owning equal-width bins), so quasi-random designs,
  uniform sampling and the Gaussian process all share one geometry;
* *activity*: a parameter with ``when:`` exists only when its parents take the listed values, and an
  inactive parameter is absent from the point dict (the command template never sees it);
* the *canonical key* of a point, so that "already tried" survives a round trip through git and YAML
  (``1`` vs ``1.0``, a float printed with fewer digits) and never confuses ``True`` with ``1``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from orchestra.errors import SearchError
from orchestra.parameters import canonical_value, expand_grid, range_grid
from orchestra.search import ALGORITHMS, MAX_GRID_POINTS

Value = str | int | float | bool
Point = dict[str, Value]
Key = tuple[tuple[str, Any], ...]


@dataclasses.dataclass(frozen=True)
class Trial:
    """One finished execution as a sampler sees it: its parameters and its raw objective value.

    ``value`` is as measured (not oriented): samplers receive ``goal`` and orient it themselves, so the
    caller never has to remember whether to negate. ``failed`` trials (or ones without a value) are
    never used as observations, but their points still count as tried.
    """

    params: dict[str, Value]
    value: float | None
    failed: bool = False

    @property
    def usable(self) -> bool:
        return (not self.failed and self.value is not None
                and isinstance(self.value, (int, float)) and math.isfinite(float(self.value)))


@dataclasses.dataclass(frozen=True)
class Param:
    """One declared parameter. ``kind`` is float, int, choice or fixed; ``when`` maps parent -> allowed values."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    steps: int | None = None
    choices: tuple[Value, ...] = ()
    value: Value | None = None
    when: tuple[tuple[str, tuple[Value, ...]], ...] = ()

    @property
    def searched(self) -> bool:
        """Whether the parameter owns a unit-cube coordinate (fixed ones do not)."""
        return self.kind != "fixed"

    # -- unit cube ------------------------------------------------------------------------------
    def _warp(self, x: float) -> float:
        return math.log(x) if self.log else x

    def _span(self) -> tuple[float, float]:
        """The continuous interval the unit coordinate spans, before warping back.

        Integers get half a cell on each side so every integer owns the same width (uniform for a
        linear int, log-uniform-like for a log int) and rounding is the exact inverse.
        """
        if self.kind == "int":
            return self._warp(self.low - 0.5), self._warp(self.high + 0.5)
        return self._warp(self.low), self._warp(self.high)

    def from_unit(self, u: float) -> Value:
        """Map a coordinate in [0, 1] to a value of this parameter (clipped, rounded, binned)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.kind == "fixed":
            return self.value  # type: ignore[return-value]
        if self.kind == "choice":
            return self.choices[min(int(u * len(self.choices)), len(self.choices) - 1)]
        a, b = self._span()
        x = a + u * (b - a)
        if self.log:
            # exp(log(high)) is not high in floating point (1000 came back as 999.9999999999989, and was
            # printed and recorded so): 12 significant digits are far finer than any search resolves and
            # land the bounds, and every value a user typed, exactly where they were declared.
            x = float(f"{math.exp(x):.12g}")
        if self.kind == "int":
            return int(min(max(round(x), self.low), self.high))
        return float(min(max(x, self.low), self.high))

    def to_unit(self, value: Any) -> float:
        """Inverse of :meth:`from_unit` (centre of the cell for ints and choices); out-of-range is clipped."""
        if self.kind == "choice":
            idx = self.index_of(value)
            return (idx + 0.5) / len(self.choices) if idx is not None else 0.5
        if self.kind == "fixed":
            return 0.5
        try:
            x = float(value)
        except (TypeError, ValueError):
            return 0.5
        x = min(max(x, self.low), self.high)
        a, b = self._span()
        return min(max((self._warp(x) - a) / (b - a), 0.0), 1.0)

    def index_of(self, value: Any) -> int | None:
        """Which choice ``value`` is, comparing canonically (so ``1.0`` finds the choice ``1``, ``True`` does not)."""
        want = canonical_value(value)
        for i, choice in enumerate(self.choices):
            if canonical_value(choice) == want:
                return i
        return None

    # -- grid -----------------------------------------------------------------------------------
    def grid_values(self) -> list[Value]:
        """The values a grid takes along this parameter (SearchError if it has no finite grid)."""
        if self.kind == "fixed":
            return [self.value]  # type: ignore[list-item]
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int" and self.steps is None:
            return list(range(int(self.low), int(self.high) + 1))
        if self.steps is None:
            raise SearchError(f"parameter {self.name}: a grid search needs `steps: N` on a float range",
                              hint=f"add e.g. `steps: 5` to parameters.{self.name}, or use algorithm random/sobol")
        return range_grid(self.low, self.high, self.steps, log=self.log, integer=self.kind == "int")

    def grid_size(self) -> int:
        if self.kind == "fixed":
            return 1
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "int" and self.steps is None:
            return int(self.high) - int(self.low) + 1
        return self.steps or 0


def _parse_param(name: str, decl: Mapping[str, Any]) -> Param:
    """One declaration -> Param. The manifest loader validated already; this guards direct API use."""
    if not isinstance(decl, Mapping):
        raise SearchError(f"parameter {name}: expected a mapping like {{type: float, low: 0, high: 1}}, got {decl!r}")
    when_raw = decl.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise SearchError(f"parameter {name}: `when` must map a parameter to a value or a list of values")
    when = tuple((str(parent), tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,))
                 for parent, allowed in when_raw.items())
    if "value" in decl and "choices" not in decl and "type" not in decl:
        return Param(name, "fixed", value=decl["value"], when=when)
    if "choices" in decl:
        choices = tuple(decl["choices"] or ())
        if not choices:
            raise SearchError(f"parameter {name}: `choices` is empty", hint="list at least one value")
        keys = [canonical_value(c) for c in choices]
        if len(set(keys)) != len(keys):
            raise SearchError(f"parameter {name}: `choices` lists a value twice", hint="remove the duplicate")
        return Param(name, "choice", choices=choices, when=when)
    kind = decl.get("type")
    if kind == "str":
        if "default" in decl:
            # A free string is not searchable; with a default it is a constant for the search.
            return Param(name, "fixed", value=decl["default"], when=when)
        raise SearchError(f"parameter {name}: a free string cannot be searched",
                          hint=f"give parameters.{name} `choices:` or a fixed `value:`")
    if kind not in ("float", "int"):
        raise SearchError(f"parameter {name}: unknown type {kind!r}",
                          hint="use type: float or int, `choices: [...]` or `value: ...`")
    try:
        low, high = float(decl["low"]), float(decl["high"])
    except (KeyError, TypeError, ValueError):
        raise SearchError(f"parameter {name}: a {kind} range needs numeric `low` and `high`") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise SearchError(f"parameter {name}: needs finite low <= high, got [{decl['low']}, {decl['high']}]")
    log = bool(decl.get("log", False))
    if log and low <= 0:
        raise SearchError(f"parameter {name}: `log: true` needs low > 0, got {decl['low']}",
                          hint="raise low or drop log")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise SearchError(f"parameter {name}: an int range needs integer bounds, got [{decl['low']}, {decl['high']}]")
    steps = decl.get("steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise SearchError(f"parameter {name}: `steps` must be a positive integer, got {steps!r}")
    if low == high:  # a degenerate range is a constant, not a dimension
        return Param(name, "fixed", value=int(low) if kind == "int" else low, when=when)
    return Param(name, kind, low=low, high=high, log=log, steps=steps, when=when)


class Space:
    """An immutable parameter space. Build it with :meth:`from_parameters`."""

    def __init__(self, params: Sequence[Param]) -> None:
        self.params: tuple[Param, ...] = tuple(params)
        self.by_name: dict[str, Param] = {p.name: p for p in self.params}
        self.order: tuple[Param, ...] = self._topological_order()
        #: Searched parameters, in declaration order: unit-cube coordinate i belongs to searched[i].
        self.searched: tuple[Param, ...] = tuple(p for p in self.params if p.searched)
        self._grid: list[Point] | None = None

    @classmethod
    def from_parameters(cls, params: Mapping[str, Mapping[str, Any]]) -> Space:
        """Parse the manifest's ``parameters:`` mapping; SearchError names the parameter and the fix."""
        return cls([_parse_param(str(name), decl) for name, decl in params.items()])

    # -- structure ------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        """Number of unit-cube coordinates (one per searched parameter)."""
        return len(self.searched)

    @property
    def conditional(self) -> bool:
        return any(p.when for p in self.params)

    def _topological_order(self) -> tuple[Param, ...]:
        """Parents before children, so activity is decided in one pass; unknown parents and cycles are errors."""
        for p in self.params:
            for parent, allowed in p.when:
                if parent not in self.by_name:
                    raise SearchError(f"parameter {p.name}: `when` names unknown parameter {parent!r}",
                                      hint=f"declared: {', '.join(self.by_name)}")
                if parent == p.name:
                    raise SearchError(f"parameter {p.name}: `when` cannot depend on itself")
                ptype = self.by_name[parent]
                if ptype.kind == "choice":
                    bad = [a for a in allowed if ptype.index_of(a) is None]
                    if bad:
                        raise SearchError(f"parameter {p.name}: `when` value {bad[0]!r} is not a choice of {parent}")
        done: dict[str, Param] = {}
        remaining = list(self.params)
        while remaining:
            ready = [p for p in remaining if all(parent in done for parent, _ in p.when)]
            if not ready:
                raise SearchError(f"parameters {', '.join(p.name for p in remaining)}: their `when` conditions form a cycle",
                                  hint="make the conditions depend on parameters without a `when`")
            for p in ready:
                done[p.name] = p
            remaining = [p for p in remaining if p.name not in done]
        return tuple(done.values())

    def is_active(self, param: Param, point: Mapping[str, Any]) -> bool:
        """Active iff every parent is present in ``point`` and takes one of the allowed values."""
        for parent, allowed in param.when:
            if parent not in point:
                return False
            value = canonical_value(point[parent])
            if all(canonical_value(a) != value for a in allowed):
                return False
        return True

    def check(self, algorithm: str) -> None:
        """Raise SearchError if ``algorithm`` cannot search this space (before any execution starts)."""
        if algorithm not in ALGORITHMS:
            raise SearchError(f"unknown search algorithm {algorithm!r}", hint=f"use one of {', '.join(ALGORITHMS)}")
        if algorithm == "grid":
            size = 1
            for p in self.params:
                if p.kind == "float" and p.steps is None:
                    p.grid_values()  # raises the per-parameter message with its fix
                size *= max(p.grid_size(), 1)
            if size > MAX_GRID_POINTS:
                raise SearchError(f"the grid has up to {size} points (more than {MAX_GRID_POINTS})",
                                  hint="lower `steps` or use algorithm sobol/random with a budget")

    # -- points ---------------------------------------------------------------------------------
    def from_unit(self, u: Sequence[float]) -> Point:
        """A unit-cube vector -> a valid point: fixed values included, inactive parameters absent."""
        coords = {p.name: float(u[i]) for i, p in enumerate(self.searched)}
        point: dict[str, Value] = {}
        for p in self.order:
            if self.is_active(p, point):
                point[p.name] = p.value if p.kind == "fixed" else p.from_unit(coords[p.name])  # type: ignore[assignment]
        return self.ordered(point)

    def to_unit(self, point: Mapping[str, Any], inactive: float = 0.5) -> list[float]:
        """A point -> its unit-cube vector; absent (inactive) coordinates get ``inactive``."""
        return [p.to_unit(point[p.name]) if p.name in point else inactive for p in self.searched]

    def ordered(self, point: Mapping[str, Value]) -> Point:
        """The point with keys in declaration order, so printed points read like the manifest."""
        return {p.name: point[p.name] for p in self.params if p.name in point}

    def key(self, point: Mapping[str, Any]) -> Key:
        """Canonical identity of a point: only this space's active parameters, values type-tagged and rounded."""
        return tuple((p.name, canonical_value(point[p.name])) for p in self.params if p.name in point)

    def keys(self, points: Iterable[Mapping[str, Any]]) -> set[Key]:
        return {self.key(pt) for pt in points}

    def grid(self) -> list[Point]:
        """Every grid point in a deterministic order (declaration order, last parameter fastest).

        Conditional parameters multiply only the branches where they are active, so no two grid points
        differ merely in an inactive parameter. Computed once per space (it is immutable); each call
        returns fresh dicts so callers may keep or modify what they receive.
        """
        if self._grid is None:
            self._grid = self._build_grid()
        return [dict(p) for p in self._grid]

    def _build_grid(self) -> list[Point]:
        # The one grid expansion, shared with `expegit run --grid` (orchestra.parameters).
        axes = [(p.name, p.grid_values()) for p in self.params]
        when = {p.name: dict(p.when) for p in self.params if p.when}
        return [self.ordered(pt) for pt in expand_grid(axes, when)]

    def __repr__(self) -> str:
        return f"Space({', '.join(p.name + ':' + p.kind for p in self.params)})"


def seen_keys(space: Space, history: Iterable[Trial], pending: Iterable[Mapping[str, Any]]) -> set[Key]:
    """Keys of every point already tried (finished, failed) or in flight: what no sampler may hand out again."""
    keys = {space.key(t.params) for t in history}
    keys.update(space.key(p) for p in pending)
    return keys


__all__ = ["Space", "Trial", "Param", "Point", "Value", "Key", "canonical_value", "seen_keys", "MAX_GRID_POINTS"]
