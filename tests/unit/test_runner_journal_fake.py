"""The runner and its JournalListener over a real git campaign, with the fake backend and its fake clock.

What a user reads with plain git (`git log executions/<id>`) is checked for each story: finished,
failed then retried, cancelled by Ctrl-C. The executions are fake (no process), the repository is not.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import gevent
import pytest

from expegit.campaign import open_campaign
from expegit.runner import RunSummary, Session, create_executions, job_for
from orchestra.execution import ExecutionSpec, parse_record
from orchestra.progress import Progress
from runaway.controller import Task
from runaway.fake import FakeBackend, FakeClock, FakeWorld
from tests.helpers import git, make_campaign

MANIFEST = """\
name: fake-journal
command: fake --exit {code} --stdout 'trained {code}' --file metrics.json '{{"loss":0.5}}' --duration {secs}
parameters:
  code: {choices: [0, 1, 3]}
  secs: {choices: [1, 5, 3600]}
outputs: [metrics.json]
objective: {metric: loss, from: metrics.json, goal: minimize}
retries: {max: RETRIES, on: [exit], backoff: 0}
"""


def _campaign(tmp_path: Path, retries: int = 0):
    make_campaign(tmp_path / "c", MANIFEST.replace("RETRIES", str(retries)), {"README": "fake campaign\n"})
    return open_campaign(tmp_path / "c")


def _create(campaign, points: list[dict]):
    head = campaign.store.head_commit()
    specs = [ExecutionSpec(commit=head, parameters=p, profile="local") for p in points]
    records, tips, order = {}, {}, []
    for record, tip in create_executions(campaign, campaign.manifest, specs):
        records[record.id], tips[record.id] = record, tip
        order.append(record.id)
    return records, tips, order


def _session(campaign, total: int) -> Session:
    return Session(campaign, campaign.manifest, slots=None,
                   progress=Progress(total, stream=io.StringIO(), live=False, quiet=True))


def _drive(campaign, world: FakeWorld, points: list[dict]) -> tuple[list[str], Session]:
    records, tips, order = _create(campaign, points)
    session = _session(campaign, len(order))
    tasks = [Task(job_for(campaign.manifest, records[i])) for i in order]
    with gevent.Timeout(20):
        session.drive("local", records, tips, tasks, backend=FakeBackend(world))
    return order, session


def _story(campaign, execution_id: str) -> list[str]:
    """The branch's commit subjects, oldest first, as `git log` shows them."""
    log = git(campaign.root, "log", "--reverse", "--format=%s", f"executions/{execution_id}").stdout
    return log.splitlines()[1:]  # the code commit comes first


def _record(campaign, execution_id: str):
    shown = git(campaign.root, "show", f"executions/{execution_id}:.orchestra/execution.yaml").stdout
    return parse_record(shown)


@pytest.fixture
def world() -> FakeWorld:
    return FakeWorld(places=1, slots=2)


def test_a_finished_execution_is_created_running_finished(tmp_path, world) -> None:
    campaign = _campaign(tmp_path)
    (eid,), session = _drive(campaign, world, [{"code": 0, "secs": 5}])
    assert _story(campaign, eid) == ["created: code=0 secs=5", "running on place1 slot 0", "finished: exit 0, objective=0.5"]
    record = _record(campaign, eid)
    assert (record.state, record.exit_code, record.objective, record.duration) == ("finished", 0, 0.5, 5.0)
    assert record.outputs == ["metrics.json"]
    shown = git(campaign.root, "show", f"executions/{eid}:metrics.json").stdout
    assert json.loads(shown) == {"loss": 0.5}
    assert git(campaign.root, "show", f"executions/{eid}:.orchestra/stdout").stdout == "trained 0"
    assert session.summary.finished == 1 and session.summary.failed == 0
    assert world.listing() == []  # the run directory went once its results were committed


def test_each_failed_attempt_gets_its_commit_then_the_last_failure_stands(tmp_path) -> None:
    world = FakeWorld(places=1, slots=1)
    campaign = _campaign(tmp_path, retries=1)
    (eid,), session = _drive(campaign, world, [{"code": 3, "secs": 1}])
    assert _story(campaign, eid) == [
        "created: code=3 secs=1",
        "running on place1 slot 0",
        "failed: exit 3; retrying (attempt 2)",
        "running on place1 slot 0 (attempt 2)",
        "failed: exit 3",
    ]
    record = _record(campaign, eid)
    assert (record.state, record.attempt, record.exit_code) == ("failed", 2, 3)
    assert session.summary.failed == 1 and [launch[2] for launch in world.launches] == [1, 2]


def test_a_timeout_is_journalled_as_such(tmp_path, world) -> None:
    campaign = _campaign(tmp_path)
    import dataclasses

    campaign_manifest = dataclasses.replace(campaign.manifest, timeout=60.0)
    records, tips, order = _create(campaign, [{"code": 0, "secs": 3600}])
    session = Session(campaign, campaign_manifest, slots=None,
                      progress=Progress(1, stream=io.StringIO(), live=False, quiet=True))
    tasks = [Task(job_for(campaign_manifest, records[order[0]]))]
    with gevent.Timeout(20):
        session.drive("local", records, tips, tasks, backend=FakeBackend(world))
    assert _story(campaign, order[0])[-1] == "failed: timed out after 60s"


