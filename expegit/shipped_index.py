"""The record index a campaign ships to its clones (``refs/orchestra/index``), written and read here.

`expegit push` writes the index from the local record cache and pushes it beside the branches; `expegit
clone` and `pull` fetch it into ``refs/orchestra/remotes/<remote>/index``. When the record cache has many
branches to (re)read, as after a clone, RecordIndex takes what it can from the fetched indexes instead of
reading and parsing every record: 100,000 records in a few seconds instead of twenty.

Trust: a row is used only where its tip is the branch's tip in this repository (a row never makes a
branch, or a record, appear), its JSON must be a record ExecutionRecord.from_dict accepts with the row's
id, and the cache line is rendered here from that record, never copied. Rows that do not qualify are read
from the records, as without an index. What the server's hook guarantees on top: every row it accepted
says what the record at its tip says (hooks/pre_receive.py). The format is core/index_format.py's (stdlib
only: the server's hook reads it too).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from orchestra.errors import ExecutionError
from orchestra.execution import ExecutionRecord
from orchestra.index_format import INDEX_REF, MAX_SHARDS, IndexFormatError, Row, check_shard_names, parse_shard, \
    render_shards

from .gitstore import GitStore
from .record_lines import FIELDS, PROBLEM, parse_records_bulk, render_line

TRACKING_PREFIX = "refs/orchestra/remotes/"
# Below this many branches to read, reading their records costs less than reading the index's shards.
MIN_ROWS_TO_USE = 500
SPOT_CHECK = 64  # rows checked against their records on every use of a shipped index (_spot_check)


def tracking_ref(remote: str) -> str:
    return f"{TRACKING_PREFIX}{remote}/index"


def fetch_refspec(remote: str) -> str:
    """What `git fetch` needs to bring the remote's index (a glob: no error where the remote has none)."""
    return f"+refs/orchestra/*:{TRACKING_PREFIX}{remote}/*"


def rows_of_cache(fields: Sequence[Sequence[str]]) -> list[Row]:
    """Index rows from record-cache columns (id, tip, ..., JSON last); unreadable records are left out."""
    return [(f[0], f[1], f[-1]) for f in fields if f[3] != PROBLEM]


def read_rows(store: GitStore, commit: str) -> list[Row]:
    """Every row of the index at ``commit``; IndexFormatError when it is not an index commit of this format."""
    try:
        entries: list[tuple[str, str]] = []
        for path, mode, sha in store.list_tree(commit):  # a fetched tree: bounded before it is all listed
            if mode != 0o100644:
                raise IndexFormatError(f"the index tree holds {path!r}, which is not a shard file")
            entries.append((path, sha))
            if len(entries) > MAX_SHARDS:
                raise IndexFormatError(f"more than {MAX_SHARDS} entries in the index tree")
        rows: list[Row] = []
        for name, _sha in check_shard_names(entries):
            data = store.read_path(commit, name)
            if data is None:
                raise IndexFormatError(f"{name} is not a blob")
            rows.extend(parse_shard(data, name))
        return rows
    except (KeyError, AttributeError) as exc:
        raise IndexFormatError(f"index commit {commit[:12]} is incomplete here ({exc})") from None


def write_index(store: GitStore, rows: Sequence[Row], parent: str | None) -> str | None:
    """A new index commit holding ``rows`` (child of ``parent``), or None when ``parent`` holds them already.

    Blobs of shards that did not change are the parent's objects again (content addressing), so the push
    of the new commit sends only the changed shards.
    """
    from .gitstore import FILE_MODE

    shards = render_shards(rows)
    with store.batch():
        files = {name: (FILE_MODE, store.write_blob(data)) for name, data in shards.items()}
        tree = store.tree_with(None, files)
        if parent is not None and store.tree_of(parent) == tree:
            return None
        return store.write_commit(tree, [parent] if parent else [],
                                  f"record index: {len(rows)} executions\n\nWritten by `expegit push`; "
                                  f"a cache of the records, read by `expegit clone` and `pull`.\n")


