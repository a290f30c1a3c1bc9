"""OpenSSH's own answer about a host: ``ssh -G HOST`` parsed and rendered, tokens, destinations, and what
the answer means for a connection (:class:`HostSpec`), and the OpenSSH commands that fix a host key.

Why ask OpenSSH at all: a user's ``~/.ssh/config`` is written for OpenSSH, and only OpenSSH knows all of
it (``Include``, ``Match exec``, ``CanonicalizeHostname``, first-match-wins across included files...).
``ssh -G`` prints the settings it would use for a destination, one ``keyword value`` per line, keywords in
lower case, after every ``Include`` and ``Match`` is applied, and without connecting. This module is the
pure half of that conversation (no process, no network, no third-party import), so it is unit-tested
on captured output; runaway.hosts runs the command and makes the connection.
"""
from __future__ import annotations

import dataclasses
import getpass
import os
import pwd
import re
import shlex
import socket
from collections.abc import Mapping

#: keyword -> every value it was given, in order (IdentityFile, CertificateFile... repeat; most do not).
Options = dict[str, tuple[str, ...]]

# What `ssh -G` prints for an option that is off; the same word ends a ProxyJump/ProxyCommand chain.
NONE = "none"

#: OpenSSH's identity files when the configuration names none (ssh -G lists them; paramiko's parser
#: does not, so the fallback adds them to try the same keys in the same order).
DEFAULT_IDENTITY_FILES = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ecdsa_sk", "~/.ssh/id_ed25519",
                          "~/.ssh/id_ed25519_sk", "~/.ssh/id_xmss", "~/.ssh/id_dsa")
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def parse_ssh_g(text: str) -> Options:
    """``ssh -G`` output -> options. Keywords are folded to lower case (as OpenSSH matches them).

    A keyword without a value is kept with an empty one rather than dropped: an empty value is still
    an answer ("set, to nothing"), and losing it would let a default creep back in.
    """
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        found.setdefault(key.lower(), []).append(value.strip())
    return {key: tuple(values) for key, values in found.items()}


def render_ssh_g(options: Mapping[str, tuple[str, ...]]) -> str:
    """The inverse of :func:`parse_ssh_g` (``keyword value`` lines): test fixtures and debugging."""
    return "".join(f"{key} {value}\n".replace(" \n", "\n") for key, values in options.items() for value in values)


def first(options: Mapping[str, tuple[str, ...]], key: str) -> str | None:
    """The value OpenSSH uses for a single-valued keyword (the first one given wins), None if off."""
    values = options.get(key)
    if not values or values[0].lower() == NONE:
        return None
    return values[0]


_TOKEN = re.compile(r"%(.)")


def expand_tokens(text: str, tokens: Mapping[str, str]) -> str:
    """Expand OpenSSH's ``%h``-style tokens (see TOKENS in ssh_config(5)); ``%%`` is a percent sign.

    ``ssh -G`` prints IdentityFile, CertificateFile and ProxyCommand unexpanded: OpenSSH expands them
    only when it connects, with what it knows then. An unknown token is an error in OpenSSH; here it
    is left as written, so the error that follows (a file not found) names what the user wrote.
    """
    def one(match: re.Match[str]) -> str:
        char = match[1]
        if char == "%":
            return "%"
        return tokens.get(char, match[0])

    return _TOKEN.sub(one, text)


@dataclasses.dataclass(frozen=True)
class Destination:
    """What the user wrote, split: ``alias``, ``user@host``, ``host:port``, ``[v6addr]:port``, ``ssh://...``."""

    host: str
    user: str | None = None
    port: int | None = None


_DEST = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s/]+)@)?(?P<host>\[[^\]\s]+\]|[^:@\s/\[\]]+)"
                   r"(?::(?P<port>\d{1,5}))?/?$")


def parse_destination(text: str) -> Destination:
    """Split an SSH destination as OpenSSH's ``-J`` and profiles take it; ValueError says why not."""
    match = _DEST.match(text.strip())
    if not match:
        raise ValueError(f"cannot parse SSH destination {text!r}")
    port = int(match["port"]) if match["port"] else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port {port} out of range in SSH destination {text!r}")
    host = match["host"]
    if host.startswith("-"):  # would read as an option to ssh
        raise ValueError(f"an SSH host cannot start with '-': {text!r}")
    return Destination(host=host.strip("[]"), user=match["user"], port=port)


def split_proxy_jump(value: str | None) -> list[str]:
    """``ProxyJump hop1,hop2`` -> ``["hop1", "hop2"]``, first hop first; ``none`` or nothing -> ``[]``."""
    if value is None or value.strip().lower() == NONE:
        return []
    return [hop.strip() for hop in value.split(",") if hop.strip()]


