"""Orchestra's execution agent: one long-lived process per SSH host or per allocated Slurm node.

Why an agent: without one, every short execution costs several SSH round trips and remote shells (create
the run directory, start it, poll it, tar its results, remove it); on 2 cores those forks, not the
experiments, were the ceiling (1.1x GNU parallel over SSH). With one, the controller writes ONE line per
execution into a session it keeps open, and the agent answers with ONE frame carrying the exit code and
the results (RADICAL-Pilot's and Parsl's per-node agents, for the same reason).

Why a daemon plus ``attach``: executions must survive a dropped connection and a dead controller. The
``serve`` process is detached (own session, no terminal, SIGHUP ignored) and listens on a unix socket in
its directory; ``attach`` is what an SSH channel (or an ``srun --overlap`` step on a Slurm node) runs: it
starts the daemon if asked and none is running, then pipes its stdin/stdout to the socket. A drop kills
only ``attach``; the controller re-attaches and says ``watch`` for what it still waits on. Nothing the
daemon knows is needed after a restart either: every execution leaves its story in its run directory
(the shared wrapper writes pid and exit_code), so a new daemon adopts what an old one started.

This file is shipped to the remote host and run with its ``python3`` (3.6 or later; posix_spawn from
3.8, a fork before): standard library only. Its pure protocol functions are imported by the controller (runaway/agent_link.py) and tested
locally (tests/unit/test_agent.py).

Protocol: lines of space-separated fields; free text as base64 of JSON.

    controller -> agent
      launch <id> <b64 {"run_dir", "code_dir", "command", "env", "outputs", "slot", "meta", "token"}>
                                              (meta: extra files for .orchestra/, name -> text;
                                               token: the same for a line re-sent after a drop, new
                                               for a new attempt, which replaces an earlier directory)
      watch <id> <b64 {"run_dir", "outputs"}>
      kill <id> <signal> <grace seconds>      (TERM the group, KILL it after the grace)
      remove <id> <b64 "run_dir">             (after the controller committed the results)
      env <b64 {name: value}>                 (the base environment of this session's launches)
      ping <token>
    agent -> controller
      hello <protocol> <pid>
      started <id> <pid> <epoch>
      exited <id> <code|-> <started|-> <ended> <size> <sha256>\\n<size bytes: the results>
      gone <id>                               (no such run directory)
      error <id> <b64 "message">
      pong <token>

``exited`` with code ``-`` means the execution died without an exit code (host rebooted, killed -9 with
its wrapper). The results are entries ``f <b64 path> <size> <octal mode>\\n<size bytes>`` for
``.orchestra/stdout``, ``.orchestra/stderr`` and the files matching the output globs (regular files only,
never through a symlink; paths relative, without '..').
"""
import base64
import collections
import errno
import fcntl
import glob
import hashlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time

PROTOCOL = 2
SOCKET_NAME = "sock"
META_DIR = ".orchestra"
WRAPPER_FILES = frozenset(("pid", "exit_code"))  # written in place by the wrapper (runaway/rundir.py)
# \Z, not $: `$` also matches before a final newline, which would let an id like "x\n" split a line in two.
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}\Z")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?\Z")
_SHA = re.compile(r"^[0-9a-f]{64}\Z")
MAX_LINE = 1 << 20  # a request line longer than this is refused (a runaway client, not a command line)


# ------------------------------------------------------------------------------------- pure: lines
def b64json(value) -> str:
    return base64.b64encode(json.dumps(value, sort_keys=True).encode("utf-8", "surrogateescape")).decode("ascii")


