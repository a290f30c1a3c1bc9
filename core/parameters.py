"""Parameter declarations: their model, values given on the command line, grids, and defaults."""
from __future__ import annotations

import dataclasses
import itertools
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
            if not (self.low <= float(value) <= self.high):  # type: ignore[arg-type]
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
        return linspace(self.low, self.high, self.steps, log=self.log, integer=self.kind == "int")


def _text_of(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def linspace(low: float, high: float, steps: int, *, log: bool, integer: bool) -> list[Value]:
    if log:
        points = [math.exp(math.log(low) + (math.log(high) - math.log(low)) * i / (steps - 1)) for i in range(steps)]
    else:
        points = [low + (high - low) * i / (steps - 1) for i in range(steps)]
    if integer:
        return list(dict.fromkeys(int(round(p)) for p in points))
    return [float(f"{p:.12g}") for p in points]


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
        if value not in given.setdefault(name, []):
            given[name].append(value)
    return given


def is_active(spec: ParameterSpec, point: Mapping[str, Value]) -> bool:
    return all(point.get(other) in allowed for other, allowed in spec.when.items())


def expand_points(specs: Mapping[str, ParameterSpec], given: Mapping[str, list[Value]],
                  *, grid: bool) -> Iterator[dict[str, Value]]:
    """Every parameter point of a run: the product of the given values, with the grid (or defaults) for the rest.

    A generator, so a grid of millions is never held in memory at once.
    """
    axes: list[tuple[str, list[Value]]] = []
    for name, spec in specs.items():
        if name in given:
            axes.append((name, list(given[name])))
        elif grid:
            axes.append((name, spec.grid()))
        elif spec.has_default:
            axes.append((name, [spec.default_value()]))  # type: ignore[list-item]
        elif spec.when:
            axes.append((name, [None]))  # type: ignore[list-item]
        else:
            raise UsageError(f"parameter {name} has no value: give -p {name}=..., a `default:` in "
                             f"orchestra.yaml, or use --grid")
    names = [name for name, _ in axes]
    seen: set[tuple] = set()
    for combo in itertools.product(*(values for _, values in axes)):
        point = dict(zip(names, combo))
        active = {name: value for name, value in point.items() if is_active(specs[name], point)}
        for name, value in active.items():
            if value is None:
                raise UsageError(f"parameter {name} is active for {point} but has no value: give -p {name}=...")
        key = tuple(sorted((k, repr(v)) for k, v in active.items()))
        if key in seen:  # inactive conditionals make distinct combos collapse to one point
            continue
        seen.add(key)
        yield active
