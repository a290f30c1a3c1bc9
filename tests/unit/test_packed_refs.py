"""Bisecting packed-refs (expegit/packed_refs.py) agrees with parsing the whole file."""
from __future__ import annotations

import os
import random
from pathlib import Path

from expegit.gitstore import PACKED_REFS_HEADER, parse_packed_refs, render_packed_refs
from expegit.packed_refs import PackedRefsView, find_packed_ref, locate, locate_all


def _sha(i: int) -> str:
    return f"{i:040x}"


def test_every_ref_of_a_rendered_file_is_found_and_absent_ones_are_not() -> None:
    rng = random.Random(7)
    for size in (0, 1, 2, 3, 10, 257):
        names = {f"refs/heads/executions/{rng.getrandbits(48):012x}" for _ in range(size)}
        names |= {"refs/heads/main", "refs/tags/v1"}
        entries = {n: (_sha(k + 1), _sha(999) if n.startswith("refs/tags/") else None)
                   for k, n in enumerate(sorted(names))}
        data = render_packed_refs(PACKED_REFS_HEADER, entries).encode()
        assert data.count(b"\n^") == 1  # the tag's peeled line sits among the refs
        for name, (sha, _peeled) in entries.items():
            assert find_packed_ref(data, name.encode()) == sha.encode(), name
        for absent in ("refs/heads/executions/", "refs/heads/executions/zzz", "refs/a", "refs/tags/v0",
                       "refs/tags/v10", "refs/heads/mai", "refs/heads/maim"):
            assert find_packed_ref(data, absent.encode()) is None, absent


def test_locating_many_refs_in_one_pass_agrees_with_a_bisection_each() -> None:
    """Both of locate_all's regimes (a pass over the lines for many names, bisections for few), with a
    peeled tag line among the refs and names before, between and after them."""
    rng = random.Random(11)
    names = sorted({f"refs/heads/executions/{rng.getrandbits(48):012x}" for _ in range(2000)})
    entries = {n: (_sha(k + 1), None) for k, n in enumerate(names)}
    entries["refs/tags/v1"] = (_sha(5000), _sha(5001))
    data = render_packed_refs(PACKED_REFS_HEADER, entries).encode()
    absent = [f"refs/heads/executions/{rng.getrandbits(48):012x}".encode() for _ in range(50)]
    edges = [b"refs/a", b"refs/heads/executions/", b"refs/tags/v0", b"refs/tags/v1", b"refs/tags/v2", b"zzz"]
    for asked in (rng.sample(names, 3), rng.sample(names, 1500), names):
        wanted = [n.encode() for n in asked] + absent + edges + [asked[0].encode()]  # a repeat too
        assert locate_all(data, wanted) == {n: locate(data, n) for n in wanted}
    assert locate_all(data, []) == {}


def test_a_file_without_the_sorted_trait_is_scanned() -> None:
    data = (f"# pack-refs with: peeled\n{_sha(2)} refs/heads/b\n{_sha(1)} refs/heads/a\n").encode()
    assert find_packed_ref(data, b"refs/heads/a") == _sha(1).encode()
    assert find_packed_ref(data, b"refs/heads/b") == _sha(2).encode()
    assert find_packed_ref(data, b"refs/heads/c") is None
    headerless = f"{_sha(3)} refs/heads/x\n".encode()
    assert find_packed_ref(headerless, b"refs/heads/x") == _sha(3).encode()
    assert find_packed_ref(b"", b"refs/heads/x") is None


def test_the_view_follows_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "packed-refs"
    view = PackedRefsView(str(path))
    assert view.lookup("refs/heads/a") is None  # no file yet
    path.write_text(render_packed_refs(PACKED_REFS_HEADER, {"refs/heads/a": (_sha(1), None)}))
    assert view.lookup("refs/heads/a") == _sha(1)
    replacement = tmp_path / "packed-refs.lock"
    replacement.write_text(render_packed_refs(PACKED_REFS_HEADER, {"refs/heads/a": (_sha(2), None)}))
    before = path.stat()
    os.utime(replacement, ns=(before.st_atime_ns, before.st_mtime_ns))  # same size, same mtime
    os.replace(replacement, path)
    assert view.lookup("refs/heads/a") == _sha(2)
    assert parse_packed_refs(path.read_text()) == {"refs/heads/a": _sha(2)}
    path.unlink()
    assert view.lookup("refs/heads/a") is None
    view.close()


