"""The library behind the standalone ``runaway`` CLI: run a directory's code on a profile without a campaign.

``runaway exec`` ships the current directory (a git repository's HEAD via ``git archive``, or a plain
directory as a tar stream), runs one command on one slot of a profile, streams its output live, and brings
the files it created or changed back. ``runaway batch`` does the same for one command per line of a
parameter file (``runaway test``, which checks a profile step by step, is runaway/check.py). Why a
library module: the CLI stays thin (parse, call one function here, map errors), and tests drive these
functions directly.

Both ``exec`` and ``batch`` go through :class:`runaway.controller.Controller`, the same slot placement,
retries and collection as ``expegit run``; only the listener differs (files on disk instead of commits).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import gevent

from orchestra.errors import (EXIT_EXECUTIONS_FAILED, EXIT_INTERRUPTED, ExecutionError, OrchestraError,
                              ProfileError, UsageError)
from orchestra.manifest import RetryPolicy
from orchestra.quoting import render_command
from orchestra.resources import Request
from orchestra.resources import resolve as resolve_resources

from .backend import Backend, Job, RunHandle
from .controller import AttemptResult, Controller, Task
from .factory import make_backend
from .profiles import Profile, resolve_profile

MANIFEST = "orchestra.yaml"
DEFAULT_RETRY = RetryPolicy(max=2, on=("node-failure", "walltime"), backoff=1.0)
_FORMATTER = string.Formatter()


# --------------------------------------------------------------------------------------- profiles
def find_manifest(start: Path) -> Path | None:
    """The nearest orchestra.yaml in ``start`` or its parents (stopping at a repository's top)."""
    for directory in [start, *start.parents]:
        candidate = directory / MANIFEST
        if candidate.is_file():
            return candidate
        if (directory / ".git").exists():
            return None
    return None


def load_profile(name: str, cwd: Path) -> Profile:
    """Resolved like expegit's: the manifest's shared profile (if any) with the personal file over it."""
    shared: dict[str, Any] = {}
    manifest = find_manifest(cwd)
    if manifest is not None:
        from orchestra.yamlio import load_plain

        try:
            data = load_plain(manifest.read_text("utf-8"))
        except Exception as exc:  # ruamel raises many classes
            raise ProfileError(f"{manifest}: not valid YAML: {str(exc).splitlines()[0]}") from None
        if isinstance(data, dict) and isinstance(data.get("profiles"), dict):
            shared = dict(data["profiles"])
    return resolve_profile(name, shared)


# ------------------------------------------------------------------------------------------- code
@dataclasses.dataclass
class Shipment:
    """The code to ship: an uncompressed tar, the id it is cached under remotely, and what it holds."""

    commit: str  # a git commit, or the sha256 of the tar of a plain directory
    tar: bytes
    digests: dict[str, str]  # member path -> sha256 of its content (to tell results from shipped code)
    prefix: str = ""  # the current directory inside the repository ("" at its top)
    source: str = ""

    def archive(self, commit: str) -> Iterator[bytes]:
        for start in range(0, len(self.tar), 1 << 16):
            yield self.tar[start:start + (1 << 16)]


def _digests(tar_bytes: bytes) -> dict[str, str]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                out[member.name.lstrip("./") if member.name.startswith("./") else member.name] = \
                    hashlib.sha256(handle.read() if handle else b"").hexdigest()
    return out


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)


