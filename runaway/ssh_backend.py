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
import shutil
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

from .agent_link import RECONNECT_FOR, STOP_GRACE, AgentLink, AgentRuns, attach_command, install_agent
from .backend import CodeArchive, Collected, Job, Outcome, RunHandle, Slot
from .hosts import Host, RemoteCommandError
from .profiles import SSHHostConfig, SSHProfile
from .rundir import EXIT_FILE, MARKER, META_DIR, PID_FILE, STDERR_FILE, STDOUT_FILE, WRAPPER

log = logging.getLogger(__name__)

LAUNCHER_PID_FILE = f"{META_DIR}/launcher_pid"
STARTED_FILE = f"{META_DIR}/started"
SLOT_FILE = f"{META_DIR}/slot"  # the slot index a launch used, so a resume can hold that very slot
_TRAILER_RE = re.compile(rb"\nORCHESTRA-SHA256 ([0-9a-f]{64}) (\d{20})\n$")
_TRAILER_LEN = len(b"\nORCHESTRA-SHA256 ") + 64 + 1 + 20 + 1
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{4,64}$")

# Runs on the remote host with its python3: globbing there means user globs never reach a shell, and the
# sha256 of the exact bytes sent lets the receiver detect a truncated or corrupted stream.
# Several run directories in ONE python3 process and ONE stream (argv[1]: JSON [[dir, [globs]], ...]):
# members are "<index>/<path>"; a missing directory is an empty member "<index>.missing". Same trailer.
_COLLECT_MANY_PY = r'''
import glob, hashlib, json, os, sys, tarfile
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
for index, (run_dir, patterns) in enumerate(json.loads(sys.argv[1])):
    prefix = "%d/" % index
    try:
        os.chdir(run_dir)
    except OSError:
        tar.addfile(tarfile.TarInfo("%d.missing" % index))
        continue
    for name in (".orchestra/stdout", ".orchestra/stderr"):
        if os.path.isfile(name) and not os.path.islink(name):
            tar.add(name, arcname=prefix + name, recursive=False)
    seen = set()
    def add(path):
        if path in seen or linked(path):
            return
        seen.add(path)
        if os.path.isfile(path):
            tar.add(path, arcname=prefix + path, recursive=False)
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
                for f in sorted(files):
                    add(os.path.normpath(os.path.join(root, f)))
    for pattern in patterns:
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


class _Batcher:
    """Requests that arrive together go to the host as ONE command (launches, collects, removals).

    Why: on a host every command costs an sshd session fork and a shell; for short executions those
    dominate. A request waits for no timer: the first one of a wave starts a flush after one yield, so
    everything queued meanwhile rides along; up to ``parallel`` flushes run at once.
    """

    def __init__(self, flush: Callable[[list], list], *, max_items: int = 32, parallel: int = 4) -> None:
        self.flush = flush
        self.max_items = max_items
        self.parallel = parallel
        self.pending: list[tuple[object, gevent.event.AsyncResult]] = []
        self.active = 0

    def submit(self, item: object) -> object:
        result = gevent.event.AsyncResult()
        self.pending.append((item, result))
        if self.active < self.parallel:
            self.active += 1
            gevent.spawn(self._run)
        return result.get()

    def _run(self) -> None:
        try:
            gevent.sleep(0)  # let the rest of this wave queue up
            while self.pending:
                batch, self.pending = self.pending[:self.max_items], self.pending[self.max_items:]
                try:
                    outcomes = self.flush([item for item, _ in batch])
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for _, result in batch:
                        result.set_exception(exc)
                    continue
                for (_, result), outcome in zip(batch, outcomes):
                    if isinstance(outcome, BaseException):
                        result.set_exception(outcome)
                    else:
                        result.set(outcome)
        finally:
            self.active -= 1


# One poll for all of a host's watched run directories (given on stdin, one per line).
# done<TAB>dir<TAB>code<TAB>ended | gone<TAB>dir | dead<TAB>dir   (nothing: still running)
_POLL_SH = r'''
pidfile=$1; marker=$2; verify=$3; ended=""
while IFS= read -r d; do
  [ -n "$d" ] || continue
  # An execution is over once exit_code holds a number: a recycled run directory has it blank before.
  c=; read -r c < "$d/.orchestra/exit_code" 2>/dev/null
  if [ -n "$c" ]; then
    printf 'done\t%s\t%s\t\n' "$d" "$c"
    ended="$ended
