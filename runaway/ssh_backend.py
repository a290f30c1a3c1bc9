"""The ``ssh`` backend: executions run detached on hosts reached by SSH, watched with one poll per host.

Remote layout (shared with the local backend through :mod:`runaway.rundir`)::

    <workdir>/code/<commit>/          shipped once per host per commit (tar stream, atomic rename)
    <workdir>/runs/<id>/              a copy of the code; the execution runs here
    <workdir>/runs/<id>/.orchestra/   pid, started, stdout, stderr, exit_code (written last)

Why this shape: an execution must survive a dropped SSH connection and a dead controller, so it is
started with ``setsid nohup`` and leaves its whole story in files; the controller only *reads* those
files, with ONE poll command per host per interval, however many executions run there. Results come
back as one tar stream per execution, checksummed on the remote side and extracted defensively here.

:class:`RemoteRuns` is the per-host machinery; the slurm backend reuses it with a different launcher.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import shlex
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import gevent
import gevent.event
import gevent.lock
import gevent.queue

from orchestra.errors import ConnectionError_, ExecutionError, ProfileError

from .backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from .hosts import Host, RemoteCommandError
from .profiles import SSHHostConfig, SSHProfile
from .rundir import EXIT_FILE, MARKER, META_DIR, PID_FILE, STDERR_FILE, STDOUT_FILE, WRAPPER

log = logging.getLogger(__name__)

LAUNCHER_PID_FILE = f"{META_DIR}/launcher_pid"
STARTED_FILE = f"{META_DIR}/started"
STOP_GRACE = 5.0
_TRAILER_RE = re.compile(rb"\nORCHESTRA-SHA256 ([0-9a-f]{64}) (\d{20})\n$")
_TRAILER_LEN = len(b"\nORCHESTRA-SHA256 ") + 64 + 1 + 20 + 1
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{4,64}$")

# Runs on the remote host with its python3: globbing there means user globs never reach a shell, and the
# sha256 of the exact bytes sent lets the receiver detect a truncated or corrupted stream.
_COLLECT_PY = r'''
import glob, hashlib, os, sys, tarfile
os.chdir(sys.argv[1])
class Out:
    def __init__(self):
        self.h = hashlib.sha256(); self.n = 0; self.o = sys.stdout.buffer
    def write(self, b):
        self.h.update(b); self.n += len(b); self.o.write(b); return len(b)
    def flush(self):
        self.o.flush()
def linked(path):
    parts = path.split(os.sep)
    return any(os.path.islink(os.sep.join(parts[:i])) for i in range(1, len(parts) + 1))
out = Out()
tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
for name in (".orchestra/stdout", ".orchestra/stderr"):
    if os.path.isfile(name) and not os.path.islink(name):
        tar.add(name, recursive=False)
seen = set()
def add(path):
    if path in seen or linked(path):
        return
    seen.add(path)
    if os.path.isfile(path):
        tar.add(path, recursive=False)
    elif os.path.isdir(path):
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
            for f in sorted(files):
                add(os.path.normpath(os.path.join(root, f)))
for pattern in sys.argv[2:]:
    for match in sorted(glob.glob(pattern, recursive=True)):
        match = os.path.normpath(match)
        if match.startswith("..") or os.path.isabs(match) or match.split(os.sep)[0] == ".orchestra":
            continue
        add(match)
tar.close()
out.flush()
sys.stdout.buffer.write(b"\nORCHESTRA-SHA256 %s %020d\n" % (out.h.hexdigest().encode(), out.n))
sys.stdout.buffer.flush()
'''

# One poll for all of a host's watched run directories (given on stdin, one per line).
# done<TAB>dir<TAB>code<TAB>ended | gone<TAB>dir | dead<TAB>dir   (nothing: still running)
_POLL_SH = r'''
pidfile=$1; marker=$2
while IFS= read -r d; do
  [ -n "$d" ] || continue
  if [ -s "$d/.orchestra/exit_code" ]; then
    printf 'done\t%s\t%s\t%s\n' "$d" "$(cat "$d/.orchestra/exit_code")" "$(date -r "$d/.orchestra/exit_code" +%s.%N 2>/dev/null)"
  elif [ ! -d "$d" ]; then
    printf 'gone\t%s\n' "$d"
  else
    p=$(cat "$d/$pidfile" 2>/dev/null)
    if [ -n "$p" ]; then
      if ! kill -0 "$p" 2>/dev/null || { [ -r /proc/$p/cmdline ] && ! grep -qa -- "$marker" /proc/$p/cmdline; }; then
        [ -s "$d/.orchestra/exit_code" ] || printf 'dead\t%s\n' "$d"
      fi
    fi
  fi
done
'''


def q(text: str) -> str:
    return shlex.quote(text)


# ----------------------------------------------------------------------------------------- extraction
def check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse a tar member that could write outside ``dest``: absolute or ``..`` paths, links leaving it,
    devices. Why explicit checks on top of tarfile's ``data`` filter: clear errors naming the member."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ExecutionError(f"refusing archive member with an absolute path: {name!r}")
    if ".." in path.parts:
        raise ExecutionError(f"refusing archive member with '..': {name!r}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ExecutionError(f"refusing archive member that is not a file, directory or link: {name!r}")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/") or PurePosixPath(target).is_absolute():
            raise ExecutionError(f"refusing link {name!r} to an absolute path {target!r}")
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath(".")
        resolved = os.path.normpath(os.path.join(str(dest), str(base), target))
        root = os.path.normpath(str(dest))
        if resolved != root and not resolved.startswith(root + os.sep):
            raise ExecutionError(f"refusing link {name!r} -> {target!r}: it leaves the directory")


def safe_extract(fileobj: BinaryIO, dest: Path) -> list[str]:
    """Extract a tar (read sequentially) into ``dest``; return the regular files' relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            check_member(member, dest)
            tar.extract(member, dest, filter="data")
            if member.isfile():
                files.append(PurePosixPath(member.name).as_posix())
    return sorted(set(files))


