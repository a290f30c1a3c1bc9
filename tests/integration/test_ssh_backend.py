"""The ssh backend against the dev cluster's sshd: detached launch, batched watching, collect, reattach."""
from __future__ import annotations

import time
from pathlib import Path

import gevent
import pytest

from runaway.backend import Job
from runaway.profiles import build_profile
from runaway.factory import make_backend
from runaway.fixed_backend import FixedBackend

pytestmark = pytest.mark.usefixtures("remote_workdir_cleanup")

COMMIT = "c0ffee" + "0" * 34
HOSTILE = "we ird;$(touch PWNED)'\"`x`\n\u00e9.txt"

TRAIN = """\
import json, os, sys
os.makedirs("plots", exist_ok=True)
json.dump({"lr": float(sys.argv[1])}, open("metrics.json", "w"))
open(os.path.join("plots", sys.argv[2]), "w").write("png")
open("not-an-output.tmp", "w").write("x")
print("trained", sys.argv[1])
print("warn", file=sys.stderr)
"""


def _backend(devcluster, tmp_path: Path, **extra) -> FixedBackend:
    data = {"kind": "ssh", "host": "devcluster", "slots": 4, "ssh_config": devcluster.ssh_config,
            "workdir": f"~/.orchestra-test-{tmp_path.name}", "poll_interval": 0.3, **extra}
    backend = make_backend(build_profile("dev", data))
    backend.start()
    return backend


@pytest.fixture(params=["agent", "shell"])
def launcher(request) -> str:
    """Both ways of running on an SSH host: the resident agent (default) and a shell per batch."""
    return request.param


def _eventually(check, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.05)
    return True


def _id(n: int) -> str:
    return f"{n:012x}"


def test_outputs_round_trip_with_hostile_file_name(devcluster, tmp_path, archive, launcher):
    backend = _backend(devcluster, tmp_path, env={"GREETING": "hi there"}, launcher=launcher)
    try:
        slot = backend.acquire()
        from orchestra.quoting import render_command
        command = render_command("python3 train.py {lr} {name} && echo \"$GREETING\" >&2",
                                 {"lr": 0.5, "name": HOSTILE})
        job = Job(_id(1), COMMIT, command, outputs=("metrics.json", "plots/*"))
        handle = backend.launch(slot, job, archive({"train.py": TRAIN}))
        outcome = backend.wait(handle, 60)
        assert outcome.exit_code == 0, outcome
        collected = backend.collect(handle, job, tmp_path / "out").materialized()
        assert collected.outputs == sorted(["metrics.json", f"plots/{HOSTILE}"])
        assert (tmp_path / "out" / "plots" / HOSTILE).read_text() == "png"
        assert collected.stdout.read_text() == "trained 0.5\n"
        assert collected.stderr.read_text() == "warn\nhi there\n"
        assert not (tmp_path / "out" / "not-an-output.tmp").exists()
        host = backend.hosts["devcluster"]
        assert host.run(f"ls {handle.remote_dir}/PWNED", warn=True).exit_code != 0
        backend.discard(handle)  # through the agent it is a line written: the removal follows shortly
        assert _eventually(lambda: host.run(f"test -e {handle.remote_dir}", warn=True).exit_code == 1)
        backend.release(slot)
    finally:
        backend.close()


def test_detached_execution_survives_closing_the_connection(devcluster, tmp_path, archive, launcher):
    backend = _backend(devcluster, tmp_path, launcher=launcher)
    try:
        slot = backend.acquire()
        job = Job(_id(2), COMMIT, "sleep 2; echo survived > result.txt", outputs=("result.txt",))
        handle = backend.launch(slot, job, archive({"README": "x"}))
        for host in backend.hosts.values():
            host.close()  # every SSH connection goes away while it runs
        outcome = backend.wait(handle, 60)
        assert outcome.exit_code == 0 and not outcome.lost
        collected = backend.collect(handle, job, tmp_path / "out").materialized()
        assert (collected.directory / "result.txt").read_text() == "survived\n"
    finally:
        backend.close()


def test_one_poll_per_host_for_many_executions(devcluster, tmp_path, archive):
    """The shell launcher watches with one poll command per host per interval, however many run there."""
    backend = _backend(devcluster, tmp_path, slots=12, launcher="shell")
    code = archive({"README": "x"})
    try:
        def one(n: int) -> int | None:
            slot = backend.acquire()
            try:
                handle = backend.launch(slot, Job(_id(100 + n), COMMIT, f"sleep 1.5; exit {n % 3}"), code)
                return backend.wait(handle, 60).exit_code
            finally:
                backend.release(slot)

        start = time.monotonic()
        jobs = [gevent.spawn(one, n) for n in range(12)]
        gevent.joinall(jobs, raise_error=True)
        elapsed = time.monotonic() - start
        assert [j.value for j in jobs] == [n % 3 for n in range(12)]
        polls = backend.runs["devcluster"].polls
        # One poll per interval for all 12 executions, not one per execution.
        assert polls <= elapsed / 0.3 + 3, (polls, elapsed)
    finally:
        backend.close()


