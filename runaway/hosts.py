"""The SSH seam: the only module that imports fabric and paramiko (Parsl's lesson: keep SSH behind one seam);
invoke, fabric's own base, runs its one local command (``ssh -G``).

A :class:`Host` is one SSH destination. It keeps a few long-lived connections and multiplexes commands
over their channels, because a fresh SSH handshake costs ~0.3 s while a channel on an open connection
costs a few ms. Servers cap channels per connection (``MaxSessions``, 10 by default, and real clusters
keep it): going over makes sshd refuse channels, so every channel is taken under a bounded semaphore.

Where a destination leads is OpenSSH's answer, not ours: ``ssh -G`` (runaway.openssh parses it) applies
``Include``, ``Match``, first-match-wins and every keyword a user's ``~/.ssh/config`` can hold; only where
no ``ssh`` is installed does fabric's Config (paramiko's parser, which ignores ``Include``) stand in.
Connections are fabric ``Connection`` objects, a ``ProxyJump`` chain is fabric's chain of gateway
Connections, one per hop, each hop resolved by OpenSSH in turn, as ``ssh -J`` does.

Why fabric only for the connection, not for commands: ``Connection.run`` drives each command through
invoke's Runner (IO threads, a fresh set-up per call), measured at 52 commands/s on this kind of machine
against 213/s for a raw channel on the same transport (shared/notes/local-cluster.md), and runaway's
throughput is made of thousands of short commands. So every command here is a raw paramiko channel on
the fabric Connection's transport, with ``TCP_NODELAY`` set (Nagle plus delayed ACKs cost ~40 ms each).

Host keys are always verified, OpenSSH's way, against the known_hosts files (under ``HostKeyAlias`` when
set): fabric's default policy (AutoAddPolicy: trust whatever key comes) is replaced on every connection.
An unknown or changed key is a :class:`ConnectionError_` that names the host (and the jump host and hop,
when that is where it happened), the fingerprint and the fix.

Everything blocks through gevent-friendly primitives (gevent locks, ``socket``/``select`` looked up at
call time so the caller's monkey patching applies); nothing here patches anything.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import select
import shlex
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import fabric
import gevent
import gevent.lock
import invoke
import paramiko
import tenacity

from orchestra.errors import ConnectionError_, ExecutionError

from . import openssh
from .openssh import Destination, HostSpec, Options, spec_from_options


class _QuietChannelRefusals(logging.Filter):
    """paramiko logs every refused channel open at ERROR; we retry those (MaxSessions races), so they
    are noise unless they persist, in which case run() raises with the cause."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_QuietChannelRefusals())
_log = logging.getLogger(__name__)

DEFAULT_CHANNELS_PER_CONNECTION = 8  # under OpenSSH's default MaxSessions=10, with headroom
DEFAULT_CONNECTIONS = 2
_CHUNK = 1 << 16
_MAX_HOPS = 8  # a ProxyJump chain longer than this is a loop in the configuration (`Host *` jumping)


@dataclasses.dataclass(frozen=True)
class Result:
    """What a remote command did. ``exit_code`` is None when it was cut by a timeout or a lost link."""

    command: str
    exit_code: int | None
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def tail(self, lines: int = 10) -> str:
        """The last lines of stderr (or stdout): what an error message should quote."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-lines:])


class RemoteCommandError(ExecutionError):
    """A remote command exited non-zero (or timed out); carries its :class:`Result` like invoke's."""

    def __init__(self, host: str, result: Result, *, timed_out: bool = False) -> None:
        self.result = result
        self.timed_out = timed_out
        what = "timed out" if timed_out else f"exited {result.exit_code}"
        short = result.command if len(result.command) < 120 else result.command[:117] + "..."
        tail = result.tail(5)
        super().__init__(f"{host}: `{short}` {what}" + (f": {tail}" if tail else ""))


def _default_ssh_config() -> str | None:
    path = Path("~/.ssh/config").expanduser()
    return str(path) if path.is_file() else None


def _read_when_ready(fd: int, num_bytes: int) -> bytes:
    """``os.read`` that waits for data on a non-blocking pipe (gevent's Popen makes them so)."""
    while True:
        try:
            return os.read(fd, num_bytes)
        except BlockingIOError:
            select.select([fd], [], [])


