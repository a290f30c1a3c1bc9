"""Run directories on one host reached by a transport: code cache, batched launches, one poll per host.

Remote layout (shared with the local backend through :mod:`runaway.rundir`)::

    <workdir>/code/<commit>/          shipped once per host per commit (tar stream, atomic rename)
    <workdir>/runs/<id>/              a copy of the code; the execution runs here
    <workdir>/runs/<id>/.orchestra/   pid, started, stdout, stderr, exit_code (written last)

Why this shape: an execution must survive a dropped SSH connection and a dead controller, so it is
started with ``setsid nohup`` and leaves its whole story in files; the controller only *reads* those
files, with ONE poll command per host per interval, however many executions run there. Results come
back as one tar stream per execution, checksummed on the remote side and extracted defensively here.

:class:`RemoteRuns` is what every remote launcher stands on: the shell launcher starts wrappers with
it (prefixed by ``srun`` on an allocation), the agent launcher uses its code cache and watches what an
earlier controller left through its files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path, PurePosixPath

import gevent
import gevent.event
import gevent.lock

from orchestra.errors import ConnectionError_, ExecutionError

from .backend import CodeArchive, Collected, Job, Outcome
from .backoff import RECONNECT_FOR, link_dropped, retry_link, retrying
from .hosts import RemoteCommandError
from .batcher import Batcher
from .rundir import EXIT_FILE, MARKER, META_DIR, NODE_FILE, PID_FILE, STDERR_FILE, STDOUT_FILE, STOP_GRACE, WRAPPER
from .transfer import COLLECT_MANY_PY, safe_extract, split_trailer
from .transports import Transport

log = logging.getLogger(__name__)

LAUNCHER_PID_FILE = f"{META_DIR}/launcher_pid"
STARTED_FILE = f"{META_DIR}/started"
SLOT_FILE = f"{META_DIR}/slot"  # the slot index a launch used, so a resume can hold that very slot
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{4,64}$")

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

    def __init__(self, host: Transport, workdir: str = "~/.orchestra", *, python: str = "python3",
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
        self._launcher = Batcher(self._launch_many)
        self._collector = Batcher(self._collect_many, max_items=16)
        self._remover = Batcher(self._remove_many, max_items=64, parallel=2)
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
            + (f"echo {q(env['ORCHESTRA_NODE'])} > {NODE_FILE}; " if env.get("ORCHESTRA_NODE") else "")
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
                raise RemoteCommandError(self.host.name, result)  # type: ignore[arg-type]  # its Result
        except (ConnectionError_, RemoteCommandError) as exc:
            if not link_dropped(exc):
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

        def once() -> object:
            state, pid, started = retry_link("probe", lambda: self.probe(run), self.host.name)
            if state != "none":
                return run, pid, started
            return self._launch_many([item])[0]

        try:
            return retrying(RECONNECT_FOR, link_dropped, f"{self.host.name}: relaunching {eid}", fixed=0.5,
                            stop_after=True)(once)
        except (ConnectionError_, RemoteCommandError) as exc:
            return exc

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
    def kill(self, remote_dir: str, prefix: str = "", grace: float = STOP_GRACE, signal: str = "TERM") -> None:
        """TERM (or ``signal``: a checkpoint warning) the execution's process group, KILL it after
        ``grace`` (detached, so we do not wait)."""
        self._signalled.add(remote_dir)
        assert signal.isalnum(), signal  # a name from walltime.signal_name, never user text
        # The pid file outlives its process: where /proc tells, only a process that is still a wrapper is
        # signalled, never whoever was given the number since (runaway/agent/posix.py: is_wrapper_of).
        inner = (f"p=; read -r p < {q(remote_dir)}/{PID_FILE} 2>/dev/null; [ -n \"$p\" ] || exit 0; "
                 f"[ ! -r /proc/$p/cmdline ] || grep -qa -- {MARKER} /proc/$p/cmdline || exit 0; "
                 # `kill -SIG -PGID`: dash's builtin rejects `--` and `-s SIG -PGID`; this form works everywhere.
                 f"kill -{signal} -$p 2>/dev/null || kill -{signal} $p 2>/dev/null; "
                 f"(sleep {grace:g}; kill -KILL -$p 2>/dev/null) </dev/null >/dev/null 2>&1 & exit 0")
        self.host.run(f"{prefix}sh -c {q(inner)}", warn=True, timeout=60)

    def probe(self, remote_dir: str) -> tuple[str, int | None, float | None]:
        """("done"|"running"|"none", pid, started) for a run dir left by an earlier controller."""
        return self.probe_full(remote_dir)[:3]  # type: ignore[return-value]

    def probe_full(self, remote_dir: str) -> tuple[str, int | None, float | None, int | None, str | None]:
        """probe() plus the slot and the scheduler node the launch recorded (None if unknown)."""
        cmd = (f"d={q(remote_dir)}; [ -d \"$d\" ] || {{ echo none; exit 0; }}; "
               f"echo \"pid=$(cat \"$d/{PID_FILE}\" 2>/dev/null)\"; echo \"started=$(cat \"$d/{STARTED_FILE}\" 2>/dev/null)\"; "
               f"echo \"slot=$(cat \"$d/{SLOT_FILE}\" 2>/dev/null)\"; "
               f"echo \"node=$(cat \"$d/{NODE_FILE}\" 2>/dev/null | tr -cd 'A-Za-z0-9._-')\"; "
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
        return state, pid, started, slot, values.get("node") or None

    def collect(self, remote_dir: str, outputs: tuple[str, ...], dest: Path) -> Collected:
        for pattern in outputs:
            if pattern.startswith("/") or ".." in PurePosixPath(pattern).parts:
                raise ExecutionError(f"output pattern {pattern!r} must be relative and stay in the run directory")
        return self._collector.submit((remote_dir, tuple(outputs), dest))  # type: ignore[return-value]

    def _collect_many(self, items: list[tuple[str, tuple[str, ...], Path]]) -> list[object]:
        """One python3 and one checksummed tar stream for several run directories."""
        spec = json.dumps([[remote_dir, list(outputs)] for remote_dir, outputs, _dest in items])
        cmd = " ".join([q(self.python), "-c", q(COLLECT_MANY_PY), q(spec)])
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
            size, digest = split_trailer(tmp)
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



__all__ = ["LAUNCHER_PID_FILE", "NODE_FILE", "RemoteRuns", "SLOT_FILE", "STARTED_FILE", "q"]