def test_a_small_campaign_rewrites_packed_refs_and_a_large_one_writes_loose_refs(tmp_path: Path, monkeypatch) -> None:
    """Per flush: one rewrite of packed-refs while it is small (a loose file per ref cost a fifth of a
    small run's time), loose refs once it is larger than the cap (a rewrite would grow with the campaign)."""
    import subprocess

    from expegit import gitstore
    from expegit.gitstore import GitStore

    store = GitStore.init(tmp_path / "c")
    sha = store.write_commit(store.tree_with(None, {}), [], "root")
    loose = store.git_dir / "refs" / "heads" / "executions"

    def names(start: int, count: int) -> list[tuple[str, str | None, str | None]]:
        return [(f"refs/heads/executions/{i:012x}", None, sha) for i in range(start, start + count)]

    assert store.swap_refs(names(0, 20)) == [True] * 20
    assert not loose.exists() or not any(loose.iterdir())
    assert len(parse_packed_refs((store.git_dir / "packed-refs").read_text())) == 20
    monkeypatch.setattr(gitstore, "REWRITE_MAX_BYTES", 100)  # packed-refs is now "large"
    assert store.swap_refs(names(20, 5)) == [True] * 5
    assert sorted(p.name for p in loose.iterdir()) == [f"{i:012x}" for i in range(20, 25)]
    assert store.swap_refs([(f"refs/heads/executions/{0:012x}", None, sha)]) == [False]  # taken: refused either way
    listed = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/heads/executions"],
                            cwd=tmp_path / "c", capture_output=True, text=True, check=True).stdout.split()
    assert len(listed) == 25  # git reads both kinds the same


def test_splice_gives_what_parsing_editing_and_rendering_the_whole_file_gives() -> None:
    """splice() is how swap_refs writes packed-refs now; the dict round trip it replaced is the oracle."""
    from expegit.gitstore import split_packed_refs
    from expegit.packed_refs import is_sorted, locate, splice, splice_pieces

    rng = random.Random(11)
    for size in (0, 1, 2, 5, 40, 300):
        names = sorted({f"refs/heads/executions/{rng.getrandbits(20):05x}" for _ in range(size)})
        entries = {n: (_sha(k + 1), None) for k, n in enumerate(names)}
        entries["refs/tags/v1"] = (_sha(500), _sha(501))  # a peeled line in the middle of the file
        entries["refs/heads/main"] = (_sha(502), None)
        data = render_packed_refs(PACKED_REFS_HEADER, entries).encode()
        assert is_sorted(data)
        for _case in range(20):
            changes: dict[str, str | None] = {}
            for name in rng.sample(names, min(len(names), rng.randrange(4))):  # replaced or removed
                changes[name] = rng.choice([None, _sha(rng.randrange(1, 10**6))])
            for _new in range(rng.randrange(6)):  # new names: first, last, between, next to the tag
                name = rng.choice(["refs/a", "refs/zzz", "refs/tags/v0", "refs/tags/v2",
                                   f"refs/heads/executions/{rng.getrandbits(20):05x}"])
                changes[name] = _sha(rng.randrange(1, 10**6))
            expected = dict(entries)
            for name, sha in changes.items():
                if sha is None:
                    expected.pop(name, None)
                else:
                    expected[name] = (sha, None)
            spliced = splice(data, changes)
            assert spliced == render_packed_refs(PACKED_REFS_HEADER, expected).encode(), changes
            assert split_packed_refs(spliced.decode())[1] == expected
            # The positions a compare-and-swap found first (locate) give the same pieces.
            located = {name: locate(data, name.encode())[0] for name in changes if rng.random() < 0.7}
            assert b"".join(splice_pieces(data, changes, located)) == spliced


def test_splice_needs_a_sorted_file_that_ends_its_last_line() -> None:
    from expegit.packed_refs import is_sorted

    assert not is_sorted(f"# pack-refs with: peeled\n{_sha(1)} refs/heads/a\n".encode())
    assert not is_sorted(f"{PACKED_REFS_HEADER}\n{_sha(1)} refs/heads/a".encode())
    assert not is_sorted(b"")
    assert is_sorted(f"{PACKED_REFS_HEADER}\n".encode())