def test_ctrl_c_cancels_what_runs_and_leaves_the_rest_created(tmp_path) -> None:
    world = FakeWorld(places=1, slots=1, clock=FakeClock(auto=False))  # time stands still: it runs until Ctrl-C
    campaign = _campaign(tmp_path)
    points = [{"code": 0, "secs": 3600}, {"code": 0, "secs": 1}]
    records, tips, order = _create(campaign, points)
    session = _session(campaign, len(order))
    tasks = [Task(job_for(campaign.manifest, records[i])) for i in order]
    driver = gevent.spawn(session.drive, "local", records, tips, tasks, backend=FakeBackend(world))
    with gevent.Timeout(10):
        while not world.launches:
            gevent.sleep(0.001)
        session._interrupt()  # what the SIGINT handler of Session.run calls
        driver.get()
    running, waiting = order
    assert _story(campaign, running) == ["created: code=0 secs=3600", "running on place1 slot 0",
                                         "cancelled: stopped by the user"]
    assert _story(campaign, waiting) == ["created: code=0 secs=1"]  # resume runs it
    assert session.summary.cancelled == 1 and session.summary.interrupted
    assert [launch[0] for launch in world.launches] == [running]


def test_results_of_concurrent_executions_land_on_their_own_branches(tmp_path) -> None:
    world = FakeWorld(places=2, slots=2)
    campaign = _campaign(tmp_path)
    points = [{"code": c, "secs": s} for c in (0, 1) for s in (1, 5)] * 3
    order, session = _drive(campaign, world, points)
    for eid in order:
        record = _record(campaign, eid)
        code = records_code = int(record.parameters["code"])
        assert record.state == ("finished" if code == 0 else "failed") and record.exit_code == records_code
        assert git(campaign.root, "show", f"executions/{eid}:.orchestra/stdout").stdout == f"trained {code}"
    assert session.summary.finished == 6 and session.summary.failed == 6
    assert git(campaign.root, "fsck", "--strict").returncode == 0


def _drive_with_delay(campaign, world: FakeWorld, point: dict, delay: float, advance: bool) -> str:
    records, tips, order = _create(campaign, [point])
    session = _session(campaign, 1)
    backend = FakeBackend(world)
    backend.running_commit_delay = delay  # as the local backend's: short runs skip their "running" commit
    tasks = [Task(job_for(campaign.manifest, records[order[0]]))]
    driver = gevent.spawn(session.drive, "local", records, tips, tasks, backend=backend)
    with gevent.Timeout(20):
        if advance:  # a long run: its "running" commit comes after the delay, while it still runs
            while len(_story(campaign, order[0])) < 2:
                gevent.sleep(0.05)
            world.clock.advance(point["secs"])
        driver.get()
    return order[0]


def test_a_run_shorter_than_the_running_commit_delay_goes_from_created_to_finished(tmp_path, world) -> None:
    campaign = _campaign(tmp_path)
    eid = _drive_with_delay(campaign, world, {"code": 0, "secs": 1}, delay=30.0, advance=False)
    assert _story(campaign, eid) == ["created: code=0 secs=1", "finished: exit 0, objective=0.5"]


def test_a_run_longer_than_the_running_commit_delay_gets_its_running_commit(tmp_path) -> None:
    world = FakeWorld(places=1, slots=1, clock=FakeClock(auto=False))
    campaign = _campaign(tmp_path)
    eid = _drive_with_delay(campaign, world, {"code": 0, "secs": 3600}, delay=0.05, advance=True)
    assert _story(campaign, eid) == ["created: code=0 secs=3600", "running on place1 slot 0",
                                     "finished: exit 0, objective=0.5"]


def test_a_result_is_handed_on_before_later_executions_print_their_lines(tmp_path) -> None:
    """parasearch prints its "best" line from on_result: it must come right under the execution's own
    finished line, not below the lines of executions that ended while this one's commit was written."""
    world = FakeWorld(places=1, slots=3)
    campaign = _campaign(tmp_path)
    records, tips, order = _create(campaign, [{"code": 0, "secs": 5}, {"code": 0, "secs": 5}, {"code": 0, "secs": 5}])
    stream = io.StringIO()
    misplaced: list[str] = []
    handed: dict[str, str] = {}

    def on_result(record, tip) -> None:
        handed[record.id] = tip
        finished = [line for line in stream.getvalue().splitlines() if line.startswith("finished")]
        if not finished or record.id not in finished[-1]:
            misplaced.append(record.id)

    session = Session(campaign, campaign.manifest, slots=None, on_result=on_result,
                      progress=Progress(len(order), stream=stream, live=False, quiet=False))
    tasks = [Task(job_for(campaign.manifest, records[i])) for i in order]
    with gevent.Timeout(20):
        session.drive("local", records, tips, tasks, backend=FakeBackend(world))
    assert session.summary.finished == 3
    assert misplaced == [], stream.getvalue()
    # Each is handed with its final commit, the one its branch ends on once written.
    assert len(handed) == 3 and handed == {i: campaign.store.execution_tip(i) for i in order}
