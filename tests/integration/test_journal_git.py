"""Execution branches written by dulwich, read by the real `git` binary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gevent
import pytest

from expegit.campaign import open_campaign
from expegit.gitstore import GitStore
from expegit.journal import Journal, JournalWriter
from expegit.records import RecordIndex
from expegit.runner import create_executions
from orchestra.errors import RepositoryError
from orchestra.execution import ExecutionRecord, ExecutionSpec, parse_record
from tests.helpers import git, make_campaign

MANIFEST = """\
name: journal
command: python3 t.py {x}
parameters:
  x: {type: int, low: 0, high: 1000}
"""


@pytest.fixture()
def campaign(tmp_path: Path):
    make_campaign(tmp_path / "c", MANIFEST, {"t.py": "print('hi')\n"})
    return open_campaign(tmp_path / "c")


def _records(campaign, n: int) -> list[tuple[ExecutionRecord, str]]:
    head = campaign.store.head_commit()
    specs = [ExecutionSpec(commit=head, parameters={"x": i}, profile="local") for i in range(n)]
    return list(create_executions(campaign, campaign.manifest, specs))


def test_first_commit_is_parented_on_the_code_commit(campaign) -> None:
    (record, tip), = _records(campaign, 1)
    head = campaign.store.head_commit()
    root = campaign.root
    assert git(root, "rev-parse", f"executions/{record.id}^").stdout.strip() == head
    assert git(root, "diff", "--name-only", head, f"executions/{record.id}").stdout.split() == [".orchestra/execution.yaml"]
    shown = git(root, "show", f"executions/{record.id}:.orchestra/execution.yaml").stdout
    assert parse_record(shown).parameters == {"x": 0}
    assert git(root, "fsck", "--strict").returncode == 0


def test_fifty_concurrent_commits_lose_nothing(campaign) -> None:
    """50 greenlets each append 3 journal entries at once through one writer; every one must land."""
    created = _records(campaign, 50)
    writer = JournalWriter(campaign.store, interval=0.01, max_pending=7)

    def drive(record: ExecutionRecord, tip: str) -> str:
        for step in range(3):
            record.attempt = step + 1
            record.state = "running" if step < 2 else "finished"
            tip, done = writer.commit(tip, record, {f"out/{record.id}-{step}.txt": f"{step}".encode()})
            gevent.sleep(0)
            done.get(timeout=30)
        return tip

    greenlets = [gevent.spawn(drive, record, tip) for record, tip in created]
    gevent.joinall(greenlets, raise_error=True)
    writer.close()
    records, tips, problems = RecordIndex(campaign.store).load()
    assert problems == {}
    assert len(records) == 50
    assert all(r.state == "finished" and r.attempt == 3 for r in records.values())
    for (record, _), greenlet in zip(created, greenlets):
        assert tips[record.id] == greenlet.value
        count = git(campaign.root, "rev-list", "--count", f"{campaign.store.head_commit()}..executions/{record.id}")
        assert count.stdout.strip() == "4"
        files = git(campaign.root, "ls-tree", "-r", "--name-only", f"executions/{record.id}", "out").stdout.split()
        assert files == [f"out/{record.id}-{s}.txt" for s in range(3)]
    assert git(campaign.root, "fsck", "--strict").returncode == 0


def test_fifty_processes_commit_into_one_repo(campaign) -> None:
    """Separate controller processes share the object store and ref namespace safely."""
    created = _records(campaign, 50)
    script = (
        "import sys\n"
        "from expegit.gitstore import GitStore\n"
        "from expegit.journal import Journal\n"
        "from orchestra.execution import parse_record\n"
        "store = GitStore(sys.argv[1])\n"
        "tip = sys.argv[3]\n"
        "record = parse_record(store.read_path(tip, '.orchestra/execution.yaml'))\n"
        "record.state = 'finished'\n"
        "Journal(store).append(tip, record, {'result.txt': sys.argv[2].encode()})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(campaign.root), record.id, tip])
             for record, tip in created]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    records, _tips, problems = RecordIndex(campaign.store).load()
    assert problems == {} and len(records) == 50
    assert all(r.state == "finished" for r in records.values())
    for record, _ in created:
        assert git(campaign.root, "show", f"executions/{record.id}:result.txt").stdout == record.id


def test_compare_and_swap_refuses_a_moved_branch(campaign) -> None:
    (record, tip), = _records(campaign, 1)
    journal = Journal(campaign.store)
    record.state = "running"
    journal.append(tip, record)
    record.state = "finished"
    with pytest.raises(RepositoryError, match="moved"):
        journal.append(tip, record)  # stale tip: someone else wrote in between


def test_refs_written_by_git_meanwhile_are_seen_despite_the_packed_refs_cache(campaign) -> None:
    """The store keeps packed-refs parsed between its own writes; git rewriting the file in between
    (pack-refs, a branch deletion, a fetch) must be seen, or a compare-and-swap would lie."""
    (first, tip1), (second, tip2) = _records(campaign, 2)
    journal = Journal(campaign.store)
    first.state = "running"
    moved = journal.append(tip1, first)  # packed-refs written (and cached) by the store
    root = campaign.store.root
    git(root, "branch", "-D", f"executions/{second.id}")  # git rewrites packed-refs
    second.state = "running"
    with pytest.raises(RepositoryError, match="moved"):
        journal.append(tip2, second)  # its branch is gone: the CAS must fail, not resurrect it
    git(root, "update-ref", f"refs/heads/executions/{first.id}", tip1, moved)  # git moves one back
    git(root, "pack-refs", "--all")
    first.state = "finished"
    with pytest.raises(RepositoryError, match="moved"):
        journal.append(moved, first)  # our cached view (tip = moved) is stale: refused
    assert journal.append(tip1, first)  # from what git left, it works
    assert git(root, "rev-parse", f"executions/{first.id}").stdout.strip() != tip1


def test_the_packed_refs_view_sees_a_rewrite_that_keeps_size_and_mtime(campaign) -> None:
    """The store bisects a mapped packed-refs between its own writes. Another writer may replace the file
    with one of the same size (a ref moved from one sha to another) within the same mtime tick: the store
    must still see the move. (It does because it holds the old file mapped, so the new file cannot get its
    inode; git replaces packed-refs by renaming its lock over it.)"""
    (first, tip1), (second, tip2) = _records(campaign, 2)
    root = campaign.store.root
    git(root, "pack-refs", "--all", "--prune")
    journal = Journal(campaign.store)
    first.state = "running"
    moved = journal.append(tip1, first)  # reads second's id absent loose, first from the mapped packed-refs
    packed = campaign.store.git_dir / "packed-refs"
    before = packed.stat()
    assert f"{tip2} refs/heads/executions/{second.id}" in packed.read_text()
    git(root, "update-ref", f"refs/heads/executions/{second.id}", moved, tip2)
    git(root, "pack-refs", "--all", "--prune")  # the same size: one 40-hex id for another
    os.utime(packed, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = packed.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert not (campaign.store.git_dir / f"refs/heads/executions/{second.id}").exists()
    second.state = "running"
    with pytest.raises(RepositoryError, match="moved"):
        journal.append(tip2, second)  # the other writer moved it: refused, not written over
    assert git(root, "rev-parse", f"executions/{second.id}").stdout.strip() == moved


_SWAP_OWN_REFS = """
import json, sys
from pathlib import Path
from expegit.gitstore import GitStore
store, tag = GitStore(Path(sys.argv[1])), sys.argv[2]
shas = ["%040x" % i for i in range(1, 5)]
names = ["refs/heads/executions/%s%02d" % (tag, k) for k in range(20)]
current = dict.fromkeys(names)
for index in range(60):
    updates = [(n, current[n], shas[index % 4]) for n in names]
    for (name, _old, new), ok in zip(updates, store.swap_refs(updates)):
        assert ok, name + ": compare-and-swap of its own ref failed"
        current[name] = new
