"""Sharing a campaign: clone, push and pull the code branch and every execution branch.

Transport is the real `git` binary, not dulwich's client: git honours everything users already set up
for their remotes (``~/.ssh/config`` aliases and ProxyJump, credential helpers, ``insteadOf`` URL
rewrites, http proxies, ``GIT_SSH_COMMAND``) and speaks every URL kind (paths, file://, ssh://, scp-like,
https), and it runs the campaign's hooks (pre-push) exactly as a plain `git push` would. Local ref moves
stay with GitStore (compare-and-swap under git's own lock protocol), so a pull never races a running
campaign's journal writes unnoticed.

Why pushes never conflict: execution ids are random 48-bit values, so two people's execution branches
are disjoint, and each execution branch is only ever appended to by the controller that created it.
A pull therefore only creates branches or fast-forwards them; a local branch that diverged from the
remote's is reported by name and left alone, never overwritten.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from orchestra.errors import RepositoryError, UsageError
from orchestra.execution import is_execution_id

from . import shipped_index
from .gitstore import GitStore

# Each `git push` pays an SSH connection, the remote's advertisement of every branch it holds and a
# pre-receive hook start, and git matches each explicit refspec against every local ref: 5,000 refspecs
# in a campaign of 10,000 branches cost 89 s of CPU in git itself, where one glob refspec pushing all
# 10,000 cost 5 s (2026-12-01). So branches go by glob: all in one push, or (--batch-size) in groups by
# id prefix; explicit refspecs only for a few branches.
BATCH_SIZE: int | None = None
EXPLICIT_MAX = 200  # pending branches pushed by name, not by glob (matching costs refspecs x refs)
BULK_REFS = 1000  # branches created at once beyond which one packed-refs rewrite beats a loose file each
EXECUTIONS = "refs/heads/executions/"
Progress = Callable[[int, int], None]


# --- running git -----------------------------------------------------------------------------------------
def run_git(cwd: Path | None, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """`git args...` in ``cwd``; RepositoryError with git's own last lines when it fails."""
    try:
        result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, input=input,
                                stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise RepositoryError("the `git` program is not installed", hint="install git (apt install git)")
    if check and result.returncode != 0:
        raise RepositoryError(f"git {args[0]} failed: {_last_lines(result.stderr)}")
    return result


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "(no message)"


