"""The record cache against real git: it follows every way a branch moves, and never misreads a cache.

Each test lists once (building the cache), moves branches the way a user meets it (a journal commit, a
fetch from a collaborator, an administrator's rewrite with plain git, a deletion), and lists again.
"""
from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from expegit.campaign import open_campaign
from expegit.gitstore import BULK_READ_MIN
from expegit.journal import Journal
from expegit.listing import select_entries, status_text, write_entries, write_list
from expegit.records import CACHE_NAME, RecordIndex
from expegit.runner import create_executions
from orchestra.execution import RECORD_PATH, ExecutionSpec, parse_record, render_record
from tests.helpers import cli, git, make_campaign

MANIFEST = """\
name: cache
command: python3 t.py {x} {label}
parameters:
  x: {type: int, low: 0, high: 1000}
  label: {choices: [a, "b c"]}
objective: {metric: loss, from: metrics.json}
"""
N = BULK_READ_MIN + 4  # enough branches that a rebuild goes through `git cat-file --batch`


def _finished(campaign, n: int = N) -> dict[str, str]:
    """n finished executions; returns tips by id."""
    head = campaign.store.head_commit()
    specs = [ExecutionSpec(commit=head, parameters={"x": i, "label": "a" if i % 2 else "b c"}, profile="local")
             for i in range(n)]
    journal = Journal(campaign.store)
    tips = {}
    for i, (record, tip) in enumerate(create_executions(campaign, campaign.manifest, specs)):
        record.state, record.objective, record.duration = "finished", i / 10, 1.0 + i
        tips[record.id] = journal.append(tip, record, {"metrics.json": json.dumps({"loss": i / 10}).encode()})
    return tips


@pytest.fixture()
def campaign(tmp_path: Path):
    make_campaign(tmp_path / "c", MANIFEST, {"t.py": "print('hi')\n"})
    c = open_campaign(tmp_path / "c")
    _finished(c)
    return c


def _states(campaign) -> dict[str, str]:
    return {e.id: e.state for e in RecordIndex(campaign.store).entries()}


def _commit_record(root: Path, parent: str, record_text: str) -> str:
    """A commit made with plain git whose tree is the parent's with the record replaced."""
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=root, input=record_text, text=True,
                          capture_output=True, check=True).stdout.strip()
    git(root, "read-tree", parent)
    git(root, "update-index", "--add", "--cacheinfo", f"100644,{blob},{RECORD_PATH}")
    tree = git(root, "write-tree").stdout.strip()
    git(root, "read-tree", "HEAD")
    return git(root, "commit-tree", tree, "-p", parent, "-m", "rewritten").stdout.strip()


def test_a_new_journal_commit_is_seen(campaign) -> None:
    before = _states(campaign)
    assert set(before.values()) == {"finished"} and (campaign.store.git_dir / "orchestra" / CACHE_NAME).exists()
    victim = sorted(before)[0]
    tip = campaign.store.execution_tips()[victim]
    record = RecordIndex(campaign.store).record_at(tip)
    record.state = "failed"
    Journal(campaign.store).append(tip, record)
    assert _states(campaign)[victim] == "failed"
    assert sum(1 for s in _states(campaign).values() if s == "failed") == 1
    assert f"{N - 1} finished, 1 failed" in status_text(campaign)
    record.state = "running"
    Journal(campaign.store).append(campaign.store.execution_tips()[victim], record)
    assert f"running {victim}" in status_text(campaign)  # the summary line follows the move too


def test_a_fetch_into_a_clone_is_seen(campaign, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(campaign.root), str(clone))
    git(clone, "fetch", "-q", "origin", "+refs/heads/executions/*:refs/heads/executions/*")
    mine = open_campaign(clone)
    assert len(_states(mine)) == N  # built from scratch, in bulk, as after a clone
    assert [r.to_dict() for r in RecordIndex(mine.store).records()] == \
        [r.to_dict() for r in RecordIndex(campaign.store).records()]
    _finished(campaign, 2)  # a collaborator adds two, and changes one
    victim = sorted(_states(campaign))[3]
    tip = campaign.store.execution_tips()[victim]
    record = RecordIndex(campaign.store).record_at(tip)
    record.state = "cancelled"
    Journal(campaign.store).append(tip, record)
    git(clone, "fetch", "-q", "origin", "+refs/heads/executions/*:refs/heads/executions/*")
    states = _states(open_campaign(clone))
    assert len(states) == N + 2 and states[victim] == "cancelled"


