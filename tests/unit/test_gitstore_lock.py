"""git's lock-file protocol in GitStore: wait (tenacity's jittered backoff) while another writer holds the
lock, and a one-line RepositoryError naming the lock file once the wait is over."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from expegit import gitstore
from orchestra.errors import RepositoryError


def test_a_free_lock_is_taken_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gitstore.time, "sleep", lambda s: pytest.fail("slept for a free lock"))
    fd = gitstore._acquire_lock(tmp_path / "packed-refs.lock", "packed refs")
    os.close(fd)
    assert (tmp_path / "packed-refs.lock").exists()


def test_the_lock_is_taken_once_the_other_writer_releases_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "ref.lock"
    lock.write_text("")
    waits: list[float] = []
    real_sleep = gitstore.time.sleep

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            lock.unlink()  # the other writer finishes after our third wait
        real_sleep(seconds)

    monkeypatch.setattr(gitstore.time, "sleep", sleep)
    fd = gitstore._acquire_lock(lock, "ref x")
    os.close(fd)
    assert len(waits) == 3 and all(0 <= w <= 0.05 for w in waits)


def test_a_lock_held_too_long_is_a_repository_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "packed-refs.lock"
    lock.write_text("")
    monkeypatch.setattr(gitstore, "LOCK_TIMEOUT", 0.05)
    with pytest.raises(RepositoryError) as err:
        gitstore._acquire_lock(lock, "packed refs")
    assert f"packed refs stayed locked for 0.05s ({lock} exists)" in str(err.value)
    assert "delete the lock file" in (err.value.hint or "")
    assert lock.read_text() == ""  # someone else's lock is never removed


def test_writers_in_threads_each_get_the_lock_in_turn(tmp_path: Path) -> None:
    lock, order = tmp_path / "ref.lock", []

    def writer(i: int) -> None:
        fd = gitstore._acquire_lock(lock, "ref")
        order.append(i)
        os.close(fd)
        lock.unlink()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(order) == list(range(8))
