"""The ``serve`` daemon: a unix socket, SIGCHLD through a wakeup pipe, executions spawned and reaped,
adopted runs polled through their files, results framed onto every waiting client."""
import collections
import fcntl
import os
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import time

from .posix import is_wrapper_of, pid_alive, read_small
from .protocol import (MAX_LINE, MAX_READ, META_DIR, SOCKET_NAME, exit_code_of, parse_request, render_event,
                       split_lines)
from .results import pack_results
from .rundirs import RunDirs, remove_stale_spares

# ------------------------------------------------------------------------------------------ the daemon
class _Client:
    def __init__(self, sock) -> None:
        self.sock = sock
        self.inbuf = b""
        self.out = collections.deque()  # bytes, or (file, remaining) to stream
        self.closed = False
        self.base_env = None  # the environment executions start from (an ``env`` request), else the agent's


class _Execution:
    def __init__(self, execution_id: str, run_dir: str, outputs) -> None:
        self.id = execution_id
        self.run_dir = run_dir
        self.outputs = list(outputs)
        self.pid = None
        self.child = False
        self.started = None
        self.clients = set()
        self.kill_at = None  # (monotonic deadline, signal) of a pending KILL escalation
        self.dead_since = None
        self.code_dir = None  # set when this agent created the run directory (so it may recycle it)
        self.token = ""  # which launch started it: a repeated launch line carries the same
        self.ending = None  # (exit code, end time) once this agent saw it end


