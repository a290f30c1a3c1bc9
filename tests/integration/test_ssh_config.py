"""A user's ssh_config, honoured as OpenSSH honours it, against the real loopback sshd.

Each config below is written the way a user writes ~/.ssh/config (Include, Match, ProxyJump chains,
HostKeyAlias, ConnectTimeout), in a tmp dir, and passed as the profile's `ssh_config` (OpenSSH's -F).
Every hop is the dev cluster's own sshd: jumping through it to itself twice still crosses two real
jump hosts, each with its own authentication, host key check and forwarding channel.
"""
from __future__ import annotations

import logging
import shutil
import socket
import threading
import uuid
from pathlib import Path

import paramiko
import pytest

from orchestra.errors import ConnectionError_
from runaway import hosts
from runaway.hosts import Host, resolve
from tests.helpers import cli, git


def _write_config(tmp_path: Path, devcluster, *, known: str | None = None, extra_hosts: str = "",
                  hop1: str = "", target: str = "") -> str:
    """Include + Match + a two-hop ProxyJump, split over two files as a user's config often is.

    ``hop1``/``target`` lines go first in their block: the first value given wins, as in OpenSSH."""
    included = tmp_path / "config.d"
    included.mkdir(exist_ok=True)
    (included / "hops.conf").write_text("Host hop2\n    HostName 127.0.0.1\n    Port 2222\n")
    config = tmp_path / "config"
    config.write_text(f"""\
Include {included}/*.conf
Host hop1
{hop1}
    HostName 127.0.0.1
    Port 2222
Match originalhost twohop
    ProxyJump hop1,hop2
Host twohop
{target}
    HostName 127.0.0.1
    Port 2222
{extra_hosts}
Host *
    User orchestra
    IdentityFile {devcluster.identity}
    IdentitiesOnly yes
    UserKnownHostsFile {known or devcluster.known_hosts}
    StrictHostKeyChecking yes
    GSSAPIAuthentication no
""")
    return str(config)


def test_include_match_and_two_hop_proxy_jump_reach_the_cluster(devcluster, tmp_path):
    config = _write_config(tmp_path, devcluster)
    spec = resolve("twohop", ssh_config=config)
    assert spec.proxy_jump == "hop1,hop2"  # from the Match block
    assert [s.name for s in hosts.route(spec)] == ["hop1", "hop2", "twohop"]  # hop2 only exists in the Include
    with Host("twohop", ssh_config=config, connections=1) as host:
        assert host.run("echo $USER").stdout == "orchestra\n"
        assert host.run("cat", stdin=b"through two hops").stdout == "through two hops"
        links = host._conns[0].links
        assert [link.spec.name for link in links] == ["hop1", "hop2", "twohop"]
        # Each hop's transport runs inside a forwarding channel of the hop before it.
        for before, after in zip(links, links[1:]):
            sock = after.conn.transport.sock
            assert isinstance(sock, paramiko.Channel) and sock.get_transport() is before.conn.transport


