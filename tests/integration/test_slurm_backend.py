"""The slurm backend (and the PBS `command` example) against the dev cluster's real Slurm."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import gevent
import pytest

from runaway.backend import Job
from runaway.factory import make_backend
from runaway.profiles import build_profile, load_profile_file

pytestmark = pytest.mark.usefixtures("remote_workdir_cleanup")

COMMIT = "5eed" + "0" * 36
EXAMPLES = Path(__file__).resolve().parents[2] / "runaway" / "examples"
PROBE = """\
import os, time
time.sleep(float(os.environ.get("NAP", "0.3")))
print(os.environ["ORCHESTRA_NODE"], os.environ.get("SLURMD_NODENAME"), os.environ.get("SLURM_JOB_ID"))
"""


def _drive(backend, n: int, code, tmp_path: Path, nap: float = 0.3) -> list[tuple[int | None, str]]:
    def one(i: int) -> tuple[int | None, str]:
        slot = backend.acquire()
        try:
            job = Job(f"{i:012x}", COMMIT, "python3 probe.py", env={"NAP": str(nap)})
            handle = backend.launch(slot, job, code)
            outcome = backend.wait(handle, 120)
            collected = backend.collect(handle, job, tmp_path / f"out{i}").materialized()
            backend.discard(handle)
            return outcome.exit_code, collected.stdout.read_text().strip()
        finally:
            backend.release(slot)

    jobs = [gevent.spawn(one, i) for i in range(n)]
    gevent.joinall(jobs, raise_error=True)
    return [j.value for j in jobs]


def _name(tmp_path: Path) -> str:
    """This test's profile name: its allocations are named `orchestra-<name>` (allocation_backend), so the
    test counts and cancels only its own jobs, never those of another test or user on the shared cluster."""
    return "dev" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]


def _profile(devcluster, tmp_path: Path, settings: dict):
    """A slurm profile on the dev cluster with its own remote workdir, plus the test's own settings."""
    return build_profile(_name(tmp_path), {"kind": "slurm", "host": "devcluster", "ssh_config": devcluster.ssh_config,
                                           "workdir": f"~/.orchestra-test-{tmp_path.name}", **settings})


def _our_jobs(devcluster, tmp_path: Path) -> list[str]:
    return devcluster.slurm(f"squeue -h -u orchestra -n orchestra-{_name(tmp_path)} -o %i").split()


def _cancel_ours(devcluster, tmp_path: Path) -> None:
    devcluster.slurm(f"scancel -u orchestra -n orchestra-{_name(tmp_path)}")


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.2)
    return predicate()


@pytest.fixture(autouse=True)
def _no_leftover_jobs(devcluster, tmp_path):
    yield
    _cancel_ours(devcluster, tmp_path)


@pytest.mark.parametrize("launcher", ["srun", "agent"])
def test_allocation_places_on_several_nodes_and_is_released_when_drained(devcluster, tmp_path, archive, launcher):
    profile = _profile(devcluster, tmp_path, {"slots_per_node": 2,
        "allocation": {"nodes": 3, "walltime": "10m"}, "idle_release": 1, "squeue_interval": 0.5,
        "poll_interval": 0.3, "launcher": launcher})
    backend = make_backend(profile)
    backend.start()
    try:
        start = time.monotonic()
        results = _drive(backend, 12, archive({"probe.py": PROBE}), tmp_path)
        elapsed = time.monotonic() - start
        assert all(code == 0 for code, _ in results), results
        placed = {line.split()[0] for _, line in results}
        slurm_nodes = {line.split()[1] for _, line in results}
        assert len(placed) >= 2 and placed == slurm_nodes  # srun really ran each on the chosen node
        assert len({line.split()[2] for _, line in results}) == 1  # all inside ONE allocation
        # one squeue per interval for the whole cluster, however many executions
        assert backend.squeue_calls <= elapsed / 0.5 + 4
        assert _wait_until(lambda: not _our_jobs(devcluster, tmp_path), 15), "the drained allocation was not released"
        assert backend.allocations == {}
    finally:
        backend.close()
    assert _wait_until(lambda: not _our_jobs(devcluster, tmp_path), 10)


def test_max_allocations_and_close_cancels(devcluster, tmp_path, archive):
    profile = _profile(devcluster, tmp_path, {"slots_per_node": 1,
        "allocation": {"nodes": 1, "walltime": "10m"}, "max_allocations": 2, "idle_release": 60,
        "squeue_interval": 0.5, "poll_interval": 0.3})
    backend = make_backend(profile)
    backend.start()
    try:
        results = _drive(backend, 6, archive({"probe.py": PROBE}), tmp_path, nap=1.0)
        assert all(code == 0 for code, _ in results)
        assert len({line.split()[2] for _, line in results}) == 2  # two allocations, never more
        assert len(_our_jobs(devcluster, tmp_path)) == 2  # still held: idle_release is 60 s
    finally:
        backend.close()
    assert _wait_until(lambda: not _our_jobs(devcluster, tmp_path), 10)


