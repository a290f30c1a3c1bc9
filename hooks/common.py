"""What Orchestra's git hooks share: the hook input protocols, and reading records through `git` itself.

Standard library only, on purpose. A hook runs as whoever owns the repository (on a shared server, the
git or ssh user) with whatever ``python3`` that user has, which usually cannot import Orchestra's
dependencies. ``expegit hooks install`` therefore copies this package (``orchestra_hooks``), with
``orchestra/execution.py`` and ``orchestra/errors.py`` (both stdlib-only on their fast path), next to the
hook shims; the shim uses the installed package when its interpreter has one and this copy otherwise.
Objects are read with the `git` binary (``git cat-file --batch``), which git always provides to its hooks.
"""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

ZERO = "0" * 40
RECORD_PATH = ".orchestra/execution.yaml"
EXECUTION_REF = re.compile(r"^refs/heads/executions/([0-9a-f]{12})$")
EXECUTION_PREFIX = "refs/heads/executions/"
# `git push -o orchestra-allow-rewrite` (needs receive.advertisePushOptions on the server). Only half of
# the permission: the pushing user must also be listed in the bare repository's orchestra.rewriteUsers.
OVERRIDE_OPTION = "orchestra-allow-rewrite"
REWRITE_USERS_CONFIG = "orchestra.rewriteUsers"
PUSHER_VARIABLE_CONFIG = "orchestra.pusherVariable"
# Honoured by older hooks; read now only to tell an administrator that it no longer grants anything.
LEGACY_OVERRIDE_CONFIG = "orchestra.allowRewrite"
_SHA = re.compile(r"^[0-9a-f]{40}$")


@dataclasses.dataclass(frozen=True)
class RefUpdate:
    """One line of pre-receive / post-receive input: ``<old> <new> <ref>``."""

    old: str
    new: str
    ref: str

    @property
    def is_deletion(self) -> bool:
        return self.new == ZERO

    @property
    def is_creation(self) -> bool:
        return self.old == ZERO

    @property
    def is_execution(self) -> bool:
        return bool(EXECUTION_REF.match(self.ref))


@dataclasses.dataclass(frozen=True)
class PushedRef:
    """One line of pre-push input: ``<local ref> <local sha> <remote ref> <remote sha>``."""

    local_ref: str
    local_sha: str
    remote_ref: str
    remote_sha: str

    @property
    def is_deletion(self) -> bool:
        return self.local_sha == ZERO

    @property
    def is_execution(self) -> bool:
        return bool(EXECUTION_REF.match(self.remote_ref))


