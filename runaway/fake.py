"""An in-memory backend with a fake clock: scheduling logic tested in milliseconds, no process started.

It is the twin of the real backends, held to the same contract suite (tests/contract/), so what a
Controller or a runner test learns from it is true of local, SSH and Slurm runs too. Like dulwich's
MemoryRepo beside the on-disk repository, it keeps the real one's semantics and drops the cost.

* **Scripted executions.** There are no processes: a job's command is a script for the fake (see
  :func:`render_script` / :func:`parse_script`): exit code, stdout, stderr, output files, duration in
  fake-clock seconds, hanging until stopped, attempts that fail or lose their node.
* **A fake clock** (:class:`FakeClock`), shared by everything in one :class:`FakeWorld`: durations,
  timeouts and waits are virtual seconds. By default it runs itself: whenever every greenlet is blocked it
  jumps to the next timer, so a test never sleeps for real and a 2-hour timeout passes at once.
* **The world outlives the controller.** Places, allocations and run directories belong to the
  FakeWorld, not to a backend: a controller that "dies" is a FakeBackend dropped without discarding, and a
  new FakeBackend over the same world re-attaches to what it left, as `expegit resume` does.
* **Places and allocations.** N places × slots at once, or allocations that stay pending until
  :meth:`FakeWorld.grant` (or never come: Ctrl-C must not wait for them); :meth:`FakeWorld.vanish` takes a
  place away under its executions, which end ``lost``.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import heapq
import itertools
import posixpath
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import gevent
import gevent.event
import gevent.queue

from orchestra.errors import ExecutionError

from .backend import CodeArchive, Collected, Job, NoSlot, Outcome, RunHandle, Slot
from .environment_capture import strip_prefixes
from .slot_requests import SlotsOnly
from .walltime import fits

META_DIR = ".orchestra"  # the same names as the real run directories' (runaway/rundir.py)
STDOUT_FILE = f"{META_DIR}/stdout"
STDERR_FILE = f"{META_DIR}/stderr"
SCRIPT_WORD = "fake"
TERM_EXIT = 143  # what a wrapper TERMed by stop() or a timeout reports, as on the real hosts
IDLE_YIELDS = 3  # passes of the gevent loop with nothing to do before the clock jumps to its next timer


# ------------------------------------------------------------------------------------------- the clock
class _Timer:
    __slots__ = ("when", "seq", "callback", "cancelled")

    def __init__(self, when: float, seq: int, callback: Callable[[], None]) -> None:
        self.when, self.seq, self.callback, self.cancelled = when, seq, callback, False

    def __lt__(self, other: "_Timer") -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual epoch seconds. ``auto``: a greenlet jumps to the next timer whenever the loop is idle;
    otherwise time moves only by :meth:`advance` (a test that wants to look between two instants)."""

    def __init__(self, start: float = 1_700_000_000.0, *, auto: bool = True) -> None:
        self._now = start
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self._armed = gevent.event.Event()
        self._runner: gevent.Greenlet | None = gevent.spawn(self._run) if auto else None

    def time(self) -> float:
        return self._now

    def call_at(self, when: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(max(when, self._now), next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        self._armed.set()
        return timer

    def sleep(self, seconds: float) -> None:
        woke = gevent.event.Event()
        self.call_at(self._now + max(0.0, seconds), woke.set)
        woke.wait()

    def wait(self, event: gevent.event.Event, timeout: float | None) -> bool:
        """Block until ``event`` is set (True) or ``timeout`` virtual seconds pass (False)."""
        if event.is_set():
            return True
        if timeout is None:
            event.wait()
            return True
        done: gevent.event.AsyncResult = gevent.event.AsyncResult()
        timer = self.call_at(self._now + max(0.0, timeout), lambda: done.set(False))

        def on_event(_event: object) -> None:
            done.set(True)

        event.rawlink(on_event)
        try:
            return bool(done.get())
        finally:
            timer.cancel()
            event.unlink(on_event)

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, firing every timer due meanwhile in order."""
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            self._fire_next()
            gevent.sleep(0)  # what a timer woke runs before the next one fires
        self._now = max(self._now, target)

    def _fire_next(self) -> None:
        timer = heapq.heappop(self._timers)
        if timer.cancelled:
            return
        self._now = max(self._now, timer.when)
        timer.callback()

    def _run(self) -> None:
        while True:
            while not any(not t.cancelled for t in self._timers):
                self._timers.clear()
                self._armed.clear()
                self._armed.wait()
            for _ in range(IDLE_YIELDS):  # let everything runnable run: the clock moves only when all wait
                gevent.sleep(0)
            if self._timers:
                self._fire_next()

    def close(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=False)
            self._runner = None


# ------------------------------------------------------------------------------------------- scripts
@dataclasses.dataclass(frozen=True)
class Script:
    """What a fake execution does. Per-attempt lists: attempt N uses item N-1, the last one repeats."""

    exit_codes: tuple[int, ...] = (0,)
    stdout: bytes = b""
    stderr: bytes = b""
    files: tuple[tuple[str, bytes], ...] = ()
    duration: float = 0.0
    hang: bool = False  # runs until stopped, timed out or lost
    lose: int = 0  # the first ``lose`` attempts lose their place at the end of their duration
    echo_env: tuple[str, ...] = ()  # variables whose value (and a newline) is appended to stdout
    # Checkpoints: a warning saves the work done so far (the world's checkpoint store) and exits 0; the
    # next attempt only runs what is left of ``duration``.
    checkpoint: bool = False

    def exit_code(self, attempt: int) -> int:
        return self.exit_codes[min(attempt, len(self.exit_codes)) - 1]


def render_script(*, exit: int | Iterable[int] = 0, stdout: str | bytes = b"", stderr: str | bytes = b"",
                  files: Mapping[str, str | bytes] | None = None, duration: float = 0.0, hang: bool = False,
                  lose: int = 0, echo_env: Iterable[str] = (), checkpoint: bool = False) -> str:
    """The command line the fake runs as described (a shell-like line, so templates can fill it)."""
    words = [SCRIPT_WORD]
    codes = [exit] if isinstance(exit, int) else list(exit)
    if codes != [0]:
        words += ["--exit", ",".join(str(c) for c in codes)]
    for flag, data in (("--stdout", stdout), ("--stderr", stderr)):
        if data:
            words += [flag, data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data]
    for name, data in (files or {}).items():
        words += ["--file", name, data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data]
    if duration:
        words += ["--duration", repr(float(duration))]
    if hang:
        words.append("--hang")
    if lose:
        words += ["--lose", str(lose)]
    for name in echo_env:
        words += ["--echo-env", name]
    if checkpoint:
        words.append("--checkpoint")
    return " ".join(shlex.quote(w) for w in words)


def parse_script(command: str) -> Script:
    """The inverse of render_script; a command that is not a fake script is refused with the reason."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise ExecutionError(f"fake backend: cannot parse command {command!r}: {exc}") from None
    if not words or words[0] != SCRIPT_WORD:
        raise ExecutionError(f"fake backend: command {command!r} is not a fake script",
                             hint=f"build it with runaway.fake.render_script (it starts with {SCRIPT_WORD!r})")
    values: dict = {"files": [], "echo_env": []}
    rest = iter(words[1:])

    def arg(flag: str) -> str:
        try:
            return next(rest)
        except StopIteration:
            raise ExecutionError(f"fake backend: {flag} needs a value in {command!r}") from None

    for word in rest:
        if word == "--exit":
            values["exit_codes"] = tuple(int(c) for c in arg(word).split(","))
        elif word in ("--stdout", "--stderr"):
            values[word[2:]] = arg(word).encode("utf-8", "surrogateescape")
        elif word == "--file":
            name = arg(word)
            values["files"].append((name, arg(word).encode("utf-8", "surrogateescape")))
        elif word == "--duration":
            values["duration"] = float(arg(word))
        elif word == "--hang":
            values["hang"] = True
        elif word == "--lose":
            values["lose"] = int(arg(word))
        elif word == "--echo-env":
            values["echo_env"].append(arg(word))
        elif word == "--checkpoint":
            values["checkpoint"] = True
        else:
            raise ExecutionError(f"fake backend: unknown word {word!r} in {command!r}; valid: --exit, --stdout, "
                                 "--stderr, --file, --duration, --hang, --lose, --echo-env, --checkpoint")
    values["files"] = tuple(values["files"])
    values["echo_env"] = tuple(values["echo_env"])
    return Script(**values)


# ----------------------------------------------------------------------------------- output globs
def _has_magic(segment: str) -> bool:
    return any(c in segment for c in "*?[")


def _match(segments: list[str], parts: tuple[str, ...]) -> bool:
    """Python's glob.glob(recursive=True) on one path: hidden names only by a pattern that says so."""
    if not segments:
        return not parts
    head = segments[0]
    if head == "**":
        return _match(segments[1:], parts) or (bool(parts) and not parts[0].startswith(".")
                                               and _match(segments, parts[1:]))
    if not parts:
        return False
    if _has_magic(head):
        if parts[0].startswith(".") and not head.startswith("."):
            return False
        if not fnmatch.fnmatchcase(parts[0], head):
            return False
    elif parts[0] != head:
        return False
    return _match(segments[1:], parts[1:])


def match_outputs(paths: Iterable[str], patterns: Iterable[str]) -> list[str]:
    """The files among ``paths`` (relative, '/'-separated) that the output globs select, as the agent's
    result_files selects them on disk: a matched directory brings every file under it; never .orchestra/."""
    patterns = [p for p in patterns if not p.startswith("/") and ".." not in p.split("/")]
    found = set()
    for path in paths:
        parts = tuple(path.split("/"))
        if parts[0] == META_DIR:
            continue
        for pattern in patterns:
            segments = [s for s in pattern.split("/") if s not in ("", ".")]
            if any(_match(segments, parts[:k]) for k in range(len(parts) + 1)):
                found.add(path)
                break
    return sorted(found)


# ------------------------------------------------------------------------------------------- the world
@dataclasses.dataclass
class FakePlace:
    name: str
    slots: int
    node: str | None = None  # set for places that came from an allocation (a scheduler node)
    alive: bool = True
    commits: set[str] = dataclasses.field(default_factory=set)  # code shipped here


@dataclasses.dataclass
class FakeRun:
    """One run directory on a place, and the execution in it."""

    execution_id: str
    place: str
    slot: int
    remote_dir: str
    pid: int
    started: float
    script: Script
    attempt: int
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    exit_code: int | None = None
    ended: float | None = None
    lost: bool = False
    error: str | None = None
    done: gevent.event.Event = dataclasses.field(default_factory=gevent.event.Event)
    timer: _Timer | None = None

    @property
    def running(self) -> bool:
        return not self.done.is_set()


class FakeWorld:
    """Everything that outlives a controller: places, allocations, run directories, the clock.

    ``places``/``slots``: places available from the start. ``allocation``: instead, places come from
    allocations a backend asks for (``places`` nodes each); ``pending=True`` keeps them pending until
    :meth:`grant` (never, if the test does not call it)."""

    def __init__(self, places: int = 1, slots: int = 1, *, clock: FakeClock | None = None,
                 allocation: bool = False, pending: bool = False, workdir: str = "/fake/orchestra",
                 walltime: float | None = None) -> None:
        self.clock = clock or FakeClock()
        # Allocations end ``walltime`` after they are granted: their places vanish, as Slurm kills a job.
        self.walltime = walltime
        self.expiry: dict[str, float] = {}  # allocation -> when it ends
        self.checkpoints: dict[str, tuple[float, float]] = {}  # execution id -> (work saved, when)
        self.warnings: list[tuple[str, int, float, float]] = []  # (execution id, signal, grace, when)
        self.guards: dict[str, str] = {}  # execution id -> the trap its wrapper shell was given
        self.workdir = workdir
        self.allocation = allocation
        self.pending = pending
        self.slots_per_place = slots
        self.places: dict[str, FakePlace] = {}
        self.runs: dict[str, FakeRun] = {}  # run directory -> run
        self.allocations: list[str] = []  # asked for, in order
        self.granted: set[str] = set()
        self.launches: list[tuple[str, str, int]] = []  # (execution id, place, attempt): what a test counts
        self.attempts: dict[str, int] = {}
        self._pids = itertools.count(1000)
        self.changed = gevent.event.Event()  # set on every change of places (backends re-read them)
        if not allocation:
            for index in range(places):
                self.add_place(f"place{index + 1}", slots)
        self._allocation_places = places

    # -- places
    def add_place(self, name: str, slots: int, node: str | None = None) -> FakePlace:
        place = self.places[name] = FakePlace(name, slots, node)
        self._notify()
        return place

    def request_allocation(self) -> str:
        """A backend asks for nodes: granted at once unless the world keeps allocations pending."""
        job_id = f"fake-{len(self.allocations) + 1}"
        self.allocations.append(job_id)
        if not self.pending:
            self.grant(job_id)
        return job_id

    def grant(self, job_id: str | None = None) -> None:
        """The scheduler starts an allocation: its nodes become places."""
        job_id = job_id or (self.allocations[-1] if self.allocations else "fake-1")
        self.granted.add(job_id)
        nodes = [f"{job_id}-node{index + 1}" for index in range(self._allocation_places)]
        if self.walltime is not None:
            end = self.expiry[job_id] = self.clock.time() + self.walltime
            self.clock.call_at(end, lambda: self._end_allocation(nodes))
        for node in nodes:
            self.add_place(node, self.slots_per_place, node=node)

    def _end_allocation(self, nodes: list[str]) -> None:
        """Its walltime passed: the scheduler kills what runs on its nodes."""
        for node in nodes:
            if self.places[node].alive:
                self.vanish(node)

    def expires(self, place: str) -> float | None:
        node = self.places[place].node
        job_id = node.rsplit("-node", 1)[0] if node else None
        return self.expiry.get(job_id) if job_id is not None else None

    def vanish(self, place: str) -> None:
        """The place goes away (a node failure, a cancelled allocation): what runs there is lost."""
        found = self.places[place]
        found.alive = False
        for run in list(self.runs.values()):
            if run.place == place and run.running:
                self._end(run, None, lost=True, error=f"place {place} vanished under the execution")
        self._notify()

    def place_of(self, handle: RunHandle) -> str:
        return self.runs[handle.remote_dir].place

    def _notify(self) -> None:
        self.changed.set()
        self.changed = gevent.event.Event()

    # -- runs
    def run_dir(self, execution_id: str) -> str:
        return posixpath.join(self.workdir, "runs", execution_id)

    def start_run(self, place: str, slot: int, job: Job) -> FakeRun:
        attempt = self.attempts[job.execution_id] = self.attempts.get(job.execution_id, 0) + 1
        # No shell here to run the environment probe in: its prefix (and record_env's) is dropped.
        command = strip_prefixes(job.command, job.commit)
        if command.startswith("trap : "):  # checkpoints.guarded: what the wrapper shell would evaluate first
            trap, command = command.split("; ", 1)
            self.guards[job.execution_id] = trap
        script = parse_script(strip_prefixes(command, job.commit))
        remote_dir = self.run_dir(job.execution_id)
        run = FakeRun(job.execution_id, place, slot, remote_dir, next(self._pids), self.clock.time(), script,
                      attempt)
        if script.checkpoint and job.execution_id in self.checkpoints:  # resume: only what is left runs
            script = dataclasses.replace(script, duration=max(0.0, script.duration -
                                                              self.checkpoints[job.execution_id][0]))
            run.script = script
        self.runs[remote_dir] = run
        self.launches.append((job.execution_id, place, attempt))
        if not self.places[place].alive:
            self._end(run, None, lost=True, error=f"place {place} is gone")
        elif not script.hang:
            env = dict(job.env)
            run.timer = self.clock.call_at(run.started + script.duration, lambda: self._complete(run, env))
        return run

    def _complete(self, run: FakeRun, env: Mapping[str, str]) -> None:
        if not run.running:
            return
        if run.attempt <= run.script.lose:
            self.vanish(run.place)
            return
        stdout = run.script.stdout + b"".join(env.get(n, "").encode() + b"\n" for n in run.script.echo_env)
        run.files.update(run.script.files)
        run.files[STDOUT_FILE] = stdout
        run.files[STDERR_FILE] = run.script.stderr
        self._end(run, run.script.exit_code(run.attempt))

    def warn(self, run: FakeRun, signal: int, grace: float) -> None:
        """The checkpoint warning: a checkpointing script saves its work and exits 0 at once; any other
        is killed after the grace (it ignores the signal)."""
        self.warnings.append((run.execution_id, signal, grace, self.clock.time()))
        if not run.running:
            return
        if run.script.checkpoint:
            saved = self.checkpoints.get(run.execution_id, (0.0, 0.0))[0]
            self.checkpoints[run.execution_id] = (saved + self.clock.time() - run.started, self.clock.time())
            run.files.setdefault(STDOUT_FILE, b"")
            run.files.setdefault(STDERR_FILE, b"")
            self._end(run, 0)
        else:
            self.clock.call_at(self.clock.time() + grace, lambda: self._kill_after_grace(run))

    def _kill_after_grace(self, run: FakeRun) -> None:
        if run.running:
            self._end(run, 137)

    def terminate(self, run: FakeRun) -> None:
        """TERM: what it wrote so far stays (nothing, for a fake), the wrapper reports 143."""
        if run.running:
            run.files.setdefault(STDOUT_FILE, b"")
            run.files.setdefault(STDERR_FILE, b"")
            self._end(run, TERM_EXIT)

    def _end(self, run: FakeRun, code: int | None, *, lost: bool = False, error: str | None = None) -> None:
        if run.timer is not None:
            run.timer.cancel()
        run.exit_code, run.ended, run.lost, run.error = code, self.clock.time(), lost, error
        run.done.set()

    def close(self) -> None:
        """Stop the clock's greenlet: nothing more happens in this world."""
        self.clock.close()

    def listing(self) -> list[str]:
        """The run directories left in the work directory (what a discard must remove)."""
        return sorted(self.runs)


# ------------------------------------------------------------------------------------------- backend
class FakeBackend(SlotsOnly):
    """The Backend protocol over a FakeWorld. Backends share a world one after another: a controller
    that died, then its resume (two at once would both hand out the same slots, as two controllers on one
    SSH host would)."""

    name = "fake"
    running_commit_delay = 0.0  # like the remote backends: the record names the place before it ends

    def __init__(self, world: FakeWorld) -> None:
        self.world = world
        self._free: list[Slot] = []
        self._known: set[Slot] = set()
        self._busy: set[Slot] = set()
        self._reattached: dict[str, Slot] = {}
        self._give_up = False
        self._closed = False
        self._started = False
        self._asked: str | None = None  # the allocation this backend asked for last
        self.saved_checkpoints: list[tuple[str, float]] = []  # (execution, virtual time) of each save asked
        # Set once the first allocation is asked for (or none is needed), as AllocationBackend.submitted:
        # `expegit run` creates its branches after it, while the allocation queues.
        self.submitted = gevent.event.Event()

    # -- slots
    def start(self, expected: int = 0) -> None:
        self._started = True
        if self.world.allocation and expected > 0:
            self._ask()
        self.submitted.set()

    def _ask(self, force: bool = False) -> None:
        """Ask for an allocation when none serves: none asked yet, or the last one's nodes all vanished
        (as the Slurm backend submits a new one once the last ended), or (``force``) none has the time
        left a waiter needs. One pending at a time."""
        if not force and any(p.alive for p in self.world.places.values()):
            return
        if self._asked is not None and self._asked not in self.world.granted:
            return  # still pending
        self._asked = self.world.request_allocation()

    def _refresh(self) -> None:
        """New places become free slots; a vanished place's slots are retired."""
        for place in self.world.places.values():
            for index in range(place.slots):
                slot = Slot(place.name, index, place.node)
                if place.alive and slot not in self._known:
                    self._known.add(slot)
                    self._free.append(slot)
        self._free = [s for s in self._free if self.world.places[s.host].alive]

    def acquire(self, need: float | None = None) -> Slot:
        if not self._started:
            raise ExecutionError("fake backend: start() first")
        if need is not None and self.world.walltime is not None and need > self.world.walltime:
            need = None  # as walltime.need says: no allocation would ever do, so any slot
        while True:
            if self._give_up:
                raise NoSlot()
            self._refresh()
            now = self.world.clock.time()
            fitting = [s for s in self._free if fits(need, self.world.expires(s.host), now)]
            if fitting:
                slot = fitting[0]
                self._free.remove(slot)
                self._busy.add(slot)
                return slot
            changed = self.world.changed
            if self.world.allocation:
                self._ask(force=bool(self._free))
                if self.world.changed is not changed:
                    continue  # granted at once
            changed.wait()

    def stop_waiting(self) -> None:
        """Ctrl-C: an acquire() waiting for a slot that may never come raises NoSlot."""
        self._give_up = True
        self.world._notify()

    def release(self, slot: Slot) -> None:
        self._busy.discard(slot)
        if slot in self._known and self.world.places[slot.host].alive and slot not in self._free:
            self._free.append(slot)
            self.world._notify()

    @property
    def workdir(self) -> str:
        return self.world.workdir

    def release_orphans(self) -> list[str]:
        """Allocations a dead controller held: the fake's are the world's, never orphaned."""
        return []

    def waiting_for(self) -> str | None:
        """What acquire() waits on, for the progress line (as the Slurm backend says it)."""
        if self._asked is not None and self._asked not in self.world.granted:
            return f"allocation {self._asked} pending"
        return None

    # -- executions
    def _run(self, handle: RunHandle) -> FakeRun:
        run = self.world.runs.get(handle.remote_dir)
        if run is None or run.execution_id != handle.execution_id:
            raise ExecutionError(f"fake backend: no run directory {handle.remote_dir}")
        return run

    def launch(self, slot: Slot, job: Job, code: CodeArchive) -> RunHandle:
        place = self.world.places[slot.host]
        if job.commit not in place.commits:
            for _chunk in code(job.commit):  # shipped once per place and commit, as the real backends do
                pass
            place.commits.add(job.commit)
        previous = self.world.runs.get(self.world.run_dir(job.execution_id))
        if previous is not None and previous.running:
            raise ExecutionError(f"fake backend: {job.execution_id} is already running")
        saved = self.world.checkpoints.get(job.execution_id) if job.checkpoint is not None else None
        run = self.world.start_run(slot.host, slot.index, job)
        return RunHandle(job.execution_id, slot, run.remote_dir, pid=run.pid, started=run.started,
                         resumed_from=saved[1] if saved else None)

    def wait(self, handle: RunHandle, timeout: float | None) -> Outcome:
        try:
            run = self._run(handle)
            remaining = None if timeout is None else max(0.0, run.started + timeout - self.world.clock.time())
            if not self.world.clock.wait(run.done, remaining):
                self.world.terminate(run)
                return Outcome(run.exit_code, run.started, run.ended, timed_out=True,
                               error=f"timed out after {timeout:g}s")
            return Outcome(run.exit_code, run.started, run.ended, lost=run.lost, error=run.error)
        finally:
            slot = self._reattached.pop(handle.execution_id, None)
            if slot is not None:
                self._busy.discard(slot)  # a re-attached execution held its slot until it ended
                self.release(slot)

    def collect(self, handle: RunHandle, job: Job, dest: Path) -> Collected:
        run = self._run(handle)
        if run.running:
            raise ExecutionError(f"fake backend: {handle.execution_id} is still running")
        outputs = match_outputs(run.files, job.outputs)
        contents = {rel: run.files[rel] for rel in outputs}
        contents[STDOUT_FILE] = run.files.get(STDOUT_FILE, b"")
        contents[STDERR_FILE] = run.files.get(STDERR_FILE, b"")
        return Collected(dest, dest / STDOUT_FILE, dest / STDERR_FILE, outputs, contents=contents)

    def discard(self, handle: RunHandle) -> None:
        self.world.runs.pop(handle.remote_dir, None)

    def stop(self, handle: RunHandle) -> None:
        run = self.world.runs.get(handle.remote_dir)
        if run is not None:
            self.world.terminate(run)

    def expires(self, slot: Slot) -> float | None:
        return self.world.expires(slot.host) if slot.host in self.world.places else None

    def warn(self, handle: RunHandle, signal: int, grace: float) -> None:
        run = self.world.runs.get(handle.remote_dir)
        if run is not None:
            self.world.warn(run, signal, grace)

    def drop_checkpoint(self, execution_id: str) -> None:
        self.world.checkpoints.pop(execution_id, None)

    def save_checkpoint(self, handle: RunHandle) -> float | None:
        # The world's store is shared, so nothing is copied: what is recorded is when the controller asked.
        self.saved_checkpoints.append((handle.execution_id, self.world.clock.time()))
        return None

    def reattach(self, execution_id: str, host: str | None, slot: int | None,
                 remote_dir: str | None) -> RunHandle | None:
        run = self.world.runs.get(remote_dir or self.world.run_dir(execution_id))
        if run is None or run.execution_id != execution_id or run.lost:
            return None
        if host is not None and host != run.place:
            return None
        place = self.world.places[run.place]
        the_slot = Slot(run.place, slot if slot is not None else run.slot, place.node)
        if place.alive:  # held even if it already ended: until wait() says so, as the SSH backend does
            self._refresh()
            if the_slot in self._free:  # held by the re-attached execution until it ends (see wait)
                self._free.remove(the_slot)
                self._busy.add(the_slot)
                self._reattached[execution_id] = the_slot
        return RunHandle(execution_id, the_slot, run.remote_dir, pid=run.pid, started=run.started)

    def close(self) -> None:
        """A controller that closes leaves detached executions running, as the real ones do."""
        self._closed = True
        self.stop_waiting()


__all__ = ["FakeBackend", "FakeClock", "FakePlace", "FakeRun", "FakeWorld", "Script", "match_outputs",
           "parse_script", "render_script"]
