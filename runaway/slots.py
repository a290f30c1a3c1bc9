"""Free slots as a queue, shared by the backends whose slots come from a provider's places."""
from __future__ import annotations

import gevent.queue

from .backend import Slot


class SlotPool:
    """Free slots as a queue; slots re-attached after a restart are marked taken without a get()."""

    def __init__(self) -> None:
        self._free: gevent.queue.Queue[Slot] = gevent.queue.Queue()
        self._claimed: set[Slot] = set()
        self._retired: set[Slot] = set()

    def add(self, slot: Slot) -> None:
        self._retired.discard(slot)
        self._free.put(slot)

    def retire(self, slot: Slot) -> None:
        """Forget a slot (its node's allocation ended): it is skipped when dequeued, never re-added."""
        self._retired.add(slot)

    def claim(self, slot: Slot) -> None:
        self._claimed.add(slot)

    def unclaim(self, slot: Slot) -> None:
        """A claimed slot's execution ended: the slot is free again (whether or not its claim was consumed)."""
        if slot in self._claimed:
            self._claimed.discard(slot)  # still queued: it simply stops being skipped
        elif slot not in self._retired:
            self._free.put(slot)

    def acquire(self, timeout: float | None = None) -> Slot:
        while True:
            slot = self._free.get(timeout=timeout)
            if slot in self._claimed:
                self._claimed.discard(slot)
                continue
            if slot in self._retired:
                continue
            return slot

    def release(self, slot: Slot) -> None:
        if slot not in self._retired:
            self._free.put(slot)

    def free_count(self) -> int:
        return self._free.qsize()



__all__ = ["SlotPool"]
