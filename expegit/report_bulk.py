"""What the report reads of every execution branch besides its record, in bulk through the git binary.

Why not dulwich object by object: the report needs, per execution, the files its branch added (with their
sizes) and the tails of its stdout and stderr. That is five to ten object reads each; at 100,000
executions dulwich spent minutes on them (about 1 ms per read, far more on a busy disk), while
``git diff-tree --stdin`` and ``git cat-file --batch`` stream the same answers from one process each.
Both answer exactly what ``GitStore.changed_files`` and ``GitStore.read_path`` answer, which
tests/integration/test_report_bulk.py checks against them.

Pure parse functions (``parse_diff_tree``, ``parse_batch_header``) sit beside the streaming readers.
"""
from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

from orchestra.errors import RepositoryError

Change = tuple[str, int, str]  # (path, mode, blob id) of a file new or changed at the tip


def _popen(git_dir: Path, args: Sequence[str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(["git", "--git-dir", str(git_dir), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError as exc:
        raise RepositoryError(f"cannot run git: {exc}", hint="install git and put it on PATH") from exc


def _feed(proc: subprocess.Popen[bytes], lines: Iterable[str]) -> threading.Thread:
    """Write stdin from a thread (a greenlet under gevent) so git's output never blocks on our input."""
    def write() -> None:
        assert proc.stdin is not None
        try:
            for line in lines:
                proc.stdin.write(line.encode("utf-8", "surrogateescape") + b"\n")
        except BrokenPipeError:
            pass
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def parse_diff_tree(lines: Iterable[bytes]) -> Iterator[tuple[str, list[Change]]]:
    """(commit, changes) per commit from ``git diff-tree -r --stdin --no-renames -z`` output lines.

    With ``-z`` each record is ``:<old mode> <new mode> <old sha> <new sha> <status>\\0<path>\\0``; a commit
    id line (terminated by NUL too) starts each commit's block. Deleted files are not "at the tip".
    """
    tokens = iter(b"".join(lines).split(b"\0"))
    commit: str | None = None
    changes: list[Change] = []
    for token in tokens:
        if not token:
            continue
        if token.startswith(b":"):
            fields = token[1:].split(b" ")
            path = next(tokens, b"").decode("utf-8", "replace")
            if len(fields) == 5 and fields[4] != b"D":
                changes.append((path, int(fields[1], 8), fields[3].decode()))
            continue
        token = token.strip()
        if commit is not None:
            yield commit, changes
        commit, changes = token.decode().split(" ")[0], []
    if commit is not None:
        yield commit, changes


def changed_files(git_dir: Path, pairs: Sequence[tuple[str, str]]) -> dict[str, list[Change]]:
    """{tip: changes against its code commit} for (tip, code commit) pairs, in one ``git diff-tree``.

    A tip with nothing changed has no block in git's output and gets []. Git is asked ``<tip> <base>``
    (a commit followed by the commit to compare it with), which diffs exactly the trees dulwich would.
    """
    out: dict[str, list[Change]] = {tip: [] for tip, _base in pairs}
    if not pairs:
        return out
    proc = _popen(git_dir, ["diff-tree", "-r", "--stdin", "--no-renames", "-z"])
    feeder = _feed(proc, (f"{tip} {base}" for tip, base in pairs))
    assert proc.stdout is not None
    for tip, changes in parse_diff_tree(iter(lambda: proc.stdout.read(1 << 16), b"")):  # type: ignore[union-attr]
        if tip in out:
            out[tip] = changes
    feeder.join()
    if proc.wait() != 0:
        raise RepositoryError("git diff-tree failed while reading the executions' files",
                              hint="run `git fsck` in the campaign")
    return out


def parse_batch_header(line: bytes) -> tuple[str, str, int] | None:
    """(object id, type, size) from a ``git cat-file --batch`` header, None for ``<spec> missing``."""
    parts = line.rstrip(b"\n").split(b" ")
    if len(parts) != 3 or parts[-1] in (b"missing", b"ambiguous"):
        return None
    try:
        return parts[0].decode(), parts[1].decode(), int(parts[2])
    except ValueError:
        return None


def _read_tail(stream: IO[bytes], size: int, keep: int) -> bytes:
    """Read ``size`` bytes (and git's closing newline), keeping only the last ``keep``: a runaway log must
    not be held whole."""
    tail = b""
    left = size
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise RepositoryError("git cat-file ended early", hint="run `git fsck` in the campaign")
        left -= len(chunk)
        tail = (tail + chunk)[-keep:] if keep else b""
    stream.read(1)
    return tail


def read_tails(git_dir: Path, specs: Sequence[str], keep: int) -> list[bytes | None]:
    """The last ``keep`` bytes of each ``<commit>:<path>`` (None where absent), in one ``git cat-file``."""
    if not specs:
        return []
    proc = _popen(git_dir, ["cat-file", "--batch"])
    feeder = _feed(proc, specs)
    stream = proc.stdout
    assert stream is not None
    out: list[bytes | None] = []
    for _spec in specs:
        header = stream.readline()
        if not header:
            raise RepositoryError("git cat-file ended early", hint="run `git fsck` in the campaign")
        parsed = parse_batch_header(header)
        if parsed is None:
            out.append(None)
            continue
        _sha, kind, size = parsed
        data = _read_tail(stream, size, keep)
        out.append(data if kind == "blob" else None)
    feeder.join()
    proc.wait()
    return out


def blob_sizes(git_dir: Path, shas: Iterable[str]) -> dict[str, int]:
    """{blob id: size} through one ``git cat-file --batch-check`` (missing objects are left out)."""
    unique = sorted(set(shas))
    if not unique:
        return {}
    proc = _popen(git_dir, ["cat-file", "--batch-check"])
    feeder = _feed(proc, unique)
    assert proc.stdout is not None
    sizes: dict[str, int] = {}
    for line in proc.stdout:
        parsed = parse_batch_header(line)
        if parsed is not None:
            sizes[parsed[0]] = parsed[2]
    feeder.join()
    proc.wait()
    return sizes


class BlobReader:
    """Whole blobs by ``<commit>:<path>``, one question at a time, from one long-lived ``git cat-file --batch``.

    Why: the site asks for each execution's output files as it renders that execution (so that outputs
    reused from the previous report are never read, and only one execution's files are held at a time).
    Through dulwich that was a commit, two trees and a blob resolved in Python per file: at 100,000
    executions about half of `expegit report`'s time. A question to a running git costs a pipe round trip.
    Without a git binary, ``fallback`` (dulwich's ``read_path``) answers.
    """

    def __init__(self, git_dir: Path, fallback: Callable[[str, str], bytes | None] | None = None) -> None:
        self._git_dir = git_dir
        self._fallback = fallback
        self._proc: subprocess.Popen[bytes] | None = None
        self._broken = False

    def read(self, commit: str, path: str) -> bytes | None:
        """The content of ``path`` at ``commit``, None where it is absent or not a blob."""
        if "\n" in path or "\n" in commit or self._broken:
            return self._fallback(commit, path) if self._fallback else None
        try:
            if self._proc is None:
                self._proc = _popen(self._git_dir, ["cat-file", "--batch"])
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(f"{commit}:{path}\n".encode("utf-8", "surrogateescape"))
            proc.stdin.flush()
            header = proc.stdout.readline()
            if not header:
                raise RepositoryError("git cat-file ended early")
            parsed = parse_batch_header(header)
            if parsed is None:
                return None
            _sha, kind, size = parsed
            data = proc.stdout.read(size)
            proc.stdout.read(1)
            if len(data) != size:
                raise RepositoryError("git cat-file ended early")
            return data if kind == "blob" else None
        except (OSError, RepositoryError):
            if self._fallback is None:
                raise
            self._broken = True  # no git binary, or it died: dulwich answers from now on
            self.close()
            return self._fallback(commit, path)

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        proc.wait()

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["BlobReader", "changed_files", "read_tails", "blob_sizes", "parse_diff_tree", "parse_batch_header", "Change"]
