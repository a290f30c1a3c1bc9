"""What `ssh -G` says, parsed, and turned into a HostSpec: pure functions, no sshd, no process.

golden/ssh_G_twohop.txt is OpenSSH 9.2's real output for a config with Include, Match, ProxyJump,
HostKeyAlias, CertificateFile, tokens in IdentityFile and a ProxyCommand that ProxyJump shadows.
"""
from __future__ import annotations

import getpass
import os
from pathlib import Path

import pytest

from runaway import hosts, openssh
from runaway.openssh import HostSpec, spec_from_options
from runaway.openssh import Destination

GOLDEN = Path(__file__).parent / "golden"


def _captured() -> openssh.Options:
    return openssh.parse_ssh_g((GOLDEN / "ssh_G_twohop.txt").read_text())


def test_parse_keeps_every_value_in_order_and_folds_keywords():
    options = _captured()
    assert options["hostname"] == ("127.0.0.1",)
    assert options["port"] == ("2222",)
    assert options["identityfile"] == ("%d/.ssh/id_%r_%h", "~/keys/second")  # unexpanded, in order
    assert options["certificatefile"] == ("~/certs/%u-cert.pub",)
    assert options["proxyjump"] == ("hop1,hop2",)
    assert "proxycommand" not in options  # first one set wins: ProxyJump came first (from Match)
    assert options["userknownhostsfile"] == ("/tmp/k1 /tmp/k2",)
    assert openssh.first(options, "connecttimeout") == "7"
    assert openssh.first(openssh.parse_ssh_g("connecttimeout none\n"), "connecttimeout") is None
    assert openssh.parse_ssh_g("HostName Example\n\n# note\nsendenv\n") == {"hostname": ("Example",),
                                                                             "sendenv": ("",)}


def test_render_and_parse_round_trip():
    options = _captured()
    assert openssh.parse_ssh_g(openssh.render_ssh_g(options)) == options
    assert openssh.render_ssh_g({"identityfile": ("a", "b"), "sendenv": ("",)}) == \
        "identityfile a\nidentityfile b\nsendenv\n"


def test_expand_tokens():
    tokens = {"h": "node1", "r": "alice", "d": "/home/me", "p": "22"}
    assert openssh.expand_tokens("%d/.ssh/id_%r@%h:%p", tokens) == "/home/me/.ssh/id_alice@node1:22"
    assert openssh.expand_tokens("100%%-%h", tokens) == "100%-node1"
    assert openssh.expand_tokens("%Z stays", tokens) == "%Z stays"  # unknown: left as written


@pytest.mark.parametrize("text, expected", [
    ("devcluster", Destination("devcluster")),
    ("bob@example.org:2200", Destination("example.org", "bob", 2200)),
    ("ssh://bob@example.org:2200", Destination("example.org", "bob", 2200)),
    ("[::1]:22", Destination("::1", None, 22)),
    ("alice@bastion", Destination("bastion", "alice")),
])
def test_parse_destination(text, expected):
    assert openssh.parse_destination(text) == expected


@pytest.mark.parametrize("text", ["two words", "-oProxyCommand=touch x", "host:99999", "a@b@c", ""])
def test_parse_destination_refuses(text):
    with pytest.raises(ValueError):
        openssh.parse_destination(text)


def test_split_proxy_jump():
    assert openssh.split_proxy_jump("hop1, hop2") == ["hop1", "hop2"]
    assert openssh.split_proxy_jump("none") == [] == openssh.split_proxy_jump(None)


def test_first_error_line_names_the_file_and_line():
    stderr = ("Pseudo-terminal will not be allocated because stdin is not a terminal.\r\n"
              "/home/me/.ssh/config: line 2: Bad configuration option: bogus\n"
              "/home/me/.ssh/config: terminating, 1 bad configuration options\n")
    assert openssh.first_error_line(stderr) == "/home/me/.ssh/config: line 2: Bad configuration option: bogus"
    assert openssh.first_error_line("") == "ssh -G failed without a message"


def test_spec_from_captured_output():
    spec = spec_from_options("twohop", Destination("twohop"), _captured(), ssh_config="/cfg")
    home = openssh.home_dir()
    assert (spec.hostname, spec.port, spec.user) == ("127.0.0.1", 2222, "orchestra")
    assert spec.identity_files == (f"{home}/.ssh/id_orchestra_127.0.0.1", f"{home}/keys/second")
    assert spec.certificate_files == (f"{home}/certs/{getpass.getuser()}-cert.pub",)
    assert spec.proxy_jump == "hop1,hop2" and spec.proxy_command is None
    assert spec.host_key_alias == "myalias" and spec.known_hosts_key == "myalias"
    assert spec.known_hosts_files == ("/tmp/k1", "/tmp/k2")
    assert spec.global_known_hosts_files == ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
    assert spec.connect_timeout == 7.0 and spec.keepalive == 20
    assert spec.accept_new_host_keys  # StrictHostKeyChecking accept-new
    assert spec.ssh_config == "/cfg" and spec.name == "twohop"


