"""The contract every backend keeps, the in-memory fake included: the same assertions for each.

How a backend is built, how its controller dies and how one of its places vanishes is the fixture's
business (conftest.py); these tests only speak the Backend protocol.
"""
from __future__ import annotations

import gevent

from runaway.backend import Backend, Slot

from .conftest import Behaviour, Case, eventually

WAIT = 120.0  # seconds a real backend may take for an execution that ends at once (a busy 2-core machine)
HOSTILE = "we ird;$(touch PWNED)'\"`x`\n\u00e9\u6f22 \u2603"  # spaces, quotes, a newline, unicode


def _done(backend: Backend, slot: Slot, handle) -> None:
    backend.discard(handle)
    backend.release(slot)


def test_exit_codes_stdout_and_stderr(case: Case) -> None:
    backend = case.new()
    slot = backend.acquire()
    failing = case.job(Behaviour(exit=3, stdout="out \u2713\nsecond line\n", stderr="err: \u00e9\n"))
    handle = backend.launch(slot, failing, case.code)
    outcome = backend.wait(handle, WAIT)
    assert (outcome.exit_code, outcome.timed_out, outcome.lost) == (3, False, False), outcome
    collected = backend.collect(handle, failing, case.dest("failing")).materialized()
    assert collected.stdout.read_bytes() == "out \u2713\nsecond line\n".encode()
    assert collected.stderr.read_bytes() == "err: \u00e9\n".encode()
    assert collected.outputs == []
    _done(backend, slot, handle)

    slot = backend.acquire()
    quiet = case.job(Behaviour())
    handle = backend.launch(slot, quiet, case.code)
    outcome = backend.wait(handle, WAIT)
    assert (outcome.exit_code, outcome.timed_out, outcome.lost) == (0, False, False), outcome
    collected = backend.collect(handle, quiet, case.dest("quiet")).materialized()
    assert collected.stdout.read_bytes() == b"" and collected.stderr.read_bytes() == b""
    _done(backend, slot, handle)


def test_outputs_matched_by_globs_with_hostile_names(case: Case) -> None:
    files = {
        "metrics.json": '{"loss": 0.25}',
        "plots/a b.png": "png 1",
        f"plots/{HOSTILE}.png": "png 2",
        "plots/notes.txt": "not a png",
        f"deep/{HOSTILE}/inner/x.bin": "deep",
        "scratch.tmp": "never collected",
    }
    backend = case.new()
    slot = backend.acquire()
    job = case.job(Behaviour(files=tuple(files.items())), outputs=("metrics.json", "plots/*.png", "deep/**"))
    handle = backend.launch(slot, job, case.code)
    outcome = backend.wait(handle, WAIT)
    assert outcome.exit_code == 0, outcome
    collected = backend.collect(handle, job, case.dest("outputs")).materialized()
    expected = sorted(["metrics.json", "plots/a b.png", f"plots/{HOSTILE}.png", f"deep/{HOSTILE}/inner/x.bin"])
    assert collected.outputs == expected
    for rel in expected:
        assert (collected.directory / rel).read_text("utf-8") == files[rel]
    assert not (collected.directory / "scratch.tmp").exists()
    assert not (collected.directory / "PWNED").exists()
    _done(backend, slot, handle)


def test_timeout_stops_the_execution_and_says_so(case: Case) -> None:
    backend = case.new()
    slot = backend.acquire()
    job = case.job(Behaviour(hang=True), timeout=1.5)
    handle = backend.launch(slot, job, case.code)
    outcome = backend.wait(handle, job.timeout)
    assert outcome.timed_out and not outcome.lost, outcome
    assert outcome.exit_code != 0
    backend.collect(handle, job, case.dest("timeout"))  # what it wrote so far can still be committed
    _done(backend, slot, handle)

    slot = backend.acquire()  # the slot takes work again
    after = case.job(Behaviour(stdout="next\n"))
    handle = backend.launch(slot, after, case.code)
    assert backend.wait(handle, WAIT).exit_code == 0
    _done(backend, slot, handle)


def test_stop_ends_a_running_execution(case: Case) -> None:
    backend = case.new()
    slot = backend.acquire()
    job = case.job(Behaviour(hang=True))
    handle = backend.launch(slot, job, case.code)
    backend.stop(handle)
    outcome = backend.wait(handle, WAIT)
    assert not outcome.timed_out and not outcome.lost, outcome
    assert outcome.exit_code not in (None, 0), outcome
    _done(backend, slot, handle)


