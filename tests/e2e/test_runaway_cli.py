"""`runaway exec|batch|test` as a user runs them: on the local profile, and on the dev cluster (ssh, slurm)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.helpers import cli, git
from tests.integration.conftest import devcluster  # noqa: F401,F811  (the session fixture)

GEN = """\
import os, sys, time
for i in range(3):
    print("line", i, flush=True)
    time.sleep(0.2)
print("to stderr", file=sys.stderr)
os.makedirs("out", exist_ok=True)
open("out/result.txt", "w").write("result " + " ".join(sys.argv[1:]) + "\\n")
sys.exit(int(os.environ.get("CODE", "0")))
"""


def _repo(root: Path, manifest: str = "") -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "gen.py").write_text(GEN)
    (root / "data.txt").write_text("shipped\n")
    if manifest:
        (root / "orchestra.yaml").write_text(manifest)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "code")
    return root


# ------------------------------------------------------------------------------------------ local
def test_exec_local_git_repo_streams_output_and_brings_results_back(tmp_path):
    repo = _repo(tmp_path / "repo")
    result = cli(repo, "runaway", "exec", "local", "--", "python3", "gen.py", "a b", "c", env={"CODE": "3"})
    assert result.returncode == 3, result.stderr
    assert result.stdout == "line 0\nline 1\nline 2\n"
    assert "to stderr" in result.stderr
    assert (repo / "out" / "result.txt").read_text() == "result a b c\n"
    assert not (repo / ".orchestra").exists()  # only what the run created or changed comes back
    assert git(repo, "status", "--porcelain").stdout == "?? out/\n"


def test_exec_local_plain_directory_and_results_dir(tmp_path):
    work = tmp_path / "plain"
    work.mkdir()
    (work / "gen.py").write_text(GEN)
    results = tmp_path / "res"
    result = cli(work, "runaway", "exec", "local", "--results", str(results), "--", "python3 gen.py x; echo $((1+1))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("2\n")  # one word: a shell command line
    assert (results / "out" / "result.txt").read_text() == "result x\n"
    assert not (results / "gen.py").exists()  # the shipped code, unchanged, is not copied back
    assert not (work / "out").exists()


def test_exec_local_dirty_tree_warns(tmp_path):
    repo = _repo(tmp_path / "repo")
    (repo / "data.txt").write_text("edited\n")
    result = cli(repo, "runaway", "exec", "local", "--", "cat", "data.txt")
    assert result.returncode == 0
    assert result.stdout == "shipped\n"  # HEAD runs, not the working tree
    assert "uncommitted changes are not shipped" in result.stderr


def test_batch_local_quotes_values_and_fills_line_dirs(tmp_path):
    repo = _repo(tmp_path / "repo")
    params = tmp_path / "params.txt"
    params.write_text("lr=0.1 seed=1\n# a comment\n\nlr='0.2 $(touch PWNED)' seed=2\nlr=0.3 seed=3\n")
    result = cli(repo, "runaway", "batch", "local", "--params", str(params), "--",
                 "python3", "gen.py", "--lr={lr}", "{seed}", env={"CODE": "0"})
    assert result.returncode == 0, result.stdout + result.stderr
    dirs = sorted(p.name for p in (repo / "runaway-results").iterdir())
    assert len(dirs) == 3 and dirs[0].startswith("001-lr=0.1,seed=1"), dirs
    texts = [(repo / "runaway-results" / d / "out" / "result.txt").read_text() for d in dirs]
    assert texts == ["result --lr=0.1 1\n", "result --lr=0.2 $(touch PWNED) 2\n", "result --lr=0.3 3\n"]
    first = repo / "runaway-results" / dirs[0]
    assert (first / "stdout").read_text() == "line 0\nline 1\nline 2\n"
    assert (first / "exit_code").read_text().strip() == "0"
    assert not list(repo.rglob("PWNED"))


def test_batch_reports_failures_and_bad_lines(tmp_path):
    repo = _repo(tmp_path / "repo")
    params = tmp_path / "p.txt"
    params.write_text("code=0\ncode=5\n")
    result = cli(repo, "runaway", "batch", "local", "--params", str(params), "--results", str(tmp_path / "r"),
                 "--", "sh -c 'exit \"$1\"' sh {code}")
    assert result.returncode == 1, result.stderr
    assert "exit 5" in result.stdout and "1 failed" in result.stderr
    params.write_text("nope=1\n")
    result = cli(repo, "runaway", "batch", "local", "--params", str(params), "--", "echo", "{code}")
    assert result.returncode == 2 and "p.txt:1: the command has no placeholder {nope}" in result.stderr


def test_errors_are_one_line_with_exit_codes(tmp_path):
    repo = _repo(tmp_path / "repo")
    result = cli(repo, "runaway", "exec", "nosuch", "--", "true")
    assert result.returncode == 4 and "unknown profile 'nosuch'" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli(repo, "runaway", "exec", "local")
    assert result.returncode == 2 and "no command given" in result.stderr


def test_test_local(tmp_path):
    repo = _repo(tmp_path / "repo")
    result = cli(repo, "runaway", "test", "local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    run" in result.stdout and "all steps passed" in result.stdout


def test_personal_profile_is_used_and_failing_step_shows_fix(tmp_path):
    repo = _repo(tmp_path / "repo")
    profiles = Path(os.environ["XDG_CONFIG_HOME"]) / "orchestra" / "profiles"
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "away.yaml").write_text("kind: ssh\nhost: nohost.invalid\nslots: 1\n")
    result = cli(repo, "runaway", "test", "away", timeout=120)
    assert result.returncode == 5, result.stdout + result.stderr
    assert "ok    profile" in result.stdout and "FAIL  connection" in result.stdout
    assert "fix:" in result.stdout


# ------------------------------------------------------------------------------------ dev cluster
def _cluster_manifest(devcluster) -> str:  # noqa: F811
    work = f"/tmp/orchestra-test-work/runaway-{uuid.uuid4().hex[:8]}"
    return f"""\