def is_ancestor(cwd: Path, ancestor: str, descendant: str) -> bool:
    return run_git(cwd, "merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0


def current_branch(cwd: Path) -> str | None:
    result = run_git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return result.stdout.strip() or None if result.returncode == 0 else None


def remote_names(cwd: Path) -> list[str]:
    return run_git(cwd, "remote").stdout.split()


# --- pure parsing ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PushStatus:
    """One ref line of `git push --porcelain`: ``<flag>\\t<from>:<to>\\t<summary>``."""

    flag: str
    source: str
    destination: str
    summary: str

    @property
    def rejected(self) -> bool:
        return self.flag == "!"


_PORCELAIN = re.compile(r"^([ +\-*!=])\t([^\t]*)\t(.*)$")


def parse_push_porcelain(text: str) -> list[PushStatus]:
    """The per-ref lines of `git push --porcelain` output (``To ...`` and ``Done`` lines skipped)."""
    statuses = []
    for line in text.splitlines():
        match = _PORCELAIN.match(line)
        if not match:
            continue
        flag, refs, summary = match.groups()
        source, _, destination = refs.rpartition(":")
        statuses.append(PushStatus(flag, source, destination, summary))
    return statuses


def parse_ls_remote(text: str, prefix: str = EXECUTIONS) -> dict[str, str]:
    """Ref name suffix -> object id for the refs under ``prefix`` in `git ls-remote` output."""
    refs = {}
    for line in text.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith(prefix) and len(sha) == 40:
            refs[ref[len(prefix):]] = sha
    return refs


def push_groups(pending: list[str], batch_size: int | None) -> list[tuple[list[str], int]]:
    """(refspecs of one `git push`, how many pending branches it sends) for the sorted ``pending`` ids.

    A glob refspec also names branches that are up to date on the remote: git sends nothing for those.
    With ``batch_size``, groups share an id prefix of 1 to 3 hex digits, the shortest whose groups hold
    about ``batch_size`` branches (ids are random, so groups are even).
    """
    if not pending:
        return []
    if batch_size is not None and batch_size < 1:
        raise UsageError(f"batch size {batch_size}: must be at least 1")
    if len(pending) <= EXPLICIT_MAX:
        size = batch_size or len(pending)
        return [([f"{EXECUTIONS}{i}:{EXECUTIONS}{i}" for i in chunk], len(chunk)) for chunk in batches(pending, size)]
    if batch_size is None or len(pending) <= batch_size:
        return [([f"{EXECUTIONS}*:{EXECUTIONS}*"], len(pending))]
    digits = 1 if len(pending) <= 16 * batch_size else 2 if len(pending) <= 256 * batch_size else 3
    counts: dict[str, int] = {}
    for execution_id in pending:
        counts[execution_id[:digits]] = counts.get(execution_id[:digits], 0) + 1
    return [([f"{EXECUTIONS}{prefix}*:{EXECUTIONS}{prefix}*"], n) for prefix, n in sorted(counts.items())]


def batches(items: list[str], size: int) -> list[list[str]]:
    if size < 1:
        raise UsageError(f"batch size {size}: must be at least 1")
    return [items[i:i + size] for i in range(0, len(items), size)]


def default_clone_directory(url: str) -> str:
    """What `git clone URL` would name the directory: the last path part without ``.git``."""
    tail = re.split(r"[/:]", url.rstrip("/").rstrip("\\"))[-1] or "campaign"
    return tail[:-4] if tail.endswith(".git") and len(tail) > 4 else tail


# --- clone -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class CloneResult:
    root: Path
    executions: int
    is_campaign: bool


def clone(url: str, directory: str | os.PathLike[str] | None = None) -> CloneResult:
    """`git clone`, then a local branch for every execution branch of the remote."""
    target = Path(directory if directory is not None else default_clone_directory(url)).absolute()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty", hint="give a new directory")
    # The shipped record index comes in the same fetch, and later plain `git fetch`es keep it current.
    run_git(None, "clone", "--quiet", "-c", f"remote.origin.fetch={shipped_index.fetch_refspec('origin')}",
            url, str(target))
    store = GitStore(target)
    if store.head_commit() is None:
        _checkout_code_branch(store)
    tracking = store.refs_under(b"refs/remotes/origin/executions/")
    created = _create_local(store, {i: sha for i, sha in tracking.items() if is_execution_id(i)})
    return CloneResult(target, created, (target / "orchestra.yaml").exists())


def _checkout_code_branch(store: GitStore) -> None:
    """A bare remote made with `git init --bare` may have HEAD naming a branch nobody pushed (master while
    the campaign uses main): git then checks out nothing. Pick the code branch ourselves."""
    branches = [name for name in store.refs_under(b"refs/remotes/origin/")
                if not name.startswith("executions/") and name != "HEAD"]
    for name in ("main", "master", *sorted(branches)):
        if name in branches:
            run_git(store.root, "checkout", "--quiet", "-b", name, "--track", f"origin/{name}")
            return


def _create_local(store: GitStore, tips: dict[str, str]) -> int:
    updates = [(EXECUTIONS + i, None, sha) for i, sha in sorted(tips.items())]
    if not updates:
        return 0
    results = store.swap_refs(updates, bulk=len(updates) >= BULK_REFS)
    failed = [name for (name, _old, _new), ok in zip(updates, results) if not ok]
    if failed:
        raise RepositoryError(f"{len(failed)} execution branches appeared locally meanwhile "
                              f"({', '.join(failed[:3])}); nothing was overwritten", hint="run the pull again")
    return len(updates)


# --- pull ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PullResult:
    new: int = 0
    updated: int = 0
    ahead: list[str] = dataclasses.field(default_factory=list)
    diverged: list[str] = dataclasses.field(default_factory=list)
    code: str = ""


def _require_remote(store: GitStore, remote: str) -> None:
    if remote not in remote_names(store.root):
        raise UsageError(f"no remote named {remote!r}",
                         hint=f"add it with `git remote add {remote} URL` (or clone with `expegit clone`)")


def pull(store: GitStore, remote: str = "origin") -> PullResult:
    """Fetch the remote's branches, then create or fast-forward local execution branches and the code branch.

    Raises RepositoryError naming every local execution branch that diverged from the remote's (after
    syncing all the others), and when the code branch cannot be fast-forwarded.
    """
    _require_remote(store, remote)
    run_git(store.root, "fetch", "--quiet", remote, f"+refs/heads/*:refs/remotes/{remote}/*",
            shipped_index.fetch_refspec(remote))
    theirs = store.refs_under(f"refs/remotes/{remote}/executions/".encode())
    ours = store.execution_tips()
    result = PullResult()
    updates: list[tuple[str, str | None, str]] = []
    for execution_id, tip in sorted(theirs.items()):
        if not is_execution_id(execution_id):
            continue
        mine = ours.get(execution_id)
        if mine == tip:
            continue
        if mine is None:
            updates.append((EXECUTIONS + execution_id, None, tip))
            result.new += 1
        elif is_ancestor(store.root, mine, tip):
            updates.append((EXECUTIONS + execution_id, mine, tip))
            result.updated += 1
        elif is_ancestor(store.root, tip, mine):
            result.ahead.append(execution_id)
        else:
            result.diverged.append(execution_id)
    if updates:
        # New branches in bulk (nobody here writes a branch this clone has never had); fast-forwards as
        # compare-and-swaps of loose refs, which a run writing the same branch would see.
        created = [u for u in updates if u[1] is None]
        moved_on = [u for u in updates if u[1] is not None]
        updates = created + moved_on
        moved = (store.swap_refs(created, bulk=len(created) >= BULK_REFS) if created else []) + \
            (store.swap_refs(moved_on) if moved_on else [])
        raced = [name for (name, _o, _n), ok in zip(updates, moved) if not ok]
        if raced:
            raise RepositoryError(f"{len(raced)} execution branches moved while pulling ({', '.join(raced[:3])})",
                                  hint="a campaign is running here; pull again when it has written them")
    result.code = _pull_code(store, remote)
    if result.diverged:
        shown = ", ".join(EXECUTIONS.removeprefix("refs/heads/") + i for i in result.diverged[:5])
        raise RepositoryError(
            f"{len(result.diverged)} execution branches diverged from {remote} and were left as they are: {shown}"
            f"{' ...' if len(result.diverged) > 5 else ''}",
            hint="compare with `git log --oneline --graph BRANCH " + remote + "/BRANCH`; results are never "
                 "overwritten by a pull")
    return result


def _pull_code(store: GitStore, remote: str) -> str:
    """Fast-forward the current branch to the remote's; a short description of what happened."""
    branch = current_branch(store.root)
    if branch is None or branch.startswith("executions/"):
        return "HEAD is detached: code branch not updated"
    theirs = store.ref(f"refs/remotes/{remote}/{branch}")
    mine = store.head_commit()
    if theirs is None:
        return f"{remote} has no branch {branch}"
    if mine == theirs:
        return f"{branch} up to date"
    if mine is None or is_ancestor(store.root, mine, theirs):
        merged = run_git(store.root, "merge", "--ff-only", "--quiet", f"refs/remotes/{remote}/{branch}", check=False)
        if merged.returncode != 0:
            raise RepositoryError(f"executions were pulled, but {branch} could not be fast-forwarded to "
                                  f"{remote}/{branch}: {_last_lines(merged.stderr, 2)}",
                                  hint="commit or stash your changes, then `git merge --ff-only`")
        return f"{branch} fast-forwarded to {theirs[:8]}"
    if is_ancestor(store.root, theirs, mine):
        return f"{branch} is ahead of {remote}/{branch}: `expegit push` shares it"
    raise RepositoryError(f"executions were pulled, but {branch} has diverged from {remote}/{branch}",
                          hint=f"merge or rebase it with git (`git pull --rebase {remote} {branch}`)")


# --- push ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class PushResult:
    total: int = 0            # local execution branches
    pushed: int = 0           # sent in this run
    up_to_date: int = 0       # already on the remote as they are here (skipped)
    batches: int = 0
    code: str = ""
    index: str = ""           # what happened to the shipped record index


def remote_execution_tips(store: GitStore, remote: str) -> dict[str, str]:
    """What the remote holds, as far as we know: its tracking refs (updated by every push and fetch) for
    a named remote, or a `git ls-remote` for a URL."""
    if remote in remote_names(store.root):
        return store.refs_under(f"refs/remotes/{remote}/executions/".encode())
    out = run_git(store.root, "ls-remote", "--heads", remote, "refs/heads/executions/*").stdout
    return parse_ls_remote(out)


def push_target(store: GitStore, remote: str) -> tuple[str, list[str]]:
    """(what to give `git push` for execution branches, options that keep the remote's settings).

    A named remote's push URL rather than its name. Why: pushing to a name, git updates a remote-tracking
    ref per pushed branch, and writes each as a loose file: 10,000 files for 10,000 branches, which took
    longer than the transfer itself (on this machine's ext4, 1-2 ms per file; the push of 3,000 branches to
    a local bare repository took 11.4 s by name and 6.2 s by URL). _record_pushed writes those tracking refs
    afterwards in one packed-refs edit. A remote with several push URLs (git pushes to each) or a custom
    upload of its own (``remote.<name>.vcs``) is pushed to by name, as before.
    """
    if remote not in remote_names(store.root):
        return remote, []
    urls = run_git(store.root, "remote", "get-url", "--push", "--all", remote, check=False).stdout.split("\n")
    urls = [url for url in urls if url]
    if len(urls) != 1 or run_git(store.root, "config", f"remote.{remote}.vcs", check=False).stdout.strip():
        return remote, []
    options: list[str] = []
    receive_pack = run_git(store.root, "config", f"remote.{remote}.receivepack", check=False).stdout.strip()
    if receive_pack:
        options.append(f"--receive-pack={receive_pack}")
    return urls[0], options


def _record_pushed(store: GitStore, remote: str, statuses: list[PushStatus], ours: dict[str, str],
                   theirs: dict[str, str]) -> None:
    """Move ``remote``'s tracking refs of the execution branches a push to its URL sent or found there, as
    git does when pushing to the name (push_target), in one packed-refs edit. They are a cache of what the
    remote holds: a tracking ref that moved meanwhile (a fetch) is left as the fetch set it."""
    updates: list[tuple[str, str | None, str | None]] = []
    for status in statuses:
        execution_id = status.destination.removeprefix(EXECUTIONS)
        if status.rejected or status.flag == "-" or not status.destination.startswith(EXECUTIONS):
            continue
        tip = ours.get(execution_id)
        if tip is not None and theirs.get(execution_id) != tip:
            updates.append((f"refs/remotes/{remote}/executions/{execution_id}", theirs.get(execution_id), tip))
    if updates:
        store.swap_refs(updates, bulk=True)


def _push_refspecs(store: GitStore, remote: str, refspecs: list[str], options: list[str] | None = None, *,
                   shown: str | None = None, tolerated: str | None = None) -> list[PushStatus]:
    """Run one `git push --porcelain`; RepositoryError if git failed or refused a ref.

    ``tolerated``: a destination ref whose refusal alone is not an error (the record index carried along
    with the branches): the caller reads its status.
    """
    result = run_git(store.root, "push", "--porcelain", *(options or []), remote, *refspecs, check=False)
    statuses = parse_push_porcelain(result.stdout)
    rejected = [s for s in statuses if s.rejected and s.destination != tolerated]
    refused_tolerated = any(s.rejected for s in statuses if s.destination == tolerated)
    if (result.returncode != 0 and not refused_tolerated) or rejected:
        remote_lines = [line.strip() for line in result.stderr.splitlines()
                        if line.startswith("remote:") or "orchestra:" in line or "error:" in line]
        names = ", ".join(s.destination.removeprefix("refs/heads/") + f" ({s.summary})" for s in rejected[:3])
        detail = names or _last_lines(result.stderr)
        hint = " | ".join(remote_lines[:4]) or None
        raise RepositoryError(f"git push to {shown or remote} was refused: {detail}", hint=hint)
    return statuses


def push(store: GitStore, remote: str = "origin", *, batch_size: int | None = BATCH_SIZE,
         progress: Progress | None = None) -> PushResult:
    """Push the current branch, then every execution branch the remote lacks or holds at another tip.

    Execution branches go in one `git push` of a glob refspec, as fast as `git push --mirror`, or with
    ``batch_size`` in groups of about that many (push_groups), each its own push and pack, so a dropped
    connection loses one group only. Resuming needs no state of its own: git updates the remote-tracking
    ref of every branch it pushed, so a push run again after an interruption sends only the branches whose
    tracking ref still differs. Updates are never forced: the remote refuses non-fast-forwards.

    The record index rides in the last group's push. Why: every `git push` to a campaign walks its
    history twice, on this side to find what to send (every branch the remote advertises is a place to
    stop) and on the remote for its connectivity check; at 100,000 branches a push of the index commit
    alone cost as much as 25 s. Where the remote refuses it (another index landed meanwhile) the branches
    still went, and push_index merges and pushes it alone, as before.
    """
    result = PushResult()
    branch = current_branch(store.root)
    if branch is None or branch.startswith("executions/"):
        result.code = "HEAD is detached: no code branch pushed"
    else:
        _push_refspecs(store, remote, [f"refs/heads/{branch}:refs/heads/{branch}"])
        result.code = f"{branch} pushed"
    ours = store.execution_tips()
    theirs = remote_execution_tips(store, remote)
    pending = sorted(i for i, tip in ours.items() if theirs.get(i) != tip)
    result.total = len(ours)
    result.up_to_date = len(ours) - len(pending)
    done = 0
    if progress:
        progress(done, len(pending))
    target, options = push_target(store, remote)
    groups = push_groups(pending, batch_size)
    index = _index_update(store, remote, theirs) if groups else None
    carried: PushStatus | None = None
    for number, (refspecs, count) in enumerate(groups):
        carrying = index if isinstance(index, IndexUpdate) and number == len(groups) - 1 else None
        extra = [f"{carrying.commit}:{shipped_index.INDEX_REF}"] if carrying else []
        try:
            statuses = _push_refspecs(store, target, refspecs + extra, options, shown=remote,
                                      tolerated=shipped_index.INDEX_REF if carrying else None)
        except RepositoryError as exc:
            if not carrying or shipped_index.INDEX_REF not in str(exc):
                raise
            # A pre-receive hook refuses a push whole: one that refused the index alone (its lines name the
            # index, none a branch) must not keep the branches back, as the index is a cache. Push them
            # alone; the index goes alone afterwards, or says why not.
            statuses = _push_refspecs(store, target, refspecs, options, shown=remote)
            carrying = None
        if carrying:
            carried = next((s for s in statuses if s.destination == shipped_index.INDEX_REF), None)
        if target != remote:
            _record_pushed(store, remote, statuses, ours, theirs)
        done += count
        result.pushed = done
        result.batches += 1
        if progress:
            progress(done, len(pending))
    if isinstance(index, str):  # nothing to push, and why
        result.index = index
    elif isinstance(index, IndexUpdate) and carried is not None and not carried.rejected:
        result.index = _index_pushed(store, remote, index)
    else:
        # Refused as a non-fast-forward: another index landed since ours was fetched, so fetch it first.
        result.index = push_index(store, remote, fetch_first=carried is not None)
    return result


@dataclasses.dataclass(frozen=True)
class IndexUpdate:
    """A record index commit written for a push, and the remote's index it is a child of."""

    commit: str
    parent: str | None
    rows: int


def _index_update(store: GitStore, remote: str, remote_tips: dict[str, str] | None = None) -> IndexUpdate | str:
    """The index commit to push from the local record cache, or what to say instead (nothing to push).

    ``remote_tips``: the remote's execution tips as its tracking refs say, where the caller read them
    already (push does, to choose what to send: 100,000 refs at a campaign of that size)."""
    from .records import FIELDS, RecordIndex

    if remote not in remote_names(store.root):
        return "record index not pushed (only to a named remote: `git remote add NAME URL`)"
    parent = store.ref(shipped_index.tracking_ref(remote))
    theirs: list = []
    if parent is not None:
        try:
            theirs = shipped_index.read_rows(store, parent)
        except shipped_index.IndexFormatError:
            theirs = []
        # A row of theirs whose branch we saw there at another tip is out of date: dropped. Rows of
        # branches we have not fetched yet are kept, as the remote's own index holds them.
        if remote_tips is None:
            remote_tips = store.refs_under(f"refs/remotes/{remote}/executions/".encode())
        theirs = [row for row in theirs if remote_tips.get(row[0], row[1]) == row[1]]
    lines = RecordIndex(store).lines()
    ours = shipped_index.rows_of_cache([line.split("\t", FIELDS - 1) for line in lines])
    rows = shipped_index.merged_rows(ours, theirs, {r[0] for r in ours})
    commit = shipped_index.write_index(store, rows, parent)
    if commit is None:
        return "record index up to date"
    return IndexUpdate(commit, parent, len(rows))


def _index_pushed(store: GitStore, remote: str, index: IndexUpdate) -> str:
    store.swap_refs([(shipped_index.tracking_ref(remote), index.parent, index.commit)])
    return f"record index of {index.rows} executions pushed"


def push_index(store: GitStore, remote: str, *, fetch_first: bool = False) -> str:
    """Write the record index from the local cache and push it to the remote's refs/orchestra/index.

    It is a cache: a push that cannot share it (someone pushed another index meanwhile, a server that
    refuses it) still shared every branch, and says so instead of failing. The new index is a child of the
    one last fetched from the remote, so the update is a fast-forward (no force, whatever the server's
    receive.denyNonFastForwards), and it keeps the remote's rows of executions this clone lacks.
    """
    if fetch_first:
        run_git(store.root, "fetch", "--quiet", remote, shipped_index.fetch_refspec(remote), check=False)
    for attempt in range(2):
        index = _index_update(store, remote)
        if not isinstance(index, IndexUpdate):
            return index
        pushed = run_git(store.root, "push", "--quiet", remote, f"{index.commit}:{shipped_index.INDEX_REF}",
                         check=False)
        if pushed.returncode == 0:
            return _index_pushed(store, remote, index)
        if attempt == 0:  # another index landed since we fetched ours: fetch it and merge once more
            run_git(store.root, "fetch", "--quiet", remote, shipped_index.fetch_refspec(remote), check=False)
    return f"record index not pushed ({_last_lines(pushed.stderr, 2)}); the branches were"


def print_progress(stream=None) -> Progress:
    """A progress callback: one line per batch (pushes of thousands of branches take minutes)."""
    out = stream or sys.stderr

    def report(done: int, total: int) -> None:
        if total and done:
            print(f"expegit: pushed {done}/{total} execution branches", file=out, flush=True)

    return report


# --- hooks -----------------------------------------------------------------------------------------------
def _install(repository: Path, hooks: tuple[str, ...], *, interpreter: str | None, force: bool) -> list[Path]:
    from orchestra_hooks import install as hook_install

    try:
        return hook_install.install(repository, hooks, interpreter=interpreter, force=force)
    except FileExistsError as exc:
        raise UsageError(f"{exc} exists and is not Orchestra's", hint="move it aside or pass --force")
    except ValueError as exc:
        raise UsageError(str(exc))


def install_client_hooks(store: GitStore, *, force: bool = False, interpreter: str | None = None) -> list[Path]:
    from orchestra_hooks import install as hook_install

    return _install(store.root, hook_install.CLIENT_HOOKS, interpreter=interpreter, force=force)


def install_server_hooks(repository: Path, *, report_dir: Path | None = None, force: bool = False,
                         interpreter: str | None = None) -> list[Path]:
    """pre-receive + post-receive into a shared bare repository, with the config they read.

    Sets nothing that grants a rewrite: who may rewrite results (``orchestra.rewriteUsers``) is for the
    server's administrator to set with `git config`, by hand.
    """
    from orchestra_hooks import common as hook_common
    from orchestra_hooks import install as hook_install

    repository = repository.absolute()
    bare = run_git(repository, "rev-parse", "--is-bare-repository", check=False)
    if bare.returncode != 0:
        raise RepositoryError(f"{repository} is not a git repository")
    if bare.stdout.strip() != "true":
        raise UsageError(f"{repository} is not a bare repository",
                         hint="server hooks go into the shared remote (`git init --bare`)")
    paths = _install(repository, hook_install.SERVER_HOOKS, interpreter=interpreter, force=force)
    run_git(repository, "config", "receive.advertisePushOptions", "true")
    # BARE/orchestra/ (rewrite log, report state) made now, group-shared if the repository is, so the
    # first pusher does not make it theirs alone.
    previous = os.umask(0o022)
    try:
        os.umask(previous)
        hook_common.apply_shared_umask(str(repository))
        hook_common.state_dir(str(repository))
    finally:
        os.umask(previous)
    if report_dir is not None:
        run_git(repository, "config", "orchestra.reportDir", str(report_dir.resolve()))
    return paths


def rewrite_policy_notes(repository: Path) -> list[str]:
    """What the administrator installing server hooks should know about who may rewrite results there."""
    from orchestra_hooks import common as hook_common
    from orchestra_hooks import rewrite_policy

    directory = str(repository.absolute())
    users = sorted(rewrite_policy.parse_user_list(hook_common.repository_config(directory,
                                                                                 hook_common.REWRITE_USERS_CONFIG)))
    notes = [f"results may be rewritten or deleted here by: {', '.join(users)} (with -o "
             f"{hook_common.OVERRIDE_OPTION}; logged in {rewrite_policy.log_path(directory)})" if users else
             f"nobody may rewrite or delete results here; to allow someone: `git -C {directory} config --add "
             f"{hook_common.REWRITE_USERS_CONFIG} NAME`"]
    deny = hook_common.repository_config(directory, "receive.denyNonFastForwards")
    if users and deny and hook_common.config_true(deny[-1]):
        notes.append(f"receive.denyNonFastForwards is true here (`git init --shared` sets it): git itself refuses "
                     f"rewrites, deletions aside, until `git -C {directory} config --unset "
                     f"receive.denyNonFastForwards`")
    if hook_common.repository_config(directory, hook_common.LEGACY_OVERRIDE_CONFIG):
        notes.append(f"{hook_common.LEGACY_OVERRIDE_CONFIG} is set but no longer allows anything: remove it with "
                     f"`git -C {directory} config --unset {hook_common.LEGACY_OVERRIDE_CONFIG}`")
    return notes
