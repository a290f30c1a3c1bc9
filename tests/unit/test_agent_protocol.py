"""The agent's pure formats (request and event lines, results entries) and its run-directory recycling.

No network: the formats are pure functions, and RunDirs works on real directories under tmp_path.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from runaway.agent import (RunDirs, check_result_path, pack_results, parse_event, parse_request,
                           parse_result_header, parse_results, remove_stale_spares, render_event, render_request,
                           render_result_header, result_files, write_in_place)
from runaway.agent_link import extract_results

HOSTILE = "a; rm -rf ~ $(id) `x` 'q' \"dq\"\n\ttab é ✓ \\"


def test_launch_round_trips_commands_and_env_byte_for_byte():
    line = render_request("launch", "0123456789ab", run_dir="/w/runs/0123456789ab", code_dir="/w/code/c0",
                          command=HOSTILE, env={"X": HOSTILE, "EMPTY": ""}, outputs=["*.json", HOSTILE],
                          slot=3, meta={"launcher_pid": "42"}, token="t0ken")
    assert "\n" not in line
    kind, execution_id, body = parse_request(line)
    assert (kind, execution_id) == ("launch", "0123456789ab")
    assert body["command"] == HOSTILE and body["env"] == {"X": HOSTILE, "EMPTY": ""}
    assert body["outputs"] == ["*.json", HOSTILE] and body["slot"] == 3
    assert body["meta"] == {"launcher_pid": "42"} and body["token"] == "t0ken"


@pytest.mark.parametrize("kind, fields", [
    ("watch", {"run_dir": "/w/runs/x1", "outputs": ["o/**"]}),
    ("kill", {"signal": 15, "grace": 2.5}),
    ("remove", {"run_dir": "/w/runs/x1"}),
])
def test_other_requests_round_trip(kind, fields):
    got_kind, execution_id, body = parse_request(render_request(kind, "x1", **fields))
    assert (got_kind, execution_id) == (kind, "x1")
    for key, value in fields.items():
        assert body[key] == value


def test_ping_and_env_round_trip():
    assert parse_request(render_request("ping", token="7")) == ("ping", "", {"token": "7"})
    assert parse_request(render_request("env", env={"PATH": "/bin", "Y": HOSTILE}))[2]["env"] == \
        {"PATH": "/bin", "Y": HOSTILE}


@pytest.mark.parametrize("line", [
    "", "launch", "launch bad\nid e30=", "launch has space e30=", "launch " + "x" * 200 + " e30=",
    "launch x1 not-base64!", "launch x1 e30=",  # {} : no run_dir
    "kill x1 TERM 5", "kill x1 15", "remove x1", "frobnicate x1 e30=", "ping", "ping a b",
    "env W10=",  # a list, not a mapping
])
def test_bad_requests_are_refused(line):
    with pytest.raises(ValueError):
        parse_request(line)


def test_render_refuses_ids_that_could_smuggle_a_second_request():
    for bad in ("a b", "a\nkill x 9 0", "", "../x"):
        with pytest.raises(ValueError):
            render_request("kill", bad, signal=9)


@pytest.mark.parametrize("kind, execution_id, fields", [
    ("hello", "", {"pid": 12}),
    ("started", "x1", {"pid": 99, "started": 1700000000.25}),
    ("exited", "x1", {"code": 3, "started": 1700000000.5, "ended": 1700000001.0, "size": 10,
                      "sha256": "0" * 64}),
    ("exited", "x1", {"code": None, "started": None, "ended": 1700000001.0, "size": 0, "sha256": "f" * 64}),
    ("gone", "x1", {}),
    ("error", "x1", {"message": HOSTILE}),
    ("pong", "", {"token": "5"}),
])
def test_events_round_trip(kind, execution_id, fields):
    got_kind, got_id, got = parse_event(render_event(kind, execution_id, **fields))
    assert (got_kind, got_id) == (kind, execution_id)
    for key, value in fields.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value)


@pytest.mark.parametrize("line", ["", "hello", "started x1 1", "exited x1 0 - 1.0 -5 " + "0" * 64,
                                  "exited x1 0 - 1.0 5 nothex", "gone", "error x1 !!", "surprise x1"])
def test_garbled_events_are_refused(line):
    with pytest.raises(ValueError):
        parse_event(line)


# ------------------------------------------------------------------------------------- results
def _tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_result_files_follow_globs_but_never_links(tmp_path):
    run = tmp_path / "run"
    outside = tmp_path / "outside"
    _tree(outside, {"secret.txt": "s"})
    _tree(run, {".orchestra/stdout": "o", ".orchestra/stderr": "e", ".orchestra/pid": "1",
                "metrics.json": "{}", "plots/a.png": "p", "plots/deep/b.png": "q", "notes.txt": "n"})
    (run / "leak.json").symlink_to(outside / "secret.txt")
    (run / "plots" / "linked").symlink_to(outside, target_is_directory=True)
    found = result_files(str(run), ["*.json", "plots", "../outside/*", "/etc/passwd", ".orchestra/*"])
    assert found == [".orchestra/stderr", ".orchestra/stdout", "metrics.json", "plots/a.png", "plots/deep/b.png"]
    assert result_files(str(run), ["plots/**/*.png"]) == [".orchestra/stderr", ".orchestra/stdout",
                                                           "plots/a.png", "plots/deep/b.png"]


def test_packed_results_parse_back_with_their_checksum(tmp_path):
    run = tmp_path / "run"
    name = "we ird é\nname.txt"
    _tree(run, {".orchestra/stdout": "hello\n", ".orchestra/stderr": "", name: "x" * 5000})
    spool, size, digest = pack_results(str(run), ["*.txt"])
    data = spool.read()
    assert len(data) == size and hashlib.sha256(data).hexdigest() == digest
    assert parse_results(data) == {".orchestra/stderr": b"", ".orchestra/stdout": b"hello\n",
                                   name: b"x" * 5000}
    dest = tmp_path / "dest"
    import io
    assert extract_results(io.BytesIO(data), dest) == sorted([".orchestra/stderr", ".orchestra/stdout", name])
    assert (dest / name).read_bytes() == b"x" * 5000


@pytest.mark.parametrize("rel", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "", "a\\..\\b", "a\0b"])
def test_results_paths_that_leave_the_directory_are_refused(rel):
    with pytest.raises(ValueError):
        check_result_path(rel)


def test_a_forged_payload_cannot_write_outside(tmp_path):
    import base64
    import io
    forged = b"f " + base64.b64encode(b"../escape") + b" 1 644\nx"
    with pytest.raises(ValueError):
        parse_results(forged)
    with pytest.raises(ValueError):
        extract_results(io.BytesIO(forged), tmp_path / "d")
    assert not (tmp_path / "escape").exists()
    # a symlink planted in the destination is replaced, not written through
    dest = tmp_path / "d2"
    dest.mkdir()
    (dest / "out.txt").symlink_to(tmp_path / "victim")
    extract_results(io.BytesIO(render_result_header("out.txt", 2, 0o644) + b"ok"), dest)
    assert not (tmp_path / "victim").exists() and (dest / "out.txt").read_text() == "ok"


def test_truncated_payloads_are_refused():
    whole = render_result_header("a.txt", 5, 0o644) + b"hello"
    for cut in (3, len(whole) - 1):
        with pytest.raises(ValueError):
            parse_results(whole[:cut])
    assert parse_result_header(render_result_header("a b.txt", 5, 0o100755))[1:] == (5, 0o755)


# ------------------------------------------------------------------------------ recycled directories
def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every entry under root (but .orchestra) with its content (or link target) and permission bits."""
    out = {}
    for base, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(base) / name
            rel = path.relative_to(root).as_posix()
            if rel.split("/")[0] == ".orchestra":
                continue
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                out[rel] = ("link:" + os.readlink(path), 0)
            elif path.is_dir():
                out[rel] = ("dir", mode)
            else:
                out[rel] = (path.read_text(), mode)
    return out


