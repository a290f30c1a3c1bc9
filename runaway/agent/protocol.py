"""The agent's wire protocol: request and event lines (pure render and parse functions).

Lines of space-separated fields; free text as base64 of JSON (see runaway/agent/__init__.py for the
whole protocol). Shared by the agent and the controller (runaway/agent_link.py).
"""
import base64
import json
import os
import re


PROTOCOL = 2
SOCKET_NAME = "sock"
META_DIR = ".orchestra"
WRAPPER_FILES = frozenset(("pid", "exit_code"))  # written in place by the wrapper (runaway/rundir.py)
# \Z, not $: `$` also matches before a final newline, which would let an id like "x\n" split a line in two.
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}\Z")
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?\Z")
_SHA = re.compile(r"^[0-9a-f]{64}\Z")
MAX_LINE = 1 << 20  # a request line longer than this is refused (a runaway client, not a command line)
# What `read` may ask for (intermediate metrics, live output), and the most one answer carries: a reader
# asks again from its new offset, so a large file streams in bounded frames.
READABLE = ("metrics.jsonl", "stdout", "stderr")
MAX_READ = 1 << 20


# ------------------------------------------------------------------------------------- pure: lines
def b64json(value) -> str:
    return base64.b64encode(json.dumps(value, sort_keys=True).encode("utf-8", "surrogateescape")).decode("ascii")


def unb64json(text: str):
    try:
        return json.loads(base64.b64decode(text.encode("ascii"), validate=True).decode("utf-8", "surrogateescape"))
    except (ValueError, UnicodeError) as exc:
        raise ValueError("bad base64 JSON field %r" % text[:20]) from exc


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValueError("bad execution id %r" % value[:80])
    return value


def render_request(kind: str, execution_id: str = "", **fields) -> str:
    """One request line (no newline). Ids are checked so that a line can never carry a second request."""
    if kind == "ping":
        token = str(fields.get("token", "0"))
        if not _TOKEN.match(token):
            raise ValueError("bad ping token %r" % token)
        return "ping " + token
    if kind == "env":
        return "env " + b64json(dict((str(k), str(v)) for k, v in dict(fields["env"]).items()))
    _check_id(execution_id)
    if kind == "launch":
        body = {"run_dir": str(fields["run_dir"]), "code_dir": str(fields["code_dir"]),
                "command": str(fields["command"]),
                "env": dict((str(k), str(v)) for k, v in dict(fields.get("env") or {}).items()),
                "outputs": [str(p) for p in fields.get("outputs") or ()], "slot": fields.get("slot")}
        extra = dict((str(k), str(v)) for k, v in dict(fields.get("meta") or {}).items())
        for name in extra:
            if not _ID.match(name):
                raise ValueError("bad meta file name %r" % name)
        if extra:
            body["meta"] = extra
        if fields.get("token"):
            if not _TOKEN.match(str(fields["token"])):
                raise ValueError("bad launch token %r" % fields["token"])
            body["token"] = str(fields["token"])
        if fields.get("affinity"):
            body["affinity"] = [int(core) for core in fields["affinity"]]
        return "launch %s %s" % (execution_id, b64json(body))
    if kind == "watch":
        body = {"run_dir": str(fields["run_dir"]), "outputs": [str(p) for p in fields.get("outputs") or ()]}
        return "watch %s %s" % (execution_id, b64json(body))
    if kind == "kill":
        return "kill %s %d %g" % (execution_id, int(fields["signal"]), float(fields.get("grace", 5.0)))
    if kind == "remove":
        return "remove %s %s" % (execution_id, b64json(str(fields["run_dir"])))
    if kind == "read":
        if fields["name"] not in READABLE:
            raise ValueError("cannot read %r; only %s" % (fields["name"], ", ".join(READABLE)))
        return "read %s %s %d %s" % (execution_id, fields["name"], int(fields["offset"]), b64json(str(fields["run_dir"])))
    raise ValueError("unknown request kind %r" % kind)


