"""Metrics lines reach the controller exactly once, in order, across an sshd restart (issue 13).

A private sshd (tests/integration/private_sshd.py; never the shared one) serves an ssh profile; the
execution writes a metrics line, waits until the controller has committed it, the test restarts that
sshd (every session dropped, the agent's included), the execution writes two more lines and waits
again until they are committed. Every intermediate `.orchestra/metrics.jsonl` on the branch must be a
prefix of what the execution wrote: a line read twice, or skipped, would show there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import GIT_ENV, git, make_campaign
from tests.integration.private_sshd import PrivateSSHD

WRITER_PY = """\
import json, os, sys, time
gates = sys.argv[1]
def metric(step):
    with open(os.environ["ORCHESTRA_METRICS"], "a") as f:
        f.write(json.dumps({"step": step, "loss": 1.0 / step}) + "\\n")
def wait(name):
    for _ in range(3000):
        if os.path.exists(os.path.join(gates, name)):
            return
        time.sleep(0.1)
metric(1)
wait("gate1")
metric(2)
metric(3)
wait("gate2")
metric(4)
"""


@pytest.fixture
def private_sshd(devcluster, tmp_path: Path) -> Iterator[PrivateSSHD]:
    server = PrivateSSHD(Path(f"/tmp/orchestra-private-sshd-{uuid.uuid4().hex[:8]}"), devcluster.identity)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def _until(check, rounds: int = 1200):  # type: ignore[no-untyped-def]
    import time

    for _ in range(rounds):
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError("never happened")


@pytest.mark.parametrize("launcher", ["agent", "shell"])
def test_metrics_exactly_once_across_an_sshd_restart(private_sshd: PrivateSSHD, tmp_path: Path,
                                                     launcher: str) -> None:
    gates = Path(f"/tmp/orchestra-live-gates-{uuid.uuid4().hex[:8]}")
    gates.mkdir(mode=0o777)
    gates.chmod(0o777)
    workdir = f"/tmp/orchestra-test-work/reconnect{uuid.uuid4().hex[:8]}"
    manifest = f"""\
name: reconnect
command: python3 writer.py {gates}
metrics: {{every: 1s}}
profile: priv
profiles:
  priv: {{kind: ssh, host: {private_sshd.alias}, slots: 1, ssh_config: {private_sshd.ssh_config},
          workdir: {workdir}, poll_interval: 0.3, launcher: {launcher}}}
"""
    root = make_campaign(tmp_path / "camp", manifest, {"writer.py": WRITER_PY})
    run = subprocess.Popen([sys.executable, "-m", "expegit", "run", "-q"], cwd=root, env=dict(os.environ, **GIT_ENV),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        execution_id = _until(lambda: git(root, "for-each-ref", "--format=%(refname:lstrip=3)",
                                          "refs/heads/executions").stdout.strip())

        def committed_steps() -> list[int]:
            shown = git(root, "show", f"executions/{execution_id}:.orchestra/metrics.jsonl", check=False)
            return [json.loads(line)["step"] for line in shown.stdout.splitlines()] if shown.returncode == 0 else []

        _until(lambda: committed_steps() == [1])
        private_sshd.restart()  # every session dropped, the controller's and the agent's
        (gates / "gate1").touch()
        _until(lambda: committed_steps() == [1, 2, 3])
        assert run.poll() is None  # streamed while it runs, through the new connection
        (gates / "gate2").touch()
        _out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        history = [h for h in git(root, "log", "--format=%H", f"executions/{execution_id}").stdout.split()]
        versions = []
        for sha in history:
            shown = git(root, "show", f"{sha}:.orchestra/metrics.jsonl", check=False)
            if shown.returncode == 0:
                versions.append([json.loads(line)["step"] for line in shown.stdout.splitlines()])
        assert versions[0] == [1, 2, 3, 4]  # the final commit: the whole file
        for version in versions:  # every intermediate one: a prefix, no line twice, none skipped
            assert version == [1, 2, 3, 4][:len(version)], versions
        assert [1, 2, 3] in versions
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        shutil.rmtree(gates, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
