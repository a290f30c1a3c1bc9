"""Every command block of README.md and docs/tutorial.md runs, in order, against the dev cluster.

So the docs cannot drift from the tool: a renamed flag, a changed default or a new refusal fails
test_every_command_block_runs, naming the document, the line and the command; a reworded message fails
test_the_output_shown_is_what_the_commands_print, naming the shown line that nothing printed (values,
ids and times are normalised, see tests/docblocks.py). Each document gets a fresh HOME (a reader's machine: a git
identity and nothing else) and runs its blocks as one reader's terminal would, one after the other, cwd
and variables carried from block to block (tests/docblocks.py says how blocks are marked). The dev
cluster's environment (`devcluster.sh env`: SLURM_CONF and the ORCHESTRA_DEVCLUSTER_* paths) is exported.

The README's "Try it" runs `pip install .` in a checkout. It runs for real, in a copy of the repository's
files and with `pip` resolving to a throwaway virtualenv (which sees this interpreter's packages through a
.pth file, so PIP_NO_DEPS=1 leaves the test environment's dependencies alone): the test environment's own
installation is never touched, and the `expegit` the next blocks find is the one that block installed.

The CLIs run as subprocesses (no gevent in this process). The tutorial needs the dev cluster: without
it, it is skipped with the reason, except under CI=true, where that fails. The README's commands need
no cluster and always run. To refresh the output shown in the docs, set ORCHESTRA_DOCS_TRANSCRIPT=DIR:
each document's blocks and their output are written there.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import socket
import site
import subprocess
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.docblocks import Block
from tests.docrunner import DocRun, DocStepFailed, run_document

ROOT = Path(__file__).resolve().parents[2]
DEVCLUSTER = ROOT / "tests" / "cluster" / "devcluster.sh"
DEFAULT_CLUSTER_DIR = "/tmp/orchestra-devcluster"
BLOCK_TIMEOUT = 300  # seconds; the slowest block (a Slurm campaign) takes well under a minute here

# Where each document's reader starts (the README's in their checkout: it says `pip install .`; the
# tutorial's in their home directory), and whether its commands need the dev cluster. The README's run on
# any machine, so they run even where the cluster is absent.
DOCUMENTS = {"README.md": ("checkout", False), "docs/tutorial.md": ("home", True)}


def _must_run() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _cluster_env(needed: bool) -> dict[str, str]:
    """The dev cluster's exports; when it is down, {} for a document that does not need it, else a skip."""
    status = subprocess.run(["bash", str(DEVCLUSTER), "status"], capture_output=True, text=True)
    if status.returncode != 0:
        if not needed:
            return {}
        reason = "the dev cluster is not up: run `sudo bash tests/cluster/devcluster.sh up` first"
        if _must_run():
            pytest.fail(reason + " (CI=true: the docs test must not be skipped)")
        pytest.skip(reason)
    out = subprocess.run(["bash", str(DEVCLUSTER), "env"], capture_output=True, text=True, check=True).stdout
    env: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export "):].partition("=")
            env[name] = shlex.split(value)[0] if value else ""
    if env.get("ORCHESTRA_DEVCLUSTER_DIR", DEFAULT_CLUSTER_DIR) != DEFAULT_CLUSTER_DIR:
        # The docs name the default directory, as a reader's would be.
        reason = f"the docs use the dev cluster in {DEFAULT_CLUSTER_DIR}, this one is elsewhere"
        if _must_run():
            pytest.fail(reason)
        pytest.skip(reason)
    return env


def _throwaway_pip(venv: Path) -> None:
    """A virtualenv whose `pip install .` installs there, seeing (not changing) this interpreter's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"]
    parents = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    Path(purelib, "_parent_site.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    pip = venv / "bin" / "pip"
    pip.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" -m pip "$@"\n')
    pip.chmod(0o755)


def _copy_checkout(dest: Path) -> None:
    """The repository's files as a clone would have them (tracked and new, not ignored)."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def _reader_env(home: Path, cluster: dict[str, str], venv: Path) -> dict[str, str]:
    scripts = sysconfig.get_path("scripts")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "ORCHESTRA_", "SLURM", "XDG_"))}
    env.update(cluster, HOME=str(home), PIP_NO_DEPS="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=os.pathsep.join([str(venv / "bin"), scripts, env.get("PATH", "")]))
    env.pop("VIRTUAL_ENV", None)
    (home / ".gitconfig").write_text("[user]\n\tname = Ada Newcomer\n\temail = ada@example.org\n"
                                     "[init]\n\tdefaultBranch = main\n")
    return env


@dataclasses.dataclass
class _Outcome:
    document: str
    failure: str | None
    run: DocRun


def _as_shown(home: Path) -> Callable[[str], str]:
    """Printed text as the docs show it: the reader's home is /home/ada, this machine is called vm."""
    host = socket.gethostname()

    def convert(printed: str) -> str:
        printed = printed.replace(str(home), "/home/ada")
        printed = re.sub(rf"(?m)^{re.escape(host)}$", "vm", printed)  # `ssh devcluster hostname`
        return printed.replace(f"({host})", "(vm)")                   # `runaway test`: the node's name

    return convert


@pytest.fixture(scope="module", params=sorted(DOCUMENTS))
def outcome(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> _Outcome:
    """The document run once, for both tests below."""
    document = request.param
    start_in, needs_cluster = DOCUMENTS[document]
    cluster = _cluster_env(needs_cluster)
    tmp_path = tmp_path_factory.mktemp(document.replace("/", "_"))
    home = tmp_path / "home"
    home.mkdir()
    venv = tmp_path / "venv"
    _throwaway_pip(venv)
    env = _reader_env(home, cluster, venv)
    start = home
    if start_in == "checkout":
        start = home / "orchestra"
        _copy_checkout(start)
    log: list[str] = []

    def record(block: Block, output: str) -> None:
        log.append(f"--- {block.document}:{block.line}\n{block.text}>>>\n{output}")

    failure, result = None, DocRun()
    try:
        result = run_document((ROOT / document).read_text(), document, start, tmp_path / "state", env,
                              timeout=BLOCK_TIMEOUT, on_output=record, shown_as=_as_shown(home))
    except DocStepFailed as failed:
        failure = str(failed)
    finally:
        # Every block's output, for whoever updates the output shown in the docs.
        (tmp_path / "transcript.txt").write_text("\n".join(log))
        if os.environ.get("ORCHESTRA_DOCS_TRANSCRIPT"):
            shutil.copy(tmp_path / "transcript.txt",
                        Path(os.environ["ORCHESTRA_DOCS_TRANSCRIPT"]) / (document.replace("/", "_") + ".txt"))
    return _Outcome(document, failure, result)


def test_every_command_block_runs(outcome: _Outcome) -> None:
    if outcome.failure:
        pytest.fail(outcome.failure, pytrace=False)
    assert outcome.run.ran, f"{outcome.document} has no command block to run"


def test_the_output_shown_is_what_the_commands_print(outcome: _Outcome) -> None:
    """Wording, not values: ids, numbers and fingerprints are normalised (tests/docblocks.py)."""
    if outcome.failure:
        pytest.fail(f"{outcome.document}: its commands failed (see test_every_command_block_runs)", pytrace=False)
    assert not outcome.run.mismatches, (
        "shown output that the commands no longer print (update it from the transcript: run with "
        "ORCHESTRA_DOCS_TRANSCRIPT=DIR):\n" + "\n".join(outcome.run.mismatches))
