"""Retry policies, built on tenacity so backoff and stop rules are not re-invented per component."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tenacity

from .manifest import RetryPolicy


def failure_kind(exit_code: int | None, timed_out: bool, lost: bool, walltime: bool = False,
                 preempted: bool = False) -> str | None:
    """Which kind of failure (as named in ``retries.on``) an outcome is, or None for success.

    ``walltime`` (stopped before its allocation's end) and ``preempted`` (the scheduler took the allocation
    back) win over how the process ended: a checkpointing program that saves and exits 0 on the warning
    has not finished its work."""
    if preempted:
        return "preempted"
    if walltime:
        return "walltime"
    if lost:
        return "node-failure"
    if timed_out:
        return "timeout"
    if exit_code != 0:
        return "exit"
    return None


def retried(kind: str | None, on: tuple[str, ...]) -> bool:
    """Whether a failure of ``kind`` is retried under ``retries.on``. A preempted allocation is a node
    lost from the execution's point of view: manifests written before `preempted` existed (`on:
    [node-failure]`) keep retrying it."""
    if kind is None:
        return False
    return kind in on or (kind == "preempted" and "node-failure" in on)


def attempts(policy: RetryPolicy, should_retry: Callable[[Any], bool], sleep: Callable[[float], None], *,
             done: int = 0) -> tenacity.Retrying:
    """A tenacity loop: ``for attempt in attempts(...): with attempt: result = ...; attempt.retry_state.set_result``.

    ``should_retry`` sees each attempt's result; the wait doubles from ``policy.backoff`` seconds, capped at
    a minute, so a flapping node is not hammered. ``done``: attempts already made (and failed) before the
    loop, which then starts where they left off: the caller sleeps ``first_wait(policy, done)`` first.
    Why: most executions succeed at once, and building a tenacity loop for each of thousands of short
    executions was a measurable part of the controller's time; only a failed first attempt needs one.
    """
    multiplier = policy.backoff * 2 ** done
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max(1, policy.max + 1 - done)),
        retry=tenacity.retry_if_result(should_retry),
        wait=tenacity.wait_exponential(multiplier=multiplier, max=60) if policy.backoff > 0 else tenacity.wait_none(),
        sleep=sleep,
        retry_error_callback=_last_result,  # out of attempts: the last result stands
        reraise=True,
    )


def _last_result(state: tenacity.RetryCallState) -> Any:
    assert state.outcome is not None  # tenacity calls it after an attempt, which always has an outcome
    return state.outcome.result()


def first_wait(policy: RetryPolicy, done: int) -> float:
    """The wait after ``done`` failed attempts, as the loop of attempts() would have slept it."""
    return min(60.0, policy.backoff * 2 ** (done - 1)) if policy.backoff > 0 and done > 0 else 0.0