def test_spec_defaults_and_overrides():
    options = openssh.parse_ssh_g("hostname h.example\nport 22\nuser u\nconnecttimeout none\n"
                                  "stricthostkeychecking false\nproxycommand nc %h %p %%\nidentitiesonly yes\n")
    spec = spec_from_options("x", Destination("x", user="me", port=2200), options, ssh_config=None,
                             connect_timeout=9.0)
    assert (spec.user, spec.port, spec.connect_timeout) == ("me", 2200, 9.0)  # the destination wins
    assert spec.proxy_command == "nc h.example 2200 %"
    assert spec.accept_new_host_keys  # "no" never disables verification: accept-new is the most we do
    assert spec.identities_only and spec.keepalive == 30
    assert spec.known_hosts_key == "[h.example]:2200"
    assert spec.known_hosts_files == tuple(openssh.home_dir() + p[1:] for p in openssh.DEFAULT_USER_KNOWN_HOSTS)


def test_changed_key_hint_names_the_file_unless_default_and_the_alias():
    spec = HostSpec(name="c", hostname="10.0.0.1", port=2222)
    default = os.path.join(openssh.home_dir(), ".ssh", "known_hosts")
    assert "`ssh-keygen -R '[10.0.0.1]:2222'`" in openssh.changed_key_hint(spec, default)
    assert "`ssh-keygen -R '[10.0.0.1]:2222' -f /tmp/k1`" in openssh.changed_key_hint(spec, "/tmp/k1")
    aliased = HostSpec(name="c", hostname="10.0.0.1", port=2222, host_key_alias="myalias")
    assert "`ssh-keygen -R myalias -f '/tmp/my known'`" in openssh.changed_key_hint(aliased, "/tmp/my known")


def test_unknown_key_hint_scans_the_right_name():
    spec = HostSpec(name="c", hostname="10.0.0.1", port=2222, known_hosts_files=("/tmp/k1",))
    assert "`ssh-keyscan -p 2222 10.0.0.1 >> /tmp/k1`" in openssh.unknown_key_hint(spec, direct=True)
    aliased = HostSpec(name="c", hostname="10.0.0.1", host_key_alias="myalias", known_hosts_files=("/tmp/k1",))
    assert "ssh-keyscan 10.0.0.1 | sed 's/^[^ ]*/myalias/' >> /tmp/k1" in openssh.unknown_key_hint(aliased, True)
    behind = HostSpec(name="inner", hostname="10.0.0.1", ssh_config="/cfg")
    assert "ssh -o StrictHostKeyChecking=ask -F /cfg inner true" in openssh.unknown_key_hint(behind, direct=False)


def test_connections_never_use_fabrics_auto_add_policy(tmp_path):
    """fabric's Connection trusts any new host key (AutoAddPolicy); ours must not, and must preload the
    known key under paramiko's lookup name even when known_hosts lists it under the HostKeyAlias."""
    import base64

    import paramiko

    known = tmp_path / "known_hosts"
    blob = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    known.write_text(f"myalias ssh-ed25519 {blob}\n")
    spec = HostSpec(name="c", hostname="127.0.0.1", port=2222, host_key_alias="myalias",
                    known_hosts_files=(str(known),))
    conn = hosts._fabric_connection(spec, gateway=None)
    policy = conn.client._policy
    assert isinstance(policy, hosts._StrictPolicy) and not isinstance(policy, paramiko.AutoAddPolicy)
    loaded = conn.client.get_host_keys().lookup("[127.0.0.1]:2222")
    assert loaded is not None and loaded["ssh-ed25519"].get_base64() == blob
    offered = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(blob))
    with pytest.raises(hosts._HostKeyRefused):  # a key for a name nobody listed: refused, not recorded
        policy.missing_host_key(conn.client, "[127.0.0.1]:2223", offered)
    assert known.read_text() == f"myalias ssh-ed25519 {blob}\n"


def test_paramiko_parser_does_not_follow_include(tmp_path):
    """Why runaway asks `ssh -G` first: paramiko's SSHConfig (fabric's parser) keeps `Include` as an unknown
    keyword and never reads the included file. If this starts failing, paramiko learned Include and the
    fallback's warning (hosts._ask_fabric) can go."""
    import paramiko

    (tmp_path / "inc.conf").write_text("Host inner\n    HostName 10.1.2.3\n    Port 2200\n")
    config = paramiko.SSHConfig.from_text(f"Include {tmp_path}/inc.conf\n")
    looked = config.lookup("inner")
    assert looked.get("hostname") == "inner" and "port" not in looked
    assert "include" in looked
