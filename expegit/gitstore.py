"""The campaign's git repository, through dulwich: the only module of expegit that imports it.

Result commits are written with dulwich's object layer (blobs, trees, a commit, then a compare-and-swap of
the branch ref). The working tree and the index are never touched, so a user can keep editing code while a
campaign runs, and many greenlets can commit at once: objects are content-addressed and each execution has
its own branch, so the only shared state is the ref namespace, which the CAS protects.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import weakref
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import tenacity
from dulwich.errors import NotGitRepository
from dulwich.objects import Blob, Commit, Tree
from dulwich.repo import Repo

from orchestra.errors import RepositoryError

from .packed_refs import Buffer, PackedRefsView, is_sorted, locate_all, splice_pieces
from .ref_costs import RefCosts

FILE_MODE = 0o100644
EXEC_MODE = 0o100755
TREE_MODE = 0o040000
EXECUTIONS_REF = b"refs/heads/executions/"
SNAPSHOTS_REF = "refs/orchestra/snapshots/"


RECENT_OBJECTS = 32768  # trees and commits: about 3 per execution, so a 10,000-execution run stays cached
LOOSE_REFS_TO_PACK = 256  # below this, readers open the loose files faster than git rewrites packed-refs
# A flush (or a batch of new branches) rewrites packed-refs instead of writing a loose ref per update when
# that is measured to be cheaper (ref_costs.py), and never above this size: the cap bounds one rewrite's
# memory and time (a million branches: 76 MB), so per update the cost stays at most a loose ref's.
REWRITE_MAX_BYTES = 64 * 1024 * 1024
IOV_BATCH = 1024  # iovecs per os.writev: Linux's and macOS's IOV_MAX
LOCK_TIMEOUT = 10.0  # git waits 1 s for packed-refs.lock by default; many controllers may share a campaign


def _acquire_lock(lock: Path, what: str) -> int:
    """Create ``lock`` exclusively (git's protocol), waiting a bounded time while another writer holds it.

    The wait is tenacity's (the project's one backoff library): exponential from 1 ms to 50 ms with full
    jitter, so writers that collided do not retry in lockstep. Built only when the lock is taken: most
    acquisitions succeed at once, and this is on every result commit.
    """
    try:
        return _create_lock(lock)
    except FileExistsError:
        pass
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(FileExistsError),
        stop=tenacity.stop_after_delay(LOCK_TIMEOUT),
        wait=tenacity.wait_random_exponential(multiplier=0.001, max=0.05),
        sleep=time.sleep,  # looked up now: gevent's cooperative sleep once the CLI has patched
        reraise=True,
    )
    try:
        return retrying(_create_lock, lock)
    except FileExistsError:
        raise RepositoryError(f"{what} stayed locked for {LOCK_TIMEOUT:g}s ({lock} exists)",
                              hint="another git process is updating them; if none is, delete the lock file") from None


def _write_all(fd: int, data: bytes) -> None:
    """os.write until done: one call may write less than asked (a signal, a full disk's last block)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _write_pieces(fd: int, pieces: Sequence[bytes | memoryview | mmap.mmap]) -> None:
    """os.writev of ``pieces`` until all are written, at most IOV_MAX at a time; a short write (a
    signal, a full disk's last block) resumes inside the piece it stopped in."""
    views = [memoryview(piece) for piece in pieces]
    index = 0
    while index < len(views):
        batch = views[index:index + IOV_BATCH]
        written = os.writev(fd, batch)
        for view in batch:
            if written >= len(view):
                written -= len(view)
                index += 1
                continue
            views[index] = view[written:]
            break


def _create_lock(lock: Path) -> int:
    return os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


PACKED_REFS_HEADER = "# pack-refs with: peeled fully-peeled sorted "
EXECUTION_REFS = "refs/heads/executions/"


def split_packed_refs(text: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
    """(header line, name -> (object id, peeled id or None)) of a ``packed-refs`` file."""
    header = PACKED_REFS_HEADER
    entries: dict[str, tuple[str, str | None]] = {}
    last: str | None = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            header = line
            continue
        if line.startswith("^") and last is not None:
            entries[last] = (entries[last][0], line[1:])
            continue
        sha, _, name = line.partition(" ")
        if len(sha) == 40 and name:
            entries[name] = (sha, None)
            last = name
    return header, entries


def render_packed_refs(header: str, entries: dict[str, tuple[str, str | None]]) -> str:
    """A ``packed-refs`` file git reads: sorted by name, peeled tag lines kept under their ref."""
    lines = [header]
    for name in sorted(entries):
        sha, peeled = entries[name]
        lines.append(f"{sha} {name}")
        if peeled:
            lines.append(f"^{peeled}")
    return "\n".join(lines) + "\n"


def parse_packed_refs(text: str) -> dict[str, str]:
    """Ref name -> object id from a ``packed-refs`` file (comment and peeled ``^`` lines skipped)."""
    refs: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line[0] in "#^":
            continue
        sha, _, name = line.partition(" ")
        if len(sha) == 40 and name:
            refs[name] = sha
    return refs


BULK_READ_MIN = 16  # below this, dulwich's lookups beat starting `git cat-file`
BULK_READ_CHUNK = 20000  # commits per `git cat-file --batch`: bounds the output held in memory (~15 MB)


def parse_cat_file_batch(data: bytes, count: int) -> list[bytes | None]:
    """The ``count`` answers of `git cat-file --batch`: a blob's content, or None where the object is
    missing, ambiguous or not a blob (``<oid> <type> <size>\\n<content>\\n`` or ``<request> missing\\n``)."""
    out: list[bytes | None] = []
    pos = 0
    for _ in range(count):
        end = data.index(b"\n", pos)
        header = data[pos:end].split(b" ")
        pos = end + 1
        if len(header) == 3 and len(header[0]) in (40, 64) and header[2].isdigit():
            size = int(header[2])
            content = data[pos:pos + size]
            pos += size + 1
            out.append(content if header[1] == b"blob" else None)
        else:
            out.append(None)  # "<request> missing" / "ambiguous": the request is echoed, no content follows
    return out


def render_cat_file_batch(answers: Sequence[tuple[str, str, bytes] | None], requests: Sequence[str]) -> bytes:
    """What `git cat-file --batch` prints for ``answers`` ((oid, type, content) or None): for tests."""
    parts = []
    for answer, request in zip(answers, requests):
        if answer is None:
            parts.append(request.encode() + b" missing\n")
        else:
            oid, kind, content = answer
            parts.append(f"{oid} {kind} {len(content)}\n".encode() + content + b"\n")
    return b"".join(parts)


def _default_branch() -> bytes:
    """init.defaultBranch from the user's git config, else ``main`` (what current git suggests)."""
    from dulwich.config import StackedConfig

    try:
        return StackedConfig.default().get((b"init",), b"defaultBranch") or b"main"
    except KeyError:
        return b"main"


class GitStore:
    """One campaign repository. Paths given to it are repository-relative, with '/' separators."""

    def __init__(self, root: Path) -> None:
        try:
            self.repo = Repo(str(root))
        except NotGitRepository:
            raise RepositoryError(f"{root} is not a git repository", hint="run `expegit init` first")
        # dulwich's packs close themselves in __del__, which at interpreter exit prints tracebacks; close
        # them while the interpreter is still whole.
        weakref.finalize(self, self.repo.close)
        self.root = Path(self.repo.path)
        self.git_dir = Path(self.repo.controldir())
        self._identity: bytes | None = None
        self._identity_fallback = False
        self._staged: dict[bytes, object] | None = None
        self._pack_serial = 0
        # Objects of recent flushes: the next journal commit of an execution builds on its previous tip's
        # trees, and finding them again among many small packs costs more than the whole commit.
        self._recent: dict[bytes, object] = {}
        self._packed = PackedRefsView(str(self.git_dir / "packed-refs"))
        self.ref_costs = RefCosts()  # what a loose ref and a packed-refs rewrite cost here (swap_refs)

    # --- opening ---------------------------------------------------------------------------------------
    @classmethod
    def discover(cls, start: str | os.PathLike[str] = ".") -> "GitStore":
        here = Path(start).resolve()
        for candidate in (here, *here.parents):
            if (candidate / ".git").exists():
                return cls(candidate)
        raise RepositoryError(f"not inside a git repository ({here})",
                              hint="cd into a campaign or run `expegit init`")

    @classmethod
    def init(cls, root: Path) -> "GitStore":
        root.mkdir(parents=True, exist_ok=True)
        if not (root / ".git").exists():
            Repo.init(str(root), default_branch=_default_branch())
        return cls(root)

    # --- identity and HEAD -------------------------------------------------------------------------------
    def identity(self) -> bytes:
        """``Name <email>`` from git config (as `git commit` would use), or a host-based fallback."""
        if self._identity is None:
            config = self.repo.get_config_stack()
            try:
                name = config.get((b"user",), b"name")
                email = config.get((b"user",), b"email")
            except KeyError:
                name = email = None
            name = name or os.environ.get("GIT_AUTHOR_NAME", "").encode() or None
            email = email or os.environ.get("GIT_AUTHOR_EMAIL", "").encode() or None
            self._identity_fallback = name is None or email is None
            name = name or b"orchestra"
            email = email or f"orchestra@{socket.gethostname()}".encode()
            self._identity = name + b" <" + email + b">"
        return self._identity

    def identity_is_fallback(self) -> bool:
        """Whether git has no user.name or user.email here, so that identity() made one up."""
        self.identity()
        return self._identity_fallback

    def head_commit(self) -> str | None:
        """HEAD's commit, read as git does: its branch's loose file, else a bisection of packed-refs.

        Why not dulwich's refs: a branch without a loose file made it parse and validate all of packed-refs
        (a second per run at 100,000 executions, before anything ran).
        """
        try:
            text = (self.git_dir / "HEAD").read_bytes().strip()
            if text.startswith(b"ref: "):
                return self._read_ref_value(text[5:].decode())
            if len(text) == 40:
                return text.decode()
        except (OSError, UnicodeDecodeError, RepositoryError):
            pass
        try:
            return self.repo.head().decode()
        except KeyError:
            return None

    def resolve(self, name: str) -> str | None:
        """A commit id from a full id, a branch or a ref name; None if it names nothing."""
        raw = name.encode()
        for candidate in (raw, b"refs/heads/" + raw, b"refs/tags/" + raw, b"refs/remotes/" + raw):
            try:
                return self.repo.refs[candidate].decode()
            except KeyError:
                continue
        if len(name) == 40:
            try:
                self.repo[raw]
                return name
            except KeyError:
                return None
        return None

    def has_object(self, sha: str) -> bool:
        return sha.encode() in self.repo.object_store

    def commit_info(self, sha: str) -> tuple[str, str, int]:
        """(subject, author, commit time) of a commit."""
        commit = self.repo[sha.encode()]
        subject = commit.message.decode("utf-8", "replace").split("\n", 1)[0]
        return subject, commit.author.decode("utf-8", "replace"), commit.commit_time

    def parents(self, sha: str) -> list[str]:
        return [p.decode() for p in self.repo[sha.encode()].parents]

    def dirty_paths(self) -> list[str]:
        """Tracked files whose content differs from HEAD (staged or not): what would make a result lie."""
        # dulwich.index, not porcelain.status: the same two comparisons without importing porcelain
        # (and its server, hooks, ...), a tenth of `expegit run`'s start-up.
        from dulwich.index import get_unstaged_changes

        index = self.repo.open_index()
        head = self.head_commit()
        tree = self.repo[head.encode()].tree if head is not None else None
        paths: set[bytes] = set()
        for (old, new), _modes, _shas in index.changes_from_tree(self.repo.object_store, tree):
            paths.update(p for p in (old, new) if p is not None)
        paths.update(get_unstaged_changes(index, str(self.root)))
        return sorted(p.decode("utf-8", "surrogateescape") for p in paths)

    def snapshot(self, message: str) -> str:
        """Commit the working-tree state of tracked files to a side ref; HEAD, index and files untouched."""
        head = self.head_commit()
        if head is None:
            raise RepositoryError("the repository has no commit yet", hint="commit your code first")
        index = self.repo.open_index()
        entries = []
        for path, entry in index.items():
            full = self.root / path.decode()
            try:
                st = full.lstat()
            except FileNotFoundError:
                continue  # deleted in the working tree: the snapshot has it deleted too
            if stat.S_ISLNK(st.st_mode):
                blob = Blob.from_string(os.readlink(full).encode())
                mode = 0o120000
            else:
                blob = Blob.from_string(full.read_bytes())
                mode = EXEC_MODE if st.st_mode & 0o111 else FILE_MODE
            self.repo.object_store.add_object(blob)
            entries.append((path, blob.id, mode))
        from dulwich.index import commit_tree
        tree = commit_tree(self.repo.object_store, entries)
        sha = self.write_commit(tree.decode() if isinstance(tree, bytes) else tree, [head], message)
        self.repo.refs[(SNAPSHOTS_REF + sha).encode()] = sha.encode()
        return sha

    # --- objects -----------------------------------------------------------------------------------------
    def _add(self, obj) -> None:
        if self._staged is not None:
            self._staged[obj.id] = obj
        else:
            self.repo.object_store.add_object(obj)

    def _get(self, sha: bytes, *, remember: bool = True):
        """An object staged by this process, recently used, or from the object store (KeyError if none).
        ``remember``: keep a tree or commit read from the store among the recent ones; bulk readers
        (read_path over every branch) pass False, so they neither evict the journal's working set nor hold
        tens of thousands of parsed objects."""
        if self._staged is not None:
            obj = self._staged.get(sha)
            if obj is not None:
                return obj
        obj = self._recent.get(sha)
        if obj is None:
            obj = self.repo.object_store[sha]
            if remember and obj.type_name in (b"tree", b"commit"):
                self._remember(sha, obj)
        return obj

    def _remember(self, sha: bytes, obj) -> None:
        self._recent[sha] = obj
        if len(self._recent) > RECENT_OBJECTS:
            for old in list(self._recent)[: RECENT_OBJECTS // 4]:  # dicts keep insertion order: oldest first
                del self._recent[old]

    def start_staging(self) -> None:
        """From now on new objects are held in memory until flush_staged() writes them as one pack.

        A short execution writes about a dozen objects; as loose objects that is a dozen file creations and
        renames, which on a busy disk cost a millisecond each. One pack per flush costs two. Refs must only
        be moved after the flush that wrote the objects they name.
        """
        if self._staged is None:
            self._staged = {}

    def flush_staged(self) -> int:
        """Write staged objects as one pack (with its index); returns how many were written.

        The pack and its index are written straight from the objects in memory: dulwich's add_objects
        writes the pack and then reads every object back to build the index (a third of a short
        execution's controller time). The index lands last, so a reader never sees a pack without one.
        """
        if not self._staged:
            return 0
        from dulwich.pack import write_pack

        store = self.repo.object_store
        objects = list(self._staged.values())
        self._pack_serial += 1
        base = os.path.join(store.pack_dir, f"tmp_orchestra_{os.getpid()}_{self._pack_serial}")
        checksum, _index_checksum = write_pack(base, [(obj, None) for obj in objects],
                                               object_format=store.object_format, deltify=False)
        final = os.path.join(store.pack_dir, "pack-" + checksum.hex())
        os.replace(base + ".pack", final + ".pack")
        os.replace(base + ".idx", final + ".idx")
        for sha, obj in self._staged.items():
            if obj.type_name in (b"tree", b"commit"):
                self._remember(sha, obj)
        self._staged.clear()
        return len(objects)

    def stop_staging(self) -> None:
        self.flush_staged()
        self._staged = None

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Objects written inside are written as one pack when the block ends."""
        if self._staged is not None:
            yield
            return
        self.start_staging()
        try:
            yield
        finally:
            self.stop_staging()

    def tree_of(self, commit: str) -> str:
        try:
            return self._get(commit.encode()).tree.decode()
        except KeyError:
            raise RepositoryError(f"commit {commit[:12]} is not in this repository",
                                  hint="fetch it (`expegit pull`) or check the id")

    def write_blob(self, data: bytes) -> str:
        blob = Blob.from_string(data)
        self._add(blob)
        return blob.id.decode()

    def tree_with(self, base_tree: str | None, files: Mapping[str, tuple[int, str]]) -> str:
        """A new tree: ``base_tree`` with ``files`` (path -> (mode, blob id)) added or replaced."""
        grouped: dict[str, dict[str, tuple[int, str]]] = {}
        direct: dict[str, tuple[int, str]] = {}
        for path, entry in files.items():
            head, sep, rest = path.partition("/")
            if sep:
                grouped.setdefault(head, {})[rest] = entry
            else:
                direct[head] = entry
        tree = Tree()
        if base_tree is not None:
            for item in self._get(base_tree.encode()).items():
                tree.add(item.path, item.mode, item.sha)
        for name, sub in grouped.items():
            key = name.encode()
            sub_base = None
            if key in tree:
                mode, sha = tree[key]
                if stat.S_ISDIR(mode):
                    sub_base = sha.decode()
            tree.add(key, TREE_MODE, self.tree_with(sub_base, sub).encode())
        for name, (mode, sha) in direct.items():
            tree.add(name.encode(), mode, sha.encode())
        self._add(tree)
        return tree.id.decode()

    def write_commit(self, tree: str, parents: list[str], message: str, *, when: float | None = None) -> str:
        commit = Commit()
        commit.tree = tree.encode()
        commit.parents = [p.encode() for p in parents]
        commit.author = commit.committer = self.identity()
        stamp = int(when if when is not None else time.time())
        commit.author_time = commit.commit_time = stamp
        offset = -time.timezone if not time.localtime(stamp).tm_isdst else -time.altzone
        commit.author_timezone = commit.commit_timezone = offset
        commit.encoding = b"UTF-8"
        commit.message = message.encode("utf-8")
        self._add(commit)
        return commit.id.decode()

    def read_path(self, commit: str, path: str) -> bytes | None:
        """The content of ``path`` at ``commit``, or None if it is not there.

        Read as tree_of reads: a commit this process staged is found before the writer's flush, so a
        search told of an execution's end reads its final commit at once (see parasearch.pruning)."""
        try:
            sha = self._get(commit.encode(), remember=False).tree
            for part in path.split("/"):
                mode, sha = self._get(sha, remember=False)[part.encode()]
            return self._get(sha, remember=False).data
        except KeyError:
            return None

    def read_path_many(self, commits: Sequence[str], path: str) -> list[bytes | None]:
        """``read_path(c, path)`` for every commit, in order, read in bulk (see iter_path_batches)."""
        return [data for batch in self.iter_path_batches(commits, path) for data in batch]

    def iter_path_batches(self, commits: Sequence[str], path: str,
                          batch: int = BULK_READ_CHUNK) -> Iterator[list[bytes | None]]:
        """``read_path(c, path)`` for every commit, in order, as lists of up to ``batch``.

        Why: after a clone nothing is cached, and dulwich finds each record through its commit and two
        trees in Python: 60 s for 100,000 branches. One `git cat-file --batch` per batch resolves
        ``commit:path`` in C over the same packs, and the next batch's git runs while the caller parses
        this one (its answers go to a file, so it never waits on a full pipe). Few commits, or no git
        binary, go through dulwich: a process start costs more than a handful of lookups.
        """
        if len(commits) < BULK_READ_MIN:
            yield [self.read_path(c, path) for c in commits]
            return
        chunks = [commits[i:i + batch] for i in range(0, len(commits), batch)]
        try:
            pending = self._start_cat_file(chunks[0], path)
        except OSError:
            yield [self.read_path(c, path) for c in commits]
            return
        for k, chunk in enumerate(chunks):
            following = self._start_cat_file(chunks[k + 1], path) if k + 1 < len(chunks) else None
            yield self._finish_cat_file(pending, chunk, path)
            if following is not None:
                pending = following

    def _start_cat_file(self, commits: Sequence[str], path: str) -> tuple[subprocess.Popen, object]:
        import tempfile

        request = tempfile.TemporaryFile()
        request.write("".join(f"{c}:{path}\n" for c in commits).encode("utf-8"))
        request.seek(0)
        answers = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(["git", "--git-dir", str(self.git_dir), "cat-file", "--batch"],
                                    stdin=request, stdout=answers, stderr=subprocess.DEVNULL)
        finally:
            request.close()  # the child holds its own descriptor
        return proc, answers

    def _finish_cat_file(self, started: tuple[subprocess.Popen, object], commits: Sequence[str],
                         path: str) -> list[bytes | None]:
        proc, answers = started
        try:
            code = proc.wait(timeout=600)
            answers.seek(0)  # type: ignore[attr-defined]
            data = answers.read()  # type: ignore[attr-defined]
        finally:
            answers.close()  # type: ignore[attr-defined]
        try:
            if code != 0:
                raise ValueError(f"git cat-file exited {code}")
            return parse_cat_file_batch(data, len(commits))
        except ValueError:  # a git that failed or answered short: dulwich reads the same objects
            return [self.read_path(c, path) for c in commits]

    def list_tree(self, commit: str) -> Iterator[tuple[str, int, str]]:
        """(path, mode, blob id) of every file at ``commit``."""
        store = self.repo.object_store
        for entry in store.iter_tree_contents(store[commit.encode()].tree):
            yield entry.path.decode("utf-8", "replace"), entry.mode, entry.sha.decode()

    def blob_size(self, sha: str) -> int:
        return len(self.repo.object_store[sha.encode()].data)

    def archive(self, commit: str) -> Iterator[bytes]:
        """An uncompressed tar of ``commit``'s tree: what a backend extracts as the code of an execution."""
        from dulwich.archive import tar_stream

        store = self.repo.object_store
        commit_obj = store[commit.encode()]
        return tar_stream(store, store[commit_obj.tree], commit_obj.commit_time)

    # --- refs --------------------------------------------------------------------------------------------
    def create_ref(self, name: str, sha: str) -> bool:
        """Create ``name`` only if it does not exist yet."""
        return self._swap_ref(name, None, sha)

    def update_ref(self, name: str, old: str, new: str) -> bool:
        """Move ``name`` from ``old`` to ``new``; False if it no longer points at ``old``."""
        return self._swap_ref(name, old, new)

    def _swap_ref(self, name: str, old: str | None, new: str) -> bool:
        """A compare-and-swap of a loose ref under git's own ``.lock`` protocol.

        dulwich's set_if_equals does the same but fsyncs every ref file (4 ms each here, most of a short
        execution's cost); git itself does not fsync loose refs unless core.fsync asks for it, and the
        objects a ref names are written before it, so a crash can lose at most the last ref move, never
        leave a ref naming a missing object.
        """
        path, lock, fd = self._lock_ref(name)
        try:
            current = self._read_ref_value(name)
            if current != old:
                os.close(fd)
                os.unlink(lock)
                return False
            os.write(fd, new.encode() + b"\n")
            os.close(fd)
            os.replace(lock, path)
            return True
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            try:
                os.unlink(lock)
            except OSError:
                pass
            raise

    def swap_refs(self, updates: list[tuple[str, str | None, str | None]], *, bulk: bool = False) -> list[bool]:
        """Many compare-and-swaps at once (a new value of None deletes the ref); updates apply in order, so
        old values may be earlier updates' new values.

        Two ways, whichever is measured to cost less here (RefCosts): a loose ref per new value, each under
        its own ``.lock`` as git does, with packed-refs only read (bisected, see packed_refs.py) for refs
        that have no loose file; or one rewrite of packed-refs, spliced (packed_refs.splice_pieces), never
        above REWRITE_MAX_BYTES. Why not always the rewrite: parsing and rewriting packed-refs at each
        journal flush once cost the size of the whole campaign per flush (a run adding 1,000 executions to
        100,000 went at 43% of the rate of the same run on an empty campaign). Why not always loose: a new
        file costs 0.5-1 ms of kernel time on ext4 without a journal (ref_costs.py), more than a splice of a
        7 MB packed-refs for a flush of a few dozen. The loose refs a run leaves are packed once at its end
        (maintain()). Deletions still rewrite packed-refs (git does the same): only a run that never reached
        its profile deletes, and it deletes what it just created.

        ``bulk``: the rewrite, whatever the costs, for a clone or pull creating tens of thousands of
        branches at once.
        """
        size = self._packed_refs_size()
        if bulk or (size is not None and size <= REWRITE_MAX_BYTES
                    and self.ref_costs.rewrite_is_cheaper(size, len(updates))):
            started = time.thread_time()
            done = self._swap_packed(updates)
            self.ref_costs.rewrite_took(size or 0, time.thread_time() - started)
            return done
        started = time.thread_time()
        done = self._swap_loose(updates)
        self.ref_costs.loose_took(len(updates), time.thread_time() - started)
        return done

    def _swap_loose(self, updates: list[tuple[str, str | None, str | None]]) -> list[bool]:
        results: list[bool] = []
        index = 0
        while index < len(updates):
            name, old, new = updates[index]
            if new is not None:
                results.append(self._swap_ref(name, old, new))
                index += 1
                continue
            end = index
            while end < len(updates) and updates[end][2] is None:
                end += 1
            results.extend(self._delete_refs([(n, o) for n, o, _new in updates[index:end]]))
            index = end
        return results

    def rewrite_cost(self) -> float:
        """What one rewrite of packed-refs is estimated to cost now (CPU seconds; RefCosts), or 0 where
        swap_refs would never rewrite it (above REWRITE_MAX_BYTES, or not readable)."""
        size = self._packed_refs_size()
        if size is None or size > REWRITE_MAX_BYTES:
            return 0.0
        return self.ref_costs.rewrite_cost(size)

    def _packed_refs_size(self) -> int | None:
        """packed-refs' size in bytes (0 when there is none), or None when it cannot be looked at."""
        try:
            return os.stat(self.git_dir / "packed-refs").st_size
        except FileNotFoundError:
            return 0
        except OSError:
            return None

    def _swap_packed(self, updates: list[tuple[str, str | None, str | None]]) -> list[bool]:
        """swap_refs(bulk=True): all updates in one rewrite of packed-refs, under git's packed-refs.lock.

        A ref that also exists as a loose file (a run's, or git's after a fetch) is swapped as a loose ref,
        since the loose file is the one git reads.
        """
        results: list[bool] = []
        lock = self.git_dir / "packed-refs.lock"
        packed = str(self.git_dir / "packed-refs")
        fd = _acquire_lock(lock, "packed refs")
        try:
            data = self._sorted_packed_refs(packed)
            loose = self._loose_refs_beside()
            changes: dict[str, str | None] = {}
            located: dict[str, int] = {}
            packed_now = locate_all(data, (name.encode("utf-8") for name, _old, _new in updates))
            for name, old, new in updates:
                self._check_ref_name(name)
                if loose(name):
                    if new is None:
                        results.append(old is not None and self.repo.refs.remove_if_equals(name.encode(),
                                                                                          old.encode()))
                    else:
                        results.append(self._swap_ref(name, old, new))
                    continue
                if name in changes:
                    current = changes[name]
                else:
                    located[name], found = packed_now[name.encode("utf-8")]
                    current = found.decode() if found else None
                if current != old:
                    results.append(False)
                    continue
                changes[name] = new
                results.append(True)
            if changes:
                _write_pieces(fd, splice_pieces(data, changes, located))
                os.close(fd)
                fd = -1
                os.replace(lock, packed)
            else:
                os.close(fd)
                fd = -1
                os.unlink(lock)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(lock)
            except OSError:
                pass
            raise
        return results

    def _delete_refs(self, deletions: list[tuple[str, str | None]]) -> list[bool]:
        """Delete refs still at their old values: packed entries in one rewrite, then their loose files.

        git's order: each ref's lock, then packed-refs.lock; packed-refs is rewritten before the loose files
        go, so a crash in between never brings back an older packed value.
        """
        held: list[tuple[str, Path, int]] = []
        results: list[bool] = []
        lock = self.git_dir / "packed-refs.lock"
        packed = str(self.git_dir / "packed-refs")
        packed_fd = -1
        try:
            for name, old in deletions:
                self._check_ref_name(name)
                if old is None:
                    results.append(False)
                    continue
                _path, ref_lock, fd = self._lock_ref(name)
                held.append((name, ref_lock, fd))
                if self._read_ref_value(name) != old:
                    results.append(False)
                    held.pop()
                    os.close(fd)
                    os.unlink(ref_lock)
                    continue
                results.append(True)
            if held:
                packed_fd = _acquire_lock(lock, "packed refs")
                header, entries = self._read_packed_refs(packed)
                gone = [entries.pop(name, None) for name, _lock, _fd in held]
                if any(entry is not None for entry in gone):
                    _write_all(packed_fd, render_packed_refs(header, entries).encode("utf-8"))
                    os.close(packed_fd)
                    packed_fd = -1
                    os.replace(lock, packed)
                for name, _lock, _fd in held:
                    try:
                        os.unlink(self.git_dir / name)
                    except FileNotFoundError:
                        pass
        finally:
            if packed_fd >= 0:
                os.close(packed_fd)
                try:
                    os.unlink(lock)
                except OSError:
                    pass
            for _name, ref_lock, fd in held:
                os.close(fd)
                try:
                    os.unlink(ref_lock)
                except OSError:
                    pass
        return results

    def _lock_ref(self, name: str) -> tuple[Path, Path, int]:
        """(path, lock path, lock fd) of a ref, its directory made when missing.

        Directories are made only when the lock cannot be created: mkdir on an existing directory still
        takes its lock, and `git pack-refs --prune` may remove an emptied one at any time.
        """
        self._check_ref_name(name)
        path = self.git_dir / name
        lock = path.with_name(path.name + ".lock")
        for _attempt in range(3):
            try:
                return path, lock, _acquire_lock(lock, f"ref {name}")
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
        return path, lock, _acquire_lock(lock, f"ref {name}")

    @staticmethod
    def _check_ref_name(name: str) -> None:
        if not name.startswith("refs/") or ".." in name or name.endswith(".lock"):
            raise RepositoryError(f"refusing to write ref {name!r}")

    def _sorted_packed_refs(self, path: str) -> Buffer:
        """packed-refs as splice() can edit it: sorted by git's trait (what git writes), else sorted
        once here (dulwich and older gits write files without the trait). The caller holds the lock.

        Mapped, not read: a splice copies the file's untouched stretches straight from its pages
        (splice_pieces), and reading 7 MB into a new bytes object first cost as much as writing it."""
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        except FileNotFoundError:
            return (PACKED_REFS_HEADER + "\n").encode("utf-8")
        if mapped is not None and is_sorted(mapped):
            return mapped
        data = bytes(mapped) if mapped is not None else b""
        if mapped is not None:
            mapped.close()
        header, entries = split_packed_refs(data.decode("utf-8"))
        if not data.startswith(b"#"):
            # No header claims no peeling (split_packed_refs' default header would say "fully-peeled",
            # telling git that annotated tags without "^" lines are not tags).
            header = "# pack-refs with: sorted "
        elif " sorted " not in header + " ":
            header = header.rstrip() + " sorted "  # true once rendered; the other traits stay as they were
        return render_packed_refs(header, entries).encode("utf-8")

    def _read_packed_refs(self, path: str) -> tuple[str, dict[str, tuple[str, str | None]]]:
        """packed-refs parsed (only deletions need it whole; the caller holds packed-refs.lock)."""
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            data = b""
        return split_packed_refs(data.decode("utf-8"))

    def _loose_refs_beside(self) -> Callable[[str], bool]:
        """Whether a ref is a loose file, from one listing of each directory asked about rather than a stat
        per ref: a clone's or a push's bulk swap asks about 100,000 refs in the same one or two folders."""
        listed: dict[str, set[str]] = {}

        def is_loose(name: str) -> bool:
            folder, _, leaf = name.rpartition("/")
            if folder not in listed:
                try:
                    listed[folder] = {entry.name for entry in os.scandir(self.git_dir / folder) if entry.is_file()}
                except (FileNotFoundError, NotADirectoryError):
                    listed[folder] = set()
            return leaf in listed[folder]
        return is_loose

    def _read_ref_value(self, name: str) -> str | None:
        try:
            text = (self.git_dir / name).read_bytes().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return self._packed.lookup(name)
        if text.startswith(b"ref: "):
            raise RepositoryError(f"ref {name} is symbolic: execution refs never are")
        return text.decode() or None

    def delete_ref(self, name: str, old: str) -> bool:
        return self.repo.refs.remove_if_equals(name.encode(), old.encode())

    def execution_tip(self, execution_id: str) -> str | None:
        """One execution branch's tip: its loose file, else a binary search of packed-refs (dulwich's
        refs container would parse the whole of packed-refs: 100,000 lines for one ref)."""
        return self._read_ref_value(f"refs/heads/executions/{execution_id}")

    def ref(self, name: str) -> str | None:
        """A ref's commit: under refs/, its loose file or a bisection of packed-refs, as execution_tip.

        dulwich's container only for what may be symbolic (HEAD, or a loose file that says ``ref:``): it
        parses the whole of packed-refs to read one ref, which with 100,000 execution branches and their
        remote-tracking refs cost seconds of every `expegit push` (reading refs/remotes/origin/...).
        """
        if name.startswith("refs/"):
            try:
                return self._read_ref_value(name)
            except RepositoryError:
                pass  # symbolic: dulwich follows it
        try:
            return self.repo.refs[name.encode()].decode()
        except KeyError:
            return None

    def refs_under(self, prefix: bytes) -> dict[str, str]:
        """Ref name suffix -> commit id for every ref under ``prefix`` (loose refs override packed ones).

        Read directly rather than through dulwich's RefsContainer, which validates every name on the way
        (0.75 s for 10,000 execution branches; `expegit status` has 0.5 s in all).
        """
        return self._refs_under(prefix, parse=True)[0]

    def refs_fingerprint(self, prefix: bytes = EXECUTIONS_REF) -> str:
        """A digest of everything refs_under(prefix) reads: the packed-refs file and the loose refs below
        ``prefix``, names and values. Equal digests mean equal refs, so a cache keyed by it is valid as a
        whole without parsing 100,000 packed refs (hashing the file costs a hundredth of parsing it)."""
        return self._refs_under(prefix, parse=False)[1]

    def refs_and_fingerprint(self, prefix: bytes = EXECUTIONS_REF) -> tuple[dict[str, str], str]:
        """refs_under and refs_fingerprint from one read, so the digest names exactly the refs returned."""
        return self._refs_under(prefix, parse=True)

    def _refs_under(self, prefix: bytes, *, parse: bool) -> tuple[dict[str, str], str]:
        import hashlib

        text_prefix = prefix.decode()
        refs: dict[str, str] = {}
        try:
            data = (self.git_dir / "packed-refs").read_bytes()
        except FileNotFoundError:
            data = b""
        digest = hashlib.sha1(data)
        if parse:
            for name, sha in parse_packed_refs(data.decode("utf-8")).items():
                if name.startswith(text_prefix):
                    refs[name[len(text_prefix):]] = sha
        loose: list[tuple[str, bytes]] = []
        base = self.git_dir / text_prefix
        stack = [(str(base), "")]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                name = rel + entry.name
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, name + "/"))
                elif not entry.name.endswith(".lock"):
                    try:
                        with open(entry.path, "rb") as f:
                            value = f.read(64).strip()
                    except OSError:
                        continue
                    loose.append((name, value))
                    if parse and len(value) == 40 and not value.startswith(b"ref:"):
                        refs[name] = value.decode()
        for name, value in sorted(loose):  # scandir's order is the file system's: sorted, the digest is stable
            digest.update(b"\0" + name.encode("utf-8", "surrogateescape") + b"\0" + value)
        return refs, digest.hexdigest()

    def execution_tips(self) -> dict[str, str]:
        return self.refs_under(EXECUTIONS_REF)

    def maintain(self) -> None:
        """Let git consolidate what a run left: one small pack per journal flush, packed refs.

        ``git gc --auto`` does nothing until git's own thresholds are passed (50 packs by default) and then
        detaches, so a run never waits for it; dulwich and git both slow down with hundreds of packs. A
        machine without the git binary simply skips it.
        """
        try:
            subprocess.run(["git", "gc", "--auto", "--quiet"], cwd=self.root, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=False)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.pack_loose_refs()

    def pack_loose_refs(self, threshold: int = LOOSE_REFS_TO_PACK) -> bool:
        """Fold the loose execution refs a run wrote into packed-refs, once there are ``threshold`` of them.

        Why: runs write loose refs (swap_refs), and every reader of the branches opens each loose file;
        packing at the end of a run costs one rewrite of packed-refs per run instead of one per flush.
        git does it (`pack-refs --all --prune`, what `git gc` runs), detached like `git gc --auto`, so a
        run never waits for it; it takes each loose ref's lock before pruning it, so a controller writing
        meanwhile loses nothing. Returns whether it started.
        """
        count = 0
        try:
            with os.scandir(self.git_dir / EXECUTION_REFS) as entries:
                for entry in entries:
                    count += 1
                    if count >= threshold:
                        break
        except (FileNotFoundError, NotADirectoryError):
            return False
        if count < threshold:
            return False
        try:
            subprocess.Popen(["git", "pack-refs", "--all", "--prune"], cwd=self.root, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError:
            return False
        return True

    def commit_all(self, paths: list[str], message: str) -> str:
        """Stage ``paths`` and commit them on the current branch (only `expegit init` does this)."""
        from dulwich import porcelain

        porcelain.add(self.repo, [str(self.root / p) for p in paths])
        identity = self.identity()
        sha = porcelain.commit(self.repo, message=message.encode(), author=identity, committer=identity)
        return sha.decode() if isinstance(sha, bytes) else str(sha)

    # --- added for the report (report_build.py) ---------------------------------------------------------
    def changed_files(self, base: str, commit: str) -> list[tuple[str, int, str]]:
        """(path, mode, blob id) of files at ``commit`` that are new or differ from ``base``.

        Compares trees top-down and skips identical subtrees, so an execution's diffstat costs what it
        added, not the size of the code it ran (a report of 10,000 executions does this 10,000 times).
        """
        store = self.repo.object_store
        changed: list[tuple[str, int, str]] = []

        def walk(old_tree: bytes | None, new_tree: bytes, prefix: str) -> None:
            if old_tree == new_tree:
                return
            old = {item.path: (item.mode, item.sha) for item in store[old_tree].items()} if old_tree else {}
            for item in store[new_tree].items():
                before = old.get(item.path)
                if before is not None and before[1] == item.sha:
                    continue
                path = prefix + item.path.decode("utf-8", "replace")
                if stat.S_ISDIR(item.mode):
                    walk(before[1] if before is not None and stat.S_ISDIR(before[0]) else None, item.sha,
                         path + "/")
                else:
                    changed.append((path, item.mode, item.sha.decode()))

        try:
            base_tree = store[base.encode()].tree if base else None
        except KeyError:
            base_tree = None
        walk(base_tree, store[commit.encode()].tree, "")
        return changed
