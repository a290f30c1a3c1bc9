"""Checkpoint directories of places that share no filesystem with the controller: copied back, restored.

On an SSH host with its own disk (a profile's ``shared: false``), an execution's checkpoint directory
(runaway/checkpoints.py) dies with the host. So the controller keeps a copy in its store (a campaign's
``.git/orchestra/checkpoints/<id>/``; for `runaway exec`, the user's cache): taken between attempts and
every ``checkpoint.every`` while one runs, and restored on the place of the next attempt when that place
has none or an older one. A lost node then loses at most the work since the last copy.

Both directions are one tar stream through the place's Transport (``get_stream``/``put_stream``), so the
agent and the shell launcher are served alike and a checkpoint of any size passes in bounded memory.
Neither side ever shows a half copy as the newest: the controller extracts into a temporary sibling
(safe_extract: nothing lands outside it) and swaps it in by renames once the stream ended well; the place
does the same with its own shell. Pure render functions for the remote commands, tested in
tests/unit/test_checkpoint_copy.py.
"""
from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
import os
import shlex
import shutil
import stat
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import gevent.lock

from orchestra.errors import ExecutionError

from .checkpoints import checkpoint_dir, prepare_local
from .transfer import safe_extract
from .transports import Transport

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bytes per read of a local file sent to a place
# Seconds one copy may take: a checkpoint of gigabytes over a slow link, yet bounded, so a copy to a
# host that stopped answering does not hold the attempt's end forever.
COPY_TIMEOUT = 3600.0


class CheckpointCopyError(ExecutionError):
    """A copy did not complete; the previous copy (if any) is still the newest, whole."""


def render_pack(directory: str) -> str:
    """The place's command printing its checkpoint directory as a tar (nothing when it has none).

    GNU tar exits 1 when a file changed while it was read: the stream then fails and is thrown away, and
    the next copy tries again (a program that saves by write-then-rename never trips it)."""
    return f"cd {shlex.quote(directory)} 2>/dev/null || exit 0; exec tar -cf - ."


def render_unpack(directory: str) -> str:
    """The place's command that reads a tar on stdin and makes it the checkpoint directory: extracted
    into a sibling first, swapped in by renames only once tar succeeded (a cut stream changes nothing)."""
    d = shlex.quote(directory)
    return (f"d={d}; t=\"$d.incoming.$$\"; rm -rf \"$t\" && mkdir -p \"$t\" && "
            f"{{ tar -xf - -C \"$t\" || {{ rm -rf \"$t\"; exit 1; }}; }} && "
            f"rm -rf \"$d.old\" && {{ [ ! -e \"$d\" ] || mv \"$d\" \"$d.old\"; }} && mv \"$t\" \"$d\" && "
            f"rm -rf \"$d.old\"")


def needs_restore(place_newest: float | None, copy_newest: float | None) -> bool:
    """Whether the controller's copy must be sent to a place before an attempt starts there: it has a
    copy, and the place has no checkpoint or only an older one. Both epochs are files' mtimes, which tar
    keeps both ways, so they compare across hosts whatever their clocks say."""
    return copy_newest is not None and (place_newest is None or place_newest < copy_newest)


def tar_chunks(directory: Path, chunk: int = CHUNK) -> Iterator[bytes]:
    """An uncompressed POSIX tar of ``directory`` as chunks: headers and file blocks are produced as they
    are sent, so memory stays at one chunk whatever the checkpoint's size (tarfile.add would buffer a
    whole member in a stream). Regular files, directories and symlinks; anything else is skipped."""
    for root, dirs, files in os.walk(directory):
        dirs.sort()
        rel_root = Path(root).relative_to(directory)
        for name in [*dirs, *sorted(files)]:
            path = Path(root) / name
            rel = (rel_root / name).as_posix()
            try:
                st = os.lstat(path)
            except OSError:
                continue
            info = tarfile.TarInfo(rel)
            info.mtime = int(st.st_mtime)
            info.mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
            else:
                continue
            yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if info.isreg():
                yield from _file_blocks(path, info.size, chunk)
    yield b"\0" * (2 * tarfile.BLOCKSIZE)


def _file_blocks(path: Path, size: int, chunk: int) -> Iterator[bytes]:
    left = size
    with path.open("rb") as handle:
        while left > 0:
            data = handle.read(min(chunk, left))
            if not data:
                raise CheckpointCopyError(f"{path} shrank while it was sent")
            left -= len(data)
            yield data
    pad = -size % tarfile.BLOCKSIZE
    if pad:
        yield b"\0" * pad