def parse_request(line: str) -> tuple:
    """(kind, execution_id, fields) of a request line; ValueError for anything else."""
    words = line.strip().split(" ")
    kind = words[0]
    if kind == "ping" and len(words) == 2 and _TOKEN.match(words[1]):
        return "ping", "", {"token": words[1]}
    if kind == "env" and len(words) == 2:
        env = unb64json(words[1])
        if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise ValueError("env must map names to text")
        return "env", "", {"env": env}
    if len(words) < 2:
        raise ValueError("not a request: %r" % line[:80])
    execution_id = _check_id(words[1])
    if kind in ("launch", "watch") and len(words) == 3:
        body = unb64json(words[2])
        if not isinstance(body, dict) or not isinstance(body.get("run_dir"), str):
            raise ValueError("%s without a run directory" % kind)
        if kind == "launch" and not (isinstance(body.get("command"), str) and isinstance(body.get("code_dir"), str)
                                     and isinstance(body.get("env"), dict)):
            raise ValueError("launch without command, code_dir or env")
        outputs = body.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(p, str) for p in outputs):
            raise ValueError("outputs must be a list of globs")
        if not isinstance(body.get("token", ""), str) or (body.get("token") and not _TOKEN.match(body["token"])):
            raise ValueError("bad launch token")
        meta = body.get("meta") or {}
        if not isinstance(meta, dict) or not all(isinstance(k, str) and _ID.match(k) and isinstance(v, str)
                                                 for k, v in meta.items()):
            raise ValueError("meta must map plain file names to text")
        affinity = body.get("affinity")
        if affinity is not None and not (isinstance(affinity, list) and affinity and all(
                isinstance(core, int) and not isinstance(core, bool) and core >= 0 for core in affinity)):
            raise ValueError("affinity must be a list of core numbers")
        return kind, execution_id, body
    if kind == "kill" and len(words) == 4 and words[2].isdigit() and _NUMBER.match(words[3]):
        return "kill", execution_id, {"signal": int(words[2]), "grace": float(words[3])}
    if kind == "remove" and len(words) == 3:
        run_dir = unb64json(words[2])
        if not isinstance(run_dir, str):
            raise ValueError("remove without a run directory")
        return "remove", execution_id, {"run_dir": run_dir}
    if kind == "read" and len(words) == 5 and words[2] in READABLE and words[3].isdigit():
        run_dir = unb64json(words[4])
        if not isinstance(run_dir, str):
            raise ValueError("read without a run directory")
        return "read", execution_id, {"name": words[2], "offset": int(words[3]), "run_dir": run_dir}
    raise ValueError("not a request: %r" % line[:80])


def _num(value) -> str:
    return "-" if value is None else ("%d" % value if isinstance(value, int) else "%.6f" % value)


def render_event(kind: str, execution_id: str = "", **fields) -> str:
    """One event header line (no newline); an ``exited`` header is followed by ``size`` payload bytes."""
    if kind == "hello":
        return "hello %d %d" % (PROTOCOL, int(fields["pid"]))
    if kind == "pong":
        return "pong " + fields["token"]
    _check_id(execution_id)
    if kind == "started":
        return "started %s %d %s" % (execution_id, int(fields["pid"]), _num(float(fields["started"])))
    if kind == "exited":
        return "exited %s %s %s %s %d %s" % (execution_id, _num(fields["code"]), _num(fields["started"]),
                                             _num(float(fields["ended"])), int(fields["size"]), fields["sha256"])
    if kind == "gone":
        return "gone " + execution_id
    if kind == "error":
        return "error %s %s" % (execution_id, b64json(str(fields["message"])))
    if kind == "data":  # followed by ``size`` bytes: the file past ``offset`` (size 0: nothing new, or no file)
        if fields["name"] not in READABLE:
            raise ValueError("bad data name %r" % fields["name"])
        return "data %s %s %d %d" % (execution_id, fields["name"], int(fields["offset"]), int(fields["size"]))
    raise ValueError("unknown event kind %r" % kind)


def _opt(text: str, convert):
    return None if text == "-" else convert(text)


def parse_event(line: str) -> tuple:
    """(kind, execution_id, fields) of an event header line; ValueError for anything else."""
    words = line.strip().split(" ")
    kind = words[0]
    try:
        if kind == "hello" and len(words) == 3:
            return "hello", "", {"protocol": int(words[1]), "pid": int(words[2])}
        if kind == "pong" and len(words) == 2 and _TOKEN.match(words[1]):
            return "pong", "", {"token": words[1]}
        if len(words) < 2:
            raise ValueError("short")
        execution_id = _check_id(words[1])
        if kind == "started" and len(words) == 4:
            return "started", execution_id, {"pid": int(words[2]), "started": float(words[3])}
        if kind == "exited" and len(words) == 7 and _SHA.match(words[6]):
            size = int(words[5])
            if size < 0:
                raise ValueError("negative size")
            return "exited", execution_id, {"code": _opt(words[2], int), "started": _opt(words[3], float),
                                            "ended": float(words[4]), "size": size, "sha256": words[6]}
        if kind == "gone" and len(words) == 2:
            return "gone", execution_id, {}
        if kind == "error" and len(words) == 3:
            return "error", execution_id, {"message": str(unb64json(words[2]))}
        if kind == "data" and len(words) == 5 and words[2] in READABLE and words[3].isdigit() and words[4].isdigit():
            size = int(words[4])
            if size > MAX_READ:
                raise ValueError("data frame too large")
            return "data", execution_id, {"name": words[2], "offset": int(words[3]), "size": size}
    except ValueError:
        pass
    raise ValueError("not an agent event: %r" % line[:80])


def split_lines(buffer: bytes) -> tuple:
    """Complete lines of a buffer and the unfinished rest (a writer may be mid-line)."""
    head, sep, rest = buffer.rpartition(b"\n")
    if not sep:
        return [], buffer
    return [line.decode("utf-8", "replace") for line in head.split(b"\n") if line.strip()], rest


def exit_code_of(status: int) -> int:
    """A wait status as a shell would report it (128+N for a signal), without Python 3.9's helper."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


