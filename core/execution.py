"""Executions: their specs, their states and the record committed on their branch.

The record (``.orchestra/execution.yaml`` on branch ``executions/<id>``) is the one durable fact about an
execution; everything else (lists, reports, searches) is derived from it. It is rendered by hand rather
than through a YAML emitter because campaigns write thousands of them per minute and the format is small
and fixed; it is parsed by the YAML library, so any hand-edited but valid YAML still reads back.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import ExecutionError

RECORD_PATH = ".orchestra/execution.yaml"
STDOUT_PATH = ".orchestra/stdout"
STDERR_PATH = ".orchestra/stderr"
BRANCH_PREFIX = "executions/"
ID_LENGTH = 12

# created: branch exists, nothing launched. running: launched on a slot. finished: exit code 0.
# failed: non-zero exit, timeout, or the place it ran on was lost. cancelled: a user stopped it.
# pruned: stopped early by its search's early stopping rule on its metrics (no failure: never retried).
STATES = ("created", "running", "finished", "failed", "cancelled", "pruned")
FINAL_STATES = frozenset({"finished", "failed", "pruned"})
# What `resume` picks up again: never started, stopped by a user, or running when the controller died.
RESUMABLE_STATES = frozenset({"created", "running", "cancelled"})

ParamValue = str | int | float | bool | None
_ID_RE = re.compile(r"^[0-9a-f]{%d}$" % ID_LENGTH)


def new_execution_id() -> str:
    """A random id: 48 bits keep collaborators' ids apart without any coordination."""
    return os.urandom(ID_LENGTH // 2).hex()


def is_execution_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def render_branch_name(execution_id: str) -> str:
    return BRANCH_PREFIX + execution_id


def parse_branch_name(name: str) -> str | None:
    """The execution id of a branch name (short or ``refs/heads/...``), or None if it is no execution."""
    if name.startswith("refs/heads/"):
        name = name[len("refs/heads/"):]
    if not name.startswith(BRANCH_PREFIX):
        return None
    candidate = name[len(BRANCH_PREFIX):]
    return candidate if is_execution_id(candidate) else None


@dataclasses.dataclass(frozen=True)
class ExecutionSpec:
    """What to run: produced by `expegit run`, a grid or a search, before any branch exists."""

    commit: str
    parameters: Mapping[str, ParamValue]
    profile: str
    repeat: int = 0
    search: str | None = None
    # `expegit rerun`: the execution this one repeats, and the command it ran (kept verbatim, so a rerun
    # runs what the original ran even after the manifest's command changed).
    rerun_of: str | None = None
    command: str | None = None


@dataclasses.dataclass
class ExecutionRecord:
    """The content of ``.orchestra/execution.yaml``. Times are ISO 8601 UTC strings."""

    id: str
    campaign: str
    commit: str
    command: str
    parameters: dict[str, ParamValue]
    profile: str
    state: str = "created"
    repeat: int = 0
    attempt: int = 0
    search: str | None = None
    author: str | None = None
    host: str | None = None
    node: str | None = None  # the scheduler's node, when the host reached by SSH is a cluster's frontend
    slot: int | None = None
    remote_dir: str | None = None
    created: str | None = None
    started: str | None = None
    ended: str | None = None
    duration: float | None = None
    exit_code: int | None = None
    objective: float | None = None
    # A multi-objective campaign's values by metric (the primary one is also ``objective``); absent from the
    # records of single-objective campaigns, which keep the shape they always had.
    objectives: dict[str, float] | None = None
    outputs: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    # The execution this one re-ran (`expegit rerun`); absent from the records of ordinary executions.
    rerun_of: str | None = None
    # Software and hardware it ran on (orchestra.environment.Environment.to_dict()); absent until captured.
    environment: dict[str, Any] | None = None
    # The binding it got when placed by resources (absent from records of executions that declared none):
    # its cores as a kernel CPU list ("0-3"), the node's GPU ids ("0,1"), the share of each when a
    # fraction, and the address-space limit in bytes.
    cores: str | None = None
    gpus: str | None = None
    gpu_share: float | None = None
    memory_limit: int | None = None
    # When the checkpoint this attempt resumed from was written (ISO UTC); absent when it started afresh.
    resumed_from: str | None = None
    # A pruned execution's step (its metrics' `step` key) where the early stopping rule stopped it; absent
    # from every other record.
    pruned_step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its deep copy is a visible cost when thousands of records are written.
        data = {name: getattr(self, name) for name in _FIELD_NAMES}
        data["parameters"] = dict(self.parameters)
        data["outputs"] = list(self.outputs)
        if self.environment is not None:
            data["environment"] = dict(self.environment)
        if self.objectives is not None:
            data["objectives"] = dict(self.objectives)
        return data

    @classmethod
    def from_checked_dict(cls, data: Mapping[str, Any]) -> "ExecutionRecord":
        """From a dict that from_dict() accepted before (the record cache): no re-validation."""
        return cls(**data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ExecutionRecord":
        """Build a record from parsed YAML, refusing what is not a record (hooks rely on this)."""
        if not isinstance(data, Mapping):
            raise ExecutionError("execution record is not a mapping")
        known = _FIELD_SET
        missing = [k for k in ("id", "campaign", "commit", "command", "parameters", "profile", "state")
                   if k not in data]
        if missing:
            raise ExecutionError(f"execution record lacks {', '.join(missing)}")
        unknown = sorted(set(data) - known)
        if unknown:
            raise ExecutionError(f"execution record has unknown keys {', '.join(unknown)}")
        if not is_execution_id(str(data["id"])):
            raise ExecutionError(f"execution record id {data['id']!r} is not {ID_LENGTH} hex digits")
        if data["state"] not in STATES:
            raise ExecutionError(f"execution record state {data['state']!r} is not one of {', '.join(STATES)}")
        if not re.match(r"^[0-9a-f]{40}$", str(data["commit"])):
            raise ExecutionError(f"execution record commit {data['commit']!r} is not a full commit id")
        if not isinstance(data["parameters"], Mapping):
            raise ExecutionError("execution record parameters are not a mapping")
        values = {k: data[k] for k in known if k in data}
        values["parameters"] = dict(data["parameters"])
        values["outputs"] = list(data.get("outputs") or [])
        if values.get("rerun_of") is not None and not is_execution_id(str(values["rerun_of"])):
            raise ExecutionError(f"execution record rerun_of {values['rerun_of']!r} is not an execution id")
        environment = values.get("environment")
        if environment is not None and not isinstance(environment, Mapping):
            raise ExecutionError("execution record environment is not a mapping")
        if environment is not None:
            values["environment"] = dict(environment)
        objectives = values.get("objectives")
        if objectives is not None:
            if not isinstance(objectives, Mapping) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in objectives.values()):
                raise ExecutionError("execution record objectives are not a mapping of metric to number")
            values["objectives"] = {str(k): float(v) for k, v in objectives.items()}
        return cls(**values)


_FIELD_ORDER = [f.name for f in dataclasses.fields(ExecutionRecord)]
_FIELD_NAMES = tuple(_FIELD_ORDER)
_FIELD_SET = frozenset(_FIELD_ORDER)
# Fields written only when set: records of executions that are no rerun and have no captured environment
# stay byte-identical to what earlier versions wrote (and earlier readers accept them).
_OPTIONAL_FIELDS = frozenset({"rerun_of", "environment", "resumed_from", "objectives", "pruned_step"})
_BINDING_KEYS = frozenset(("cores", "gpus", "gpu_share", "memory_limit"))
_NEEDS_ESCAPE = re.compile(r'[\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff]')
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\0": "\\0"}


def _quote(text: str) -> str:
    """A YAML double-quoted scalar: every control character escaped, printable unicode kept readable."""
    if not _NEEDS_ESCAPE.search(text):
        return '"' + text + '"'
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029\ufeff" \
                or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\\x%02x" % ord(ch) if ord(ch) <= 0xFF else "\\u%04x" % ord(ch))
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        # YAML 1.2 needs a dot or exponent to read a float back as a float ("1e-05" is a string there).
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return _quote(str(value))