class Agent:
    """The ``serve`` loop: a unix socket, SIGCHLD through a wakeup pipe, adopted runs polled by file."""

    ADOPTED_POLL = 0.25

    def __init__(self, directory: str, root: str, wrapper: str, marker: str, idle_exit: float = 600.0) -> None:
        self.dir = os.path.abspath(directory)
        self.root = os.path.realpath(root)
        self.wrapper = 'cd "$1" || exit 126; shift; ' + wrapper
        self.marker = marker
        self.idle_exit = idle_exit
        self.sel = selectors.DefaultSelector()
        self.clients = {}
        self.runs = {}  # execution id -> _Execution
        self.by_pid = {}
        self.idle_since = time.monotonic()
        self.stopping = False
        self.dirs = RunDirs(os.path.join(self.root, "runs"))
        self.launches = 0

    # -- plumbing
    def _send(self, client: _Client, data) -> None:
        if client.closed:
            return
        client.out.append(data)
        self._interest(client)

    def _interest(self, client: _Client) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        self.sel.modify(client.sock, events, client)

    def _event(self, client: _Client, kind: str, execution_id: str = "", **fields) -> None:
        self._send(client, (render_event(kind, execution_id, **fields) + "\n").encode("ascii"))

    def _drop(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        try:
            self.sel.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()
        for item in client.out:
            if isinstance(item, tuple):
                item[0].close()
        client.out.clear()
        self.clients.pop(id(client), None)
        for run in self.runs.values():
            run.clients.discard(client)

    def _flush(self, client: _Client) -> None:
        while client.out and not client.closed:
            item = client.out[0]
            if isinstance(item, tuple):  # a spooled payload: read it as the socket drains
                handle, remaining = item
                chunk = handle.read(min(remaining, 1 << 18)) if remaining > 0 else b""
                if not chunk:  # done (or a truncated spool: the checksum tells the controller)
                    handle.close()
                    client.out.popleft()
                    continue
                remaining -= len(chunk)
                client.out[0] = chunk
                if remaining > 0:
                    client.out.insert(1, (handle, remaining))
                else:
                    handle.close()
                item = chunk
            try:
                sent = client.sock.send(item)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(client)
                return
            if sent < len(item):
                client.out[0] = item[sent:]
                break
            client.out.popleft()
        if not client.closed:
            self._interest(client)

    # -- requests
    def _handle(self, client: _Client, line: str) -> None:
        try:
            kind, execution_id, fields = parse_request(line)
        except ValueError as exc:
            sys.stderr.write("orchestra-agent: %s\n" % exc)
            return
        try:
            if kind == "ping":
                self._event(client, "pong", token=fields["token"])
            elif kind == "env":
                client.base_env = fields["env"]
            elif kind == "launch":
                self._launch(client, execution_id, fields)
            elif kind == "watch":
                self._watch(client, execution_id, fields["run_dir"], fields.get("outputs") or [])
            elif kind == "kill":
                self._kill(execution_id, fields["signal"], fields["grace"])
            elif kind == "remove":
                self._remove(client, execution_id, fields["run_dir"])
            elif kind == "read":
                self._read_file(client, execution_id, fields["name"], fields["offset"], fields["run_dir"])
        except Exception as exc:  # one bad request must not take the executions of others down
            if execution_id:
                self._event(client, "error", execution_id, message="%s: %s" % (kind, exc))
            else:
                sys.stderr.write("orchestra-agent: %s: %s\n" % (kind, exc))

    def _read_file(self, client: _Client, execution_id: str, name: str, offset: int, run_dir: str) -> None:
        """A ``data`` frame: the run directory's ``.orchestra/NAME`` past ``offset`` (at most MAX_READ bytes).

        Why through the agent: a running execution's metrics and output reach the controller on the
        session it already holds, instead of one remote shell per read. The reader's offset is the
        acknowledgement (it asks again from its new offset), so nothing is kept here and a dropped
        session loses nothing. Never an ``error`` event: that would settle the execution as failed; a file
        that cannot be read (not written yet, not a run directory) is answered as empty."""
        data = b""
        if self._is_run_dir(execution_id, run_dir):
            flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
            try:
                fd = os.open(os.path.join(run_dir, META_DIR, name), flags)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    os.lseek(fd, offset, os.SEEK_SET)
                    data = os.read(fd, MAX_READ)
                except OSError:
                    data = b""
                finally:
                    os.close(fd)
        header = render_event("data", execution_id, name=name, offset=offset, size=len(data))
        self._send(client, (header + "\n").encode("ascii") + data)

    def _is_run_dir(self, execution_id: str, path: str) -> bool:
        """Only ``<root>/runs/<execution id>`` is ever created, recycled or removed by request."""
        head, name = os.path.split(path.rstrip("/"))
        return name == execution_id and os.path.realpath(head) == os.path.join(self.root, "runs")

    def _launch(self, client: _Client, execution_id: str, body: dict) -> None:
        run_dir = body["run_dir"]
        if not self._is_run_dir(execution_id, run_dir):
            raise ValueError("run directory %s is not %s/runs/%s" % (run_dir, self.root, execution_id))
        token = body.get("token") or ""
        known = self.runs.get(execution_id)
        if known is not None or os.path.isdir(os.path.join(run_dir, META_DIR)):
            earlier = known.token if known is not None else read_small(os.path.join(run_dir, META_DIR, "token"))
            if not token or earlier == token:
                # The same launch repeated after a dropped link: never start it twice, watch it instead.
                self._watch(client, execution_id, run_dir, body.get("outputs") or [])
                return
            # A new attempt (a retry, a resume) where an earlier one left its directory: that one is over
            # for the controller, so it goes (stopped if it somehow still runs) and this one starts clean.
            self._discard_earlier(execution_id, run_dir, known)
        started = time.time()

        meta = {"started": "%.6f" % started}
        if body.get("slot") is not None:
            meta["slot"] = str(body["slot"])
        if token:
            meta["token"] = token
        meta.update(body.get("meta") or {})  # e.g. the launcher pid a resume checks

        if not os.path.isdir(body["code_dir"]):
            raise ValueError("no code directory %s" % body["code_dir"])
        self.dirs.create(os.path.realpath(body["code_dir"]), run_dir, meta)
        env = dict(client.base_env if client.base_env is not None else os.environ)
        env.update(body["env"])
        argv = ["/bin/sh", "-c", self.wrapper, self.marker, run_dir, body["command"]]
        # The execution's cores (a binding by resources): the child inherits the agent's affinity at
        # spawn, so the agent takes the cores for the instant of the spawn and gives them back. Why not
        # taskset or a preexec_fn: no extra process per execution, and posix_spawn has no such hook.
        affinity = body.get("affinity")
        saved = None
        if affinity and hasattr(os, "sched_setaffinity"):
            saved = os.sched_getaffinity(0)
            os.sched_setaffinity(0, [int(core) for core in affinity])
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            # posix_spawn (vfork) when the remote Python has it: a fork of this process per execution
            # is what the agent exists to make cheap.
            if hasattr(os, "posix_spawn"):
                pid = os.posix_spawn("/bin/sh", argv, env, setsid=True, file_actions=[
                    (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2)])
            else:  # pragma: no cover - Python < 3.8 on the remote
                import subprocess
                pid = subprocess.Popen(argv, env=env, stdin=devnull, stdout=devnull, stderr=devnull,
                                       start_new_session=True).pid
        finally:
            os.close(devnull)
            if saved is not None:
                os.sched_setaffinity(0, saved)
        run = _Execution(execution_id, run_dir, body.get("outputs") or [])
        run.pid, run.child, run.started, run.token = pid, True, started, token
        run.code_dir = os.path.realpath(body["code_dir"])
        self.launches += 1
        run.clients.add(client)
        self.runs[execution_id] = run
        self.by_pid[pid] = run
        self._event(client, "started", execution_id, pid=pid, started=started)

    def _discard_earlier(self, execution_id: str, run_dir: str, known) -> None:
        pid = known.pid if known is not None else None
        if pid is None:
            text = read_small(os.path.join(run_dir, META_DIR, "pid"))
            pid = int(text) if text.isdigit() else None
        ours = known is not None and known.child and known.pid == pid  # our unreaped child: its pid is held
        if pid is not None and pid_alive(pid) and (ours or is_wrapper_of(pid, run_dir, self.marker)):
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if known is not None:
            for client in list(known.clients):
                self._event(client, "gone", execution_id)
            known.clients.clear()
            self.by_pid.pop(known.pid, None)
            self.runs.pop(execution_id, None)
        aside = "%s.old.%d" % (run_dir, int(time.time() * 1e9))
        os.rename(run_dir, aside)
        shutil.rmtree(aside, ignore_errors=True)

    def _watch(self, client: _Client, execution_id: str, run_dir: str, outputs) -> None:
        run = self.runs.get(execution_id)
        if run is None:
            if not os.path.isdir(run_dir):
                self._event(client, "gone", execution_id)
                return
            run = _Execution(execution_id, run_dir, outputs)
            pid_text = read_small(os.path.join(run_dir, META_DIR, "pid"))
            run.pid = int(pid_text) if pid_text.isdigit() else None
            started_text = read_small(os.path.join(run_dir, META_DIR, "started"))
            try:
                run.started = float(started_text)
            except ValueError:
                run.started = None
            self.runs[execution_id] = run
        run.clients.add(client)
        if outputs:
            run.outputs = list(outputs)
        if run.pid is not None and self._alive(run):
            self._event(client, "started", execution_id, pid=run.pid, started=run.started or time.time())
        self._check_adopted(run)

    def _alive(self, run: _Execution) -> bool:
        """Whether the run's wrapper still runs: a child of ours holds its pid until reaped; an adopted
        run's pid was read from a file, and is trusted only while it is still that run's wrapper."""
        if run.pid is None:
            return False
        if run.child:
            return True
        return pid_alive(run.pid) and is_wrapper_of(run.pid, run.run_dir, self.marker)

    def _kill(self, execution_id: str, sig: int, grace: float) -> None:
        run = self.runs.get(execution_id)
        if run is None or run.pid is None or not self._alive(run):
            return
        try:
            os.killpg(run.pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(run.pid, sig)
            except (ProcessLookupError, PermissionError):
                return
        if sig != signal.SIGKILL:
            run.kill_at = time.monotonic() + max(0.0, grace)

    def _remove(self, client: _Client, execution_id: str, run_dir: str) -> None:
        if not self._is_run_dir(execution_id, run_dir):
            raise ValueError("refusing to remove %s: not a run directory of %s" % (run_dir, self.root))
        run = self.runs.get(execution_id)
        if run is not None and run.child and run.pid in self.by_pid:
            raise ValueError("refusing to remove %s: the execution still runs" % run_dir)
        self.runs.pop(execution_id, None)
        code_dir = run.code_dir if run is not None and os.path.realpath(run.run_dir) == os.path.realpath(run_dir) \
            else None
        self.dirs.retire(run_dir, code_dir)

    # -- endings
    def _finish(self, run: _Execution, code, ended: float) -> None:
        """Send the exit and the results to whoever waits; keep the run until it is removed."""
        run.kill_at = None
        if run.pid in self.by_pid:
            del self.by_pid[run.pid]
        run.pid = None
        run.child = False
        run.ending = (code, ended)  # what a later watch reports (a killed wrapper wrote no exit_code)
        clients = [c for c in run.clients if not c.closed]
        run.clients.clear()
        if not clients:
            return  # nobody listens now; a later `watch` finds the exit code in the run directory
        spool, size, digest = pack_results(run.run_dir, run.outputs)
        header = (render_event("exited", run.id, code=code, started=run.started, ended=ended, size=size,
                               sha256=digest) + "\n").encode("ascii")
        data = spool.read() if size <= (1 << 20) else None
        for index, client in enumerate(clients):
            self._send_frame(client, header, data, spool, size, last=index == len(clients) - 1)

    def _send_frame(self, client: _Client, header: bytes, data, spool, size: int, last: bool) -> None:
        if data is not None:
            self._send(client, header + data)
            if last:
                spool.close()
            return
        handle = spool if last else _reopen(spool)
        client.out.append(header)
        client.out.append((handle, size))
        self._interest(client)

    def _exit_code_file(self, run: _Execution):
        text = read_small(os.path.join(run.run_dir, META_DIR, "exit_code"))
        return int(text) if re.match(r"^-?[0-9]+$", text or "") else None

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.by_pid.get(pid)
            if run is None:
                continue
            # The wrapper's EXIT trap wrote exit_code before it exited: prefer it (it is what an adopted
            # run reports too); the wait status covers a wrapper killed before its trap ran.
            code = self._exit_code_file(run)
            self._finish(run, exit_code_of(status) if code is None else code, time.time())

    def _check_adopted(self, run: _Execution) -> None:
        """A run this process did not start: over when exit_code exists, lost when its pid is gone."""
        if run.child:
            return
        if not os.path.isdir(run.run_dir):
            for client in list(run.clients):
                self._event(client, "gone", run.id)
            run.clients.clear()
            self.runs.pop(run.id, None)
            return
        code = self._exit_code_file(run)
        if code is None and run.ending is not None:
            self._finish(run, *run.ending)  # it ended under this agent, as its wait status said
            return
        if code is not None:
            try:
                ended = os.stat(os.path.join(run.run_dir, META_DIR, "exit_code")).st_mtime
            except OSError:
                ended = time.time()
            self._finish(run, code, ended)
            return
        if self._alive(run):
            run.dead_since = None
            return
        # No live wrapper and no exit code: give a just-exiting wrapper time to write its file.
        now = time.monotonic()
        run.dead_since = run.dead_since or now
        if now - run.dead_since > 2.0:
            self._finish(run, None, time.time())

    def _tick(self) -> None:
        now = time.monotonic()
        for run in list(self.runs.values()):
            if run.kill_at is not None and now >= run.kill_at and run.pid is not None:
                run.kill_at = None
                try:
                    if self._alive(run):
                        os.killpg(run.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if not run.child and run.clients:
                self._check_adopted(run)

    # -- main loop
    def serve(self) -> int:
        os.makedirs(self.dir, exist_ok=True)
        lock = open(os.path.join(self.dir, "lock"), "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return 0  # another agent serves this directory
        os.chdir(self.dir)  # bind a relative name: unix socket paths are limited to ~107 bytes
        try:
            os.unlink(SOCKET_NAME)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            listener.bind(SOCKET_NAME)
        finally:
            os.umask(old_umask)
        listener.listen(64)
        listener.setblocking(False)
        with open("pid", "w") as handle:
            handle.write("%d\n" % os.getpid())
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.set_wakeup_fd(wake_w)
        self.sel.register(listener, selectors.EVENT_READ, "listen")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        remove_stale_spares(os.path.join(self.root, "runs"))
        self._reap()  # children of an earlier exec image cannot exist, but be safe
        try:
            while not self.stopping:
                adopted = any(not r.child and r.clients for r in self.runs.values())
                timers = any(r.kill_at is not None for r in self.runs.values())
                timeout = self.ADOPTED_POLL if (adopted or timers) else 5.0
                for key, events in self.sel.select(timeout):
                    if key.data == "listen":
                        self._accept(listener)
                    elif key.data == "wake":
                        try:
                            while os.read(wake_r, 4096):
                                pass
                        except (BlockingIOError, InterruptedError):
                            pass
                        self._reap()
                    else:
                        client = key.data
                        if events & selectors.EVENT_READ:
                            self._read(client)
                        if events & selectors.EVENT_WRITE and not client.closed:
                            self._flush(client)
                self._reap()
                self._tick()
                if not os.path.exists(SOCKET_NAME):
                    break  # the agent's directory was removed (workdir cleaned up): nothing to serve
                if self.clients or self.by_pid or any(r.clients for r in self.runs.values()):
                    self.idle_since = time.monotonic()
                elif time.monotonic() - self.idle_since > self.idle_exit:
                    break
        finally:
            sys.stderr.write("orchestra-agent: exiting after %d launches (%d in recycled directories, peak %d "
                             "directories)\n" % (self.launches, self.dirs.recycled, self.dirs.limit))
            self.dirs.clear()
            self.sel.unregister(listener)
            listener.close()
            try:
                os.unlink(SOCKET_NAME)
            except OSError:
                pass
        return 0

    def _accept(self, listener) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[id(client)] = client
            self.sel.register(sock, selectors.EVENT_READ, client)
            self._event(client, "hello", pid=os.getpid())

    def _read(self, client: _Client) -> None:
        try:
            data = client.sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        lines, client.inbuf = split_lines(client.inbuf + data)
        if len(client.inbuf) > MAX_LINE:
            self._drop(client)
            return
        for line in lines:
            self._handle(client, line)
            if client.closed:
                return


def _reopen(spool):
    """An independent reader over a spooled payload, for a second client waiting on the same run."""
    spool.seek(0)
    copy = tempfile.TemporaryFile()
    shutil.copyfileobj(spool, copy)
    spool.seek(0)
    copy.seek(0)
    return copy