def test_a_recycled_directory_is_exactly_the_code_again(tmp_path):
    code = tmp_path / "code"
    _tree(code, {"train.py": "print(1)\n", "conf/a.yaml": "a: 1\n", "data/big.csv": "1,2\n"})
    (code / "run.sh").write_text("#!/bin/sh\n")
    (code / "run.sh").chmod(0o755)
    (code / "latest").symlink_to("train.py")
    runs = tmp_path / "runs"
    runs.mkdir()
    dirs = RunDirs(str(runs))

    meta = {"started": "1", "slot": "3"}
    first = runs / "e1"
    dirs.create(str(code), str(first), meta)
    want = _snapshot(code)
    assert _snapshot(first) == want
    # What an execution may do to its copy: add, change, chmod, delete, replace a file by a directory.
    (first / "out.txt").write_text("result")
    (first / "train.py").write_text("print('tampered')\n")
    (first / "run.sh").chmod(0o600)
    (first / "conf" / "a.yaml").unlink()
    (first / "data" / "big.csv").unlink()
    (first / "data" / "big.csv").mkdir()
    (first / "latest").unlink()
    (first / "latest").symlink_to("/etc")
    (first / "new" / "deep").mkdir(parents=True)
    (first / ".orchestra" / "exit_code").write_text("0\n")
    (first / ".orchestra" / "pid").write_text("123\n")
    (first / ".orchestra" / "stdout").write_text("")
    (first / ".orchestra" / "stderr").write_text("a warning\n")
    dirs.live += 1  # as if a second one were alive, so the spare is kept
    dirs.retire(str(first), str(code))
    assert not first.exists() and len(dirs.spares[str(code)]) == 1

    inodes = {p.name: p.stat().st_ino for p in runs.glob(".spare-*/.orchestra/*")}
    second = runs / "e2"
    dirs.create(str(code), str(second), {"started": "2"})
    assert dirs.recycled == 1
    assert _snapshot(second) == want
    meta_dir = second / ".orchestra"
    # Neither the last execution's exit code ("finished" before it starts) nor its pid for a resume to find.
    assert (meta_dir / "exit_code").read_text().strip() == ""
    assert (meta_dir / "pid").read_text().strip() == ""
    assert (meta_dir / "started").read_text().strip() == "2"
    assert not (meta_dir / "slot").exists()  # not rewritten by this launch: removed, never stale
    assert not (meta_dir / "stderr").exists()  # held output: removed rather than truncated
    # Rewritten in place, not created again: the same inodes (what makes a recycled launch cheap).
    for name in ("pid", "exit_code", "started", "stdout"):
        assert (meta_dir / name).stat().st_ino == inodes[name], name