class _Local(invoke.Local):
    """invoke's Local runner, usable under gevent's monkey patching.

    invoke reads the child's pipes with a bare ``os.read``, which raises BlockingIOError on the
    non-blocking pipes of gevent's patched subprocess; waiting with (patched) select first keeps its
    Runner and Result while yielding to other greenlets.
    """

    def read_proc_stdout(self, num_bytes: int) -> bytes | None:
        if self.using_pty or not (self.process and self.process.stdout):
            return super().read_proc_stdout(num_bytes)  # type: ignore[no-any-return]
        return _read_when_ready(self.process.stdout.fileno(), num_bytes)

    def read_proc_stderr(self, num_bytes: int) -> bytes | None:
        if not (self.process and self.process.stderr):
            return None
        return _read_when_ready(self.process.stderr.fileno(), num_bytes)


def _local_run(argv: list[str], timeout: float) -> invoke.Result:
    """Run a local command through invoke, quietly, never reading our stdin; a lazy Config keeps a user's
    invoke.yaml (echo, pty...) out of it."""
    config = invoke.Config(lazy=True, overrides={"runners": {"local": _Local}})
    result = invoke.Context(config).run(shlex.join(argv), hide=True, warn=True, in_stream=False, timeout=timeout)
    assert result is not None  # None only for disown=True
    return result


def _ask_openssh(dest: Destination, ssh_config: str | None, name: str) -> Options | None:
    """``ssh -G`` for the destination, or None where OpenSSH's client is not installed.

    ``-l``/``-p`` carry what the destination itself says, so that they win over the configuration and
    ``Match user`` sees them, as with ``ssh user@host -p N``. invoke runs it (its Runner and Result are
    the project's way to run local commands).
    """
    if shutil.which("ssh") is None:
        return None
    argv = ["ssh", "-G"] + (["-F", ssh_config] if ssh_config else [])
    argv += (["-l", dest.user] if dest.user else []) + (["-p", str(dest.port)] if dest.port else [])
    argv += ["--", dest.host]
    try:
        result = _local_run(argv, timeout=60)
    except invoke.CommandTimedOut:
        raise ConnectionError_(f"{name}: `{shlex.join(argv)}` did not answer within 60 s",
                               hint="a `Match exec` command in the SSH configuration may hang") from None
    if not result.ok:
        where = f" ({ssh_config})" if ssh_config else ""
        raise ConnectionError_(f"{name}: OpenSSH refuses the SSH configuration{where}: "
                               f"{openssh.first_error_line(result.stderr)}",
                               hint=f"`{shlex.join(argv)}` shows the same error; fix the line it names")
    return openssh.parse_ssh_g(result.stdout)


def _ask_fabric(dest: Destination, ssh_config: str | None, name: str) -> Options:
    """The same answer from fabric's Config (paramiko's SSHConfig) where ``ssh`` is missing.

    paramiko's parser knows Host and Match but not ``Include``: say so rather than act as if the
    included files were empty.
    """
    try:
        config = fabric.Config(runtime_ssh_path=ssh_config) if ssh_config else fabric.Config()
        conn = fabric.Connection(dest.host, user=dest.user, port=dest.port, config=config, gateway=False)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ConnectionError_(f"{name}: cannot read the SSH configuration {ssh_config or ''}: {exc}",
                               hint="fix or remove the file, or install OpenSSH's client (ssh)") from None
    looked: dict[str, Any] = dict(conn.ssh_config)
    if "include" in looked:
        _log.warning("%s: `Include` in the SSH configuration is ignored (OpenSSH's ssh is not installed, and "
                     "paramiko's parser does not read included files)", name)
    options: Options = {key: tuple(v) if isinstance(v, list) else (str(v),) for key, v in looked.items()}
    options["hostname"] = (conn.host,)
    options["user"] = (conn.user,)
    options["port"] = (str(conn.port),)
    options.setdefault("identityfile", openssh.DEFAULT_IDENTITY_FILES)
    return options


