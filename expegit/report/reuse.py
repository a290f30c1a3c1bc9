"""Carrying output files of unchanged executions over from the previous report.

Why: a post-receive hook re-renders the report on every push, and most executions have not changed since
the last render. Reading their outputs from git again (``load_outputs``) and writing them again costs far
more than the rest of the report, and deleting the old copies costs as much again. An execution in a
final state whose record is identical to the one the previous report showed has the same outputs (its
branch is append-only and the final record is committed with them), so its files are hard-linked from
the previous site: the previous site stays intact for readers until the swap, and unlinking the old
names later frees no data. Anything that fails (no previous site, other file system) falls back to
loading the outputs normally.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from orchestra.execution import ExecutionRecord

from .datafile import dumps_script_safe, record_dict
from .execution_page import DETAILS_DIR, parse_shard
from .files import FILES_DIR, OutputEntry

FINAL = frozenset({"finished", "failed", "cancelled", "pruned"})
_ENTRY_FIELDS = ("path", "href", "size", "kind", "preview", "problem", "inline")


def previous_details(previous: Path | None) -> dict[str, dict[str, Any]]:
    """Detail entries of the previous report by page name; empty when there is none or it is unreadable."""
    entries: dict[str, dict[str, Any]] = {}
    if previous is None or not (previous / DETAILS_DIR).is_dir():
        return entries
    for path in (previous / DETAILS_DIR).glob("*.js"):
        try:
            entries.update(parse_shard(path.read_text(encoding="ascii")))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
    return entries


def reuse_outputs(previous: Path, root: Path, name: str, record: ExecutionRecord,
                  old: dict[str, Any] | None) -> list[OutputEntry] | None:
    """The output entries, hard-linked from ``previous``, or None when they must be loaded afresh."""
    if old is None or record.state not in FINAL or old.get("record", {}).get("state") not in FINAL:
        return None
    if json.loads(dumps_script_safe(record_dict(record))) != old["record"]:
        return None
    dst_base = root / FILES_DIR / name
    try:
        entries = [OutputEntry(**{k: item.get(k) for k in _ENTRY_FIELDS if k in item}) for item in old.get("outputs", [])]
        src_base = previous / FILES_DIR / name
        if src_base.is_dir() and not src_base.is_symlink():
            _link_tree(src_base, dst_base)
    except (OSError, TypeError, AttributeError):
        shutil.rmtree(dst_base, ignore_errors=True)  # the caller writes these outputs afresh
        return None
    return entries


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link regular files only: a symlink planted in the old site must not pull in outside files."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                _link_tree(Path(entry.path), dst / entry.name)
            elif entry.is_file(follow_symlinks=False):
                os.link(entry.path, dst / entry.name, follow_symlinks=False)