def test_runaway_test_through_two_jump_hosts(devcluster, tmp_path):
    """`runaway test` (what a user runs first) on an ssh profile whose host is reached via Include+Match."""
    config = _write_config(tmp_path, devcluster)
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    work = f"/tmp/orchestra-test-work/sshconfig-{uuid.uuid4().hex[:8]}"
    (repo / "orchestra.yaml").write_text(f"name: hops\ncommand: \"true\"\nprofiles:\n  hops: {{kind: ssh, "
                                         f"host: twohop, slots: 1, ssh_config: {config}, workdir: {work}}}\n")
    (repo / "train.py").write_text("print('ok')\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "code")
    try:
        result = cli(repo, "runaway", "test", "hops", timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
        for step in ("profile", "connection", "tools", "workdir", "run"):
            assert f"ok    {step}" in result.stdout, result.stdout
    finally:
        with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
            host.run(f"rm -rf {work}", warn=True)


def _known_line(devcluster) -> str:
    """The dev cluster's host key line from its known_hosts, without the host name."""
    line = Path(devcluster.known_hosts).read_text().split("\n")[0]
    return line.split(" ", 1)[1]


def test_host_key_alias_is_where_the_key_is_looked_up(devcluster, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(f"devbox-alias {_known_line(devcluster)}\n")  # only under the alias
    config = _write_config(tmp_path, devcluster, known=str(known),
                           extra_hosts="Host aliased plain\n    HostName 127.0.0.1\n    Port 2222\n"
                                       "Host aliased\n    HostKeyAlias devbox-alias\n")
    with Host("aliased", ssh_config=config, connect_attempts=1) as host:
        assert host.run("echo ok").stdout == "ok\n"
    with pytest.raises(ConnectionError_) as err:  # without the alias the key is unknown
        Host("plain", ssh_config=config, connect_attempts=1).run("true")
    assert "unknown" in str(err.value) and "[127.0.0.1]:2222" in str(err.value)


def test_changed_host_key_under_an_alias_names_alias_and_file(devcluster, tmp_path):
    other = paramiko.Ed25519Key.generate() if hasattr(paramiko.Ed25519Key, "generate") else None
    blob = (f"{other.get_name()} {other.get_base64()}" if other else
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    known = tmp_path / "alias_known_hosts"
    known.write_text(f"devbox-alias {blob}\n")
    config = _write_config(tmp_path, devcluster, known=str(known),
                           extra_hosts="Host aliased\n    HostName 127.0.0.1\n    Port 2222\n"
                                       "    HostKeyAlias devbox-alias\n")
    with pytest.raises(ConnectionError_) as err:
        Host("aliased", ssh_config=config, connect_attempts=1).run("true")
    message = str(err.value)
    assert "CHANGED" in message and "SHA256:" in message
    assert f"ssh-keygen -R devbox-alias -f {known}" in message
    assert known.read_text() == f"devbox-alias {blob}\n"  # nothing rewritten


def test_changed_host_key_hint_has_the_non_default_known_hosts_file(devcluster, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:2222 ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n")
    config = devcluster.write_ssh_config(tmp_path / "ssh_config", UserKnownHostsFile=str(known))
    with pytest.raises(ConnectionError_) as err:
        Host("devcluster", ssh_config=config, connect_attempts=1).run("true")
    assert f"ssh-keygen -R '[127.0.0.1]:2222' -f {known}" in str(err.value)


def test_unknown_host_key_of_a_jump_host_names_the_hop(devcluster, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = _write_config(tmp_path, devcluster, hop1=f"    UserKnownHostsFile {empty}")
    with pytest.raises(ConnectionError_) as err:
        Host("twohop", ssh_config=config, connect_attempts=1).run("true")
    message = str(err.value)
    assert message.startswith("twohop: jump host hop1 (hop 1 of 2): host key of [127.0.0.1]:2222 is unknown")
    assert "SHA256:" in message
    assert empty.read_text() == ""


def test_unreachable_jump_host_is_named(devcluster, tmp_path):
    config = _write_config(tmp_path, devcluster, hop1="    Port 1")
    with pytest.raises(ConnectionError_) as err:
        Host("twohop", ssh_config=config, connect_attempts=1).run("true")
    assert str(err.value).startswith("twohop: jump host hop1 (hop 1 of 2): cannot connect to 127.0.0.1:1")


def test_jump_host_authentication_failure_is_named(devcluster, tmp_path):
    config = _write_config(tmp_path, devcluster, hop1="    User nobody-here")
    with pytest.raises(ConnectionError_) as err:
        Host("twohop", ssh_config=config, connect_attempts=1).run("true")
    assert str(err.value).startswith("twohop: jump host hop1 (hop 1 of 2): authentication as nobody-here failed")


def test_jump_host_that_cannot_reach_the_next_hop_is_named(devcluster, tmp_path):
    config = _write_config(tmp_path, devcluster, target="    Port 1")
    with pytest.raises(ConnectionError_) as err:
        Host("twohop", ssh_config=config, connect_attempts=1).run("true")
    assert str(err.value).startswith("twohop: jump host hop2 (hop 2 of 2) cannot reach 127.0.0.1:1")


def test_connect_timeout_is_honoured(devcluster, tmp_path):
    """A port that accepts TCP but never speaks SSH: the error comes after ConnectTimeout, and says so."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:  # accept and say nothing
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        config = _write_config(tmp_path, devcluster, extra_hosts=f"Host mute\n    HostName 127.0.0.1\n"
                                                                 f"    Port {port}\n    ConnectTimeout 2\n")
        assert resolve("mute", ssh_config=config).connect_timeout == 2.0
        with pytest.raises(ConnectionError_) as err:
            Host("mute", ssh_config=config, connect_attempts=1).run("true")
        assert f"cannot connect to 127.0.0.1:{port}: no SSH answer within 2 s (ConnectTimeout)" in str(err.value)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        silent.close()


def test_a_bad_ssh_config_is_one_line_with_file_and_line(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host x\n    HostName 127.0.0.1\n    NoSuchOption yes\n")
    with pytest.raises(ConnectionError_) as err:
        resolve("x", ssh_config=str(config))
    assert f"{config}: line 3: Bad configuration option: nosuchoption" in str(err.value)


def test_without_openssh_fabric_config_resolves_the_same(devcluster, tmp_path, monkeypatch, caplog):
    """Where `ssh` is not installed, fabric's Config reads the file: same answer for what it knows, and a
    warning (not silence) for the Include it cannot follow."""
    by_openssh = resolve("devcluster", ssh_config=devcluster.ssh_config)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    by_fabric = resolve("devcluster", ssh_config=devcluster.ssh_config)
    for field in ("hostname", "port", "user", "identity_files", "identities_only", "known_hosts_files",
                  "accept_new_host_keys", "proxy_jump"):
        assert getattr(by_fabric, field) == getattr(by_openssh, field), field
    with Host("devcluster", ssh_config=devcluster.ssh_config) as host:
        assert host.run("echo fallback").stdout == "fallback\n"
    config = _write_config(tmp_path, devcluster)
    with caplog.at_level(logging.WARNING, logger="runaway.hosts"):
        resolve("hop2", ssh_config=config)
    assert "`Include` in the SSH configuration is ignored" in caplog.text


def test_proxy_command_with_tokens(devcluster, tmp_path):
    config = _write_config(tmp_path, devcluster, extra_hosts=(
        "Host proxied\n    HostName 127.0.0.1\n    Port 2222\n"
        f"    ProxyCommand ssh -F {devcluster.ssh_config} -W %h:%p devcluster\n"))
    assert resolve("proxied", ssh_config=config).proxy_command == \
        f"ssh -F {devcluster.ssh_config} -W 127.0.0.1:2222 devcluster"
    with Host("proxied", ssh_config=config, connections=1) as host:
        assert host.run("echo proxied").stdout == "proxied\n"
        assert isinstance(host._conns[0].links[-1].conn.transport.sock, paramiko.ProxyCommand)
    # closing ran the ProxyCommand's close twice (paramiko does): no ProcessLookupError in its thread


def test_accept_new_honours_hash_known_hosts(devcluster, tmp_path):
    known = tmp_path / "hashed_known_hosts"
    config = _write_config(tmp_path, devcluster, known=str(known), extra_hosts=(
        "Host fresh\n    HostName 127.0.0.1\n    Port 2222\n    StrictHostKeyChecking accept-new\n"
        "    HashKnownHosts yes\n"))
    with Host("fresh", ssh_config=config) as host:
        assert host.run("true").ok
    text = known.read_text()
    assert text.startswith("|1|") and "127.0.0.1" not in text  # recorded hashed, as ssh would
    with Host("hop1", ssh_config=config, connect_attempts=1) as strict:  # strict, same file: finds it
        assert strict.run("true").ok


def test_certificate_file_is_used_to_log_in(devcluster, tmp_path):
    """A key the server does not list, with a certificate from a CA it trusts (`cert-authority` in
    authorized_keys): only CertificateFile makes the login work. The certificate sits where nothing
    would find it by name (not KEY-cert.pub), so a pass means CertificateFile was read."""
    import subprocess

    def keygen(*args: str) -> None:
        subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)

    keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / "ca"))
    keygen("-t", "ed25519", "-N", "", "-f", str(tmp_path / "user"))
    keygen("-s", str(tmp_path / "ca"), "-I", "orchestra-test", "-n", "orchestra", "-V", "-5m:+1h",
           str(tmp_path / "user.pub"))
    (tmp_path / "certs").mkdir()
    cert = tmp_path / "certs" / "login.pub"
    (tmp_path / "user-cert.pub").rename(cert)
    tag = f"orchestra-test-ca-{uuid.uuid4().hex[:12]}"
    ca_line = f"cert-authority,principals=\"orchestra\" {(tmp_path / 'ca.pub').read_text().split()[0]} " \
              f"{(tmp_path / 'ca.pub').read_text().split()[1]} {tag}"
    config = tmp_path / "cert_config"  # IdentityFile accumulates over blocks: no `Host *` with the usual key
    config.write_text(f"Host certified\n    CertificateFile {cert}\nHost certified uncertified\n"
                      f"    HostName 127.0.0.1\n    Port 2222\n    User orchestra\n"
                      f"    IdentityFile {tmp_path / 'user'}\n    IdentitiesOnly yes\n"
                      f"    UserKnownHostsFile {devcluster.known_hosts}\n")
    with Host("devcluster", ssh_config=devcluster.ssh_config) as admin:
        admin.run(f"echo '{ca_line}' >> ~/.ssh/authorized_keys")
        try:
            with Host("certified", ssh_config=str(config), connect_attempts=1) as host:
                assert host.run("echo certified").stdout == "certified\n"
            with pytest.raises(ConnectionError_) as err:  # the same key without its certificate
                Host("uncertified", ssh_config=str(config), connect_attempts=1).run("true")
            assert "authentication as orchestra failed" in str(err.value)
        finally:
            admin.run(f"sed -i '/{tag}/d' ~/.ssh/authorized_keys")


def test_a_proxy_command_that_cannot_start_is_named(tmp_path):
    config = tmp_path / "config"
    config.write_text("Host viaproxy\n    HostName 10.9.8.7\n    ProxyCommand /nonexistent/proxy %h %p\n")
    with pytest.raises(ConnectionError_) as err:
        Host("viaproxy", ssh_config=str(config), connect_attempts=1).run("true")
    assert str(err.value).startswith("viaproxy: cannot connect to 10.9.8.7:22 through ProxyCommand "
                                     "`/nonexistent/proxy 10.9.8.7 22`: FileNotFoundError")


def test_a_targets_accept_new_does_not_loosen_its_jump_hosts(devcluster, tmp_path):
    """OpenSSH checks each hop with that hop's own StrictHostKeyChecking: accept-new on the target's block
    must not make an unknown jump host key acceptable; the caller's explicit accept_new_host_keys does."""
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = _write_config(tmp_path, devcluster, hop1=f"    UserKnownHostsFile {empty}",
                           target="    StrictHostKeyChecking accept-new")
    assert resolve("twohop", ssh_config=config).accept_new_host_keys
    with pytest.raises(ConnectionError_) as err:
        Host("twohop", ssh_config=config, connect_attempts=1).run("true")
    assert str(err.value).startswith("twohop: jump host hop1 (hop 1 of 2): host key of [127.0.0.1]:2222 is unknown")
    assert empty.read_text() == ""
    with Host("twohop", ssh_config=config, accept_new_host_keys=True) as host:
        assert host.run("echo ok").stdout == "ok\n"
    assert empty.read_text().startswith("[127.0.0.1]:2222 ssh-ed25519 ")
