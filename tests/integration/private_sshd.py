"""A private OpenSSH server on its own loopback port, for tests that restart sshd mid-run.

Why not the dev cluster's: restarting the shared sshd drops every other test's sessions (COMMON rule,
and test_faults.py is the one test allowed to). This one has its own config, host key, pid file and port,
and admits only the dev cluster's unprivileged user with the dev cluster's client key (its
authorized_keys is already set up by devcluster.sh), so nothing of the shared cluster changes.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
USER = "orchestra"  # devcluster.sh's RUSER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateSSHD:
    def __init__(self, directory: Path, client_key: str, alias: str = "privsshd") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.port = _free_port()
        self.alias = alias
        self.pidfile = self.dir / "sshd.pid"
        key = self.dir / "host_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "private-sshd", "-f", str(key)], check=True)
        self.config = self.dir / "sshd_config"
        self.config.write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {key}
PidFile {self.pidfile}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers {USER}
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
AuthorizedKeysFile .ssh/authorized_keys
MaxStartups 64:30:128
""")
        hostkey = " ".join((self.dir / "host_key.pub").read_text().split()[:2])
        (self.dir / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {hostkey}\n")
        self.ssh_config = str(self.dir / "ssh_config")
        Path(self.ssh_config).write_text(f"""\
Host {alias}
    HostName 127.0.0.1
    Port {self.port}
    User {USER}
    IdentityFile {client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.dir / "known_hosts"}
    StrictHostKeyChecking yes
    GSSAPIAuthentication no
    KexAlgorithms curve25519-sha256
""")
        subprocess.run([SSHD, "-t", "-f", str(self.config)], check=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def _pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        subprocess.run([SSHD, "-f", str(self.config), "-E", str(self.dir / "sshd.log")], check=True)
        for _ in range(100):  # bounded: until it accepts a connection
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"private sshd on port {self.port} did not start: {(self.dir / 'sshd.log').read_text()}")

    def stop(self) -> None:
        """The listener and every session it serves (its children), by the pids this fixture started."""
        pid = self._pid()
        if pid is None:
            return
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
        for target, sig in [(pid, signal.SIGTERM)] + [(int(c), signal.SIGKILL) for c in children]:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        self.pidfile.unlink(missing_ok=True)

    def restart(self) -> None:
        self.stop()
        self.start()
