"""expegit as a user runs it: real CLI processes, real git, executions as real local processes."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, cli, git, make_campaign

ECHO_ARGS = """\
import json, os, sys
with open("args.json", "w", encoding="utf-8", errors="surrogateescape") as f:
    json.dump([a.encode("utf-8", "surrogateescape").hex() for a in sys.argv[1:]], f)
"""


def executions(root: Path) -> list[dict]:
    return json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)


def test_example_campaign_end_to_end(tmp_path: Path) -> None:
    result = cli(tmp_path, "expegit", "init", "--example", "quadratic", "camp", check=True)
    root = tmp_path / "camp"
    assert "ready" in result.stdout
    cli(root, "expegit", "check", check=True)
    run = cli(root, "expegit", "run", "-p", "lr=0.001", "-p", "lr=0.01", "--repeat", "2", "--slots", "2")
    assert run.returncode == 0, run.stderr
    assert "4 executions: 4 finished, 0 failed" in run.stderr
    records = executions(root)
    assert len(records) == 4
    assert {r["parameters"]["lr"] for r in records} == {0.001, 0.01}
    assert sorted(r["repeat"] for r in records) == [0, 0, 1, 1]
    for record in records:
        assert record["state"] == "finished" and record["exit_code"] == 0
        assert record["objective"] is not None and record["host"] == "localhost"
        assert record["outputs"] == ["curves/train.csv", "metrics.json"]
        branch = f"executions/{record['id']}"
        diff = git(root, "diff", "--name-only", record["commit"], branch).stdout.split()
        assert sorted(diff) == [".orchestra/execution.yaml", ".orchestra/metrics.jsonl", ".orchestra/pip-freeze.txt",
                                ".orchestra/stderr", ".orchestra/stdout", "curves/train.csv", "metrics.json"]
        curve = [json.loads(line) for line in git(root, "show", f"{branch}:.orchestra/metrics.jsonl").stdout.splitlines()]
        assert [p["epoch"] for p in curve] == list(range(10))  # the example reports its metrics
        metrics = json.loads(git(root, "show", f"{branch}:metrics.json").stdout)
        assert metrics["val_loss"] == pytest.approx(record["objective"])
    # the user's working tree is untouched by runs
    assert git(root, "status", "--porcelain").stdout == ""
    show = cli(root, "expegit", "show", records[0]["id"][:6], check=True).stdout
    assert records[0]["id"] in show and "--- stdout" in show
    status = cli(root, "expegit", "status", check=True).stdout
    assert "4 finished" in status and "best val_loss" in status
    exported = cli(root, "expegit", "export", "--format", "csv", check=True).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 4 and {"param.lr", "objective", "duration"} <= set(rows[0])
    jsonl = cli(root, "expegit", "export", "--format", "jsonl", check=True).stdout.splitlines()
    assert len(jsonl) == 4 and json.loads(jsonl[0])["param.opt"] == "adam"
    # the run directories are gone once committed (the agent keeps a few as hidden spares to recycle)
    left = [p.name for p in (root / ".git" / "orchestra" / "runs").iterdir()]
    assert [name for name in left if not name.startswith(".spare-")] == []


def test_git_expegit_entry_point(tmp_path: Path) -> None:
    if shutil.which("git-expegit") is None:
        pytest.skip("git-expegit is not on PATH (package not installed with its console scripts)")
    make_campaign(tmp_path / "c", "name: c\ncommand: 'true'\n")
    result = subprocess.run(["git", "expegit", "check"], cwd=tmp_path / "c", capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_grid_failures_and_exit_status(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", """\
        name: grid
        command: python3 -c "import sys; sys.exit(int({code}))"
        parameters:
          code: {choices: [0, 3]}
          rep: {type: int, low: 1, high: 3}
        """)
    run = cli(root, "expegit", "run", "--grid")
    assert run.returncode == 1  # some executions failed
    assert "6 executions: 3 finished, 3 failed" in run.stderr
    failed = [r for r in executions(root) if r["state"] == "failed"]
    assert len(failed) == 3 and all(r["exit_code"] == 3 and r["error"] == "exit 3" for r in failed)
    assert len(json.loads(cli(root, "expegit", "list", "--json", "--state", "failed").stdout)) == 3


def test_shell_metacharacters_reach_the_program_byte_for_byte(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", """\
        name: hostile
        command: python3 echo_args.py {msg} {msg}
        parameters:
          msg: {type: str}
        outputs: [args.json]
        """, {"echo_args.py": ECHO_ARGS})
    canary = tmp_path / "canary"
    canary.mkdir()
    values = ["; rm -rf canary", "$(touch pwned)", "`touch pwned2`", "it's", 'say "hi" \\" \\\\',
              "multi\nline\nvalue", "ünïcødé ✓ 😀", "  padded  ", "*", "$HOME", "a\tb", "&& echo x |", "-n"]
    args = []
    for value in values:
        args += ["-p", f"msg={value}"]
    run = cli(tmp_path / "c", "expegit", "run", *args)
    assert run.returncode == 0, run.stderr
    seen = {}
    for record in executions(root):
        raw = git(root, "show", f"executions/{record['id']}:args.json").stdout
        decoded = [bytes.fromhex(h).decode("utf-8") for h in json.loads(raw)]
        assert decoded == [record["parameters"]["msg"]] * 2
        seen[record["parameters"]["msg"]] = decoded[0]
    assert set(seen) == set(values)
    assert canary.exists()
    assert not list(root.rglob("pwned*")) and not list((root / ".git" / "orchestra").rglob("pwned*"))


def test_dirty_tree_is_refused_and_snapshot_runs_it(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", """\
        name: dirty
        command: python3 t.py
        outputs: [out.txt]
        """, {"t.py": "open('out.txt', 'w').write('v1')\n"})
    (root / "t.py").write_text("open('out.txt', 'w').write('v2')\n")
    refused = cli(root, "expegit", "run")
    assert refused.returncode == 8
    assert "uncommitted changes to tracked files (t.py)" in refused.stderr
    assert "--snapshot" in refused.stderr and "Traceback" not in refused.stderr
    assert executions(root) == []
    run = cli(root, "expegit", "run", "--snapshot")
    assert run.returncode == 0, run.stderr
    (record,) = executions(root)
    head = git(root, "rev-parse", "HEAD").stdout.strip()
    assert record["commit"] != head
    assert git(root, "rev-parse", f"{record['commit']}^").stdout.strip() == head
    assert git(root, "show", f"executions/{record['id']}:out.txt").stdout == "v2"
    assert git(root, "show", f"{record['commit']}:t.py").stdout == "open('out.txt', 'w').write('v2')\n"
    # the working tree and index are as the user left them
    assert git(root, "status", "--porcelain").stdout.strip() == "M t.py"


def test_bad_manifest_creates_nothing(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: bad\ncommand: echo {nope}\n")
    for command, prefix in ((["check"], ""), (["run"], "expegit: error: ")):
        result = cli(root, "expegit", *command)
        assert result.returncode == 3
        assert result.stderr.startswith(prefix + "orchestra.yaml:2:15: command: placeholder {nope}")
        assert "Traceback" not in result.stderr
    assert git(root, "for-each-ref", "refs/heads/executions").stdout == ""
    debug = cli(root, "expegit", "--debug", "run")
    assert "Traceback" in debug.stderr


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: u\ncommand: echo {n}\nparameters:\n  n: {type: int, low: 1, high: 5}\n")
    for args, code, text in [(["run", "-p", "n=9"], 2, "outside [1, 5]"),
                             (["run"], 2, "parameter n has no value"),
                             (["run", "--profile", "nowhere", "-p", "n=1"], 4, "unknown profile 'nowhere'"),
                             (["show", "ffff"], 2, "no execution matches"),
                             (["rm", "abc"], 2, "no execution matches")]:
        result = cli(root, "expegit", *args)
        assert result.returncode == code, (args, result.stderr)
        assert text in result.stderr and len(result.stderr.strip().splitlines()) == 1
    outside = cli(tmp_path, "expegit", "status")
    assert outside.returncode == 8 and "not inside a git repository" in outside.stderr


def test_timeout_and_retries(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", """\
        name: slow
        command: python3 t.py {mode}
        parameters:
          mode: {choices: [sleep, flaky]}
        timeout: 1s
        retries: {max: 2, on: [exit], backoff: 0}
        """, {"t.py": """\
            import os, sys, time
            if sys.argv[1] == "sleep":
                time.sleep(30)
            marker = os.path.join(os.environ["MARKER_DIR"], "attempts")
            with open(marker, "a") as f:
                f.write("x")
            sys.exit(0 if os.path.getsize(marker) >= 2 else 1)
            """})
    env = {"MARKER_DIR": str(tmp_path)}
    started = time.time()
    run = cli(root, "expegit", "run", "-p", "mode=sleep", "-p", "mode=flaky", env=env)
    assert time.time() - started < 25
    assert run.returncode == 1
    by_mode = {r["parameters"]["mode"]: r for r in executions(root)}
    assert by_mode["sleep"]["state"] == "failed" and "timed out after 1s" in by_mode["sleep"]["error"]
    assert by_mode["flaky"]["state"] == "finished" and by_mode["flaky"]["attempt"] == 2
    log = git(root, "log", "--format=%s", f"executions/{by_mode['flaky']['id']}").stdout.splitlines()
    assert log[0] == "finished: exit 0" and log[1].startswith("failed: exit 1; retrying")


def test_rm_asks_and_deletes(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: r\ncommand: 'true'\n")
    cli(root, "expegit", "run", check=True)
    (record,) = executions(root)
    refused = cli(root, "expegit", "rm", record["id"])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(executions(root)) == 1
    cli(root, "expegit", "rm", "--yes", record["id"][:5], check=True)
    assert executions(root) == []


RESUME_MANIFEST = """\
name: resumable
command: python3 work.py {i}
parameters:
  i: {type: int, low: 1, high: 8}
