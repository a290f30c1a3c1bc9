"""Installing Orchestra's hook programs into a campaign or a shared bare repository.

Each hook is a small shim that runs ``orchestra_hooks.<name>``. It starts as a POSIX ``/bin/sh`` script
(git runs hooks with the pusher's PATH, which may hold no python or another one, so the interpreter is
chosen here rather than by ``#!/usr/bin/env python3``) and continues as Python:

- the interpreter recorded at install time (``sys.executable`` of `expegit hooks install` as it is, not
  resolved: a virtualenv's python is a symlink to the base interpreter, and only the link's path selects
  the virtualenv), or ``--python``, when the user git runs the hook as can execute it;
- otherwise the ``python3`` found on PATH, with a copy of the standard-library-only hook modules
  (``orchestra-lib/`` next to the shims: ``orchestra_hooks/`` and ``orchestra/execution.py`` and
  ``errors.py``). A shared server's git user typically cannot read the installer's virtualenv;
- with neither, a warning on the pusher's terminal; pre-push and pre-receive then refuse (an unchecked
  push must not pass), post-receive lets it through.

The shim is re-written on every install (it carries a marker line); a foreign hook of the same name is
never overwritten unless ``force`` is given. Shims written by older versions (``orchestra.hooks.*``)
keep running their own copy in ``orchestra-lib/`` until installed again.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = "# orchestra-hook:"
PACKAGE = "orchestra_hooks"
CLIENT_HOOKS = ("pre-push",)
SERVER_HOOKS = ("pre-receive", "post-receive")
LIB_DIR = "orchestra-lib"
_HOOK_MODULES = ("__init__.py", "common.py", "index_check.py", "rewrite_policy.py",
                 "pre_push.py", "pre_receive.py", "post_receive.py")
_CORE_MODULES = ("errors.py", "execution.py", "index_format.py")
# What a hook does when no python can run it: only post-receive may let the push through.
_NO_PYTHON = {
    "pre-push": ("nothing was pushed (`git push --no-verify` skips this check)", 1),
    "pre-receive": ("the push is refused, since its execution branches cannot be checked", 1),
    "post-receive": ("the push went through, but the report is NOT regenerated", 0),
}
_QUOTES = "'" * 3

# The lines between the two triple quotes are POSIX sh, and one string to Python, which starts after
# them. The sh part never holds three quotes or a backslash: render_shim() refuses an interpreter path
# that would put one there.
_SH_PART = """#!/bin/sh
{marker} {hook} (installed by `expegit hooks install`; run it again to update, delete this file to remove)
{quotes}:'
INTERPRETER={interpreter_sh}
ORCHESTRA_HOOK_INTERPRETER=$INTERPRETER
export ORCHESTRA_HOOK_INTERPRETER
if [ -x "$INTERPRETER" ]; then exec "$INTERPRETER" "$0" "$@"; fi
if command -v python3 >/dev/null 2>&1; then exec python3 "$0" "$@"; fi
echo "orchestra: warning: cannot run the {hook} hook: $INTERPRETER is not there or not executable for this user, and there is no python3 on PATH: {consequence}" >&2
exit {rc}
{quotes}
"""
_PY_PART = '''"""Runs {module} with the interpreter the lines above chose: from its installed Orchestra when it has
one, else from the standard-library-only copy in {lib}/ next to this file."""
import importlib.util
import os
import runpy
import sys

MODULE = {module!r}
LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), {lib!r})

try:
    found = importlib.util.find_spec(MODULE) is not None
except ImportError:
    found = False
if not found:
    sys.path.insert(0, LIB)
    os.environ["ORCHESTRA_HOOK_LIB"] = LIB
runpy.run_module(MODULE, run_name="__main__", alter_sys=True)
'''


def render_shim(hook: str, interpreter: str) -> str:
    """The text of one hook shim (pure, for tests). ValueError for an interpreter path it cannot carry."""
    if not interpreter or any(bad in interpreter for bad in ("\\", "\n", "\r", "\0", _QUOTES)):
        raise ValueError(f"cannot record the interpreter path {interpreter!r} in a hook: give --python a "
                         f"path without backslashes, newlines or three quotes in a row")
    consequence, rc = _NO_PYTHON.get(hook, ("the hook did not run", 1))
    module = f"{PACKAGE}.{hook.replace('-', '_')}"
    return (_SH_PART.format(marker=MARKER, hook=hook, quotes=_QUOTES, interpreter_sh=shlex.quote(interpreter),
                            consequence=consequence, rc=rc)
            + _PY_PART.format(module=module, lib=LIB_DIR))


def hooks_dir(repository: Path) -> Path:
    """The repository's hooks directory as git sees it (honours core.hooksPath; works for bare ones)."""
    out = subprocess.run(["git", "-C", str(repository), "rev-parse", "--git-path", "hooks"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise FileNotFoundError(f"{repository} is not a git repository: {out.stderr.strip()}")
    path = Path(out.stdout.strip())
    return path if path.is_absolute() else (repository / path).resolve()


def copy_library(target: Path) -> None:
    """The stdlib-only modules a shim falls back to: orchestra/{errors,execution,index_format}.py + orchestra_hooks/."""
    import orchestra
    import orchestra_hooks

    core = Path(orchestra.__file__).parent
    hooks = Path(orchestra_hooks.__file__).parent
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "orchestra").mkdir(parents=True)
    (tmp / PACKAGE).mkdir()
    (tmp / "orchestra" / "__init__.py").write_text('"""Stdlib-only subset of Orchestra for git hooks."""\n')
    for name in _CORE_MODULES:
        shutil.copyfile(core / name, tmp / "orchestra" / name)
    for name in _HOOK_MODULES:
        shutil.copyfile(hooks / name, tmp / PACKAGE / name)
    for path in [tmp, *tmp.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def install(repository: Path, hooks: tuple[str, ...], *, interpreter: str | None = None,
            force: bool = False) -> list[Path]:
    """Write the shims for ``hooks`` into ``repository``; returns their paths.

    FileExistsError on a foreign hook; ValueError for an interpreter path a shim cannot carry.
    """
    directory = hooks_dir(repository)
    directory.mkdir(parents=True, exist_ok=True)
    # As it is, never resolved (see the module docstring).
    interpreter = interpreter or sys.executable
    shims = [render_shim(hook, interpreter) for hook in hooks]
    targets = [directory / hook for hook in hooks]
    for target in targets:
        if target.exists() and not force and MARKER not in target.read_text("utf-8", "replace"):
            raise FileExistsError(str(target))
    copy_library(directory / LIB_DIR)
    for shim, target in zip(shims, targets):
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_text(shim, "utf-8")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    return targets
