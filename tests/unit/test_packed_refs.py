"""Bisecting packed-refs (expegit/packed_refs.py) agrees with parsing the whole file."""
from __future__ import annotations

import os
import random
from pathlib import Path

from expegit.gitstore import PACKED_REFS_HEADER, parse_packed_refs, render_packed_refs
from expegit.packed_refs import PackedRefsView, find_packed_ref


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