def test_spares_never_outnumber_the_peak_of_live_directories(tmp_path):
    code = tmp_path / "code"
    _tree(code, {"a": "1"})
    runs = tmp_path / "runs"
    runs.mkdir()
    dirs = RunDirs(str(runs))
    for i in range(3):
        dirs.create(str(code), str(runs / f"r{i}"), {})
    for i in range(3):
        dirs.retire(str(runs / f"r{i}"), str(code))
    assert len(dirs.spares[str(code)]) <= dirs.limit == 3
    # A directory the agent did not create (adopted after a restart) is removed, not kept.
    adopted = runs / "adopted"
    _tree(adopted, {"x": "1"})
    dirs.retire(str(adopted), None)
    assert not adopted.exists()
    dirs.clear()
    assert [p for p in runs.iterdir()] == []


def test_stale_spares_of_dead_agents_are_removed(tmp_path):
    runs = tmp_path / "runs"
    (runs / ".spare-999999999-1").mkdir(parents=True)
    (runs / f".spare-{os.getpid()}-1").mkdir()
    (runs / "0123456789ab").mkdir()
    remove_stale_spares(str(runs))
    assert sorted(p.name for p in runs.iterdir()) == [f".spare-{os.getpid()}-1", "0123456789ab"]


# --------------------------------------------------------------------------- the controller's link
class _ScriptedSession:
    """A session whose output is given in advance, chunk by chunk (what an SSH channel would deliver)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.sent: list[bytes] = []

    def recv(self) -> bytes:
        import gevent
        gevent.sleep(0)
        if not self.chunks:
            gevent.sleep(60)  # nothing more: the link waits like on a quiet channel
        return self.chunks.pop(0)

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        pass


def _frame(execution_id: str, code: int, payload: bytes) -> bytes:
    header = render_event("exited", execution_id, code=code, started=1.0, ended=2.0, size=len(payload),
                          sha256=hashlib.sha256(payload).hexdigest())
    return header.encode() + b"\n" + payload


@pytest.mark.parametrize("big", [False, True])
def test_link_settles_exits_small_in_memory_and_large_through_a_file(tmp_path, big, monkeypatch):
    """Large results are written to a spool file as they arrive: the link's buffer never holds them."""
    import gevent
    from runaway import agent_link

    monkeypatch.setattr(agent_link, "SPOOL_OVER", 1000)
    content = (b"0123456789" * 300) if big else b"small"
    payload = render_result_header("out.bin", len(content), 0o644) + content
    stream = b"banner from a login shell\nhello 2 42\n" + _frame("e1", 3, payload)
    chunks = [stream[i:i + 256] for i in range(0, len(stream), 256)]
    session = _ScriptedSession(chunks)
    link = agent_link.AgentLink(lambda: session, "test", spool_dir=tmp_path)
    link.start()
    try:
        pending = link.launch("e1", "launch e1 x")
        done = pending.exited.get(timeout=5)
        assert done.code == 3 and done.error is None
        if big:
            assert isinstance(done.payload, Path) and done.payload.parent == tmp_path
            assert parse_results(done.payload.read_bytes())["out.bin"] == content
            assert len(link._buffer) <= 256  # never the whole frame in memory
        else:
            assert parse_results(done.payload)["out.bin"] == content
    finally:
        link.close()
        gevent.sleep(0)


