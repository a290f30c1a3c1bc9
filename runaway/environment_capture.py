"""Environment capture: which executions carry the probe, and what their results tell.

Why through the execution's own command and not a separate remote call: the probe must run where the
execution runs, with its PATH and binding, and every launcher (local, agent, shell, srun, PBS/OAR templates)
already runs the command there; a separate call would need one more way to reach a Slurm node per launcher.

Why per (host, node, commit) and only while unknown: listing packages costs hundreds of milliseconds. Only
the first execution launched on a node at a commit carries the probe (and the probe caches on the node, so
the next run at that commit reads it back); every later execution costs a dict lookup. Values of the manifest's ``record_env`` change per execution (binding, job id), so they are read by
shell builtins in each execution's own environment, after binding, into ``.orchestra/env_vars``.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gevent.event

from orchestra.environment import CONDA_EXPORT_PATH, PIP_FREEZE_PATH, Environment, Gpu
from orchestra.quoting import quote_word as quote

from .backend import Collected, Job, Slot

CAPTURE_FILE = ".orchestra/environment"   # the probe's output, in the run directory
ENV_VARS_FILE = ".orchestra/env_vars"     # record_env's values, in the run directory
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ASKS = 3  # probed executions that told nothing before a key is given up on (no python on that node)
# Executions with a shorter timeout carry no probe: one that ends before the probe waits for it, and a
# cold node's package listing can take a few seconds under load (render_probed).
PROBE_MIN_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Capture:
    """One node's capture: the record's summary and the texts stored as blobs on the branch."""

    environment: Environment
    pip_freeze: str | None = None
    conda_export: str | None = None
    error: str | None = None
    _blobs: dict[str, bytes] | None = dataclasses.field(default=None, compare=False, repr=False)
    _summary: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    def blobs(self) -> dict[str, bytes]:
        """Branch path -> bytes of the texts kept as blobs (the same bytes object every time: one hash)."""
        if self._blobs is None:
            out = {}
            if self.pip_freeze is not None:
                out[PIP_FREEZE_PATH] = self.pip_freeze.encode("utf-8")
            if self.conda_export is not None:
                out[CONDA_EXPORT_PATH] = self.conda_export.encode("utf-8")
            object.__setattr__(self, "_blobs", out)
        return self._blobs  # type: ignore[return-value]


def parse_capture(text: str) -> Capture | None:
    """The probe's JSON (runaway/agent/environment_probe.render); None for nothing or garbage."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None

    def text_of(key: str) -> str | None:
        value = data.get(key)
        return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None

    def int_of(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    gpus = []
    for item in data.get("gpus") or ():
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            memory = item.get("memory_mib")
            gpus.append(Gpu(name=item["name"], memory_mib=memory if isinstance(memory, int) else None,
                            uuid=item["uuid"] if isinstance(item.get("uuid"), str) else None))
    modules = tuple(str(m) for m in data.get("modules") or () if isinstance(m, str))
    env = Environment(os=text_of("os"), kernel=text_of("kernel"), cpu=text_of("cpu"), cores=int_of("cores"),
                      memory=int_of("memory"), gpus=tuple(gpus), driver=text_of("driver"), cuda=text_of("cuda"),
                      python=text_of("python"), modules=modules)
    freeze, conda = data.get("pip_freeze"), data.get("conda_export")
    return Capture(env, freeze if isinstance(freeze, str) else None, conda if isinstance(conda, str) else None,
                   text_of("error"))


def _probe_source() -> str:
    return (Path(__file__).parent / "agent" / "environment_probe.py").read_text(encoding="utf-8")


_PREFIX: list[str] = []


def render_probe_prefix(commit: str) -> str:
    """Shell that starts the probe with the python on PATH (python3, else python) into CAPTURE_FILE, in the
    background: see render_probed for why.

    Inline (zlib + base64: ~3 KB) so that nothing is shipped beforehand; output and errors never reach the
    execution's stdout/stderr, and its exit status never matters (the command's is the wrapper's)."""
    if not _PREFIX:
        packed = base64.b64encode(zlib.compress(_probe_source().encode("utf-8"), 9)).decode("ascii")
        _PREFIX.append(f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))")
    code = quote(_PREFIX[0])
    return (f"{{ python3 -c {code} {quote(commit)} || python -c {code} {quote(commit)}; }} "
            f">{CAPTURE_FILE} 2>/dev/null </dev/null & __orchestra_probe=$!; ")


# After the command, on a line of its own (a command ending in a `# comment` cannot swallow it): wait for
# the probe and leave with the command's status, which the wrapper's EXIT trap then writes. Builtins only.
PROBE_SUFFIX = "\n__orchestra_rc=$?; wait $__orchestra_probe 2>/dev/null; exit $__orchestra_rc"


def render_probed(command: str, commit: str) -> str:
    """``command`` carrying the probe. Why beside the command and not before it: run in front, the probe's
    second of package listing on a cold node counted against the execution's own timeout and duration (an
    execution with `timeout: 1s` was killed by it). Beside it, a command that runs longer than the probe
    pays nothing; a shorter one waits for the probe at its end, which is why executions with a timeout
    under PROBE_MIN_TIMEOUT never carry it (EnvironmentCapture.prepare)."""
    return render_probe_prefix(commit) + command + PROBE_SUFFIX


