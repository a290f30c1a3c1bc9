"""The local transport: this machine, through ``/bin/sh`` and unix sockets (never paramiko).

:class:`LocalTransport` runs shell lines as a Transport does remotely (used where a caller wants the
same operations on this machine); :class:`AgentSocketSession` is the local agent's session: straight to
its unix socket, no ``attach`` process in between (one hop less each way, which with few slots is most
of an execution's round trip).
"""
from __future__ import annotations

import dataclasses
import getpass
import os
import socket as _socket
from collections.abc import Iterable, Iterator
from pathlib import Path

import gevent.socket
import gevent.subprocess

from orchestra.errors import ConnectionError_, ExecutionError

_CHUNK = 1 << 16


@dataclasses.dataclass
class LocalResult:
    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 10) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return "\n".join(text[-lines:]) or f"exit code {self.exit_code}"


class LocalCommandError(ExecutionError):
    def __init__(self, result: LocalResult) -> None:
        super().__init__(f"`{result.command[:80]}` failed on this machine: {result.tail(3)}")
        self.result = result


class _PipeSession:
    """A local command with its stdin and stdout kept open (what open_session gives)."""

    def __init__(self, cmd: str) -> None:
        self.cmd = cmd
        self.proc = gevent.subprocess.Popen(["/bin/sh", "-c", cmd], stdin=gevent.subprocess.PIPE,
                                            stdout=gevent.subprocess.PIPE, stderr=gevent.subprocess.DEVNULL)

    def send(self, data: bytes) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except OSError as exc:
            raise ConnectionError_(f"this machine: `{self.cmd[:60]}` closed its input: {exc}") from exc

    def recv(self) -> bytes:
        assert self.proc.stdout is not None
        try:
            return self.proc.stdout.read1(_CHUNK) if hasattr(self.proc.stdout, "read1") else \
                self.proc.stdout.read(_CHUNK)
        except OSError:
            return b""

    def stderr_tail(self) -> str:
        return ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class LocalTransport:
    name = "localhost"

    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None,
            warn: bool = False) -> LocalResult:
        try:
            done = gevent.subprocess.run(["/bin/sh", "-c", cmd], input=stdin or b"", capture_output=True,
                                         timeout=timeout)
            result = LocalResult(cmd, done.returncode, done.stdout.decode("utf-8", "replace"),
                                 done.stderr.decode("utf-8", "replace"), done.stdout)
        except gevent.subprocess.TimeoutExpired as exc:
            result = LocalResult(cmd, None, (exc.stdout or b"").decode("utf-8", "replace"), "timed out")
        if not warn and not result.ok:
            raise LocalCommandError(result)
        return result

    def put_stream(self, chunks: Iterable[bytes], remote_cmd: str, timeout: float | None = None,
                   warn: bool = False) -> LocalResult:
        return self.run(remote_cmd, stdin=b"".join(chunks), timeout=timeout, warn=warn)

    def get_stream(self, remote_cmd: str, timeout: float | None = None) -> Iterator[bytes]:
        result = self.run(remote_cmd, timeout=timeout)
        yield result.stdout_bytes

    def open_session(self, remote_cmd: str) -> _PipeSession:
        return _PipeSession(remote_cmd)

    def check(self) -> None:
        return None

    def describe(self) -> str:
        return f"{getpass.getuser()}@{_socket.gethostname()} (this machine)"

    def close(self) -> None:
        return None


class AgentSocketSession:
    """A session straight to the local agent's unix socket (started with ``ensure_argv`` if none answers)."""

    def __init__(self, agent_dir: Path, socket_name: str, ensure_argv: list[str], log: Path) -> None:
        self.cmd = f"local agent in {agent_dir}"
        self.log = log
        self.socket_name = socket_name
        sock = self._connect(agent_dir)
        if sock is None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as err:
                started = gevent.subprocess.run(ensure_argv, stdin=gevent.subprocess.DEVNULL,
                                                stdout=err, stderr=err, timeout=30)
            sock = self._connect(agent_dir) if started.returncode == 0 else None
        if sock is None:
            raise ConnectionError_(f"the local agent in {agent_dir} does not answer: {self.stderr_tail()}")
        self.sock: gevent.socket.socket = sock

    def _connect(self, agent_dir: Path) -> gevent.socket.socket | None:
        path = str(agent_dir / self.socket_name)
        sock = gevent.socket.socket(gevent.socket.AF_UNIX, gevent.socket.SOCK_STREAM)
        try:
            if len(path.encode()) < 100:
                sock.connect(path)
            else:  # unix socket paths are limited to ~107 bytes: go through a descriptor of the directory
                fd = os.open(agent_dir, os.O_PATH)
                try:
                    sock.connect(f"/proc/self/fd/{fd}/{self.socket_name}")
                finally:
                    os.close(fd)
            return sock
        except OSError:
            sock.close()
            return None

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ConnectionError_(f"local agent: the connection to it closed: {exc}") from exc

    def recv(self) -> bytes:
        try:
            return self.sock.recv(_CHUNK)
        except OSError:
            return b""

    def stderr_tail(self) -> str:
        try:
            return self.log.read_bytes()[-500:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.sock.close()


__all__ = ["AgentSocketSession", "LocalCommandError", "LocalResult", "LocalTransport"]
