"""``runaway test``: check a profile step by step (profile, connection, tools, workdir, allocation, nodes,
one trivial run), each step timed, and a failing one named with its fix.

Everything it learns comes through the Backend protocol (transports, workdirs, allocation_of): it
checks the same backend `expegit run` would use, not a private path to it.
"""
from __future__ import annotations

import hashlib
import io
import shlex
import shutil
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import gevent

from orchestra.errors import ExecutionError, OrchestraError, ProfileError

from .backend import Backend, Job
from .exec import load_profile
from .factory import make_backend
from .profiles import LocalProfile, Profile, SlurmProfile, SSHProfile

if TYPE_CHECKING:
    from .transports import Transport


class _Steps:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed = False

    def step(self, name: str, action: Callable[[], str | None], fix: str | None = None) -> Any:
        start = time.monotonic()
        try:
            detail = action()
        except BaseException as exc:
            elapsed = time.monotonic() - start
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            hint = getattr(exc, "hint", None) or fix
            if isinstance(exc, gevent.Timeout):
                message = f"no answer within {exc.seconds:g}s"
            print(f"FAIL  {name:<12} {elapsed:6.2f}s  {message}", file=self.out, flush=True)
            if hint:
                print(f"      fix: {hint}", file=self.out, flush=True)
            self.failed = True
            raise _StepFailed(exc) from None
        print(f"ok    {name:<12} {time.monotonic() - start:6.2f}s  {detail or ''}".rstrip(), file=self.out, flush=True)
        return detail


class _StepFailed(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _check_agent_python(host: "Transport", python: str, timeout: float) -> None:
    """The agent (runaway/agent/) needs Python 3.6 on the host; say so before anything is launched."""
    probe = host.run(f"{shlex.quote(python)} -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'",
                     timeout=timeout, warn=True)
    words = probe.stdout.strip().split(".")
    version = tuple(int(w) for w in words if w.isdigit())
    if len(version) != 2 or version < (3, 6):
        raise ProfileError(f"{host.name}: {python} is {probe.stdout.strip() or 'not runnable'}; the agent needs "
                           "Python 3.6 or later", hint="set python: to a newer interpreter in the profile, or "
                                                        "launcher: shell (ssh) / srun (slurm)")


def _empty_archive(commit: str) -> Iterator[bytes]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("README")
        data = b"runaway test\n"
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    yield buf.getvalue()


def test_profile(profile_name: str, *, cwd: Path, timeout: float = 120.0, out: TextIO = sys.stdout) -> int:
    """``runaway test``: connection, allocation, nodes, one trivial run; each step timed, with the fix."""
    steps = _Steps(out)
    state: dict[str, Any] = {}
    backend: Backend | None = None
    try:
        def profile_step() -> str:
            state["profile"] = load_profile(profile_name, cwd)
            p = state["profile"]
            where = (", ".join(h.destination for h in p.hosts) if isinstance(p, SSHProfile) else
                     getattr(p, "host", "") or "this machine")
            return f"{p.kind} on {where}"

        steps.step("profile", profile_step)
        profile = state["profile"]
        backend = live = make_backend(profile)
        if not isinstance(profile, LocalProfile):
            hosts = live.transports()

            def connect() -> str:
                details = []
                for host in hosts:
                    with gevent.Timeout(timeout):
                        t0 = time.monotonic()
                        host.check()
                        host.run("true", timeout=timeout)
                        details.append(f"{host.describe()} ({(time.monotonic() - t0) * 1000:.0f} ms)")
                return ", ".join(details)

            steps.step("connection", connect)

            def tools() -> str:
                found = []
                for host in hosts:
                    need = [profile.python, "tar", "setsid", "nohup"]
                    if isinstance(profile, SlurmProfile) and profile.kind == "slurm":
                        need += ["sbatch", "squeue", "srun", "scancel"]
                    script = "; ".join(f"command -v {shlex.quote(t)} >/dev/null || echo {shlex.quote(t)}"
                                       for t in need)
                    missing = host.run(script, timeout=timeout, warn=True).stdout.split()
                    if missing:
                        raise ProfileError(f"{host.name}: not found on the host: {', '.join(missing)}",
                                           hint="install them or put them on the PATH of non-interactive shells"
                                                + ("; or set python: in the profile" if profile.python in missing else ""))
                    if getattr(profile, "launcher", "") == "agent":
                        _check_agent_python(host, profile.python, timeout)
                    found.append(host.name)
                return "python3, tar" + (", sbatch/squeue/srun/scancel" if profile.kind == "slurm" else "")

            steps.step("tools", tools)
        def workdir() -> str:
            live.start()
            return _workdir(live, profile)

        steps.step("workdir", workdir,
                   fix="check that the profile's workdir is writable on the host")
        if isinstance(profile, SlurmProfile):
            def allocate() -> str:
                with gevent.Timeout(timeout):
                    state["slot"] = live.acquire()
                alloc = live.allocation_of(state["slot"])
                return f"job {alloc.job_id}" if alloc else ""

            pending_fix = ("the allocation did not start: check `squeue -u $USER` (its reason) and `sinfo`; ask for "
                           "fewer allocation.nodes, a shorter walltime or another partition")
            steps.step("allocation", allocate, fix=pending_fix)

            def nodes() -> str:
                alloc = live.allocation_of(state["slot"])
                names = list(alloc.nodes) if alloc else []
                return f"{len(names)} node(s) x {profile.slots_per_node} slot(s): {', '.join(names)}"

            steps.step("nodes", nodes)
        else:
            state["slot"] = live.acquire()

        def trivial() -> str:
            job = Job(uuid.uuid4().hex[:12], hashlib.sha256(b"runaway-test").hexdigest(),
                      "echo runaway-ok; hostname", timeout=timeout)
            with gevent.Timeout(timeout + 30):
                handle = live.launch(state["slot"], job, _empty_archive)
                outcome = live.wait(handle, timeout)
                staging = Path(tempfile.mkdtemp(prefix="runaway-test-"))
                try:
                    collected = live.collect(handle, job, staging / "out").materialized()
                    text = collected.stdout.read_text(errors="replace").split()
                    error = collected.stderr.read_text(errors="replace").strip()
                finally:
                    live.discard(handle)
                    shutil.rmtree(staging, ignore_errors=True)
            if outcome.exit_code != 0 or not text or text[0] != "runaway-ok":
                raise ExecutionError(f"the trivial run ended with exit {outcome.exit_code} "
                                     f"{outcome.error or ''}: {error[-200:]}".rstrip(),
                                     hint="run the failing step by hand on the host; check setup: and env: of the profile")
            where = handle.slot.node or handle.slot.host
            machine = f" ({text[1]})" if len(text) > 1 and text[1] != where else ""
            return f"exit 0 on {where}{machine} slot {handle.slot.index}"

        steps.step("run", trivial)
        live.release(state["slot"])
    except _StepFailed as failed:
        cause = failed.cause
        if backend is not None:
            try:
                backend.close()
            except Exception:
                pass
            backend = None
        return cause.exit_code if isinstance(cause, OrchestraError) else 1
    finally:
        if backend is not None:
            t0 = time.monotonic()
            backend.close()
            print(f"ok    {'release':<12} {time.monotonic() - t0:6.2f}s", file=out, flush=True)
    print(f"profile {profile_name}: all steps passed", file=out)
    return 0


def _workdir(backend: Backend, profile: Profile) -> str:
    workdirs = backend.workdirs()
    if isinstance(profile, SSHProfile):
        return ", ".join(f"{h}:{w}" for h, w in workdirs.items())
    return ", ".join(workdirs.values())


__all__ = ["test_profile"]
