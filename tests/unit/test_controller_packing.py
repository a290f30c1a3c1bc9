"""The controller placing by resources (Controller(packing=True)) over a tiny in-memory backend whose slots
come from runaway/packed.py: which execution starts when, and how lazily the source is read."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import gevent
import gevent.event

from orchestra.manifest import RetryPolicy
from orchestra.resources import Request
from runaway.backend import Collected, Job, Outcome, RunHandle, Slot
from runaway.controller import Controller, Task
from runaway.packed import PackedSlots
from runaway.placement import NodeCapacity

COMMIT = "c0ffee" + "0" * 34


class PackedBackend:
    """Executions that end when the test says so; placement by the real PackedSlots."""

    name = "packed"
    running_commit_delay = 0.0

    def __init__(self, gpus: int) -> None:
        self.packed = PackedSlots("test")
        self.packed.configure([NodeCapacity("node", tuple(range(16)), tuple(str(i) for i in range(gpus)))])
        self.ends: dict[str, gevent.event.Event] = {}
        self.running: dict[str, tuple[str, ...]] = {}
        self.started: list[str] = []

    def check_requests(self, requests) -> None:
        self.packed.check(requests)

    def acquire_for(self, requests, wait=True):
        return self.packed.acquire(requests, wait)

    def release(self, slot: Slot) -> None:
        assert self.packed.release(slot)

    def stop_waiting(self) -> None:
        self.packed.stop_waiting()

    def launch(self, slot: Slot, job: Job, code) -> RunHandle:
        bound = self.packed.bound(slot, job, dict(job.env))
        assert bound is not None
        devices = bound.binding.gpus
        for other in self.running.values():  # the invariant, checked at every start
            assert set(other).isdisjoint(devices) or bound.binding.gpu_share < 1
        self.running[job.execution_id] = devices
        self.started.append(job.execution_id)
        self.ends[job.execution_id] = gevent.event.Event()
        return RunHandle(job.execution_id, slot, "/nowhere", binding=bound.binding)

    def wait(self, handle: RunHandle, timeout) -> Outcome:
        self.ends[handle.execution_id].wait()
        self.running.pop(handle.execution_id)
        return Outcome(0, 0.0, 1.0)

    def collect(self, handle, job, dest: Path) -> Collected:
        return Collected(dest, dest / "o", dest / "e", [], contents={})

    def discard(self, handle) -> None:
        return None

    def stop(self, handle) -> None:
        self.ends[handle.execution_id].set()

    def end(self, execution_id: str) -> None:
        self.ends[execution_id].set()
        gevent.sleep(0.01)


class Quiet:
    def launched(self, task, handle, attempt): ...
    def attempt_failed(self, task, result, will_retry): ...
    def finished(self, task, result): ...
    def cancelled(self, task, handle): ...


def _job(name: str, gpus: int | Fraction) -> Task:
    return Task(Job(name, COMMIT, "true", resources=Request(gpus=Fraction(gpus))))


def _controller(backend: PackedBackend, tmp_path: Path) -> Controller:
    return Controller(backend, Quiet(), lambda commit: iter(()), retry=RetryPolicy(), staging=tmp_path,
                      packing=True)


def test_a_wide_execution_does_not_hold_narrow_ones_back(tmp_path):
    backend = PackedBackend(gpus=4)
    tasks = [_job("one-a", 1), _job("four", 4), _job("one-b", 1), _job("two", 2)]
    run = gevent.spawn(_controller(backend, tmp_path).run, iter(tasks))
    gevent.sleep(0.05)
    assert backend.started == ["one-a", "one-b", "two"]  # the 4-GPU one waits; the others fill the node
    for name in ("one-a", "two"):
        backend.end(name)
    assert "four" not in backend.started  # one-b still holds a GPU
    backend.end("one-b")
    assert backend.started[-1] == "four"
    backend.end("four")
    run.get(timeout=5)


def test_the_source_is_read_only_while_nothing_waiting_fits(tmp_path):
    backend = PackedBackend(gpus=2)
    pulled: list[str] = []

    def source():
        for n in range(10):
            pulled.append(f"e{n}")
            yield _job(f"e{n}", 1)

    run = gevent.spawn(_controller(backend, tmp_path).run, source())
    gevent.sleep(0.05)
    assert backend.started == ["e0", "e1"]
    # Each further execution was asked for only because none of those waiting fitted, up to the window.
    from runaway.controller import PACKING_WINDOW
    assert len(pulled) <= 2 + PACKING_WINDOW
    for n in range(10):
        gevent.sleep(0.01)
        backend.end(f"e{n}")
    run.get(timeout=5)
    assert sorted(backend.started) == sorted(f"e{n}" for n in range(10))


def test_quarter_gpus_share_one_device_four_at_a_time(tmp_path):
    backend = PackedBackend(gpus=1)
    tasks = [_job(f"q{n}", Fraction(1, 4)) for n in range(6)]
    run = gevent.spawn(_controller(backend, tmp_path).run, iter(tasks))
    gevent.sleep(0.05)
    assert backend.started == ["q0", "q1", "q2", "q3"]
    backend.end("q0")
    assert backend.started[-1] == "q4"
    for n in range(1, 6):
        backend.end(f"q{n}")
    run.get(timeout=5)


def test_a_wide_execution_passed_over_too_often_gets_the_next_place(tmp_path, monkeypatch):
    import runaway.controller as controller_module

    monkeypatch.setattr(controller_module, "PACKING_PATIENCE", 3)
    backend = PackedBackend(gpus=2)
    tasks = [_job("one-0", 1), _job("two", 2)] + [_job(f"one-{n}", 1) for n in range(1, 12)]
    run = gevent.spawn(_controller(backend, tmp_path).run, iter(tasks))
    gevent.sleep(0.05)
    n = 0
    while "two" not in backend.started:  # keep ending the oldest narrow one: without the guard, an
        running = [e for e in backend.started if e in backend.running]  # endless stream of them would
        backend.end(running[0])  # keep one GPU busy forever
        n += 1
        assert n < 10
    assert backend.started.index("two") <= 1 + 3 + 1  # one-0, at most 3 passing it, then its own turn
    while backend.running:
        backend.end(next(iter(backend.running)))
    run.get(timeout=5)