def test_an_administrators_rewrite_and_deletion_are_seen(campaign) -> None:
    ids = sorted(_states(campaign))
    tip = campaign.store.execution_tips()[ids[0]]
    record = RecordIndex(campaign.store).record_at(tip)
    record.objective = 42.0
    parent = campaign.store.parents(tip)[0]
    rewritten = _commit_record(campaign.root, parent, render_record(record))
    git(campaign.root, "update-ref", f"refs/heads/executions/{ids[0]}", rewritten)  # a loose ref over packed
    git(campaign.root, "update-ref", "-d", f"refs/heads/executions/{ids[1]}")
    git(campaign.root, "pack-refs", "--all")
    entries = {e.id: e for e in RecordIndex(campaign.store).entries()}
    assert entries[ids[0]].objective == 42.0 and entries[ids[0]].tip == rewritten
    assert ids[1] not in entries and len(entries) == N - 1


def test_an_unreadable_record_is_a_problem_named_by_list(campaign) -> None:
    ids = sorted(_states(campaign))
    tip = campaign.store.execution_tips()[ids[2]]
    broken = _commit_record(campaign.root, tip, "id: [not a record\n")
    git(campaign.root, "update-ref", f"refs/heads/executions/{ids[2]}", broken)
    for _ in range(2):  # the second time from the cache
        shown, problems = select_entries(campaign)
        assert [p.id for p in problems] == [ids[2]] and len(shown) == N - 1
        assert "1 branches with unreadable records" in status_text(campaign)
    result = cli(campaign.root, "expegit", "list")
    assert result.returncode == 0 and f"executions/{ids[2]}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("cache", [
    '{"version": 1, "records": {}}',  # version 1 (records.json's content under the new name)
    "orchestra-records\t2\t{key}\t{count}\n",  # format 2 of this branch's history
    "orchestra-records\t3\t0000000000000000\t0\t{fp}\n{}\n",  # another record schema
    "orchestra-records\t3\t{key}\t{count}\t{fp}\n{}\n",  # right header, lines lost (a truncated copy)
    "orchestra-records\t3\t{key}\t1\t{fp}\n{}\nnot\ta\tline\n",  # a damaged line
    "\x00\xff garbage",
])
def test_a_foreign_or_damaged_cache_is_rebuilt_not_misread(campaign, cache: str) -> None:
    from expegit.records import SCHEMA_KEY

    expected = [r.to_dict() for r in RecordIndex(campaign.store).records()]
    path = campaign.store.git_dir / "orchestra" / CACHE_NAME
    fingerprint = campaign.store.refs_fingerprint()
    path.write_text(cache.replace("{key}", SCHEMA_KEY).replace("{count}", str(N)).replace("{fp}", fingerprint))
    assert "20 finished" in status_text(campaign)
    assert [r.to_dict() for r in RecordIndex(campaign.store).records()] == expected
    assert path.read_text().startswith(f"orchestra-records\t3\t{SCHEMA_KEY}\t{N}\t{fingerprint}\n")


def test_a_version_1_cache_with_lies_is_not_read_and_is_removed(campaign) -> None:
    """The old records.json is keyed by tip like the new one: a lying one must not leak into the new cache."""
    (campaign.store.git_dir / "orchestra" / CACHE_NAME).unlink(missing_ok=True)
    old = campaign.store.git_dir / "orchestra" / "records.json"
    tips = campaign.store.execution_tips()
    lies = {i: [t, {"id": i, "state": "failed"}] for i, t in tips.items()}
    old.write_text(json.dumps({"version": 1, "records": lies}))
    assert set(_states(campaign).values()) == {"finished"}
    assert not old.exists()


