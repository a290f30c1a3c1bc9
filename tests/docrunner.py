"""Run a document's blocks (tests/docblocks.py) as one reader's terminal would, in order.

Each block is one `bash` process, so a failure stops at its block and is named by its line, while the
directory and the variables a block leaves are carried into the next one (the reader's terminal keeps
them): every assignment is exported (`set -a`) and `export -p` plus `pwd` are saved on exit. A block
fails at its first failing command (`set -e -o pipefail`); an ERR trap records that command's line.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path

from tests.docblocks import Block, output_mismatches, parse_blocks, steps

_PRELUDE = """\
set -e -o pipefail
set -a
cd "$(cat {state}/cwd)"
. {state}/env
trap 'echo $((LINENO - {offset})) > {state}/failed_line' ERR
trap 'pwd > {state}/cwd; export -p > {state}/env' EXIT
"""


class DocStepFailed(AssertionError):
    """A block exited otherwise than the document says; the message names document:line and the command."""


def render_block_script(block: Block, state: Path) -> str:
    """The bash script that runs one block in the state the previous blocks left (cwd, variables)."""
    prelude = _PRELUDE.format(state=shlex.quote(str(state)), offset=_PRELUDE.count("\n"))
    return prelude + block.text


def run_block(block: Block, state: Path, env: Mapping[str, str], timeout: float) -> str:
    """Run one block; its output (stdout and stderr together), or DocStepFailed."""
    script = state / "block.sh"
    script.write_text(render_block_script(block, state))
    (state / "failed_line").unlink(missing_ok=True)
    proc = subprocess.Popen(["bash", str(script)], env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the CLIs it started go too
        output, _ = proc.communicate()
        raise DocStepFailed(f"{block.document}:{block.line}: the block did not finish in {timeout:g} s\n{output}")
    if proc.returncode == block.expected_exit:
        return output
    failed = state / "failed_line"
    offset = int(failed.read_text()) if failed.exists() and failed.read_text().strip() else 1
    expected = "" if block.expected_exit == 0 else f" (the document expects exit {block.expected_exit})"
    raise DocStepFailed(f"{block.document}:{block.line + offset - 1}: `{block.command_at(offset)}` exited "
                        f"{proc.returncode}{expected}\n--- its output:\n{output[-4000:]}")


@dataclasses.dataclass
class DocRun:
    """What running a document found: the blocks run, and the shown output lines nothing printed."""

    ran: int = 0
    mismatches: list[str] = dataclasses.field(default_factory=list)  # "document:line: `shown line`"


def run_document(markdown: str, document: str, start: Path, state: Path, env: Mapping[str, str], *,
                 timeout: float = 300, on_output: Callable[[Block, str], None] | None = None,
                 shown_as: Callable[[str], str] = lambda printed: printed) -> DocRun:
    """Every step of the document from directory ``start`` (``state`` is scratch); DocStepFailed on the first
    block that exits otherwise than the document says. ``shown_as`` turns printed text into what a reader's
    machine would print (the test's home directory into the one shown, ...) before it is compared."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "cwd").write_text(str(start))
    (state / "env").write_text("")
    result = DocRun()
    for block in steps(parse_blocks(markdown, document)):
        if block.file is not None:
            path = Path((state / "cwd").read_text().strip()) / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            continue
        output = run_block(block, state, env, timeout)
        result.ran += 1
        if on_output:
            on_output(block, output)
        if block.shown_output is not None:
            lines = block.shown_output.splitlines()
            for missing in output_mismatches(block.shown_output, shown_as(output)):
                line = block.shown_line + lines.index(missing)
                result.mismatches.append(f"{block.document}:{line}: `{missing.strip()}`")
    return result
