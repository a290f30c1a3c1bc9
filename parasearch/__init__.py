"""parasearch: parameter spaces and the samplers that propose executions.

This package is the pure algorithm layer: no git, no processes. The study that reads its history from
the campaign's execution branches builds on :func:`make_sampler` and calls ``ask`` with everything
finished so far plus what is still running.
"""
from parasearch.samplers import ALGORITHMS, Sampler, make_sampler
from parasearch.space import Space, Trial

__all__ = ["ALGORITHMS", "Sampler", "Space", "Trial", "make_sampler"]
