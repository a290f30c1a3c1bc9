"""parasearch: parameter spaces and the samplers that propose executions.

This package is the pure algorithm layer: no git, no processes. The study that reads its history from
the campaign's execution branches builds on :func:`make_sampler` and calls ``ask`` with everything
finished so far plus what is still running.

Exports are resolved lazily (PEP 562) so that importing ``parasearch.cli`` does not import numpy before
the CLI has set ``OPENBLAS_NUM_THREADS``.
"""
from __future__ import annotations

from typing import Any

__all__ = ["ALGORITHMS", "Sampler", "Space", "Trial", "make_sampler"]


def __getattr__(name: str) -> Any:
    if name in ("ALGORITHMS", "Sampler"):
        from parasearch import samplers

        return getattr(samplers, name)
    if name == "make_sampler":
        from parasearch.sampler_factory import make_sampler

        return make_sampler
    if name in ("Space", "Trial"):
        from parasearch import space

        return getattr(space, name)
    raise AttributeError(f"module 'parasearch' has no attribute {name!r}")
