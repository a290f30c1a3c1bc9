"""Loading and validating ``orchestra.yaml`` into a frozen Manifest.

ruamel.yaml's round-trip loader keeps the line and column of every key, and jsonschema says which path is
wrong; together they give ``orchestra.yaml:LINE:COL: what is wrong`` instead of a traceback. Checks the
schema cannot express (ranges, placeholders, profiles, conditions) run after it, with the same positions.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointPolicy, parse_checkpoint
from .durations import parse_duration
from .errors import ManifestError, did_you_mean
from .parameters import ParameterSpec, canonical_value
from .resources import placeholder, problems as resource_problems, resolve as resolve_resources
from .quoting import TemplateError, argv_template, parse_template, refusals, shell_problem
from .search import EarlyStoppingSpec, early_stopping_spec, search_problems

if TYPE_CHECKING:  # jsonschema is imported where it validates: read-only commands never load it
    import jsonschema

    from .yamlio import Document

MANIFEST_NAME = "orchestra.yaml"
RETRY_KINDS = ("exit", "timeout", "node-failure", "walltime", "preempted")
# A manifest is written by hand; the biggest real ones (long `choices:` lists) are a few MB. At 8 MiB the
# slowest shapes still load in seconds and under 1 GB (bench/manifest_load.py); a bigger file is refused
# before it is read whole: data that size belongs in a file the command reads.
MAX_MANIFEST_BYTES = 8 * 2**20


@dataclasses.dataclass(frozen=True)
class Objective:
    metric: str
    goal: str = "minimize"
    source: str | None = None  # JSON file
    pattern: str | None = None  # regex on stdout


@dataclasses.dataclass(frozen=True)
class MetricsSpec:
    """`metrics:`: intermediate values read while an execution runs (see expegit/metrics_stream.py)."""

    pattern: str | None = None  # a regex with named groups, on each stdout line
    every: float = 30.0  # seconds between commits of a running execution's metrics


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    max: int = 0
    on: tuple[str, ...] = ("node-failure",)
    backoff: float = 1.0


@dataclasses.dataclass(frozen=True)
class Manifest:
    name: str
    command: str  # a shell template; an argv-form command arrives as one (quoting.argv_template)
    parameters: Mapping[str, ParameterSpec]
    outputs: tuple[str, ...] = ()
    # The primary objective: the only one of a single-objective campaign, the first of a list. expegit's
    # views (status, report, compare) rank by it; parasearch reads ``objectives`` to search a Pareto front.
    objective: Objective | None = None
    repeats: int = 1
    timeout: float | None = None
    retries: RetryPolicy = RetryPolicy()
    search: Mapping[str, Any] | None = None
    profile: str = "local"
    profiles: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Variables whose values each execution's record keeps (environment.vars), read on the node after binding.
    record_env: tuple[str, ...] = ()
    # False: no environment probe at all (a site that forbids `pip freeze` on its nodes, or a user who wants
    # the last percent of throughput); record_env's values are still read.
    capture_environment: bool = True
    shell: str | None = None  # None: the wrapper's /bin/sh runs the command itself
    # `resources:` as declared (placeholders unresolved: orchestra.resources.resolve per execution); None:
    # not declared, one slot per execution as before any packing existed.
    resources: Mapping[str, Any] | None = None
    # `metrics:` as declared; None: not declared, nothing is read while executions run (a file written to
    # ORCHESTRA_METRICS is still committed at the end, with the results).
    metrics: MetricsSpec | None = None
    # `checkpoint:` (core/checkpoint.py); None: the execution does not checkpoint and costs nothing extra.
    checkpoint: CheckpointPolicy | None = None
    description: str = ""
    path: str = MANIFEST_NAME
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # plain form, for hashing searches
    # Every objective, in declared order (one for the single-objective form, none without `objective:`).
    objectives: tuple[Objective, ...] = ()

    def __post_init__(self) -> None:
        # A Manifest built in code with only ``objective=`` (tests, tools) has that one objective.
        if not self.objectives and self.objective is not None:
            object.__setattr__(self, "objectives", (self.objective,))

    @property
    def early_stopping(self) -> EarlyStoppingSpec | None:
        """``search.early_stopping`` with its defaults, the goal taken from the objective (None without it)."""
        return early_stopping_spec(self.search, [(o.metric, o.goal) for o in self.objectives])

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def declarations(self) -> dict[str, dict[str, Any]]:
        return {name: spec.as_declaration() for name, spec in self.parameters.items()}


@lru_cache(maxsize=None)
def load_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(resources.files("orchestra.schemas").joinpath(name).read_text("utf-8"))
    return schema


def _dotted(path: list[Any]) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


class _Checker:
    """Collects every problem of one manifest with its position; the first is what most commands show."""

    def __init__(self, path: str, doc: "Document", source: str = "") -> None:
        self.path = path
        self.doc = doc
        self.source = source  # the manifest's text: positions inside a string value are found in it
        self.errors: list[ManifestError] = []
        self.wheres: list[list[Any]] = []  # the key path of each error, to drop follow-ups of a bad part

    def add(self, where: list[Any], error: ManifestError) -> None:
        """An error positioned by the caller (inside a string value); ``where`` is its key path."""
        self.errors.append(error)
        self.wheres.append(list(where))

    def at(self, where: list[Any], message: str, *, key: str | None = None, hint: str | None = None) -> None:
        line, col = self.doc.key_position(where, key) if key is not None else self.doc.position(where)
        self.errors.append(ManifestError(message, path=self.path, line=line, col=col, hint=hint))
        self.wheres.append(list(where))

    def schema_error(self, err: "jsonschema.ValidationError", prefix: tuple[Any, ...] = ()) -> None:
        where = [*prefix, *err.absolute_path]
        validator = err.validator
        # jsonschema types these as "anything a schema may hold"; for the validators named below they are
        # a mapping (additionalProperties) and a list or a string (enum, type).
        schema: Any = err.schema
        value: Any = err.validator_value
        if validator == "additionalProperties":
            allowed = list((schema.get("properties") or {}).keys())
            extras = [k for k in err.instance if k not in allowed] if isinstance(err.instance, Mapping) else []
            for extra in extras:
                valid = f"; valid keys: {', '.join(allowed)}" if allowed else ""
                self.at(where, f"unknown key {_shown(extra)} in {_dotted(where)}{valid}", key=str(extra),
                        hint=did_you_mean(extra, allowed))
            return
        if validator == "required":
            missing = re.findall(r"'([^']+)' is a required property", err.message)
            name = missing[0] if missing else err.message
            self.at(where, f"missing required key {name!r} in {_dotted(where)}")
            return
        if validator == "enum":
            choices = ", ".join(str(c) for c in value)
            self.at(where, f"{_dotted(where)}: {_shown(err.instance)} is not one of: {choices}",
                    hint=did_you_mean(err.instance, value))
            return
        if validator == "type":
            expected = value if isinstance(value, str) else " or ".join(value)
            self.at(where, f"{_dotted(where)}: expected {_type_word(expected)}, got {_describe(err.instance)}")
            return
        if validator == "pattern" and where and where[-1] == "name":
            self.at(where, "name must be one line of text")
            return
        if validator == "propertyNames" or (validator == "pattern" and where == ["parameters"]):
            self.at(where, f"{_dotted(where)}: {_shown(err.instance)} is not a valid parameter name "
                           f"(letters, digits and _; not starting with a digit)", key=str(err.instance))
            return
        if validator in ("minimum", "maximum", "minLength", "minItems", "minProperties", "uniqueItems"):
            self.at(where, f"{_dotted(where)}: {_schema_message(err)}")
            return
        self.at(where, f"{_dotted(where)}: {err.message}")


def _type_word(expected: str) -> str:
    return {"object": "a mapping", "array": "a list", "string": "a string", "number": "a number",
            "integer": "an integer", "boolean": "true or false"}.get(expected, expected)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {_shown(value)}"
    return f"{type(value).__name__} {_shown(value)}"


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to fit one line of a message (a value may be megabytes long)."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _schema_message(err: "jsonschema.ValidationError") -> str:
    v = err.validator_value
    return {
        "minimum": f"must be at least {v}, got {_shown(err.instance)}",
        "maximum": f"must be at most {v}, got {_shown(err.instance)}",
        "minLength": "must not be empty",
        "minItems": "must not be empty",
        "minProperties": "must not be empty",
        "uniqueItems": "has duplicate entries",
    }.get(str(err.validator), err.message)


def parse_manifest(text: str | bytes, path: str = MANIFEST_NAME, *,
                   personal_profiles: Mapping[str, Any] | None = None) -> tuple[Manifest | None, list[ManifestError]]:
    """Parse and check a manifest text; returns the Manifest (None if invalid) and every error found.

    One pass of the YAML composer gives the data and every position; independent problems (a duplicate
    key, schema errors, the semantic checks on the parts the schema accepted) are all reported, in file
    order, so one `expegit check` shows what to fix.
    """
    from .yamlio import YamlError, load_located

    try:
        doc = load_located(text, string_keys=True)
    except YamlError as exc:
        return None, [ManifestError(exc.message, path=path, line=exc.line, col=exc.col, hint=exc.hint)]
    root = doc.data
    if root is None:
        return None, [ManifestError("the manifest is empty", path=path, line=1, col=1,
                                    hint="run `expegit init` for a commented starter manifest")]
    if not isinstance(root, dict):
        return None, [ManifestError(f"the manifest must be a mapping of keys, got {_describe(root)}",
                                    path=path, line=1, col=1)]
    source = text if isinstance(text, str) else text.decode("utf-8", "replace")
    checker = _Checker(path, doc, source)
    for dup in doc.duplicates:
        inside = f" in {_dotted(list(dup.path))}" if dup.path else ""
        checker.errors.append(ManifestError(
            f"key {_shown(dup.key)} appears twice{inside}: first at line {dup.first[0]}, again at line {dup.again[0]}",
            path=path, line=dup.again[0], col=dup.again[1], hint="keep one of them"))
        checker.wheres.append(list(dup.path))
    schema_errors = _schema_errors(root, checker)
    data = _buildable(root, schema_errors)
    if data is None:
        return None, _sorted(checker.errors)
    builder = _Checker(path, doc, source)
    manifest = _build(data, builder, personal_profiles or {})
    dropped = _dropped_parameters(root, schema_errors)
    for error, where in zip(builder.errors, builder.wheres):
        if not _follows_from(error, where, dropped):
            checker.errors.append(error)
    if checker.errors:
        return None, _sorted(checker.errors)
    return manifest, []


def _schema_errors(root: dict[str, Any], checker: _Checker) -> list[list[Any]]:
    """Report every schema problem of the manifest and of its shared profiles; returns their key paths."""
    from .schema_check import validator as schema_validator  # jsonschema: only where a manifest is checked

    paths: list[list[Any]] = []
    validator = schema_validator("orchestra.schema.json")
    for err in validator.iter_errors(root):
        checker.schema_error(err)
        paths.append(_error_path(err))
    profiles = root.get("profiles")
    if isinstance(profiles, dict):
        # A shared profile may leave required keys (host, account) to each user's personal file, so only
        # what is written is checked here: unknown keys and wrong values, with their lines.
        profile_validator = schema_validator("profile.schema.json")
        for name, profile in profiles.items():
            if not isinstance(profile, dict) or profile.get("kind") not in ("local", "ssh", "slurm", "command"):
                continue  # the manifest schema said so already
            for err in profile_validator.iter_errors(profile):
                if err.validator in ("required", "if", "then", "allOf"):
                    continue
                checker.schema_error(err, ("profiles", name))
                paths.append(["profiles", name, *_error_path(err)])
    return paths


def _error_path(err: "jsonschema.ValidationError") -> list[Any]:
    path: list[Any] = list(err.absolute_path)
    if err.validator == "propertyNames":  # the bad name is the instance, not a path below it
        path.append(err.instance)
    return path


def _buildable(root: dict[str, Any], schema_errors: list[list[Any]]) -> dict[str, Any] | None:
    """``root`` with the parts the schema refused set aside, so the semantic checks can still run on the
    rest; None when what is left cannot make a manifest (no valid name or command)."""
    if not schema_errors:
        return root
    bad_top = {p[0] for p in schema_errors if p}
    if not isinstance(root.get("name"), str) or not isinstance(root.get("command"), str) or \
            {"name", "command"} & bad_top:
        return None
    data = {k: v for k, v in root.items() if k not in bad_top or k in ("parameters", "profiles", "objective")}
    if "parameters" in bad_top:
        params = root.get("parameters")
        if not isinstance(params, dict):
            data.pop("parameters")
        else:
            bad = _dropped_parameters(root, schema_errors)
            data["parameters"] = {n: ({"value": 0} if n in bad else d) for n, d in params.items()}
    if "profiles" in bad_top:
        profiles = root.get("profiles")
        bad_profiles = {p[1] for p in schema_errors if len(p) >= 2 and p[0] == "profiles"}
        data["profiles"] = {n: ({"kind": "local"} if n in bad_profiles else p)
                            for n, p in profiles.items()} if isinstance(profiles, dict) else {}
        if not isinstance(profiles, dict):
            data.pop("profile", None)
    if "objective" in bad_top:
        data["objective"] = {"metric": "objective", "from": "metrics.json"}  # stands in for the bad one
    return data


def _objectives(declared: Any, c: _Checker) -> tuple[Objective, ...]:
    """Every objective declared: one mapping (the single-objective form) or a list of them.

    Why a list and not a new key: "what judges an execution" stays in one place, and a campaign grows from
    one objective to several by wrapping it in brackets. Each item is checked like the single form, at
    its own position (``objective.1.goal``), and a metric named twice is refused: the front would be
    degenerate and the records' ``objectives`` mapping could not hold both.
    """
    if declared is None:
        return ()
    many = isinstance(declared, list)
    items = list(declared) if many else [declared]
    out: list[Objective] = []
    seen: dict[str, int] = {}
    for i, o in enumerate(items):
        at: list[Any] = ["objective", i] if many else ["objective"]
        name = f"objective.{i}" if many else "objective"
        if ("from" in o) == ("pattern" in o):
            c.at(at, f"{name}: give exactly one of `from` (a JSON file) or `pattern` (a regex on stdout)")
        if "pattern" in o:
            try:
                compiled = re.compile(o["pattern"])
                if compiled.groups < 1:
                    c.at(at + ["pattern"], f"{name}.pattern: needs one (group) capturing the number")
            except re.error as exc:
                c.at(at + ["pattern"], f"{name}.pattern: invalid regular expression: {exc}")
        if "from" in o and (os.path.isabs(o["from"]) or ".." in Path(o["from"]).parts):
            c.at(at + ["from"], f"{name}.from: must be a path inside the run directory")
        if o["metric"] in seen:
            c.at(at + ["metric"], f"{name}.metric: {o['metric']!r} is already objective.{seen[o['metric']]}",
                 hint="name each metric once")
        seen.setdefault(o["metric"], i)
        out.append(Objective(metric=o["metric"], goal=o.get("goal", "minimize"), source=o.get("from"),
                             pattern=o.get("pattern")))
    return tuple(out)


def _dropped_parameters(root: dict[str, Any], schema_errors: list[list[Any]]) -> set[str]:
    params = root.get("parameters")
    if not isinstance(params, dict):
        return set()
    return {str(p[1]) for p in schema_errors if len(p) >= 2 and p[0] == "parameters"}


# The parameter names a message mentions: as a placeholder ({name} or {name:fmt}) or quoted ('name').
_NAMED = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)[}:]|'([A-Za-z_][A-Za-z0-9_]*)'")


def _follows_from(error: ManifestError, where: list[Any], dropped: set[str]) -> bool:
    """Whether a semantic error is only the echo of a parameter the schema refused (a placeholder or a
    `when` naming it): the schema's own error says what to fix."""
    if not dropped:
        return False
    if len(where) >= 2 and where[0] == "parameters" and where[1] in dropped:
        return True
    return any(name in dropped for names in _NAMED.findall(error.message) for name in names if name)