def resolve(destination: str, *, ssh_config: str | None = None, accept_new_host_keys: bool = False,
            connect_timeout: float = 15.0) -> HostSpec:
    """Turn ``alias`` / ``user@host:port`` into a :class:`HostSpec`, as OpenSSH resolves it.

    Why: users already describe their clusters in ``~/.ssh/config`` (users, keys, ports, proxies, Include
    files, Match blocks); a profile should only need the alias, and reach what ``ssh alias`` reaches.
    """
    try:
        dest = openssh.parse_destination(destination)
    except ValueError as exc:
        raise ConnectionError_(str(exc), hint="use an ssh_config alias or user@host[:port]") from None
    options = _ask_openssh(dest, ssh_config, destination)
    if options is None:
        options = _ask_fabric(dest, ssh_config or _default_ssh_config(), destination)
    try:
        return spec_from_options(destination, dest, options, ssh_config=ssh_config,
                                 accept_new_host_keys=accept_new_host_keys, connect_timeout=connect_timeout)
    except ValueError as exc:  # a number that is not one (only paramiko's parser lets those through)
        raise ConnectionError_(f"{destination}: bad value in the SSH configuration: {exc}",
                               hint="Port, ConnectTimeout and ServerAliveInterval take whole numbers") from None


def route(spec: HostSpec, *, accept_new_host_keys: bool = False) -> list[HostSpec]:
    """The hops to ``spec``, first hop first, ``spec`` last: OpenSSH's reading of ``ProxyJump a,b``.

    ``ssh -J a,b target`` reaches ``b`` with ``-J a`` (b's own ProxyJump is overridden) and ``a`` with a's
    own configuration, each hop resolved with the same ``-F`` file; so does this. Each hop's host key
    policy is its own (StrictHostKeyChecking of its block), loosened only by the caller's explicit
    ``accept_new_host_keys``, never by the target's configuration.
    """
    chain = [spec]
    while True:
        hops = openssh.split_proxy_jump(chain[0].proxy_jump)
        if not hops:
            return chain
        if len(chain) > _MAX_HOPS:
            raise ConnectionError_(f"{spec.name}: ProxyJump chain longer than {_MAX_HOPS} hops "
                                   f"({' -> '.join(s.name for s in chain[::-1])} ...)",
                                   hint="a `Host *` block with ProxyJump probably applies to the jump host "
                                        "itself: exclude it (`Host * !bastion`)")
        try:
            hop = resolve(hops[-1], ssh_config=spec.ssh_config, accept_new_host_keys=accept_new_host_keys)
        except ConnectionError_ as exc:
            message = exc.message.removeprefix(f"{hops[-1]}: ")
            raise ConnectionError_(f"{spec.name}: jump host {hops[-1]}: {message}", hint=exc.hint) from None
        if len(hops) > 1:
            hop = dataclasses.replace(hop, proxy_jump=",".join(hops[:-1]))
        chain.insert(0, hop)


# ------------------------------------------------------------------------------------------- host keys
@dataclasses.dataclass(frozen=True)
class _KnownKey:
    path: str
    key: paramiko.PKey


def _known_keys(spec: HostSpec) -> list[_KnownKey]:
    """The keys the known_hosts files hold for the host's lookup name (hashed entries included)."""
    found: list[_KnownKey] = []
    for path in spec.known_hosts_files + spec.global_known_hosts_files:
        if not os.path.isfile(path):
            continue
        try:
            entries = paramiko.HostKeys(path).lookup(spec.known_hosts_key)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConnectionError_(f"{spec.name}: cannot read known_hosts file {path}: {exc}") from None
        for key in (entries or {}).values():
            found.append(_KnownKey(path, key))
    return found


class _HostKeyRefused(Exception):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name = name
        self.key = key


class _StrictPolicy(paramiko.MissingHostKeyPolicy):
    """Refuse unknown keys (or record them when the user opted into accept-new); never a changed one.

    This replaces fabric's AutoAddPolicy. paramiko calls it only when no key at all is known under the
    name; a known name with another key is a BadHostKeyException before it gets here.
    """

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        name = self.spec.known_hosts_key
        if not self.spec.accept_new_host_keys:
            raise _HostKeyRefused(name, key)
        client.get_host_keys().add(hostname, key.get_name(), key)
        if self.spec.known_hosts_files:
            path = Path(self.spec.known_hosts_files[0])
            path.parent.mkdir(parents=True, exist_ok=True)
            recorded = paramiko.HostKeys.hash_host(name) if self.spec.hash_known_hosts else name
            with path.open("a") as handle:
                handle.write(f"{recorded} {key.get_name()} {key.get_base64()}\n")


