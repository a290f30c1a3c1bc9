"""Every backend, built one way for the contract suite: the ONE place that knows how each is made.

Each case gives the tests the same few things: a fresh backend over the same places (a second one is a
controller after the first died), a command that behaves as described, and the per-backend hooks the
assertions must not know: how a controller dies, how a place vanishes, what is left in the work
directory. The real backends come from the project's one factory (runaway.factory: campaign_backend for
local, make_backend for remote profiles): when the factory changes, only the
``_*_case`` functions here change (and the Slurm ``die`` hook, which empties AllocationBackend.allocations).

The real cases need the dev cluster (tests/integration/conftest.py's ``devcluster`` fixture: skipped with
the reason when it is absent, never under CI=true). gevent is monkey-patched in that conftest, the test
entry, as the CLI does.
"""
from __future__ import annotations

import dataclasses
import os
import posixpath
import shlex
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest

from orchestra.manifest import Manifest
from runaway.backend import Backend, CodeArchive, Job, RunHandle
from runaway.fake import FakeBackend, FakeWorld, render_script
from tests.integration.conftest import DevCluster, devcluster, make_archive  # noqa: F401  (fixture)

EXAMPLES = Path(__file__).resolve().parents[2] / "runaway" / "examples"
CASE_LIMIT = 240.0  # seconds one contract test may take on a real backend before it fails instead of hanging
ALL_CASES = ("fake", "local", "ssh-agent", "ssh-shell", "slurm-agent", "slurm-srun", "pbs-command")
AGENT_SPARE_PREFIX = ".spare-"  # run directories the agent keeps to recycle (runaway/agent.py RunDirs)


@dataclasses.dataclass(frozen=True)
class Behaviour:
    """What an execution does, said once for every backend (rendered as a shell line or a fake script)."""

    exit: int = 0
    stdout: str = ""
    stderr: str = ""
    files: tuple[tuple[str, str], ...] = ()
    sleep: float = 0.0  # seconds before it writes anything
    hang: bool = False  # runs until stopped, timed out or lost
    exec_: bool = False  # the shell line ends by exec'ing its last program (as Slurm scripts often do)


def render_shell(behaviour: Behaviour) -> str:
    """A POSIX sh line doing ``behaviour``; every piece of data goes through shlex.quote."""
    q = shlex.quote
    steps = []
    if behaviour.sleep:
        steps.append(f"sleep {behaviour.sleep:g}")
    for name, data in behaviour.files:
        folder = posixpath.dirname(name)
        if folder:
            steps.append(f"mkdir -p -- {q(folder)}")
        steps.append(f"printf %s {q(data)} > {q(name)}")
    if behaviour.stdout:
        steps.append(f"printf %s {q(behaviour.stdout)}")
    if behaviour.stderr:
        steps.append(f"printf %s {q(behaviour.stderr)} >&2")
    if behaviour.hang:
        # `|| exit $?`: a signal that ends the sleep ends the execution with the sleep's status. With
        # `sleep 600; exit N`, a kill that reached the sleep before the shell (scancel signals a step's
        # processes one by one) let the shell go on to `exit N`: a vanished allocation read as a success
        # (loaded machine, 2026-12-02). Not `exec sleep` here: eval'ed, that replaces the wrapper's shell (its exit trap
        # and its marker) unless the wrapper sees the exec: that case is Behaviour.exec_.
        steps.append("exec sleep 600" if behaviour.exec_ else "sleep 600 || exit $?")
    steps.append(f"exec sh -c 'exit {behaviour.exit}'" if behaviour.exec_ else f"exit {behaviour.exit}")
    return "; ".join(steps)


def render_fake(behaviour: Behaviour) -> str:
    return render_script(exit=behaviour.exit, stdout=behaviour.stdout, stderr=behaviour.stderr,
                         files=dict(behaviour.files), duration=behaviour.sleep, hang=behaviour.hang)