def _sorted(errors: list[ManifestError]) -> list[ManifestError]:
    return sorted(errors, key=lambda e: (e.line or 0, e.col or 0))


def _build(data: dict[str, Any], c: _Checker, personal_profiles: Mapping[str, Any]) -> Manifest | None:
    specs: dict[str, ParameterSpec] = {}
    for name, decl in (data.get("parameters") or {}).items():
        spec = _parameter(name, decl, c)
        if spec is not None:
            specs[name] = spec
    for name, spec in specs.items():
        for other, allowed in spec.when.items():
            where = ["parameters", name, "when"]
            if other not in specs:
                c.at(where, f"parameters.{name}.when: no parameter {other!r}", key=other,
                     hint=f"declared parameters: {', '.join(specs)}")
            elif specs[other].kind != "choice":
                c.at(where, f"parameters.{name}.when: {other!r} must be a choices parameter", key=other)
            else:
                known = {canonical_value(choice) for choice in specs[other].choices}
                bad = [v for v in allowed if canonical_value(v) not in known]
                if bad:
                    c.at(where, f"parameters.{name}.when: {bad[0]!r} is not a choice of {other} "
                                f"({', '.join(map(str, specs[other].choices))})", key=other)
            if other == name:
                c.at(where, f"parameters.{name}.when: a parameter cannot depend on itself", key=other)

    command = _command(data["command"], specs, set(data.get("parameters") or {}), c)
    shell = data.get("shell")
    if shell is not None:
        problem = shell_problem(shell)
        if problem is not None:
            c.at(["shell"], f"shell: {problem[0]}", hint=problem[1])

    objectives = _objectives(data.get("objective"), c)
    objective = objectives[0] if objectives else None

    for i, pattern in enumerate(data.get("outputs") or []):
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            c.at(["outputs", i], f"outputs: {pattern!r} must be relative to the run directory, without '..'")
        elif pattern.startswith(".orchestra"):
            c.at(["outputs", i], "outputs: .orchestra/ is reserved for Orchestra's own files")

    metrics = _metrics(data["metrics"], c) if "metrics" in data else None

    timeout = None
    if "timeout" in data:
        try:
            timeout = parse_duration(data["timeout"])
        except ValueError as exc:
            c.at(["timeout"], f"timeout: {exc}")

    retries = RetryPolicy()
    if "retries" in data:
        r = data["retries"]
        retries = RetryPolicy(max=r.get("max", 0), on=tuple(r.get("on", RetryPolicy.on)),
                              backoff=float(r.get("backoff", 1.0)))

    checkpoint = None
    if "checkpoint" in data:
        checkpoint, problems = parse_checkpoint(data["checkpoint"])
        for below, message, hint in problems:
            c.at(["checkpoint", *below], message, hint=hint)

    profiles = dict(data.get("profiles") or {})
    profile = data.get("profile", "local")
    known = {"local"} | set(profiles) | set(personal_profiles)
    if profile not in known:
        close = difflib.get_close_matches(profile, sorted(known), n=1)
        c.at(["profile"], f"profile: unknown profile {profile!r}; known: {', '.join(sorted(known))}",
             hint=f"did you mean {close[0]!r}?" if close else
             "declare it under profiles: or in ~/.config/orchestra/profiles/NAME.yaml")

    search = data.get("search")
    if search is not None:  # the checks live with the algorithm names, in orchestra.search
        for at, message, hint in search_problems(search, specs, has_objective=objective is not None,
                                                 repeats=data.get("repeats", 1),
                                                 declared=len(data.get("parameters") or {}),
                                                 objectives=[(o.metric, o.goal) for o in objectives],
                                                 metrics_declared="metrics" in data):
            c.at(at, message, hint=hint)
        if len(objectives) > 1 and isinstance(search, Mapping) and isinstance(search.get("stop"), Mapping) \
                and search["stop"]:
            c.at(["search", "stop"], "search.stop needs a single objective: a target or patience on a Pareto "
                 "front is not defined", hint="remove search.stop, or declare one objective")

    env = {str(k): _env_text(v) for k, v in (data.get("env") or {}).items()}
    resources = _resources(data.get("resources"), specs, c)

    if c.errors:
        return None
    return Manifest(
        name=data["name"], command=command, parameters=specs, outputs=tuple(data.get("outputs") or ()),
        objective=objective, objectives=objectives, repeats=data.get("repeats", 1), timeout=timeout, retries=retries,
        search=search, profile=profile, profiles=profiles, env=env, shell=shell, resources=resources,
        metrics=metrics, checkpoint=checkpoint,
        record_env=tuple(str(n) for n in data.get("record_env") or ()),
        capture_environment=bool(data.get("capture_environment", True)),
        description=data.get("description", ""),
        path=c.path, data=data,
    )


