"""The fake's own formats, and its output globs checked against the real matcher on a real directory.

The fake selects outputs from an in-memory tree; the agent (every real backend's collector) selects them
with glob.glob on disk. Like dulwich's tests against the real git binary, the two are compared on the
same tree for many patterns, so the fake cannot drift from what users get.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from orchestra.errors import ExecutionError
from orchestra.quoting import render_command
from runaway.agent import result_files
from runaway.fake import Script, match_outputs, parse_script, render_script

HOSTILE = "we ird;$(touch PWNED)'\"`x`\n\u00e9 *?[a]"

TREE = [
    "metrics.json", "notes.txt", ".hidden.json", "plots/a b.png", f"plots/{HOSTILE}.png", "plots/.dot.png",
    "deep/x/y.txt", "deep/.secret/z.txt", ".cache/blob", "plots/sub/c.png", ".orchestra/stdout",
    ".orchestra/stderr", ".orchestra/pid",
]
PATTERNS = [
    "*", "*.json", "plots/*", "plots/*.png", "**", "**/*.txt", "**/*.png", "deep/**", "deep", "plots",
    ".hidden.json", ".*", ".cache/*", "deep/*/y.txt", "nosuch", "../x", "/etc/passwd", "plots/[ab]*",
    "plots/?*.png", "**/y.txt", ".orchestra/*", ".orchestra", "deep/.secret/*", "plots/sub",
]


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    for rel in TREE:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return root


@pytest.mark.parametrize("pattern", PATTERNS)
def test_output_globs_select_what_the_agent_selects_on_disk(on_disk: Path, pattern: str) -> None:
    real = [rel for rel in result_files(str(on_disk), [pattern]) if not rel.startswith(".orchestra/")]
    assert match_outputs(TREE, [pattern]) == real


def test_several_globs_are_one_sorted_selection(on_disk: Path) -> None:
    patterns = ["plots/*.png", "metrics.json", "**/*.png"]
    real = [rel for rel in result_files(str(on_disk), patterns) if not rel.startswith(".orchestra/")]
    assert match_outputs(TREE, patterns) == real


@pytest.mark.parametrize("script", [
    dict(),
    dict(exit=3, stdout="out \u2713\n", stderr=HOSTILE),
    dict(exit=[1, 1, 0], files={HOSTILE: HOSTILE, "a/b c.txt": ""}, duration=2.5),
    dict(hang=True, lose=2, echo_env=["ORCHESTRA_EXECUTION_ID"]),
])
def test_scripts_round_trip(script: dict) -> None:
    parsed = parse_script(render_script(**script))
    codes = script.get("exit", 0)
    expected = Script(exit_codes=tuple(codes) if isinstance(codes, list) else (codes,),
                      stdout=script.get("stdout", "").encode(), stderr=script.get("stderr", "").encode(),
                      files=tuple((k, v.encode()) for k, v in script.get("files", {}).items()),
                      duration=script.get("duration", 0.0), hang=script.get("hang", False),
                      lose=script.get("lose", 0), echo_env=tuple(script.get("echo_env", ())))
    assert parsed == expected


def test_a_manifest_template_fills_a_script_with_quoted_values() -> None:
    command = render_command("fake --exit {code} --stdout {msg}", {"code": 2, "msg": HOSTILE})
    assert parse_script(command) == Script(exit_codes=(2,), stdout=HOSTILE.encode())


def test_each_attempt_has_its_exit_code_and_the_last_repeats() -> None:
    script = parse_script(render_script(exit=[1, 2, 0]))
    assert [script.exit_code(n) for n in (1, 2, 3, 4)] == [1, 2, 0, 0]


@pytest.mark.parametrize("command, says", [
    ("python3 train.py", "is not a fake script"),
    ("fake --exit", "--exit needs a value"),
    ("fake --sleep 3", "unknown word '--sleep'"),
    ("fake 'unclosed", "cannot parse"),
])
def test_a_command_the_fake_cannot_run_is_refused_with_the_reason(command: str, says: str) -> None:
    with pytest.raises(ExecutionError, match=says.replace("'", ".").replace("-", r"\-")):
        parse_script(command)


def test_a_manual_clock_moves_only_when_told() -> None:
    from runaway.backend import Job
    from runaway.fake import FakeBackend, FakeClock, FakeWorld

    world = FakeWorld(clock=FakeClock(auto=False))
    backend = FakeBackend(world)
    backend.start()
    slot = backend.acquire()
    handle = backend.launch(slot, Job("e1", "c0", render_script(duration=10, exit=4)), lambda commit: iter(()))
    run = world.runs[handle.remote_dir]
    world.clock.advance(9.5)
    assert run.running
    world.clock.advance(0.5)
    assert not run.running and backend.wait(handle, None).exit_code == 4
    assert world.clock.time() - handle.started == 10.0