def render_record(record: ExecutionRecord) -> str:
    """Block YAML with a fixed key order, so `git diff` between journal commits shows only what changed."""
    data = record.to_dict()
    lines = []
    for key in _FIELD_ORDER:
        value = data[key]
        if key in _OPTIONAL_FIELDS and value is None:
            continue
        if key in ("environment", "objectives"):
            # One line of JSON (valid YAML flow style; ASCII-escaped so no control character survives): the
            # section is nested and free-form, and the fast parser reads it back with json.
            lines.append(f"{key}: " + json.dumps(value, ensure_ascii=True, sort_keys=True, allow_nan=False,
                                                      separators=(", ", ": ")))
            continue
        if key == "parameters":
            if not value:
                lines.append("parameters: {}")
                continue
            lines.append("parameters:")
            for name, pvalue in value.items():
                shown = name if _PLAIN_KEY.match(name) else _quote(name)
                lines.append(f"  {shown}: {render_scalar(pvalue)}")
        elif key == "outputs":
            if not value:
                lines.append("outputs: []")
                continue
            lines.append("outputs:")
            lines.extend(f"  - {_quote(path)}" for path in value)
        elif value is None and key in _BINDING_KEYS:
            continue  # no binding (no `resources:`): the record keeps the shape it always had
        else:
            lines.append(f"{key}: {render_scalar(value)}")
    return "\n".join(lines) + "\n"


