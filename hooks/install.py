"""Installing Orchestra's hook programs into a campaign or a shared bare repository.

Each hook is a small Python shim (``#!/usr/bin/env python3``) that runs ``orchestra.hooks.<name>``:

- with the interpreter recorded at install time (``sys.executable`` of `expegit hooks install`, or
  ``--python``), when the user git runs the hook as can execute it: that interpreter has Orchestra;
- otherwise with the ``python3`` found on PATH and a copy of the standard-library-only hook modules
  (``orchestra-lib/`` next to the shims, with ``orchestra/execution.py`` and ``errors.py``). A shared
  server's git user typically cannot read the installer's virtualenv and has a bare ``python3``.

The shim is re-written on every install (it carries a marker line); a foreign hook of the same name is
never overwritten unless ``force`` is given.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

MARKER = "# orchestra-hook:"
CLIENT_HOOKS = ("pre-push",)
SERVER_HOOKS = ("pre-receive", "post-receive")
LIB_DIR = "orchestra-lib"
_HOOK_MODULES = ("__init__.py", "common.py", "pre_push.py", "pre_receive.py", "post_receive.py")
_CORE_MODULES = ("errors.py", "execution.py")

SHIM = '''#!/usr/bin/env python3
{marker} {hook} (installed by `expegit hooks install`; run it again to update, delete this file to remove)
"""Runs {module} with the interpreter recorded at install time, or with this python3 and the
stdlib-only copy in {lib}/ when that interpreter is not usable here (another user, another machine)."""
import os
import sys

INTERPRETER = {interpreter!r}
MODULE = {module!r}
LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), {lib!r})

reexec = os.environ.pop("ORCHESTRA_HOOK_REEXEC", None)
if (INTERPRETER and not reexec and os.path.realpath(sys.executable) != os.path.realpath(INTERPRETER)
        and os.access(INTERPRETER, os.X_OK)):
    try:
        os.execve(INTERPRETER, [INTERPRETER, os.path.abspath(__file__), *sys.argv[1:]],
                  dict(os.environ, ORCHESTRA_HOOK_REEXEC="1"))
    except OSError:
        pass

import importlib.util  # noqa: E402
import runpy  # noqa: E402

try:
    found = importlib.util.find_spec(MODULE) is not None
except ImportError:
    found = False
if not found:
    for name in [n for n in sys.modules if n == "orchestra" or n.startswith("orchestra.")]:
        del sys.modules[name]
    sys.path.insert(0, LIB)
    os.environ["ORCHESTRA_HOOK_LIB"] = LIB
runpy.run_module(MODULE, run_name="__main__", alter_sys=True)
'''


def render_shim(hook: str, interpreter: str) -> str:
    """The text of one hook shim (pure, for tests)."""
    module = "orchestra.hooks." + hook.replace("-", "_")
    return SHIM.format(marker=MARKER, hook=hook, module=module, interpreter=interpreter, lib=LIB_DIR)


def hooks_dir(repository: Path) -> Path:
    """The repository's hooks directory as git sees it (honours core.hooksPath; works for bare ones)."""
    out = subprocess.run(["git", "-C", str(repository), "rev-parse", "--git-path", "hooks"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise FileNotFoundError(f"{repository} is not a git repository: {out.stderr.strip()}")
    path = Path(out.stdout.strip())
    return path if path.is_absolute() else (repository / path).resolve()


def copy_library(target: Path) -> None:
    """The stdlib-only modules a shim falls back to: orchestra/{errors,execution}.py + orchestra/hooks/."""
    import orchestra
    import orchestra.hooks

    core = Path(orchestra.__file__).parent
    hooks = Path(orchestra.hooks.__file__).parent
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "orchestra" / "hooks").mkdir(parents=True)
    (tmp / "orchestra" / "__init__.py").write_text('"""Stdlib-only subset of Orchestra for git hooks."""\n')
    for name in _CORE_MODULES:
        shutil.copyfile(core / name, tmp / "orchestra" / name)
    for name in _HOOK_MODULES:
        shutil.copyfile(hooks / name, tmp / "orchestra" / "hooks" / name)
    for path in [tmp, *tmp.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def install(repository: Path, hooks: tuple[str, ...], *, interpreter: str | None = None,
            force: bool = False) -> list[Path]:
    """Write the shims for ``hooks`` into ``repository``; returns their paths. FileExistsError on a foreign hook."""
    directory = hooks_dir(repository)
    directory.mkdir(parents=True, exist_ok=True)
    interpreter = interpreter or sys.executable
    targets = [directory / hook for hook in hooks]
    for target in targets:
        if target.exists() and not force and MARKER not in target.read_text("utf-8", "replace"):
            raise FileExistsError(str(target))
    copy_library(directory / LIB_DIR)
    for hook, target in zip(hooks, targets):
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_text(render_shim(hook, interpreter), "utf-8")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    return targets
