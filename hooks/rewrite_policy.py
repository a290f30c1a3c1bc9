"""Who may delete or rewrite execution branches on a shared remote, and the log of those who did.

Results are append-only. Rewriting them is an administrator's decision, made on the server, and never
something a pusher can ask for alone: it needs both

- the pushing user listed in ``orchestra.rewriteUsers`` of the bare repository's own config file (names
  separated by spaces or commas, or several values with ``git config --add``), and
- the push option ``-o orchestra-allow-rewrite`` on this push (so that a plain ``git push --force`` by an
  allowed user still does not rewrite results by accident).

The pushing user is identified as git hosting does: by default the unix user the hook runs as (on an
SSH remote, the account the pusher logged in with), never ``$USER`` or anything else from the pusher's
environment. Where every push goes through a hosting layer that names the user in a variable it sets
itself (gitolite's ``GL_USER``, Gitea's ``GITEA_PUSHER_NAME``, GitLab's ``GL_USERNAME``), an
administrator may opt in with ``git config orchestra.pusherVariable GL_USER``; that variable is trusted
only then, because a pusher with a shell on the server could set it to any name.

Every deletion or rewrite the policy lets through is appended to ``BARE/orchestra/rewrites.log`` (JSON
lines: time, user, action, ref, old, new) before the push is accepted: a rewrite that cannot be logged is
refused. Standard library only (see common.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pwd
import re
import time
from collections.abc import Iterable

try:
    from . import common
except ImportError:  # run as a file
    import common  # type: ignore[no-redef,import-not-found]

LOG_NAME = "rewrites.log"
_VARIABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class Policy:
    """What the server decided for this push: who pushes, whether they may rewrite, whether they asked."""

    user: str
    user_allowed: bool
    option_given: bool
    legacy_switch: bool = False  # orchestra.allowRewrite is set: it grants nothing any more

    @property
    def allows_rewrite(self) -> bool:
        return self.user_allowed and self.option_given


def parse_user_list(values: Iterable[str]) -> frozenset[str]:
    """``orchestra.rewriteUsers`` values -> names (spaces and commas separate; empty items dropped)."""
    return frozenset(name for value in values for name in re.split(r"[\s,]+", value) if name)


def unix_user(uid: int | None = None) -> str:
    """The account the hook runs as: what sshd authenticated, which no pusher-set variable can change."""
    uid = os.getuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def pushing_user(environ: dict[str, str] | os._Environ, variable: str | None, fallback: str) -> str:
    """The hosting layer's user name when the administrator opted in to its variable, else ``fallback``."""
    if variable and _VARIABLE.match(variable):
        named = environ.get(variable, "").strip()
        if named:
            return named
    return fallback


def decide(directory: str, environ: dict[str, str] | os._Environ = os.environ) -> Policy:
    """The policy for the push being received into the bare repository ``directory``."""
    variables = common.repository_config(directory, common.PUSHER_VARIABLE_CONFIG)
    user = pushing_user(environ, variables[-1].strip() if variables else None, unix_user())
    allowed = parse_user_list(common.repository_config(directory, common.REWRITE_USERS_CONFIG))
    legacy = common.repository_config(directory, common.LEGACY_OVERRIDE_CONFIG)
    return Policy(user=user, user_allowed=user in allowed,
                  option_given=common.OVERRIDE_OPTION in common.push_options(environ),
                  legacy_switch=bool(legacy) and common.config_true(legacy[-1]))


def refusal_hint(policy: Policy) -> str:
    """How to get a refused deletion or rewrite through, told only to those who can use it."""
    if policy.user_allowed:
        return (f"you ({policy.user}) may rewrite results on this remote: push again with "
                f"`-o {common.OVERRIDE_OPTION}` (the change is logged)")
    if policy.option_given:
        return (f"-o {common.OVERRIDE_OPTION} is not enough: {policy.user} may not rewrite results on this "
                f"remote; ask an administrator of the remote")
    return "only an administrator of this remote can allow that; ask one"


# --- the log (an external text format: pure render and parse) -------------------------------------------
@dataclasses.dataclass(frozen=True)
class LogEntry:
    time: str     # UTC, ISO 8601, seconds
    user: str
    action: str   # "delete" or "rewrite"
    ref: str
    old: str
    new: str


def entry_for(update: common.RefUpdate, user: str, when: float) -> LogEntry:
    action = "delete" if update.is_deletion else "rewrite"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    return LogEntry(stamp, user, action, update.ref, update.old, update.new)


def render_log_entry(entry: LogEntry) -> str:
    """One line (JSON, so any user name or ref survives), newline-terminated."""
    return json.dumps(dataclasses.asdict(entry), sort_keys=True, ensure_ascii=True) + "\n"


def parse_log_entry(line: str) -> LogEntry:
    """ValueError for anything that is not a line render_log_entry wrote."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a rewrite log line: {exc}") from None
    fields = [f.name for f in dataclasses.fields(LogEntry)]
    if not isinstance(data, dict) or sorted(data) != sorted(fields) or not all(isinstance(data[f], str) for f in fields):
        raise ValueError(f"a rewrite log line has the string fields {', '.join(fields)}: got {line.strip()!r}")
    if data["action"] not in ("delete", "rewrite"):
        raise ValueError(f"unknown rewrite log action {data['action']!r}")
    return LogEntry(**data)


def log_path(directory: str) -> str:
    return os.path.join(directory, "orchestra", LOG_NAME)


def append_log(directory: str, entries: list[LogEntry]) -> str:
    """Append ``entries`` with one O_APPEND write (concurrent pushes never interleave lines); the path."""
    path = os.path.join(common.state_dir(directory), LOG_NAME)
    data = "".join(render_log_entry(e) for e in entries).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(f"short write to {path} ({written} of {len(data)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
