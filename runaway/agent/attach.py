"""``attach`` and ``ensure``: reach the daemon (starting it when asked) and pipe a session to its socket;
``main`` is the command line of the one-file agent."""
import base64
import errno
import os
import selectors
import socket
import sys
import time

from .daemon import Agent
from .protocol import SOCKET_NAME


# ------------------------------------------------------------------------------------------ attach
def _connect(directory: str, wait: float):
    deadline = time.monotonic() + wait
    path = os.path.join(directory, SOCKET_NAME)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if len(path.encode()) < 100:
                sock.connect(path)
            else:  # long path: connect through a relative name
                here = os.getcwd()
                os.chdir(directory)
                try:
                    sock.connect(SOCKET_NAME)
                finally:
                    os.chdir(here)
            return sock
        except OSError as exc:
            sock.close()
            if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.monotonic() > deadline:
                return None
            time.sleep(0.02)


def _spawn_daemon(directory: str, root: str, wrapper_b64: str, marker: str, idle_exit: float) -> None:
    os.makedirs(directory, exist_ok=True)
    log = os.open(os.path.join(directory, "agent.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    devnull = os.open(os.devnull, os.O_RDONLY)
    # The daemon is the same one file this process runs from (the bundle: sys.argv[0]).
    argv = [sys.executable, os.path.abspath(sys.argv[0]), "serve", directory, root, wrapper_b64, marker,
            "--idle-exit=%g" % idle_exit]
    try:
        if hasattr(os, "posix_spawn"):
            os.posix_spawn(sys.executable, argv, dict(os.environ), setsid=True,
                           file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, log, 1),
                                         (os.POSIX_SPAWN_DUP2, log, 2)])
        else:  # pragma: no cover - Python < 3.8 on the remote
            import subprocess
            subprocess.Popen(argv, stdin=devnull, stdout=log, stderr=log, start_new_session=True)
    finally:
        os.close(log)
        os.close(devnull)


def attach(directory: str, root: str, wrapper_b64: str, marker: str, spawn: bool, idle_exit: float = 600.0) -> int:
    """Pipe stdin/stdout to the agent's socket; start the agent first when ``spawn`` and none answers."""
    sock = _connect(directory, 0.0)
    if sock is None and spawn:
        _spawn_daemon(directory, root, wrapper_b64, marker, idle_exit)
        sock = _connect(directory, 15.0)
    elif sock is None:
        sock = _connect(directory, 30.0)  # started by someone else (an srun step): give it time
    if sock is None:
        sys.stderr.write("orchestra-agent: no agent answers in %s\n" % directory)
        return 3
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _ in sel.select():
            if key.data == "in":
                data = os.read(stdin, 1 << 16)
                if not data:
                    return 0  # the controller went away; the agent and its executions stay
                sock.sendall(data)
            else:
                try:
                    data = sock.recv(1 << 16)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return 4  # the agent went away: the controller re-attaches (and so restarts it)
                view = memoryview(data)
                while view:
                    written = os.write(stdout, view)
                    view = view[written:]


def _idle_exit(options) -> float:
    for option in options:
        if option.startswith("--idle-exit="):
            return max(1.0, float(option.split("=", 1)[1]))
    return 600.0


def ensure(directory: str, root: str, wrapper_b64: str, marker: str, idle_exit: float) -> int:
    """Start the agent unless one answers; return once it accepts connections (for local controllers,
    which then talk to its socket directly rather than through ``attach``)."""
    sock = _connect(directory, 0.0)
    if sock is None:
        _spawn_daemon(directory, root, wrapper_b64, marker, idle_exit)
        sock = _connect(directory, 15.0)
    if sock is None:
        sys.stderr.write("orchestra-agent: no agent answers in %s\n" % directory)
        return 3
    sock.close()
    return 0


def main(argv) -> int:
    """serve DIR ROOT WRAPPER_B64 MARKER [--idle-exit=S] | attach ... [--spawn] [--idle-exit=S] | ensure ..."""
    if len(argv) >= 5 and argv[0] == "serve":
        wrapper = base64.b64decode(argv[3]).decode("utf-8")
        return Agent(argv[1], argv[2], wrapper, argv[4], idle_exit=_idle_exit(argv[5:])).serve()
    if len(argv) >= 5 and argv[0] == "ensure":
        return ensure(argv[1], argv[2], argv[3], argv[4], _idle_exit(argv[5:]))
    if len(argv) >= 5 and argv[0] == "attach":
        return attach(argv[1], argv[2], argv[3], argv[4], "--spawn" in argv[5:], _idle_exit(argv[5:]))
    sys.stderr.write("usage: orchestra-agent.pyz serve|attach DIR ROOT WRAPPER_B64 MARKER [--spawn] [--idle-exit=S]\n")
    return 2
