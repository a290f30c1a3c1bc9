"""Static checks as tests, so the README's single test command runs them in CI: the import contracts
(import-linter, `.importlinter`) and mypy (`mypy.ini`: strict on core). Each fails with the tool's output.

Without the tools installed they skip with the reason, except under CI=true, where they must run
(`pip install -e '.[test]'`, which tests/run_all.sh does, installs them).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: Import name -> directory in the repository (setup.py's package_dir: core/ is installed as `orchestra`).
LAYOUT = {"orchestra": "core", "expegit": "expegit", "runaway": "runaway", "parasearch": "parasearch",
          "orchestra_hooks": "hooks"}


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not installed: pip install -e '.[test]'"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: static checks must not be skipped)")
        pytest.skip(reason)


def _lint_imports(config: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", code, "--no-cache", str(config)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold() -> None:
    _need("importlinter")
    result = _lint_imports(ROOT / ".importlinter", ROOT)
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert "BROKEN" not in result.stdout


def test_import_linter_sees_late_and_type_checking_imports(tmp_path: Path) -> None:
    # The contracts must hold for imports inside functions too (e.g. expegit's old late import of
    # parasearch.study): a contract that only saw module-level imports would pass them silently.
    _need("importlinter")
    for package, body in {"low": "def f():\n    import high.mod\n", "other": "from typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    import high.mod\n", "high": ""}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
        (tmp_path / package / "mod.py").write_text(body)
    config = tmp_path / ".importlinter"
    config.write_text(textwrap.dedent("""\
        [importlinter]
        root_packages =
            low
            other
            high
        [importlinter:contract:late]
        name = low and other import nothing of high
        type = forbidden
        source_modules =
            low
            other
        forbidden_modules =
            high
        """))
    result = _lint_imports(config, tmp_path, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert result.returncode != 0, result.stdout
    assert "low.mod -> high.mod" in result.stdout and "other.mod -> high.mod" in result.stdout, result.stdout


def _import_layout() -> Path:
    """The packages under their import names (symlinks), for mypy: it cannot follow the editable install's
    import hook, and core/ must be checked as `orchestra` for the other packages' imports to resolve."""
    layout = ROOT / "build" / "mypy-layout"
    layout.mkdir(parents=True, exist_ok=True)
    for name, directory in LAYOUT.items():
        link = layout / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(ROOT / directory, target_is_directory=True)
    return layout


def test_mypy_strict_on_core_default_elsewhere() -> None:
    _need("mypy")
    layout = _import_layout()
    packages = [arg for name in LAYOUT for arg in ("-p", name)]
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "mypy.ini"),
                             "--cache-dir", str(ROOT / "build" / "mypy-cache"), *packages],
                            cwd=layout, capture_output=True, text=True, timeout=600,
                            env={k: v for k, v in os.environ.items() if k != "MYPYPATH"})
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}\n{result.stderr}"