print(json.dumps(current))
"""


def test_two_writers_of_one_campaign_lose_no_update(campaign) -> None:
    """Two processes (two controllers of one clone) move their own refs from sha to sha in turns; every
    ref must end where its writer last put it. A cached stale view of packed-refs once wrote the other
    writer's refs back."""
    writers = [subprocess.Popen([sys.executable, "-c", _SWAP_OWN_REFS, str(campaign.store.root), tag],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    # Meanwhile git packs the loose refs they write, as the end of another run does (maintain()): a CAS
    # must then find each ref's value in the new packed-refs, and a pruned loose file must not lose it.
    for _round in range(30):
        if all(writer.poll() is not None for writer in writers):
            break
        subprocess.run(["git", "pack-refs", "--all", "--prune"], cwd=campaign.store.root, capture_output=True)
    finals: dict[str, str] = {}
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        finals.update(json.loads(out))
    # Read from the files themselves: git hides refs to objects that do not exist, and these shas are made up.
    tips = {"refs/heads/executions/" + name: sha for name, sha in campaign.store.execution_tips().items()}
    assert {name: sha for name, sha in tips.items() if name in finals} == finals


def test_plain_git_push_and_log_of_execution_branches(campaign, tmp_path: Path) -> None:
    created = _records(campaign, 3)
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(campaign.root, "remote", "add", "origin", str(remote))
    git(campaign.root, "push", "-q", "origin", "main")
    git(campaign.root, "push", "-q", "origin", "refs/heads/executions/*:refs/heads/executions/*")
    remote_refs = git(remote, "for-each-ref", "--format=%(refname)", "refs/heads/executions").stdout.split()
    assert sorted(remote_refs) == sorted(f"refs/heads/executions/{r.id}" for r, _ in created)
    log = git(campaign.root, "log", "--format=%s", f"executions/{created[0][0].id}").stdout.splitlines()
    assert log[0].startswith("created: x=0")
    assert log[1] == "campaign code"


def test_record_cache_never_serves_a_stale_record(campaign) -> None:
    (record, tip), = _records(campaign, 1)
    index = RecordIndex(campaign.store)
    assert index.load()[0][record.id].state == "created"
    record.state = "finished"
    Journal(campaign.store).append(tip, record)
    assert RecordIndex(campaign.store).load()[0][record.id].state == "finished"
    # a damaged cache is rebuilt, not trusted
    index.path.write_text("{not json")
    assert RecordIndex(campaign.store).load()[0][record.id].state == "finished"


def test_packed_execution_refs_are_read_and_updated(campaign) -> None:
    """After `git pack-refs --all` (as `git gc` does) branches live in packed-refs: listing and CAS still work."""
    created = _records(campaign, 3)
    git(campaign.root, "pack-refs", "--all")
    assert not list((campaign.root / ".git" / "refs" / "heads" / "executions").glob("*"))
    assert set(campaign.store.execution_tips()) == {r.id for r, _ in created}
    record, tip = created[0]
    record.state = "finished"
    Journal(campaign.store).append(tip, record)
    assert RecordIndex(campaign.store).load()[0][record.id].state == "finished"
    assert git(campaign.root, "fsck", "--strict").returncode == 0


def test_runs_let_git_consolidate_their_packs(tmp_path: Path) -> None:
    """Each journal flush writes a small pack; past git's gc.autoPackLimit, git gc --auto merges them."""
    from tests.helpers import cli

    root = make_campaign(tmp_path / "c", MANIFEST.replace("python3 t.py {x}", "true {x}"), {"t.py": ""})
    git(root, "config", "gc.autoPackLimit", "4")
    git(root, "config", "gc.autoDetach", "false")  # finish before the command returns, for the test
    cli(root, "expegit", "run", "-p", "x=1", "-p", "x=2", "-p", "x=3", check=True)
    cli(root, "expegit", "run", "-p", "x=4", "-p", "x=5", "-p", "x=6", check=True)
    cli(root, "expegit", "run", "-p", "x=7", "-p", "x=8", "-p", "x=9", check=True)
    packs = list((root / ".git" / "objects" / "pack").glob("*.pack"))
    assert len(packs) <= 4, packs
    assert git(root, "fsck", "--strict").returncode == 0
    states = [r.state for r in RecordIndex(GitStore(root)).records()]
    assert states == ["finished"] * 9


def test_journal_writes_leave_packed_refs_alone_and_packing_later_reads_the_same(campaign, monkeypatch) -> None:
    """In a campaign whose packed-refs is past the rewrite cap (a large one: the cap is lowered to 0 here),
    branches are created and moved as loose refs (packed-refs is not rewritten per flush); once packed at
    the end of a run, git, dulwich and the store read the same tips."""
    from expegit import gitstore

    monkeypatch.setattr(gitstore, "REWRITE_MAX_BYTES", 0)
    git(campaign.root, "pack-refs", "--all", "--prune")
    packed = campaign.store.git_dir / "packed-refs"
    before = packed.stat()
    created = _records(campaign, 5)
    writer = JournalWriter(campaign.store, interval=0.01)
    for record, tip in created:
        record.state = "finished"
        writer.commit(tip, record, {"result.txt": record.id.encode()})
    writer.close()
    after = packed.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    loose = campaign.store.git_dir / "refs" / "heads" / "executions"
    assert sorted(p.name for p in loose.iterdir()) == sorted(r.id for r, _ in created)
    tips = campaign.store.execution_tips()
    assert campaign.store.pack_loose_refs(threshold=5)
    for _ in range(200):  # detached, as `git gc --auto` is: wait for it (bounded)
        if not _loose_left(loose) and not (campaign.store.git_dir / "packed-refs.lock").exists():
            break
        gevent.sleep(0.05)
    assert not _loose_left(loose)
    listed = git(campaign.root, "for-each-ref", "--format=%(refname:lstrip=3) %(objectname)",
                 "refs/heads/executions").stdout.split("\n")
    assert dict(line.split() for line in listed if line) == tips
    assert GitStore(campaign.root).execution_tips() == tips
    dulwich_refs = GitStore(campaign.root).repo.refs.as_dict(b"refs/heads/executions")
    assert {k.decode(): v.decode() for k, v in dulwich_refs.items()} == tips
    assert all(r.state == "finished" for r in RecordIndex(campaign.store).load()[0].values())
    assert git(campaign.root, "fsck", "--strict").returncode == 0


def _loose_left(directory: Path) -> list[Path]:
    return list(directory.iterdir()) if directory.is_dir() else []  # git prunes an emptied directory


def test_a_flush_cut_short_leaves_every_branch_at_a_commit_that_exists(campaign, monkeypatch) -> None:
    """A controller killed while a flush moves its refs one by one (loose refs: a campaign past the
    packed-refs rewrite cap, lowered to 0 here; a rewrite is one rename, all or nothing): objects are
    written before any ref, so each branch is at its old tip or its new one, both complete, and nothing
    else is lost."""
    from expegit import gitstore

    monkeypatch.setattr(gitstore, "REWRITE_MAX_BYTES", 0)
    created = _records(campaign, 6)
    writer = JournalWriter(campaign.store, interval=60)
    news = {}
    for record, tip in created:
        record.state = "finished"
        news[record.id] = writer.commit(tip, record, {"result.txt": record.id.encode()})[0]
    real = GitStore._swap_ref
    calls = []

    def dying(self, name, old, new):
        calls.append(name)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the process dies between two ref moves
        return real(self, name, old, new)

    monkeypatch.setattr(GitStore, "_swap_ref", dying)
    with pytest.raises(KeyboardInterrupt):
        writer.flush()
    monkeypatch.undo()
    tips = GitStore(campaign.root).execution_tips()
    olds = {r.id: tip for r, tip in created}
    assert sum(tips[i] == news[i] for i in tips) == 3 and sum(tips[i] == olds[i] for i in tips) == 3
    assert not list((campaign.store.git_dir / "refs" / "heads" / "executions").glob("*.lock"))
    assert git(campaign.root, "fsck", "--strict").returncode == 0


def test_the_event_loop_runs_while_a_flush_moves_its_refs(campaign, monkeypatch) -> None:
    """Refs are moved from a worker thread: creating a loose ref is ~1 ms of blocking syscalls here, and
    with 100,000 executions behind every finished execution's ref is one, so a flush in the event loop's
    thread stopped dispatching and result reading for that long (a tenth of a run). Here the ref swap
    blocks its OS thread (a real lock, at most 5 s) until another greenlet has run: only possible when the
    flush does not hold the event loop."""
    from gevent import monkey

    # The test session is monkey-patched (the CLI modules patch on import): a lock from the original
    # _thread module blocks the thread it is acquired in, as a slow syscall does.
    released = monkey.get_original("_thread", "allocate_lock")()
    released.acquire()
    entered: list[bool] = []  # appended to in the worker thread, polled by the greenlet (no hub needed)
    (record, tip), = _records(campaign, 1)
    writer = JournalWriter(campaign.store, interval=60)
    record.state = "finished"
    sha, done = writer.commit(tip, record, {"result.txt": b"1"})
    waited: list[bool] = []
    real = campaign.store.swap_refs

    def slow(updates, **kwargs):
        entered.append(True)
        waited.append(released.acquire(True, 5))
        return real(updates, **kwargs)

    monkeypatch.setattr(campaign.store, "swap_refs", slow)

    def other_greenlet() -> None:
        for _ in range(500):  # bounded: 5 s
            if entered:
                released.release()
                return
            gevent.sleep(0.01)

    flusher = gevent.spawn(writer.flush)
    gevent.joinall([flusher, gevent.spawn(other_greenlet)], timeout=30, raise_error=True)
    assert waited == [True], "the flush held the event loop while it moved refs"
    assert done.get(timeout=5) == sha and campaign.store.execution_tip(record.id) == sha
    monkeypatch.undo()
    writer.close()


def test_a_commit_is_read_in_this_process_before_its_flush(campaign) -> None:
    """A search told of an execution's end reads the final commit's files at once (its early-stopping
    curve): before the writer's flush only this process has it, so other readers do not see it yet."""
    (record, tip), = _records(campaign, 1)
    writer = JournalWriter(campaign.store, interval=60)
    record.state = "finished"
    sha, done = writer.commit(tip, record, {".orchestra/metrics.jsonl": b'{"loss": 0.5}\n'})
    try:
        assert not done.ready()
        assert campaign.store.read_path(sha, ".orchestra/metrics.jsonl") == b'{"loss": 0.5}\n'
        assert campaign.store.read_path(sha, "missing.txt") is None
        assert git(campaign.root, "cat-file", "-e", sha, check=False).returncode != 0  # not on disk yet
    finally:
        writer.close()
    assert git(campaign.root, "show", f"{sha}:.orchestra/metrics.jsonl").stdout == '{"loss": 0.5}\n'
