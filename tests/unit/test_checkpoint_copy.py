"""Checkpoint copies between a place without a shared filesystem and the controller
(runaway/checkpoint_copy.py): the remote commands' text, the restore rule, the bounded tar stream, and
the copies through a real shell and real tar on this machine (LocalTransport: the same Transport calls an
SSH host gets). The controller's schedule of copies is checked on the fake backend's virtual clock."""
from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestra.checkpoint import CheckpointPolicy, parse_checkpoint
from orchestra.manifest import RetryPolicy
from runaway.backend import Job
from runaway.checkpoint_copy import (CheckpointCopies, CheckpointCopyError, needs_restore, render_pack,
                                     render_unpack, tar_chunks)
from runaway.checkpoints import checkpoint_dir, prepare_local
from runaway.controller import Task
from runaway.fake import FakeWorld, render_script
from runaway.hosts import RemoteCommandError, Result
from runaway.transports.local import LocalTransport

from .test_controller_fake import COMMIT
from .test_walltime import clocked, make, run  # noqa: F401  (clocked is a fixture)


def _state(directory: Path, step: int, mtime: float) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "state.json"
    path.write_text(f'{{"step": {step}}}')
    os.utime(path, (mtime, mtime))


# ---------------------------------------------------------------------------------------- pure parts
def test_the_remote_commands_quote_the_directory() -> None:
    assert render_pack("/w/a b/checkpoints/x") == "cd '/w/a b/checkpoints/x' 2>/dev/null || exit 0; exec tar -cf - ."
    unpack = render_unpack("/w/$(rm -rf ~)/x")
    assert unpack.startswith("d='/w/$(rm -rf ~)/x'; ")  # never evaluated
    assert "tar -xf - -C \"$t\"" in unpack and unpack.index("tar -xf") < unpack.index("mv \"$t\" \"$d\"")


def test_the_copy_is_restored_only_where_the_place_has_none_or_an_older_one() -> None:
    assert needs_restore(None, 100.0)
    assert needs_restore(99.0, 100.0)
    assert not needs_restore(100.0, 100.0)  # the place already has what the controller has
    assert not needs_restore(101.0, 100.0)  # the place is ahead (the same host as the last attempt)
    assert not needs_restore(None, None) and not needs_restore(5.0, None)  # nothing copied yet


def test_every_accepts_seconds_for_short_schedules() -> None:
    policy, problems = parse_checkpoint({"every": "3s"})
    assert problems == [] and policy == CheckpointPolicy(every=3.0)
    assert parse_checkpoint({"every": 2})[0] == CheckpointPolicy(every=2.0)


def test_the_tar_stream_is_bounded_by_its_chunk_and_reads_back_whole(tmp_path: Path) -> None:
    source = tmp_path / "ck"
    (source / "sub").mkdir(parents=True)
    big = os.urandom(300_000)
    (source / "sub" / "model.bin").write_bytes(big)
    (source / "state.json").write_text("{}")
    (source / "latest").symlink_to("sub/model.bin")
    os.utime(source / "state.json", (1_700_000_000, 1_700_000_000))
    chunks = list(tar_chunks(source, chunk=65536))
    assert max(len(c) for c in chunks) <= 65536  # never a whole file in memory
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks)), mode="r|") as tar:
        members = {m.name: (m, tar.extractfile(m).read() if m.isfile() else None) for m in tar}
    assert members["sub/model.bin"][1] == big
    assert members["latest"][0].issym() and members["latest"][0].linkname == "sub/model.bin"
    assert members["state.json"][0].mtime == 1_700_000_000


# --------------------------------------------------------------------- copies through a real shell and tar
@pytest.fixture
def place(tmp_path: Path) -> tuple[LocalTransport, str, CheckpointCopies]:
    return LocalTransport(), checkpoint_dir(str(tmp_path / "place"), "e1"), CheckpointCopies(tmp_path / "store")


def test_a_copy_comes_back_whole_with_its_times_and_goes_to_another_place(place, tmp_path: Path) -> None:
    transport, remote, copies = place
    assert copies.pull(transport, remote, "e1") is None and copies.newest("e1") is None  # nothing there yet
    _state(Path(remote), 7, 1_700_000_100)
    assert copies.pull(transport, remote, "e1") == 1_700_000_100
    local = copies.local("e1")
    assert local == tmp_path / "store" / "checkpoints" / "e1"
    assert (local / "state.json").read_text() == '{"step": 7}'
    other = checkpoint_dir(str(tmp_path / "other"), "e1")
    assert copies.restore(transport, other, "e1", None) == 1_700_000_100
    assert (Path(other) / "state.json").read_text() == '{"step": 7}'
    assert prepare_local(Path(other)) == 1_700_000_100  # what the next attempt's journal names
    assert sorted(p.name for p in Path(other).parent.iterdir()) == ["e1"]  # no temporary left beside it
    # A place that is as new (the host of the last attempt) is left alone.
    (Path(other) / "state.json").write_text("mine")
    os.utime(Path(other) / "state.json", (1_700_000_100, 1_700_000_100))
    assert copies.restore(transport, other, "e1", 1_700_000_100) == 1_700_000_100
    assert (Path(other) / "state.json").read_text() == "mine"
    copies.drop("e1")
    assert not local.exists() and copies.newest("e1") is None


