"""Progress of a run: counters, and how they are shown (one live line on a TTY, plain lines otherwise)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts executions as they move, and reports them without ever blocking the run."""

    def __init__(self, total: int, stream: TextIO | None = None, *, live: bool | None = None,
                 quiet: bool = False) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.quiet = quiet
        self.started_at = time.time()
        self.done = self.failed = self.running = self.cancelled = 0
        self.best: str | None = None
        self.waiting: str | None = None  # what the run waits on while nothing runs (an allocation pending)
        self._last_draw = 0.0

    def eta(self) -> float | None:
        finished = self.done + self.failed
        if finished == 0 or finished >= self.total:
            return None
        elapsed = time.time() - self.started_at
        return elapsed / finished * (self.total - finished)

    def line(self) -> str:
        elapsed = time.time() - self.started_at
        text = (f"{self.done + self.failed}/{self.total} done ({self.failed} failed), {self.running} running, "
                f"elapsed {format_seconds(elapsed)}, ETA {format_seconds(self.eta())}")
        if self.best:
            text += f", best {self.best}"
        if self.waiting and self.running == 0:
            text += f", waiting: {self.waiting}"
        return text

    def wait_on(self, what: str | None) -> None:
        """Say what the run waits on (None: nothing). Called every second or so: the live line is redrawn
        (elapsed keeps moving while nothing else happens); plain output gets one line per change."""
        changed = what != self.waiting
        self.waiting = what
        if self.live:
            self._draw(force=changed)
        elif changed and what and not self.quiet:
            print(f"waiting: {what}", file=self.stream, flush=True)

    def started(self) -> None:
        self.running += 1
        self._draw()

    def ended(self, ok: bool, message: str) -> None:
        self.running = max(0, self.running - 1)
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.live:
            self._draw(force=not ok, message=None if ok else message)
        elif not self.quiet:
            print(message, file=self.stream, flush=True)

    def note(self, message: str) -> None:
        if self.quiet and not self.live:
            return
        if self.live:
            self.stream.write("\r\033[K" + message + "\n")
            self._draw(force=True)
        else:
            print(message, file=self.stream, flush=True)

    def _draw(self, force: bool = False, message: str | None = None) -> None:
        if not self.live:
            return
        now = time.time()
        if message:
            self.stream.write("\r\033[K" + message + "\n")
        if force or now - self._last_draw > 0.1:
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()
            self._last_draw = now

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K" + self.line() + "\n")
            self.stream.flush()
