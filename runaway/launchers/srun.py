"""Launching on an allocation's nodes: through a node prefix (``srun --jobid --overlap`` for Slurm, a
``command`` profile's ``launch`` template), and the agent as one resident srun step per node.

The shell way on a node is :class:`runaway.launchers.shell.ShellLauncher` with the provider's prefix:
the wrapper runs on the node, the ``srun`` on the frontend is the process a poll checks for liveness.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence

import gevent

from ..agent_link import serve_command
from ..remote_runs import RemoteRuns
from . import Place
from .agent import AgentRuns, PartialStart, install_agent, start_agent_runs


def srun_prefix(job_id: str, node: str, whole: bool = False) -> str:
    """One task on one node of an existing allocation; --overlap lets steps share the held CPUs.

    ``whole``: the step gets every core the job holds on the node, not one (a node agent that binds
    executions to cores by resources must be allowed to run on all of them under task/affinity or
    task/cgroup); without resources the step is exactly what it always was."""
    return (f"srun --jobid={shlex.quote(job_id)} --nodelist={shlex.quote(node)} -N1 -n1 --overlap "
            f"{'--whole ' if whole else ''}--quiet --kill-on-bad-exit=0 ")


class NodeAgents:
    """One resident agent step per node (started detached on the frontend, so neither a dropped
    connection nor this controller's death ends it), then one attach session per node."""

    def __init__(self, runs: RemoteRuns, python: str, name: str) -> None:
        self.runs = runs
        self.python = python
        self.name = name
        self.agent_path = ""
        self.whole = False  # set when executions are placed by resources (see srun_prefix)

    def install(self) -> None:
        self.agent_path = install_agent(self.runs.host, self.runs.workdir)

    def agent_dir(self, job_id: str, node: str) -> str:
        return f"{self.runs.workdir}/agents/{job_id}.{node}"

    def start(self, places: Sequence[Place]) -> dict[Place, tuple[AgentRuns, dict[str, str]]]:
        parts = []
        for place in places:
            assert place.allocation is not None and place.node is not None
            directory = self.agent_dir(place.allocation, place.node)
            d = shlex.quote(directory)
            serve = serve_command(self.python, self.agent_path, directory, self.runs.workdir)
            # Idempotent: a retried tick must not start a second agent step for the node.
            parts.append(
                f"mkdir -p {d} && {{ {{ [ -s {d}/srun_pid ] && kill -0 \"$(cat {d}/srun_pid)\" 2>/dev/null; }} || {{ "
                f"setsid nohup {srun_prefix(place.allocation, place.node, self.whole)}{serve} </dev/null >>{d}/agent.log 2>&1 & "
                f"echo $! > {d}/srun_pid; }}; }} && "
                f"printf '%s %s\\n' {shlex.quote(place.node)} \"$(cat {d}/srun_pid)\"")
        result = self.runs.host.run("; ".join(parts), timeout=120)
        pids: dict[str, str] = {}
        for line in result.stdout.splitlines():
            words = line.split()
            if len(words) == 2 and words[1].isdigit():
                pids[words[0]] = words[1]
        links = {place: gevent.spawn(self._attach, place) for place in places}
        gevent.joinall(list(links.values()))
        failed = [f"{place.node}: {g.exception}" for place, g in links.items() if g.exception is not None]
        started: dict[Place, tuple[AgentRuns, dict[str, str]]] = {
            place: (g.value, {"launcher_pid": pids[place.node]} if place.node in pids else {})
            for place, g in links.items() if g.exception is None and g.value is not None}
        if failed:  # those that answered are kept: the next tick retries only the others
            raise PartialStart(f"allocation {places[0].allocation}: the node agents did not answer: "
                               f"{'; '.join(failed)}", started)
        return started

    def _attach(self, place: Place) -> AgentRuns:
        assert place.allocation is not None and place.node is not None
        # -u: srun line-buffers a task's output by default, and results frames are binary.
        prefix = srun_prefix(place.allocation, place.node).replace("srun ", "srun -u ", 1)
        return start_agent_runs(self.runs, self.python, spawn=False,
                                agent_dir=self.agent_dir(place.allocation, place.node), prefix=prefix,
                                name=f"{self.name}:{place.allocation}:{place.node}", reconnect_for=20.0,
                                agent_path=self.agent_path)


def node_prefix(prefix_of: Callable[[str, str], str]) -> Callable[[Place], str]:
    """The shell launcher's prefix for a place of an allocation (``prefix_of(job id, node)``)."""
    def prefix(place: Place) -> str:
        if place.allocation is None or place.node is None:
            return ""
        return prefix_of(place.allocation, place.node)
    return prefix


__all__ = ["NodeAgents", "node_prefix", "srun_prefix"]
