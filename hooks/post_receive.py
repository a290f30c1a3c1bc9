"""Server-side ``post-receive``: regenerate the campaign's HTML report after a push of executions.

The push must not wait for a render (thousands of executions take seconds), so the hook only marks the
report as stale and starts a detached renderer (its own session, output to a log file) and returns. At
most one renderer runs per repository: it holds an exclusive ``flock`` and renders again while pushes
arrived during its render, so a burst of pushes costs one or two renders, never a pile of them.

Configuration (set by ``expegit hooks install --server BARE --report-dir DIR``):
``orchestra.reportDir`` (where the site goes; no render without it) in the bare repository's config.
Files under ``<bare>/orchestra/``: ``report.pending`` (stale marker), ``report.lock``, ``report.log``,
``report.status`` (how the last render ended).

A report that silently stops updating is worse than none: collaborators trust a stale page. So the
pusher is warned on their terminal (``remote: orchestra: warning: ...``) when this push cannot be
rendered (the interpreter recorded at install time is not usable by the pushing user, or lacks
Orchestra), and when the previous background render failed.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys
import time

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef,import-not-found]

MODULE = "orchestra_hooks.post_receive"
STATUS_NAME = "report.status"


def touches_executions(updates: list[common.RefUpdate]) -> bool:
    return any(u.is_execution for u in updates)


def render_problem(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Why a renderer started from this process cannot work, or None. Cheap: finds modules, imports none."""
    recorded = environ.get("ORCHESTRA_HOOK_INTERPRETER", "")
    here = sys.executable
    if recorded and os.path.abspath(recorded) != os.path.abspath(here):
        why = "does not exist" if not os.path.lexists(recorded) else "cannot be run"
        prefix = f"the interpreter recorded at install, {recorded}, {why} for this user; {here} ran the hook"
    else:
        prefix = f"{here} ran the hook"
    if environ.get("ORCHESTRA_HOOK_LIB"):
        return f"{prefix} and has no Orchestra installed (only the hooks' standard-library copy)"
    for module in ("expegit.report_build", "dulwich"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"{prefix} and cannot import {module}"
    return None


# --- report.status (an external text format: pure render and parse) ------------------------------------
@dataclasses.dataclass(frozen=True)
class RenderStatus:
    ok: bool
    time: str      # local time of the server, as in report.log
    message: str   # what was rendered, or why it failed (one line)


def render_status(status: RenderStatus) -> str:
    message = " ".join(status.message.split())
    return f"{'ok' if status.ok else 'failed'} {status.time} {message}\n"


def parse_status(text: str) -> RenderStatus:
    """ValueError for anything render_status did not write."""
    parts = text.strip().split(" ", 3)
    if len(parts) < 3 or parts[0] not in ("ok", "failed"):
        raise ValueError(f"not a report status: {text.strip()!r}")
    return RenderStatus(parts[0] == "ok", f"{parts[1]} {parts[2]}", parts[3] if len(parts) > 3 else "")


def write_status(state: str, status: RenderStatus) -> None:
    tmp = os.path.join(state, f".{STATUS_NAME}.{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(render_status(status))
    os.replace(tmp, os.path.join(state, STATUS_NAME))


def last_status(state: str) -> RenderStatus | None:
    try:
        with open(os.path.join(state, STATUS_NAME)) as f:
            return parse_status(f.read())
    except (OSError, ValueError):
        return None


def start_render(git_dir: str, report_dir: str) -> str:
    """Mark the report stale and start a detached renderer; returns the log path."""
    state = common.state_dir(git_dir)
    with open(os.path.join(state, "report.pending"), "w") as f:
        f.write(f"{time.time()}\n")
    log_path = os.path.join(state, "report.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the renderer reads objects itself
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        # sys.executable, never a `python3` looked up on PATH: the pusher's PATH may name another python.
        subprocess.Popen([sys.executable, "-m", MODULE, "--render", git_dir, report_dir],
                         stdin=devnull, stdout=log, stderr=log, start_new_session=True, close_fds=True, env=env,
                         cwd=git_dir)
    return log_path


def render_loop(git_dir: str, report_dir: str) -> int:
    """Render while the report is stale; exit at once if another renderer holds the lock."""
    import fcntl

    state = common.state_dir(git_dir)
    pending = os.path.join(state, "report.pending")
    while True:
        with open(os.path.join(state, "report.lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # the running renderer will see report.pending and render once more
            while os.path.exists(pending):
                os.unlink(pending)
                started = time.time()
                # expegit renders in a process of its own: the hook programs never import it (layering).
                done = subprocess.run([sys.executable, "-m", "expegit.report_build", git_dir, report_dir],
                                      stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=git_dir)
                if done.returncode != 0:  # logged: a broken render must not stop the next one
                    stamp = time.strftime('%Y-%m-%d %H:%M:%S')
                    lines = (done.stderr or done.stdout or f"exit {done.returncode}").strip().splitlines()
                    reason = lines[-1] if lines else f"exit {done.returncode}"
                    print(f"{stamp} render failed: {reason}", flush=True)
                    write_status(state, RenderStatus(False, stamp, reason))
                    continue
                index = done.stdout.strip()
                stamp = time.strftime('%Y-%m-%d %H:%M:%S')
                print(f"{stamp} rendered {index} in {time.time() - started:.1f}s with {sys.executable}", flush=True)
                write_status(state, RenderStatus(True, stamp, str(index)))
        # Lock released: a push that marked the report stale just before could not start its own renderer.
        if not os.path.exists(pending):
            return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"] and len(argv) == 3:
        common.apply_shared_umask(os.path.abspath(argv[1]))
        return render_loop(os.path.abspath(argv[1]), argv[2])
    git_dir = common.git_dir()
    common.apply_shared_umask(git_dir)
    try:
        updates = common.parse_ref_updates(sys.stdin)
    except ValueError as exc:
        common.say(f"orchestra post-receive: {exc}")
        return 0  # post-receive cannot refuse anything; say so and move on
    configured = common.repository_config(git_dir, "orchestra.reportDir")
    report_dir = configured[-1].strip() if configured else ""
    if not report_dir or not touches_executions(updates):
        return 0
    state = os.path.join(git_dir, "orchestra")
    previous = last_status(state)
    if previous is not None and not previous.ok:
        common.say(f"orchestra: warning: the last report render ({previous.time}) failed: {previous.message} "
                   f"(log: {os.path.join(state, 'report.log')}); the report in {report_dir} may be stale")
    problem = render_problem()
    if problem:
        common.say(f"orchestra: warning: the report in {report_dir} is NOT regenerated: {problem}. An "
                   f"administrator fixes it with `expegit hooks install --server {git_dir} --python PATH`, "
                   f"PATH being a python with Orchestra installed that every pusher can run")
        return 0
    try:
        log = start_render(git_dir, report_dir)
    except OSError as exc:
        common.say(f"orchestra: warning: could not start the report render: {exc}; the report in {report_dir} "
                   f"is NOT regenerated")
        return 0
    common.say(f"orchestra: regenerating the report in {report_dir} in the background (log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(common.guarded("post-receive", main, 0))
