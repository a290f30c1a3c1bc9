"""The environment probe's output format, record_env's file, and which executions carry the probe."""
from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import gevent
import pytest

from orchestra.environment import PIP_FREEZE_PATH, Environment, Gpu
from runaway.agent import environment_probe as probe
from runaway.backend import Collected, Job, Slot
from runaway.environment_capture import (CAPTURE_FILE, ENV_VARS_FILE, EnvironmentCapture, git_blob_id,
                                         parse_capture, parse_env_vars, render_probed, render_record_env,
                                         summary_of, strip_prefixes, PROBE_MIN_TIMEOUT)

NVIDIA_QUERY = "NVIDIA H200, 143771, GPU-1a2b, 550.54.15\nNVIDIA H200, 143771, GPU-3c4d, 550.54.15\n"


def test_probe_parsers_read_what_nodes_print() -> None:
    assert probe.parse_os_release('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n') == \
        "Debian GNU/Linux 12 (bookworm)"
    assert probe.parse_os_release("NAME=x\n") is None
    assert probe.parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n") == \
        "AMD EPYC 9654 96-Core Processor"
    assert probe.parse_meminfo("MemTotal:       4096 kB\nMemFree: 1 kB\n") == 4096 * 1024
    gpus, driver = probe.parse_nvidia_query(NVIDIA_QUERY)
    assert gpus == [{"name": "NVIDIA H200", "memory_mib": 143771, "uuid": "GPU-1a2b"},
                    {"name": "NVIDIA H200", "memory_mib": 143771, "uuid": "GPU-3c4d"}] and driver == "550.54.15"
    assert probe.parse_cuda_version("| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  CUDA Version: 12.4 |") == "12.4"
    assert probe.parse_driver_version("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug\n") == \
        "535.104.05"
    assert probe.parse_loaded_modules("gcc/12.2:cuda/12.4") == ["gcc/12.2", "cuda/12.4"]
    assert probe.parse_loaded_modules(None) == []


def test_render_freeze_reads_as_pip_freeze_does() -> None:
    text = probe.render_freeze([("jsonschema", "4.26.0", None), ("Flask", "3.1.3", None),
                                ("jsonschema-path", "0.5.0", None), ("flask-cors", "6.0.2", None),
                                ("mine", "0.1", "file:///work/mine"), ("Flask", "1.0", None)])
    assert text == ("Flask==3.1.3\nflask-cors==6.0.2\njsonschema==4.26.0\njsonschema-path==0.5.0\n"
                    "mine @ file:///work/mine\n")
    from orchestra.environment import parse_pip_freeze
    assert parse_pip_freeze(text)["mine"] == "file:///work/mine" and parse_pip_freeze(text)["flask"] == "3.1.3"


def test_freeze_packages_matches_pip_freeze_here() -> None:
    """importlib.metadata's list is pip freeze's, bar editable installs (named by URL instead)."""
    ours = probe.freeze_packages()
    pips = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"], capture_output=True, text=True,
                          check=True).stdout
    plain = {line for line in pips.splitlines() if "==" in line and not line.startswith("#")}
    assert plain <= set(ours.splitlines())


def test_render_then_parse_gives_the_environment_back() -> None:
    data = {"format": 1, "os": "Debian 12", "kernel": "6.1.0", "cpu": "EPYC", "cores": 16, "memory": 1 << 30,
            "python": "3.11.2 /usr/bin/python3", "gpus": probe.parse_nvidia_query(NVIDIA_QUERY)[0],
            "driver": "550.54.15", "cuda": "12.4", "pip_freeze": "numpy==1.26.4\n", "conda_export": None,
            "modules": ["cuda/12.4"]}
    capture = parse_capture(probe.render(data))
    assert capture is not None and capture.error is None
    assert capture.environment == Environment(os="Debian 12", kernel="6.1.0", cpu="EPYC", cores=16, memory=1 << 30,
                                              gpus=(Gpu("NVIDIA H200", 143771, "GPU-1a2b"),
                                                    Gpu("NVIDIA H200", 143771, "GPU-3c4d")),
                                              driver="550.54.15", cuda="12.4", python="3.11.2 /usr/bin/python3",
                                              modules=("cuda/12.4",))
    assert capture.pip_freeze == "numpy==1.26.4\n" and capture.conda_export is None
    assert capture.blobs() == {PIP_FREEZE_PATH: b"numpy==1.26.4\n"}
    summary = summary_of(capture, {"SLURM_JOB_ID": "42"})
    assert summary["packages_blob"] == git_blob_id(b"numpy==1.26.4\n") and summary["vars"] == {"SLURM_JOB_ID": "42"}
    assert "conda_blob" not in summary
    assert probe.render(data) == probe.render(dict(reversed(list(data.items()))))  # same node, same bytes


