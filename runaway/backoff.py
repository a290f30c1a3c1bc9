"""Backoff for idempotent remote steps and re-opened sessions, on tenacity (never a hand-rolled loop).

Why tenacity: its stop/wait/retry rules are tested, and every backoff in runaway then reads the same
way (``stop_before_delay(budget)`` and ``wait_exponential(0.2 .. 5 s)``); gevent's sleep is passed
explicitly because library code runs unpatched in tests.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import gevent
import tenacity

from orchestra.errors import ConnectionError_

log = logging.getLogger(__name__)

T = TypeVar("T")

RECONNECT_FOR = 120.0  # seconds a dropped link keeps being retried before what it carried is lost


def link_dropped(exc: BaseException) -> bool:
    """A dropped connection (not a command that failed): safe to retry an idempotent step."""
    if isinstance(exc, ConnectionError_):
        return exc.hint is None or "is the host up" in exc.hint
    result = getattr(exc, "result", None)
    return result is not None and getattr(result, "exit_code", 0) is None and not getattr(exc, "timed_out", False)


def retrying(budget: float, retry_on: Callable[[BaseException], bool], what: str, *,
             first: float = 0.2, longest: float = 5.0, fixed: float | None = None,
             stop_after: bool = False,
             before_sleep: Callable[[tenacity.RetryCallState], None] | None = None) -> tenacity.Retrying:
    """Retry while ``retry_on(exc)`` for ``budget`` seconds: exponential waits from ``first`` up to
    ``longest`` (or ``fixed`` ones); no sleep that would end past the budget, or with ``stop_after``
    one more try after any failure within it (how the relaunch after a drop always worked). Each retry
    is logged as a warning unless ``before_sleep`` says what to tell instead."""
    def warn(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s (%s); retrying in %.1fs", what, exc, state.upcoming_sleep)

    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(budget) if stop_after else tenacity.stop_before_delay(budget),
        wait=tenacity.wait_fixed(fixed) if fixed is not None else tenacity.wait_exponential(multiplier=first,
                                                                                               max=longest),
        retry=tenacity.retry_if_exception(retry_on),
        sleep=gevent.sleep, reraise=True, before_sleep=before_sleep or warn)


def retry_link(what: str, action: Callable[[], T], host_name: str, budget: float = RECONNECT_FOR) -> T:
    """Run an idempotent remote step, again after a dropped link (sshd restart, network cut), for ``budget``
    seconds. Why: an execution whose results are safe on the remote must not fail because one collect or
    discard met a connection reset; the transport reconnects on the next channel."""
    return retrying(budget, link_dropped, f"{host_name}: {what}: link dropped")(action)


__all__ = ["RECONNECT_FOR", "link_dropped", "retry_link", "retrying"]
