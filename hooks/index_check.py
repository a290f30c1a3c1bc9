"""Server side of the shipped record index: a pushed ``refs/orchestra/index`` may only say what the records say.

The index is a cache that clones trust row by row (expegit/shipped_index.py): a row whose tip matches a
branch stands in for reading that branch's record. A pusher who could write any row could therefore make
every later clone show results nobody produced, without touching a branch. So pre-receive checks every
row that the previous index did not already hold: its tip must be a commit whose record, read here
through `git cat-file`, is the row's record exactly (compared as canonical JSON). A row that fails refuses
the push, with the rows named. Deleting the index is allowed to anyone: it only makes the next clone read
the records itself. Rewriting it (a non-fast-forward) is allowed too, under the same row checks: it holds
no results of its own, so the append-only rule of execution branches does not apply to it.

Standard library only (see common.py).
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from orchestra import index_format  # the backbone's (stdlib only): in the hooks' library copy too

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef,import-not-found]

SHOWN = 5


def read_index(commit: str) -> list[index_format.Row]:
    """The rows of the index commit ``commit`` in this repository; IndexFormatError if it is none."""
    kind = subprocess.run(["git", "cat-file", "-t", commit], capture_output=True, text=True)
    if kind.returncode != 0 or kind.stdout.strip() != "commit":
        raise index_format.IndexFormatError(f"{commit[:12]} is not a commit")
    listing = subprocess.run(["git", "ls-tree", commit], capture_output=True, text=True)
    if listing.returncode != 0:
        raise index_format.IndexFormatError(f"cannot list the tree of {commit[:12]}")
    shards = index_format.check_shard_names(index_format.parse_ls_tree(listing.stdout))
    rows: list[index_format.Row] = []
    for (name, _sha), (_spec, content) in zip(shards, common.read_blobs([sha for _n, sha in shards])):
        if content is None:
            raise index_format.IndexFormatError(f"{name} is missing or not a blob")
        rows.extend(index_format.parse_shard(content, name))
    return rows


def canonical(record: object) -> str:
    return json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False)  # type: ignore[attr-defined]


def row_problems(rows: list[index_format.Row], known: Mapping[str, Any] | None = None) -> list[str]:
    """One line per row that does not say what the record at its tip says.

    ``known``: tip -> record already read and parsed in this push (pre_receive's check of the pushed
    branches); only the others are read here. A first push of 100,000 branches with their index read
    every record twice, 10 s of the server's time.
    """
    from orchestra import execution
    from orchestra.errors import OrchestraError

    known = known or {}
    problems: list[str] = []
    seen: set[str] = set()
    contents = dict(common.read_blobs(sorted({f"{tip}:{common.RECORD_PATH}" for _i, tip, _j in rows
                                              if tip not in known})))
    for execution_id, tip, text in rows:
        if execution_id in seen:
            problems.append(f"{execution_id} has two rows")
            continue
        seen.add(execution_id)
        if tip in known:
            problem, record = None, known[tip]
        else:
            problem, record = common.parse_record_content(contents.get(f"{tip}:{common.RECORD_PATH}"))
        if problem:
            problems.append(f"{execution_id} at {tip[:12]}: {problem}")
            continue
        try:
            shipped = execution.ExecutionRecord.from_dict(json.loads(text))
        except (ValueError, TypeError, OrchestraError) as exc:
            problems.append(f"{execution_id} at {tip[:12]}: its row is not a record ({exc})")
            continue
        if shipped.id != execution_id or canonical(shipped) != canonical(record):
            problems.append(f"{execution_id} at {tip[:12]}: its row differs from the record at that commit")
    return problems


def check(updates: list[common.RefUpdate], known: Mapping[str, Any] | None = None) -> list[str]:
    """Refusal messages for the index updates in this push (none: accept); ``known`` as row_problems."""
    messages = []
    for update in updates:
        if update.ref != index_format.INDEX_REF or update.is_deletion:
            continue
        try:
            rows = read_index(update.new)
        except index_format.IndexFormatError as exc:
            messages.append(f"{update.ref}: not a record index: {exc}")
            continue
        accepted: set[index_format.Row] = set()
        if not update.is_creation:
            try:
                accepted = set(read_index(update.old))  # accepted before, by this check
            except index_format.IndexFormatError:
                accepted = set()
        problems = row_problems([row for row in rows if row not in accepted], known)
        if problems:
            shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
            messages.append(f"{update.ref}: {len(problems)} rows do not match the records they name ({shown}); "
                            f"the record index is a cache of the records and may only repeat them "
                            f"(`expegit push` writes a correct one)")
    return messages