def test_a_newer_copy_replaces_an_older_one_and_files_gone_there_go_here(place) -> None:
    transport, remote, copies = place
    _state(Path(remote), 1, 1_700_000_000)
    (Path(remote) / "old.bin").write_bytes(b"x")
    copies.pull(transport, remote, "e1")
    (Path(remote) / "old.bin").unlink()
    _state(Path(remote), 2, 1_700_000_050)
    assert copies.pull(transport, remote, "e1") == 1_700_000_050
    assert sorted(p.name for p in copies.local("e1").iterdir()) == ["state.json"]
    assert sorted(p.name for p in copies.local("e1").parent.iterdir()) == ["e1", "e1.copied"]


class _CutStream(LocalTransport):
    """A place whose tar stream breaks after its first bytes (a dropped link, tar failing mid-way)."""

    def get_stream(self, remote_cmd: str, timeout: float | None = None) -> Iterator[bytes]:
        data = b"".join(super().get_stream(remote_cmd, timeout))
        yield data[:700]
        raise RemoteCommandError("place", Result(remote_cmd, 1, "", "tar: state.json: file changed as we read it"))


def test_a_cut_copy_back_keeps_the_last_whole_copy_and_leaves_nothing_half(place) -> None:
    transport, remote, copies = place
    _state(Path(remote), 3, 1_700_000_000)
    (Path(remote) / "weights.bin").write_bytes(os.urandom(20_000))
    before = copies.pull(transport, remote, "e1")
    _state(Path(remote), 4, 1_700_000_060)
    with pytest.raises(CheckpointCopyError, match="the last copy is kept"):
        copies.pull(_CutStream(), remote, "e1")
    assert (copies.local("e1") / "state.json").read_text() == '{"step": 3}'
    assert copies.newest("e1") == before and (copies.local("e1") / "weights.bin").stat().st_size == 20_000
    assert sorted(p.name for p in copies.local("e1").parent.iterdir()) == ["e1", "e1.copied"]


def test_a_cut_restore_leaves_the_places_directory_as_it_was(place, tmp_path: Path) -> None:
    transport, _remote, _copies = place
    target = tmp_path / "there" / "checkpoints" / "e1"
    _state(target, 1, 1_700_000_000)
    source = tmp_path / "src"
    _state(source, 9, 1_700_000_900)
    (source / "big.bin").write_bytes(os.urandom(50_000))
    cut = b"".join(tar_chunks(source))[:20_000]
    result = transport.run(render_unpack(str(target)), stdin=cut, warn=True)
    assert not result.ok
    assert (target / "state.json").read_text() == '{"step": 1}'
    assert sorted(p.name for p in target.parent.iterdir()) == ["e1"]
    whole = transport.run(render_unpack(str(target)), stdin=b"".join(tar_chunks(source)), warn=True)
    assert whole.ok and (target / "state.json").read_text() == '{"step": 9}'


def test_a_crash_between_the_two_renames_still_finds_the_previous_copy(place) -> None:
    transport, remote, copies = place
    _state(Path(remote), 5, 1_700_000_500)
    copies.pull(transport, remote, "e1")
    local = copies.local("e1")
    local.rename(local.with_name("e1.old"))  # what _swap leaves if the process dies between its renames
    assert copies.newest("e1") == 1_700_000_500
    assert copies.restore(transport, checkpoint_dir(str(Path(remote).parent.parent / "b"), "e1"), "e1", None)


# ---------------------------------------------------------------------- the controller's schedule (fake)
RETRY = RetryPolicy(max=3, on=("walltime", "node-failure"), backoff=0)