@dataclasses.dataclass
class Case:
    """One backend under the contract, with its per-backend hooks."""

    name: str
    make: Callable[[], Backend]  # a new, not yet started backend over the same places and work directory
    render: Callable[[Behaviour], str]
    vanish: Callable[[Backend, RunHandle], None]  # the place running ``handle`` goes away
    leftovers: Callable[[], list[str]]  # entries left under the work directory's runs/
    die: Callable[[Backend], None]  # the controller dies: the backend is dropped, nothing discarded
    tmp: Path
    cleanup: Callable[[], None] = lambda: None  # what the test leaves on the places (agents, allocations)
    code: CodeArchive = dataclasses.field(default_factory=lambda: make_archive({"README": "contract\n"}))
    made: list[Backend] = dataclasses.field(default_factory=list)
    _ids: int = 0

    def new(self, *, start: bool = True) -> Backend:
        backend = self.make()
        self.made.append(backend)
        if start:
            backend.start()
        return backend

    def job(self, behaviour: Behaviour, outputs: tuple[str, ...] = (), timeout: float | None = None) -> Job:
        self._ids += 1
        return Job(f"c0{self._ids:010x}", "c0ffee" + "0" * 34, self.render(behaviour), outputs=outputs,
                   timeout=timeout)

    def dest(self, label: str) -> Path:
        return self.tmp / "collected" / label


# --------------------------------------------------------------------------------------- the fake
def _fake_case(tmp_path: Path) -> Case:
    world = FakeWorld(places=1, slots=2)

    def vanish(_backend: Backend, handle: RunHandle) -> None:
        world.vanish(world.place_of(handle))

    return Case("fake", lambda: FakeBackend(world), render_fake, vanish, world.listing,
                lambda backend: backend.close(), tmp_path, cleanup=world.close)