@pytest.mark.parametrize("text", ["", "not json", "[1]", '{"cores": "many", "gpus": [3, {"x": 1}]}'])
def test_parse_capture_is_lenient_with_garbage(text: str) -> None:
    capture = parse_capture(text)
    assert capture is None or capture.environment == Environment()


def test_git_blob_id_is_gits() -> None:
    out = subprocess.run(["git", "hash-object", "--stdin"], input=b"numpy==1\n", capture_output=True, check=True)
    assert git_blob_id(b"numpy==1\n") == out.stdout.decode().strip()


def run_sh(script: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["/bin/sh", "-c", script], cwd=cwd, env=env, check=True)


def test_record_env_renders_builtins_and_parses_back(tmp_path: Path) -> None:
    (tmp_path / ".orchestra").mkdir()
    names = ["CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "ODD", "UNSET_ONE", "EMPTY"]
    script = render_record_env(names)
    assert "$(" not in script and "`" not in script  # no process per execution
    run_sh(script + "true", tmp_path, {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42",
                                       "ODD": "a 'b'\nSLURM_JOB_ID=7 $x", "EMPTY": ""})
    text = (tmp_path / ENV_VARS_FILE).read_text()
    assert parse_env_vars(text, names) == {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "42",
                                           "ODD": "a 'b'\nSLURM_JOB_ID=7 $x", "EMPTY": ""}
    assert render_record_env([]) == ""
    with pytest.raises(ValueError, match="not an environment variable name"):
        render_record_env(["A;rm -rf /"])


def test_probe_prefix_runs_on_this_machine_and_caches(tmp_path: Path) -> None:
    (tmp_path / ".orchestra").mkdir()
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    run_sh(render_probed("echo user-output", "abc123"), tmp_path, env)
    capture = parse_capture((tmp_path / CAPTURE_FILE).read_text())
    assert capture is not None and capture.error is None, (tmp_path / CAPTURE_FILE).read_text()
    assert capture.environment.cores and capture.environment.python
    cached = list((tmp_path / "cache" / "orchestra" / "environment").glob("abc123-*.json"))
    assert len(cached) == 1 and cached[0].read_text() == (tmp_path / CAPTURE_FILE).read_text()
    run_sh(render_probed("true", "abc123"), tmp_path, env)  # read back: no second capture
    assert len(list((tmp_path / "cache" / "orchestra" / "environment").glob("abc123-*.json"))) == 1
    # a package installed meanwhile (a new entry in a directory on sys.path): captured again
    site = tmp_path / "site"
    site.mkdir()
    env["PYTHONPATH"] = str(site)
    run_sh(render_probed("true", "abc123"), tmp_path, env)
    (site / "newpkg-1.0.dist-info").mkdir()
    run_sh(render_probed("true", "abc123"), tmp_path, env)
    assert len(list((tmp_path / "cache" / "orchestra" / "environment").glob("abc123-*.json"))) == 3


def test_probe_source_is_python36_clean() -> None:
    """It runs with whatever python a node has (the agent's floor: 3.6): no newer syntax."""
    source = Path(probe.__file__).read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    assert not any(isinstance(node, ast.AnnAssign) for node in ast.walk(tree))
    assert "from __future__ import annotations" not in source


def collected_with(tmp_path: Path, files: dict[str, bytes]) -> Collected:
    return Collected(tmp_path, tmp_path / "o", tmp_path / "e", [], contents=files)


def test_one_execution_per_node_and_commit_carries_the_probe(tmp_path: Path) -> None:
    capture = EnvironmentCapture()
    job, other = Job("e1", "c0ffee", "python3 train.py"), Job("e2", "c0ffee", "python3 train.py")
    slot_a, slot_b = Slot("h", 0, node="n1"), Slot("h", 1, node="n2")
    first = capture.prepare(job, slot_a)
    assert first is not job and first.command == render_probed("python3 train.py", "c0ffee") and CAPTURE_FILE in first.command
    assert capture.prepare(other, slot_a) is other  # one probe in flight per node and commit
    text = probe.render({"format": 1, "os": "X", "pip_freeze": "a==1\n"}).encode()
    waiter = gevent.spawn(capture.absorb, slot_a, other, collected_with(tmp_path, {CAPTURE_FILE: text}), False)
    gevent.sleep(0)
    assert not waiter.ready()  # ended before the probing one: it waits for its capture
    got = capture.absorb(slot_a, job, collected_with(tmp_path, {CAPTURE_FILE: text}), probed=True)
    assert got is not None and got.environment.os == "X"
    # ...and a file in a recycled run directory of an execution that did not run the probe is never read
    assert waiter.get(timeout=5) is got
    assert capture.prepare(job, slot_a) is job  # known now: no cost per execution
    assert capture.absorb(slot_a, job, None, probed=False) is got
    assert capture.prepare(job, slot_b) is not job  # another node
    assert capture.prepare(Job("e3", "beef", "x"), slot_a).command != "x"  # another commit
    # a node without python is asked a bounded number of times, then left alone
    for _ in range(3):
        capture.absorb(slot_b, job, collected_with(tmp_path, {}), probed=True)
        assert capture.prepare(job, slot_b) is not job or _ == 2
    assert capture.prepare(job, slot_b) is job
    assert EnvironmentCapture(enabled=False).prepare(job, slot_a) is job


def test_a_long_probing_execution_is_not_waited_for_forever(tmp_path: Path) -> None:
    capture = EnvironmentCapture(wait=0.01)
    job, other, third = Job("e1", "c", "x"), Job("e2", "c", "x"), Job("e3", "c", "x")
    slot = Slot("h", 0)
    assert capture.prepare(job, slot) is not job
    assert capture.absorb(slot, other, collected_with(tmp_path, {}), probed=False) is None
    assert capture.prepare(third, slot) is not third  # the next launch probes for itself


def test_probe_failure_is_reported_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def boom(environ, commit):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(probe, "cached_capture", boom)
    assert probe.main(["abc"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["error"] == "RuntimeError: disk on fire"
    assert parse_capture(json.dumps(out)).error == "RuntimeError: disk on fire"


@pytest.mark.parametrize("command, code", [("echo out; false", 1), ("echo out; (exit 7)  # a comment", 7),
                                           ("echo out", 0)])
def test_a_probed_command_keeps_its_status_and_output_and_the_capture_is_whole(tmp_path: Path, command: str,
                                                                                code: int) -> None:
    """Through the real wrapper: the probe runs beside the command, the wrapper waits for it, and the exit
    code the EXIT trap writes is the command's (a trailing comment cannot swallow the wait)."""
    from runaway.rundir import EXIT_FILE, MARKER, STDOUT_FILE, WRAPPER, parse_exit_code

    (tmp_path / ".orchestra").mkdir()
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(["/bin/sh", "-c", WRAPPER, MARKER, render_probed(command, "abc123")], cwd=tmp_path, env=env)
    assert done.returncode == code
    assert parse_exit_code((tmp_path / EXIT_FILE).read_text()) == code
    assert (tmp_path / STDOUT_FILE).read_text() == "out\n"
    capture = parse_capture((tmp_path / CAPTURE_FILE).read_text())
    assert capture is not None and capture.error is None
    assert strip_prefixes(render_probed(command, "abc123"), "abc123") == command


def test_executions_with_a_short_timeout_carry_no_probe() -> None:
    """Their end would wait for the probe: a `timeout: 1s` execution was killed by a cold node's listing."""
    job = Job("e1", "c" * 40, "true", timeout=2.0)
    slot = Slot("localhost", 0)
    capture = EnvironmentCapture()
    assert capture.prepare(job, slot) is job
    longer = dataclasses.replace(job, timeout=PROBE_MIN_TIMEOUT)
    assert capture.prepare(longer, slot).command == render_probed("true", "c" * 40)
