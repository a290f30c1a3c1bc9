"""runaway/agent/ for real, as its bundle: its pure line protocol, its results packing, the daemon end to end.

No mocks. The pure functions get hostile inputs (shell metacharacters, newlines, quotes, unicode) because
everything a controller sends crosses SSH as one text line. The results functions run on real
directories (symlinks included) under tmp_path. The daemon is started exactly as a controller starts it,
`agent.py attach DIR ROOT WRAPPER_B64 MARKER --spawn` in a subprocess, and spoken to through that
process's stdin/stdout. Every wait is bounded (select with deadlines, plus a 20 s alarm per test), so a
hang fails a test instead of blocking the suite; the daemon each test starts is stopped at its end.
"""
from __future__ import annotations

import base64
import hashlib
import os
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from runaway import agent
from runaway.rundir import MARKER, WRAPPER

AGENT = Path(agent.write_bundle(tempfile.mkdtemp(prefix="orchestra-agent-")))  # the one file hosts run
WRAPPER_B64 = base64.b64encode(WRAPPER.encode()).decode()
TEST_BUDGET = 20  # seconds per test, daemon start and stop included

# Everything a shell or a line protocol could trip on.
HOSTILE = "a; touch pwned; $(touch pwned2) `touch pwned3` | & > < 'sq' \"dq\" \\ \n second line\r\n\ttab é ✓ 🎉 $HOME %s %% \x01"
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # a non-UTF-8 byte as Python carries it (surrogate escape)


@pytest.fixture(autouse=True)
def _time_limit():
    """A test that hangs despite the bounded reads fails after TEST_BUDGET seconds instead of blocking."""
    def expired(*_):
        raise TimeoutError("test took longer than %d s" % TEST_BUDGET)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_BUDGET)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------ pure: lines
def _launch_fields(**overrides) -> dict:
    fields = dict(run_dir="/w/runs/e-1", code_dir="/w/code/c 1", command=HOSTILE,
                  env={"X": HOSTILE, "EMPTY": "", "BYTES": NOT_UTF8, "ÜNI": "✓"},
                  outputs=["*.json", "out/**", HOSTILE], slot=3, meta={"launcher_pid": "42"}, token="tok-1")
    fields.update(overrides)
    return fields


def test_launch_round_trips_command_and_env_byte_for_byte():
    """The command and env travel base64'd: whatever they hold, the line stays one line and comes back exact."""
    line = agent.render_request("launch", "e-1", **_launch_fields())
    assert "\n" not in line and "\r" not in line and line.isascii()
    kind, execution_id, body = agent.parse_request(line)
    assert (kind, execution_id) == ("launch", "e-1")
    assert body == {"run_dir": "/w/runs/e-1", "code_dir": "/w/code/c 1", "command": HOSTILE,
                    "env": {"X": HOSTILE, "EMPTY": "", "BYTES": NOT_UTF8, "ÜNI": "✓"},
                    "outputs": ["*.json", "out/**", HOSTILE], "slot": 3, "meta": {"launcher_pid": "42"},
                    "token": "tok-1"}
    encode = lambda text: text.encode("utf-8", "surrogateescape")  # noqa: E731
    assert encode(body["command"]) == encode(HOSTILE)
    assert encode(body["env"]["BYTES"]) == b"caf\xe9"


def test_launch_without_optional_fields_round_trips():
    """meta and token are optional: absent, they are not invented."""
    line = agent.render_request("launch", "e2", run_dir="/r/runs/e2", code_dir="/c", command="true")
    assert agent.parse_request(line) == ("launch", "e2", {"run_dir": "/r/runs/e2", "code_dir": "/c",
                                                          "command": "true", "env": {}, "outputs": [],
                                                          "slot": None})


@pytest.mark.parametrize("kind, fields, expected", [
    ("watch", {"run_dir": "/w/runs/e.1 " + HOSTILE, "outputs": ["o/**", HOSTILE]},
     {"run_dir": "/w/runs/e.1 " + HOSTILE, "outputs": ["o/**", HOSTILE]}),
    ("kill", {"signal": 15, "grace": 2.5}, {"signal": 15, "grace": 2.5}),
    ("kill", {"signal": 9, "grace": 0}, {"signal": 9, "grace": 0.0}),
    ("remove", {"run_dir": "/w/runs/" + HOSTILE}, {"run_dir": "/w/runs/" + HOSTILE}),
])
def test_requests_round_trip(kind, fields, expected):
    """watch, kill and remove come back as sent, paths with hostile characters included."""
    line = agent.render_request(kind, "e.1", **fields)
    assert "\n" not in line
    assert agent.parse_request(line) == (kind, "e.1", expected)