def _split_trailer(path: Path) -> tuple[int, str]:
    """Strip the checksum trailer off a received stream file; return (payload size, sha256)."""
    size = path.stat().st_size
    if size < _TRAILER_LEN:
        raise ExecutionError("collect stream truncated: no checksum trailer")
    with path.open("rb+") as handle:
        handle.seek(size - _TRAILER_LEN)
        match = _TRAILER_RE.search(handle.read())
        if not match:
            raise ExecutionError("collect stream corrupted: bad checksum trailer")
        handle.truncate(size - _TRAILER_LEN)
    return int(match.group(2)), match.group(1).decode()


# ------------------------------------------------------------------------------------------- slots
class SlotPool:
    """Free slots as a queue; slots re-attached after a restart are marked taken without a get()."""

    def __init__(self) -> None:
        self._free: gevent.queue.Queue[Slot] = gevent.queue.Queue()
        self._claimed: set[Slot] = set()
        self._retired: set[Slot] = set()

    def add(self, slot: Slot) -> None:
        self._retired.discard(slot)
        self._free.put(slot)

    def retire(self, slot: Slot) -> None:
        """Forget a slot (its node's allocation ended): it is skipped when dequeued, never re-added."""
        self._retired.add(slot)

    def claim(self, slot: Slot) -> None:
        self._claimed.add(slot)

    def acquire(self, timeout: float | None = None) -> Slot:
        while True:
            slot = self._free.get(timeout=timeout)
            if slot in self._claimed:
                self._claimed.discard(slot)
                continue
            if slot in self._retired:
                continue
            return slot

    def release(self, slot: Slot) -> None:
        if slot not in self._retired:
            self._free.put(slot)

    def free_count(self) -> int:
        return self._free.qsize()


# --------------------------------------------------------------------------------------- per host
@dataclasses.dataclass
class _Watch:
    remote_dir: str
    result: gevent.event.AsyncResult
    dead_seen: int = 0