def strip_prefixes(command: str, commit: str) -> str:
    """The command without the probe and record_env prefixes (for the fake backend, which runs no shell)."""
    probe = render_probe_prefix(commit)
    if command.startswith(probe) and command.endswith(PROBE_SUFFIX):
        command = command[len(probe):-len(PROBE_SUFFIX)]
    end = f">{ENV_VARS_FILE} 2>/dev/null; "
    if command.startswith("{ [ -z ") and end in command:
        command = command[command.index(end) + len(end):]
    return command


def check_record_env(names: Sequence[str]) -> None:
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"record_env: {name!r} is not an environment variable name")


def render_record_env(names: Sequence[str]) -> str:
    """Shell builtins only (no process per execution) writing ``NAME=value`` lines of the set ones."""
    check_record_env(names)
    if not names:
        return ""
    parts = " ".join(f'[ -z "${{{n}+x}}" ] || printf \'{n}=%s\\n\' "${n}";' for n in names)
    return f"{{ {parts} }} >{ENV_VARS_FILE} 2>/dev/null; "


def parse_env_vars(text: str, names: Sequence[str]) -> dict[str, str]:
    """What render_record_env wrote: a line that starts no ``NAME=`` of ``names`` continues the value
    before it (a value with a newline)."""
    wanted = set(names)
    out: dict[str, str] = {}
    last: str | None = None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name in wanted and name not in out:
            out[name] = value
            last = name
        elif last is not None:
            out[last] += "\n" + line
    return out


Key = tuple[str, "str | None", str]


class EnvironmentCapture:
    """The controller's memory of captures by (host, node, commit), for one run.

    One probe in flight per key: every execution that carries it waits for the interpreter to start
    (tens of milliseconds, a second on a loaded machine), so the others of a first wave run bare and, once
    ended and their slot given back, wait for the probing one's capture (at most ``wait`` seconds: then
    they are recorded without it, and the next launch carries a probe of its own)."""

    def __init__(self, enabled: bool = True, wait: float = 30.0) -> None:
        self.enabled = enabled
        self.wait = wait
        self._known: dict[Key, Capture] = {}
        self._failed: dict[Key, int] = {}
        self._inflight: dict[Key, gevent.event.Event] = {}

    @staticmethod
    def key(slot: Slot, commit: str) -> Key:
        return (slot.host, slot.node, commit)

    def prepare(self, job: Job, slot: Slot) -> Job:
        """The job to launch: with the probe in front when this node's capture is unknown and no execution
        launched before is already getting it."""
        key = self.key(slot, job.commit)
        if (not self.enabled or key in self._known or key in self._inflight
                or self._failed.get(key, 0) >= _ASKS):
            return job
        if job.timeout is not None and job.timeout < PROBE_MIN_TIMEOUT:
            return job
        self._inflight[key] = gevent.event.Event()
        return dataclasses.replace(job, command=render_probed(job.command, job.commit))

    def absorb(self, slot: Slot, job: Job, collected: Collected | None, probed: bool) -> Capture | None:
        """The capture for this execution's node: read from its results when it ran the probe (a file left
        in a recycled run directory by another execution is never trusted), else remembered or awaited."""
        key = self.key(slot, job.commit)
        if probed:
            if key not in self._known:
                data = collected.read(CAPTURE_FILE) if collected is not None else None
                capture = parse_capture(data.decode("utf-8", "replace")) if data else None
                if capture is not None and capture.error is None:
                    self._known[key] = capture
                elif collected is not None:  # it ran and said nothing useful (no python there?): count it
                    self._failed[key] = self._failed.get(key, 0) + 1
            done = self._inflight.pop(key, None)
            if done is not None:
                done.set()
        elif key not in self._known and key in self._inflight:
            pending = self._inflight[key]
            if not pending.wait(self.wait) and self._inflight.get(key) is pending:
                del self._inflight[key]  # a long one: let the next launch probe for itself
                pending.set()
        return self._known.get(key)


def record_vars(collected: Collected | None, names: Sequence[str]) -> dict[str, str]:
    if not names or collected is None:
        return {}
    data = collected.read(ENV_VARS_FILE)
    return parse_env_vars(data.decode("utf-8", "replace"), names) if data else {}


def git_blob_id(data: bytes) -> str:
    """The id git gives ``data`` as a blob: the record names the branch's blob without reading it back."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def summary_of(capture: Capture | None, variables: Mapping[str, str]) -> dict[str, Any]:
    """The record's ``environment`` section (Environment.to_dict()) with this execution's variables.

    The node's part is computed once per capture (blob ids hash the texts): per execution, a dict copy."""
    if capture is None:
        return Environment(vars=dict(variables)).to_dict()
    if capture._summary is None:
        blobs = capture.blobs()
        env = dataclasses.replace(
            capture.environment,
            packages_blob=git_blob_id(blobs[PIP_FREEZE_PATH]) if PIP_FREEZE_PATH in blobs else None,
            conda_blob=git_blob_id(blobs[CONDA_EXPORT_PATH]) if CONDA_EXPORT_PATH in blobs else None)
        object.__setattr__(capture, "_summary", env.to_dict())
    out = dict(capture._summary)  # type: ignore[arg-type]
    if variables:
        out["vars"] = dict(variables)
    return out
