"""Retry policies: the attempts and waits a policy allows, with the first attempt made outside the loop
(as the controller does, so that executions that succeed at once never build a tenacity loop)."""
from __future__ import annotations

import pytest

from orchestra.manifest import RetryPolicy
from orchestra.retry import attempts, first_wait


def _drive(policy: RetryPolicy, outcomes: list[bool]) -> tuple[int, list[float]]:
    """Run attempts whose results are ``outcomes`` (True: failed, retry wanted); return (attempts, sleeps)."""
    sleeps: list[float] = []
    made = 0

    def one() -> bool:
        nonlocal made
        made += 1
        return outcomes[made - 1]

    def should_retry(failed: bool) -> bool:
        return failed

    result = one()
    if should_retry(result):
        sleeps.append(first_wait(policy, 1))
        for attempt in attempts(policy, should_retry, sleeps.append, done=1):
            with attempt:
                result = one()
            if not attempt.retry_state.outcome.failed:
                attempt.retry_state.set_result(result)
    return made, sleeps


@pytest.mark.parametrize("max_, backoff, outcomes, made, sleeps", [
    (3, 1.0, [False], 1, []),                                  # success at once: no loop, no wait
    (3, 1.0, [True, False], 2, [1.0]),
    (3, 1.0, [True, True, True, True, True], 4, [1.0, 2.0, 4.0]),  # 1 + max attempts, doubling waits
    (2, 0.5, [True, True, True], 3, [0.5, 1.0]),
    (1, 0.0, [True, True], 2, [0.0]),                          # no backoff: no waiting
    (3, 40.0, [True, True, True, True], 4, [40.0, 60.0, 60.0]),  # capped at a minute
])
def test_attempts_and_waits_follow_the_policy(max_, backoff, outcomes, made, sleeps):
    got_made, got_sleeps = _drive(RetryPolicy(max=max_, backoff=backoff), outcomes)
    assert got_made == made
    assert [s for s in got_sleeps if s] == [s for s in sleeps if s]
