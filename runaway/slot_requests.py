"""Requests by resources on backends that place by slots only (PBS command templates, OAR, the fake).

Packing by resources lives in the local, SSH and Slurm backends; elsewhere a manifest's `resources:` is
refused up front with the way out, rather than ignored (two executions would then share a GPU silently).
"""
from __future__ import annotations

from collections.abc import Sequence

from orchestra.errors import ProfileError
from orchestra.resources import Request

from .backend import Slot


class SlotsOnly:
    """Mixin: a backend whose places are slots, each taken by any one execution."""

    name: str

    def acquire(self) -> Slot:  # provided by the backend
        raise NotImplementedError

    def check_requests(self, requests: Sequence[Request]) -> None:
        if requests:
            raise ProfileError(f"profile kind {self.name!r} does not place executions by resources: run this "
                               f"campaign on a slurm, local or ssh profile, or remove `resources:` from the "
                               f"manifest and size the profile's slots to the executions")

    def acquire_for(self, requests: Sequence[Request], wait: bool = True) -> tuple[int, Slot] | None:
        # A caller that skipped check_requests (a search proposing as it goes) is refused here, never
        # silently given a slot that ignores what the execution needs.
        self.check_requests(requests)
        return 0, self.acquire()


__all__ = ["SlotsOnly"]
