"""Results as one checksummed tar stream: the remote collect script, the trailer, defensive extraction.

Pure of any transport: the script is text run by the remote python3, the trailer is checked on a
received file, and extraction refuses anything that could land outside the destination.
"""
from __future__ import annotations

import os
import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from orchestra.errors import ExecutionError

_TRAILER_RE = re.compile(rb"\nORCHESTRA-SHA256 ([0-9a-f]{64}) (\d{20})\n$")
_TRAILER_LEN = len(b"\nORCHESTRA-SHA256 ") + 64 + 1 + 20 + 1

# Runs on the remote host with its python3: globbing there means user globs never reach a shell, and the
# sha256 of the exact bytes sent lets the receiver detect a truncated or corrupted stream.
# Several run directories in ONE python3 process and ONE stream (argv[1]: JSON [[dir, [globs]], ...]):
# members are "<index>/<path>"; a missing directory is an empty member "<index>.missing". Same trailer.
COLLECT_MANY_PY = r'''
import glob, hashlib, json, os, sys, tarfile
class Out:
    def __init__(self):
        self.h = hashlib.sha256(); self.n = 0; self.o = sys.stdout.buffer
    def write(self, b):
        self.h.update(b); self.n += len(b); self.o.write(b); return len(b)
    def flush(self):
        self.o.flush()
def linked(path):
    parts = path.split(os.sep)
    return any(os.path.islink(os.sep.join(parts[:i])) for i in range(1, len(parts) + 1))
out = Out()
tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT)
for index, (run_dir, patterns) in enumerate(json.loads(sys.argv[1])):
    prefix = "%d/" % index
    try:
        os.chdir(run_dir)
    except OSError:
        tar.addfile(tarfile.TarInfo("%d.missing" % index))
        continue
    for name in (".orchestra/stdout", ".orchestra/stderr", ".orchestra/metrics.jsonl", ".orchestra/environment",
                 ".orchestra/env_vars"):
        if os.path.isfile(name) and not os.path.islink(name):
            tar.add(name, arcname=prefix + name, recursive=False)
    seen = set()
    def add(path):
        if path in seen or linked(path):
            return
        seen.add(path)
        if os.path.isfile(path):
            tar.add(path, arcname=prefix + path, recursive=False)
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not os.path.islink(os.path.join(root, d)))
                for f in sorted(files):
                    add(os.path.normpath(os.path.join(root, f)))
    for pattern in patterns:
        for match in sorted(glob.glob(pattern, recursive=True)):
            match = os.path.normpath(match)
            if match.startswith("..") or os.path.isabs(match) or match.split(os.sep)[0] == ".orchestra":
                continue
            add(match)
tar.close()
out.flush()
sys.stdout.buffer.write(b"\nORCHESTRA-SHA256 %s %020d\n" % (out.h.hexdigest().encode(), out.n))
sys.stdout.buffer.flush()
'''
# ----------------------------------------------------------------------------------------- extraction
def check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse a tar member that could write outside ``dest``: absolute or ``..`` paths, links leaving it,
    devices. Why explicit checks on top of tarfile's ``data`` filter: clear errors naming the member."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise ExecutionError(f"refusing archive member with an absolute path: {name!r}")
    if ".." in path.parts:
        raise ExecutionError(f"refusing archive member with '..': {name!r}")
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise ExecutionError(f"refusing archive member that is not a file, directory or link: {name!r}")
    if member.issym() or member.islnk():
        target = member.linkname
        if target.startswith("/") or PurePosixPath(target).is_absolute():
            raise ExecutionError(f"refusing link {name!r} to an absolute path {target!r}")
        base = PurePosixPath(name).parent if member.issym() else PurePosixPath(".")
        resolved = os.path.normpath(os.path.join(str(dest), str(base), target))
        root = os.path.normpath(str(dest))
        if resolved != root and not resolved.startswith(root + os.sep):
            raise ExecutionError(f"refusing link {name!r} -> {target!r}: it leaves the directory")


def safe_extract(fileobj: BinaryIO, dest: Path) -> list[str]:
    """Extract a tar (read sequentially) into ``dest``; return the regular files' relative paths."""
    dest.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for member in tar:
            check_member(member, dest)
            tar.extract(member, dest, filter="data")
            if member.isfile():
                files.append(PurePosixPath(member.name).as_posix())
    return sorted(set(files))


def split_trailer(path: Path) -> tuple[int, str]:
    """Strip the checksum trailer off a received stream file; return (payload size, sha256)."""
    size = path.stat().st_size
    if size < _TRAILER_LEN:
        raise ExecutionError("collect stream truncated: no checksum trailer")
    with path.open("rb+") as handle:
        handle.seek(size - _TRAILER_LEN)
        match = _TRAILER_RE.search(handle.read())
        if not match:
            raise ExecutionError("collect stream corrupted: bad checksum trailer")
        handle.truncate(size - _TRAILER_LEN)
    return int(match.group(2)), match.group(1).decode()



__all__ = ["COLLECT_MANY_PY", "check_member", "safe_extract", "split_trailer"]