def test_ping_round_trips_and_refuses_a_token_that_could_break_the_line():
    assert agent.parse_request(agent.render_request("ping", token="abc-9")) == ("ping", "", {"token": "abc-9"})
    for token in ("a b", "a\n", "", "x" * 65):
        with pytest.raises(ValueError):
            agent.render_request("ping", token=token)


BAD_IDS = ["has space", "new\nline", "trailing\n", "", "x" * 129, "sl/ash", "é", "semi;colon"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
def test_bad_ids_are_refused_on_both_ends(bad_id):
    """An id is a bare word: one with a space or a newline could smuggle a second request into a line."""
    with pytest.raises(ValueError):
        agent.render_request("watch", bad_id, run_dir="/w/runs/x")
    body = agent.b64json({"run_dir": "/w/runs/x"})
    for line in ("watch %s %s" % (bad_id, body), "kill %s 15 1" % bad_id, "watch %s" % bad_id):
        with pytest.raises(ValueError):
            agent.parse_request(line)


def test_the_longest_allowed_id_is_accepted():
    assert agent.parse_request("kill %s 15 1" % ("x" * 128))[1] == "x" * 128


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize("line", [
    "",
    "launch",
    "frobnicate e1 " + agent.b64json({"run_dir": "/w"}),  # unknown kind
    "LAUNCH e1 " + agent.b64json({"run_dir": "/w"}),
    "watch e1",  # too few fields
    "watch e1 " + agent.b64json({"run_dir": "/w"}) + " extra",  # too many
    "kill e1 15",
    "kill e1 15 1 1",
    "kill e1 -15 1",
    "kill e1 TERM 1",
    "kill e1 15 soon",
    "remove e1",
    "ping",
    "ping a b",
    "watch e1 !!!not-base64!!!",
    "watch e1 " + _b64(b"not json"),
    "watch e1 " + _b64(b"\xff\xfe{}"),
    "watch e1 " + agent.b64json({"run_dir": "/w"})[:-2],  # truncated base64
    "watch e1 " + agent.b64json(["/w"]),  # JSON, but not an object
    "watch e1 " + agent.b64json({"outputs": []}),  # no run_dir
    "watch e1 " + agent.b64json({"run_dir": "/w", "outputs": "*.txt"}),  # outputs not a list
    "launch e1 " + agent.b64json({"run_dir": "/w", "code_dir": "/c", "env": {}}),  # no command
    "launch e1 " + agent.b64json({"run_dir": "/w", "code_dir": "/c", "command": "x", "env": {},
                                  "meta": {"../escape": "x"}}),
    "launch e1 " + agent.b64json({"run_dir": "/w", "code_dir": "/c", "command": "x", "env": {},
                                  "token": "bad token"}),
    "remove e1 " + agent.b64json(["/w"]),
    "env " + agent.b64json({"A": 1}),
])
def test_parse_request_rejects_malformed_lines(line):
    with pytest.raises(ValueError):
        agent.parse_request(line)


def test_render_request_refuses_unknown_kinds():
    with pytest.raises(ValueError):
        agent.render_request("frobnicate", "e1")


SHA = "ab" * 32


@pytest.mark.parametrize("kind, execution_id, fields, expected", [
    ("hello", "", {"pid": 4242}, {"protocol": agent.PROTOCOL, "pid": 4242}),
    ("started", "e1", {"pid": 77, "started": 1700000000.25}, {"pid": 77, "started": 1700000000.25}),
    ("exited", "e1", {"code": 0, "started": 1700000000.5, "ended": 1700000001.75, "size": 123, "sha256": SHA},
     {"code": 0, "started": 1700000000.5, "ended": 1700000001.75, "size": 123, "sha256": SHA}),
    ("exited", "e1", {"code": 137, "started": 1.0, "ended": 2.0, "size": 0, "sha256": SHA},
     {"code": 137, "started": 1.0, "ended": 2.0, "size": 0, "sha256": SHA}),
    ("exited", "e1", {"code": None, "started": None, "ended": 2.0, "size": 9, "sha256": SHA},
     {"code": None, "started": None, "ended": 2.0, "size": 9, "sha256": SHA}),
    ("gone", "e1", {}, {}),
    ("error", "e1", {"message": "launch: " + HOSTILE}, {"message": "launch: " + HOSTILE}),
    ("pong", "", {"token": "t-7"}, {"token": "t-7"}),
])
def test_events_round_trip(kind, execution_id, fields, expected):
    """Every event header is one ASCII line and parses back to what was rendered."""
    line = agent.render_event(kind, execution_id, **fields)
    assert "\n" not in line and line.isascii()
    assert agent.parse_event(line) == (kind, execution_id, expected)


def test_an_exit_without_code_or_start_is_rendered_with_dashes():
    """'-' is how a controller learns that an execution died without an exit code (host rebooted)."""
    line = agent.render_event("exited", "e1", code=None, started=None, ended=5.0, size=0, sha256=SHA)
    assert line.split(" ")[2:4] == ["-", "-"]


@pytest.mark.parametrize("line", [
    "", "hello", "hello 2", "hello two 3", "pong", "pong bad!token", "started e1 12", "started e1 x 1.0",
    "started bad\nid 1 1.0", "gone", "gone e1 extra", "exited e1 0 1.0 2.0 5",
    "exited e1 0 1.0 2.0 5 " + "z" * 64, "exited e1 0 1.0 2.0 -5 " + SHA, "exited e1 0 1.0 - 5 " + SHA,
    "exited e1 zero 1.0 2.0 5 " + SHA, "error e1 !!!", "error e1", "HTTP/1.1 400 Bad Request",
    "bash: python3: command not found",
])
def test_parse_event_rejects_garbage(line):
    """What a broken remote shell prints instead of the agent must never pass for an event."""
    with pytest.raises(ValueError):
        agent.parse_event(line)


def test_split_lines_keeps_an_unfinished_tail():
    """A socket read may end mid-line: the tail waits for the rest instead of being parsed half."""
    assert agent.split_lines(b"ping a\nping b\nping c-partial") == (["ping a", "ping b"], b"ping c-partial")
    assert agent.split_lines(b"no newline yet") == ([], b"no newline yet")
    assert agent.split_lines(b"one\n") == (["one"], b"")
    assert agent.split_lines(b"\n\none\n\n") == (["one"], b"")
    lines, rest = agent.split_lines(b"a\n")
    assert agent.split_lines(rest + b"b\nc") == (["b"], b"c")


def _wait_status(argv, kill=None) -> int:
    pid = os.posix_spawn(argv[0], argv, dict(os.environ))
    if kill is not None:
        time.sleep(0.05)
        os.kill(pid, kill)
    _, status = os.waitpid(pid, 0)
    return status


def test_exit_code_of_reads_real_wait_statuses_like_a_shell():
    """A normal exit gives its code; death by a signal gives 128+N, as the shell wrapper would write it."""
    assert agent.exit_code_of(_wait_status(["/bin/sh", "-c", "exit 3"])) == 3
    assert agent.exit_code_of(_wait_status(["/bin/sh", "-c", "exit 0"])) == 0
    assert agent.exit_code_of(_wait_status(["/bin/sleep", "30"], kill=signal.SIGKILL)) == 137
    assert agent.exit_code_of(_wait_status(["/bin/sleep", "30"], kill=signal.SIGTERM)) == 143


# ------------------------------------------------------------------------------------------ results
@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run directory with outputs, internals, and symlinks that lead out of it."""
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret\n")
    (outside / "dir" / "leak.txt").write_text("leak\n")
    run = tmp_path / "runs" / "e1"
    meta = run / ".orchestra"
    meta.mkdir(parents=True)
    for name, text in {"stdout": "out\n", "stderr": "err\n", "pid": "123\n", "exit_code": "0\n",
                       "started": "1.0\n", "token": "t\n"}.items():
        (meta / name).write_text(text)
    (run / "top.txt").write_text("top\n")
    (run / "a" / "b").mkdir(parents=True)
    (run / "a" / "b" / "deep.txt").write_text("deep\n")
    (run / "a" / "mid.csv").write_text("1,2\n")
    (run / "data" / "sub").mkdir(parents=True)
    (run / "data" / "one.bin").write_bytes(b"\x00\x01")
    (run / "data" / "sub" / "two.bin").write_bytes(b"\x02")
    (run / "code.py").write_text("print(1)\n")
    (run / "secret.txt").symlink_to(outside / "secret.txt")  # a file link leading out
    (run / "top-link.txt").symlink_to(run / "top.txt")  # a file link staying inside: still not an output
    (run / "linked").symlink_to(outside / "dir")  # a directory link leading out
    (run / "data" / "linked").symlink_to(outside / "dir")
    (run / "data" / "secret.bin").symlink_to(outside / "secret.txt")
    return run


STD = [".orchestra/stderr", ".orchestra/stdout"]


def test_stdout_and_stderr_are_always_results(run_dir):
    assert agent.result_files(str(run_dir), []) == STD


@pytest.mark.parametrize("patterns, expected", [
    (["*.txt"], ["top.txt"]),
    (["**/*.txt"], ["a/b/deep.txt", "top.txt"]),
    (["a/**"], ["a/b/deep.txt", "a/mid.csv"]),
    (["**/*.csv", "top.txt"], ["a/mid.csv", "top.txt"]),
    (["data"], ["data/one.bin", "data/sub/two.bin"]),  # a directory: everything regular under it
    (["linked/*.txt", "linked", "data/linked/*", "data/secret.bin"], []),  # through links: nothing
    (["../outside/*.txt", "a/../../outside/dir/leak.txt", "/etc/passwd", "*/../top.txt"], []),
    ([".orchestra/*", ".orchestra", "./.orchestra/pid", ".orchestra/exit_code"], []),
    (["**"], ["a/b/deep.txt", "a/mid.csv", "code.py", "data/one.bin", "data/sub/two.bin", "top.txt"]),
    (["."], ["a/b/deep.txt", "a/mid.csv", "code.py", "data/one.bin", "data/sub/two.bin", "top.txt"]),
])
def test_result_files_take_regular_files_inside_the_run_dir_only(run_dir, patterns, expected):
    """Outputs are files the execution wrote: never a symlink or anything under a symlinked directory
    (that would ship files from outside the run directory), never through '..' or an absolute pattern,
    and of .orchestra/ only stdout and stderr (pid, exit_code, token are the agent's own bookkeeping,
    even when `**` or `.` matches the run directory itself)."""
    assert agent.result_files(str(run_dir), patterns) == sorted(STD + expected)


def test_pack_results_reports_the_size_and_sha256_of_what_it_packed(run_dir):
    """The controller checks the frame against the header: the numbers must be those of the bytes."""
    os.chmod(run_dir / "data" / "one.bin", 0o751)
    spool, size, digest = agent.pack_results(str(run_dir), ["**/*.txt", "data"])
    payload = spool.read()
    spool.close()
    assert len(payload) == size and hashlib.sha256(payload).hexdigest() == digest
    assert agent.parse_results(payload) == {
        ".orchestra/stderr": b"err\n", ".orchestra/stdout": b"out\n", "a/b/deep.txt": b"deep\n",
        "top.txt": b"top\n", "data/one.bin": b"\x00\x01", "data/sub/two.bin": b"\x02"}
    # entries carry the file mode
    modes = {}
    pos = 0
    while pos < len(payload):
        newline = payload.index(b"\n", pos)
        rel, length, mode = agent.parse_result_header(payload[pos:newline])
        modes[rel] = mode
        pos = newline + 1 + length
    assert modes["data/one.bin"] == 0o751


def test_pack_results_of_an_empty_run_dir_is_an_empty_payload(tmp_path):
    spool, size, digest = agent.pack_results(str(tmp_path), ["*"])
    assert (spool.read(), size, digest) == (b"", 0, hashlib.sha256(b"").hexdigest())


# ------------------------------------------------------------------------------------------ the daemon
class Attached:
    """One `agent.py attach --spawn` process, as a controller runs it over SSH: request lines go to its
    stdin; event headers (and, after `exited`, `size` bytes of results) come from its stdout."""

    def __init__(self, site: "Site") -> None:
        self.site = site
        self.proc = subprocess.Popen(
            [sys.executable, str(AGENT), "attach", str(site.agent_dir), str(site.root), WRAPPER_B64, MARKER,
             "--spawn"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buffer = b""
        self.skipped = []  # events read while waiting for another id's
        self.hello = self.event(within=10)

    def send(self, *lines: str) -> None:
        self.proc.stdin.write(("\n".join(lines) + "\n").encode("ascii"))
        self.proc.stdin.flush()

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete event from the agent in time; got so far %r" % self.buffer[:200])
        ready, _, _ = select.select([self.proc.stdout], [], [], left)
        if ready:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not data:
                raise EOFError("attach ended (code %s)" % self.proc.wait(5))
            self.buffer += data

    def event(self, within: float = 10.0) -> tuple:
        """(kind, id, fields) of the next event; an `exited` one gets `payload` and parsed `results`."""
        deadline = time.monotonic() + within
        while b"\n" not in self.buffer:
            self._fill(deadline)
        line, self.buffer = self.buffer.split(b"\n", 1)
        kind, execution_id, fields = agent.parse_event(line.decode("ascii"))
        if kind == "exited":
            while len(self.buffer) < fields["size"]:
                self._fill(deadline)
            payload, self.buffer = self.buffer[:fields["size"]], self.buffer[fields["size"]:]
            assert hashlib.sha256(payload).hexdigest() == fields["sha256"]
            fields["payload"] = payload
            fields["results"] = agent.parse_results(payload)
        if kind == "started":
            self.site.pids.add(fields["pid"])
        return kind, execution_id, fields

    def until(self, kinds, execution_id: str, within: float = 10.0) -> tuple:
        """(kind, fields) of the next event of one of ``kinds`` for the id; an error for it fails the test.

        Events for other ids are kept for a later call: executions end in any order."""
        kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        deadline = time.monotonic() + within
        while True:
            mine = [e for e in self.skipped if e[1] == execution_id]
            if mine:
                self.skipped.remove(mine[0])
                kind, got_id, fields = mine[0]
            else:
                kind, got_id, fields = self.event(max(0.05, deadline - time.monotonic()))
            if got_id == execution_id and kind in kinds:
                return kind, fields
            assert not (kind == "error" and got_id == execution_id and "error" not in kinds), fields
            if got_id != execution_id:
                self.skipped.append((kind, got_id, fields))

    def sync(self) -> None:
        """Requests are handled in order: once the pong is back, the requests before it were handled."""
        self.send(agent.render_request("ping", token="sync"))
        self.until("pong", "")

    def close(self) -> int:
        """What a dropped SSH channel does: stdin closes, attach ends, the daemon stays."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
        code = self.proc.wait(5)
        self.proc.stdout.close()
        return code


class Site:
    """A controller's view of one host: <root>/runs/, <root>/code/proj/ (the code cache), the agent dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "root"
        (self.root / "runs").mkdir(parents=True)
        self.code = self.root / "code" / "proj"
        (self.code / "lib").mkdir(parents=True)
        (self.code / "input.txt").write_text("input data\n")
        (self.code / "lib" / "helper.txt").write_text("helper\n")
        self.agent_dir = tmp_path / "agent"
        self.attached = []
        self.pids = set()  # execution process groups, killed at the end whatever happened

    def attach(self) -> Attached:
        link = Attached(self)
        self.attached.append(link)
        return link

    def run_dir(self, execution_id: str) -> Path:
        return self.root / "runs" / execution_id

    def launch(self, execution_id: str, command: str, token: str = "t1", **fields) -> str:
        return agent.render_request("launch", execution_id, run_dir=str(self.run_dir(execution_id)),
                                    code_dir=str(self.code), command=command, token=token, **fields)

    def watch(self, execution_id: str, **fields) -> str:
        return agent.render_request("watch", execution_id, run_dir=str(self.run_dir(execution_id)), **fields)

    def daemon_pid(self) -> int:
        return int((self.agent_dir / "pid").read_text())

    def stop(self) -> None:
        for link in self.attached:
            if link.proc.poll() is None:
                link.proc.kill()
                link.proc.wait(5)
        for pid in self.pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            pid = self.daemon_pid()
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while agent.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if agent.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        log = self.agent_dir / "agent.log"
        if log.exists():
            print("agent.log:\n" + log.read_text(errors="replace"))  # shown when the test failed


@pytest.fixture
def site(tmp_path: Path):
    """The host of one test; its daemon and executions are stopped afterwards, also when the test failed."""
    site = Site(tmp_path)
    try:
        yield site
    finally:
        site.stop()


def _wait_for(predicate, within: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("timed out waiting for " + what)
        time.sleep(0.02)


def test_hello_comes_first_and_names_the_daemon(site):
    """A controller checks the protocol version before sending anything; the pid is the daemon's."""
    link = site.attach()
    kind, _, fields = link.hello
    assert kind == "hello" and fields == {"protocol": agent.PROTOCOL, "pid": site.daemon_pid()}
    link.send(agent.render_request("ping", token="p1"))
    assert link.until("pong", "") == ("pong", {"token": "p1"})


def test_launch_reports_started_then_exited_with_code_and_results(site):
    """The whole point: one line out, a started, then one frame with the exit code and the outputs."""
    link = site.attach()
    link.send(site.launch("ok", "echo hello; mkdir -p res; echo 42 > res/answer.txt; echo no > other.txt",
                          outputs=["res/*.txt"]),
              site.launch("bad", "echo oops >&2; exit 7"))
    kind, started = link.until("started", "ok")
    assert started["pid"] > 0 and abs(started["started"] - time.time()) < 10
    _, done = link.until("exited", "ok")
    assert done["code"] == 0 and done["ended"] >= done["started"]
    assert done["results"] == {".orchestra/stdout": b"hello\n", ".orchestra/stderr": b"",
                               "res/answer.txt": b"42\n"}
    _, failed = link.until("exited", "bad")
    assert failed["code"] == 7
    assert failed["results"][".orchestra/stderr"] == b"oops\n"
    assert (site.run_dir("bad") / ".orchestra" / "exit_code").read_text().strip() == "7"


def test_launch_env_and_command_reach_the_shell_intact(site):
    """Values and commands full of metacharacters arrive as written: nothing is re-parsed on the way."""
    link = site.attach()
    value = HOSTILE
    command = "printf '%s|' \"$ORCH_V\" \"$ORCH_EMPTY\"; printf '%s\\n' \"it's\" 'a|b&c;d' 'ü 🎉'"
    link.send(site.launch("env1", command, env={"ORCH_V": value, "ORCH_EMPTY": ""}))
    _, done = link.until("exited", "env1")
    assert done["code"] == 0
    assert done["results"][".orchestra/stdout"] == (value + "||it's\na|b&c;d\nü 🎉\n").encode()
    assert not list(site.run_dir("env1").glob("pwned*"))  # printed, never evaluated


def test_the_run_directory_is_a_copy_of_the_code_dir(site):
    """An execution works in its own copy: it sees the code's files, and what it changes stays in its copy."""
    link = site.attach()
    link.send(site.launch("copy", "cat input.txt lib/helper.txt; echo changed > input.txt; touch new.txt"))
    _, done = link.until("exited", "copy")
    assert done["code"] == 0 and done["results"][".orchestra/stdout"] == b"input data\nhelper\n"
    run = site.run_dir("copy")
    assert (run / "input.txt").read_text() == "changed\n" and (run / "new.txt").exists()
    assert (site.code / "input.txt").read_text() == "input data\n"
    assert sorted(p.name for p in site.code.iterdir()) == ["input.txt", "lib"]


def test_a_repeated_launch_line_never_starts_it_twice(site):
    """After a dropped link the controller re-sends launches it is unsure of; the agent must answer for
    the execution it already has (started or exited) instead of running the command a second time."""
    counter = site.tmp / "counter"
    line = site.launch("once", "echo ran >> %s; sleep 0.5" % shlex.quote(str(counter)))
    link = site.attach()
    link.send(line, line)
    kinds = []
    while "exited" not in kinds:
        kinds.append(link.until(("started", "exited"), "once")[0])
    assert kinds == ["started", "started", "exited"]  # the second line watched the first execution
    link.send(line)  # and once more after the end: the exit is reported again, nothing runs
    kind, done = link.until(("started", "exited"), "once")
    assert (kind, done["code"]) == ("exited", 0)
    time.sleep(0.3)
    assert counter.read_text() == "ran\n"
    assert sorted(p.name for p in (site.root / "runs").iterdir()) == ["once"]


def test_watch_of_an_unknown_run_dir_is_gone(site):
    link = site.attach()
    link.send(site.watch("never"))
    assert link.until(("gone", "started", "exited"), "never") == ("gone", {})


def test_the_daemon_outlives_attach_and_reports_what_ended_meanwhile(site):
    """Executions survive the controller's connection: a new attach finds the same daemon, and a watch of
    an execution that ended while nobody listened gets its exit frame."""
    first = site.attach()
    first.send(site.launch("later", "echo before; sleep 0.3; echo after; exit 5"))
    first.until("started", "later")
    daemon = site.daemon_pid()
    assert first.close() == 0
    _wait_for((site.run_dir("later") / ".orchestra" / "exit_code").exists, what="the execution's end")
    assert agent.pid_alive(daemon)
    second = site.attach()
    assert second.hello[2]["pid"] == daemon == site.daemon_pid()
    second.send(site.watch("later"))
    kind, done = second.until(("exited", "gone"), "later")
    assert (kind, done["code"]) == ("exited", 5)
    assert done["results"][".orchestra/stdout"] == b"before\nafter\n"


def test_kill_terminates_the_execution_long_before_it_would_end(site):
    link = site.attach()
    link.send(site.launch("long", "sleep 30"))
    link.until("started", "long")
    begin = time.monotonic()
    link.send(agent.render_request("kill", "long", signal=15, grace=5))
    _, done = link.until("exited", "long")
    assert done["code"] == 143
    assert time.monotonic() - begin < 4  # TERM worked: no wait for the 5 s grace, let alone 30 s


def test_kill_escalates_to_sigkill_after_the_grace_when_term_is_trapped(site):
    """An execution may ignore TERM; the grace bounds how long it can stall a kill."""
    link = site.attach()
    link.send(site.launch("stubborn", "trap 'echo got-term' TERM; touch ready; while :; do sleep 0.1; done"))
    link.until("started", "stubborn")
    _wait_for((site.run_dir("stubborn") / "ready").exists, what="the TERM trap to be set")
    begin = time.monotonic()
    link.send(agent.render_request("kill", "stubborn", signal=15, grace=1))
    _, done = link.until("exited", "stubborn")
    elapsed = time.monotonic() - begin
    assert done["code"] == 137  # KILLed: no exit_code written, the wait status tells
    assert 0.9 <= elapsed < 5
    assert b"got-term" in done["results"][".orchestra/stdout"]


def test_remove_deletes_the_run_dir_and_the_next_launch_gets_exactly_the_code_tree(site):
    link = site.attach()
    link.send(site.launch("done", "echo x > out.txt; rm input.txt; echo changed >> lib/helper.txt"))
    link.until("exited", "done")
    link.send(agent.render_request("remove", "done", run_dir=str(site.run_dir("done"))))
    link.sync()
    assert not site.run_dir("done").exists()
    link.send(site.watch("done"))
    assert link.until(("gone", "exited"), "done")[0] == "gone"
    # The removed directory was kept as a spare and is restored for the next launch of the same code.
    assert [p.name for p in (site.root / "runs").iterdir() if p.name.startswith(".spare-")]
    link.send(site.launch("next", "find . -path ./.orchestra -prune -o -type f -print | sort; cat lib/helper.txt"))
    out = link.until("exited", "next")[1]["results"][".orchestra/stdout"].decode().split("\n")
    assert out[:3] == ["./input.txt", "./lib/helper.txt", "helper"]


def test_a_recycled_launch_rewrites_the_meta_files_in_place_and_reports_its_own_pid_and_code(site):
    """No new inode for any .orchestra file in a recycled directory, and nothing of the last execution
    shows through: the pid file holds the new pid, exit_code is blank until the new one ends."""
    link = site.attach()
    link.send(site.launch("a", "echo out; exit 3"))
    first_pid = link.until("started", "a")[1]["pid"]
    assert link.until("exited", "a")[1]["code"] == 3
    meta = site.run_dir("a") / ".orchestra"
    inodes = {name: (meta / name).stat().st_ino for name in ("pid", "exit_code", "started", "token", "stderr")}
    link.send(agent.render_request("remove", "a", run_dir=str(site.run_dir("a"))))
    link.sync()
    marker = site.tmp / "go"
    link.send(site.launch("b", f"while [ ! -e {marker} ]; do sleep 0.02; done", token="t9"))
    second_pid = link.until("started", "b")[1]["pid"]
    meta = site.run_dir("b") / ".orchestra"
    assert second_pid != first_pid
    _wait_for(lambda: (meta / "pid").read_text().strip() == str(second_pid), what="the wrapper's pid")
    assert (meta / "exit_code").read_text().strip() == ""  # blank: not over
    assert (meta / "token").read_text().strip() == "t9"
    assert {name: (meta / name).stat().st_ino for name in inodes} == inodes
    assert not (meta / "stdout").exists() or (meta / "stdout").stat().st_size == 0  # "out" was removed
    marker.touch()
    assert link.until("exited", "b")[1]["code"] == 0
    assert (meta / "exit_code").read_text().strip() == "0"


def test_remove_refuses_anything_but_runs_slash_id(site):
    """remove deletes a tree: it only ever accepts <root>/runs/<the same id>, and nothing still running."""
    outside = site.tmp / "elsewhere" / "e2"
    outside.mkdir(parents=True)
    (outside / "keep.txt").write_text("keep\n")
    victim = site.run_dir("victim")
    victim.mkdir()
    (site.root / "runs" / "linked").symlink_to(outside)
    link = site.attach()
    link.send(site.launch("busy", "sleep 30"))
    link.until("started", "busy")
    refused = [("e2", str(outside)),  # outside <root>/runs
               ("e3", str(victim)),  # inside, but not the id's directory
               ("proj", "%s/runs/../code/proj" % site.root),  # back out with ..
               ("busy", str(site.run_dir("busy")))]  # still running
    for execution_id, path in refused:
        link.send(agent.render_request("remove", execution_id, run_dir=path))
        kind, fields = link.until("error", execution_id)
        assert "refusing" in fields["message"]
    link.send(agent.render_request("remove", "linked", run_dir=str(site.root / "runs" / "linked")))
    link.sync()
    assert (outside / "keep.txt").read_text() == "keep\n"  # a link named like the id: its target survives
    assert victim.is_dir() and (site.code / "input.txt").exists() and site.run_dir("busy").is_dir()
    link.send(agent.render_request("kill", "busy", signal=9, grace=0))
    link.until("exited", "busy")


# ------------------------------------------------------------ recycling, sessions, endings nobody heard
def test_a_new_token_replaces_an_earlier_attempt_where_the_same_one_is_a_repeat(site):
    counter = site.tmp / "count"
    link = site.attach()
    link.send(site.launch("n1", f"echo x >> {counter}"))
    link.until("exited", "n1")
    link.send(site.launch("n1", f"echo y >> {counter}", token="t2"))  # a retry, a resume: a new attempt
    assert link.until("exited", "n1")[1]["code"] == 0
    assert counter.read_text() == "x\ny\n"


def test_the_env_request_is_what_launches_of_that_session_start_from(site):
    link = site.attach()
    link.send(agent.render_request("env", env={"PATH": os.environ["PATH"], "FROM_SESSION": "yes"}),
              site.launch("v1", 'echo "${FROM_SESSION:-no} ${HOME:-unset}"'))
    assert link.until("exited", "v1")[1]["results"][".orchestra/stdout"] == b"yes unset\n"


def test_an_execution_killed_while_nobody_listened_reports_its_signal_not_a_loss(site):
    """SIGKILL leaves no exit_code file; the agent saw the wait status and says so to a later watch."""
    link = site.attach()
    link.send(site.launch("k1", "sleep 30"))
    pid = link.until("started", "k1")[1]["pid"]
    site.pids.add(pid)
    link.close()
    os.killpg(pid, signal.SIGKILL)
    time.sleep(0.5)
    again = site.attach()
    again.send(site.watch("k1"))
    assert again.until("exited", "k1")[1]["code"] == 137


def test_a_stale_pid_in_an_earlier_run_directory_is_not_signalled_when_another_process_holds_it(site):
    """The run directory an earlier agent left names a pid that has since been given to another process
    (pid_max wraps; here: a daemon-like group leader that is none of ours). A new attempt discards the
    earlier one without touching that process: a killpg of it once took a Slurm node's slurmd down."""
    link = site.attach()
    link.send(site.launch("s1", "true"))
    link.until("exited", "s1")
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)  # its own group, like a daemon
    try:
        pid_file = site.run_dir("s1") / ".orchestra" / "pid"
        pid_file.write_text(f"{stranger.pid}\n")
        (site.run_dir("s1") / ".orchestra" / "exit_code").unlink()  # as if the earlier one still ran
        again = site.attach()  # a new session: the agent knows the run only from its directory
        again.send(site.launch("s1", "echo second", token="t2"))
        assert again.until("exited", "s1")[1]["code"] == 0
        again.send(agent.render_request("kill", "s1", signal=9, grace=0))  # an ended run: nothing to kill
        time.sleep(0.3)
        assert stranger.poll() is None, "the agent signalled a process that was not its execution"
    finally:
        stranger.kill()
        stranger.wait()


def test_an_adopted_run_whose_pid_went_to_another_process_is_not_killed_and_counts_as_ended(site):
    """A watch of a run directory whose wrapper is gone and whose pid now belongs to someone else: a kill
    request must not reach that process, and the watch ends the run (lost) instead of waiting forever."""
    link = site.attach()
    link.send(site.launch("a1", "true"))
    link.until("exited", "a1")
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        meta = site.run_dir("a1") / ".orchestra"
        (meta / "pid").write_text(f"{stranger.pid}\n")
        (meta / "exit_code").unlink()
        site.stop()  # a new agent process: the run is adopted from its files, not its child
        again = site.attach()
        again.send(site.watch("a1"), agent.render_request("kill", "a1", signal=15, grace=0))
        event = again.until("exited", "a1")[1]
        assert event["code"] is None
        assert stranger.poll() is None, "the agent signalled a process that was not its execution"
    finally:
        stranger.kill()
        stranger.wait()
