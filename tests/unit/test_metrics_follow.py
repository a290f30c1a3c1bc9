"""The controller's metrics follower over a fake place: each line once, in order, when reads fail and
lines arrive half-written (the fast twin of tests/integration/test_metrics_reconnect.py)."""
from __future__ import annotations

import json
from typing import Any

from expegit.metrics_follow import MetricsFollower
from orchestra.manifest import MetricsSpec


class FlakyPlace:
    """A run directory's files, growing as the test writes; every third read fails like a dropped link."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {"metrics.jsonl": b"", "stdout": b""}
        self.calls = 0

    def read_meta(self, handle: Any, name: str, offset: int) -> bytes:
        self.calls += 1
        if self.calls % 3 == 0:
            raise ConnectionError("the connection dropped")
        return self.files[name][offset:]


def test_each_line_once_in_order_through_failed_reads_and_partial_lines() -> None:
    place = FlakyPlace()
    commits: list[bytes] = []
    seen: list[dict] = []
    follower = MetricsFollower(place, MetricsSpec(pattern=r"step=(?P<step>\d+)", every=3600),  # type: ignore[arg-type]
                               lambda _id, text: commits.append(text),
                               on_points=lambda _id, new: seen.extend(new))
    follower.add("e", object())  # type: ignore[arg-type]
    written = []
    for step in range(1, 13):
        line = json.dumps({"step": step}).encode() + b"\n"
        written.append({"step": step})
        # half a line first, the rest later: the half must wait for its newline
        place.files["metrics.jsonl"] += line[:5]
        follower.tick()
        place.files["metrics.jsonl"] += line[5:]
        place.files["stdout"] += b"noise\nstep=%d\n" % (100 + step)
        follower.tick()
    for _ in range(4):  # the last reads may have failed: a few more ticks catch up, adding nothing twice
        follower.tick()
    file_points = [p for p in seen if p["step"] < 100]
    assert file_points == written
    assert [p["step"] for p in seen if p["step"] >= 100] == [100 + s for s in range(1, 13)]
    assert follower.failed_reads > 0
    last = [json.loads(line) for line in commits[-1].decode().splitlines()]
    assert sorted(p["step"] for p in last) == sorted(p["step"] for p in seen)  # the commit holds every point once
    assert len(last) == len(seen) == 24
    follower.close()


def test_an_ended_execution_is_not_committed_by_the_follower() -> None:
    place = FlakyPlace()
    commits: list[bytes] = []
    follower = MetricsFollower(place, MetricsSpec(every=3600), lambda _id, text: commits.append(text))  # type: ignore[arg-type]
    follower.add("e", object())  # type: ignore[arg-type]
    place.files["metrics.jsonl"] = b'{"step": 1}\n'
    follower.remove("e")
    follower.tick()
    assert commits == []
    follower.close()
