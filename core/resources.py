"""What one execution needs (``resources:`` in the manifest): cores, GPUs (possibly a fraction), memory.

Pure: sizes like ``16G`` are parsed here, placeholders such as ``gpus: "{n_gpus}"`` are resolved per
execution from its parameters, and a request renders back to the text a user wrote. Nothing here knows
about nodes; runaway/placement.py packs requests onto node capacities.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

RESOURCE_KEYS = ("cpus", "gpus", "memory")
# GPU fractions are kept exact (Fraction): four executions of 0.25 must fill one device to exactly 1.0,
# which float sums (0.1 * 10) do not promise. A device is shared in steps of at most 1/1000.
GPU_DENOMINATOR = 1000

_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_PLACEHOLDER = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


@dataclasses.dataclass(frozen=True)
class Request:
    """One execution's needs. ``gpus`` is exact (a Fraction); ``memory`` in bytes, None: no limit asked."""

    cpus: int = 1
    gpus: Fraction = Fraction(0)
    memory: int | None = None

    @property
    def whole_gpus(self) -> int:
        """How many whole devices it takes (a fraction below 1 takes a share of one device)."""
        return int(self.gpus) if self.gpus >= 1 else 0

    def render(self) -> str:
        parts = [f"cpus: {self.cpus}"]
        if self.gpus:
            parts.append(f"gpus: {render_gpus(self.gpus)}")
        if self.memory is not None:
            parts.append(f"memory: {render_size(self.memory)}")
        return "{" + ", ".join(parts) + "}"


DEFAULT = Request()


def parse_size(value: Any) -> int:
    """``16G``, ``512M``, ``1.5GiB``, ``2048`` (bytes) -> bytes; binary units, as Slurm and the kernel use."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"{value} must be a positive size")
        return value
    match = _SIZE.match(str(value))
    if match is None or (match.group(3) and not match.group(2)):
        raise ValueError(f"{value!r} is not a size (write it like 16G, 512M or 1.5T)")
    number = float(match.group(1)) * _UNITS[match.group(2).upper()]
    if number < 1:
        raise ValueError(f"{value!r} must be a positive size")
    return int(number)


def render_size(size: int) -> str:
    """The shortest exact text parse_size reads back: 17179869184 -> 16G."""
    for unit in ("P", "T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


def parse_gpus(value: Any) -> Fraction:
    """``1``, ``0.25``, ``"1/4"`` -> an exact Fraction; over 1 it must be whole (no 1.5 GPUs: nobody can
    give half a device beside a whole one consistently)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of GPUs")
    try:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError
            amount = Fraction(str(value))
        else:
            amount = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{value!r} is not a number of GPUs (write 1, 2 or a fraction like 0.25)") from None
    if amount < 0:
        raise ValueError(f"{value!r}: the number of GPUs cannot be negative")
    if amount > 1 and amount.denominator != 1:
        raise ValueError(f"{value!r}: above 1 a GPU request must be whole (1, 2, 4...)")
    if amount.denominator > GPU_DENOMINATOR:
        raise ValueError(f"{value!r}: a GPU share finer than 1/{GPU_DENOMINATOR} is not supported")
    return amount


def render_gpus(amount: Fraction) -> str:
    if amount.denominator == 1:
        return str(amount.numerator)
    as_float = float(amount)
    return repr(as_float) if Fraction(repr(as_float)) == amount else f"{amount.numerator}/{amount.denominator}"


def parse_cpus(value: Any) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise ValueError(f"{value!r} is not a whole number of cores")
    cpus = int(value)
    if cpus < 1:
        raise ValueError(f"{value!r}: an execution needs at least 1 core")
    return cpus


_PARSERS = {"cpus": parse_cpus, "gpus": parse_gpus, "memory": parse_size}


def placeholder(value: Any) -> str | None:
    """The parameter named by a value that is exactly ``{name}``, else None."""
    if isinstance(value, str):
        match = _PLACEHOLDER.match(value.strip())
        if match:
            return match.group(1)
    return None


def problems(declared: Mapping[str, Any], parameters: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """(key, message, hint) for each bad entry of a ``resources:`` mapping; ``parameters``: the declared
    parameter names (a placeholder must name one). Placeholder values are checked per execution."""
    found: list[tuple[str, str, str | None]] = []
    for key, value in declared.items():
        if key not in _PARSERS:
            found.append((key, f"resources: unknown key {key!r}", f"known keys: {', '.join(RESOURCE_KEYS)}"))
            continue
        name = placeholder(value)
        if name is not None:
            if name not in parameters:
                found.append((key, f"resources.{key}: no parameter {name!r}",
                              f"declared parameters: {', '.join(parameters) or 'none'}"))
            continue
        if isinstance(value, str) and "{" in value:
            found.append((key, f"resources.{key}: {value!r}: a placeholder must be the whole value, like \"{{n_gpus}}\"",
                          None))
            continue
        try:
            _PARSERS[key](value)
        except ValueError as exc:
            found.append((key, f"resources.{key}: {exc}", None))
    return found


def resolve(declared: Mapping[str, Any] | None, parameters: Mapping[str, Any] | None = None) -> Request:
    """The request of one execution: placeholders replaced by its parameter values, then parsed.

    Raises ValueError naming the key (and the parameter) when a value is not valid."""
    if not declared:
        return DEFAULT
    values: dict[str, Any] = {}
    for key, value in declared.items():
        name = placeholder(value)
        if name is not None:
            if parameters is None or name not in parameters:
                raise ValueError(f"resources.{key}: no value for parameter {name!r}")
            value = parameters[name]
            try:
                values[key] = _PARSERS[key](value)
            except ValueError as exc:
                raise ValueError(f"resources.{key} from parameter {name}={value!r}: {exc}") from None
        else:
            try:
                values[key] = _PARSERS[key](value)
            except ValueError as exc:
                raise ValueError(f"resources.{key}: {exc}") from None
    return Request(cpus=values.get("cpus", 1), gpus=values.get("gpus", Fraction(0)), memory=values.get("memory"))


__all__ = ["DEFAULT", "GPU_DENOMINATOR", "RESOURCE_KEYS", "Request", "parse_cpus", "parse_gpus", "parse_size",
           "placeholder", "problems", "render_gpus", "render_size", "resolve"]
