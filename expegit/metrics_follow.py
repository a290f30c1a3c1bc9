"""The controller's side of intermediate metrics: read running executions' streams, commit them now and then.

Only for manifests that declare ``metrics:``: executions that declare none cost nothing (no greenlet, no
remote command; their ORCHESTRA_METRICS file, if any, still comes with the results at the end).

How the bytes travel: one read per running execution per ``every`` seconds, through the backend's
``read_meta`` (a file read locally; over SSH one ``tail -c +OFFSET`` on the host's existing connection,
the same path as `runaway exec`'s live output). Each execution's cursor (expegit/metrics_stream.py) keeps
the offset of the last complete line consumed, so a read lost to a dropped connection is simply asked
again from there: every line reaches the controller once, in order.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.pool

from orchestra.manifest import MetricsSpec
from runaway.backend import Backend, RunHandle

from .metrics_stream import METRICS_FILE, MetricsCursor, render_metrics_text

log = logging.getLogger(__name__)
READS_AT_ONCE = 16  # bounded fan-out: an SSH connection's channels are shared with launches and collects


class MetricsFollower:
    """``commit(execution_id, text)`` journals a running execution's whole stream so far (the listener's
    commit); ``on_points(execution_id, new)`` sees each new point once (tests, progress)."""

    def __init__(self, backend: Backend, spec: MetricsSpec, commit: Callable[[str, bytes], None], *,
                 on_points: Callable[[str, list[dict[str, Any]]], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.backend = backend
        self.spec = spec
        self.pattern = re.compile(spec.pattern) if spec.pattern else None
        self.commit = commit
        self.on_points = on_points
        self.clock = clock
        self.running: dict[str, tuple[RunHandle, MetricsCursor]] = {}
        self.failed_reads = 0  # observable: a test drops the connection and sees reads fail, then recover
        self._loop: gevent.Greenlet | None = None

    def add(self, execution_id: str, handle: RunHandle) -> None:
        """A launched attempt: its stream starts at offset 0 (a new attempt writes a new run directory)."""
        self.running[execution_id] = (handle, MetricsCursor(self.pattern))
        if self._loop is None:
            self._loop = gevent.spawn(self._run)

    def remove(self, execution_id: str) -> None:
        """Ended: the final commit takes the whole stream from the results (metrics_stream.final_points)."""
        self.running.pop(execution_id, None)

    def _read_one(self, execution_id: str) -> None:
        entry = self.running.get(execution_id)
        if entry is None:
            return
        handle, cursor = entry
        read = getattr(self.backend, "read_meta", None)
        if read is None:
            return  # a backend without live reads (the in-memory fake): metrics arrive at the end only
        try:
            chunk = read(handle, METRICS_FILE, cursor.file_offset)
            out = read(handle, "stdout", cursor.stdout_offset) if self.pattern is not None else b""
        except Exception as exc:  # noqa: BLE001 - unreachable now: the offsets stay, the next tick retries
            self.failed_reads += 1
            log.debug("metrics of %s not read now: %s", execution_id, exc)
            return
        if self.running.get(execution_id) is not entry:
            return  # it ended (or was relaunched) while the read was in flight: the final commit has it all
        new = cursor.feed_file(chunk) + cursor.feed_stdout(out)
        if new and self.on_points is not None:
            self.on_points(execution_id, new)

    def tick(self) -> None:
        """One pass: read every running execution's new lines, then commit those that have new points."""
        pool = gevent.pool.Pool(READS_AT_ONCE)
        for execution_id in list(self.running):
            pool.spawn(self._read_one, execution_id)
        pool.join()
        for execution_id, (_handle, cursor) in list(self.running.items()):
            if cursor.pending():
                cursor.delivered = len(cursor.points)
                try:
                    self.commit(execution_id, render_metrics_text(cursor.points).encode("utf-8"))
                except Exception as exc:  # noqa: BLE001 - a metrics commit must never take a run down
                    log.warning("metrics of %s not committed: %s", execution_id, exc)

    def _run(self) -> None:
        while True:
            gevent.sleep(self.spec.every)
            if self.running:
                self.tick()

    def close(self) -> None:
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None


__all__ = ["MetricsFollower"]