# ----------------------------------------------------------------------------------------- connections
def _nodelay_transport(sock: Any, **kwargs: Any) -> paramiko.Transport:
    """paramiko's Transport, on a socket with Nagle off from the first byte of the handshake.

    Without it every small request waits for the peer's delayed ACK (~40 ms, measured). A jump hop's
    socket is a channel of the hop before (no TCP of its own): nothing to set there.
    """
    if hasattr(sock, "setsockopt"):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not TCP (a unix socket from a ProxyCommand wrapper): nothing to turn off
            pass
    return paramiko.Transport(sock, **kwargs)


class _ProxyCommand(paramiko.ProxyCommand):
    """paramiko's ProxyCommand, whose close() may run twice (Transport.close, then the transport's thread).

    Under gevent the child is reaped as soon as it exits, so the second SIGTERM finds no process and
    paramiko's close raises ProcessLookupError inside the transport thread.
    """

    def close(self) -> None:
        try:
            super().close()
        except ProcessLookupError:
            pass


def _certified_key(spec: HostSpec) -> paramiko.PKey | None:
    """The identity that a CertificateFile certifies, loaded with its certificate (OpenSSH pairs them by
    public key); None when there is none or the key needs a passphrase (the agent may still hold it)."""
    if not spec.certificate_files:
        return None
    for key_path in spec.identity_files:
        if not os.path.isfile(key_path):
            continue
        try:
            key = paramiko.PKey.from_path(key_path)
        except (paramiko.SSHException, OSError, ValueError):
            continue
        for cert in spec.certificate_files:
            try:
                key.load_certificate(cert)
                return key
            except (ValueError, OSError, paramiko.SSHException):
                continue
    return None


def _fabric_config() -> fabric.Config:
    """An empty SSHConfig: the route is already resolved (by OpenSSH); letting fabric look the hostname up
    again with paramiko's parser could apply a second, different answer. Lazy: a ~/.fabric.yaml's
    connect_kwargs must not override what ~/.ssh/config says."""
    return fabric.Config(ssh_config=paramiko.SSHConfig(), lazy=True)


def _fabric_connection(spec: HostSpec, gateway: fabric.Connection | None) -> fabric.Connection:
    """A fabric Connection for one hop, with the strict host key policy instead of fabric's AutoAdd."""
    timeout = max(1, math.ceil(spec.connect_timeout))  # fabric takes whole seconds (so does OpenSSH)
    kwargs: dict[str, Any] = {
        "key_filename": [p for p in spec.identity_files if os.path.isfile(p)],
        "look_for_keys": False,  # the identity files above are OpenSSH's list, defaults included
        "allow_agent": not spec.identities_only,
        "banner_timeout": timeout, "auth_timeout": timeout, "channel_timeout": timeout,
        "transport_factory": _nodelay_transport,
    }
    pkey = _certified_key(spec)
    if pkey is not None:
        kwargs["pkey"] = pkey
    if gateway is None and spec.proxy_command:
        # A ready socket, not fabric's gateway string: fabric would expand %-tokens a second time.
        kwargs["sock"] = _ProxyCommand(spec.proxy_command)
    conn = fabric.Connection(spec.hostname, user=spec.user, port=spec.port, config=_fabric_config(),
                             gateway=gateway if gateway is not None else False, connect_timeout=timeout,
                             connect_kwargs=kwargs)
    conn.client.set_missing_host_key_policy(_StrictPolicy(spec))
    # paramiko looks keys up as [host]:port; OpenSSH (and so the files) may list them under the alias.
    paramiko_name = spec.hostname if spec.port == 22 else f"[{spec.hostname}]:{spec.port}"
    for known in _known_keys(spec):
        conn.client.get_host_keys().add(paramiko_name, known.key.get_name(), known.key)
    return conn


