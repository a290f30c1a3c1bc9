"""No user value reaches a shell unquoted, wherever its placeholder stands: expegit and runaway as users run them."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import cli, git, make_campaign

ECHO_ARGS = """\
import json, sys
with open("args.json", "w", encoding="utf-8", errors="surrogateescape") as f:
    json.dump([a.encode("utf-8", "surrogateescape").hex() for a in sys.argv[1:]], f)
"""
HOSTILE = ["$(touch pwned)", "`touch pwned`", 'say "hi" \\" \\\\', "it's", "multi\nline\nEOF\n", "$HOME",
           ";rm -rf canary;touch pwned", "ünïcødé ✓", "", "a\tb", "}{", "\\"]


def received(root: Path) -> dict[str, list[str]]:
    """value of {msg} -> the argv the program received, for every execution of the campaign."""
    records = json.loads(cli(root, "expegit", "list", "--json", check=True).stdout)
    out = {}
    for record in records:
        assert record["state"] == "finished", record
        raw = git(root, "show", f"executions/{record['id']}:args.json").stdout
        out[record["parameters"]["msg"]] = [bytes.fromhex(h).decode("utf-8") for h in json.loads(raw)]
    return out


def run_all(root: Path, values: list[str]) -> None:
    args = []
    for value in values:
        args += ["-p", f"msg={value}"]
    run = cli(root, "expegit", "run", *args)
    assert run.returncode == 0, run.stderr


def assert_no_side_effect(tmp_path: Path) -> None:
    assert (tmp_path / "canary").is_dir()
    assert not list(tmp_path.rglob("pwned*"))


@pytest.fixture()
def canary(tmp_path: Path) -> Path:
    (tmp_path / "canary").mkdir()
    return tmp_path


def test_values_in_double_and_single_quotes_reach_the_program_exactly(canary: Path) -> None:
    root = make_campaign(canary / "c", """\
        name: quoted
        command: python3 echo_args.py "note={msg}" 'single={msg}' {msg} "$(printf %s "{msg}")."
        parameters:
          msg: {type: str}
        outputs: [args.json]
        """, {"echo_args.py": ECHO_ARGS})
    assert cli(root, "expegit", "check").returncode == 0
    run_all(root, HOSTILE)
    got = received(root)
    assert set(got) == set(HOSTILE)
    for value, argv in got.items():
        assert argv == [f"note={value}", f"single={value}", value, value.rstrip("\n") + "."]
    assert_no_side_effect(canary)


def test_argv_form_and_heredoc(canary: Path) -> None:
    root = make_campaign(canary / "c", """\
        name: argv
        command: [python3, echo_args.py, "--msg={msg}", "{msg}", "$(touch pwned)", "it's"]
        parameters:
          msg: {type: str}
        outputs: [args.json]
        """, {"echo_args.py": ECHO_ARGS})
    run_all(root, HOSTILE)
    for value, argv in received(root).items():
        assert argv == [f"--msg={value}", value, "$(touch pwned)", "it's"]
    heredoc = make_campaign(canary / "h", """\
        name: heredoc
        command: |
          cat > note.txt <<EOF
          note: {msg}
          EOF
          python3 -c 'import sys; open("args.json", "w").write(sys.argv[1])' \\
            "$(python3 -c 'import json; print(json.dumps([open("note.txt", "rb").read().hex()]))')"
        parameters:
          msg: {type: str}
        outputs: [args.json]
        """)
    run_all(heredoc, HOSTILE)
    for value, [body] in received(heredoc).items():
        assert body == f"note: {value}\n"
    assert_no_side_effect(canary)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_shell_bash_runs_bash_syntax(canary: Path) -> None:
    root = make_campaign(canary / "c", """\
        name: bash
        shell: bash
        command: a=({msg} x); python3 echo_args.py "${{a[0]}}" "$RANDOM" "$0"
        parameters:
          msg: {type: str}
        outputs: [args.json]
        """, {"echo_args.py": ECHO_ARGS})
    run_all(root, HOSTILE)
    for value, argv in received(root).items():
        assert argv[0] == value and argv[1].isdigit() and argv[2] == "bash"
    assert_no_side_effect(canary)


@pytest.mark.parametrize("command,problem", [
    ("echo $(( {n} + 1 ))", "is inside arithmetic"),
    ("'echo hi  # n={n}'", "is inside a comment"),
    ("|\n  cat <<'EOF'\n  {n}\n  EOF", "is in the body of a heredoc with a quoted delimiter"),
    ('echo "${{X:-{n}}}"', 'is inside "${...}"'),
    ("sh -c 'exit {n}'", "is in the script of a nested shell"),
])
def test_check_refuses_unsafe_placeholders_at_their_position_and_run_creates_nothing(
        tmp_path: Path, command: str, problem: str) -> None:
    manifest = f"name: bad\ncommand: {command}\nparameters:\n  n: {{type: int, low: 1, high: 5, default: 2}}\n"
    root = make_campaign(tmp_path / "c", manifest)
    source = (root / "orchestra.yaml").read_text()
    at = source.index("{n}")
    line, col = source.count("\n", 0, at) + 1, at - source.rfind("\n", 0, at)
    check = cli(root, "expegit", "check")
    assert check.returncode == 3, check.stderr
    assert check.stderr.startswith(f"orchestra.yaml:{line}:{col}: command: placeholder {{n}} {problem}")
    assert "Traceback" not in check.stderr and len(check.stderr.strip().splitlines()) <= 3
    run = cli(root, "expegit", "run")
    assert run.returncode == 3 and problem in run.stderr
    assert git(root, "for-each-ref", "refs/heads/executions").stdout == ""


def test_check_refuses_a_bad_shell(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", "name: s\nshell: fish\ncommand: echo hi\n")
    check = cli(root, "expegit", "check")
    assert check.returncode == 3
    assert check.stderr.startswith("orchestra.yaml:2:8: shell: 'fish' is not a POSIX shell")


def _repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    (root / "show.py").write_text("import sys\nopen('out.txt', 'w').write(repr(sys.argv[1:]))\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "code")
    return root


def test_runaway_batch_quotes_a_placeholder_inside_double_quotes(canary: Path) -> None:
    repo = _repo(canary / "repo")
    params = canary / "params.txt"
    params.write_text("v='$(touch pwned)'\nv='a \"b\" `touch pwned`'\n")
    result = cli(repo, "runaway", "batch", "local", "--params", str(params), "--",
                 'python3 show.py "v={v}" \'w={v}\'')
    assert result.returncode == 0, result.stdout + result.stderr
    texts = sorted((d / "out.txt").read_text() for d in (repo / "runaway-results").iterdir())
    assert texts == sorted(repr([f"v={v}", f"w={v}"]) for v in ["$(touch pwned)", 'a "b" `touch pwned`'])
    assert_no_side_effect(canary)


def test_runaway_batch_refuses_an_unsafe_placeholder(canary: Path) -> None:
    repo = _repo(canary / "repo")
    params = canary / "params.txt"
    params.write_text("v=1\n")
    result = cli(repo, "runaway", "batch", "local", "--params", str(params), "--", "echo $(( {v} ))")
    assert result.returncode == 2
    assert re.match(r"runaway: error: command: placeholder \{v\} is inside arithmetic", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