name: runaway-e2e
command: "true"
profiles:
  dev: {{kind: ssh, host: devcluster, slots: 4, ssh_config: {devcluster.ssh_config}, workdir: {work}-ssh,
        poll_interval: 0.3}}
  cluster: {{kind: slurm, host: devcluster, ssh_config: {devcluster.ssh_config}, slots_per_node: 4,
            workdir: {work}-slurm, poll_interval: 0.3, squeue_interval: 1, launcher: agent,
            allocation: {{nodes: 2, walltime: "00:10:00"}}}}
"""


def test_exec_and_batch_over_ssh(devcluster, tmp_path):  # noqa: F811
    repo = _repo(tmp_path / "repo", _cluster_manifest(devcluster))
    result = cli(repo, "runaway", "exec", "dev", "-e", "CODE=4", "--", "python3", "gen.py", "remote", timeout=120)
    assert result.returncode == 4, result.stderr
    assert result.stdout == "line 0\nline 1\nline 2\n" and "to stderr" in result.stderr
    assert (repo / "out" / "result.txt").read_text() == "result remote\n"
    params = tmp_path / "p.txt"
    params.write_text("".join(f"i={i}\n" for i in range(6)))
    result = cli(repo, "runaway", "batch", "dev", "--params", str(params), "--", "python3", "gen.py", "{i}",
                 timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    dirs = sorted((repo / "runaway-results").iterdir())
    assert [(d / "out" / "result.txt").read_text() for d in dirs] == [f"result {i}\n" for i in range(6)]


def test_test_ssh_and_slurm(devcluster, tmp_path):  # noqa: F811
    repo = _repo(tmp_path / "repo", _cluster_manifest(devcluster))
    result = cli(repo, "runaway", "test", "dev", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("profile", "connection", "tools", "workdir", "run"):
        assert f"ok    {step}" in result.stdout, result.stdout
    result = cli(repo, "runaway", "test", "cluster", timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr
    for step in ("allocation", "nodes", "run", "release"):
        assert f"ok    {step}" in result.stdout, result.stdout
    assert "2 node(s) x 4 slot(s)" in result.stdout


def test_exec_over_slurm(devcluster, tmp_path):  # noqa: F811
    repo = _repo(tmp_path / "repo", _cluster_manifest(devcluster))
    result = cli(repo, "runaway", "exec", "cluster", "--results", str(tmp_path / "res"), "--",
                 "sh -c 'python3 gen.py $SLURMD_NODENAME'", timeout=240)
    assert result.returncode == 0, result.stderr
    assert "line 2" in result.stdout
    text = (tmp_path / "res" / "out" / "result.txt").read_text()
    assert text.startswith("result node"), text


def test_test_names_a_remote_python_too_old_for_the_agent(devcluster, tmp_path):  # noqa: F811
    """`runaway test` says the agent needs a newer python on the host, and how to fix it, before any run."""
    import subprocess

    work = f"/tmp/orchestra-test-work/oldpy-{uuid.uuid4().hex[:8]}"
    fake = f"{work}/python2"
    subprocess.run(["ssh", "-F", devcluster.ssh_config, "devcluster",
                    f"mkdir -p {work} && printf '#!/bin/sh\\necho 2.7\\n' > {fake} && chmod +x {fake}"], check=True)
    manifest = f"""\
name: runaway-e2e
command: "true"
profiles:
  old: {{kind: ssh, host: devcluster, ssh_config: {devcluster.ssh_config}, workdir: {work}, python: {fake}}}
"""
    repo = _repo(tmp_path / "repo", manifest)
    result = cli(repo, "runaway", "test", "old", timeout=120)
    assert result.returncode != 0
    assert "FAIL  tools" in result.stdout or "fail" in result.stdout.lower(), result.stdout
    assert "needs Python 3.6 or later" in result.stdout + result.stderr
    assert "launcher: shell" in result.stdout + result.stderr
