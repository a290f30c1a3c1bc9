"""Orchestra's execution agent: one long-lived process per SSH host or per allocated Slurm node.

Why an agent: without one, every short execution costs several SSH round trips and remote shells (create
the run directory, start it, poll it, tar its results, remove it); on 2 cores those forks, not the
experiments, were the ceiling (1.1x GNU parallel over SSH). With one, the controller writes ONE line per
execution into a session it keeps open, and the agent answers with ONE frame carrying the exit code and
the results (RADICAL-Pilot's and Parsl's per-node agents, for the same reason).

Why a daemon plus ``attach``: executions must survive a dropped connection and a dead controller. The
``serve`` process is detached (own session, no terminal, SIGHUP ignored) and listens on a unix socket in
its directory; ``attach`` is what an SSH channel (or an ``srun --overlap`` step on a Slurm node) runs: it
starts the daemon if asked and none is running, then pipes its stdin/stdout to the socket. A drop kills
only ``attach``; the controller re-attaches and says ``watch`` for what it still waits on. Nothing the
daemon knows is needed after a restart either: every execution leaves its story in its run directory
(the shared wrapper writes pid and exit_code), so a new daemon adopts what an old one started.

This package is shipped to the remote host as ONE file, a zipapp built from it by :func:`bundle`
(``python3 orchestra-agent-<hash>.pyz attach ...``), and run with the host's ``python3`` (3.6 or later;
posix_spawn from 3.8, a fork before): standard library only, no syntax newer than 3.6. Its modules:
protocol (request and event lines), results (result framing), rundirs (run-directory recycling),
posix (small file and process helpers), daemon (``serve``), attach (``attach``/``ensure``/``main``).
The controller imports the pure functions (runaway/agent_link.py); tests/unit/test_agent*.py run them
and the bundle for real.

Protocol: lines of space-separated fields; free text as base64 of JSON.

    controller -> agent
      launch <id> <b64 {"run_dir", "code_dir", "command", "env", "outputs", "slot", "meta", "token"}>
                                              (meta: extra files for .orchestra/, name -> text;
                                               token: the same for a line re-sent after a drop, new
                                               for a new attempt, which replaces an earlier directory)
      watch <id> <b64 {"run_dir", "outputs"}>
      kill <id> <signal> <grace seconds>      (TERM the group, KILL it after the grace)
      remove <id> <b64 "run_dir">             (after the controller committed the results)
      read <id> <metrics.jsonl|stdout|stderr> <offset> <b64 "run_dir">
                                              (a running execution's file past offset: metrics, live output)
      env <b64 {name: value}>                 (the base environment of this session's launches)
      ping <token>
    agent -> controller
      hello <protocol> <pid>
      started <id> <pid> <epoch>
      exited <id> <code|-> <started|-> <ended> <size> <sha256>\\n<size bytes: the results>
      gone <id>                               (no such run directory)
      error <id> <b64 "message">
      data <id> <name> <offset> <size>\\n<size bytes>  (the answer to a read: at most MAX_READ bytes;
                                              0: nothing new. The reader's offset is the acknowledgement)
      pong <token>

``exited`` with code ``-`` means the execution died without an exit code (host rebooted, killed -9 with
its wrapper). The results are entries ``f <b64 path> <size> <octal mode>\\n<size bytes>`` for
``.orchestra/stdout``, ``.orchestra/stderr`` and the files matching the output globs (regular files only,
never through a symlink; paths relative, without '..').
"""
import os

from .attach import attach, ensure, main
from .daemon import Agent
from .posix import pid_alive, read_small, write_in_place
from .protocol import (MAX_LINE, MAX_READ, META_DIR, PROTOCOL, READABLE, SOCKET_NAME, WRAPPER_FILES, b64json, exit_code_of, parse_event,
                       parse_request, render_event, render_request, split_lines, unb64json)
from .results import (check_result_path, pack_results, parse_result_header, parse_results, render_result_header,
                      result_files)
from .rundirs import RunDirs, remove_stale_spares

MODULES = ("__init__.py", "attach.py", "daemon.py", "posix.py", "protocol.py", "results.py", "rundirs.py")
PACKAGE = "orchestra_agent"  # its name inside the bundle (nothing on a host's path is called that)
_MAIN = b"import sys\nfrom orchestra_agent.attach import main\nsys.exit(main(sys.argv[1:]))\n"
_BUNDLE = []  # built once per process: the bytes are the same for the same sources


def bundle():
    """The agent as one file: a zipapp of this package (``python3 FILE serve|attach|ensure ...``).

    Deterministic (fixed timestamps and order), so its hash names a version: a host or a local agent
    directory keyed by it is reused exactly while the sources do not change."""
    if not _BUNDLE:
        import io
        import zipfile  # only the controller builds the bundle: the agent itself never imports zipfile

        here = os.path.dirname(os.path.abspath(__file__))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
            entries = [("__main__.py", _MAIN)]
            for name in MODULES:
                with open(os.path.join(here, name), "rb") as source:
                    entries.append(("%s/%s" % (PACKAGE, name), source.read()))
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        _BUNDLE.append(buf.getvalue())
    return _BUNDLE[0]


def bundle_digest():
    import hashlib
    return hashlib.sha256(bundle()).hexdigest()[:12]


def write_bundle(directory):
    """Write the bundle into ``directory`` (once per version) and return its path."""
    path = os.path.join(str(directory), "orchestra-agent-%s.pyz" % bundle_digest())
    if not os.path.exists(path):
        os.makedirs(str(directory), exist_ok=True)
        tmp = "%s.tmp.%d" % (path, os.getpid())
        with open(tmp, "wb") as out:
            out.write(bundle())
        os.replace(tmp, path)
    return path


__all__ = ["Agent", "MAX_LINE", "MAX_READ", "META_DIR", "READABLE", "PROTOCOL", "RunDirs", "SOCKET_NAME", "WRAPPER_FILES", "attach",
           "b64json", "bundle", "bundle_digest", "check_result_path", "ensure", "exit_code_of", "main", "pack_results",
           "parse_event", "parse_request", "parse_result_header", "parse_results", "pid_alive", "read_small",
           "remove_stale_spares", "render_event", "render_request", "render_result_header", "result_files",
           "split_lines", "unb64json", "write_bundle", "write_in_place"]