@pytest.mark.parametrize("launcher", ["srun", "agent"])
def test_execution_lost_when_the_allocation_is_cancelled(devcluster, tmp_path, archive, launcher):
    profile = _profile(devcluster, tmp_path, {"allocation": {"nodes": 1, "walltime": "10m"},
        "squeue_interval": 0.5, "poll_interval": 0.3, "launcher": launcher})
    backend = make_backend(profile)
    backend.start()
    try:
        slot = backend.acquire()
        handle = backend.launch(slot, Job("0000000000aa", COMMIT, "sleep 120"), archive({"x": "x"}))
        _cancel_ours(devcluster, tmp_path)  # an admin (or the walltime) ends the allocation
        outcome = backend.wait(handle, 60)
        assert outcome.lost, outcome
        assert "allocation" in (outcome.error or "")
    finally:
        backend.close()


def test_pbs_example_profile_with_torque_wrappers(devcluster, tmp_path, archive):
    data = load_profile_file(EXAMPLES / "pbs.yaml")
    data.update(host="devcluster", ssh_config=devcluster.ssh_config, workdir=f"~/.orchestra-test-{tmp_path.name}",
                squeue_interval=0.5, poll_interval=0.3, idle_release=1, max_allocations=1)
    data["allocation"] = {"nodes": 2, "walltime": "00:10:00"}
    data["slots_per_node"] = 2
    backend = make_backend(build_profile(_name(tmp_path), data))
    backend.start()
    try:
        results = _drive(backend, 6, archive({"probe.py": PROBE}), tmp_path)
        assert all(code == 0 for code, _ in results), results
        assert len({line.split()[0] for _, line in results}) == 2
        assert _wait_until(lambda: not _our_jobs(devcluster, tmp_path), 15)
    finally:
        backend.close()


def test_scheduler_refusal_reaches_the_caller(devcluster, tmp_path):
    from orchestra.errors import SchedulerError

    profile = _profile(devcluster, tmp_path, {
        "allocation": {"nodes": 1, "walltime": "10m", "partition": "nosuchpartition"}, "squeue_interval": 0.5})
    backend = make_backend(profile)
    backend.start()
    try:
        with gevent.Timeout(30):
            with pytest.raises(SchedulerError) as err:
                backend.acquire()
        assert "sbatch refused" in str(err.value) and "nosuchpartition" in str(err.value).lower()
    finally:
        backend.close()


def test_allocation_near_its_walltime_takes_no_work(devcluster, tmp_path, archive):
    """A 2-minute allocation with a 3-minute margin is unusable at once: it is given back, none placed."""
    profile = _profile(devcluster, tmp_path, {"allocation": {"nodes": 1, "walltime": "2m"},
        "squeue_interval": 0.5, "max_allocations": 1})
    import dataclasses

    backend = make_backend(dataclasses.replace(profile, walltime_margin=180.0))  # the schema forbids it
    backend.start()
    try:
        waiter = gevent.spawn(backend.acquire)
        assert _wait_until(lambda: backend.squeue_calls >= 4, 20)
        assert not waiter.ready()  # never placed on the expiring allocation
        waiter.kill()
    finally:
        backend.close()


@pytest.mark.parametrize("launcher", ["srun", "agent"])
def test_timeout_kills_an_execution_on_its_node(devcluster, tmp_path, archive, launcher):
    profile = _profile(devcluster, tmp_path, {"allocation": {"nodes": 1, "walltime": "10m"},
        "squeue_interval": 0.5, "poll_interval": 0.3, "launcher": launcher})
    backend = make_backend(profile)
    backend.start()
    try:
        slot = backend.acquire()
        handle = backend.launch(slot, Job("0000000000bb", COMMIT, "sleep 200 & sleep 201; wait"), archive({"x": "x"}))
        start = time.monotonic()
        outcome = backend.wait(handle, 1.5)
        assert outcome.timed_out and time.monotonic() - start < 20
        gevent.sleep(0.5)
        assert backend.host.run("pgrep -u orchestra -f 'sleep 20[01]' || true").stdout.split() == []
        backend.release(slot)
        # the slot is usable again afterwards
        slot = backend.acquire()
        again = backend.launch(slot, Job("0000000000bc", COMMIT, "true"), archive({"x": "x"}))
        assert backend.wait(again, 30).exit_code == 0
    finally:
        backend.close()