def test_agent_needs_no_command_per_execution(devcluster, tmp_path, archive):
    """With the agent, 24 executions cost the same few SSH commands as one: launches, exits, results and
    removals all travel through the one session the agent is reached by."""
    backend = _backend(devcluster, tmp_path, slots=12)
    code = archive({"README": "x"})
    host = backend.hosts["devcluster"]
    try:
        def one(n: int) -> bytes | None:
            slot = backend.acquire()
            try:
                job = Job(_id(200 + n), COMMIT, f"echo out-{n}; exit {n % 3}")
                handle = backend.launch(slot, job, code)
                outcome = backend.wait(handle, 60)
                assert outcome.exit_code == n % 3, outcome
                data = backend.collect(handle, job, tmp_path / f"o{n}").read(".orchestra/stdout")
                backend.discard(handle)
                return data
            finally:
                backend.release(slot)

        before = host.commands
        jobs = [gevent.spawn(one, n) for n in range(24)]
        gevent.joinall(jobs, raise_error=True)
        assert [j.value for j in jobs] == [f"out-{n}\n".encode() for n in range(24)]
        assert host.commands - before <= 3, host.commands - before  # the code check and shipping
        runs_dir = f"{backend.runs['devcluster'].workdir}/runs"
        assert _eventually(lambda: host.run(f"ls {runs_dir}").stdout.split() == [])  # every removal arrived
    finally:
        backend.close()


def test_timeout_kills_the_whole_process_group(devcluster, tmp_path, archive, launcher):
    backend = _backend(devcluster, tmp_path, launcher=launcher)
    try:
        slot = backend.acquire()
        job = Job(_id(3), COMMIT, "sleep 300 & sleep 301; wait")
        handle = backend.launch(slot, job, archive({"README": "x"}))
        start = time.monotonic()
        outcome = backend.wait(handle, 1.5)
        assert outcome.timed_out and time.monotonic() - start < 15
        gevent.sleep(0.5)
        host = backend.hosts["devcluster"]
        left = host.run("pgrep -u orchestra -f 'sleep 30[01]' || true").stdout.split()
        assert left == []
    finally:
        backend.close()


def test_reattach_after_controller_restart(devcluster, tmp_path, archive, launcher):
    first = _backend(devcluster, tmp_path, launcher=launcher)
    slot = first.acquire()
    job = Job(_id(4), COMMIT, "sleep 1.5; echo late > late.txt", outputs=("late.txt",))
    handle = first.launch(slot, job, archive({"README": "x"}))
    first.close()  # the controller dies

    second = _backend(devcluster, tmp_path, launcher=launcher)
    try:
        again = second.reattach(job.execution_id, "devcluster", slot.index, handle.remote_dir)
        assert again is not None and again.pid == handle.pid
        assert second.wait(again, 60).exit_code == 0
        assert second.reattach(job.execution_id, "devcluster", slot.index, handle.remote_dir) is not None
        collected = second.collect(again, job, tmp_path / "out").materialized()
        assert collected.outputs == ["late.txt"]
        second.discard(again)
        assert second.reattach(job.execution_id, "devcluster", slot.index, handle.remote_dir) is None
        # the re-attached slot is held: only 3 of 4 are free until it is released
        assert second.pool.free_count() == 4
        got = [second.acquire() for _ in range(3)]
        assert slot not in got
    finally:
        second.close()


def test_code_is_shipped_once_per_commit(devcluster, tmp_path, archive, launcher):
    backend = _backend(devcluster, tmp_path, launcher=launcher)
    calls = []
    base = archive({"run.sh": "echo shipped"})

    def code(commit: str):
        calls.append(commit)
        return base(commit)

    try:
        def one(n: int) -> int | None:
            slot = backend.acquire()
            try:
                return backend.wait(backend.launch(slot, Job(_id(200 + n), COMMIT, "sh run.sh"), code), 60).exit_code
            finally:
                backend.release(slot)

        jobs = [gevent.spawn(one, n) for n in range(4)]
        gevent.joinall(jobs, raise_error=True)
        assert [j.value for j in jobs] == [0] * 4
        assert calls == [COMMIT]
    finally:
        backend.close()


def test_large_outputs_arrive_whole_and_checked(devcluster, tmp_path, archive, launcher):
    """12 MiB of output: over the agent it is streamed into a spool file, never held whole in memory."""
    backend = _backend(devcluster, tmp_path, launcher=launcher)
    try:
        slot = backend.acquire()
        job = Job(_id(7), COMMIT, "head -c 12582912 /dev/urandom > big.bin && sha256sum big.bin",
                  outputs=("big.bin",))
        handle = backend.launch(slot, job, archive({"README": "x"}))
        assert backend.wait(handle, 120).exit_code == 0
        collected = backend.collect(handle, job, tmp_path / "out").materialized()
        data = (collected.directory / "big.bin").read_bytes()
        assert len(data) == 12582912
        import hashlib
        assert collected.stdout.read_text().split()[0] == hashlib.sha256(data).hexdigest()
        backend.discard(handle)
    finally:
        backend.close()