def _metrics(declared: Mapping[str, Any], c: _Checker) -> MetricsSpec:
    """`metrics:`: a pattern must compile and name what it captures (the names are the metrics' keys)."""
    pattern = declared.get("pattern")
    if pattern is not None:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            c.at(["metrics", "pattern"], f"metrics.pattern: invalid regular expression: {exc}",
                 hint="fix the regular expression (Python's re syntax)")
        else:
            if not compiled.groupindex:
                c.at(["metrics", "pattern"], "metrics.pattern: needs named groups, one per metric, like "
                     "'step=(?P<step>\\d+) loss=(?P<loss>[0-9.e-]+)'",
                     hint="name each group with (?P<name>...): the names are the metrics' keys")
    every = 30.0
    if "every" in declared:
        try:
            every = parse_duration(declared["every"])
        except ValueError as exc:
            c.at(["metrics", "every"], f"metrics.every: {exc}")
        else:
            if every <= 0:
                c.at(["metrics", "every"], "metrics.every: must be more than 0 seconds", hint="e.g. every: 30s")
    return MetricsSpec(pattern=pattern, every=every)


def _resources(declared: Any, specs: Mapping[str, ParameterSpec], c: _Checker) -> Mapping[str, Any] | None:
    """`resources:` checked: each value parses, each placeholder names a parameter whose every possible
    value (choices, a fixed value, an int range's bounds) is a valid request."""
    if declared is None:
        return None
    if not isinstance(declared, Mapping):
        c.at(["resources"], "resources: expected a mapping like {cpus: 4, gpus: 1, memory: 16G}")
        return None
    bad = False
    for key, message, hint in resource_problems(declared, specs):
        c.at(["resources", key] if key in ("cpus", "gpus", "memory") else ["resources"], message,
             key=None if key in ("cpus", "gpus", "memory") else key, hint=hint)
        bad = True
    for key, value in declared.items():
        name = placeholder(value)
        spec = specs.get(name) if name is not None else None
        if name is None or spec is None:
            continue
        if spec.kind == "choice":
            values: list[Any] = list(spec.choices)
        elif spec.kind == "fixed":
            values = [spec.value]
        elif spec.kind in ("int", "float"):
            values = [v for v in (spec.low, spec.high) if v is not None]
            values = [int(v) if spec.kind == "int" else v for v in values]
        else:
            values = [spec.default] if spec.default is not None else []
        for v in values:
            try:
                resolve_resources({key: value}, {name: v})
            except ValueError as exc:
                c.at(["resources", key], str(exc), hint=f"every value of parameter {name} must be a valid {key}")
                bad = True
                break
    return None if bad else dict(declared)


