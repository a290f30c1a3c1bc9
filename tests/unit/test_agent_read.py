"""The agent's `read` request and `data` answer: a running execution's metrics (and output) streamed
through the session the controller holds, by offset, exactly once across a dropped session. The real
agent bundle runs here (fixtures of test_agent.py)."""
from __future__ import annotations

import time

import pytest

from runaway import agent
from tests.unit.test_agent import Attached, Site, site  # noqa: F401 - the fixture

WRITER = ('printf \'{"step": 1}\\n{"step": 2}\\n\' >> "$ORCHESTRA_METRICS"; '
          'i=0; while [ ! -e gate ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; '
          'printf \'{"step": 3}\\n\' >> "$ORCHESTRA_METRICS"; echo done')


def test_read_and_data_round_trip() -> None:
    line = agent.render_request("read", "abc", name="metrics.jsonl", offset=42, run_dir="/w/runs/abc")
    assert agent.parse_request(line) == ("read", "abc", {"name": "metrics.jsonl", "offset": 42,
                                                         "run_dir": "/w/runs/abc"})
    header = agent.render_event("data", "abc", name="stdout", offset=7, size=3)
    assert agent.parse_event(header) == ("data", "abc", {"name": "stdout", "offset": 7, "size": 3})
    with pytest.raises(ValueError):
        agent.render_request("read", "abc", name="exit_code", offset=0, run_dir="/w/runs/abc")
    for bad in ("read abc pid 0 " + agent.b64json("/w/runs/abc"), "read abc stdout -1 " + agent.b64json("x")):
        with pytest.raises(ValueError):
            agent.parse_request(bad)
    with pytest.raises(ValueError):
        agent.parse_event("data abc stdout 0 %d" % (agent.MAX_READ + 1))


def _read(link: Attached, site: Site, execution_id: str, offset: int, name: str = "metrics.jsonl",
          run_dir: str | None = None) -> bytes:
    link.send(agent.render_request("read", execution_id, name=name, offset=offset,
                                   run_dir=run_dir or str(site.run_dir(execution_id))))
    deadline = time.monotonic() + 10
    while True:
        kind, got, fields = link.event(within=max(0.05, deadline - time.monotonic()))
        assert kind != "error", fields
        if kind == "data":
            while len(link.buffer) < fields["size"]:
                link._fill(deadline)
            payload, link.buffer = link.buffer[:fields["size"]], link.buffer[fields["size"]:]
            assert (got, fields["name"], fields["offset"]) == (execution_id, name, offset)
            return payload
        link.skipped.append((kind, got, fields))


def test_metrics_stream_by_offset_across_a_dropped_session(site: Site) -> None:
    link = site.attach()
    link.send(site.launch("m", WRITER))
    link.until("started", "m")
    first = b""
    for _ in range(200):  # bounded: until the execution wrote its first two lines
        first = _read(link, site, "m", 0)
        if first.count(b"\n") == 2:
            break
        time.sleep(0.05)
    assert first == b'{"step": 1}\n{"step": 2}\n'
    assert _read(link, site, "m", len(first)) == b""  # nothing new: an empty answer, no error
    link.close()  # the session drops; the execution and the daemon do not
    (site.run_dir("m") / "gate").touch()
    again = site.attach()
    rest = b""
    for _ in range(200):
        rest = _read(again, site, "m", len(first))
        if rest:
            break
        time.sleep(0.05)
    assert rest == b'{"step": 3}\n'  # from the acknowledged offset: no line twice, none lost
    out = b""
    for _ in range(200):  # live output comes the same way
        out = _read(again, site, "m", 0, name="stdout")
        if out:
            break
        time.sleep(0.05)
    assert out == b"done\n"


def test_reads_outside_a_run_directory_or_through_a_symlink_answer_nothing(site: Site, tmp_path) -> None:
    link = site.attach()
    secret = tmp_path / "secret"
    secret.write_text("not yours\n")
    assert _read(link, site, "x", 0, run_dir=str(tmp_path)) == b""  # not <root>/runs/<id>
    meta = site.run_dir("s") / ".orchestra"
    meta.mkdir(parents=True)
    (meta / "metrics.jsonl").symlink_to(secret)
    assert _read(link, site, "s", 0) == b""  # never followed
    link.sync()  # and the agent still answers
