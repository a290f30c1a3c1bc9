"""Fixed places: machines that exist as they are (SSH hosts, this machine), each with its slots.

Nothing to start or cancel: a fixed provider only says which places there are and which slots they
offer, interleaved so that a partly used backend spreads executions over its hosts.
"""
from __future__ import annotations

from collections.abc import Sequence

from ..backend import Slot
from ..launchers import Place


class FixedProvider:
    def __init__(self, places: Sequence[tuple[str, int]]) -> None:
        self._places = [(host, int(slots)) for host, slots in places]

    def places(self) -> list[Place]:
        return [Place(host) for host, _slots in self._places]

    def slot_count(self, host: str) -> int:
        return next((slots for name, slots in self._places if name == host), 0)

    def slots(self) -> list[Slot]:
        width = max((slots for _host, slots in self._places), default=0)
        return [Slot(host, index) for index in range(width) for host, slots in self._places if index < slots]


__all__ = ["FixedProvider"]