def test_a_packed_refs_file_without_the_sorted_trait_is_sorted_once_then_spliced(tmp_path: Path) -> None:
    """dulwich and older gits write packed-refs without the trait, in any order: the bulk write sorts it
    (keeping the file's other traits) and git still reads every ref, old and new."""
    import subprocess

    from expegit.gitstore import GitStore

    store = GitStore.init(tmp_path / "c")
    sha = store.write_commit(store.tree_with(None, {}), [], "root")
    (store.git_dir / "packed-refs").write_text(f"# pack-refs with: peeled\n{sha} refs/heads/z\n{sha} refs/heads/b\n")
    assert store.swap_refs([("refs/heads/executions/0001", None, sha), ("refs/heads/b", sha, None)],
                           bulk=True) == [True, True]
    text = (store.git_dir / "packed-refs").read_text()
    assert text.splitlines() == ["# pack-refs with: peeled sorted ", f"{sha} refs/heads/executions/0001",
                                 f"{sha} refs/heads/z"]
    listed = subprocess.run(["git", "for-each-ref", "--format=%(refname)"], cwd=tmp_path / "c",
                            capture_output=True, text=True, check=True).stdout.split()
    assert listed == ["refs/heads/executions/0001", "refs/heads/z"]


def test_a_headerless_packed_refs_file_is_sorted_without_claiming_peeled_tags(tmp_path: Path) -> None:
    """Old gits wrote no header (and no peeled lines): the sorted copy must not say "fully-peeled"."""
    from expegit.gitstore import GitStore

    store = GitStore.init(tmp_path / "c")
    sha = store.write_commit(store.tree_with(None, {}), [], "root")
    (store.git_dir / "packed-refs").write_text(f"{sha} refs/tags/v2\n{sha} refs/tags/v1\n")
    assert store.swap_refs([("refs/heads/executions/0001", None, sha)], bulk=True) == [True]
    assert (store.git_dir / "packed-refs").read_text().splitlines() == [
        "# pack-refs with: sorted ", f"{sha} refs/heads/executions/0001", f"{sha} refs/tags/v1", f"{sha} refs/tags/v2"]


def test_pieces_are_written_whole_through_short_writes_and_more_than_one_writev(tmp_path: Path, monkeypatch) -> None:
    """A writev may write less than asked (a signal, the disk's last block) and takes IOV_BATCH pieces at
    most: what lands is still every piece, in order."""
    from expegit import gitstore

    real_writev = os.writev
    calls: list[int] = []

    def short_writev(fd: int, buffers) -> int:
        calls.append(len(buffers))
        assert len(buffers) <= 3
        first = bytes(buffers[0])
        return real_writev(fd, [first[:5]]) if len(first) > 5 else real_writev(fd, buffers[:2])

    monkeypatch.setattr(gitstore, "IOV_BATCH", 3)
    monkeypatch.setattr(gitstore.os, "writev", short_writev)
    pieces = [b"header\n", memoryview(b"0123456789abcdef" * 3), b"", b"x", b"tail of it\n"] * 4
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        gitstore._write_pieces(fd, pieces)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(bytes(p) for p in pieces)
    assert len(calls) > len(pieces) // 3


def test_a_ref_is_read_without_parsing_the_whole_packed_refs(tmp_path: Path, monkeypatch) -> None:
    """GitStore.ref: loose file, else a bisection of packed-refs; only symbolic refs go through dulwich,
    which parses every packed line to read one (5 s of each `expegit push` at 100,000 branches)."""
    import subprocess

    from dulwich.refs import DiskRefsContainer

    from expegit.gitstore import GitStore

    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                    "--allow-empty", "-m", "c"], check=True)
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    for name in ("refs/remotes/origin/executions/0a", "refs/orchestra/remotes/origin/index"):
        subprocess.run(["git", "-C", str(tmp_path), "update-ref", name, head], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "pack-refs", "--all"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "update-ref", "refs/remotes/origin/executions/0b", head], check=True)
    store = GitStore(tmp_path)
    calls: list[str] = []
    original = DiskRefsContainer.get_packed_refs
    monkeypatch.setattr(DiskRefsContainer, "get_packed_refs", lambda self: calls.append("parse") or original(self))
    assert store.ref("refs/remotes/origin/executions/0a") == head  # packed
    assert store.ref("refs/remotes/origin/executions/0b") == head  # loose
    assert store.ref("refs/orchestra/remotes/origin/index") == head
    assert store.ref("refs/remotes/origin/executions/0c") is None
    assert calls == []
    assert store.ref("HEAD") == head  # symbolic: dulwich follows it
