"""Safe extraction of collected tar streams (pure: needs no cluster).

It lives beside the ssh tests because the ssh backend owns it; it only builds tars in memory.
"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from orchestra.errors import ExecutionError
from runaway.transfer import safe_extract, split_trailer as _split_trailer


def _tar(*members: tuple[str, str, str]) -> io.BytesIO:
    """members: (kind, name, data-or-linkname) with kind in file/sym/hard/dir/fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for kind, name, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data.encode()))
                continue
            info.type = {"sym": tarfile.SYMTYPE, "hard": tarfile.LNKTYPE, "dir": tarfile.DIRTYPE,
                         "fifo": tarfile.FIFOTYPE}[kind]
            info.linkname = data
            tar.addfile(info)
    buf.seek(0)
    return buf


def test_extracts_files_and_inner_links(tmp_path: Path):
    files = safe_extract(_tar(("file", "a/b.txt", "hello"), ("sym", "a/link", "b.txt"),
                              ("file", ".orchestra/stdout", "out")), tmp_path / "d")
    assert files == [".orchestra/stdout", "a/b.txt"]
    assert (tmp_path / "d" / "a" / "link").read_text() == "hello"


@pytest.mark.parametrize("member", [
    ("file", "../x", "evil"),
    ("file", "a/../../x", "evil"),
    ("file", "/etc/evil", "evil"),
    ("sym", "abs", "/etc/passwd"),
    ("sym", "up", "../../outside"),
    ("sym", "a/up", "../../x"),
    ("hard", "hard", "/etc/passwd"),
    ("hard", "hard2", "../x"),
    ("fifo", "pipe", ""),
])
def test_refuses_members_escaping_the_directory(tmp_path: Path, member):
    dest = tmp_path / "d"
    with pytest.raises(ExecutionError) as err:
        safe_extract(_tar(member), dest)
    assert repr(member[1])[1:-1] in str(err.value) or member[1] in str(err.value)
    assert not (tmp_path / "x").exists() and not (tmp_path / "outside").exists()


def test_refuses_writing_through_a_link(tmp_path: Path):
    # a link inside, then a file "through" it: the data filter refuses what would land outside
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises((ExecutionError, tarfile.TarError)):
        safe_extract(_tar(("sym", "l", "../outside"), ("file", "l/pwned", "x")), tmp_path / "d")
    assert not (outside / "pwned").exists()


def test_trailer_checksum(tmp_path: Path):
    import hashlib

    body = b"payload" * 100
    path = tmp_path / "s"
    path.write_bytes(body + b"\nORCHESTRA-SHA256 %s %020d\n" % (hashlib.sha256(body).hexdigest().encode(), len(body)))
    size, digest = _split_trailer(path)
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    assert path.read_bytes() == body
    path.write_bytes(b"truncated stream")
    with pytest.raises(ExecutionError):
        _split_trailer(path)
