"""Server-side ``post-receive``: regenerate the campaign's HTML report after a push of executions.

The push must not wait for a render (thousands of executions take seconds), so the hook only marks the
report as stale and starts a detached renderer (its own session, output to a log file) and returns. At
most one renderer runs per repository: it holds an exclusive ``flock`` and renders again while pushes
arrived during its render, so a burst of pushes costs one or two renders, never a pile of them.

Configuration (set by ``expegit hooks install --server BARE --report-dir DIR``):
``orchestra.reportDir`` (where the site goes; no render without it) in the bare repository's config.
Files under ``<bare>/orchestra/``: ``report.pending`` (stale marker), ``report.lock``, ``report.log``.
Rendering needs the full package (dulwich and expegit), so the interpreter recorded at install time must
have it; the log says so otherwise.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef]


def touches_executions(updates: list[common.RefUpdate]) -> bool:
    return any(u.is_execution for u in updates)


def state_dir(git_dir: str) -> str:
    return os.path.join(git_dir, "orchestra")


def start_render(git_dir: str, report_dir: str) -> str:
    """Mark the report stale and start a detached renderer; returns the log path."""
    state = state_dir(git_dir)
    os.makedirs(state, exist_ok=True)
    with open(os.path.join(state, "report.pending"), "w") as f:
        f.write(f"{time.time()}\n")
    log_path = os.path.join(state, "report.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # the renderer reads objects itself
    if os.environ.get("ORCHESTRA_HOOK_LIB"):  # the shim fell back to its stdlib copy: the renderer needs it too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ["ORCHESTRA_HOOK_LIB"], env.get("PYTHONPATH")]))
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        subprocess.Popen([sys.executable, "-m", "orchestra.hooks.post_receive", "--render", git_dir, report_dir],
                         stdin=devnull, stdout=log, stderr=log, start_new_session=True, close_fds=True, env=env,
                         cwd=git_dir)
    return log_path


def render_loop(git_dir: str, report_dir: str) -> int:
    """Render while the report is stale; exit at once if another renderer holds the lock."""
    import fcntl

    state = state_dir(git_dir)
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
                try:
                    from expegit.report_build import render_repository_report

                    index = render_repository_report(git_dir, report_dir)
                except Exception as exc:  # logged: a broken render must not stop the next one
                    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} render failed: {type(exc).__name__}: {exc}",
                          flush=True)
                    continue
                print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} rendered {index} in {time.time() - started:.1f}s",
                      flush=True)
        # Lock released: a push that marked the report stale just before could not start its own renderer.
        if not os.path.exists(pending):
            return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--render"] and len(argv) == 3:
        return render_loop(os.path.abspath(argv[1]), argv[2])
    try:
        updates = common.parse_ref_updates(sys.stdin)
    except ValueError as exc:
        common.say(f"orchestra post-receive: {exc}")
        return 0  # post-receive cannot refuse anything; say so and move on
    report_dir = common.git_config("orchestra.reportDir")
    if not report_dir or not touches_executions(updates):
        return 0
    git_dir = os.path.abspath(os.environ.get("GIT_DIR", "."))
    try:
        log = start_render(git_dir, report_dir)
    except OSError as exc:
        common.say(f"orchestra: could not start the report render: {exc}")
        return 0
    common.say(f"orchestra: regenerating the report in {report_dir} in the background (log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