# Each error is found in the source by a scan from the value's start: a bound keeps a command of thousands of
# bad placeholders from costing a scan each (the first few are what a user fixes first anyway).
_MAX_COMMAND_ERRORS = 20


def _command(raw: str | list[str], specs: Mapping[str, ParameterSpec], declared: set[str], c: _Checker) -> str:
    """The command as one template; every placeholder checked: declared, its format spec, where it stands.

    The argv form (a list) becomes a template of fully quoted words (quoting.argv_template), so both forms
    render through one path. Each problem is reported at the placeholder itself, inside the string.
    """
    pieces: list[tuple[list[Any], str]] = [(["command", i], w) for i, w in enumerate(raw)] \
        if isinstance(raw, list) else [(["command"], raw)]
    if isinstance(raw, list) and raw and not raw[0].strip():
        c.at(["command", 0], "command[0]: the program to run is empty",
             hint="the argv form starts with the program: command: [python, train.py, ...]")
    for where, text in pieces:
        label = "command" if len(where) == 1 else f"command[{where[1]}]"
        try:
            fields = parse_template(text).fields
            problems = refusals(text)
        except TemplateError as exc:
            c.add(where, _at_offset(c, where, text, exc.offset, f"{label}: {exc}", exc.hint))
            continue
        if len(where) > 1:
            problems = []  # an argv word is quoted whole: no shell context to refuse
        for problem in problems[:_MAX_COMMAND_ERRORS]:
            c.add(where, _at_offset(c, where, text, problem.offset, f"{label}: {problem}", problem.hint))
        reported = len(problems)
        for placeholder in fields:
            field, fmt = placeholder.field, placeholder.spec
            if reported >= _MAX_COMMAND_ERRORS and (field not in declared or fmt):
                c.at(where, f"{label}: more problems with placeholders (fix the ones above first)")
                break
            if field not in declared:
                reported += 1
                close = difflib.get_close_matches(field, list(specs), n=1)
                c.add(where, _at_offset(
                    c, where, text, placeholder.start,
                    f"{label}: placeholder {{{field}}} names no parameter; declared: {', '.join(specs) or '(none)'}",
                    f"did you mean {{{close[0]}}}?" if close else
                    "declare it under parameters: or write {{ }} for literal braces"))
            elif fmt and field in specs:
                sample = specs[field].default_value() or specs[field].low or (specs[field].choices or ("",))[0]
                try:
                    format(sample, fmt)
                except (ValueError, TypeError):
                    reported += 1
                    c.add(where, _at_offset(c, where, text, placeholder.start,
                                               f"{label}: format spec {{{field}:{fmt}}} does not apply to "
                                               f"parameter {field}", None))
    if isinstance(raw, str):
        return raw
    try:
        return argv_template(raw)
    except TemplateError:  # reported above, at the word
        return ""