@dataclasses.dataclass(frozen=True)
class _Hop:
    """Where one host stands in a route: what error messages say about it."""

    spec: HostSpec
    index: int  # 0 = first hop
    count: int  # hosts in the route, the target included
    previous: HostSpec | None  # the hop this one is reached through

    @property
    def is_target(self) -> bool:
        return self.index == self.count - 1


@dataclasses.dataclass
class _Link:
    """One opened hop of a route: its place and its fabric Connection."""

    hop: _Hop
    conn: fabric.Connection

    @property
    def spec(self) -> HostSpec:
        return self.hop.spec


class _LinkFailed(Exception):
    def __init__(self, hop: _Hop, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.hop = hop
        self.cause = cause


_RETRYABLE = (OSError, EOFError, paramiko.SSHException)
_FATAL = (paramiko.AuthenticationException, paramiko.BadHostKeyException, _HostKeyRefused, ConnectionError_)


def _retryable(exc: BaseException) -> bool:
    cause = exc.cause if isinstance(exc, _LinkFailed) else exc
    return isinstance(cause, _RETRYABLE) and not isinstance(cause, _FATAL)


def _translate(target: HostSpec, failed: _LinkFailed) -> ConnectionError_:
    """The one-line error for a route that failed: which hop, what happened, what to do."""
    link, exc, spec = failed.hop, failed.cause, failed.hop.spec
    hop = "" if link.is_target else f"jump host {spec.name} (hop {link.index + 1} of {link.count - 1}): "
    where = f"{target.name}: {hop}"
    if isinstance(exc, ConnectionError_):  # already says what and how (an unreadable known_hosts file)
        return ConnectionError_(f"{where}{exc.message.removeprefix(f'{spec.name}: ')}", hint=exc.hint)
    if isinstance(exc, _HostKeyRefused):
        return ConnectionError_(f"{where}host key of {exc.name} is unknown ({exc.key.get_name()} "
                                f"{exc.key.fingerprint})",
                                hint=openssh.unknown_key_hint(spec, direct=link.index == 0 and not spec.proxy_command))
    if isinstance(exc, paramiko.BadHostKeyException):
        known = [k for k in _known_keys(spec) if k.key == exc.expected_key]
        path = known[0].path if known else None
        if exc.key.get_name() not in {k.key.get_name() for k in _known_keys(spec)}:
            what = f"offers a {exc.key.get_name()} key ({exc.key.fingerprint}) but {path or 'known_hosts'} " \
                   f"lists only {exc.expected_key.get_name()} keys for {spec.known_hosts_key}"
        else:
            what = f"CHANGED: got {exc.key.get_name()} {exc.key.fingerprint}, {path or 'known_hosts'} has " \
                   f"{exc.expected_key.fingerprint}"
        return ConnectionError_(f"{where}host key of {spec.known_hosts_key} {what}",
                                hint=openssh.changed_key_hint(spec, path))
    if isinstance(exc, paramiko.AuthenticationException):
        return ConnectionError_(f"{where}authentication as {spec.user} failed: {exc}",
                                hint="check IdentityFile in ssh_config or your ssh-agent")
    if isinstance(exc, paramiko.ChannelException) and link.previous is not None:
        # The hop before this one opened the forwarding channel: it is the one that could not reach.
        return ConnectionError_(f"{target.name}: jump host {link.previous.name} (hop {link.index} of "
                                f"{link.count - 1}) cannot reach {spec.hostname}:{spec.port}: {exc}",
                                hint="is that host up, and its address right as the jump host sees it?")
    timeout = max(1, math.ceil(spec.connect_timeout))
    if isinstance(exc, socket.timeout) or "banner" in str(exc):
        return ConnectionError_(f"{where}cannot connect to {spec.hostname}:{spec.port}: no SSH answer within "
                                f"{timeout} s (ConnectTimeout): {exc}", hint="is the host up and the port right?")
    if spec.proxy_command and link.previous is None:
        return ConnectionError_(f"{where}cannot connect to {spec.hostname}:{spec.port} through ProxyCommand "
                                f"`{spec.proxy_command}`: {exc!r}", hint="does that command work in a shell?")
    return ConnectionError_(f"{where}cannot connect to {spec.hostname}:{spec.port}: {exc}",
                            hint="is the host up and the port right?")


class _Connection:
    """One SSH connection (its route of fabric Connections); ``busy`` counts its open channels."""

    def __init__(self, spec: HostSpec, attempts: int, accept_new_host_keys: bool = False) -> None:
        self.spec = spec
        self.attempts = attempts
        self.accept_new_host_keys = accept_new_host_keys  # the caller's, for the jump hosts too
        self.busy = 0
        self.links: list[_Link] = []
        self._route: list[HostSpec] | None = None
        self._lock = gevent.lock.Semaphore(1)

    @property
    def client(self) -> paramiko.SSHClient | None:
        """The target's SSHClient, once connected."""
        return self.links[-1].conn.client if self.links else None

    @property
    def jump(self) -> fabric.Connection | None:
        """The last jump host's fabric Connection (the target's gateway), when there is one."""
        return self.links[-2].conn if len(self.links) > 1 else None

    def transport(self) -> paramiko.Transport:
        """The live transport, (re)connecting with backoff when there is none or it dropped."""
        with self._lock:
            tr = self.links[-1].conn.transport if self.links else None
            if tr is not None and tr.is_active():
                return tr
            self.close()
            self.links = self._connect()
            tr = self.links[-1].conn.transport
            assert tr is not None
            return tr

    def _connect(self) -> list[_Link]:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5),
            retry=tenacity.retry_if_exception(_retryable), sleep=gevent.sleep, reraise=True)
        try:
            return retrying(self._connect_once)
        except _LinkFailed as failed:
            raise _translate(self.spec, failed) from None

    def _connect_once(self) -> list[_Link]:
        """Open the route hop by hop, so that a failure is pinned on the hop where it happened."""
        if self._route is None:
            self._route = route(self.spec, accept_new_host_keys=self.accept_new_host_keys)
        links: list[_Link] = []
        gateway: fabric.Connection | None = None
        try:
            for index, spec in enumerate(self._route):
                hop = _Hop(spec, index, len(self._route), self._route[index - 1] if index else None)
                try:
                    conn = _fabric_connection(spec, gateway)
                except Exception as exc:  # noqa: BLE001 - a ProxyCommand that cannot start, a bad file
                    raise _LinkFailed(hop, exc) from exc
                links.append(_Link(hop, conn))
                try:
                    conn.open()  # a gateway is already open: fabric only opens the forwarding channel
                except Exception as exc:  # noqa: BLE001 - translated with the hop it happened on
                    raise _LinkFailed(hop, exc) from exc
                conn.transport.set_keepalive(spec.keepalive)
                gateway = conn
            return links
        except BaseException:
            for link in reversed(links):
                link.conn.close()
            raise

    def drop_if_dead(self) -> None:
        """Forget a transport that dropped so the next channel reconnects (never a live one: other
        greenlets' channels run on it)."""
        with self._lock:
            tr = self.links[-1].conn.transport if self.links else None
            if tr is None or not tr.is_active():
                self.close()

    def close(self) -> None:
        for link in reversed(self.links):
            link.conn.close()
        self.links = []


