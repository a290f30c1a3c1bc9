"""The per-node agent's line protocol (runaway/agent.py) and its request loop, run locally."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runaway.agent import (Agent, Event, Request, parse_event, parse_request, render_event, render_request,
                           split_lines)
from runaway.rundir import MARKER, WRAPPER

HOSTILE = "echo 'a b' \"$HOME\" `id` $(x); rm -rf / \n second line \u00e9"


def test_launch_request_round_trips_hostile_text():
    request = Request("launch", "0123456789ab", "/w/runs/0123456789ab dir\n", HOSTILE, {"A": "x y", "B": "\n"})
    line = render_request(request)
    assert "\n" not in line and line.startswith("launch 0123456789ab ")
    assert parse_request(line) == request


@pytest.mark.parametrize("request_", [Request("kill", "abc", signal=15), Request("exit")])
def test_other_requests_round_trip(request_):
    assert parse_request(render_request(request_)) == request_


@pytest.mark.parametrize("event", [Event("ready", value=42), Event("started", "abc", 1234),
                                   Event("exited", "abc", -9), Event("error", "abc", message="no such dir\nx")])
def test_events_round_trip(event):
    assert parse_event(render_event(event)) == event


@pytest.mark.parametrize("line", ["launch", "launch a b c", "launch ../x AAAA AAAA AAAA", "kill abc TERM",
                                  "launch abc !!! AAAA AAAA", "rm -rf /", ""])
def test_bad_requests_are_refused(line):
    with pytest.raises(ValueError):
        parse_request(line)


def test_ids_cannot_smuggle_a_second_line():
    with pytest.raises(ValueError):
        render_request(Request("kill", "abc\nexit", signal=9))


def test_split_lines_keeps_partial_tail():
    assert split_lines(b"one\ntwo\nthr") == (["one", "two"], b"thr")
    assert split_lines(b"partial") == ([], b"partial")


def test_agent_launches_and_reports(tmp_path: Path):
    agent_dir = tmp_path / "agent"
    agent_dir.mkdir()
    run = tmp_path / "run"
    (run / ".orchestra").mkdir(parents=True)
    agent = Agent(str(agent_dir), WRAPPER, MARKER, interval=0.01)
    with open(agent_dir / "requests", "w") as handle:
        handle.write(render_request(Request("launch", "e1", str(run), 'echo "$X" > out.txt; exit 3', {"X": "hi"})) + "\n")
        handle.write("garbage line\n")
        handle.write(render_request(Request("launch", "e2", str(tmp_path / "missing"), "true", {})))  # no newline yet
    for line in agent.read_requests():
        try:
            request = parse_request(line)
        except ValueError:
            continue
        agent.launch(request)
    deadline = time.time() + 10
    while agent.children and time.time() < deadline:
        agent.reap()
        time.sleep(0.01)
    events = [parse_event(line) for line in (agent_dir / "events").read_text().splitlines()]
    assert [e.kind for e in events] == ["started", "exited"] and events[1].value == 3
    assert (run / "out.txt").read_text() == "hi\n"
    assert (run / ".orchestra" / "exit_code").read_text().strip() == "3"
    assert int((run / ".orchestra" / "pid").read_text()) == events[0].value
    with open(agent_dir / "requests", "a") as handle:
        handle.write("\n")  # completes the e2 line: it is read only now
    (request_line,) = agent.read_requests()
    agent.launch(parse_request(request_line))  # its run dir is missing: reported, not raised
    last = parse_event((agent_dir / "events").read_text().splitlines()[-1])
    assert last.kind == "error" and last.execution_id == "e2"
    assert os.path.isdir(agent_dir)
