"""report_bulk answers exactly what GitStore's object-by-object reads answer, on a real git repository."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from expegit import report_bulk
from expegit.gitstore import GitStore

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com"}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, env=ENV, check=True, capture_output=True, text=True).stdout.strip()


def _repo(tmp_path: Path) -> tuple[Path, str, list[str]]:
    root = tmp_path / "c"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "code.py").write_text("print(1)\n")
    (root / "sub").mkdir()
    (root / "sub" / "keep.txt").write_text("same\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "code")
    base = _git(root, "rev-parse", "HEAD")
    tips = []
    for k, (out, err) in enumerate([(b"hello\n" * 3, b""), (b"x" * 20000, None), (None, b"boom\n")]):
        _git(root, "checkout", "-q", "-b", f"executions/e{k}", base)
        (root / ".orchestra").mkdir(exist_ok=True)
        for name, data in (("stdout", out), ("stderr", err)):
            path = root / ".orchestra" / name
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        (root / "sub" / "new file.txt").write_text(f"{k}\n")
        (root / "code.py").write_text(f"print({k})\n")
        if k == 2:
            (root / "sub" / "keep.txt").unlink()  # deleted at the tip: not a file "at the tip"
        _git(root, "add", "-A")
        _git(root, "commit", "-qm", f"e{k}")
        tips.append(_git(root, "rev-parse", "HEAD"))
        _git(root, "checkout", "-q", "main")
        _git(root, "clean", "-qfdx")
    return root, base, tips


def test_bulk_reads_match_dulwich(tmp_path: Path) -> None:
    root, base, tips = _repo(tmp_path)
    store = GitStore(root)
    bulk = report_bulk.changed_files(store.git_dir, [(tip, base) for tip in tips])
    for tip in tips:
        assert sorted(bulk[tip]) == sorted(store.changed_files(base, tip))
    shas = [sha for files in bulk.values() for _p, _m, sha in files]
    sizes = report_bulk.blob_sizes(store.git_dir, shas)
    assert sizes == {sha: store.blob_size(sha) for sha in shas}
    specs = [f"{tip}:.orchestra/{name}" for tip in tips for name in ("stdout", "stderr")]
    tails = report_bulk.read_tails(store.git_dir, specs, 8192)
    for spec, got in zip(specs, tails):
        tip, path = spec.split(":")
        full = store.read_path(tip, path)
        assert got == (full[-8192:] if full is not None else None)


def test_parse_diff_tree_and_batch_header() -> None:
    raw = (b"aaaa\0:000000 100644 " + b"0" * 40 + b" " + b"b" * 40 + b" A\0p q\0"
           b":100644 000000 " + b"c" * 40 + b" " + b"0" * 40 + b" D\0gone\0bbbb\0")
    assert list(report_bulk.parse_diff_tree([raw])) == [("aaaa", [("p q", 0o100644, "b" * 40)]), ("bbbb", [])]
    assert report_bulk.parse_batch_header(b"abc blob 12\n") == ("abc", "blob", 12)
    assert report_bulk.parse_batch_header(b"deadbeef:x missing\n") is None


def test_metrics_read_in_bulk_match_one_by_one(tmp_path: Path) -> None:
    from expegit.metrics import MetricsIndex

    root, _base, tips = _repo(tmp_path)
    store = GitStore(root)
    by_id = {f"e{k}": tip for k, tip in enumerate(tips)}
    one = MetricsIndex(store).load(".orchestra/stdout", by_id)
    (store.git_dir / "orchestra" / "metrics.json").unlink()
    calls: list[list[str]] = []

    def read_many(specs: list[str]) -> list[bytes | None]:
        calls.append(specs)
        return report_bulk.read_tails(store.git_dir, specs, 1 << 20)

    assert MetricsIndex(store).load(".orchestra/stdout", by_id, read_many) == one
    assert len(calls) == 1 and len(calls[0]) == 3
    assert MetricsIndex(store).load(".orchestra/stdout", by_id, read_many) == one and calls[-1] == []


def test_blob_reader_answers_what_read_path_answers(tmp_path: Path) -> None:
    """Why: the report's output files were read through dulwich one by one (half of `expegit report` at
    100,000 executions); one long-lived `git cat-file --batch` must answer the same, absent files included."""
    root, base, tips = _repo(tmp_path)
    store = GitStore(root)
    asked = [(tip, path) for tip in tips + [base]
             for path in (".orchestra/stdout", ".orchestra/stderr", "sub/new file.txt", "sub", "no/such", "code.py")]
    with report_bulk.BlobReader(store.git_dir) as reader:
        got = [reader.read(tip, path) for tip, path in asked]
    assert got == [store.read_path(tip, path) if path != "sub" else None for tip, path in asked]
    assert got[0] == b"hello\n" * 3 and got[3] is None


def test_blob_reader_falls_back_when_git_cannot_run(tmp_path: Path) -> None:
    root, _base, tips = _repo(tmp_path)
    store = GitStore(root)
    reader = report_bulk.BlobReader(tmp_path / "not-a-git-dir", store.read_path)
    assert reader.read(tips[0], ".orchestra/stdout") == b"hello\n" * 3  # git refused: dulwich answered
    reader.close()