class RemoteRuns:
    """Code cache, run directories, the batched watcher and collection on one SSH host.

    ``pid_file``/``marker`` tell the poll which process proves an execution is alive: the wrapper itself
    on an ssh host, the ``srun`` launcher on a Slurm frontend (the wrapper runs on a node).
    """

    def __init__(self, host: Host, workdir: str = "~/.orchestra", *, python: str = "python3",
                 poll_interval: float = 1.0, lost_after: float = 300.0, pid_file: str = PID_FILE,
                 marker: str = MARKER) -> None:
        self.host = host
        self.workdir_spec = workdir
        self.workdir = ""
        self.python = python
        self.poll_interval = poll_interval
        self.lost_after = lost_after
        self.pid_file = pid_file
        self.marker = marker
        self._shipped: set[str] = set()
        self._code_locks: dict[str, gevent.lock.Semaphore] = {}
        self._watches: dict[str, _Watch] = {}
        self._wake = gevent.event.Event()
        self._watcher: gevent.Greenlet | None = None
        self.polls = 0  # observable: tests check that polls do not scale with executions

    def prepare(self) -> None:
        """Resolve the workdir to an absolute path once, so no later command depends on ``~``."""
        spec = self.workdir_spec
        if spec == "~" or spec.startswith("~/"):
            rel = spec[2:] or "."
            cmd = f"cd && mkdir -p {q(rel)} && cd {q(rel)} && mkdir -p code runs && pwd -P"
        else:
            cmd = f"mkdir -p {q(spec)} && cd {q(spec)} && mkdir -p code runs && pwd -P"
        result = self.host.run(cmd, timeout=60)
        self.workdir = result.stdout.strip().splitlines()[-1]

    def run_dir(self, execution_id: str) -> str:
        return f"{self.workdir}/runs/{execution_id}"

    # -- code
    def ensure_code(self, commit: str, code: CodeArchive) -> str:
        if not _COMMIT_RE.match(commit):
            raise ExecutionError(f"not a commit id: {commit!r}")
        target = f"{self.workdir}/code/{commit}"
        if commit in self._shipped:
            return target
        lock = self._code_locks.setdefault(commit, gevent.lock.Semaphore())
        with lock:
            if commit in self._shipped:
                return target
            if not self.host.run(f"test -d {q(target)}", warn=True, timeout=60).ok:
                t0 = time.monotonic()
                # Extract into a temporary directory and rename: a half-shipped tree is never used, and
                # two controllers shipping the same commit both end with one complete copy.
                cmd = (f"T=$(mktemp -d {q(self.workdir)}/code/.{commit}.XXXXXX) && "
                       f"{{ tar -x -f - -C \"$T\" || {{ rm -rf \"$T\"; exit 1; }}; }} && "
                       f"{{ mv -T \"$T\" {q(target)} 2>/dev/null || rm -rf \"$T\"; }} && test -d {q(target)}")
                try:
                    self.host.put_stream(code(commit), cmd, timeout=3600)
                except RemoteCommandError as exc:
                    raise ExecutionError(f"{self.host.name}: shipping code {commit[:12]} failed: "
                                         f"{exc.result.tail(3)}") from exc
                log.debug("shipped %s to %s in %.2fs", commit[:12], self.host.name, time.monotonic() - t0)
            self._shipped.add(commit)
        return target

    # -- launch
    def launch(self, job: Job, code: CodeArchive, *, env: Mapping[str, str], setup: Iterable[str] = (),
               launcher: str = "", wait_pid: float = 5.0,
               starter: Callable[[str, str, Mapping[str, str]], str] | None = None,
               ) -> tuple[str, int | None, float | None]:
        """Create the run dir and start the wrapper detached, in ONE round trip; return (dir, pid, started).

        ``launcher`` prefixes the wrapper (e.g. ``srun --jobid=J ...``); it is started with setsid nohup
        so that neither a dropped SSH connection nor the controller's death stops it. ``starter``
        replaces that start entirely: given (run dir, command, env) it returns the shell snippet that
        starts the wrapper in ``$R`` and writes the launcher pid file (the slurm agent uses it).
        """
        if not _ID_RE.match(job.execution_id):
            raise ExecutionError(f"not an execution id: {job.execution_id!r}")
        code_dir = self.ensure_code(job.commit, code)
        run = self.run_dir(job.execution_id)
        command = "\n".join([*setup, job.command]) if setup else job.command
        env_words = " ".join(q(f"{k}={v}") for k, v in env.items())
        env_prefix = f"env -- {env_words} " if env_words else ""
        loops = max(1, int(wait_pid / 0.01))
        cmd = (
            f"set -e; R={q(run)}; "
            'if [ -e "$R" ]; then mv "$R" "$R.old.$(date +%s%N)"; fi; '
            f'cp -a {q(code_dir)} "$R.partial"; mkdir -p "$R.partial/{META_DIR}"; mv "$R.partial" "$R"; cd "$R"; '
            f"date +%s.%N > {STARTED_FILE}; "
            + (starter(run, command, env) if starter is not None else
               f"{env_prefix}setsid nohup {launcher}/bin/sh -c {q(WRAPPER)} {MARKER} {q(command)} "
               f"</dev/null >/dev/null 2>&1 & echo $! > {LAUNCHER_PID_FILE}; ")
            + "set +e; "
            f"i=0; while [ ! -s {PID_FILE} ] && [ ! -s {EXIT_FILE} ] && [ $i -lt {loops} ]; do sleep 0.01; i=$((i+1)); done; "
            f"echo \"pid=$(cat {PID_FILE} 2>/dev/null)\"; echo \"started=$(cat {STARTED_FILE})\""
        )
        try:
            result = self.host.run(cmd, timeout=120)
        except RemoteCommandError as exc:
            raise ExecutionError(f"{self.host.name}: launching {job.execution_id} failed: {exc.result.tail(3)}") from exc
        values = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        pid = int(values["pid"]) if values.get("pid", "").isdigit() else None
        try:
            started: float | None = float(values.get("started", ""))
        except ValueError:
            started = None
        return run, pid, started

    # -- watching
    def watch(self, execution_id: str, remote_dir: str) -> gevent.event.AsyncResult:
        """An AsyncResult set to an Outcome when the execution's exit_code appears (or it is lost)."""
        watch = self._watches.get(execution_id)
        if watch is None:
            watch = self._watches[execution_id] = _Watch(remote_dir, gevent.event.AsyncResult())
        if self._watcher is None or self._watcher.dead:
            self._watcher = gevent.spawn(self._watch_loop)
        self._wake.set()
        return watch.result

    def unwatch(self, execution_id: str) -> None:
        self._watches.pop(execution_id, None)

    def poll_once(self) -> None:
        """One command for every watched run directory on this host."""
        if not self._watches:
            return
        by_dir = {w.remote_dir: (eid, w) for eid, w in list(self._watches.items())}
        stdin = ("\n".join(by_dir) + "\n").encode()
        self.polls += 1
        result = self.host.run(f"sh -c {q(_POLL_SH)} poll {q(self.pid_file)} {q(self.marker)}",
                               stdin=stdin, timeout=120, warn=True)
        if result.exit_code is None:
            raise ConnectionError_(f"{self.host.name}: poll failed: {result.tail(2)}")
        for line in result.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in by_dir:
                continue
            eid, watch = by_dir[parts[1]]
            if parts[0] == "done" and len(parts) >= 4:
                try:
                    code: int | None = int(parts[2].strip())
                except ValueError:
                    continue  # being written
                ended = float(parts[3]) if re.match(r"^\d+(\.\d+)?$", parts[3]) else None
                self._settle(eid, Outcome(code, None, ended))
            elif parts[0] == "gone":
                self._settle(eid, Outcome(None, None, time.time(), lost=True,
                                          error=f"run directory {parts[1]} vanished on {self.host.name}"))
            elif parts[0] == "dead":
                watch.dead_seen += 1
                if watch.dead_seen >= 2:  # twice: a shared filesystem may show exit_code late
                    self._settle(eid, Outcome(None, None, time.time(), lost=True,
                                              error=f"the process died without an exit code on {self.host.name}"))

    def _settle(self, execution_id: str, outcome: Outcome) -> None:
        watch = self._watches.pop(execution_id, None)
        if watch is not None and not watch.result.ready():
            watch.result.set(outcome)

    def fail_all(self, error: str) -> None:
        for eid in list(self._watches):
            self._settle(eid, Outcome(None, None, time.time(), lost=True, error=error))

    def _watch_loop(self) -> None:
        failing_since: float | None = None
        while True:
            if not self._watches:
                self._wake.clear()
                self._wake.wait()
                continue
            try:
                self.poll_once()
                failing_since = None
            except (ConnectionError_, RemoteCommandError) as exc:
                failing_since = failing_since or time.monotonic()
                log.warning("%s: poll failed (%s); retrying", self.host.name, exc)
                if time.monotonic() - failing_since > self.lost_after:
                    self.fail_all(f"{self.host.name} unreachable for {self.lost_after:.0f}s: {exc}")
            gevent.sleep(self.poll_interval)

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
            self._watcher = None

    # -- stop, probe, collect, discard
    def kill(self, remote_dir: str, prefix: str = "", grace: float = STOP_GRACE) -> None:
        """TERM the execution's process group, KILL it after ``grace`` (detached, so we do not wait)."""
        inner = (f"p=$(cat {q(remote_dir)}/{PID_FILE} 2>/dev/null); [ -n \"$p\" ] || exit 0; "
                 # `kill -SIG -PGID`: dash's builtin rejects `--` and `-s SIG -PGID`; this form works everywhere.
                 f"kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; "
                 f"(sleep {grace:g}; kill -KILL -$p 2>/dev/null) </dev/null >/dev/null 2>&1 & exit 0")
        self.host.run(f"{prefix}sh -c {q(inner)}", warn=True, timeout=60)

    def probe(self, remote_dir: str) -> tuple[str, int | None, float | None]:
        """("done"|"running"|"none", pid, started) for a run dir left by an earlier controller."""
        cmd = (f"d={q(remote_dir)}; [ -d \"$d\" ] || {{ echo none; exit 0; }}; "
               f"echo \"pid=$(cat \"$d/{PID_FILE}\" 2>/dev/null)\"; echo \"started=$(cat \"$d/{STARTED_FILE}\" 2>/dev/null)\"; "
               f"if [ -s \"$d/{EXIT_FILE}\" ]; then echo done; exit 0; fi; "
               f"p=$(cat \"$d/{self.pid_file}\" 2>/dev/null); "
               f"if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null && {{ [ ! -r /proc/$p/cmdline ] || grep -qa -- {q(self.marker)} /proc/$p/cmdline; }}; "
               "then echo running; else echo none; fi")
        out = self.host.run(cmd, timeout=60).stdout.split()
        values = dict(w.split("=", 1) for w in out if "=" in w)
        state = out[-1] if out else "none"
        pid = int(values["pid"]) if values.get("pid", "").isdigit() else None
        try:
            started = float(values.get("started", ""))
        except ValueError:
            started = None
        return state, pid, started

    def collect(self, remote_dir: str, outputs: tuple[str, ...], dest: Path) -> Collected:
        for pattern in outputs:
            if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise ExecutionError(f"output pattern {pattern!r} must be relative and stay in the run directory")
        cmd = " ".join([q(self.python), "-c", q(_COLLECT_PY), q(remote_dir), *map(q, outputs)])
        dest.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".collect-", suffix=".tar", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in self.host.get_stream(cmd, timeout=3600):
                    handle.write(chunk)
            size, digest = _split_trailer(tmp)
            sha = hashlib.sha256()
            with tmp.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
            if tmp.stat().st_size != size or sha.hexdigest() != digest:
                raise ExecutionError(f"{self.host.name}: outputs of {remote_dir} arrived corrupted "
                                     f"({tmp.stat().st_size} bytes, expected {size})")
            with tmp.open("rb") as handle:
                files = safe_extract(handle, dest)
        except RemoteCommandError as exc:
            raise ExecutionError(f"{self.host.name}: collecting {remote_dir} failed: {exc.result.tail(3)}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        stdout, stderr = dest / STDOUT_FILE, dest / STDERR_FILE
        for path in (stdout, stderr):
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
        outputs_found = [f for f in files if PurePosixPath(f).parts[0] != META_DIR]
        return Collected(dest, stdout, stderr, outputs_found)

    def discard(self, remote_dir: str) -> None:
        if not remote_dir.startswith(f"{self.workdir}/runs/"):
            raise ExecutionError(f"refusing to remove {remote_dir}: not under {self.workdir}/runs")
        self.host.run(f"rm -rf -- {q(remote_dir)}", timeout=300)

    def cleanup_code(self, keep: Iterable[str] = ()) -> None:
        """Remove cached code trees not in ``keep`` (not called automatically: other controllers share them)."""
        keep_set = set(keep)
        result = self.host.run(f"ls -1 {q(self.workdir)}/code", warn=True)
        for name in result.stdout.split():
            if _COMMIT_RE.match(name) and name not in keep_set:
                self.host.run(f"rm -rf -- {q(self.workdir)}/code/{name}", warn=True)


# ----------------------------------------------------------------------------------------- backend
def _handle_wait(runs: RemoteRuns, handle: RunHandle, timeout: float | None, launched_at: dict[str, float],
                 kill_prefix: str = "") -> Outcome:
    """Shared by ssh and slurm: wait on the batched watcher, enforce the timeout by killing the group."""
    result = runs.watch(handle.execution_id, handle.remote_dir)
    start_local = launched_at.get(handle.execution_id)
    if start_local is None:  # re-attached: measure from the remote start time (clock skew accepted)
        start_local = handle.started or time.time()
    remaining = None if timeout is None else max(0.0, start_local + timeout - time.time())
    try:
        outcome: Outcome = result.get(timeout=remaining)
    except gevent.Timeout:
        runs.kill(handle.remote_dir, kill_prefix)
        try:
            final: Outcome = result.get(timeout=STOP_GRACE + 4 * runs.poll_interval + 5)
            code = final.exit_code
        except gevent.Timeout:
            code = None
        runs.unwatch(handle.execution_id)
        launched_at.pop(handle.execution_id, None)
        return Outcome(code, handle.started, time.time(), timed_out=True,
                       error=f"timed out after {timeout:g}s")
    launched_at.pop(handle.execution_id, None)
    return dataclasses.replace(outcome, started=handle.started)


class SSHBackend:
    """``kind: ssh``: a fixed list of hosts with a number of slots each."""

    name = "ssh"

    def __init__(self, profile: SSHProfile) -> None:
        self.profile = profile
        self.hosts: dict[str, Host] = {}
        self.runs: dict[str, RemoteRuns] = {}
        self.pool = SlotPool()
        self._launched_at: dict[str, float] = {}
        for cfg in profile.hosts:
            host = Host(cfg.destination, ssh_config=profile.ssh_config, connections=profile.connections,
                        channels_per_connection=profile.channels_per_connection,
                        accept_new_host_keys=profile.accept_new_host_keys)
            self.hosts[cfg.destination] = host
            self.runs[cfg.destination] = RemoteRuns(host, profile.workdir, python=profile.python,
                                                    poll_interval=profile.poll_interval)

    def start(self) -> None:
        jobs = [gevent.spawn(r.prepare) for r in self.runs.values()]
        gevent.joinall(jobs)
        for job in jobs:
            if job.exception is not None:
                raise job.exception
        # Interleave hosts so that a partly used backend spreads executions over hosts.
        width = max(c.slots for c in self.profile.hosts)
        for index in range(width):
            for cfg in self.profile.hosts:
                if index < cfg.slots:
                    self.pool.add(Slot(cfg.destination, index))

    def acquire(self) -> Slot:
        return self.pool.acquire()

    def release(self, slot: Slot) -> None:
        self.pool.release(slot)

    def _runs(self, host: str) -> RemoteRuns:
        try:
            return self.runs[host]
        except KeyError:
            raise ProfileError(f"profile {self.profile.name}: no host {host!r}; hosts: "
                               f"{', '.join(self.runs)}") from None

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        runs = self._runs(slot.host)
        env = {**self.profile.env, **job.env, "ORCHESTRA_EXECUTION_ID": job.execution_id,
               "ORCHESTRA_SLOT": str(slot.index)}
        self._launched_at[job.execution_id] = time.time()
        remote_dir, pid, started = runs.launch(job, code, env=env, setup=self.profile.setup)
        return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started)

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        return _handle_wait(self._runs(handle.slot.host), handle, timeout, self._launched_at)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        return self._runs(handle.slot.host).collect(handle.remote_dir, job.outputs, dest)

    def discard(self, handle: RunHandle) -> None:
        self._runs(handle.slot.host).discard(handle.remote_dir)

    def stop(self, handle: RunHandle) -> None:
        self._runs(handle.slot.host).kill(handle.remote_dir)

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        if host is None or host not in self.runs:
            return None
        runs = self.runs[host]
        if not runs.workdir:
            runs.prepare()
        remote_dir = remote_dir or runs.run_dir(execution_id)
        state, pid, started = runs.probe(remote_dir)
        if state == "none":
            return None
        the_slot = Slot(host, slot if slot is not None else 0)
        self.pool.claim(the_slot)
        return RunHandle(execution_id, the_slot, remote_dir, pid=pid, started=started)

    def close(self) -> None:
        for runs in self.runs.values():
            runs.stop_watching()
        for host in self.hosts.values():
            host.close()


__all__ = ["SSHBackend", "SSHProfile", "SSHHostConfig", "RemoteRuns", "SlotPool", "safe_extract",
           "check_member"]
