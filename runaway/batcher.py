"""Coalescing of requests that arrive together into ONE remote command (launches, collects, removals)."""
from __future__ import annotations

from collections.abc import Callable

import gevent
import gevent.event


class Batcher:
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



__all__ = ["Batcher"]