def test_copies_are_asked_every_period_while_it_runs_and_between_attempts(tmp_path, clocked) -> None:  # noqa: F811
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RETRY)
    start = world.clock.time()
    policy = CheckpointPolicy(grace=10.0, every=20.0)
    long = Job("0000000000c1", COMMIT, render_script(duration=100, checkpoint=True), checkpoint=policy)
    run(controller, [Task(long)])
    backend = controller.backend
    asked = [round(t - start) for eid, t in backend.saved_checkpoints if eid == long.execution_id]  # type: ignore[attr-defined]
    # Attempt 1 runs 0..45 (warned at 45): copies at 20 and 40, then one as it stops, before re-placing.
    # Attempt 2 runs 45..90 likewise; attempt 3 finishes at 100: no copy after a success.
    assert asked == [20, 40, 45, 65, 85, 90], asked
    assert recorder.results[long.execution_id].failure is None


def test_without_every_a_copy_is_asked_only_between_attempts(tmp_path, clocked) -> None:  # noqa: F811
    world = FakeWorld(places=1, slots=1, allocation=True, walltime=60)
    recorder, controller = make(world, tmp_path, clocked, RETRY)
    long = Job("0000000000c2", COMMIT, render_script(duration=70, checkpoint=True), checkpoint=CheckpointPolicy(grace=10.0))
    plain = Job("0000000000c3", COMMIT, render_script(duration=5))
    run(controller, [Task(long), Task(plain)])
    ids = [eid for eid, _t in controller.backend.saved_checkpoints]  # type: ignore[attr-defined]
    assert ids == [long.execution_id]  # once, after the warned attempt; never for one that does not checkpoint


# ------------------------------------------------------------------------------- the profile's `shared`
def test_shared_defaults_to_what_each_kind_of_place_is_and_bad_values_are_located(tmp_path: Path) -> None:
    from orchestra.errors import ProfileError
    from runaway.profiles import build_profile, resolve_profile

    assert build_profile("h", {"kind": "ssh", "host": "a"}).shared is False  # hosts have their own disks
    assert build_profile("h", {"kind": "ssh", "hosts": ["a", "b"], "shared": True}).shared is True
    assert build_profile("c", {"kind": "slurm", "host": "f"}).shared is True  # a cluster's shared workdir
    assert build_profile("c", {"kind": "oar", "host": "f"}).shared is True
    assert build_profile("c", {"kind": "slurm", "host": "f", "shared": False}).shared is False
    (tmp_path / "h.yaml").write_text("kind: ssh\nhost: a\nshared: yes please\n")
    with pytest.raises(ProfileError) as bad:
        resolve_profile("h", {}, tmp_path)
    assert f"{tmp_path / 'h.yaml'}:3:9: profile 'h': shared: 'yes please' is not of type 'boolean'" in str(bad.value)
    (tmp_path / "l.yaml").write_text("kind: local\nshared: true\n")
    with pytest.raises(ProfileError, match=r"l.yaml:2:1: profile 'l': unknown key 'shared' for kind local"):
        resolve_profile("l", {}, tmp_path)


# ------------------------------------------------------------------ when the last copy was taken (status)
def test_the_copy_stamp_round_trips_and_status_says_how_old_the_copy_is(place, tmp_path: Path) -> None:
    import datetime
    import subprocess

    from orchestra.execution import ExecutionRecord
    from expegit.gitstore import GitStore
    from expegit.running import running_lines
    from runaway.checkpoint_copy import CopyStamp, parse_stamp, read_stamp, render_stamp

    stamp = CopyStamp(1_700_000_000.5, 1_699_999_990.0, "devcluster")
    assert parse_stamp(render_stamp(stamp)) == stamp
    assert parse_stamp(render_stamp(CopyStamp(1.0, None, "h"))) == CopyStamp(1.0, None, "h")
    assert parse_stamp("") is None and parse_stamp("{}") is None and parse_stamp("[1]") is None
    transport, remote, _ = place
    repo = tmp_path / "campaign"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    store = GitStore(repo)
    copies = CheckpointCopies(store.git_dir / "orchestra")  # where a campaign's backend keeps them
    _state(Path(remote), 1, 1_700_000_000)
    copies.pull(transport, "/nonexistent/checkpoints/e1", "e1")
    assert read_stamp(copies.store, "e1") is None  # nothing copied: no stamp
    copies.pull(transport, remote, "e1")
    taken = read_stamp(copies.store, "e1")
    assert taken is not None and taken.newest == 1_700_000_000 and taken.host == transport.name
    record = ExecutionRecord("e1", "c", "0" * 40, "run", {}, "p", state="running", host="h", slot=0,
                             started="2026-01-01T00:00:00Z")
    now = datetime.datetime.fromtimestamp(taken.copied + 125.5, datetime.timezone.utc)
    (line,) = running_lines(store, [record], {}, now=now)
    assert line.endswith("checkpoint copied 2m05s ago"), line
    copies.drop("e1")
    assert read_stamp(copies.store, "e1") is None
    (line,) = running_lines(store, [record], {}, now=now)
    assert "checkpoint" not in line
