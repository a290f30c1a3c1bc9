"""Fixtures for integration tests against the real dev cluster (sshd + Slurm on loopback).

gevent's monkey patching happens here, in the test entry, never in library imports (DESIGN.md): the
SSH layer must be exercised the way the CLI runs it. The cluster is brought up once per session with
tests/cluster/devcluster.sh; without root (and outside CI) the cluster tests are skipped with the reason,
under CI=true they must run, so a missing cluster is an error there.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import io  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
from collections.abc import Callable, Iterable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "cluster" / "devcluster.sh"
CLUSTER_DIR = Path(os.environ.get("ORCHESTRA_DEVCLUSTER_DIR", "/tmp/orchestra-devcluster"))


class DevCluster:
    """What a test needs to reach the dev cluster."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ssh_config = str(directory / "ssh" / "ssh_config")
        self.known_hosts = str(directory / "ssh" / "known_hosts")
        self.identity = str(directory / "ssh" / "id_ed25519")
        self.host = "devcluster"
        self.slurm_conf = str(directory / "slurm" / "slurm.conf")

    def write_ssh_config(self, path: Path, **overrides: str) -> str:
        """A copy of the ssh_config with some keys replaced (e.g. another UserKnownHostsFile)."""
        lines = []
        for line in Path(self.ssh_config).read_text().splitlines():
            key = line.strip().split(" ", 1)[0]
            if key in overrides:
                line = f"    {key} {overrides[key]}"
            lines.append(line)
        path.write_text("\n".join(lines) + "\n")
        return str(path)

    def slurm(self, cmd: str) -> str:
        env = dict(os.environ, SLURM_CONF=self.slurm_conf)
        return subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True, check=False).stdout


def _must_run() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def devcluster() -> DevCluster:
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        if os.geteuid() != 0:
            reason = ("the dev cluster is not up and bringing it up needs root: run "
                      "`sudo bash tests/cluster/devcluster.sh up` first")
            if _must_run():
                pytest.fail(reason + " (CI=true: cluster tests must not be skipped)")
            pytest.skip(reason)
        up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=600)
        if up.returncode != 0:
            pytest.fail(f"devcluster.sh up failed:\n{up.stdout}\n{up.stderr}")
    return DevCluster(CLUSTER_DIR)


def make_archive(files: dict[str, bytes | str]) -> Callable[[str], Iterable[bytes]]:
    """A CodeArchive over in-memory files (the real one is expegit's `git archive`)."""

    def code(commit: str) -> Iterator[bytes]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                raw = data.encode() if isinstance(data, str) else data
                info = tarfile.TarInfo(name)
                info.size = len(raw)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(raw))
        payload = buf.getvalue()
        for start in range(0, len(payload), 8192):  # several chunks, like a real stream
            yield payload[start:start + 8192]

    return code


@pytest.fixture
def remote_workdir_cleanup(devcluster: DevCluster, tmp_path: Path) -> Iterator[None]:
    """Removes the test's remote workdir (``~/.orchestra-test-<tmp dir name>``) on the dev cluster."""
    yield
    from runaway.hosts import Host

    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        host.run(f"rm -rf ~/.orchestra-test-{tmp_path.name}", warn=True)


@pytest.fixture
def archive() -> Callable[[dict[str, bytes | str]], Callable[[str], Iterable[bytes]]]:
    return make_archive