def unb64json(text: str):
    try:
        return json.loads(base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8", "surrogateescape"))
    except (ValueError, UnicodeError) as exc:
        raise ValueError("bad base64 JSON field %r" % text[:20]) from exc


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("bad execution id %r" % value[:80])
    return value


def render_request(kind: str, execution_id: str = "", **fields) -> str:
    """One request line (no newline). Ids are checked so that a line can never carry a second request."""
    if kind == "ping":
        token = str(fields.get("token", "0"))
        if not _TOKEN.match(token):
            raise ValueError("bad ping token %r" % token)
        return "ping " + token
    if kind == "env":
        return "env " + b64json(dict((str(k), str(v)) for k, v in dict(fields["env"]).items()))
    _check_id(execution_id)
    if kind == "launch":
        body = {"run_dir": str(fields["run_dir"]), "code_dir": str(fields["code_dir"]),
                "command": str(fields["command"]),
                "env": dict((str(k), str(v)) for k, v in dict(fields.get("env") or {}).items()),
                "outputs": [str(p) for p in fields.get("outputs") or ()], "slot": fields.get("slot")}
        extra = dict((str(k), str(v)) for k, v in dict(fields.get("meta") or {}).items())
        for name in extra:
            if not _ID.match(name):
                raise ValueError("bad meta file name %r" % name)
        if extra:
            body["meta"] = extra
        if fields.get("token"):
            if not _TOKEN.match(str(fields["token"])):
                raise ValueError("bad launch token %r" % fields["token"])
            body["token"] = str(fields["token"])
        return "launch %s %s" % (execution_id, b64json(body))
    if kind == "watch":
        body = {"run_dir": str(fields["run_dir"]), "outputs": [str(p) for p in fields.get("outputs") or ()]}
        return "watch %s %s" % (execution_id, b64json(body))
    if kind == "kill":
        return "kill %s %d %g" % (execution_id, int(fields["signal"]), float(fields.get("grace", 5.0)))
    if kind == "remove":
        return "remove %s %s" % (execution_id, b64json(str(fields["run_dir"])))
    raise ValueError("unknown request kind %r" % kind)


def parse_request(line: str) -> tuple:
    """(kind, execution_id, fields) of a request line; ValueError for anything else."""
    words = line.strip().split(" ")
    kind = words[0]
    if kind == "ping" and len(words) == 2 and _TOKEN.match(words[1]):
        return "ping", "", {"token": words[1]}
    if kind == "env" and len(words) == 2:
        env = unb64json(words[1])
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("env must map names to text")
        return "env", "", {"env": env}
    if len(words) < 2:
        raise ValueError("not a request: %r" % line[:80])
    execution_id = _check_id(words[1])
    if kind in ("launch", "watch") and len(words) == 3:
        body = unb64json(words[2])
        if not isinstance(body, dict) or not isinstance(body.get("run_dir"), str):
            raise ValueError("%s without a run directory" % kind)
        if kind == "launch" and not (isinstance(body.get("command"), str) and isinstance(body.get("code_dir"), str)
                                     and isinstance(body.get("env"), dict)):
            raise ValueError("launch without command, code_dir or env")
        outputs = body.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(p, str) for p in outputs):
            raise ValueError("outputs must be a list of globs")
        if not isinstance(body.get("token", ""), str) or (body.get("token") and not _TOKEN.match(body["token"])):
            raise ValueError("bad launch token")
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(isinstance(k, str) and _ID.match(k) and isinstance(v, str)
                                                 for k, v in meta.items()):
            raise ValueError("meta must map plain file names to text")
        return kind, execution_id, body
    if kind == "kill" and len(words) == 4 and words[2].isdigit() and _NUMBER.match(words[3]):
        return "kill", execution_id, {"signal": int(words[2]), "grace": float(words[3])}
    if kind == "remove" and len(words) == 3:
        run_dir = unb64json(words[2])
        if not isinstance(run_dir, str):
            raise ValueError("remove without a run directory")
        return "remove", execution_id, {"run_dir": run_dir}
    raise ValueError("not a request: %r" % line[:80])


def _num(value) -> str:
    return "-" if value is None else ("%d" % value if isinstance(value, int) else "%.6f" % value)


def render_event(kind: str, execution_id: str = "", **fields) -> str:
    """One event header line (no newline); an ``exited`` header is followed by ``size`` payload bytes."""
    if kind == "hello":
        return "hello %d %d" % (PROTOCOL, int(fields["pid"]))
    if kind == "pong":
        return "pong " + fields["token"]
    _check_id(execution_id)
    if kind == "started":
        return "started %s %d %s" % (execution_id, int(fields["pid"]), _num(float(fields["started"])))
    if kind == "exited":
        return "exited %s %s %s %s %d %s" % (execution_id, _num(fields["code"]), _num(fields["started"]),
                                             _num(float(fields["ended"])), int(fields["size"]), fields["sha256"])
    if kind == "gone":
        return "gone " + execution_id
    if kind == "error":
        return "error %s %s" % (execution_id, b64json(str(fields["message"])))
    raise ValueError("unknown event kind %r" % kind)


def _opt(text: str, convert):
    return None if text == "-" else convert(text)


def parse_event(line: str) -> tuple:
    """(kind, execution_id, fields) of an event header line; ValueError for anything else."""
    words = line.strip().split(" ")
    kind = words[0]
    try:
        if kind == "hello" and len(words) == 3:
            return "hello", "", {"protocol": int(words[1]), "pid": int(words[2])}
        if kind == "pong" and len(words) == 2 and _TOKEN.match(words[1]):
            return "pong", "", {"token": words[1]}
        if len(words) < 2:
            raise ValueError("short")
        execution_id = _check_id(words[1])
        if kind == "started" and len(words) == 4:
            return "started", execution_id, {"pid": int(words[2]), "started": float(words[3])}
        if kind == "exited" and len(words) == 7 and _SHA.match(words[6]):
            size = int(words[5])
            if size < 0:
                raise ValueError("negative size")
            return "exited", execution_id, {"code": _opt(words[2], int), "started": _opt(words[3], float),
                                            "ended": float(words[4]), "size": size, "sha256": words[6]}
        if kind == "gone" and len(words) == 2:
            return "gone", execution_id, {}
        if kind == "error" and len(words) == 3:
            return "error", execution_id, {"message": str(unb64json(words[2]))}
    except ValueError:
        pass
    raise ValueError("not an agent event: %r" % line[:80])