def first_error_line(stderr: str) -> str:
    """The line of ssh's complaint worth showing (``FILE line N: Bad configuration option: X``)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()
             and not line.startswith("Pseudo-terminal will not be allocated")]
    for line in lines:
        if " line " in line or "Bad configuration" in line:
            return line
    return lines[0] if lines else "ssh -G failed without a message"


@dataclasses.dataclass(frozen=True)
class HostSpec:
    """A destination resolved from an ssh_config alias or ``user@host:port``."""

    name: str  # what the user wrote: error messages name it
    hostname: str
    port: int = 22
    user: str = dataclasses.field(default_factory=getpass.getuser)
    identity_files: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts_files: tuple[str, ...] = ()
    accept_new_host_keys: bool = False
    proxy_command: str | None = None  # tokens (%h, %p...) already expanded
    proxy_jump: str | None = None  # OpenSSH syntax: "bastion" or "hop1,hop2"
    ssh_config: str | None = None  # where the jump hosts are resolved too (None: OpenSSH's defaults)
    connect_timeout: float = 15.0
    host_key_alias: str | None = None  # HostKeyAlias: the name known_hosts files list the key under
    certificate_files: tuple[str, ...] = ()
    global_known_hosts_files: tuple[str, ...] = ()
    keepalive: int = 30  # ServerAliveInterval when set; else 30 s, so idle NATs keep the link
    hash_known_hosts: bool = False  # HashKnownHosts: accept-new records the name hashed, as ssh would

    @property
    def known_hosts_key(self) -> str:
        """The name OpenSSH looks the host key up by: the HostKeyAlias verbatim, else ``[host]:port``."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def home_dir() -> str:
    """OpenSSH's ``~`` and ``%d`` are the passwd entry's home, not $HOME; follow it where there is one."""
    try:
        return pwd.getpwuid(os.getuid()).pw_dir
    except KeyError:
        return os.path.expanduser("~")


def expand_path(path: str, tokens: dict[str, str]) -> str:
    path = expand_tokens(path, tokens)
    if path == "~" or path.startswith("~/"):
        return home_dir() + path[1:]
    return os.path.expanduser(path)


def spec_from_options(destination: str, dest: Destination, options: Options, *, ssh_config: str | None,
                      accept_new_host_keys: bool = False, connect_timeout: float = 15.0) -> HostSpec:
    """What OpenSSH said about a destination, as the few settings a connection needs (pure)."""
    hostname = first(options, "hostname") or dest.host
    port = dest.port or int(first(options, "port") or 22)
    user = dest.user or first(options, "user") or getpass.getuser()
    alias = first(options, "hostkeyalias")
    jump = first(options, "proxyjump")
    tokens = {"h": hostname, "p": str(port), "r": user, "n": dest.host, "u": getpass.getuser(),
              "d": home_dir(), "i": str(os.getuid()), "l": socket.gethostname(),
              "L": socket.gethostname().split(".")[0], "k": alias or dest.host, "j": jump or ""}

    def paths(key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = [item for line in options.get(key, default) for item in line.split()]
        return tuple(expand_path(v, tokens) for v in values if v.lower() != NONE)

    strict = (first(options, "stricthostkeychecking") or "ask").lower()
    # "no"/"off" would disable verification, an invariant users trust: accept-new is the most we do.
    accept_new = accept_new_host_keys or strict in ("accept-new", "no", "off", "false")
    timeout = first(options, "connecttimeout")
    alive = int(first(options, "serveraliveinterval") or 0)
    proxy_command = first(options, "proxycommand")
    return HostSpec(
        name=destination, hostname=hostname, port=port, user=user,
        identity_files=paths("identityfile"),
        identities_only=(first(options, "identitiesonly") or "no").lower() == "yes",
        known_hosts_files=paths("userknownhostsfile", DEFAULT_USER_KNOWN_HOSTS),
        global_known_hosts_files=paths("globalknownhostsfile", DEFAULT_GLOBAL_KNOWN_HOSTS),
        accept_new_host_keys=accept_new,
        proxy_command=expand_tokens(proxy_command, tokens) if proxy_command and not jump else None,
        proxy_jump=jump, ssh_config=ssh_config,
        connect_timeout=float(timeout) if timeout else connect_timeout,
        host_key_alias=alias, certificate_files=paths("certificatefile"),
        keepalive=alive if alive > 0 else 30,
        hash_known_hosts=(first(options, "hashknownhosts") or "no").lower() == "yes")


def is_default_known_hosts(path: str) -> bool:
    return os.path.realpath(path) == os.path.realpath(os.path.join(home_dir(), ".ssh", "known_hosts"))


def unknown_key_hint(spec: HostSpec, direct: bool) -> str:
    target = (spec.known_hosts_files or DEFAULT_USER_KNOWN_HOSTS)[0]
    if not direct:  # behind a jump host or a ProxyCommand: ssh-keyscan from here cannot reach it
        how = f"`ssh -o StrictHostKeyChecking=ask{' -F ' + shlex.quote(spec.ssh_config) if spec.ssh_config else ''}" \
              f" {shlex.quote(spec.name)} true` and answer yes"
    else:
        scan = f"ssh-keyscan{'' if spec.port == 22 else f' -p {spec.port}'} {shlex.quote(spec.hostname)}"
        if spec.host_key_alias:  # keyscan names the host; known_hosts must name the alias
            scan += f" | sed 's/^[^ ]*/{spec.host_key_alias}/'"
        how = f"`{scan} >> {shlex.quote(target)}`"
    return f"check the fingerprint with the host's admins, then run {how}, or set accept_new_host_keys"


def changed_key_hint(spec: HostSpec, path: str | None) -> str:
    where = "" if path is None or is_default_known_hosts(path) else f" -f {shlex.quote(path)}"
    return (f"if the host was really reinstalled, run `ssh-keygen -R {shlex.quote(spec.known_hosts_key)}{where}` "
            "and verify the new key; otherwise someone may be intercepting the connection")


__all__ = ["DEFAULT_GLOBAL_KNOWN_HOSTS", "DEFAULT_IDENTITY_FILES", "DEFAULT_USER_KNOWN_HOSTS", "Destination",
           "HostSpec", "NONE", "Options", "changed_key_hint", "expand_path", "expand_tokens", "first",
           "first_error_line", "home_dir", "is_default_known_hosts", "parse_destination", "parse_ssh_g",
           "render_ssh_g", "spec_from_options", "split_proxy_jump", "unknown_key_hint"]
