"""The shipped record index's text format (core/index_format.py): pure render and strict, bounded parse."""
from __future__ import annotations

import pytest

from orchestra import index_format as f

TIP = "a" * 40
ROWS = [("0123456789ab", TIP, '{"id": "0123456789ab"}'), ("ba9876543210", "b" * 64, '{"x": "\\u2028 tab\\t"}')]


def test_round_trip_and_sharding() -> None:
    assert f.parse_shard(f.render_shard(ROWS)) == ROWS
    shards = f.render_shards(ROWS * 3, per_shard=4)
    assert list(shards) == ["00000.tsv", "00001.tsv"]
    assert [r for name in shards for r in f.parse_shard(shards[name])] == ROWS * 3
    assert f.render_shards([]) == {}


@pytest.mark.parametrize("data, why", [
    (b"orchestra-index\t2\t0\n", "format 1"),
    (b"orchestra-index\t1\t2\n" + f"0123456789ab\t{TIP}\t{{}}\n".encode(), "1 rows where the header says 2"),
    (b"orchestra-index\t1\t1\n" + f"0123456789ab\t{TIP}\t{{}}".encode(), "truncated"),
    (b"orchestra-index\t1\t1\n" + f"0123456789AB\t{TIP}\t{{}}\n".encode(), ":2: not"),
    (b"orchestra-index\t1\t1\n" + f"0123456789ab\t{TIP[:-1]}\t{{}}\n".encode(), ":2: not"),
    (b"orchestra-index\t1\t1\n" + f"0123456789ab\t{TIP}\t[]\n".encode(), ":2: not"),
    (b"orchestra-index\t1\t1\n" + f"0123456789ab\t{TIP}\t{{}}\tx\n".encode(), ":2: not"),
    (b"orchestra-index\t1\t1\n\xff\n", "not UTF-8"),
    (b"", "not an index shard"),
])
def test_parse_refuses_what_render_would_not_write(data: bytes, why: str) -> None:
    with pytest.raises(f.IndexFormatError, match=why):
        f.parse_shard(data, "s")


def test_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(f, "MAX_SHARD_BYTES", 10)
    with pytest.raises(f.IndexFormatError, match="more than 10"):
        f.parse_shard(f.render_shard(ROWS))
    monkeypatch.setattr(f, "MAX_SHARDS", 1)
    with pytest.raises(f.IndexFormatError, match="more than 1"):
        f.check_shard_names([("00000.tsv", TIP), ("00001.tsv", TIP)])


def test_render_refuses_rows_it_cannot_write() -> None:
    with pytest.raises(f.IndexFormatError):
        f.render_shard([("0123456789ab", TIP, "{\t}")])
    with pytest.raises(f.IndexFormatError):
        f.render_shard([("../etc", TIP, "{}")])


def test_tree_entries() -> None:
    listing = f"100644 blob {TIP}\t00001.tsv\n100644 blob {TIP}\t00000.tsv\n"
    assert f.check_shard_names(f.parse_ls_tree(listing)) == [("00000.tsv", TIP), ("00001.tsv", TIP)]
    for bad in (f"100755 blob {TIP}\t00000.tsv\n", f"040000 tree {TIP}\t00000.tsv\n"):
        with pytest.raises(f.IndexFormatError, match="unexpected entry"):
            f.parse_ls_tree(bad)
    for names in ([("00001.tsv", TIP)], [("00000.tsv", TIP), ("notes", TIP)]):
        with pytest.raises(f.IndexFormatError, match="unexpected entry"):
            f.check_shard_names(names)
