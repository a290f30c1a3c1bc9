"""Result framing: the files of an ended execution as entries ``f <b64 path> <size> <mode>\n<bytes>``,
read from its run directory (never through a symlink) and parsed back by the controller.
"""
import base64
import glob
import hashlib
import os
import tempfile

from .protocol import META_DIR

# --------------------------------------------------------------------------------- results packing
def _linked(root: str, path: str) -> bool:
    """Whether any directory between ``root`` and ``path`` is a symlink (an output must not leave root)."""
    current = os.path.dirname(path)
    while len(current) > len(root):
        if os.path.islink(current):
            return True
        current = os.path.dirname(current)
    return False


def result_files(run_dir: str, patterns) -> list:
    """Relative paths to send back: stdout, stderr, and regular files matching the globs (never links)."""
    found = set()
    # metrics.jsonl: ORCHESTRA_METRICS, when written; environment/env_vars: what the environment probe and
    # record_env wrote (runaway/environment_capture.py).
    for name in ("stdout", "stderr", "metrics.jsonl", "environment", "env_vars"):
        if os.path.isfile(os.path.join(run_dir, META_DIR, name)):
            found.add(META_DIR + "/" + name)
    for pattern in patterns:
        if pattern.startswith("/") or ".." in pattern.split("/"):
            continue
        for path in glob.glob(os.path.join(glob.escape(run_dir), pattern), recursive=True):
            rel = os.path.relpath(path, run_dir)
            if rel.split(os.sep)[0] == META_DIR or _linked(run_dir, path) or os.path.islink(path):
                continue
            if os.path.isdir(path):
                for base, dirs, files in os.walk(path):
                    # Pruned: `**` (or `.`) matches the run directory itself, and .orchestra/ is not output.
                    dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(base, d))
                               and not (d == META_DIR and os.path.relpath(base, run_dir) == ".")]
                    for name in files:
                        full = os.path.join(base, name)
                        if os.path.isfile(full) and not os.path.islink(full):
                            found.add(os.path.relpath(full, run_dir).replace(os.sep, "/"))
            elif os.path.isfile(path):
                found.add(rel.replace(os.sep, "/"))
    return sorted(found)


class _Hashing:
    def __init__(self, target) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)

    def flush(self) -> None:
        pass


def check_result_path(rel: str) -> str:
    """A results path must stay inside the run directory: relative, no '..', no empty or odd parts."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..") for p in parts):
        raise ValueError("refusing results path %r" % rel[:200])
    return rel


def render_result_header(rel: str, size: int, mode: int) -> bytes:
    """One results entry header; ``size`` bytes of content follow it.

    Why not tar: the payload is ours on both ends, and parsing tar headers was a tenth of the
    controller's time per short execution; this is one line per file, checked the same way.
    """
    name = base64.b64encode(check_result_path(rel).encode("utf-8", "surrogateescape")).decode("ascii")
    return ("f %s %d %o\n" % (name, size, mode & 0o777)).encode("ascii")


def parse_result_header(line: bytes) -> tuple:
    """(relative path, size, mode) of a results entry header; ValueError for anything else."""
    words = line.split(b" ")
    if len(words) != 4 or words[0] != b"f" or not words[2].isdigit():
        raise ValueError("not a results entry: %r" % line[:80])
    try:
        rel = base64.b64decode(words[1], validate=True).decode("utf-8", "surrogateescape")
        mode = int(words[3], 8)
    except ValueError as exc:
        raise ValueError("bad results entry %r" % line[:80]) from exc
    return check_result_path(rel), int(words[2]), mode


def parse_results(data: bytes) -> dict:
    """{relative path: bytes} of a whole (small) results payload."""
    files = {}
    pos = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        if newline < 0:
            raise ValueError("truncated results entry header")
        rel, size, _mode = parse_result_header(data[pos:newline])
        end = newline + 1 + size
        if end > len(data):
            raise ValueError("truncated results entry %r" % rel)
        files[rel] = data[newline + 1:end]
        pos = end
    return files


def pack_results(run_dir: str, patterns) -> tuple:
    """(file object positioned at 0, size, sha256) of the results: entries of header + content.

    Spooled: small results stay in memory, a multi-gigabyte checkpoint goes through a temporary file.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)
    hashing = _Hashing(spool)
    for rel in result_files(run_dir, patterns):
        try:
            handle = open(os.path.join(run_dir, rel), "rb")
        except OSError:
            continue  # vanished or unreadable: the record lists what arrived
        with handle:
            st = os.fstat(handle.fileno())
            size = st.st_size
            hashing.write(render_result_header(rel, size, st.st_mode))
            left = size
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:  # shrank while read: keep the announced size
                    chunk = b"\0" * min(left, 1 << 20)
                hashing.write(chunk)
                left -= len(chunk)
    spool.seek(0)
    return spool, hashing.size, hashing.sha.hexdigest()