outputs: [done.txt]
"""
RESUME_WORK = """\
import os, sys, time
with open(os.path.join(os.environ["LOG_DIR"], "starts.log"), "a") as f:
    f.write(os.environ["ORCHESTRA_EXECUTION_ID"] + "\\n")
time.sleep(1.5)
open("done.txt", "w").write(sys.argv[1])
"""


def _start_controller(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    full_env = dict(os.environ, **GIT_ENV, **env)
    return subprocess.Popen([sys.executable, "-m", "expegit", "run", "--grid", "--slots", "3", *args], cwd=root,
                            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def _wait_for_starts(log: Path, count: int, limit: float = 30) -> None:
    deadline = time.time() + limit
    while time.time() < deadline:
        if log.exists() and len(log.read_text().split()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} executions started in {limit}s")


def test_resume_after_kill_9_runs_nothing_twice(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", RESUME_MANIFEST, {"work.py": RESUME_WORK})
    env = {"LOG_DIR": str(tmp_path)}
    controller = _start_controller(root, env)
    _wait_for_starts(tmp_path / "starts.log", 4)  # the first 3 are done or finishing, more are running
    controller.send_signal(signal.SIGKILL)
    controller.wait(timeout=10)
    before = executions(root)
    assert len(before) == 8
    assert any(r["state"] != "finished" for r in before)
    resume = cli(root, "expegit", "resume", "--slots", "3", env=env)
    assert resume.returncode == 0, resume.stderr
    after = executions(root)
    assert len(after) == 8 and all(r["state"] == "finished" for r in after), [r["state"] for r in after]
    starts = (tmp_path / "starts.log").read_text().split()
    assert sorted(starts) == sorted(r["id"] for r in after), "an execution ran twice or never"
    for record in after:
        assert git(root, "show", f"executions/{record['id']}:done.txt").stdout == str(record["parameters"]["i"])
        # Each record tells its attempt's story, also for those the resume found running without a
        # "running" commit from the dead controller: attempt 1, where and since when, and a running step.
        assert record["attempt"] == 1 and record["started"] and record["slot"] >= 0, record
        subjects = git(root, "log", "--format=%s", f"executions/{record['id']}").stdout.splitlines()
        assert subjects[0].startswith("finished") and subjects[-2].startswith("created"), subjects
    assert cli(root, "expegit", "resume").stderr.strip() == "expegit: nothing to resume"


def test_resume_refuses_while_a_run_is_still_creating_its_executions(tmp_path: Path) -> None:
    """A run counts as a live controller from before its first branch: a resume started while it creates
    them must not adopt what it created (both would then run and commit the same executions)."""
    root = make_campaign(tmp_path / "c", 'name: many\ncommand: "true {i}"\n'
                                         "parameters:\n  i: {type: int, low: 1, high: 4000}\n")
    controller = subprocess.Popen([sys.executable, "-m", "expegit", "run", "--grid", "-q", "--slots", "1"],
                                  cwd=root, env=dict(os.environ, **GIT_ENV), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not git(root, "for-each-ref", "--count=1", "refs/heads/executions").stdout.strip():
            assert time.monotonic() < deadline and controller.poll() is None, "no execution branch appeared"
            time.sleep(0.005)
        resume = cli(root, "expegit", "resume")
        assert resume.returncode == 8 and "another controller" in resume.stderr, resume.stderr
    finally:
        controller.send_signal(signal.SIGINT)
        controller.communicate(timeout=120)


def test_leave_failed_keeps_the_run_directories_of_failed_executions_only(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", 'name: leave\ncommand: "echo trace {i} > trace.txt; exit $(expr {i} % 2)"\n'
                                         "parameters:\n  i: {type: int, low: 1, high: 4}\n")
    run = cli(root, "expegit", "run", "--grid", "--slots", "2", "--leave", "failed")
    assert run.returncode == 1, run.stderr  # two failed
    runs = root / ".git" / "orchestra" / "runs"
    kept = sorted(p.name for p in runs.iterdir() if not p.name.startswith("."))
    failed = sorted(r["id"] for r in executions(root) if r["state"] == "failed")
    assert kept == failed and len(failed) == 2
    for execution_id in kept:  # what the failed execution left, to look at
        assert (runs / execution_id / "trace.txt").read_text().startswith("trace ")
        assert (runs / execution_id / ".orchestra" / "exit_code").read_text().strip() == "1"
    assert cli(root, "expegit", "run", "--leave", "some").returncode == 2  # argparse names the choices


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", RESUME_MANIFEST, {"work.py": RESUME_WORK})
    env = {"LOG_DIR": str(tmp_path)}
    controller = _start_controller(root, env)
    _wait_for_starts(tmp_path / "starts.log", 2)
    controller.send_signal(signal.SIGINT)
    _out, err = controller.communicate(timeout=60)
    assert controller.returncode == 130, err
    assert "expegit resume" in err and "Traceback" not in err
    states = [r["state"] for r in executions(root)]
    assert "cancelled" in states and set(states) <= {"finished", "cancelled", "created"}, states
    resume = cli(root, "expegit", "resume", "--slots", "4", env=env)
    assert resume.returncode == 0, resume.stderr
    assert all(r["state"] == "finished" for r in executions(root))


def test_a_grid_interrupted_while_being_created_is_finished_by_resume_and_run_missing(tmp_path: Path) -> None:
    """Executions are created in batches as slots take them (a grid of 1,000,000 is never all in memory):
    Ctrl-C leaves the points not reached uncreated. `resume` runs the created ones, `run --grid --missing`
    creates and runs the rest, and every point then has exactly one finished execution."""
    from expegit.runner import CREATE_BATCH

    points = CREATE_BATCH + 300
    root = make_campaign(tmp_path / "c", 'name: many\ncommand: "true {i}"\n'
                                         f"parameters:\n  i: {{type: int, low: 1, high: {points}}}\n")
    controller = subprocess.Popen([sys.executable, "-m", "expegit", "run", "--grid", "-q", "--slots", "1"],
                                  cwd=root, env=dict(os.environ, **GIT_ENV), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while git(root, "log", "--all", "--format=%s", "--grep=^finished", "-n1").stdout.strip() == "":
        assert time.monotonic() < deadline and controller.poll() is None, "no execution finished"
        time.sleep(0.1)
    controller.send_signal(signal.SIGINT)
    _out, err = controller.communicate(timeout=120)
    assert controller.returncode == 130, err
    assert "not created" in err and "--missing" in err and "Traceback" not in err, err
    created = executions(root)
    assert CREATE_BATCH <= len(created) < points, len(created)
    resume = cli(root, "expegit", "resume", "--slots", "4")
    assert resume.returncode == 0, resume.stderr
    rest = cli(root, "expegit", "run", "--grid", "--missing", "--slots", "4", "-q")
    assert rest.returncode == 0, rest.stderr
    assert f"expegit: {points - len(created)} executions: " in rest.stderr, rest.stderr
    final = executions(root)
    assert all(r["state"] == "finished" for r in final)
    assert sorted(r["parameters"]["i"] for r in final) == list(range(1, points + 1))