# --------------------------------------------------------------------------------------- local
def _pids_mentioning(text: str) -> list[int]:
    """This machine's processes whose command line names ``text`` (a path unique to the test)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def _kill(pids: list[int], sig: int, group: bool = False) -> None:
    for pid in pids:
        try:
            (os.killpg if group else os.kill)(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _local_case(tmp_path: Path) -> Case:
    from runaway.factory import campaign_backend as make_backend

    workdir = tmp_path / "campaign-private"
    manifest = Manifest(name="contract", command="true", parameters={})

    def vanish(_backend: Backend, handle: RunHandle) -> None:
        # The machine's view of a vanished place: its agent and the execution's whole group gone at once,
        # no exit code written by anyone.
        _kill(_pids_mentioning(str(workdir)), signal.SIGKILL)
        assert handle.pid is not None
        _kill([handle.pid], signal.SIGKILL, group=True)

    def leftovers() -> list[str]:
        runs = workdir / "runs"
        return sorted(p.name for p in runs.iterdir() if not p.name.startswith(AGENT_SPARE_PREFIX)) \
            if runs.is_dir() else []

    return Case("local", lambda: make_backend("local", manifest, workdir, slots=2), render_shell, vanish,
                leftovers, lambda backend: backend.close(), tmp_path,
                cleanup=lambda: _kill(_pids_mentioning(str(workdir)), signal.SIGTERM))


# --------------------------------------------------------------------------------------- the dev cluster
class _Remote:
    """A connection of the fixture's own to the dev cluster (never one of the backend's)."""

    def __init__(self, cluster: DevCluster, workdir: str) -> None:
        from runaway.hosts import Host

        self.host = Host("devcluster", ssh_config=cluster.ssh_config)
        self.workdir = workdir  # ~-relative, unique to the test

    def run(self, cmd: str) -> str:
        return self.host.run(cmd, warn=True, timeout=60).stdout

    def leftovers(self) -> list[str]:
        names = self.run(f"ls -A {self.workdir}/runs 2>/dev/null").splitlines()
        return sorted(n for n in names if n and not n.startswith(AGENT_SPARE_PREFIX))

    def kill_agents(self) -> None:
        """SIGKILL this test's agent processes (their command lines name the test's unique workdir)."""
        unique = self.workdir.lstrip("~/")
        # `[.]x` matches ".x" but not the text "[.]x": the shell running this pkill is not killed with them.
        self.run(f"pkill -KILL -u \"$(id -un)\" -f -- {shlex.quote('[.]' + unique[1:])} ; true")

    def kill_group(self, pid: int) -> None:
        self.run(f"kill -KILL -{int(pid)} 2>/dev/null; true")

    def close(self) -> None:
        self.kill_agents()
        self.run(f"rm -rf {self.workdir}")
        self.host.close()


def _remote_common(cluster: DevCluster, tag: str) -> dict:
    return {"host": "devcluster", "ssh_config": cluster.ssh_config, "workdir": f"~/.orchestra-test-{tag}",
            "poll_interval": 0.3}


def _ssh_case(tmp_path: Path, cluster: DevCluster, launcher: str) -> Case:
    from runaway.factory import make_backend
    from runaway.profiles import build_profile

    tag = f"contract-{uuid.uuid4().hex[:10]}"
    profile = build_profile("contract", {"kind": "ssh", "slots": 2, "launcher": launcher,
                                         **_remote_common(cluster, tag)})
    remote = _Remote(cluster, f"~/.orchestra-test-{tag}")

    def vanish(_backend: Backend, handle: RunHandle) -> None:
        remote.kill_agents()  # the host's agent first: nothing is left to write an exit code
        assert handle.pid is not None
        remote.kill_group(handle.pid)

    return Case(f"ssh-{launcher}", lambda: make_backend(profile, state_dir=tmp_path / "state"), render_shell,
                vanish, remote.leftovers, lambda backend: backend.close(), tmp_path, cleanup=remote.close)


def _allocation_case(tmp_path: Path, cluster: DevCluster, kind: str, launcher: str | None) -> Case:
    from runaway.factory import make_backend
    from runaway.profiles import build_profile, load_profile_file

    tag = f"contract-{uuid.uuid4().hex[:10]}"
    name = f"ct{tag[-10:]}"  # unique: the allocation's job name is orchestra-<profile name>
    settings = {**_remote_common(cluster, tag), "slots_per_node": 2, "squeue_interval": 0.5,
                "idle_release": 30, "max_allocations": 1}
    if kind == "pbs-command":
        data = load_profile_file(EXAMPLES / "pbs.yaml")
        data.update(settings, allocation={"nodes": 1, "walltime": "00:10:00"})
    else:
        data = {"kind": "slurm", **settings, "allocation": {"nodes": 1, "walltime": "10m"}, "launcher": launcher}
    profile = build_profile(name, data)
    remote = _Remote(cluster, f"~/.orchestra-test-{tag}")
    job_name = f"orchestra-{name}"

    def cancel_allocation(*_args: object) -> None:
        # An admin's scancel (PBS over slurm-wlm-torque: the same job, by its -N name): this test's only.
        cluster.slurm(f"scancel --name={shlex.quote(job_name)}")

    def die(backend: Backend) -> None:
        # kill -9 of a controller cancels nothing: its allocations stay (a resume releases them). close()
        # would cancel them, so forget them first (public attribute of AllocationBackend).
        backend.allocations.clear()  # type: ignore[attr-defined]
        backend.close()

    def cleanup() -> None:
        cancel_allocation()
        remote.close()

    return Case(kind if launcher is None else f"{kind}-{launcher}",
                lambda: make_backend(profile, state_dir=tmp_path / "state"), render_shell, cancel_allocation,
                remote.leftovers, die, tmp_path, cleanup=cleanup)


# --------------------------------------------------------------------------------------- the fixture
@pytest.fixture(params=ALL_CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Case]:
    """Each contract test once per backend."""
    which = request.param
    if which == "fake":
        built = _fake_case(tmp_path)
    elif which == "local":
        built = _local_case(tmp_path)
    else:
        cluster = request.getfixturevalue("devcluster")
        if which.startswith("ssh-"):
            built = _ssh_case(tmp_path, cluster, which[4:])
        elif which.startswith("slurm-"):
            built = _allocation_case(tmp_path, cluster, "slurm", which[6:])
        else:
            built = _allocation_case(tmp_path, cluster, "pbs-command", None)
    limit = gevent.Timeout(CASE_LIMIT, AssertionError(f"{which}: the contract test ran over {CASE_LIMIT:g}s"))
    limit.start()
    try:
        yield built
    finally:
        limit.close()
        for backend in built.made:
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - a backend the test already closed or killed
                pass
        built.cleanup()


def eventually(check: Callable[[], bool], within: float = 20.0) -> bool:
    """Bounded wait for what a backend does asynchronously (an agent's removal arrives shortly after)."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.1)
    return True