def _at_offset(c: _Checker, where: list[Any], value: str, offset: int, message: str,
               hint: str | None) -> ManifestError:
    """An error at ``offset`` inside the string at ``where``: its own line and column in the manifest.

    YAML may write a string in many ways (plain, quoted with escapes, folded, block), so the text at the
    offset is looked for in the source from where the value starts, as its k-th occurrence there (the
    k-th in the value too): a placeholder's text survives every YAML style unchanged. Falls back to where
    the value starts when the source is not at hand (data already checked once, from a cache).
    """
    line, col = c.doc.position(where)
    located = _find_in_source(c.source, line, col, value, offset)
    if located is not None:
        line, col = located
    return ManifestError(message, path=c.path, line=line, col=col, hint=hint)


def _find_in_source(source: str, line: int | None, col: int | None, value: str,
                    offset: int) -> tuple[int, int] | None:
    if not source or line is None or col is None or not 0 <= offset < len(value):
        return None
    close = value.find("}", offset) if value[offset] == "{" else -1
    fragment = value[offset:close + 1] if close >= 0 else value[offset]
    occurrence = 0
    at = value.find(fragment)
    while 0 <= at < offset:
        occurrence += 1
        at = value.find(fragment, at + len(fragment))
    line_start = 0
    for _ in range(line - 1):
        line_start = source.find("\n", line_start) + 1
        if line_start == 0:
            return None
    pos = line_start + col - 1 - len(fragment)
    for _ in range(occurrence + 1):
        pos = source.find(fragment, pos + len(fragment))
        if pos < 0:
            return None
    return source.count("\n", 0, pos) + 1, pos - (source.rfind("\n", 0, pos) + 1) + 1


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parameter(name: str, decl: dict[str, Any], c: _Checker) -> ParameterSpec | None:
    where = ["parameters", name]
    kinds = [k for k in ("type", "choices", "value") if k in decl]
    if len(kinds) != 1:
        c.at(where, f"parameters.{name}: give exactly one of `type` (a range or str), `choices` or `value`"
                    + (f", not {' and '.join(kinds)}" if kinds else ""))
        return None
    when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in (decl.get("when") or {}).items()}
    default = decl.get("default")
    ranged = ("low", "high", "log", "steps")
    if "value" in decl or "choices" in decl:
        extra = [k for k in ranged if k in decl]
        if extra:
            c.at(where, f"parameters.{name}: {extra[0]!r} applies only to type: float or int", key=extra[0])
            return None
    if "value" in decl:
        return ParameterSpec(name, "fixed", value=decl["value"], when=when)
    if "choices" in decl:
        choices = decl["choices"]
        seen: set[Any] = set()
        for i, choice in enumerate(choices):
            if canonical_value(choice) in seen:  # 1 and 1.0 are one value, true and 1 are two
                c.at(where + ["choices", i], f"parameters.{name}.choices: {choice!r} appears twice")
            seen.add(canonical_value(choice))
        if default is not None and default not in choices:
            c.at(where + ["default"], f"parameters.{name}.default: {default!r} is not one of the choices")
        return ParameterSpec(name, "choice", choices=tuple(choices), default=default, when=when)
    kind = decl["type"]
    if kind == "str":
        extra = [k for k in ranged if k in decl]
        if extra:
            c.at(where, f"parameters.{name}: {extra[0]!r} applies only to type: float or int", key=extra[0])
            return None
        return ParameterSpec(name, "str", default=None if default is None else str(default), when=when)
    missing = [k for k in ("low", "high") if k not in decl]
    if missing:
        c.at(where, f"parameters.{name}: a {kind} range needs `low` and `high` (missing {' and '.join(missing)})")
        return None
    low, high = decl["low"], decl["high"]
    ok = True
    if kind == "int":
        for bound in ("low", "high"):
            if not float(decl[bound]).is_integer():
                c.at(where + [bound], f"parameters.{name}.{bound}: an int range needs integer bounds, got {decl[bound]!r}")
                ok = False
    for bound in ("low", "high"):
        if not math.isfinite(float(decl[bound])):
            c.at(where + [bound], f"parameters.{name}.{bound}: must be a finite number")
            ok = False
    if ok and low > high:
        c.at(where + ["low"], f"parameters.{name}: the range is inverted (low {low} > high {high})",
             hint="swap low and high")
        ok = False
    elif ok and low == high:
        c.at(where + ["low"], f"parameters.{name}: the range is empty (low == high == {low})",
             hint=f"use `value: {low}` for a fixed parameter")
        ok = False
    log = bool(decl.get("log", False))
    if ok and log and low <= 0:
        c.at(where + ["low"], f"parameters.{name}: a log scale needs low > 0, got {low}")
        ok = False
    if default is not None:
        if isinstance(default, bool) or not isinstance(default, (int, float)) or \
                (kind == "int" and not float(default).is_integer()):
            c.at(where + ["default"], f"parameters.{name}.default: expected a{'n int' if kind == 'int' else ' number'}, "
                                      f"got {_describe(default)}")
            ok = False
        elif ok and not (low <= default <= high):
            c.at(where + ["default"], f"parameters.{name}.default: {default} is outside [{low}, {high}]")
            ok = False
    if not ok:
        return None
    cast = int if kind == "int" else float
    return ParameterSpec(name, kind, low=cast(low), high=cast(high), log=log, steps=decl.get("steps"),
                         default=None if default is None else cast(default), when=when)


