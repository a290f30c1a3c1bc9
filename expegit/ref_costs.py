"""Which way a batch of ref updates is cheaper on this machine: a loose file per ref, or one rewrite of
packed-refs. Measured as the store goes, not fixed.

Why measured: the two costs move by an order of magnitude with the filesystem, not with Orchestra. A
loose ref is a file created (its lock) and renamed; on ext4 with a journal that is ~0.06 ms, but on ext4
without one (this project's VMs) the inode allocator skips every inode freed in the last minutes, so
right after a run's refs were packed (git pruning its loose files) or run directories were deleted, each
new ref cost 0.5-1 ms of kernel time: a run of 1,000 executions into a campaign of 100,000 spent 0.75 s
on it. A rewrite is one copy of packed-refs (about 1.5 ms per MB through splice_pieces) plus one new
inode. A fixed bytes-per-update threshold was right on one machine at one moment only.

Both are timed in CPU seconds of the calling thread (time.thread_time: user and kernel time, not the
waits for the GIL or the disk), and kept as exponentially weighted averages. Pure: the caller times.
"""
from __future__ import annotations

import dataclasses

#: What is assumed before anything was measured: a loose ref at the slow end of ext4 without a journal,
#: a rewrite at what splice_pieces costs here. The first measurements replace them quickly (WEIGHT).
LOOSE_PRIOR = 0.3e-3  # seconds per ref
REWRITE_PRIOR = 1.5e-9  # seconds per byte of packed-refs
WEIGHT = 0.3  # of each new measurement in the averages
# While rewrites win, loose refs are not measured, and the filesystem may have changed its mind (the
# minutes after a prune pass): every EXPLORE_EVERY rewrites one batch goes loose again, if that batch is
# expected to cost at most EXPLORE_AT_MOST times what its rewrite would.
EXPLORE_EVERY = 32
EXPLORE_AT_MOST = 4.0


@dataclasses.dataclass
class RefCosts:
    """Running estimates of the two ways' costs; ``rewrite_is_cheaper`` decides between them.

    A rewrite is charged one loose ref (it too creates a lock file and renames it over the old one) plus
    its size: so its fixed part follows the filesystem as the loose refs' cost does."""

    loose_per_ref: float = LOOSE_PRIOR
    rewrite_per_byte: float = REWRITE_PRIOR
    rewrites_since_loose: int = 0

    def rewrite_cost(self, size: int) -> float:
        """Estimated CPU seconds of one rewrite of a packed-refs of ``size`` bytes."""
        return self.loose_per_ref + self.rewrite_per_byte * size

    def rewrite_is_cheaper(self, size: int, count: int) -> bool:
        """Whether one rewrite of a packed-refs of ``size`` bytes costs less than ``count`` loose refs
        (False now and then to measure loose refs again, see EXPLORE_EVERY)."""
        rewrite, loose = self.rewrite_cost(size), self.loose_per_ref * count
        if rewrite >= loose:
            return False
        return self.rewrites_since_loose < EXPLORE_EVERY or loose > EXPLORE_AT_MOST * rewrite

    def loose_took(self, count: int, seconds: float) -> None:
        if count > 0 and seconds >= 0:
            self.loose_per_ref += WEIGHT * (seconds / count - self.loose_per_ref)
            self.rewrites_since_loose = 0

    def rewrite_took(self, size: int, seconds: float) -> None:
        """A rewrite of ``size`` bytes took ``seconds``: what is above one loose ref is charged per byte."""
        self.rewrites_since_loose += 1
        if size > 0 and seconds >= 0:
            per_byte = max(0.0, seconds - self.loose_per_ref) / size
            self.rewrite_per_byte += WEIGHT * (per_byte - self.rewrite_per_byte)


__all__ = ["RefCosts"]