def merged_rows(ours: Sequence[Row], theirs: Sequence[Row], local_ids: set[str]) -> list[Row]:
    """Our rows, plus the remote index's rows of executions this clone does not have (a push must not drop
    what collaborators shipped); in list order as the remote's are kept in theirs."""
    kept = [row for row in theirs if row[0] not in local_ids]
    if not kept:
        return list(ours)
    by_id = {row[0]: row for row in ours}
    by_id.update((row[0], row) for row in kept)
    order: dict[str, str] = {}
    for row in [*ours, *kept]:
        try:
            order[row[0]] = json.loads(row[2]).get("created") or ""
        except (ValueError, AttributeError):
            order[row[0]] = ""
    return sorted(by_id.values(), key=lambda r: (order[r[0]], r[0]))


def shipped_indexes(store: GitStore) -> list[str]:
    """Commits of the indexes fetched from remotes, newest fetch first is not known: by ref name."""
    prefix = TRACKING_PREFIX.encode()
    return [sha for name, sha in sorted(store.refs_under(prefix).items()) if name.endswith("/index")]


def trusted_lines(store: GitStore, wanted: Mapping[str, str]) -> dict[str, list[str]]:
    """Record-cache columns, rendered here, for the branches of ``wanted`` (id -> tip) that a fetched
    index has a valid row for at exactly that tip; the others are for the caller to read."""

    candidates: dict[str, str] = {}
    for commit in shipped_indexes(store):
        try:
            rows = read_rows(store, commit)
        except IndexFormatError:
            continue  # not ours, or damaged: as if it were not there
        for execution_id, tip, text in rows:
            if wanted.get(execution_id) == tip and execution_id not in candidates:
                candidates[execution_id] = text
    if not candidates:
        return {}
    ids = list(candidates)
    try:
        data = json.loads("[" + ",".join(candidates[i] for i in ids) + "]")
    except ValueError:
        data = None
    if not isinstance(data, list) or len(data) != len(ids):
        data = [_loads(candidates[i]) for i in ids]  # one bad row must not cost the others
    out: dict[str, list[str]] = {}
    for execution_id, value in zip(ids, data):
        if not isinstance(value, dict) or value.get("id") != execution_id:
            continue
        try:
            record = ExecutionRecord.from_dict(value)
            # The row's text stands for the record when it parses to exactly what the record encodes (no
            # field normalised away by from_dict); else it is encoded again here. Either way, the same dict.
            as_is = candidates[execution_id] if record.to_dict() == value else None
            line = render_line(execution_id, wanted[execution_id], record, json_text=as_is)
        except (ExecutionError, TypeError, ValueError, AttributeError):
            continue  # from_dict checks what a record needs; a field of an odd type may still fail here
        out[execution_id] = line.split("\t", FIELDS - 1)
    return out if _spot_check(store, out) else {}


def _spot_check(store: GitStore, lines: Mapping[str, list[str]]) -> bool:
    """Whether SPOT_CHECK rows taken at random say what their records say (read and rendered here).

    Why: a row at the right tip cannot be told from the record without reading it, which is what the
    index spares. The server's hook checks every row it accepts; a remote without Orchestra's hooks may
    hold an index written by anyone, and one that lies wholesale is caught here (then none of it is used),
    though a single lying row among thousands is caught only by the hook.
    """
    import random


    ids = random.sample(sorted(lines), min(SPOT_CHECK, len(lines)))
    if not ids:
        return True
    tips = [lines[i][1] for i in ids]
    from orchestra.execution import RECORD_PATH

    for execution_id, tip, got in zip(ids, tips, parse_records_bulk(store.read_path_many(tips, RECORD_PATH))):
        if not isinstance(got, ExecutionRecord) or \
                render_line(execution_id, tip, got).split("\t", FIELDS - 1) != lines[execution_id]:
            return False
    return True


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        return None


__all__ = ["INDEX_REF", "IndexFormatError", "fetch_refspec", "merged_rows", "read_rows", "rows_of_cache",
           "tracking_ref", "trusted_lines", "write_index"]
