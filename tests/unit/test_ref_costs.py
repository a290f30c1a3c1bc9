"""The store's choice between loose refs and one packed-refs rewrite follows what each was measured to
cost (expegit/ref_costs.py), and the journal's flushes wait longer only where a rewrite is dear."""
from __future__ import annotations

from pathlib import Path

import pytest

from expegit.journal import FLUSH_SHARE, MAX_FLUSH_INTERVAL, JournalWriter
from expegit.ref_costs import RefCosts

MB = 1024 * 1024


def test_a_rewrite_is_chosen_where_loose_refs_were_measured_dear_and_not_where_they_are_cheap() -> None:
    costs = RefCosts()
    size = int(7.6 * MB)  # packed-refs of 100,000 executions
    for _flush in range(10):
        costs.loose_took(40, 40 * 0.8e-3)  # ext4 without a journal, after a prune: 0.8 ms a file
        costs.rewrite_took(size, 12e-3)
    assert costs.loose_per_ref == pytest.approx(0.8e-3, rel=0.05)
    assert costs.rewrite_cost(size) == pytest.approx(12e-3, rel=0.05)
    assert costs.rewrite_is_cheaper(size, 40)
    for _flush in range(10):
        costs.loose_took(40, 40 * 0.06e-3)  # a journaled ext4: 0.06 ms
    assert not costs.rewrite_is_cheaper(size, 40)
    assert costs.rewrite_is_cheaper(size, 400)  # a big enough batch (new branches) still rewrites
    assert costs.rewrite_is_cheaper(80 * 1024, 3)  # a small campaign's flush does: its fixed part is one ref
    assert not costs.rewrite_is_cheaper(80 * 1024, 1)


def test_loose_refs_are_measured_again_now_and_then_while_rewrites_win() -> None:
    """Without it a filesystem that became fast again (the minutes after a prune) would never be seen."""
    from expegit.ref_costs import EXPLORE_EVERY

    costs = RefCosts(loose_per_ref=0.5e-3, rewrite_per_byte=1.5e-9)
    size = int(7.6 * MB)  # a rewrite ~12 ms, 40 loose refs ~20 ms: rewrites win, not by a lot
    chosen = []
    for _flush in range(2 * EXPLORE_EVERY + 2):
        chosen.append(costs.rewrite_is_cheaper(size, 40))
        if chosen[-1]:
            costs.rewrite_took(size, 12e-3)
        else:
            costs.loose_took(40, 40 * 0.5e-3)
    assert chosen.count(False) == 2 and chosen[EXPLORE_EVERY] is False
    assert costs.rewrite_is_cheaper(size, 40)
    costs.rewrites_since_loose = EXPLORE_EVERY
    assert costs.rewrite_is_cheaper(size, 4000)  # a batch of thousands never explores: it would cost seconds


def test_a_measurement_of_nothing_changes_nothing() -> None:
    costs = RefCosts()
    before = RefCosts()
    costs.loose_took(0, 1.0)
    costs.rewrite_took(0, 1.0)
    costs.loose_took(3, -1.0)  # a clock that stepped back
    assert (costs.loose_per_ref, costs.rewrite_per_byte) == (before.loose_per_ref, before.rewrite_per_byte)


def test_swap_refs_times_each_way_it_takes(tmp_path: Path, monkeypatch) -> None:
    from expegit import gitstore
    from expegit.gitstore import GitStore

    store = GitStore.init(tmp_path / "c")
    sha = store.write_commit(store.tree_with(None, {}), [], "root")
    names = [(f"refs/heads/executions/{i:012x}", None, sha) for i in range(10)]
    prior = RefCosts()
    assert store.swap_refs(names[:1]) == [True]  # one ref: a loose file costs less than any rewrite
    assert (store.git_dir / names[0][0]).is_file()
    assert store.swap_refs(names[1:3]) == [True] * 2  # no packed-refs yet: a new one, of nothing to copy
    assert store.ref_costs.rewrite_per_byte == prior.rewrite_per_byte  # nothing copied, nothing learned
    assert store.swap_refs(names[3:5]) == [True] * 2  # a tiny packed-refs: rewritten, and timed
    assert (store.git_dir / "packed-refs").read_text().count("refs/heads/executions/") == 4
    assert store.ref_costs.rewrite_per_byte != prior.rewrite_per_byte
    loose_before = store.ref_costs.loose_per_ref
    monkeypatch.setattr(gitstore, "REWRITE_MAX_BYTES", 10)  # too large to rewrite now: loose files
    assert store.swap_refs(names[5:]) == [True] * 5
    assert store.ref_costs.loose_per_ref != loose_before
    assert store.rewrite_cost() == 0.0  # never rewritten above the cap: nothing to pace for


def test_the_writer_waits_longer_only_where_a_rewrite_is_dear(tmp_path: Path, monkeypatch) -> None:
    from expegit.gitstore import GitStore

    store = GitStore.init(tmp_path / "c")
    writer = JournalWriter(store, interval=0.1, max_pending=64)
    try:
        monkeypatch.setattr(store, "rewrite_cost", lambda: 0.001)  # a small campaign's packed-refs
        writer._pace()
        assert (writer.wait, writer.batch) == (0.1, 64)
        monkeypatch.setattr(store, "rewrite_cost", lambda: 0.012)  # 100,000 branches
        writer._pace()
        assert writer.wait == pytest.approx(0.012 / FLUSH_SHARE) and writer.batch == round(64 * writer.wait / 0.1)
        monkeypatch.setattr(store, "rewrite_cost", lambda: 5.0)
        writer._pace()
        assert writer.wait == MAX_FLUSH_INTERVAL  # the most a result waits to be on disk
    finally:
        writer.close()
    patient = JournalWriter(store, interval=60)  # asked to flush only when told: kept
    try:
        patient._pace()
        assert patient.wait == 60
    finally:
        patient.close()
