"""`expegit logs [-f] [--stderr] ID`: an execution's output, wherever it runs, followed live.

A finished (or failed, or cancelled) execution's output is on its branch (``.orchestra/stdout`` /
``stderr``). A running one's is in its run directory, at the place its "running" record names; it is
read there through runaway/place_files.py (see there why directly, not through the controller). With
``-f`` the place is read every ``interval`` seconds and the branch's tip watched: once the record says the
execution ended, what the branch holds past what was printed ends the output, so nothing is missed
between the last read and the removal of the run directory. A new attempt (a retry) starts over from
its first byte, with a line on stderr saying so.
"""
from __future__ import annotations

import sys
import time
from typing import BinaryIO, Callable

from orchestra.execution import STDERR_PATH, STDOUT_PATH, ExecutionRecord, render_branch_name

from .campaign import Campaign
from .records import RecordIndex

FOLLOW_INTERVAL = 0.5


def print_logs(campaign: Campaign, prefix: str, *, stderr: bool = False, follow: bool = False,
               out: BinaryIO | None = None, note: Callable[[str], None] | None = None,
               interval: float = FOLLOW_INTERVAL) -> int:
    """Write the execution's stdout (or stderr) to ``out``; with ``follow``, until it ends. Returns 0."""
    out = out or sys.stdout.buffer
    say = note or (lambda text: print(f"expegit: {text}", file=sys.stderr, flush=True))
    index = RecordIndex(campaign.store)
    execution_id = index.resolve(prefix)
    ref = "refs/heads/" + render_branch_name(execution_id)
    name, branch_path = ("stderr", STDERR_PATH) if stderr else ("stdout", STDOUT_PATH)
    reader = None
    reader_host: str | None = None
    attempt_key: tuple[str | None, int] | None = None
    offset = 0
    said_waiting = False
    tip: str | None = None
    record: ExecutionRecord | None = None
    try:
        while True:
            now_tip = campaign.store.ref(ref)
            if now_tip is None:
                say(f"execution {execution_id}: its branch is gone")
                return 0
            if now_tip != tip:
                tip, record = now_tip, index.record_at(now_tip)
            assert record is not None
            key = (record.remote_dir, record.attempt)
            if record.state == "running" and attempt_key is not None and key != attempt_key:
                say(f"execution {execution_id}: attempt {record.attempt} started; its output follows")
                offset = 0
            if record.state != "running" and record.state != "created":
                data = campaign.store.read_path(tip, branch_path) or b""
                if attempt_key is not None and key != attempt_key:
                    offset = 0  # ended in an attempt this follow never read: print it whole
                _write(out, data[offset:])
                return 0
            if record.state == "running" and record.remote_dir:
                attempt_key = key
                if reader is None or reader_host != record.host:
                    if reader is not None:
                        reader.close()
                    reader, reader_host = _reader(campaign, record), record.host
                try:
                    chunk = reader.read(record.remote_dir, name, offset)
                except Exception as exc:  # noqa: BLE001 - unreachable for now: the next round reads again
                    if not follow:
                        raise
                    say(f"execution {execution_id}: output not readable now ({exc}); trying again")
                    chunk = b""
                _write(out, chunk)
                offset += len(chunk)
                if not follow:
                    return 0
            elif not follow:
                say(f"execution {execution_id} has not started yet (state {record.state}): no output")
                return 0
            elif not said_waiting:
                said_waiting = True
                say(f"execution {execution_id} has not started yet; waiting for it (Ctrl-C to stop)")
            time.sleep(interval)
    finally:
        if reader is not None:
            reader.close()


def _reader(campaign: Campaign, record: ExecutionRecord):  # type: ignore[no-untyped-def]
    from runaway.factory import profile_for
    from runaway.place_files import place_files

    return place_files(profile_for(record.profile, campaign.manifest), record.host)


def _write(out: BinaryIO, data: bytes) -> None:
    if data:
        out.write(data)
        out.flush()


__all__ = ["print_logs"]
