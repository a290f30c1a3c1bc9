"""Run-directory recycling: why and how the agent reuses directories instead of creating new ones."""
import os
import re
import shutil

from .posix import pid_alive, write_in_place
from .protocol import META_DIR, WRAPPER_FILES

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


