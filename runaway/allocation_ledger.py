"""Which allocations each controller holds, recorded beside the campaign (not on the cluster).

Why: a controller killed with -9 cannot cancel its allocations, and the scheduler then keeps their nodes
until the walltime: hours of a user's allocation for nothing. `expegit resume` re-attaches to the
executions still running in them, but it cannot tell from the cluster which jobs were the dead
controller's: the remote workdir (``~/.orchestra`` by default) is shared by all of a user's campaigns,
and a job name by every campaign with a profile of the same name. Recorded in the campaign's private
directory, one file per controller pid, "whose" is exact: the allocations in the file of a pid that no
longer runs a controller are orphans, and the resume gives them back once what it re-attached has ended.

Format: ``<directory>/<pid>``, one ``<profile>\\t<job id>`` line per allocation held. A file a dead
predecessor with the same pid left is renamed ``<pid>.stale-<ns>`` before a new controller writes its own.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from orchestra.controllers import controller_alive

_NAME = re.compile(r"^(\d+)(\.stale-\d+)?\Z")


def render_ledger(entries: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{profile}\t{job_id}\n" for profile, job_id in entries)


def parse_ledger(text: str) -> list[tuple[str, str]]:
    """(profile, job id) pairs; a torn last line (the writer was killed mid-append) is skipped."""
    entries = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] and parts[1]:
            entries.append((parts[0], parts[1]))
    return entries


class AllocationLedger:
    def __init__(self, directory: Path, profile: str, *, pid: int | None = None,
                 alive: Callable[[int], bool] = controller_alive) -> None:
        self.directory = directory
        self.profile = profile
        self.pid = pid if pid is not None else os.getpid()
        self.path = directory / str(self.pid)
        self._alive = alive
        self._claimed = False

    def _claim(self) -> None:
        """The first write of this controller: a file already named by its pid is a dead one's."""
        if self._claimed:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path not in _OWNED:
            os.replace(self.path, self.directory / f"{self.pid}.stale-{time.time_ns()}")
        self._claimed = True
        _OWNED.add(self.path)

    def add(self, job_id: str) -> None:
        self._claim()
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(render_ledger([(self.profile, job_id)]))

    def remove(self, job_ids: Iterable[str]) -> None:
        """Allocations this controller gave back (or saw end)."""
        self.forget(self.path, job_ids)

    def orphans(self) -> dict[Path, list[str]]:
        """This profile's allocations recorded by controllers that are gone: ledger file -> job ids."""
        found: dict[Path, list[str]] = {}
        for path, entries in _dead_ledgers(self.directory, self._alive):
            jobs = [job_id for profile, job_id in entries if profile == self.profile]
            if jobs and path != self.path:
                found[path] = jobs
        return found

    def forget(self, path: Path, job_ids: Iterable[str]) -> None:
        """This profile's ``job_ids`` out of the ledger file ``path`` (which goes once empty)."""
        gone = set(job_ids)
        _rewrite(path, lambda entry: not (entry[0] == self.profile and entry[1] in gone))


_OWNED: set[Path] = set()  # the ledger files this process created (a pid's file from before is not)


def _dead_ledgers(directory: Path, alive: Callable[[int], bool]) -> list[tuple[Path, list[tuple[str, str]]]]:
    """(ledger file, its entries) for every controller that is gone: its pid no longer runs a controller,
    or the file was set aside as stale."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.iterdir()):
        match = _NAME.match(path.name)
        if match is None or (match.group(2) is None and alive(int(match.group(1)))):
            continue
        try:
            found.append((path, parse_ledger(path.read_text("utf-8"))))
        except OSError:
            continue
    return found


def orphaned_profiles(directory: Path, alive: Callable[[int], bool] = controller_alive) -> set[str]:
    """The profiles with allocations recorded by controllers that are gone (what a resume gives back)."""
    return {profile for _path, entries in _dead_ledgers(directory, alive) for profile, _job in entries}


def _rewrite(path: Path, keep: Callable[[tuple[str, str]], bool]) -> None:
    try:
        entries = parse_ledger(path.read_text("utf-8"))
    except FileNotFoundError:
        return
    kept = [entry for entry in entries if keep(entry)]
    if not kept:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_ledger(kept), encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["AllocationLedger", "orphaned_profiles", "parse_ledger", "render_ledger"]