$d/.orchestra/exit_code"
  elif [ ! -d "$d" ]; then
    printf 'gone\t%s\n' "$d"
  else
    p=; read -r p < "$d/$pidfile" 2>/dev/null
    if [ -n "$p" ]; then
      # kill -0 is a builtin; the marker check forks grep, so it runs only on polls asked to verify.
      if ! kill -0 "$p" 2>/dev/null || { [ "$verify" = 1 ] && [ -r /proc/$p/cmdline ] && ! grep -qa -- "$marker" /proc/$p/cmdline; }; then
        c=; read -r c < "$d/.orchestra/exit_code" 2>/dev/null; [ -n "$c" ] || printf 'dead\t%s\n' "$d"
      fi
    fi
  fi
done
# One stat for every execution that ended (their end times), not one date per execution.
if [ -n "$ended" ]; then
  printf '%s\n' "$ended" | sed '/^$/d' | tr '\n' '\0' | xargs -0 stat -c 'ended	%.9Y	%n' 2>/dev/null
fi
'''

VERIFY_EVERY = 8  # polls between marker checks of live pids (each costs a grep per running execution)


def q(text: str) -> str:
    return shlex.quote(text)


MIN_POLL_INTERVAL = 0.05  # seconds between polls while executions end in bursts (see _watch_loop)
SIGNALLED_EXIT = 128 + 15  # what a shell reports for a child TERMed: the agent's wait status says the same


def _link_dropped(exc: BaseException) -> bool:
    """A dropped connection (not a command that failed): safe to retry an idempotent step."""
    if isinstance(exc, ConnectionError_):
        return exc.hint is None or "is the host up" in exc.hint
    return isinstance(exc, RemoteCommandError) and exc.result.exit_code is None and not exc.timed_out


def retry_link(what: str, action: Callable[[], object], host_name: str, budget: float = RECONNECT_FOR) -> object:
    """Run an idempotent remote step, again after a dropped link (sshd restart, network cut), for ``budget``
    seconds. Why: an execution whose results are safe on the remote must not fail because one collect or
    discard met a connection reset; the Host reconnects on the next channel."""
    deadline = time.monotonic() + budget
    delay = 0.2
    while True:
        try:
            return action()
        except (ConnectionError_, RemoteCommandError) as exc:
            if not _link_dropped(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: %s: link dropped (%s); retrying in %.1fs", host_name, what, exc, delay)
            gevent.sleep(delay)
            delay = min(5.0, delay * 2)


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

    def unclaim(self, slot: Slot) -> None:
        """A claimed slot's execution ended: the slot is free again (whether or not its claim was consumed)."""
        if slot in self._claimed:
            self._claimed.discard(slot)  # still queued: it simply stops being skipped
        elif slot not in self._retired:
            self._free.put(slot)

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
        self._launcher = _Batcher(self._launch_many)
        self._collector = _Batcher(self._collect_many, max_items=16)
        self._remover = _Batcher(self._remove_many, max_items=64, parallel=2)
        self.settled = 0
        self.polls = 0  # observable: tests check that polls do not scale with executions
        # Run directories whose execution this controller signalled (stop, timeout). A shell killed by a
        # signal runs no EXIT trap, so the wrapper leaves no exit_code: without this, a stopped execution
        # read as "died without an exit code", i.e. lost, a node failure that a retry policy re-runs.
        self._signalled: set[str] = set()

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
            exists = retry_link("code check", lambda: self.host.run(f"test -d {q(target)}", warn=True, timeout=60),
                                self.host.name)
            if not exists.ok:  # type: ignore[attr-defined]
                t0 = time.monotonic()
                # Extract into a temporary directory and rename: a half-shipped tree is never used, and
                # two controllers shipping the same commit both end with one complete copy.
                cmd = (f"T=$(mktemp -d {q(self.workdir)}/code/.{commit}.XXXXXX) && "
                       f"{{ tar -x -f - -C \"$T\" || {{ rm -rf \"$T\"; exit 1; }}; }} && "
                       f"{{ mv -T \"$T\" {q(target)} 2>/dev/null || rm -rf \"$T\"; }} && test -d {q(target)}")
                try:
                    retry_link(f"shipping {commit[:12]}", lambda: self.host.put_stream(code(commit), cmd, timeout=3600),
                               self.host.name)
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
        body = (
            f"set -e; R={q(run)}; "
            'if [ -e "$R" ]; then mv "$R" "$R.old.$(date +%s%N)"; fi; '
            f'cp -a {q(code_dir)} "$R.partial"; mkdir -p "$R.partial/{META_DIR}"; mv "$R.partial" "$R"; cd "$R"; '
            f'echo "$now" > {STARTED_FILE}; '
            + (f"echo {q(env['ORCHESTRA_SLOT'])} > {SLOT_FILE}; " if "ORCHESTRA_SLOT" in env else "")
            + (starter(run, command, env) if starter is not None else
               f"{env_prefix}setsid nohup {launcher}/bin/sh -c {q(WRAPPER)} {MARKER} {q(command)} "
               f"</dev/null >/dev/null 2>&1 & echo $! > {LAUNCHER_PID_FILE}; ")
        )
        return self._launcher.submit((job.execution_id, run, body, loops))  # type: ignore[return-value]

    @staticmethod
    def _launch_script(items: list[tuple[str, str, str, int]]) -> str:
        """Start every item, THEN wait for their pid files: one round trip, and the waits overlap."""
        parts = ["now=$(date +%s.%N); "]  # one clock read for the whole batch
        for k, (_eid, _run, body, _loops) in enumerate(items):
            parts.append(f"e=$( ( {body} ) 2>&1 >/dev/null ) && ok{k}=1 || "
                         f"printf 'fail\\t{k}\\t%s\\n' \"$(printf %s \"$e\" | tr '\\n\\t' '  ' | tail -c 500)\"; ")
        for k, (_eid, run, _body, loops) in enumerate(items):
            r = q(run)
            parts.append(f"if [ -n \"$ok{k}\" ]; then i=0; while [ ! -s {r}/{PID_FILE} ] && [ ! -s {r}/{EXIT_FILE} ] "
                         f"&& [ $i -lt {loops} ]; do sleep 0.01; i=$((i+1)); done; "
                         f"p=; read -r p < {r}/{PID_FILE} 2>/dev/null; printf 'ok\\t{k}\\t%s\\t%s\\n' \"$p\" \"$now\"; fi; ")
        return "".join(parts)

    def _launch_many(self, items: list[tuple[str, str, str, int]]) -> list[object]:
        try:
            result = self.host.run(self._launch_script(items), timeout=120, warn=True)
            if result.exit_code is None:
                raise RemoteCommandError(self.host.name, result)
        except (ConnectionError_, RemoteCommandError) as exc:
            if not _link_dropped(exc):
                raise
            # The link dropped under the launch: each may or may not have started. Never start one twice:
            # look first (once the host answers again), relaunch only what is not there.
            log.warning("%s: link dropped while launching %d execution(s) (%s); checking", self.host.name,
                        len(items), exc)
            return [self._relaunch_after_drop(item) for item in items]
        outcomes: list[object] = [ExecutionError(f"{self.host.name}: launching {eid} printed nothing")
                                  for eid, *_ in items]
        for line in result.stdout.splitlines():
            fields = line.split("\t")
            if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) >= len(items):
                continue
            k = int(fields[1])
            eid, run = items[k][0], items[k][1]
            if fields[0] == "fail":
                outcomes[k] = ExecutionError(f"{self.host.name}: launching {eid} failed: "
                                             f"{fields[2] if len(fields) > 2 else ''}".rstrip())
            elif fields[0] == "ok":
                pid = int(fields[2]) if len(fields) > 2 and fields[2].isdigit() else None
                try:
                    started: float | None = float(fields[3]) if len(fields) > 3 else None
                except ValueError:
                    started = None
                outcomes[k] = (run, pid, started)
        return outcomes

    def _relaunch_after_drop(self, item: tuple[str, str, str, int]) -> object:
        eid, run, _body, _loops = item
        deadline = time.monotonic() + RECONNECT_FOR
        while True:
            try:
                state, pid, started = retry_link("probe", lambda: self.probe(run), self.host.name)  # type: ignore[misc]
                if state != "none":
                    return run, pid, started
                return self._launch_many([item])[0]
            except (ConnectionError_, RemoteCommandError) as exc:
                if not _link_dropped(exc) or time.monotonic() > deadline:
                    return exc
                gevent.sleep(0.5)

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
        verify = "1" if self.polls % VERIFY_EVERY == 1 else "0"
        result = self.host.run(f"sh -c {q(_POLL_SH)} poll {q(self.pid_file)} {q(self.marker)} {verify}",
                               stdin=stdin, timeout=120, warn=True)
        if result.exit_code is None:
            raise ConnectionError_(f"{self.host.name}: poll failed: {result.tail(2)}")
        lines = result.stdout.splitlines()
        ended_at: dict[str, str] = {}
        for line in lines:
            if line.startswith("ended\t"):
                parts = line.split("\t", 2)
                if len(parts) == 3 and parts[2].endswith("/.orchestra/exit_code"):
                    ended_at[parts[2][:-len("/.orchestra/exit_code")]] = parts[1]
        for line in lines:
            parts = line.split("\t")
            if parts[0] == "done" and len(parts) >= 4 and not parts[3]:
                parts[3] = ended_at.get(parts[1], "")
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
                if watch.dead_seen >= 2 and parts[1] in self._signalled:
                    self._settle(eid, Outcome(SIGNALLED_EXIT, None, time.time()))  # as a TERMed wrapper's status
                elif watch.dead_seen >= 2:  # twice: a shared filesystem may show exit_code late
                    self._settle(eid, Outcome(None, None, time.time(), lost=True,
                                              error=f"the process died without an exit code on {self.host.name}"))

    def _settle(self, execution_id: str, outcome: Outcome) -> None:
        watch = self._watches.pop(execution_id, None)
        if watch is not None and not watch.result.ready():
            self.settled += 1
            watch.result.set(outcome)

    def fail_all(self, error: str) -> None:
        for eid in list(self._watches):
            self._settle(eid, Outcome(None, None, time.time(), lost=True, error=error))

    def _watch_loop(self) -> None:
        failing_since: float | None = None
        quiet = 0
        while True:
            if not self._watches:
                self._wake.clear()
                self._wake.wait()
                continue
            settled_before = self.settled
            self._wake.clear()
            try:
                self.poll_once()
                failing_since = None
            except (ConnectionError_, RemoteCommandError) as exc:
                failing_since = failing_since or time.monotonic()
                log.warning("%s: poll failed (%s); retrying", self.host.name, exc)
                if time.monotonic() - failing_since > self.lost_after:
                    self.fail_all(f"{self.host.name} unreachable for {self.lost_after:.0f}s: {exc}")
            # Adaptive interval: right after an execution ended or a new one started, poll again soon
            # (short executions end in a burst); each quiet poll doubles the wait, up to poll_interval.
            # Still ONE command per host per poll, whatever the number of executions.
            if self.settled != settled_before:
                quiet = 0
            else:
                quiet += 1
            delay = min(self.poll_interval, MIN_POLL_INTERVAL * (2 ** min(quiet, 16)))
            if failing_since is not None:
                delay = self.poll_interval
            if self._wake.wait(timeout=delay) and failing_since is None:
                quiet = 0  # a new execution to watch: look at it soon
                gevent.sleep(MIN_POLL_INTERVAL)

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.kill(block=False)
            self._watcher = None

    # -- stop, probe, collect, discard
    def kill(self, remote_dir: str, prefix: str = "", grace: float = STOP_GRACE) -> None:
        """TERM the execution's process group, KILL it after ``grace`` (detached, so we do not wait)."""
        self._signalled.add(remote_dir)
        inner = (f"p=; read -r p < {q(remote_dir)}/{PID_FILE} 2>/dev/null; [ -n \"$p\" ] || exit 0; "
                 # `kill -SIG -PGID`: dash's builtin rejects `--` and `-s SIG -PGID`; this form works everywhere.
                 f"kill -TERM -$p 2>/dev/null || kill -TERM $p 2>/dev/null; "
                 f"(sleep {grace:g}; kill -KILL -$p 2>/dev/null) </dev/null >/dev/null 2>&1 & exit 0")
        self.host.run(f"{prefix}sh -c {q(inner)}", warn=True, timeout=60)

    def probe(self, remote_dir: str) -> tuple[str, int | None, float | None]:
        """("done"|"running"|"none", pid, started) for a run dir left by an earlier controller."""
        return self.probe_full(remote_dir)[:3]  # type: ignore[return-value]

    def probe_full(self, remote_dir: str) -> tuple[str, int | None, float | None, int | None]:
        """probe() plus the slot the launch recorded (None if unknown)."""
        cmd = (f"d={q(remote_dir)}; [ -d \"$d\" ] || {{ echo none; exit 0; }}; "
               f"echo \"pid=$(cat \"$d/{PID_FILE}\" 2>/dev/null)\"; echo \"started=$(cat \"$d/{STARTED_FILE}\" 2>/dev/null)\"; "
               f"echo \"slot=$(cat \"$d/{SLOT_FILE}\" 2>/dev/null)\"; "
               f"c=; read -r c < \"$d/{EXIT_FILE}\" 2>/dev/null; if [ -n \"$c\" ]; then echo done; exit 0; fi; "
               f"p=; read -r p < \"$d/{self.pid_file}\" 2>/dev/null; "
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
        slot = int(values["slot"]) if values.get("slot", "").isdigit() else None
        return state, pid, started, slot

    def collect(self, remote_dir: str, outputs: tuple[str, ...], dest: Path) -> Collected:
        for pattern in outputs:
            if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise ExecutionError(f"output pattern {pattern!r} must be relative and stay in the run directory")
        return self._collector.submit((remote_dir, tuple(outputs), dest))  # type: ignore[return-value]

    def _collect_many(self, items: list[tuple[str, tuple[str, ...], Path]]) -> list[object]:
        """One python3 and one checksummed tar stream for several run directories."""
        import json

        spec = json.dumps([[remote_dir, list(outputs)] for remote_dir, outputs, _dest in items])
        cmd = " ".join([q(self.python), "-c", q(_COLLECT_MANY_PY), q(spec)])
        staging_parent = items[0][2].parent
        staging_parent.mkdir(parents=True, exist_ok=True)

        def fetch() -> Path:
            where = Path(tempfile.mkdtemp(prefix=".collect-", dir=staging_parent))
            try:
                self._fetch_stream(cmd, where, ", ".join(r for r, _o, _d in items))
            except BaseException:
                shutil.rmtree(where, ignore_errors=True)
                raise
            return where

        try:
            where: Path = retry_link("collecting", fetch, self.host.name)  # type: ignore[assignment]
        except RemoteCommandError as exc:
            raise ExecutionError(f"{self.host.name}: collecting failed: {exc.result.tail(3)}") from exc
        outcomes: list[object] = []
        try:
            for k, (remote_dir, _outputs, dest) in enumerate(items):
                if (where / f"{k}.missing").exists():
                    outcomes.append(ExecutionError(f"{self.host.name}: run directory {remote_dir} is gone"))
                    continue
                src = where / str(k)
                src.mkdir(exist_ok=True)
                files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file() and not p.is_symlink())
                if dest.exists():
                    shutil.copytree(src, dest, symlinks=True, dirs_exist_ok=True)
                else:
                    os.replace(src, dest)
                stdout, stderr = dest / STDOUT_FILE, dest / STDERR_FILE
                for path in (stdout, stderr):
                    if not path.exists():
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.touch()
                outcomes.append(Collected(dest, stdout, stderr,
                                          [f for f in files if PurePosixPath(f).parts[0] != META_DIR]))
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return outcomes

    def _fetch_stream(self, cmd: str, where: Path, what: str) -> None:
        """Run ``cmd`` (a collect script), verify its trailer, extract it safely under ``where``."""
        fd, tmp_name = tempfile.mkstemp(prefix=".collect-", suffix=".tar", dir=where.parent)
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
                raise ExecutionError(f"{self.host.name}: outputs of {what} arrived corrupted "
                                     f"({tmp.stat().st_size} bytes, expected {size})")
            with tmp.open("rb") as handle:
                safe_extract(handle, where)
        finally:
            tmp.unlink(missing_ok=True)

    def discard(self, remote_dir: str) -> None:
        if not remote_dir.startswith(f"{self.workdir}/runs/"):
            raise ExecutionError(f"refusing to remove {remote_dir}: not under {self.workdir}/runs")
        self._signalled.discard(remote_dir)
        self._remover.submit(remote_dir)

    def _remove_many(self, dirs: list[str]) -> list[object]:
        cmd = "rm -rf -- " + " ".join(q(d) for d in dirs)
        retry_link("removing run directories", lambda: self.host.run(cmd, timeout=300), self.host.name)
        return [None] * len(dirs)

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
    """``kind: ssh``: a fixed list of hosts with a number of slots each.

    With ``launcher: agent`` (the default) each host runs one resident agent (runaway/agent.py) reached
    through one long-lived SSH session: a launch is one line written, an exit is one frame read with its
    results, a removal one line. Executions re-attached after a controller restart are watched through
    their run-directory files instead (:class:`RemoteRuns`), which needs nothing from any agent.
    """

    name = "ssh"

    def __init__(self, profile: SSHProfile) -> None:
        self.profile = profile
        self.hosts: dict[str, Host] = {}
        self.runs: dict[str, RemoteRuns] = {}
        self.pool = SlotPool()
        self.use_agent = profile.launcher == "agent"
        # With an agent, a resume finds a just-launched execution by its run directory on the hosts, so
        # short executions need no "running" commit; without one the record must name its host first.
        self.running_commit_delay = 1.0 if self.use_agent else 0.0
        self.agents: dict[str, AgentRuns] = {}
        self._run_listing: dict[str, set[str]] | None = None
        self._launched_at: dict[str, float] = {}
        self._reattached: dict[str, Slot] = {}
        for cfg in profile.hosts:
            host = Host(cfg.destination, ssh_config=profile.ssh_config, connections=profile.connections,
                        channels_per_connection=profile.channels_per_connection,
                        accept_new_host_keys=profile.accept_new_host_keys)
            self.hosts[cfg.destination] = host
            self.runs[cfg.destination] = RemoteRuns(host, profile.workdir, python=profile.python,
                                                    poll_interval=profile.poll_interval)

    def start(self, expected: int = 0) -> None:
        jobs = [gevent.spawn(self._start_host, name) for name in self.runs]
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

    def _start_host(self, name: str) -> None:
        runs = self.runs[name]
        if not runs.workdir:
            runs.prepare()
        if self.use_agent and name not in self.agents:
            self.agents[name] = start_agent_runs(runs, self.profile.python, spawn=True)

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
        now = self._launched_at[job.execution_id] = time.time()
        if self.use_agent:
            remote_dir, pid, started = self.agents[slot.host].launch(
                job, code, env=env, setup=self.profile.setup, slot_index=slot.index)
            return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started or now)
        remote_dir, pid, started = runs.launch(job, code, env=env, setup=self.profile.setup)
        return RunHandle(job.execution_id, slot, remote_dir, pid=pid, started=started)

    def _by_agent(self, handle: RunHandle) -> bool:
        agent_runs = self.agents.get(handle.slot.host)
        return agent_runs is not None and agent_runs.owns(handle.execution_id)

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        try:
            if self._by_agent(handle):
                started = self._launched_at.pop(handle.execution_id, handle.started or time.time())
                return self.agents[handle.slot.host].wait(handle.execution_id, timeout, started)
            return _handle_wait(self._runs(handle.slot.host), handle, timeout, self._launched_at)
        finally:
            if self._reattached.pop(handle.execution_id, None) is not None:
                # The controller holds no slot for a re-attached execution: give its slot back here.
                self.pool.unclaim(handle.slot)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        if self._by_agent(handle):
            return self.agents[handle.slot.host].collect(handle.execution_id, dest)
        return self._runs(handle.slot.host).collect(handle.remote_dir, job.outputs, dest)

    def discard(self, handle: RunHandle) -> None:
        if self._by_agent(handle):
            self.agents[handle.slot.host].discard(handle.execution_id, handle.remote_dir)
        else:
            self._runs(handle.slot.host).discard(handle.remote_dir)

    def stop(self, handle: RunHandle) -> None:
        if self._by_agent(handle):
            self.agents[handle.slot.host].stop(handle.execution_id)
        else:
            self._runs(handle.slot.host).kill(handle.remote_dir)

    def _host_holding(self, execution_id: str) -> str | None:
        """The host whose workdir has this execution's run directory (one listing per host per resume)."""
        if self._run_listing is None:
            listing: dict[str, set[str]] = {}
            for name, runs in self.runs.items():
                if not runs.workdir:
                    runs.prepare()
                result = runs.host.run(f"ls -1 {q(runs.workdir)}/runs", warn=True, timeout=120)
                listing[name] = set(result.stdout.split())
            self._run_listing = listing
        return next((name for name, ids in self._run_listing.items() if execution_id in ids), None)

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        if host is None and self.use_agent:
            host = self._host_holding(execution_id)  # launched within the running-commit delay
        if host is None or host not in self.runs:
            return None
        runs = self.runs[host]
        if not runs.workdir:
            runs.prepare()
        remote_dir = remote_dir or runs.run_dir(execution_id)
        state, pid, started, launched_slot = runs.probe_full(remote_dir)
        if state == "none":
            return None
        index = slot if slot is not None else launched_slot
        the_slot = Slot(host, index if index is not None else 0)
        known = next((c.slots for c in self.profile.hosts if c.destination == host), 0)
        if index is not None and index < known and the_slot not in self._reattached.values():
            self.pool.claim(the_slot)  # held until the re-attached execution ends (see wait)
            self._reattached[execution_id] = the_slot
        return RunHandle(execution_id, the_slot, remote_dir, pid=pid, started=started)

    def close(self) -> None:
        for agent_runs in self.agents.values():
            agent_runs.link.drain()  # the last removals
            agent_runs.link.close()
        for runs in self.runs.values():
            runs.stop_watching()
        for host in self.hosts.values():
            host.close()


def start_agent_runs(runs: RemoteRuns, python: str, *, spawn: bool, agent_dir: str | None = None,
                     prefix: str = "", name: str | None = None, reconnect_for: float = RECONNECT_FOR,
                     agent_path: str | None = None):
    """Install the agent on ``runs``' host, open its session, and return the place's AgentRuns."""
    path = agent_path or install_agent(runs.host, runs.workdir)
    directory = agent_dir or f"{runs.workdir}/agents/{PurePosixPath(path).stem}"
    cmd = attach_command(python, path, directory, runs.workdir, spawn=spawn, prefix=prefix)
    link = AgentLink(lambda: runs.host.open_session(cmd), name or runs.host.name, reconnect_for=reconnect_for)
    link.start()
    return AgentRuns(runs, link)


__all__ = ["SSHBackend", "start_agent_runs", "SSHProfile", "SSHHostConfig", "RemoteRuns", "SlotPool", "safe_extract",
           "check_member"]
