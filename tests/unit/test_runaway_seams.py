"""runaway's seams hold: every backend the factory builds has every method the Backend protocol
declares (callers never probe with getattr), runaway's modules import no cycle (late imports included),
the local path never imports paramiko, and the agent launcher routes each execution to the right way."""
from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from runaway.backend import Backend, Job, Outcome, RunHandle, Slot
from runaway.factory import make_backend
from runaway.launchers import Found, Place
from runaway.launchers.agent import AgentLauncher
from runaway.profiles import LocalProfile, build_profile
from runaway.rundir import META_DIR, NODE_FILE, NODE_META

RUNAWAY = Path(__file__).resolve().parents[2] / "runaway"


def _protocol_members() -> dict[str, object]:
    members = {name: value for name, value in vars(Backend).items()
               if not name.startswith("_") and callable(value)}
    for name in Backend.__annotations__:
        members.setdefault(name, None)
    return members


def _profiles(tmp_path: Path):
    ssh = dict(ssh_config=os.devnull, workdir="~/.w")
    yield LocalProfile("local", workdir=str(tmp_path))
    for launcher in ("agent", "shell"):
        yield build_profile("h", {"kind": "ssh", "hosts": ["a", "b"], "launcher": launcher, **ssh})
    for launcher in ("agent", "srun"):
        yield build_profile("c", {"kind": "slurm", "host": "f", "launcher": launcher,
                                  "allocation": {"nodes": 1, "walltime": "1h"}, **ssh})
    yield build_profile("p", {"kind": "command", "host": "f", "allocation": {"nodes": 1, "walltime": "1h"},
                              "start": "qsub", "list_nodes": "qstat {job_id}", "cancel": "qdel {job_id}",
                              "launch": "pbsdsh -h {node} --", **ssh})


def test_every_backend_declares_what_callers_use(tmp_path):
    members = _protocol_members()
    for profile in _profiles(tmp_path):
        backend = make_backend(profile)
        try:
            for name, declared in members.items():
                assert hasattr(backend, name), f"{type(backend).__name__} ({profile.kind}) lacks {name}"
                if declared is not None:
                    want = list(inspect.signature(declared).parameters)[1:]
                    got = list(inspect.signature(getattr(backend, name)).parameters)
                    assert got == want, f"{type(backend).__name__}.{name}{got} != Backend.{name}{want}"
        finally:
            backend.close()


def _imports(path: Path, package: str) -> set[str]:
    """Every runaway module ``path`` imports, at the top or late (inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_runaway_modules_import_no_cycle():
    modules: dict[str, Path] = {}
    for path in RUNAWAY.rglob("*.py"):
        parts = ("runaway",) + path.relative_to(RUNAWAY).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        graph[name] = {m for m in _imports(path, package) if m in modules and m != name
                       and not name.startswith(m + ".")}  # a module's own package is not a cycle
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, trail + [dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_local_path_never_imports_paramiko(tmp_path):
    code = ("import sys, pathlib, expegit.runner, runaway.exec, runaway.cli\n"
            "from runaway.factory import make_backend\nfrom runaway.profiles import LocalProfile\n"
            f"make_backend(LocalProfile('local'), workdir=pathlib.Path({str(tmp_path)!r}))\n"
            "print(sorted(m for m in ('paramiko', 'fabric', 'runaway.hosts') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------ the agent launcher's routing
class _Agent:
    def __init__(self) -> None:
        self.launched: set[str] = set()
        self.meta: dict[str, dict[str, str] | None] = {}
        self.down = False

    def owns(self, execution_id: str) -> bool:
        return execution_id in self.launched

    def launch(self, job, code, *, env, setup, slot_index, meta):
        self.launched.add(job.execution_id)
        self.meta[job.execution_id] = meta
        return f"/w/runs/{job.execution_id}", 42, 1.0

    def wait(self, execution_id, timeout, started):
        return Outcome(0, started, 2.0, error="agent")


class _Files:
    def find(self, execution_id, host, remote_dir):
        return Found(f"/w/runs/{execution_id}", 7, 1.0, 3)

    def wait(self, handle, timeout):
        return Outcome(1, handle.started, 2.0, error="files")


class _Starter:
    def __init__(self, agent: _Agent) -> None:
        self.agent = agent

    def install(self) -> None:
        pass

    def start(self, places):
        return {place: (self.agent, {}) for place in places}


class _Link:
    def fail_all(self, error): pass

    def close(self): pass


def test_agent_launcher_routes_launched_found_and_orphaned_executions():
    agent = _Agent()
    agent.link = _Link()  # type: ignore[attr-defined]
    launcher = AgentLauncher(_Starter(agent), _Files(), lost_error="its allocation ended")
    place = Place("f", "n1", "77")
    launcher.places_up([place])
    slot = Slot("f", 0, "n1", "77")
    handle = launcher.launch(place, slot, Job("e1", "c0ffee", "true"), lambda c: iter(()), {})
    assert launcher.wait(handle, None).error == "agent"  # launched here: its agent answers
    # The node is written beside the run, where a resume's probe reads it (NODE_FILE), as the shell does.
    assert agent.meta["e1"] == {NODE_META: "n1"} and NODE_FILE == f"{META_DIR}/{NODE_META}"
    launcher.places_up([Place("h", None, None)])
    launcher.launch(Place("h", None, None), Slot("h", 0), Job("e3", "c0ffee", "true"), lambda c: iter(()), {})
    assert agent.meta["e3"] is None  # an SSH host is no scheduler node
    found = launcher.find("e2", "f", None)
    assert found is not None and found.slot == 3
    assert launcher.wait(RunHandle("e2", Slot("f", -1), found.remote_dir), None).error == "files"
    launcher.places_down([place], "gone")  # its allocation ended: its agent is gone with it
    orphan = launcher.wait(RunHandle("e1", slot, handle.remote_dir, started=1.0), None)
    assert orphan.lost and orphan.error == "its allocation ended"
