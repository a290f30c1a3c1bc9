"""OpenSSH's own answer about a host, as text: ``ssh -G HOST`` parsed and rendered, tokens, destinations.

Why ask OpenSSH at all: a user's ``~/.ssh/config`` is written for OpenSSH, and only OpenSSH knows all of
it (``Include``, ``Match exec``, ``CanonicalizeHostname``, first-match-wins across included files...).
``ssh -G`` prints the settings it would use for a destination, one ``keyword value`` per line, keywords in
lower case, after every ``Include`` and ``Match`` is applied, and without connecting. This module is the
pure half of that conversation (no process, no network, no third-party import), so it is unit-tested
on captured output; runaway.hosts runs the command and turns the options into a connection.
"""
from __future__ import annotations

import dataclasses
import re
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


__all__ = ["DEFAULT_GLOBAL_KNOWN_HOSTS", "DEFAULT_IDENTITY_FILES", "DEFAULT_USER_KNOWN_HOSTS", "Destination",
           "NONE", "Options", "expand_tokens", "first", "first_error_line", "parse_destination", "parse_ssh_g",
           "render_ssh_g", "split_proxy_jump"]
