"""What a run, a resume or a study run reports when it ends: counts, errors and the exit code they mean."""
from __future__ import annotations

import dataclasses

from orchestra.errors import EXIT_EXECUTIONS_FAILED, EXIT_INTERRUPTED, EXIT_OK, ExecutionError


@dataclasses.dataclass
class RunSummary:
    total: int = 0
    finished: int = 0
    failed: int = 0
    cancelled: int = 0
    pruned: int = 0  # stopped early by the search's rule: no failure
    errors: list[str] = dataclasses.field(default_factory=list)
    ids: list[str] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    not_started: int = 0
    not_created: int = 0  # points of an interrupted run never reached: `run --missing` runs them

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.errors and not self.interrupted

    def exit_code(self) -> int:
        """What `expegit run`, `resume` and `parasearch run` exit with after this run."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.errors:
            return ExecutionError.exit_code
        return EXIT_OK if self.failed == 0 else EXIT_EXECUTIONS_FAILED