def test_link_reports_a_corrupted_frame_instead_of_its_results(tmp_path, monkeypatch):
    import gevent
    from runaway import agent_link

    monkeypatch.setattr(agent_link, "SPOOL_OVER", 10)
    good = render_result_header("a", 40, 0o644) + b"x" * 40
    frame = _frame("e2", 0, good)
    frame = frame[:-1] + b"y"  # one byte flipped in transit
    session = _ScriptedSession([b"hello 2 1\n", frame])
    link = agent_link.AgentLink(lambda: session, "test", spool_dir=tmp_path)
    link.start()
    try:
        done = link.launch("e2", "launch e2 x").exited.get(timeout=5)
        assert done.error and "corrupted" in done.error and done.payload == b""
        assert list(tmp_path.iterdir()) == []  # the bad spool file is gone
    finally:
        link.close()
        gevent.sleep(0)


@pytest.mark.parametrize("pattern", ["**", ".", ""])
def test_patterns_matching_the_whole_run_directory_never_take_the_orchestra_files(tmp_path, pattern):
    """Both readers of outputs (the agent's, and the local one used after a resume) agree."""
    from runaway.rundir import match_outputs

    _tree(tmp_path, {".orchestra/pid": "1", ".orchestra/exit_code": "0", "a.txt": "x", "sub/b": "y"})
    assert match_outputs(tmp_path, (pattern,)) == ["a.txt", "sub/b"]
    assert [f for f in result_files(str(tmp_path), [pattern]) if not f.startswith(".orchestra/std")] == \
        ["a.txt", "sub/b"]


def test_write_in_place_keeps_the_inode_and_leaves_no_stale_bytes(tmp_path):
    path = tmp_path / "started"
    write_in_place(str(path), "1764000000.123456")
    inode = path.stat().st_ino
    write_in_place(str(path), "7")  # shorter: the rest is blanked, not left behind
    assert path.stat().st_ino == inode
    assert path.read_text().strip() == "7" and path.read_text().endswith("\n")
    write_in_place(str(path), "")
    assert path.read_text().strip() == ""
    write_in_place(str(path), "x" * 40)  # longer: the file grows
    assert path.read_text().strip() == "x" * 40


def test_the_shipped_agent_parses_as_python_3_6():
    """agent.py runs with the host's python3, which `runaway test` accepts from 3.6: no newer syntax in it
    (walrus, positional-only parameters, `match`, parenthesised context managers)."""
    import ast

    import runaway.agent

    package = Path(runaway.agent.__file__).parent
    for name in runaway.agent.MODULES:  # every module that goes into the bundle
        ast.parse((package / name).read_text(), filename=name, feature_version=(3, 6))


def test_the_bundle_is_one_deterministic_file_that_runs(tmp_path):
    """Hosts get the agent as ONE file (a zipapp of runaway/agent/): same sources, same bytes (its hash
    names the version), and it runs as a program without the package installed."""
    import subprocess
    import sys
    import zipfile

    import runaway.agent

    data = runaway.agent.bundle()
    path = Path(runaway.agent.write_bundle(tmp_path))
    assert path.read_bytes() == data and runaway.agent.bundle_digest() in path.name
    names = zipfile.ZipFile(path).namelist()
    assert names[0] == "__main__.py" and {f"orchestra_agent/{m}" for m in runaway.agent.MODULES} <= set(names)
    done = subprocess.run([sys.executable, "-I", str(path)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=30)
    assert done.returncode == 2 and "usage: orchestra-agent.pyz" in done.stderr
