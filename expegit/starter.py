"""A starter manifest for a folder that already holds an experiment script.

`expegit init` in a folder with a ``train.py`` used to commit a generic manifest whose command was
``python experiment.py``, and the suggested `expegit run` then failed. This module finds the likely entry
script and reads its argparse options statically (with :mod:`ast`: the script is never imported or run,
so a script that trains for hours at import time, or needs a GPU, is still read in milliseconds), and
renders a manifest that runs it with those options as parameters at their defaults.
"""
from __future__ import annotations

import ast
import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: Names people give the script that runs one experiment, most likely first.
PREFERRED = ("train.py", "main.py", "run.py", "experiment.py", "run_experiment.py", "script.py")
MAX_SCRIPT_BYTES = 2_000_000  # a larger .py is data or generated code, not the entry script


@dataclasses.dataclass(frozen=True)
class Option:
    """One ``add_argument("--name", ...)`` of the script, as far as it can be read without running it."""

    flag: str  # the option as typed on the command line, e.g. --lr or --batch-size
    dest: str  # the parameter name, e.g. lr or batch_size
    kind: str  # float, int, str, choice
    default: Any = None
    choices: tuple[Any, ...] = ()
    required: bool = False


@dataclasses.dataclass(frozen=True)
class EntryScript:
    path: str  # relative to the campaign root
    options: tuple[Option, ...]


def _literal(node: ast.AST | None) -> Any:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _keywords(call: ast.Call) -> dict[str, ast.AST]:
    return {k.arg: k.value for k in call.keywords if k.arg is not None}


def _kind(type_node: ast.AST | None, default: Any, choices: tuple[Any, ...]) -> str:
    if choices:
        return "choice"
    name = type_node.id if isinstance(type_node, ast.Name) else None
    if name in ("float", "int", "str"):
        return name
    if isinstance(default, bool):
        return "str"
    if isinstance(default, float):
        return "float"
    if isinstance(default, int):
        return "int"
    return "str"


def parse_argparse_options(source: str) -> list[Option]:
    """The ``--long`` options a script declares with argparse, in order (pure; never runs the script).

    Flags (``action="store_true"`` and friends) and positionals are left out: a flag is present or absent,
    not a value to put in a placeholder.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    options: list[Option] = []
    seen: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            continue
        flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        long_flags = [f for f in flags if f.startswith("--") and len(f) > 2]
        if not long_flags:
            continue
        kw = _keywords(node)
        action = _literal(kw.get("action"))
        if action is not None and action not in ("store",):
            continue
        if _literal(kw.get("nargs")) not in (None, 1, "?"):
            continue
        dest = _literal(kw.get("dest")) or long_flags[0][2:].replace("-", "_")
        if not isinstance(dest, str) or not dest.isidentifier() or dest in seen:
            continue
        seen.add(dest)
        default = _literal(kw.get("default"))
        raw_choices = _literal(kw.get("choices"))
        choices = tuple(raw_choices) if isinstance(raw_choices, (list, tuple)) and raw_choices else ()
        options.append(Option(flag=long_flags[0], dest=dest, kind=_kind(kw.get("type"), default, choices),
                              default=default, choices=choices, required=_literal(kw.get("required")) is True))
    return options


def _is_entry(source: str) -> bool:
    return "__main__" in source or "argparse" in source


def find_entry_script(root: Path, names: Iterable[str]) -> EntryScript | None:
    """The likely entry script among ``names`` (paths relative to ``root``): a preferred name first, then
    a top-level script with a ``__main__`` guard or argparse; None if there is no such script."""
    candidates = sorted({n for n in names if n.endswith(".py") and "/" not in n and not n.startswith(".")})
    ranked = [n for n in PREFERRED if n in candidates] + [n for n in candidates if n not in PREFERRED]
    for name in ranked:
        path = root / name
        try:
            if path.stat().st_size > MAX_SCRIPT_BYTES:
                continue
            source = path.read_text("utf-8", errors="replace")
        except OSError:
            continue
        if name in PREFERRED or _is_entry(source):
            return EntryScript(name, tuple(parse_argparse_options(source)))
    return None


def _yaml_value(value: Any) -> str:
    """A YAML flow scalar for a literal read from the script: JSON is valid YAML flow syntax, and quotes
    every string (a default like "yes" or "1e3" stays a string)."""
    return json.dumps(value)


def _declaration(option: Option) -> str:
    if option.kind == "choice":
        choices = ", ".join(_yaml_value(c) for c in option.choices)
        default = f", default: {_yaml_value(option.default)}" if option.default in option.choices else ""
        return f"{{choices: [{choices}]{default}}}"
    if option.default is None:
        return "{value: CHANGE-ME}  # the script has no default for it: set one"
    if option.kind == "float" and isinstance(option.default, (int, float)) and not isinstance(option.default, bool):
        return f"{{value: {float(option.default)!r}}}"
    if option.kind == "int" and isinstance(option.default, int) and not isinstance(option.default, bool):
        return f"{{value: {option.default}}}"
    return f"{{value: {_yaml_value(str(option.default))}}}"


def render_starter_manifest(name: str, script: EntryScript) -> str:
    """A runnable manifest for ``script``: its options as parameters, each fixed at the script's default."""
    words = ["python3", script.path] + [f"{o.flag} {{{o.dest}}}" for o in script.options]
    lines = [
        "# orchestra.yaml: the manifest of this campaign. `expegit check` validates it.",
        "# Every key is described in Orchestra's README (\"Manifest reference\") and its JSON Schema.",
        f"# Written by `expegit init` from {script.path}'s argparse options, each fixed at its default:",
        "# give one low/high (or choices) to sweep or search it, e.g. `lr: {type: float, low: 1.0e-4, "
        "high: 1.0e-1, log: true, steps: 4}`.",
        f"name: {json.dumps(name)}",
        "",
        f"command: {json.dumps(' '.join(words))}",
    ]
    if script.options:
        lines += ["", "parameters:"]
        width = max(len(o.dest) for o in script.options) + 1
        lines += [f"  {(o.dest + ':').ljust(width)} {_declaration(o)}" for o in script.options]
    lines += [
        "",
        "# Files an execution produces (globs, relative to its run directory), committed to its branch:",
        "# outputs: [metrics.json]",
        "# How an execution is judged, a key of a JSON output (or `pattern:` a regex on stdout):",
        "# objective: {metric: loss, from: metrics.json, goal: minimize}",
        "",
        "profile: local",
        "profiles:",
        "  local: {kind: local}",
        "",
    ]
    return "\n".join(lines)


def untracked_note(paths: Sequence[str], limit: int = 8) -> str | None:
    """The line that tells which files an execution will not see until they are committed."""
    if not paths:
        return None
    shown = ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
    return (f"not committed, so executions will not see them: {shown}; add what the command needs with "
            f"`git add FILE... && git commit`")


__all__ = ["EntryScript", "Option", "find_entry_script", "parse_argparse_options", "render_starter_manifest",
           "untracked_note"]