def test_cached_output_is_what_the_records_print(campaign) -> None:
    """`list` from the cache's columns writes the very bytes the records themselves would."""
    tips = campaign.store.execution_tips()
    victim = sorted(tips)[0]
    record = RecordIndex(campaign.store).record_at(tips[victim])
    record.parameters["label"] = "tab\there\nnew line \u2028 sep \\ back"  # what escaping must carry
    record.created = None
    Journal(campaign.store).append(tips[victim], record)
    for _ in range(2):  # as built, then as read back
        records = RecordIndex(campaign.store).records()
        shown, _problems = select_entries(campaign)
        for as_json in (False, True):
            want, got = io.StringIO(), io.StringIO()
            write_list(records, want, as_json=as_json)
            write_entries(shown, got, as_json=as_json)
            assert got.getvalue() == want.getvalue()
        assert json.loads(got.getvalue())[0]["parameters"]["label"].startswith("tab\there")


def test_bulk_read_matches_dulwich(campaign) -> None:
    tips = list(campaign.store.execution_tips().values())
    head = campaign.store.head_commit()
    commits = tips + [head]  # the code commit has no record
    bulk = campaign.store.read_path_many(commits, RECORD_PATH)
    assert bulk == [campaign.store.read_path(c, RECORD_PATH) for c in commits]
    assert bulk[-1] is None and all(parse_record(b).state == "finished" for b in bulk[:-1])


def test_bulk_read_in_small_batches_keeps_order(campaign) -> None:
    """Several `git cat-file` batches, the next one running while the previous is read: order is kept."""
    commits = list(campaign.store.execution_tips().values()) + [campaign.store.head_commit()]
    commits = commits * 2  # more than BULK_READ_MIN, and repeated commits
    batches = list(campaign.store.iter_path_batches(commits, RECORD_PATH, batch=3))
    assert [len(b) for b in batches] == [3] * (len(commits) // 3) + ([len(commits) % 3] if len(commits) % 3 else [])
    assert [d for b in batches for d in b] == [campaign.store.read_path(c, RECORD_PATH) for c in commits]


def test_bulk_read_without_git_falls_back_to_dulwich(campaign, monkeypatch) -> None:
    commits = list(campaign.store.execution_tips().values())
    monkeypatch.setenv("PATH", "/nonexistent")
    assert campaign.store.read_path_many(commits, RECORD_PATH) == \
        [campaign.store.read_path(c, RECORD_PATH) for c in commits]


def test_metrics_are_read_in_bulk_and_follow_a_moved_branch(campaign) -> None:
    from expegit.metrics import MetricsIndex

    tips = campaign.store.execution_tips()
    got = MetricsIndex(campaign.store).load("metrics.json", tips)
    records = {r.id: r for r in RecordIndex(campaign.store).records()}
    assert got == {i: {"loss": records[i].objective} for i in tips}
    victim = sorted(tips)[0]
    record = records[victim]
    Journal(campaign.store).append(tips[victim], record, {"metrics.json": b'{"loss": 7, "acc": 0.5}'})
    again = MetricsIndex(campaign.store).load("metrics.json", campaign.store.execution_tips())
    assert again[victim] == {"loss": 7, "acc": 0.5} and len(again) == N


def test_list_limit_reads_the_head_and_sees_moves(campaign) -> None:
    full, _ = select_entries(campaign)
    head, problems = select_entries(campaign, limit=5)
    assert [e.id for e in head] == [e.id for e in full][:5] and problems == []
    victim = full[0]
    record = RecordIndex(campaign.store).record_at(victim.tip)
    record.state = "failed"
    Journal(campaign.store).append(victim.tip, record)
    head, _ = select_entries(campaign, limit=1)
    assert head[0].state == "failed"
    tip = campaign.store.execution_tips()[full[1].id]
    git(campaign.root, "update-ref", f"refs/heads/executions/{full[1].id}",
        _commit_record(campaign.root, tip, "not: [a record\n"))
    head, problems = select_entries(campaign, limit=2)
    assert [p.id for p in problems] == [full[1].id] and [e.id for e in head] == [full[0].id, full[2].id]