class Host:
    """One SSH destination with ``connections`` x ``channels_per_connection`` concurrent channels.

    ``run`` is for small commands (output kept in memory), ``put_stream`` pushes bytes into a remote
    command's stdin (``tar -x``), ``get_stream`` pulls a remote command's stdout (``tar -c``).
    """

    def __init__(self, destination: str | HostSpec, *, ssh_config: str | None = None,
                 connections: int = DEFAULT_CONNECTIONS,
                 channels_per_connection: int = DEFAULT_CHANNELS_PER_CONNECTION,
                 accept_new_host_keys: bool = False, connect_attempts: int = 4) -> None:
        self.spec = destination if isinstance(destination, HostSpec) else resolve(
            destination, ssh_config=ssh_config, accept_new_host_keys=accept_new_host_keys)
        self.name = self.spec.name
        self.channels_per_connection = channels_per_connection
        self._conns = [_Connection(self.spec, connect_attempts, accept_new_host_keys)
                       for _ in range(max(1, connections))]
        self._slots = gevent.lock.BoundedSemaphore(len(self._conns) * channels_per_connection)
        self.commands = 0  # remote commands started: tests check it does not grow with executions

    def __repr__(self) -> str:
        return f"Host({self.spec.user}@{self.spec.hostname}:{self.spec.port})"

    # ------------------------------------------------------------------ channels
    def _open_channel(self) -> tuple[_Connection, paramiko.Channel]:
        """Take a channel slot on the least busy connection; the caller must ``_close_channel``."""
        self._slots.acquire()
        conn = min(self._conns, key=lambda c: (c.busy, c.client is None))
        conn.busy += 1
        try:
            for attempt in range(10):
                try:
                    return conn, conn.transport().open_session(timeout=self.spec.connect_timeout)
                except paramiko.ChannelException:
                    # sshd frees a session only after it garbage-collects the closed channel, so a
                    # CLOSE followed at once by an OPEN can still hit MaxSessions: back off, retry.
                    gevent.sleep(min(1.0, 0.01 * (2 ** attempt)) * (0.5 + random.random()))
                except (EOFError, OSError, paramiko.SSHException):
                    conn.drop_if_dead()  # dropped connection: the next transport() reconnects
                    gevent.sleep(0.05)
            return conn, conn.transport().open_session(timeout=self.spec.connect_timeout)
        except ConnectionError_:
            conn.busy -= 1
            self._slots.release()
            raise
        except BaseException as exc:
            conn.busy -= 1
            self._slots.release()
            if isinstance(exc, Exception):
                raise ConnectionError_(f"{self.name}: cannot open an SSH channel: {exc!r}") from exc
            raise

    def _close_channel(self, conn: _Connection, chan: paramiko.Channel) -> None:
        try:
            chan.close()
        finally:
            conn.busy -= 1
            self._slots.release()

    @staticmethod
    def _drain(chan: paramiko.Channel, deadline: float | None,
               on_stdout: list[bytes] | None = None) -> tuple[bytes, bytes, bool]:
        """Read stdout and stderr until EOF without a thread per stream; True if the deadline passed."""
        out: list[bytes] = [] if on_stdout is None else on_stdout
        err: list[bytes] = []
        fd = chan.fileno()
        while True:
            while chan.recv_ready():
                out.append(chan.recv(_CHUNK))
            while chan.recv_stderr_ready():
                err.append(chan.recv_stderr(_CHUNK))
            if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                return b"".join(out), b"".join(err), False
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                return b"".join(out), b"".join(err), True
            select.select([fd], [], [], wait)

    def _finish(self, cmd: str, chan: paramiko.Channel, deadline: float | None, warn: bool) -> Result:
        out, err, timed_out = self._drain(chan, deadline)
        code: int | None = None
        if not timed_out:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if chan.status_event.wait(left):
                code = chan.recv_exit_status()
                if code == -1:  # the server closed the channel without a status: the link dropped
                    code = None
            else:
                timed_out = True
        result = Result(cmd, code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), out)
        if timed_out and not warn:
            raise RemoteCommandError(self.name, result, timed_out=True)
        if not result.ok and not warn:
            raise RemoteCommandError(self.name, result)
        return result

    # ------------------------------------------------------------------ API
    def run(self, cmd: str, stdin: bytes | None = None, timeout: float | None = None,
            warn: bool = False) -> Result:
        """Run ``cmd`` (a shell line, already quoted) and return its Result; raise unless ``warn``.

        A command whose channel was open is never re-run on a dropped link (it may have had effects);
        only opening the channel is retried.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        conn, chan = self._open_channel()
        self.commands += 1
        try:
            chan.exec_command(cmd)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            return self._finish(cmd, chan, deadline, warn)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError_(f"{self.name}: connection lost during `{cmd[:80]}`: {exc!r}") from exc
        finally:
            self._close_channel(conn, chan)

    def put_stream(self, chunks: Iterable[bytes], remote_cmd: str, timeout: float | None = None,
                   warn: bool = False) -> Result:
        """Stream ``chunks`` into ``remote_cmd``'s stdin (e.g. a tar archive into ``tar -x``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        conn, chan = self._open_channel()
        self.commands += 1
        try:
            chan.exec_command(remote_cmd)
            for chunk in chunks:
                if chunk:
                    chan.sendall(chunk)
            chan.shutdown_write()
            return self._finish(remote_cmd, chan, deadline, warn)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError_(f"{self.name}: connection lost while streaming into "
                                   f"`{remote_cmd[:80]}`: {exc!r}") from exc
        finally:
            self._close_channel(conn, chan)

    def get_stream(self, remote_cmd: str, timeout: float | None = None) -> Iterator[bytes]:
        """Yield ``remote_cmd``'s stdout as it arrives; raise RemoteCommandError at the end if it failed.

        The channel slot is held until the iterator is exhausted or closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        conn, chan = self._open_channel()
        self.commands += 1
        err: list[bytes] = []
        try:
            chan.exec_command(remote_cmd)
            chan.shutdown_write()
            fd = chan.fileno()
            while True:
                got = False
                while chan.recv_ready():
                    data = chan.recv(_CHUNK)
                    if data:
                        got = True
                        yield data
                while chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(_CHUNK))
                if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                if not got:
                    wait = None if deadline is None else deadline - time.monotonic()
                    if wait is not None and wait <= 0:
                        raise RemoteCommandError(self.name, Result(remote_cmd, None, "", b"".join(err).decode(
                            "utf-8", "replace")), timed_out=True)
                    select.select([fd], [], [], wait)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            code = chan.recv_exit_status() if chan.status_event.wait(left) else None
            if code != 0:
                raise RemoteCommandError(self.name, Result(remote_cmd, code, "", b"".join(err).decode(
                    "utf-8", "replace")), timed_out=code is None)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError_(f"{self.name}: connection lost while reading `{remote_cmd[:80]}`: {exc!r}") from exc
        finally:
            self._close_channel(conn, chan)

    def open_session(self, remote_cmd: str) -> "Session":
        """Start ``remote_cmd`` with stdin and stdout kept open both ways (the agent's ``attach``).

        The session holds one channel slot until closed; it is how one long-lived remote process is
        fed requests and read for events without a channel (and an sshd fork) per request.
        """
        conn, chan = self._open_channel()
        self.commands += 1
        try:
            chan.exec_command(remote_cmd)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self._close_channel(conn, chan)
            raise ConnectionError_(f"{self.name}: connection lost while starting `{remote_cmd[:80]}`: {exc!r}") from exc
        except BaseException:
            self._close_channel(conn, chan)
            raise
        return Session(self, conn, chan, remote_cmd)

    def check(self) -> None:
        """Connect now (raising ConnectionError_ with the fix) instead of at the first command."""
        self._conns[0].transport()

    def close(self) -> None:
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Host", "Session", "HostSpec", "Result", "RemoteCommandError", "resolve", "route",
           "DEFAULT_CHANNELS_PER_CONNECTION", "DEFAULT_CONNECTIONS"]


class Session:
    """A remote command whose stdin and stdout stay open: send() bytes, recv() what comes back."""

    def __init__(self, host: Host, conn: _Connection, chan: paramiko.Channel, cmd: str) -> None:
        self.host = host
        self._conn = conn
        self._chan = chan
        self.cmd = cmd
        self._stderr: list[bytes] = []
        self._closed = False

    def send(self, data: bytes) -> None:
        try:
            self._chan.sendall(data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise ConnectionError_(f"{self.host.name}: connection lost while writing to `{self.cmd[:60]}`: "
                                   f"{exc!r}") from exc

    def recv(self) -> bytes:
        """The next bytes of stdout; b"" once the command ended or the link dropped."""
        chan = self._chan
        fd = chan.fileno()
        while True:
            if chan.recv_ready():
                return chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                self._stderr.append(chan.recv_stderr(_CHUNK))
                del self._stderr[:-16]
            if chan.eof_received or chan.closed:
                return b""
            select.select([fd], [], [], 5.0)
            if self._closed:
                return b""

    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-500:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._chan.shutdown_write()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass
        self.host._close_channel(self._conn, self._chan)
