"""The front door: --version on every CLI, and shell completion of subcommands, profiles and ids."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, cli, make_campaign


@pytest.mark.parametrize("prog", ["expegit", "runaway", "parasearch"])
def test_version(prog: str, tmp_path: Path) -> None:
    from importlib import metadata

    result = cli(tmp_path, prog, "--version", check=True)
    assert result.stdout.strip() == f"{prog} {metadata.version('orchestra-campaigns')}"


def complete(cwd: Path, line: str, tmp_path: Path) -> list[str]:
    """What a Tab at the end of ``line`` offers, through argcomplete's own protocol (as the shell hook)."""
    out = tmp_path / "completions.txt"
    out.unlink(missing_ok=True)
    prog = line.split()[0]
    env = dict(os.environ, **GIT_ENV, _ARGCOMPLETE="1", COMP_LINE=line, COMP_POINT=str(len(line)),
               _ARGCOMPLETE_STDOUT_FILENAME=str(out), _ARGCOMPLETE_IFS="\n")
    subprocess.run([sys.executable, "-m", prog], cwd=cwd, env=env, capture_output=True, timeout=60,
                   stdin=subprocess.DEVNULL)
    return sorted(w.strip() for w in out.read_text().split("\n") if w.strip())


def test_completion_of_subcommands_profiles_and_execution_ids(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: t\ncommand: echo {i}\nparameters:\n  i: {type: int, low: 1, high: 2}\n"
                                         "profiles:\n  gpu-box: {kind: ssh, host: nohost.invalid}\n")
    cli(root, "expegit", "run", "--grid", check=True)
    ids = [r["id"] for r in json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)]
    assert "resume" in complete(root, "expegit res", tmp_path)
    assert complete(root, "expegit run --profile ", tmp_path) == ["gpu-box", "local"]
    assert complete(root, "runaway test g", tmp_path) == ["gpu-box"]
    assert complete(root, "parasearch run --profile l", tmp_path) == ["local"]
    assert complete(root, f"expegit show {ids[0][:3]}", tmp_path) == sorted(i for i in ids if i.startswith(ids[0][:3]))
    assert sorted(w for w in complete(root, "expegit rm ", tmp_path) if not w.startswith("-")) == sorted(ids)


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_shell_code(shell: str, tmp_path: Path) -> None:
    code = cli(tmp_path, "expegit", "completion", shell, check=True).stdout
    assert "_ARGCOMPLETE" in code and "expegit" in code
    if shell == "bash":  # the code must at least parse in the shell it is for
        subprocess.run(["bash", "-n"], input=code, text=True, check=True)