def test_a_command_that_execs_keeps_its_exit_code_and_can_be_stopped(case: Case) -> None:
    """`exec prog` ends many a Slurm script: the wrapper must still record the exit code, and stop must
    still find the execution (the pid file's process keeps its marker)."""
    backend = case.new()
    slot = backend.acquire()
    ending = case.job(Behaviour(exit=3, stdout="before exec\n", exec_=True))
    handle = backend.launch(slot, ending, case.code)
    outcome = backend.wait(handle, WAIT)
    assert (outcome.exit_code, outcome.timed_out, outcome.lost) == (3, False, False), outcome
    assert backend.collect(handle, ending, case.dest("exec")).materialized().stdout.read_bytes() == b"before exec\n"
    _done(backend, slot, handle)

    slot = backend.acquire()
    hanging = case.job(Behaviour(hang=True, exec_=True))
    handle = backend.launch(slot, hanging, case.code)
    gevent.sleep(1.0)  # stopped once the exec has replaced what ran the line, not before it started
    backend.stop(handle)
    outcome = backend.wait(handle, WAIT)
    assert not outcome.timed_out and not outcome.lost, outcome
    assert outcome.exit_code not in (None, 0), outcome
    _done(backend, slot, handle)


def test_reattach_after_the_controller_dies(case: Case) -> None:
    first = case.new()
    slot = first.acquire()
    job = case.job(Behaviour(sleep=2, stdout="late\n", files=(("late.txt", "written late"),)), outputs=("*.txt",))
    handle = first.launch(slot, job, case.code)
    case.die(first)  # nothing discarded, nothing stopped: the execution goes on without a controller

    second = case.new()
    again = second.reattach(handle.execution_id, handle.slot.host, handle.slot.index, handle.remote_dir)
    assert again is not None
    assert again.execution_id == handle.execution_id and again.remote_dir == handle.remote_dir
    outcome = second.wait(again, WAIT)
    assert (outcome.exit_code, outcome.lost) == (0, False), outcome
    # Ended but not yet discarded: still there to re-attach to (a resume that dies before committing).
    assert second.reattach(handle.execution_id, handle.slot.host, handle.slot.index, handle.remote_dir) is not None
    collected = second.collect(again, job, case.dest("reattached")).materialized()
    assert collected.outputs == ["late.txt"]
    assert (collected.directory / "late.txt").read_text() == "written late"
    assert collected.stdout.read_bytes() == b"late\n"
    second.discard(again)
    assert eventually(lambda: second.reattach(handle.execution_id, handle.slot.host, handle.slot.index,
                                              handle.remote_dir) is None)


def test_a_vanished_place_gives_a_lost_outcome(case: Case) -> None:
    backend = case.new()
    slot = backend.acquire()
    job = case.job(Behaviour(hang=True))
    handle = backend.launch(slot, job, case.code)
    case.vanish(backend, handle)
    outcome = backend.wait(handle, WAIT)
    assert outcome.lost and not outcome.timed_out, outcome
    assert outcome.exit_code is None or outcome.exit_code > 128, outcome  # no exit of its own
    backend.release(slot)


def test_nothing_is_left_in_the_work_directory_after_discard(case: Case) -> None:
    backend = case.new()
    handles = []
    for label, behaviour in (("ok", Behaviour(files=(("out.txt", "x"),))), ("failed", Behaviour(exit=1))):
        slot = backend.acquire()
        job = case.job(behaviour, outputs=("out.txt",))
        handle = backend.launch(slot, job, case.code)
        backend.wait(handle, WAIT)
        backend.collect(handle, job, case.dest(label))
        handles.append((slot, handle))
    assert len(case.leftovers()) == 2  # both run directories are there until their results are committed
    for slot, handle in handles:
        _done(backend, slot, handle)
    assert eventually(lambda: case.leftovers() == []), case.leftovers()


def test_a_reattached_execution_keeps_its_slot_until_it_ends(case: Case) -> None:
    """A resume drives re-attached executions beside new ones: the new ones must not be placed on the slot
    the re-attached one still occupies (two executions on one slot share its cores)."""
    first = case.new()
    slot = first.acquire()
    job = case.job(Behaviour(sleep=2))
    handle = first.launch(slot, job, case.code)
    case.die(first)

    second = case.new(start=False)  # as `expegit resume` does: re-attach first, then start
    again = second.reattach(handle.execution_id, handle.slot.host, handle.slot.index, handle.remote_dir)
    assert again is not None
    second.start()
    other = second.acquire()
    assert other != again.slot
    assert second.wait(again, WAIT).exit_code == 0
    second.discard(again)
    second.release(other)


def test_warn_signals_a_running_execution_and_kills_it_after_the_grace(case: Case) -> None:
    """The checkpoint warning (Backend.warn): the signal, then SIGKILL once the grace has passed, for a
    program that ignores it as well as for one it kills."""
    import signal

    backend = case.new()
    slot = backend.acquire()
    assert backend.expires(slot) is None or backend.expires(slot) > 0
    job = case.job(Behaviour(hang=True))
    handle = backend.launch(slot, job, case.code)
    gevent.sleep(1.0)  # a real program is started by then (the shell launcher signals the pid it wrote)
    backend.warn(handle, signal.SIGUSR1, 1.0)
    outcome = backend.wait(handle, WAIT)
    assert not outcome.timed_out, outcome
    assert outcome.exit_code not in (None, 0) or outcome.lost, outcome
    _done(backend, slot, handle)
