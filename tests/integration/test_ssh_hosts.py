"""runaway.hosts against a real OpenSSH server: host keys, channel bounds, streams, timeouts."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import gevent
import pytest

from orchestra.errors import ConnectionError_
from runaway.hosts import Host, RemoteCommandError, resolve


def test_resolve_alias_reads_ssh_config(devcluster):
    spec = resolve("devcluster", ssh_config=devcluster.ssh_config)
    assert (spec.hostname, spec.port, spec.user) == ("127.0.0.1", 2222, "orchestra")
    assert spec.known_hosts_files == (devcluster.known_hosts,)
    assert spec.identities_only
    explicit = resolve("bob@example.org:2200", ssh_config=devcluster.ssh_config)
    assert (explicit.hostname, explicit.port, explicit.user) == ("example.org", 2200, "bob")


def test_unknown_host_key_is_refused_with_fingerprint_and_fix(devcluster, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    config = devcluster.write_ssh_config(tmp_path / "ssh_config", UserKnownHostsFile=str(empty))
    host = Host("devcluster", ssh_config=config, connect_attempts=1)
    with pytest.raises(ConnectionError_) as err:
        host.run("true")
    message = str(err.value)
    assert "unknown" in message and "SHA256:" in message and "[127.0.0.1]:2222" in message
    assert "ssh-keyscan" in message
    assert empty.read_text() == ""  # nothing was silently trusted


def test_changed_host_key_is_refused(devcluster, tmp_path):
    import paramiko

    other = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    if other is None:  # paramiko cannot generate ed25519: use a fixed foreign key
        line = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
    else:
        line = f"[127.0.0.1]:2222 {other.get_name()} {other.get_base64()}\n"
    known = tmp_path / "known_hosts"
    known.write_text(line)
    config = devcluster.write_ssh_config(tmp_path / "ssh_config", UserKnownHostsFile=str(known))
    with pytest.raises(ConnectionError_) as err:
        Host("devcluster", ssh_config=config, connect_attempts=1).run("true")
    assert "CHANGED" in str(err.value) and "ssh-keygen -R" in str(err.value)


def test_accept_new_host_keys_records_the_key(devcluster, tmp_path):
    known = tmp_path / "known_hosts"
    config = devcluster.write_ssh_config(tmp_path / "ssh_config", UserKnownHostsFile=str(known))
    with Host("devcluster", ssh_config=config, accept_new_host_keys=True) as host:
        assert host.run("echo ok").stdout == "ok\n"
    assert known.read_text().startswith("[127.0.0.1]:2222 ssh-ed25519 ")
    with Host("devcluster", ssh_config=config) as again:  # now known: strict mode accepts it
        assert again.run("true").ok


def test_run_result_and_errors(devcluster):
    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        result = host.run("echo out; echo err >&2; exit 3", warn=True)
        assert (result.ok, result.exit_code, result.stdout, result.stderr) == (False, 3, "out\n", "err\n")
        with pytest.raises(RemoteCommandError) as err:
            host.run("echo boom >&2; exit 4")
        assert err.value.result.exit_code == 4 and "boom" in str(err.value)
        assert host.run("cat", stdin=b"abc").stdout == "abc"


def test_100_concurrent_commands_one_host_none_lost(devcluster):
    """MaxSessions=10 on the server: 100 greenlets through one connection bounded to 8 channels."""
    host = Host("devcluster", ssh_config=devcluster.ssh_config, connections=1, channels_per_connection=8)
    peak = 0

    def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, host._conns[0].busy)
            gevent.sleep(0.001)

    sampler = gevent.spawn(sample)
    try:
        jobs = [gevent.spawn(host.run, f"echo {i}") for i in range(100)]
        gevent.joinall(jobs, timeout=120)
    finally:
        sampler.kill()
        host.close()
    failures = [j.exception for j in jobs if not j.successful()]
    assert not failures, failures[:3]
    assert [j.value.stdout for j in jobs] == [f"{i}\n" for i in range(100)]
    assert 1 < peak <= 8


def test_streams_round_trip(devcluster):
    blob = bytes(range(256)) * 4096  # 1 MiB
    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        chunks = (blob[i:i + 65536] for i in range(0, len(blob), 65536))
        result = host.put_stream(chunks, "sha256sum")
        assert result.stdout.split()[0] == hashlib.sha256(blob).hexdigest()
        got = b"".join(host.get_stream("head -c 3000000 /dev/zero"))
        assert got == b"\0" * 3000000
        with pytest.raises(RemoteCommandError):
            list(host.get_stream("echo partial; exit 9"))


def test_timeout_returns_promptly(devcluster):
    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        start = time.monotonic()
        with pytest.raises(RemoteCommandError) as err:
            host.run("sleep 30", timeout=0.5)
        assert err.value.timed_out and time.monotonic() - start < 5
        assert host.run("echo still usable").ok


def test_reconnects_after_the_connection_drops(devcluster):
    with Host("devcluster", ssh_config=devcluster.ssh_config, connections=1) as host:
        assert host.run("true").ok
        host._conns[0].client.get_transport().sock.close()  # the link dies under us
        gevent.sleep(0.2)
        assert host.run("echo back").stdout == "back\n"


def test_unreachable_port_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionError_) as err:
        Host("nobody@127.0.0.1:1", ssh_config=str(Path("/dev/null")), connect_attempts=2).run("true")
    assert "cannot connect" in str(err.value)


def test_proxy_jump_through_a_bastion(devcluster):
    """`ProxyJump devcluster` in ssh_config: the target is reached over a direct-tcpip channel."""
    with Host("devcluster-jump", ssh_config=devcluster.ssh_config) as host:
        assert host.spec.proxy_jump == "devcluster"
        jobs = [gevent.spawn(host.run, f"echo {i}") for i in range(20)]
        gevent.joinall(jobs, raise_error=True)
        assert [j.value.stdout for j in jobs] == [f"{i}\n" for i in range(20)]
        assert host._conns[0].jump is not None  # really went through the bastion


def test_the_agent_is_installed_again_by_a_slow_sender(devcluster):
    """The next controller on a host ships the agent again, and the command keeps it where it is: it must
    still read what is sent. It exited at once, and a sender slower than it (a loaded controller) wrote into
    a closed channel: "connection lost while streaming" (CI, 2026-12-02)."""
    from runaway.agent import bundle
    from runaway.launchers.agent import install_command

    workdir = f".orchestra-test-install-{time.time_ns()}"
    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        try:
            path, command = install_command(workdir)
            data = bundle()
            host.put_stream([data], command, timeout=60)

            def slowly():
                yield data[:1024]
                gevent.sleep(1.0)  # the remote side has long seen that the file exists
                yield data[1024:]

            host.put_stream(slowly(), command, timeout=60)  # kept, and no error
            assert host.run(f"sha256sum {path}").stdout.split()[0] == hashlib.sha256(data).hexdigest()
        finally:
            host.run(f"rm -rf {workdir}", warn=True)
