"""OAR (https://oar.imag.fr): allocations are placeholder jobs from ``oarsub``; ``oarstat -J`` says their
state and nodes; ``oardel`` gives them back; ``oarsh`` reaches a node of one's own job.

Every text format has a pure render and a pure parse function (golden files in tests/unit/golden/):
the oarsub, oarstat and oardel command lines, oarsub's answer and oarstat's JSON. There is no OAR
server on the dev cluster; the formats follow OAR 2.5's documented command line and JSON output.

Why a node prefix that re-quotes: ``oarsh``, like ssh, joins its arguments and re-parses them in a
remote shell, while launchers pass the wrapper as separate words (right for srun). The prefix runs a
few lines of the frontend's python3 that quote each word once more, and carry the execution's
environment (oarsh does not forward it), so the node sees exactly the argv and env an srun step would.
"""
from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping

from orchestra.errors import ProfileError, SchedulerError

from ..profiles import AllocationSpec, SlurmProfile
from ..transports import Transport
from . import JobState

# OAR's states, in Slurm's words (which the allocation backend reads).
_STATES = {"Waiting": "PENDING", "Hold": "PENDING", "toLaunch": "PENDING", "toError": "FAILED",
           "toAckReservation": "PENDING", "Launching": "PENDING", "Running": "RUNNING", "Suspended": "SUSPENDED",
           "Resuming": "PENDING", "Finishing": "COMPLETING", "Terminated": "COMPLETED", "Error": "FAILED"}

_SAFE = re.compile(r"^[A-Za-z0-9_.,:=+@%/-]+$")

# Names the node sets itself (or that belong to the frontend's session); everything else is forwarded.
_LOCAL_NAMES = ("HOME", "USER", "LOGNAME", "SHELL", "PWD", "OLDPWD", "SHLVL", "HOSTNAME", "TERM", "MAIL", "_",
                "DISPLAY", "LS_COLORS")
_LOCAL_PREFIXES = ("SSH_", "OAR_", "XDG_")

# argv: node, then the words to run there. Re-quotes them for oarsh's remote shell, with the environment.
_OARSH_SHIM = (
    "import os,shlex,sys\n"
    "keep=[k for k in sorted(os.environ) if k not in %r and not k.startswith(%r)]\n"
    "words=['env','--']+['%%s=%%s'%%(k,os.environ[k]) for k in keep]+sys.argv[2:]\n"
    "os.execvp('oarsh',['oarsh',sys.argv[1],' '.join(shlex.quote(w) for w in words)])\n"
) % (_LOCAL_NAMES, _LOCAL_PREFIXES)


def render_oar_walltime(seconds: float) -> str:
    """OAR's walltime: hours (any number) : minutes : seconds, rounded up to the second."""
    total = int(seconds + 0.999)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def _check(what: str, value: str) -> str:
    if not _SAFE.match(value):
        raise ProfileError(f"allocation.{what} {value!r} has characters OAR options never need",
                           hint="letters, digits and _ . , : = + @ % / - only")
    return value


def render_oarsub(spec: AllocationSpec, *, job_name: str) -> str:
    """The oarsub line of a placeholder job that holds ``spec.nodes`` whole nodes until the walltime.

    ``partition`` is OAR's queue, ``account`` its project; ``extra`` options go in as given."""
    words = ["oarsub", "--name", _check("job_name", job_name),
             "--resource", f"nodes={int(spec.nodes)},walltime={render_oar_walltime(spec.walltime)}",
             "--stdout", "/dev/null", "--stderr", "/dev/null"]
    if spec.partition:
        words += ["--queue", _check("partition", spec.partition)]
    if spec.account:
        words += ["--project", _check("account", spec.account)]
    for option in spec.extra:
        if "\n" in option or not option.startswith("-"):
            raise ProfileError(f"allocation.extra {option!r} must be one scheduler option like --property=x")
        words.append(option)
    words.append(f"sleep {int(spec.walltime) + 60}")
    return " ".join(shlex.quote(w) for w in words)


def parse_oarsub_output(text: str) -> str:
    """The job id from oarsub's answer (``OAR_JOB_ID=1234``)."""
    match = re.search(r"^OAR_JOB_ID=(\d+)\s*$", text, re.MULTILINE)
    if not match:
        raise SchedulerError(f"oarsub printed no job id: {text.strip()[:200]!r}")
    return match.group(1)


def _check_ids(job_ids: Iterable[str]) -> list[str]:
    ids = list(job_ids)
    for job_id in ids:
        if not job_id.isdigit():
            raise SchedulerError(f"not an OAR job id: {job_id!r}")
    return ids