class _ChunkReader(io.RawIOBase):
    """A file over an iterator of chunks (the transport's stream), for tarfile's sequential reading."""

    def __init__(self, chunks: Iterator[bytes], first: bytes) -> None:
        self._chunks = chunks
        self._pending = first

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "bytearray | memoryview") -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _swap(incoming: Path, target: Path) -> None:
    """Make ``incoming`` the directory at ``target``: the previous one is moved aside, never deleted
    before the new one is in place (a crash between the renames leaves it as ``.old``: see newest_dir)."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.rename(target, old)
    os.rename(incoming, target)
    shutil.rmtree(old, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class CopyStamp:
    """When the controller last took a whole copy, of what, from where (``<id>.copied`` beside the copy:
    `expegit status` says how old the copy a lost node would fall back to is)."""

    copied: float  # epoch on the controller's clock
    newest: float | None  # epoch of the newest checkpoint file in it (the place's mtimes)
    host: str


def render_stamp(stamp: CopyStamp) -> str:
    return json.dumps(dataclasses.asdict(stamp), sort_keys=True) + "\n"


def parse_stamp(text: str) -> CopyStamp | None:
    """The stamp render_stamp wrote; None for anything else (a stamp is a courtesy, never an error)."""
    try:
        data = json.loads(text)
        newest = data.get("newest")
        return CopyStamp(float(data["copied"]), None if newest is None else float(newest), str(data["host"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def stamp_path(store: Path, execution_id: str) -> Path:
    return Path(checkpoint_dir(str(store), execution_id) + ".copied")


def read_stamp(store: Path, execution_id: str) -> CopyStamp | None:
    try:
        return parse_stamp(stamp_path(store, execution_id).read_text("utf-8"))
    except OSError:
        return None


class CheckpointCopies:
    """The controller's store of checkpoint copies, ``<store>/checkpoints/<id>/``; one copy at a time per
    execution (a pull during a restore of the same directory would swap it under the reader)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self._locks: dict[str, gevent.lock.Semaphore] = {}

    def local(self, execution_id: str) -> Path:
        return Path(checkpoint_dir(str(self.store), execution_id))

    def _lock(self, execution_id: str) -> gevent.lock.Semaphore:
        return self._locks.setdefault(execution_id, gevent.lock.Semaphore())

    def newest_dir(self, execution_id: str) -> Path | None:
        """The whole copy: the directory, or what a crash between _swap's renames left aside."""
        target = self.local(execution_id)
        for candidate in (target, target.with_name(target.name + ".old")):
            if candidate.is_dir():
                return candidate
        return None

    def newest(self, execution_id: str) -> float | None:
        """The epoch of the newest file of the copy (None: no copy, or an empty one)."""
        directory = self.newest_dir(execution_id)
        return None if directory is None else prepare_local(directory)

    def pull(self, transport: Transport, remote_dir: str, execution_id: str) -> float | None:
        """Copy the place's checkpoint directory into the store; the newest file's epoch in the copy, None
        when the place had nothing (the previous copy is kept). Raises CheckpointCopyError on a failed or
        cut stream, the previous copy untouched."""
        with self._lock(execution_id):
            target = self.local(execution_id)
            target.parent.mkdir(parents=True, exist_ok=True)
            incoming = target.with_name(f".{target.name}.incoming-{uuid.uuid4().hex[:8]}")
            chunks = iter(transport.get_stream(render_pack(remote_dir), timeout=COPY_TIMEOUT))
            try:
                first = b""
                for first in chunks:
                    if first:
                        break
                if not first:
                    return None  # no checkpoint there yet
                reader = io.BufferedReader(_ChunkReader(chunks, first), CHUNK)
                safe_extract(reader, incoming)  # type: ignore[arg-type]
                for _rest in chunks:  # tar's end padding; then the command's exit status is checked
                    pass
                newest = prepare_local(incoming)
                _swap(incoming, target)
                self._stamp(execution_id, CopyStamp(time.time(), newest, transport.name))
                return newest
            except (tarfile.TarError, OSError, ExecutionError) as exc:
                raise CheckpointCopyError(f"{transport.name}: copying checkpoint {remote_dir} back failed "
                                          f"({str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r});"
                                          f" the last copy is kept") from exc
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
                shutil.rmtree(incoming, ignore_errors=True)

    def _stamp(self, execution_id: str, stamp: CopyStamp) -> None:
        path = stamp_path(self.store, execution_id)
        part = path.with_name(f".{path.name}.part")
        part.write_text(render_stamp(stamp), "utf-8")
        os.replace(part, path)

    def restore(self, transport: Transport, remote_dir: str, execution_id: str,
                place_newest: float | None) -> float | None:
        """Before an attempt: send the copy to the place when it has none or an older one (needs_restore).
        Returns the epoch of the newest checkpoint file the attempt will find there."""
        with self._lock(execution_id):
            directory = self.newest_dir(execution_id)
            copy_newest = None if directory is None else prepare_local(directory)
            if directory is None or not needs_restore(place_newest, copy_newest):
                return place_newest
            result = transport.put_stream(tar_chunks(directory), render_unpack(remote_dir), timeout=COPY_TIMEOUT,
                                          warn=True)
            if not result.ok:
                raise CheckpointCopyError(f"{transport.name}: restoring checkpoint {remote_dir} failed: "
                                          f"{result.tail(2).strip() or f'exit {result.exit_code}'}")
            log.info("%s: restored checkpoint of %s into %s", transport.name, execution_id, remote_dir)
            return copy_newest

    def drop(self, execution_id: str) -> None:
        """The execution finished: its copy goes (the controller asks only when --leave keeps nothing)."""
        target = self.local(execution_id)
        for path in (target, target.with_name(target.name + ".old")):
            shutil.rmtree(path, ignore_errors=True)
        stamp_path(self.store, execution_id).unlink(missing_ok=True)
        self._locks.pop(execution_id, None)


__all__ = ["COPY_TIMEOUT", "CheckpointCopies", "CheckpointCopyError", "CopyStamp", "needs_restore", "parse_stamp",
           "read_stamp", "render_pack", "render_stamp", "render_unpack", "stamp_path", "tar_chunks"]