def ship_directory(cwd: Path, *, warn: Callable[[str], None] = lambda s: None,
                   exclude: Iterable[Path] = ()) -> Shipment:
    """A git work tree ships its HEAD commit (``git archive``); any other directory ships as it is."""
    inside = _git(cwd, "rev-parse", "--is-inside-work-tree")
    if inside.returncode == 0 and inside.stdout.strip() == b"true":
        head = _git(cwd, "rev-parse", "--verify", "-q", "HEAD^{commit}")
        if head.returncode != 0:
            raise UsageError(f"{cwd} is a git repository without a commit",
                             hint="commit your code first (runaway ships HEAD)")
        commit = head.stdout.decode().strip()
        prefix = _git(cwd, "rev-parse", "--show-prefix").stdout.decode().strip()
        top = _git(cwd, "rev-parse", "--show-toplevel").stdout.decode().strip()
        dirty = _git(cwd, "status", "--porcelain", "--untracked-files=no").stdout.decode().strip()
        if dirty:
            warn(f"uncommitted changes are not shipped (runaway runs HEAD {commit[:12]}): "
                 f"{', '.join(line[3:] for line in dirty.splitlines()[:5])}")
        result = subprocess.run(["git", "archive", "--format=tar", commit], cwd=top, capture_output=True)
        if result.returncode != 0:
            raise ExecutionError(f"git archive {commit[:12]} failed: {result.stderr.decode(errors='replace')[-300:]}")
        return Shipment(commit, result.stdout, _digests(result.stdout), prefix, f"git commit {commit[:12]}")
    skip = {p.resolve() for p in exclude}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for root, dirs, files in os.walk(cwd):
            dirs[:] = sorted(d for d in dirs if (Path(root) / d).resolve() not in skip and d != ".orchestra")
            for name in sorted(dirs) + sorted(files):
                path = Path(root) / name
                rel = path.relative_to(cwd).as_posix()
                info = tar.gettarinfo(str(path), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0  # the cache key depends on content, not on when files were touched
                if info.isfile():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                elif info.isdir() or info.issym():
                    tar.addfile(info)
    data = buf.getvalue()
    return Shipment(hashlib.sha256(data).hexdigest(), data, _digests(data), "", f"directory {cwd}")


# ---------------------------------------------------------------------------------------- commands
def command_line(words: Sequence[str]) -> str:
    """One word is a shell command line (like ssh); several are argv words, each quoted."""
    if not words:
        raise UsageError("no command given", hint="put the command after --, e.g. runaway exec P -- python train.py")
    return words[0] if len(words) == 1 else shlex.join(words)


def command_template(words: Sequence[str]) -> str:
    """Like command_line, but ``{name}`` placeholders stay unquoted so render_command quotes their values."""
    if not words:
        raise UsageError("no command given", hint="put the command after --, e.g. runaway batch P --params F -- python t.py {lr}")
    if len(words) == 1:
        return words[0]
    out = []
    for word in words:
        try:
            parts = list(_FORMATTER.parse(word))
        except ValueError as exc:
            raise UsageError(f"bad placeholder in {word!r}: {exc}") from None
        piece = []
        for literal, field, spec, _conversion in parts:
            if literal:
                piece.append(shlex.quote(literal).replace("{", "{{").replace("}", "}}"))
            if field is not None:
                piece.append("{" + field + (":" + spec if spec else "") + "}")
        out.append("".join(piece) or "''")
    return " ".join(out)


def parse_params_file(text: str, template: str, source: str = "params") -> list[dict[str, str]]:
    """One mapping per non-empty, non-comment line of ``name=value`` words (shell-style quoting)."""
    names = {field for _l, field, _s, _c in _FORMATTER.parse(template) if field}
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{source}:{number}: {exc}") from None
        values: dict[str, str] = {}
        for word in words:
            if "=" not in word:
                raise UsageError(f"{source}:{number}: {word!r} is not NAME=VALUE")
            key, value = word.split("=", 1)
            if key not in names:
                raise UsageError(f"{source}:{number}: the command has no placeholder {{{key}}}",
                                 hint=f"placeholders: {', '.join(sorted(names)) or 'none'}")
            values[key] = value
        missing = sorted(names - set(values))
        if missing:
            raise UsageError(f"{source}:{number}: no value for {{{missing[0]}}}")
        lines.append(values)
    if not lines:
        raise UsageError(f"{source}: no parameter lines")
    return lines


def line_dir_name(index: int, values: dict[str, str]) -> str:
    slug = ",".join(f"{k}={v}" for k, v in values.items())
    slug = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", slug)[:80].strip("._") or "run"
    return f"{index:03d}-{slug}"


# -------------------------------------------------------------------------------------- streaming
class _Tail:
    """Follows an execution's stdout/stderr while it runs: a small read per interval, never the whole file."""

    def __init__(self, backend: Backend, handle: RunHandle, out: TextIO, err: TextIO, interval: float = 0.3):
        self.backend, self.handle, self.out, self.err, self.interval = backend, handle, out, err, interval
        self.offsets = [0, 0]
        self._greenlet = gevent.spawn(self._loop)

    def _read(self) -> tuple[bytes, bytes]:
        return self.backend.read_output(self.handle, (self.offsets[0], self.offsets[1]))

    def _emit(self, out: bytes, err: bytes) -> None:
        for data, stream, index in ((out, self.out, 0), (err, self.err, 1)):
            if data:
                self.offsets[index] += len(data)
                target = getattr(stream, "buffer", None)
                if target is not None:
                    stream.flush()
                    target.write(data)
                    target.flush()
                else:
                    stream.write(data.decode("utf-8", "replace"))
                    stream.flush()

    def _loop(self) -> None:
        while True:
            try:
                self._emit(*self._read())
            except gevent.GreenletExit:
                raise
            except Exception:  # a dropped connection: the final flush from the collected files catches up
                pass
            gevent.sleep(self.interval)

    def finish(self, stdout: Path | None, stderr: Path | None) -> None:
        """Stop following and print the rest from the collected files (exact, whatever the polls missed)."""
        self._greenlet.kill(block=True)
        rest = []
        for path, offset in ((stdout, self.offsets[0]), (stderr, self.offsets[1])):
            data = b""
            if path is not None and path.exists():
                with path.open("rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            rest.append(data)
        self._emit(rest[0], rest[1])

    def stop(self) -> None:
        self._greenlet.kill(block=False)


# ----------------------------------------------------------------------------------------- results
def copy_results(collected_dir: Path, outputs: list[str], dest: Path, shipped: dict[str, str],
                 prefix: str = "") -> list[str]:
    """Copy the files the run created or changed (not the shipped code as it was) into ``dest``."""
    copied = []
    for rel in outputs:
        if rel.split("/", 1)[0] == ".orchestra":
            continue
        src = collected_dir / rel
        if not src.is_file() or src.is_symlink():
            continue
        with src.open("rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        if shipped.get(prefix + rel) == digest:
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        copied.append(rel)
    return copied


@dataclasses.dataclass
class LineResult:
    index: int
    values: dict[str, str]
    execution_id: str
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 1
    files: list[str] = dataclasses.field(default_factory=list)
    node: str | None = None
    duration: float | None = None


class _FilesListener:
    """The controller's listener for runaway: results become files in a directory, not commits."""

    def __init__(self, backend: Backend, shipment: Shipment, dests: dict[str, Path], lines: dict[str, LineResult],
                 *, stream: bool, keep_logs: bool, out: TextIO, err: TextIO, say: Callable[[str], None]) -> None:
        self.backend, self.shipment, self.dests, self.lines = backend, shipment, dests, lines
        self.stream, self.keep_logs, self.out, self.err, self.say = stream, keep_logs, out, err, say
        self.tails: dict[str, _Tail] = {}

    def launched(self, task: Task, handle: RunHandle, attempt: int) -> None:
        line = self.lines[task.job.execution_id]
        line.node = handle.slot.node or handle.slot.host
        if self.stream:
            self.tails[task.job.execution_id] = _Tail(self.backend, handle, self.out, self.err)

    def _finish_tail(self, execution_id: str, result: AttemptResult) -> None:
        tail = self.tails.pop(execution_id, None)
        if tail is not None:
            collected = result.collected.materialized() if result.collected else None
            tail.finish(collected.stdout if collected else None, collected.stderr if collected else None)

    def attempt_failed(self, task: Task, result: AttemptResult, will_retry: bool) -> None:
        self._finish_tail(task.job.execution_id, result)
        self.say(f"attempt {task.attempt} of {task.job.execution_id} lost "
                 f"({result.outcome.error or result.failure}); retrying")

    def finished(self, task: Task, result: AttemptResult) -> None:
        eid = task.job.execution_id
        self._finish_tail(eid, result)
        line = self.lines[eid]
        outcome = result.outcome
        line.exit_code = outcome.exit_code
        line.attempts = task.attempt
        if outcome.started is not None and outcome.ended is not None:
            line.duration = max(0.0, outcome.ended - outcome.started)
        if result.failure == "timeout":
            line.error = outcome.error or "timed out"
        elif result.failure in ("node-failure", "walltime"):
            line.error = outcome.error or "the node running it was lost"
        dest = self.dests[eid]
        dest.mkdir(parents=True, exist_ok=True)
        collected = result.collected.materialized() if result.collected else None
        if collected is not None:
            prefix = self.shipment.prefix
            outputs = [o[len(prefix):] if prefix and o.startswith(prefix) else o for o in collected.outputs]
            base = collected.directory / prefix if prefix else collected.directory
            line.files = copy_results(base, outputs, dest, self.shipment.digests, prefix)
            if self.keep_logs:
                shutil.copyfile(collected.stdout, dest / "stdout")
                shutil.copyfile(collected.stderr, dest / "stderr")
                (dest / "exit_code").write_text(f"{outcome.exit_code if outcome.exit_code is not None else ''}\n")

    def cancelled(self, task: Task, handle: RunHandle | None) -> None:
        tail = self.tails.pop(task.job.execution_id, None)
        if tail is not None:
            tail.stop()
        self.lines[task.job.execution_id].error = "cancelled"


def _run(profile: Profile, shipment: Shipment, jobs: list[tuple[Job, Path, LineResult]], *, stream: bool,
         keep_logs: bool, out: TextIO, err: TextIO, slots: int | None, retry: RetryPolicy) -> bool:
    """Drive the jobs to the end; False if interrupted."""
    backend = make_backend(profile, slots=slots)
    packing = any(job.resources is not None for job, _dest, _line in jobs)
    if packing:  # --cpus / --gpus / --memory: refused here when no node can run them, before anything starts
        try:
            backend.check_requests(list({job.resources for job, _dest, _line in jobs if job.resources}))
        except BaseException:
            backend.close()
            raise
    lines = {job.execution_id: line for job, _dest, line in jobs}
    dests = {job.execution_id: dest for job, dest, _line in jobs}

    def say(text: str) -> None:
        print(f"runaway: {text}", file=err, flush=True)

    listener = _FilesListener(backend, shipment, dests, lines, stream=stream, keep_logs=keep_logs, out=out,
                              err=err, say=say)
    staging = Path(tempfile.mkdtemp(prefix="runaway-staging-"))
    controller = Controller(backend, listener, shipment.archive, retry=retry, staging=staging, packing=packing)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            say("interrupted: stopping the execution(s)")
            controller.stop()

    handlers = [gevent.signal_handler(signal.SIGINT, interrupt), gevent.signal_handler(signal.SIGTERM, interrupt)]
    try:
        backend.start()
        controller.run(Task(job) for job, _dest, _line in jobs)
    finally:
        for handler in handlers:
            handler.cancel()
        for tail in listener.tails.values():
            tail.stop()
        try:
            backend.close()
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    for execution_id, exc in controller.errors:
        if isinstance(exc, OrchestraError) and len(jobs) == 1:
            raise exc
        lines[execution_id].error = str(exc)
    return not interrupted


def _job(commit: str, command: str, prefix: str, outputs: tuple[str, ...], timeout: float | None,
         env: dict[str, str], resources: Request | None = None) -> Job:
    if prefix:
        command = f"cd {shlex.quote(prefix)} && {command}"
        outputs = tuple(prefix + o for o in outputs)
    return Job(execution_id=uuid.uuid4().hex[:12], commit=commit, command=command, outputs=outputs,
               timeout=timeout, env=env, resources=resources)


def request_of(resources: Mapping[str, Any] | None, values: Mapping[str, str] | None = None) -> Request | None:
    """`--cpus/--gpus/--memory` as a request (a batch line's values fill placeholders like "{n_gpus}")."""
    if not resources:
        return None
    try:
        return resolve_resources(resources, values or {})
    except ValueError as exc:
        raise UsageError(f"--{str(exc).removeprefix('resources.')}") from None


def exec_command(profile_name: str, words: Sequence[str], *, cwd: Path, results: Path | None = None,
                 outputs: Sequence[str] = (), timeout: float | None = None, env: dict[str, str] | None = None,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                 resources: Mapping[str, Any] | None = None) -> int:
    """``runaway exec``: returns the remote command's exit code."""
    request = request_of(resources)
    profile = load_profile(profile_name, cwd)
    command = command_line(words)
    shipment = ship_directory(cwd, warn=lambda s: print(f"runaway: warning: {s}", file=err),
                              exclude=[results] if results else [])
    dest = results if results is not None else cwd
    job = _job(shipment.commit, command, shipment.prefix, tuple(outputs) or ("**",), timeout,
               {**(env or {}), "ORCHESTRA_RUNAWAY": "exec"}, request)
    line = LineResult(0, {}, job.execution_id)
    if not _run(profile, shipment, [(job, dest, line)], stream=True, keep_logs=False, out=out, err=err,
                slots=None, retry=DEFAULT_RETRY):
        return EXIT_INTERRUPTED
    if line.files:
        print(f"runaway: {len(line.files)} file(s) brought back into {dest}: {', '.join(line.files[:8])}"
              f"{' ...' if len(line.files) > 8 else ''}", file=err)
    if line.error and line.exit_code is None:
        raise ExecutionError(f"{profile_name}: {line.error}")
    if line.error:
        print(f"runaway: {line.error}", file=err)
    return line.exit_code if line.exit_code is not None else 1


def batch_command(profile_name: str, words: Sequence[str], params_file: Path, *, cwd: Path,
                  results: Path | None = None, outputs: Sequence[str] = (), timeout: float | None = None,
                  slots: int | None = None, env: dict[str, str] | None = None, out: TextIO = sys.stdout,
                  err: TextIO = sys.stderr, resources: Mapping[str, Any] | None = None) -> int:
    """``runaway batch``: one execution per parameter line; results in per-line directories."""
    template = command_template(words)
    try:
        text = params_file.read_text("utf-8") if str(params_file) != "-" else sys.stdin.read()
    except OSError as exc:
        raise UsageError(f"{params_file}: cannot read: {exc.strerror}") from None
    lines = parse_params_file(text, template, str(params_file))
    profile = load_profile(profile_name, cwd)
    results = results if results is not None else cwd / "runaway-results"
    shipment = ship_directory(cwd, warn=lambda s: print(f"runaway: warning: {s}", file=err), exclude=[results])
    jobs = []
    for index, values in enumerate(lines, 1):
        try:
            command = render_command(template, values)  # quoted for where each {name} stands, or refused
        except ValueError as exc:
            raise UsageError(f"command: {exc}", hint=getattr(exc, "hint", None)) from None
        job = _job(shipment.commit, command, shipment.prefix, tuple(outputs) or ("**",), timeout,
                   {**(env or {}), "ORCHESTRA_RUNAWAY": "batch", "RUNAWAY_LINE": str(index)},
                   request_of(resources, values))
        jobs.append((job, results / line_dir_name(index, values), LineResult(index, values, job.execution_id)))
    started = time.monotonic()
    completed = _run(profile, shipment, jobs, stream=False, keep_logs=True, out=out, err=err, slots=slots,
                     retry=DEFAULT_RETRY)
    failed = 0
    for job, dest, line in jobs:
        ok = line.exit_code == 0 and not line.error
        failed += not ok
        state = "ok" if ok else ("error" if line.exit_code is None else f"exit {line.exit_code}")
        extra = f" ({line.error})" if line.error else ""
        extra += f" after {line.attempts} attempts" if line.attempts > 1 else ""
        print(f"{state:8} {dest.name}{extra}", file=out)
    print(f"runaway: {len(jobs)} executions in {time.monotonic() - started:.1f}s: {len(jobs) - failed} ok, "
          f"{failed} failed; results in {results}", file=err)
    if not completed:
        return EXIT_INTERRUPTED
    return EXIT_EXECUTIONS_FAILED if failed else 0


__all__ = ["batch_command", "command_line", "command_template", "exec_command", "load_profile",
           "parse_params_file", "ship_directory"]