def render_oarstat(job_ids: Iterable[str]) -> str:
    """ONE oarstat for every held allocation: full JSON records (``-f -J``), one ``-j`` per job."""
    return " ".join(["oarstat", "-f", "-J"] + [f"-j {job_id}" for job_id in _check_ids(job_ids)])


def parse_oarstat_output(text: str, now: float) -> dict[str, JobState]:
    """Parse ``oarstat -f -J``: a JSON object of job id -> record. ``now``: this moment on the frontend's
    clock, for the time an allocation has left (walltime minus the time since its startTime)."""
    text = text.strip()
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SchedulerError(f"oarstat printed no JSON: {text[:200]!r}") from exc
    if not isinstance(data, Mapping):
        raise SchedulerError(f"oarstat printed {type(data).__name__}, not an object of jobs")
    jobs: dict[str, JobState] = {}
    for key, record in data.items():
        if not isinstance(record, Mapping):
            raise SchedulerError(f"oarstat: job {key!r} is not an object")
        job_id = str(record.get("id", record.get("Job_Id", key)))
        state = str(record.get("state", ""))
        mapped = _STATES.get(state)
        if mapped is None:
            raise SchedulerError(f"oarstat: job {job_id} in unknown state {state!r}",
                                 hint=f"known: {', '.join(sorted(_STATES))}")
        nodes: list[str] = []
        for node in record.get("assigned_network_address") or ():
            if isinstance(node, str) and node and node not in nodes:
                nodes.append(node)
        left = None
        walltime, start = record.get("walltime"), record.get("startTime")
        if mapped == "RUNNING" and isinstance(walltime, (int, float)) and isinstance(start, (int, float)) and start > 0:
            left = max(0.0, float(walltime) - max(0.0, now - float(start)))
        reason = str(record.get("message") or "") if mapped != "RUNNING" else ""
        jobs[job_id] = JobState(job_id, mapped, left, tuple(nodes) if mapped == "RUNNING" else (), reason)
    return jobs


def render_oardel(job_ids: Iterable[str]) -> str:
    return " ".join(["oardel", *_check_ids(job_ids)])


def render_oarsh_prefix(job_id: str, node: str, python: str = "python3") -> str:
    """The prefix that runs the words after it on ``node`` of job ``job_id``, argv and env intact."""
    return (f"env OAR_JOB_ID={shlex.quote(job_id)} {shlex.quote(python)} -c {shlex.quote(_OARSH_SHIM)} "
            f"{shlex.quote(node)} ")


class OARProvider:
    step_marker = ""  # oarsh becomes ssh: nothing in its command line is OAR's own
    supports_agent = False  # the agent needs a step that keeps a binary stdout: oarsh's is a tty-less ssh
    writes_ready_files = False

    def __init__(self, profile: SlurmProfile) -> None:
        self.profile = profile

    def prepare(self, host: Transport, workdir: str) -> None:
        return None

    def submit(self, host: Transport, spec: AllocationSpec, job_name: str) -> str:
        cmd = render_oarsub(spec, job_name=job_name)
        result = host.run(cmd, timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: oarsub refused the allocation: {result.tail(3)}")
        return parse_oarsub_output(result.stdout)

    def poll(self, host: Transport, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        # The frontend's clock in the same command: startTime is on its clock, not ours.
        result = host.run(f"date +%s; {render_oarstat(job_ids)}", timeout=120, warn=True)
        if not result.ok:
            raise SchedulerError(f"{host.name}: oarstat failed: {result.tail(3)}")
        clock, _, rest = result.stdout.partition("\n")
        try:
            now = float(clock.strip())
        except ValueError:
            raise SchedulerError(f"{host.name}: `date +%s` printed {clock.strip()[:40]!r}") from None
        wanted = set(job_ids)
        return {k: v for k, v in parse_oarstat_output(rest, now).items() if k in wanted}

    def cancel(self, host: Transport, job_ids: list[str]) -> None:
        if job_ids:
            host.run(render_oardel(job_ids), timeout=120, warn=True)

    def launcher(self, job_id: str, node: str) -> str:
        return render_oarsh_prefix(job_id, node, self.profile.python)

    def wait_ready(self, host: Transport, job_id: str, timeout: float) -> tuple[float, list[str]] | None:
        return None  # the next oarstat sees it start


__all__ = ["OARProvider", "parse_oarstat_output", "parse_oarsub_output", "render_oar_walltime", "render_oardel",
           "render_oarsh_prefix", "render_oarstat", "render_oarsub"]
