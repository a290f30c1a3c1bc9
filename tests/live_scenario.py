"""One scenario shared by the local, SSH and Slurm tests of live logs and metrics (issue 13).

An execution prints a line and writes a metrics line, then waits on a gate file the test creates; the
test sees the line through `expegit logs -f` (a separate process from the controller, `expegit run`) and
the metrics point committed on the branch while the execution still waits, then opens the gates. Bounded
loops, no timing assertions: every wait is "until it shows, at most N rounds".
"""
from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from tests.helpers import GIT_ENV, cli, git, make_campaign

LIVE_PY = """\
import json, os, sys, time
gates = sys.argv[1]
def metric(point):
    with open(os.environ["ORCHESTRA_METRICS"], "a") as f:
        f.write(json.dumps(point) + "\\n")
def wait(name):
    for _ in range(3000):  # bounded: 5 minutes at most
        if os.path.exists(os.path.join(gates, name)):
            return
        time.sleep(0.1)
print("line one", flush=True)
metric({"step": 1, "loss": 0.5})
wait("gate1")
print("line two", flush=True)
metric({"step": 2, "loss": 0.25})
wait("gate2")
print("step=3 loss=0.125", flush=True)
"""


def gate_dir() -> Path:
    """Readable by the dev cluster's unprivileged user too (tmp_path is not)."""
    path = Path(tempfile.mkdtemp(prefix="orchestra-live-gates-", dir="/tmp"))
    path.chmod(0o777)
    return path


def live_campaign(root: Path, gates: Path, profiles: str = "", profile: str = "local") -> Path:
    manifest = f"""\
name: live
command: python3 live.py {gates}
metrics: {{every: 1s, pattern: 'step=(?P<step>\\d+) loss=(?P<loss>[0-9.e-]+)'}}
profile: {profile}
{profiles}"""
    return make_campaign(root, manifest, {"live.py": LIVE_PY})


def _lines(stream, into: "queue.Queue[str | None]") -> None:
    for line in iter(stream.readline, ""):
        into.put(line.rstrip("\n"))
    into.put(None)


def _until(check: Callable[[], object], rounds: int = 600, pause: float = 0.25) -> object:
    import time

    for _ in range(rounds):
        found = check()
        if found:
            return found
        time.sleep(pause)
    raise AssertionError("never happened")


def run_live_scenario(root: Path, gates: Path, run_args: tuple[str, ...] = ()) -> dict:
    """Drive the scenario; returns what was seen (the test asserts on it)."""
    env = dict(os.environ, **GIT_ENV)
    run = subprocess.Popen([sys.executable, "-m", "expegit", "run", "-q", *run_args], cwd=root, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    logs = None
    try:
        def branch() -> str:
            return git(root, "for-each-ref", "--format=%(refname:lstrip=3)", "refs/heads/executions").stdout.strip()

        execution_id = str(_until(branch))
        logs = subprocess.Popen([sys.executable, "-m", "expegit", "logs", "-f", execution_id], cwd=root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=_lines, args=(logs.stdout, lines), daemon=True).start()
        first = lines.get(timeout=300)
        # the execution now waits on gate1: this line came while it runs
        assert run.poll() is None and not (gates / "gate1").exists()

        def streamed() -> str:
            shown = git(root, "show", f"executions/{execution_id}:.orchestra/metrics.jsonl", check=False)
            return shown.stdout if shown.returncode == 0 and '"step": 1' in shown.stdout else ""

        streamed_metrics = str(_until(streamed))
        state_while = json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)[0]["state"]
        status = cli(root, "expegit", "status", check=True).stdout
        (gates / "gate1").touch()
        second = lines.get(timeout=300)
        (gates / "gate2").touch()
        rest = []
        while True:
            line = lines.get(timeout=300)
            if line is None:
                break
            rest.append(line)
        logs_rc = logs.wait(timeout=300)
        run_out, run_err = run.communicate(timeout=300)
        final = git(root, "show", f"executions/{execution_id}:.orchestra/metrics.jsonl").stdout
        return {"id": execution_id, "first": first, "second": second, "rest": rest, "logs_rc": logs_rc,
                "run_rc": run.returncode, "run_err": run_err, "streamed": streamed_metrics,
                "state_while": state_while, "status": status, "final": final}
    finally:
        for proc in (logs, run):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def check_live_result(seen: dict) -> None:
    assert seen["first"] == "line one"
    assert seen["second"] == "line two"
    assert seen["rest"] == ["step=3 loss=0.125"]
    assert seen["logs_rc"] == 0 and seen["run_rc"] == 0, seen["run_err"]
    assert seen["state_while"] == "running"
    assert f"running {seen['id']}" in seen["status"] and "step=1 loss=0.5" in seen["status"], seen["status"]
    assert [json.loads(line) for line in seen["streamed"].splitlines()] == [{"step": 1, "loss": 0.5}]
    # the end: the file's points in order, then the pattern's point read from stdout, each once
    assert [json.loads(line) for line in seen["final"].splitlines()] == [
        {"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.25}, {"step": 3, "loss": 0.125}]