def _sha(text: str, line: str) -> str:
    # git sends 40 hex digits, or 64 with SHA-256 repositories: accept both, refuse anything else.
    if not re.match(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$", text):
        raise ValueError(f"not an object id in hook input line {line!r}")
    return text


def parse_ref_update(line: str) -> RefUpdate:
    """Parse a pre-receive/post-receive line; ValueError on anything else."""
    parts = line.rstrip("\n").split(" ")
    if len(parts) != 3 or not parts[2]:
        raise ValueError(f"expected '<old> <new> <ref>', got {line!r}")
    return RefUpdate(_sha(parts[0], line), _sha(parts[1], line), parts[2])


def parse_pushed_ref(line: str) -> PushedRef:
    """Parse a pre-push line; ValueError on anything else."""
    parts = line.rstrip("\n").split(" ")
    if len(parts) != 4:
        raise ValueError(f"expected '<local ref> <local sha> <remote ref> <remote sha>', got {line!r}")
    return PushedRef(parts[0], _sha(parts[1], line), parts[2], _sha(parts[3], line))


def parse_ref_updates(lines: Iterable[str]) -> list[RefUpdate]:
    return [parse_ref_update(line) for line in lines if line.strip()]


def parse_pushed_refs(lines: Iterable[str]) -> list[PushedRef]:
    return [parse_pushed_ref(line) for line in lines if line.strip()]


def push_options(environ: dict[str, str] | os._Environ) -> list[str]:
    """The ``git push -o`` options git hands to pre-receive (GIT_PUSH_OPTION_COUNT / _0, _1, ...)."""
    try:
        count = int(environ.get("GIT_PUSH_OPTION_COUNT", "0"))
    except ValueError:
        return []
    return [environ.get(f"GIT_PUSH_OPTION_{i}", "") for i in range(count)]


def git(*args: str, input: str | None = None, check: bool = True) -> str:
    result = subprocess.run(["git", *args], input=input, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def git_config(key: str) -> str | None:
    result = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def git_dir(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """The receiving repository, absolute (receive-pack sets GIT_DIR, often to ".")."""
    return os.path.abspath(environ.get("GIT_DIR", "."))


def repository_config(directory: str, key: str) -> list[str]:
    """Every value of ``key`` in ``<directory>/config`` and nowhere else.

    Decisions an administrator makes must not come from a file or variable a pusher controls: plain
    `git config` would also read the pushing user's ~/.gitconfig, $GIT_CONFIG_GLOBAL, and (for a push to a
    local path) the pusher's own environment. ``--file`` reads exactly the repository's file.
    """
    result = subprocess.run(["git", "config", "--file", os.path.join(directory, "config"), "--get-all", key],
                            capture_output=True, text=True)
    return result.stdout.splitlines() if result.returncode == 0 else []


def shared_umask(value: str | None, current: int) -> int:
    """The umask a hook should write with, for a repository's ``core.sharedRepository`` value.

    A shared remote is written by several unix users of one group: files the hooks create under
    BARE/orchestra/ (logs, locks, the rendered report) must stay writable by the next pusher, as git keeps
    its own objects and refs. Mirrors git's meanings: group/true/1, all/world/everybody/2, an octal mode.
    """
    text = (value or "").strip().lower()
    if text in ("", "false", "umask", "no", "off", "0"):
        return current
    if text in ("group", "true", "yes", "on", "1"):
        return current & ~0o070
    if text in ("all", "world", "everybody", "2"):
        return current & ~0o075
    try:
        mode = int(text, 8) & 0o777
    except ValueError:
        return current
    # Directories need x wherever files get r, as git gives them.
    return 0o777 & ~(mode | (mode & 0o444) >> 2)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_shared_umask(directory: str) -> None:
    values = repository_config(directory, "core.sharedRepository")
    os.umask(shared_umask(values[-1] if values else None, current_umask()))


def state_dir(directory: str) -> str:
    """BARE/orchestra/: where hooks keep their files (group-shared, setgid, when the repository is)."""
    path = os.path.join(directory, "orchestra")
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        if current_umask() & 0o020 == 0:  # a shared repository (apply_shared_umask ran first)
            try:
                os.chmod(path, os.stat(path).st_mode | 0o2000)
            except OSError:
                pass
    return path


def config_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def read_blobs(specs: list[str]) -> Iterator[tuple[str, bytes | None]]:
    """(spec, content or None if missing) for ``<commit>:<path>`` specs, through one `git cat-file --batch`.

    One process for any number of records: a push of thousands of execution branches must not fork
    thousands of `git show`.
    """
    if not specs:
        return
    proc = subprocess.run(["git", "cat-file", "--batch"], input=("\n".join(specs) + "\n").encode(),
                          capture_output=True, check=True)
    data = proc.stdout
    pos = 0
    for spec in specs:
        end = data.index(b"\n", pos)
        header = data[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if header.endswith(" missing") or header.endswith(" ambiguous"):
            yield spec, None
            continue
        _sha_, kind, size_text = header.rsplit(" ", 2)
        size = int(size_text)
        content = data[pos:pos + size]
        pos += size + 1
        yield spec, content if kind == "blob" else None


def parse_record_content(content: bytes | None) -> tuple[str | None, Any]:
    """(problem, None) or (None, the ExecutionRecord) for the content of an execution record."""
    if content is None:
        return f"it has no {RECORD_PATH}", None
    try:
        from orchestra import execution
        from orchestra.errors import OrchestraError
    except ImportError as exc:  # the copy next to the shims always has them; be explicit if not
        return f"cannot check records here ({exc})", None
    try:
        # The fast path first, by hand: parse_record() imports the YAML library before trying it, and a
        # bare server's python may have none. Every record Orchestra writes takes this path.
        try:
            data = execution.parse_rendered_record(content.decode("utf-8"))
        except (getattr(execution, "_NotOurs", ValueError), UnicodeDecodeError):
            record = execution.parse_record(content)
        else:
            record = execution.ExecutionRecord.from_dict(data)
    except OrchestraError as exc:
        return str(exc), None
    except ImportError:
        # Valid records written by hand in free-form YAML need ruamel, which a bare server may lack.
        return ("its record is not in Orchestra's canonical form and this server cannot parse free-form "
                "YAML (install orchestra-campaigns for the hook's python)"), None
    return None, record


def check_records(tips: dict[str, str], records: dict[str, Any] | None = None
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """For ref -> tip commit: (ref -> problem, ref -> the record's code commit).

    ``records``, when given, receives tip -> the parsed ExecutionRecord of each well-formed one, so that
    the index check of the same push compares its rows with them instead of reading every record again.
    """
    problems: dict[str, str] = {}
    commits: dict[str, str] = {}
    refs = list(tips)
    contents = dict(read_blobs([f"{tips[ref]}:{RECORD_PATH}" for ref in refs]))
    for ref in refs:
        problem, record = parse_record_content(contents.get(f"{tips[ref]}:{RECORD_PATH}"))
        if problem:
            problems[ref] = problem
        else:
            commits[ref] = record.commit or ""
            if records is not None:
                records[tips[ref]] = record
    return problems, commits


def is_sha(text: str) -> bool:
    return bool(_SHA.match(text))


def say(message: str) -> None:
    """Hook output: git shows it to the pusher (prefixed ``remote:`` for server hooks)."""
    print(message, file=sys.stderr)


def guarded(hook: str, main: Callable[[], int], failure_code: int) -> int:
    """``main()``, with a bug or an unexpected environment told in one line rather than a traceback.

    ``failure_code`` is what the hook then exits with: 1 for the hooks that guard (an unchecked push must
    not pass), 0 for post-receive (it cannot refuse anything). ORCHESTRA_HOOK_DEBUG=1 shows the traceback.
    """
    try:
        return main()
    except Exception as exc:
        if config_true(os.environ.get("ORCHESTRA_HOOK_DEBUG")):
            raise
        outcome = "the push is refused" if failure_code else "the push went through"
        say(f"orchestra: {hook} hook failed: {type(exc).__name__}: {exc}; {outcome} (tell the remote's "
            f"administrator; ORCHESTRA_HOOK_DEBUG=1 on the server shows the traceback)")
        return failure_code
