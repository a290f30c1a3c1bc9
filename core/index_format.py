"""The shipped record index: the format of the ``refs/orchestra/index`` commit a campaign carries to its
clones, with its pure render and strict parse functions.

Why it exists: after a clone every record would be read and parsed again (21 s of CPU for 100,000
executions). The index is a commit whose tree holds the records, already as JSON, in shards of
SHARD_ROWS lines, keyed by the tip each was read at:

    <shard name: 00000.tsv, 00001.tsv, ...>
        orchestra-index TAB 1 TAB <rows>
        <execution id> TAB <tip commit> TAB <the record as one line of JSON>
        ...

Shards follow the campaign's list order (oldest first), so an execution that finishes, or a run that adds
executions at the end, changes a few shards: the other blobs are the same objects as before, and a push of
a new index sends only what changed.

It is data from a remote, so it is parsed strictly and within bounds (a malformed shard is refused whole),
and never trusted over the refs: a row only says what the record at its tip commit is. Readers use a row
only where its tip is their branch's tip; the server's pre-receive hook checks every new row against the
record at its tip, so a pusher cannot make it say anything the records do not (pre_receive.py).

Standard library only: the server's hooks parse it too, from their library copy (hooks/install.py).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

INDEX_REF = "refs/orchestra/index"  # on a remote: a custom ref, invisible to `git branch`, see docs/scale.md
MAGIC = "orchestra-index"
FORMAT = "1"
SHARD_ROWS = 5000
MAX_SHARDS = 4096          # 20 million rows: far past what any campaign here has
MAX_ROW_BYTES = 1 << 20    # one record's JSON; a real record is ~1 KB
MAX_SHARD_BYTES = 64 << 20
_SHARD_NAME = re.compile(r"^[0-9]{5}\.tsv$")
_ID = re.compile(r"^[0-9a-f]{12}$")
_TIP = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")

Row = tuple[str, str, str]  # (execution id, tip, record JSON)


class IndexFormatError(ValueError):
    """The shipped index is not in this format: readers ignore all of it, the server's hook refuses it."""


def shard_name(number: int) -> str:
    return f"{number:05d}.tsv"


def is_shard_name(name: str) -> bool:
    return bool(_SHARD_NAME.match(name))


def render_shard(rows: Sequence[Row]) -> bytes:
    """One shard's blob. The JSON must be one line without tabs (json.dumps writes it so)."""
    for execution_id, tip, text in rows:
        if not _ID.match(execution_id) or not _TIP.match(tip) or "\t" in text or "\n" in text:
            raise IndexFormatError(f"row of {execution_id!r} cannot be written in the index")
    body = "".join(f"{i}\t{t}\t{j}\n" for i, t, j in rows)
    return (f"{MAGIC}\t{FORMAT}\t{len(rows)}\n" + body).encode("utf-8")


def render_shards(rows: Sequence[Row], per_shard: int = SHARD_ROWS) -> dict[str, bytes]:
    """Shard name -> blob for all rows, in their order."""
    return {shard_name(k): render_shard(rows[start:start + per_shard])
            for k, start in enumerate(range(0, len(rows), per_shard))}


def parse_shard(data: bytes, where: str = "shard") -> list[Row]:
    """The rows of one shard; IndexFormatError for anything render_shard would not have written."""
    if len(data) > MAX_SHARD_BYTES:
        raise IndexFormatError(f"{where}: {len(data)} bytes, more than {MAX_SHARD_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IndexFormatError(f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    header, sep, body = text.partition("\n")
    parts = header.split("\t")
    if not sep or len(parts) != 3 or parts[0] != MAGIC or parts[1] != FORMAT or not parts[2].isdigit() \
            or len(parts[2]) > 9:
        raise IndexFormatError(f"{where}: not an index shard of format {FORMAT} (header {header[:60]!r})")
    lines = body.split("\n")  # not splitlines(): U+2028 may stand inside the JSON
    if lines[-1] != "":
        raise IndexFormatError(f"{where}: the last row has no newline (truncated?)")
    lines.pop()
    if len(lines) != int(parts[2]):
        raise IndexFormatError(f"{where}: {len(lines)} rows where the header says {parts[2]}")
    rows: list[Row] = []
    for number, line in enumerate(lines, start=2):
        fields = line.split("\t")
        if len(fields) != 3 or not _ID.match(fields[0]) or not _TIP.match(fields[1]) \
                or not fields[2].startswith("{") or not fields[2].endswith("}") or len(fields[2]) > MAX_ROW_BYTES:
            raise IndexFormatError(f"{where}:{number}: not '<id> TAB <tip> TAB <record JSON>'")
        rows.append((fields[0], fields[1], fields[2]))
    return rows


def check_shard_names(entries: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (name, blob id) shard entries of the index tree in order; IndexFormatError for any other entry,
    a gap in the numbering, or too many shards."""
    shards = sorted(entries)
    if len(shards) > MAX_SHARDS:
        raise IndexFormatError(f"{len(shards)} shards, more than {MAX_SHARDS}")
    for number, (name, sha) in enumerate(shards):
        if name != shard_name(number) or not _TIP.match(sha):
            raise IndexFormatError(f"unexpected entry {name!r} in the index tree (shards are 00000.tsv, 00001.tsv, ...)")
    return shards


def parse_ls_tree(text: str) -> list[tuple[str, str]]:
    """(name, blob id) of `git ls-tree` output lines ``<mode> SP <type> SP <id> TAB <name>``; only blobs of
    mode 100644 are shards, anything else is IndexFormatError."""
    out = []
    for line in text.splitlines():
        meta, sep, name = line.partition("\t")
        parts = meta.split(" ")
        if not sep or len(parts) != 3 or parts[0] != "100644" or parts[1] != "blob":
            raise IndexFormatError(f"unexpected entry {line[:80]!r} in the index tree")
        out.append((name, parts[2]))
    return out