def split_lines(buffer: bytes) -> tuple:
    """Complete lines of a buffer and the unfinished rest (a writer may be mid-line)."""
    head, sep, rest = buffer.rpartition(b"\n")
    if not sep:
        return [], buffer
    return [line.decode("utf-8", "replace") for line in head.split(b"\n") if line.strip()], rest


def exit_code_of(status: int) -> int:
    """A wait status as a shell would report it (128+N for a signal), without Python 3.9's helper."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


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
    for name in ("stdout", "stderr"):
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


def write_in_place(path: str, text: str) -> None:
    """Write ``text`` (one line) into ``path`` over what it held: no new inode, no truncation.

    Why: a recycled run directory keeps its ``.orchestra/`` files from one execution to the next, and
    this is how they are rewritten. Creating a file was the most expensive thing an execution did here
    (0.3-0.9 ms of kernel time each on this ext4 under create/unlink churn; a server round trip on
    NFS or Lustre), and truncating a file that held data makes ext4 (auto_da_alloc) start writing it
    back at close. The line is padded with spaces to the file's old length; every reader strips.
    """
    data = text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        os.write(fd, data + b" " * max(0, size - len(data) - 1) + b"\n")
    finally:
        os.close(fd)


def read_small(path: str) -> str:
    try:
        with open(path, "r") as handle:
            return handle.read(64).strip()
    except (OSError, UnicodeError):
        return ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        with open("/proc/%d/stat" % pid, "rb") as handle:
            return handle.read().split(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return True


# ------------------------------------------------------------------------------ run directories
class RunDirs:
    """Run directories made from recycled ones instead of new inodes.

    Why: on the disks measured here, creating files and directories under load cost up to ~1 ms of
    kernel time each, and a fresh run directory (a copy of the code, ``.orchestra/``) was most of an
    execution's cost. A removed run directory is therefore renamed into a spare
    (``runs/.spare-<agent pid>-<n>``) and, at the next launch of the same code, brought back to exactly
    the code tree: files the execution added are deleted, files it changed (size, mtime or mode differ
    from the code cache's) are copied again, files it deleted are restored, and ``.orchestra/`` is
    emptied (its files removed rather than truncated: see _restore). Spares never outnumber the
    peak of run directories alive at once (running or awaiting their commit), so disk use stays what it
    was without them.
    """

    def __init__(self, runs_root: str) -> None:
        self.runs_root = runs_root
        self.spares = {}  # code dir -> [spare paths]
        self.manifests = {}  # code dir -> {relative path: (kind, size, mtime_ns, mode) or ("l", target)}
        self.limit = 0  # the peak of run directories alive at once: spares never take more disk than that
        self.live = 0
        self.count = 0
        self.recycled = 0  # observable: tests check that spares are used

    def _manifest(self, code_dir: str) -> dict:
        found = self.manifests.get(code_dir)
        if found is None:
            found = {}
            for base, dirs, files in os.walk(code_dir):
                rel_base = os.path.relpath(base, code_dir)
                for name in dirs + files:
                    path = os.path.join(base, name)
                    rel = name if rel_base == "." else rel_base + "/" + name
                    st = os.lstat(path)
                    if os.path.islink(path):
                        found[rel] = ("l", os.readlink(path))
                    elif os.path.isdir(path):
                        found[rel] = ("d", 0, 0, st.st_mode & 0o7777)
                    else:
                        found[rel] = ("f", st.st_size, st.st_mtime_ns, st.st_mode & 0o7777)
            self.manifests[code_dir] = found
        return found

    def create(self, code_dir: str, run_dir: str, meta: dict) -> None:
        """Make ``run_dir`` a fresh copy of ``code_dir`` whose ``.orchestra/`` holds the files ``meta``
        (name -> one line of text); it appears under its name only once complete (a rename), as a resume
        expects."""
        self.live += 1
        self.limit = max(self.limit, self.live)
        spares = self.spares.get(code_dir) or []
        while spares:
            spare = spares.pop()
            try:
                kept = self._restore(spare, code_dir)
                self._write_meta(os.path.join(spare, META_DIR), meta, kept)
                os.rename(spare, run_dir)
                self.recycled += 1
                return
            except OSError:
                shutil.rmtree(spare, ignore_errors=True)
        partial = run_dir + ".partial"
        if os.path.lexists(partial):
            shutil.rmtree(partial, ignore_errors=True)
        # copy2 keeps mtimes, which is how a later reuse tells a file the execution changed.
        shutil.copytree(code_dir, partial, symlinks=True, copy_function=shutil.copy2)
        os.makedirs(os.path.join(partial, META_DIR), exist_ok=True)
        self._write_meta(os.path.join(partial, META_DIR), meta, set())
        os.rename(partial, run_dir)

    @staticmethod
    def _write_meta(meta_dir: str, meta: dict, kept: set) -> None:
        """The previous execution's files that _restore kept are rewritten in place, blanked or removed.

        Blanked: ``pid`` and ``exit_code``, which the wrapper writes in place (a resume must find neither
        the last execution's pid nor its exit code: a blank exit_code means "not over")."""
        for name, text in meta.items():
            write_in_place(os.path.join(meta_dir, name), text)
        for name in kept & WRAPPER_FILES:
            write_in_place(os.path.join(meta_dir, name), "")
        for name in kept - set(meta) - WRAPPER_FILES - {"stdout", "stderr"}:
            os.unlink(os.path.join(meta_dir, name))

    def retire(self, run_dir: str, code_dir) -> None:
        """A committed run directory becomes a spare for ``code_dir`` (or goes, past the limit)."""
        if code_dir:
            self.live = max(0, self.live - 1)
        total = sum(len(v) for v in self.spares.values())
        if code_dir and total < self.limit and os.path.isdir(run_dir):
            self.count += 1
            spare = os.path.join(self.runs_root, ".spare-%d-%d" % (os.getpid(), self.count))
            try:
                os.rename(run_dir, spare)
                self.spares.setdefault(code_dir, []).append(spare)
                return
            except OSError:
                pass
        shutil.rmtree(run_dir, ignore_errors=True)

    def _restore(self, spare: str, code_dir: str) -> set:
        """Bring ``spare`` back to the code tree; return the names of the ``.orchestra/`` files kept."""
        manifest = self._manifest(code_dir)
        seen = set()
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            with os.scandir(os.path.join(spare, rel_dir) if rel_dir else spare) as entries:
                listed = list(entries)
            for entry in listed:
                rel = rel_dir + "/" + entry.name if rel_dir else entry.name
                if rel == META_DIR:
                    continue
                if entry.is_symlink():
                    kind = "l"
                elif entry.is_dir(follow_symlinks=False):
                    kind = "d"
                else:
                    kind = "f"
                want = manifest.get(rel)
                if want is None or want[0] != kind:
                    if kind == "d":
                        shutil.rmtree(entry.path)
                    else:
                        os.unlink(entry.path)
                    continue
                seen.add(rel)
                if kind == "d":
                    stack.append(rel)
                elif kind == "l":
                    if os.readlink(entry.path) != want[1]:
                        os.unlink(entry.path)
                        os.symlink(want[1], entry.path)
                else:
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_size, st.st_mtime_ns, st.st_mode & 0o7777) != want[1:]:
                        os.unlink(entry.path)
                        shutil.copy2(os.path.join(code_dir, rel), entry.path)
        for rel in sorted(manifest):  # sorted: a directory before what it holds
            if rel in seen:
                continue
            want, path = manifest[rel], os.path.join(spare, rel)
            if want[0] == "d":
                os.makedirs(path, exist_ok=True)
            elif want[0] == "l":
                os.symlink(want[1], path)
            else:
                shutil.copy2(os.path.join(code_dir, rel), path)
        meta = os.path.join(spare, META_DIR)
        os.makedirs(meta, exist_ok=True)
        with os.scandir(meta) as entries:
            listed = list(entries)
        kept = set()
        for entry in listed:
            # Kept for the next launch to overwrite in place (write_in_place; _write_meta blanks or removes
            # what it does not rewrite): the small meta files, and stdout/stderr while empty, which the
            # wrapper's `>` truncates for free. Removed: output that is not empty (truncating data makes
            # ext4 write it back at close), links, directories, anything large.
            name = entry.name
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
                continue
            size = entry.stat(follow_symlinks=False).st_size
            if entry.is_symlink() or size > (0 if name in ("stdout", "stderr") else 4096):
                os.unlink(entry.path)
                continue
            kept.add(name)
        return kept

    def clear(self) -> None:
        for spares in self.spares.values():
            for spare in spares:
                shutil.rmtree(spare, ignore_errors=True)
        self.spares.clear()


def remove_stale_spares(runs_root: str) -> None:
    """Spares left by agents that are gone (their pid is in the name)."""
    try:
        names = os.listdir(runs_root)
    except OSError:
        return
    for name in names:
        match = re.match(r"^\.spare-([0-9]+)-[0-9]+$", name)
        if match and not pid_alive(int(match.group(1))):
            shutil.rmtree(os.path.join(runs_root, name), ignore_errors=True)


# ------------------------------------------------------------------------------------------ the daemon
class _Client:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = collections.deque()  # bytes, or (file, remaining) to stream
        self.closed = False
        self.base_env = None  # the environment executions start from (an ``env`` request), else the agent's


class _Execution:
    def __init__(self, execution_id: str, run_dir: str, outputs) -> None:
        self.id = execution_id
        self.run_dir = run_dir
        self.outputs = list(outputs)
        self.pid = None
        self.child = False
        self.started = None
        self.clients = set()
        self.kill_at = None  # (monotonic deadline, signal) of a pending KILL escalation
        self.dead_since = None
        self.code_dir = None  # set when this agent created the run directory (so it may recycle it)
        self.token = ""  # which launch started it: a repeated launch line carries the same
        self.ending = None  # (exit code, end time) once this agent saw it end


class Agent:
    """The ``serve`` loop: a unix socket, SIGCHLD through a wakeup pipe, adopted runs polled by file."""

    ADOPTED_POLL = 0.25

    def __init__(self, directory: str, root: str, wrapper: str, marker: str, idle_exit: float = 600.0) -> None:
        self.dir = os.path.abspath(directory)
        self.root = os.path.realpath(root)
        self.wrapper = 'cd "$1" || exit 126; shift; ' + wrapper
        self.marker = marker
        self.idle_exit = idle_exit
        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.runs = {}  # execution id -> _Execution
        self.by_pid = {}
        self.idle_since = time.monotonic()
        self.stopping = False
        self.dirs = RunDirs(os.path.join(self.root, "runs"))
        self.launches = 0

    # -- plumbing
    def _send(self, client: _Client, data) -> None:
        if client.closed:
            return
        client.out.append(data)
        self._interest(client)

    def _interest(self, client: _Client) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        self.sel.modify(client.sock, events, client)

    def _event(self, client: _Client, kind: str, execution_id: str = "", **fields) -> None:
        self._send(client, (render_event(kind, execution_id, **fields) + "\n").encode("ascii"))

    def _drop(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        for item in client.out:
            if isinstance(item, tuple):
                item[0].close()
        client.out.clear()
        self.clients.pop(id(client), None)
        for run in self.runs.values():
            run.clients.discard(client)

    def _flush(self, client: _Client) -> None:
        while client.out and not client.closed:
            item = client.out[0]
            if isinstance(item, tuple):  # a spooled payload: read it as the socket drains
                handle, remaining = item
                chunk = handle.read(min(remaining, 1 << 18)) if remaining > 0 else b""
                if not chunk:  # done (or a truncated spool: the checksum tells the controller)
                    handle.close()
                    client.out.popleft()
                    continue
                remaining -= len(chunk)
                client.out[0] = chunk
                if remaining > 0:
                    client.out.insert(1, (handle, remaining))
                else:
                    handle.close()
                item = chunk
            try:
                sent = client.sock.send(item)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            if sent < len(item):
                client.out[0] = item[sent:]
                break
            client.out.popleft()
        if not client.closed:
            self._interest(client)

    # -- requests
    def _handle(self, client: _Client, line: str) -> None:
        try:
            kind, execution_id, fields = parse_request(line)
        except ValueError as exc:
            sys.stderr.write("orchestra-agent: %s\n" % exc)
            return
        try:
            if kind == "ping":
                self._event(client, "pong", token=fields["token"])
            elif kind == "env":
                client.base_env = fields["env"]
            elif kind == "launch":
                self._launch(client, execution_id, fields)
            elif kind == "watch":
                self._watch(client, execution_id, fields["run_dir"], fields.get("outputs") or [])
            elif kind == "kill":
                self._kill(execution_id, fields["signal"], fields["grace"])
            elif kind == "remove":
                self._remove(client, execution_id, fields["run_dir"])
        except Exception as exc:  # one bad request must not take the executions of others down
            if execution_id:
                self._event(client, "error", execution_id, message="%s: %s" % (kind, exc))
            else:
                sys.stderr.write("orchestra-agent: %s: %s\n" % (kind, exc))

    def _is_run_dir(self, execution_id: str, path: str) -> bool:
        """Only ``<root>/runs/<execution id>`` is ever created, recycled or removed by request."""
        head, name = os.path.split(path.rstrip("/"))
        return name == execution_id and os.path.realpath(head) == os.path.join(self.root, "runs")

    def _launch(self, client: _Client, execution_id: str, body: dict) -> None:
        run_dir = body["run_dir"]
        if not self._is_run_dir(execution_id, run_dir):
            raise ValueError("run directory %s is not %s/runs/%s" % (run_dir, self.root, execution_id))
        token = body.get("token") or ""
        known = self.runs.get(execution_id)
        if known is not None or os.path.isdir(os.path.join(run_dir, META_DIR)):
            earlier = known.token if known is not None else read_small(os.path.join(run_dir, META_DIR, "token"))
            if not token or earlier == token:
                # The same launch repeated after a dropped link: never start it twice, watch it instead.
                self._watch(client, execution_id, run_dir, body.get("outputs") or [])
                return
            # A new attempt (a retry, a resume) where an earlier one left its directory: that one is over
            # for the controller, so it goes (stopped if it somehow still runs) and this one starts clean.
            self._discard_earlier(execution_id, run_dir, known)
        started = time.time()

        meta = {"started": "%.6f" % started}
        if body.get("slot") is not None:
            meta["slot"] = str(body["slot"])
        if token:
            meta["token"] = token
        meta.update(body.get("meta") or {})  # e.g. the launcher pid a resume checks

        if not os.path.isdir(body["code_dir"]):
            raise ValueError("no code directory %s" % body["code_dir"])
        self.dirs.create(os.path.realpath(body["code_dir"]), run_dir, meta)
        env = dict(client.base_env if client.base_env is not None else os.environ)
        env.update(body["env"])
        argv = ["/bin/sh", "-c", self.wrapper, self.marker, run_dir, body["command"]]
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            # posix_spawn (vfork) when the remote Python has it: a fork of this process per execution
            # is what the agent exists to make cheap.
            if hasattr(os, "posix_spawn"):
                pid = os.posix_spawn("/bin/sh", argv, env, setsid=True, file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2)])
            else:  # pragma: no cover - Python < 3.8 on the remote
                import subprocess
                pid = subprocess.Popen(argv, env=env, stdin=devnull, stdout=devnull, stderr=devnull,
                                       start_new_session=True).pid
        finally:
            os.close(devnull)
        run = _Execution(execution_id, run_dir, body.get("outputs") or [])
        run.pid, run.child, run.started, run.token = pid, True, started, token
        run.code_dir = os.path.realpath(body["code_dir"])
        self.launches += 1
        run.clients.add(client)
        self.runs[execution_id] = run
        self.by_pid[pid] = run
        self._event(client, "started", execution_id, pid=pid, started=started)

    def _discard_earlier(self, execution_id: str, run_dir: str, known) -> None:
        pid = known.pid if known is not None else None
        if pid is None:
            text = read_small(os.path.join(run_dir, META_DIR, "pid"))
            pid = int(text) if text.isdigit() else None
        if pid is not None and pid_alive(pid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if known is not None:
            for client in list(known.clients):
                self._event(client, "gone", execution_id)
            known.clients.clear()
            self.by_pid.pop(known.pid, None)
            self.runs.pop(execution_id, None)
        aside = "%s.old.%d" % (run_dir, int(time.time() * 1e9))
        os.rename(run_dir, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def _watch(self, client: _Client, execution_id: str, run_dir: str, outputs) -> None:
        run = self.runs.get(execution_id)
        if run is None:
            if not os.path.isdir(run_dir):
                self._event(client, "gone", execution_id)
                return
            run = _Execution(execution_id, run_dir, outputs)
            pid_text = read_small(os.path.join(run_dir, META_DIR, "pid"))
            run.pid = int(pid_text) if pid_text.isdigit() else None
            started_text = read_small(os.path.join(run_dir, META_DIR, "started"))
            try:
                run.started = float(started_text)
            except ValueError:
                run.started = None
            self.runs[execution_id] = run
        run.clients.add(client)
        if outputs:
            run.outputs = list(outputs)
        if run.pid is not None and (run.child or pid_alive(run.pid)):
            self._event(client, "started", execution_id, pid=run.pid, started=run.started or time.time())
        self._check_adopted(run)

    def _kill(self, execution_id: str, sig: int, grace: float) -> None:
        run = self.runs.get(execution_id)
        if run is None or run.pid is None:
            return
        try:
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(run.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
        if sig != signal.SIGKILL:
            run.kill_at = time.monotonic() + max(0.0, grace)

    def _remove(self, client: _Client, execution_id: str, run_dir: str) -> None:
        if not self._is_run_dir(execution_id, run_dir):
            raise ValueError("refusing to remove %s: not a run directory of %s" % (run_dir, self.root))
        run = self.runs.get(execution_id)
        if run is not None and run.child and run.pid in self.by_pid:
            raise ValueError("refusing to remove %s: the execution still runs" % run_dir)
        self.runs.pop(execution_id, None)
        code_dir = run.code_dir if run is not None and os.path.realpath(run.run_dir) == os.path.realpath(run_dir) \
            else None
        self.dirs.retire(run_dir, code_dir)

    # -- endings
    def _finish(self, run: _Execution, code, ended: float) -> None:
        """Send the exit and the results to whoever waits; keep the run until it is removed."""
        run.kill_at = None
        if run.pid in self.by_pid:
            del self.by_pid[run.pid]
        run.pid = None
        run.child = False
        run.ending = (code, ended)  # what a later watch reports (a killed wrapper wrote no exit_code)
        clients = [c for c in run.clients if not c.closed]
        run.clients.clear()
        if not clients:
            return  # nobody listens now; a later `watch` finds the exit code in the run directory
        spool, size, digest = pack_results(run.run_dir, run.outputs)
        header = (render_event("exited", run.id, code=code, started=run.started, ended=ended, size=size,
                               sha256=digest) + "\n").encode("ascii")
        data = spool.read() if size <= (1 << 20) else None
        for index, client in enumerate(clients):
            self._send_frame(client, header, data, spool, size, last=index == len(clients) - 1)

    def _send_frame(self, client: _Client, header: bytes, data, spool, size: int, last: bool) -> None:
        if data is not None:
            self._send(client, header + data)
            if last:
                spool.close()
            return
        handle = spool if last else _reopen(spool)
        client.out.append(header)
        client.out.append((handle, size))
        self._interest(client)

    def _exit_code_file(self, run: _Execution):
        text = read_small(os.path.join(run.run_dir, META_DIR, "exit_code"))
        return int(text) if re.match(r"^-?[0-9]+$", text or "") else None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.by_pid.get(pid)
            if run is None:
                continue
            # The wrapper's EXIT trap wrote exit_code before it exited: prefer it (it is what an adopted
            # run reports too); the wait status covers a wrapper killed before its trap ran.
            code = self._exit_code_file(run)
            self._finish(run, exit_code_of(status) if code is None else code, time.time())

    def _check_adopted(self, run: _Execution) -> None:
        """A run this process did not start: over when exit_code exists, lost when its pid is gone."""
        if run.child:
            return
        if not os.path.isdir(run.run_dir):
            for client in list(run.clients):
                self._event(client, "gone", run.id)
            run.clients.clear()
            self.runs.pop(run.id, None)
            return
        code = self._exit_code_file(run)
        if code is None and run.ending is not None:
            self._finish(run, *run.ending)  # it ended under this agent, as its wait status said
            return
        if code is not None:
            try:
                ended = os.stat(os.path.join(run.run_dir, META_DIR, "exit_code")).st_mtime
            except OSError:
                ended = time.time()
            self._finish(run, code, ended)
            return
        if run.pid is not None and pid_alive(run.pid):
            run.dead_since = None
            return
        # No live wrapper and no exit code: give a just-exiting wrapper time to write its file.
        now = time.monotonic()
        run.dead_since = run.dead_since or now
        if now - run.dead_since > 2.0:
            self._finish(run, None, time.time())

    def _tick(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.kill_at is not None and now >= run.kill_at and run.pid is not None:
                run.kill_at = None
                try:
                    os.killpg(run.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not run.child and run.clients:
                self._check_adopted(run)

    # -- main loop
    def serve(self) -> int:
        os.makedirs(self.dir, exist_ok=True)
        lock = open(os.path.join(self.dir, "lock"), "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another agent serves this directory
        os.chdir(self.dir)  # bind a relative name: unix socket paths are limited to ~107 bytes
        try:
            os.unlink(SOCKET_NAME)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(SOCKET_NAME)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        with open("pid", "w") as handle:
            handle.write("%d\n" % os.getpid())
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.set_wakeup_fd(wake_w)
        self.sel.register(listener, selectors.EVENT_READ, "listen")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        remove_stale_spares(os.path.join(self.root, "runs"))
        self._reap()  # children of an earlier exec image cannot exist, but be safe
        try:
            while not self.stopping:
                adopted = any(not r.child and r.clients for r in self.runs.values())
                timers = any(r.kill_at is not None for r in self.runs.values())
                timeout = self.ADOPTED_POLL if (adopted or timers) else 5.0
                for key, events in self.sel.select(timeout):
                    if key.data == "listen":
                        self._accept(listener)
                    elif key.data == "wake":
                        try:
                            while os.read(wake_r, 4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                        self._reap()
                    else:
                        client = key.data
                        if events & selectors.EVENT_READ:
                            self._read(client)
                        if events & selectors.EVENT_WRITE and not client.closed:
                            self._flush(client)
                self._reap()
                self._tick()
                if not os.path.exists(SOCKET_NAME):
                    break  # the agent's directory was removed (workdir cleaned up): nothing to serve
                if self.clients or self.by_pid or any(r.clients for r in self.runs.values()):
                    self.idle_since = time.monotonic()
                elif time.monotonic() - self.idle_since > self.idle_exit:
                    break
        finally:
            sys.stderr.write("orchestra-agent: exiting after %d launches (%d in recycled directories, peak %d "
                             "directories)\n" % (self.launches, self.dirs.recycled, self.dirs.limit))
            self.dirs.clear()
            self.sel.unregister(listener)
            listener.close()
            try:
                os.unlink(SOCKET_NAME)
            except OSError:
                pass
        return 0

    def _accept(self, listener) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[id(client)] = client
            self.sel.register(sock, selectors.EVENT_READ, client)
            self._event(client, "hello", pid=os.getpid())

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        lines, client.inbuf = split_lines(client.inbuf + data)
        if len(client.inbuf) > MAX_LINE:
            self._drop(client)
            return
        for line in lines:
            self._handle(client, line)
            if client.closed:
                return


def _reopen(spool):
    """An independent reader over a spooled payload, for a second client waiting on the same run."""
    spool.seek(0)
    copy = tempfile.TemporaryFile()
    shutil.copyfileobj(spool, copy)
    spool.seek(0)
    copy.seek(0)
    return copy


# ------------------------------------------------------------------------------------------ attach
def _connect(directory: str, wait: float):
    deadline = time.monotonic() + wait
    path = os.path.join(directory, SOCKET_NAME)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if len(path.encode()) < 100:
                sock.connect(path)
            else:  # long path: connect through a relative name
                here = os.getcwd()
                os.chdir(directory)
                try:
                    sock.connect(SOCKET_NAME)
                finally:
                    os.chdir(here)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                return None
            time.sleep(0.02)


def _spawn_daemon(directory: str, root: str, wrapper_b64: str, marker: str, idle_exit: float) -> None:
    os.makedirs(directory, exist_ok=True)
    log = os.open(os.path.join(directory, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    argv = [sys.executable, os.path.abspath(__file__), "serve", directory, root, wrapper_b64, marker,
            "--idle-exit=%g" % idle_exit]
    try:
        if hasattr(os, "posix_spawn"):
            os.posix_spawn(sys.executable, argv, dict(os.environ), setsid=True,
                           file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, log, 1),
                                         (os.POSIX_SPAWN_DUP2, log, 2)])
        else:  # pragma: no cover - Python < 3.8 on the remote
            import subprocess
            subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True)
    finally:
        os.close(log)
        os.close(devnull)


def attach(directory: str, root: str, wrapper_b64: str, marker: str, spawn: bool, idle_exit: float = 600.0) -> int:
    """Pipe stdin/stdout to the agent's socket; start the agent first when ``spawn`` and none answers."""
    sock = _connect(directory, 0.0)
    if sock is None and spawn:
        _spawn_daemon(directory, root, wrapper_b64, marker, idle_exit)
        sock = _connect(directory, 15.0)
    elif sock is None:
        sock = _connect(directory, 30.0)  # started by someone else (an srun step): give it time
    if sock is None:
        sys.stderr.write("orchestra-agent: no agent answers in %s\n" % directory)
        return 3
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, 1 << 16)
                if not data:
                    return 0  # the controller went away; the agent and its executions stay
                sock.sendall(data)
            else:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return 4  # the agent went away: the controller re-attaches (and so restarts it)
                view = memoryview(data)
                while view:
                    written = os.write(stdout, view)
                    view = view[written:]


def _idle_exit(options) -> float:
    for option in options:
        if option.startswith("--idle-exit="):
            return max(1.0, float(option.split("=", 1)[1]))
    return 600.0


def ensure(directory: str, root: str, wrapper_b64: str, marker: str, idle_exit: float) -> int:
    """Start the agent unless one answers; return once it accepts connections (for local controllers,
    which then talk to its socket directly rather than through ``attach``)."""
    sock = _connect(directory, 0.0)
    if sock is None:
        _spawn_daemon(directory, root, wrapper_b64, marker, idle_exit)
        sock = _connect(directory, 15.0)
    if sock is None:
        sys.stderr.write("orchestra-agent: no agent answers in %s\n" % directory)
        return 3
    sock.close()
    return 0


def main(argv) -> int:
    """serve DIR ROOT WRAPPER_B64 MARKER [--idle-exit=S] | attach ... [--spawn] [--idle-exit=S] | ensure ..."""
    if len(argv) >= 5 and argv[0] == "serve":
        wrapper = base64.b64decode(argv[3]).decode("utf-8")
        return Agent(argv[1], argv[2], wrapper, argv[4], idle_exit=_idle_exit(argv[5:])).serve()
    if len(argv) >= 5 and argv[0] == "ensure":
        return ensure(argv[1], argv[2], argv[3], argv[4], _idle_exit(argv[5:]))
    if len(argv) >= 5 and argv[0] == "attach":
        return attach(argv[1], argv[2], argv[3], argv[4], "--spawn" in argv[5:], _idle_exit(argv[5:]))
    sys.stderr.write("usage: agent.py serve|attach DIR ROOT WRAPPER_B64 MARKER [--spawn] [--idle-exit=S]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