_LINE = re.compile(r'^(?:(  )(?:- ("(?:[^"\\]|\\.)*")|([A-Za-z_][A-Za-z0-9_.-]*|"(?:[^"\\]|\\.)*"): (.*))'
                   r'|([a-z_]+):(?: (.*))?)$')
_INT = re.compile(r"^-?[0-9]+$")
_FLOAT = re.compile(r"^-?(?:[0-9]+\.[0-9]*(?:e[-+]?[0-9]+)?|\.(?:nan|inf)|[0-9]+e[-+]?[0-9]+)$")
_UNESCAPE = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "r": "\r", "0": "\0", "/": "/"}


class _NotOurs(Exception):
    """The text is valid YAML perhaps, but not in render_record's shape: use the YAML library."""


def _parse_scalar(text: str) -> Any:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise _NotOurs
        return _unquote(text[1:-1])
    if text == "null":
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return {".nan": math.nan, ".inf": math.inf, "-.inf": -math.inf}.get(text) if text.endswith(("nan", "inf")) \
            else float(text)
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    raise _NotOurs


def _unquote(body: str) -> str:
    if "\\" not in body:
        if '"' in body:
            raise _NotOurs
        return body
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        code = body[i + 1:i + 2]
        if code in _UNESCAPE:
            out.append(_UNESCAPE[code])
            i += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[i + 2:i + 2 + width]
            if len(digits) != width:
                raise _NotOurs
            out.append(chr(int(digits, 16)))
            i += 2 + width
        else:
            raise _NotOurs
    return "".join(out)


def parse_rendered_record(text: str) -> dict[str, Any]:
    """The exact shape render_record() writes, parsed without a YAML library (30x faster); _NotOurs else."""
    data: dict[str, Any] = {}
    block: str | None = None
    for line in text.split("\n"):
        if not line:
            continue
        match = _LINE.match(line)
        if match is None:
            raise _NotOurs
        indent, item, key, value, top, top_value = match.groups()
        if indent:
            if block == "outputs" and item is not None:
                data["outputs"].append(_parse_scalar(item))
            elif block == "parameters" and key is not None:
                name = _parse_scalar(key) if key.startswith('"') else key
                data["parameters"][name] = _parse_scalar(value)
            else:
                raise _NotOurs
            continue
        if top in data:
            raise _NotOurs
        if top_value is None:
            if top not in ("parameters", "outputs"):
                raise _NotOurs
            block = top
            data[top] = {} if top == "parameters" else []
        elif top in ("environment", "objectives") and top_value.startswith("{"):
            block = None
            try:
                data[top] = json.loads(top_value)
            except ValueError:
                raise _NotOurs from None
        else:
            block = None
            data[top] = _parse_scalar(top_value)
    return data


def parse_record(text: str | bytes) -> ExecutionRecord:
    """Parse a record; raise ExecutionError (never a YAML exception) on anything malformed."""
    from .yamlio import load_plain  # local: keeps ruamel out of import paths that never parse

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ExecutionError(f"execution record is not UTF-8: {exc}")
    try:
        return ExecutionRecord.from_dict(parse_rendered_record(text))
    except _NotOurs:
        pass  # edited by hand or by another tool: any valid YAML is fine
    try:
        data = load_plain(text)
    except Exception as exc:  # ruamel raises many unrelated classes; callers need one
        raise ExecutionError(f"execution record is not valid YAML: {exc}".splitlines()[0]) from exc
    return ExecutionRecord.from_dict(data)