def personal_profiles_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "orchestra" / "profiles"


def list_personal_profiles() -> dict[str, Path]:
    directory = personal_profiles_dir()
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.glob("*.yaml"))}


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and check a manifest file; the first problem found is raised as ManifestError."""
    manifest, errors = check_manifest(path)
    if errors:
        first = errors[0]
        if len(errors) > 1:
            more = f"{len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}: `expegit check` lists them all"
            first.hint = f"{first.hint}; {more}" if first.hint else more
        raise first
    assert manifest is not None
    return manifest


def manifest_from_checked_data(data: Mapping[str, Any], path: str = MANIFEST_NAME) -> Manifest | None:
    """A Manifest from plain data that parse_manifest() accepted before (cached by content hash).

    Skips the YAML round-trip and the schema; the semantic checks still run, since they depend on the
    personal profiles too. None if they now fail: the caller then parses the text again for positions.
    """
    from .yamlio import Document

    checker = _Checker(path, Document(data, None, []))
    manifest = _build(json.loads(json.dumps(data)), checker, list_personal_profiles())
    return None if checker.errors else manifest


def check_manifest(path: str | os.PathLike[str]) -> tuple[Manifest | None, list[ManifestError]]:
    shown = os.path.relpath(path) if os.path.isabs(path) else str(path)
    from .yamlio import YamlError, read_text

    try:
        text = read_text(path, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        return None, [ManifestError("no manifest here", path=shown,
                                    hint="run `expegit init` to create a campaign, or cd into one")]
    except OSError as exc:
        return None, [ManifestError(f"cannot read the manifest: {exc.strerror}", path=shown)]
    except YamlError as exc:
        return None, [ManifestError(exc.message, path=shown, line=exc.line, col=exc.col, hint=exc.hint)]
    return parse_manifest(text, shown, personal_profiles=list_personal_profiles())
