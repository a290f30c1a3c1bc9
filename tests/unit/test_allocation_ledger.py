"""The record of which allocations each controller holds (runaway/allocation_ledger.py), on real files."""
from __future__ import annotations

from pathlib import Path

from runaway.allocation_ledger import AllocationLedger, orphaned_profiles, parse_ledger, render_ledger


def test_render_and_parse_round_trip_and_a_torn_last_line_is_skipped():
    entries = [("cluster", "3117"), ("pbs", "12.server")]
    text = render_ledger(entries)
    assert parse_ledger(text) == entries
    assert parse_ledger(text + "cluster\t") == entries  # the writer died mid-append
    assert parse_ledger(text + "cluster") == entries


def test_a_controller_records_what_it_holds_and_removes_what_it_gave_back(tmp_path: Path):
    ledger = AllocationLedger(tmp_path, "cluster", pid=101, alive=lambda pid: True)
    ledger.add("1")
    ledger.add("2")
    other = AllocationLedger(tmp_path, "gpu", pid=101, alive=lambda pid: True)  # a second profile, same process
    other.add("9")
    assert parse_ledger((tmp_path / "101").read_text()) == [("cluster", "1"), ("cluster", "2"), ("gpu", "9")]
    ledger.remove(["1"])
    ledger.remove(["9"])  # another profile's job: not this ledger's to remove
    assert parse_ledger((tmp_path / "101").read_text()) == [("cluster", "2"), ("gpu", "9")]
    ledger.remove(["2"])
    other.remove(["9"])
    assert not (tmp_path / "101").exists()  # nothing held: no file


def test_orphans_are_the_allocations_of_controllers_that_are_gone(tmp_path: Path):
    dead, live = AllocationLedger(tmp_path, "cluster", pid=201), AllocationLedger(tmp_path, "cluster", pid=202)
    dead.add("10")
    dead.add("11")
    live.add("20")
    AllocationLedger(tmp_path, "gpu", pid=201).add("30")
    alive = {202, 300}.__contains__
    me = AllocationLedger(tmp_path, "cluster", pid=300, alive=alive)
    found = me.orphans()
    assert found == {tmp_path / "201": ["10", "11"]}  # never the live controller's, never another profile's
    assert orphaned_profiles(tmp_path, alive) == {"cluster", "gpu"}
    me.forget(tmp_path / "201", ["10", "11"])
    assert parse_ledger((tmp_path / "201").read_text()) == [("gpu", "30")]
    assert me.orphans() == {}
    assert orphaned_profiles(tmp_path, alive) == {"gpu"}


def test_a_file_left_under_this_pid_by_a_dead_controller_stays_an_orphan(tmp_path: Path):
    """pids are reused: the new controller with the same pid must not adopt (or delete) that record."""
    (tmp_path / "400").write_text(render_ledger([("cluster", "77")]))
    ledger = AllocationLedger(tmp_path, "cluster", pid=400, alive=lambda pid: pid == 400)
    ledger.add("78")
    assert parse_ledger((tmp_path / "400").read_text()) == [("cluster", "78")]
    assert list(ledger.orphans().values()) == [["77"]]
    ledger.remove(["78"])
    assert list(ledger.orphans().values()) == [["77"]]
