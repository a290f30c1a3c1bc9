"""The manifest side of command safety: refusals at the placeholder's own line:col, the argv form, shell:."""
from __future__ import annotations

import shlex

import pytest

from orchestra.manifest import parse_manifest
from orchestra.quoting import render_command

PARAMS = "parameters:\n  note: {type: str, default: hi}\n  lr: {type: float, low: 0.1, high: 1.0}\n"


def errors_of(text: str) -> list[str]:
    manifest, errors = parse_manifest(text)
    assert manifest is None
    return [str(e) for e in errors]


def position(text: str, needle: str, nth: int = 0) -> str:
    """line:col (1-based) of the nth occurrence of needle in the manifest text."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    line = text.count("\n", 0, at) + 1
    return f"{line}:{at - (text.rfind(chr(10), 0, at) + 1) + 1}"


@pytest.mark.parametrize("command_yaml", [
    "command: echo $(( {note} ))\n",  # plain scalar
    "command: \"echo \\\"x\\\" $(( {note} ))\"\n",  # double-quoted, with escapes before it
    "command: 'echo ''x'' $(( {note} ))'\n",  # single-quoted ('' is one quote)
    "command: |\n  echo start\n  echo $(( {note} ))\n",  # literal block
    "command: >-\n  echo start &&\n  echo $(( {note} ))\n",  # folded block
    "command:\n  echo start &&\n  echo $(( {note} ))\n",  # multi-line plain scalar
])
def test_refusal_points_at_the_placeholder_in_every_yaml_style(command_yaml: str) -> None:
    text = "name: t\n" + command_yaml + PARAMS
    [error] = errors_of(text)
    assert error.startswith(f"orchestra.yaml:{position(text, '{note}')}: command: placeholder {{note}} is inside arithmetic")


def test_the_same_placeholder_twice_points_at_the_refused_one() -> None:
    text = "name: t\ncommand: echo {note} && echo $(({note}))\n" + PARAMS
    [error] = errors_of(text)
    assert error.startswith(f"orchestra.yaml:{position(text, '{note}', 1)}:")


def test_every_refusal_is_reported_and_comes_with_a_fix() -> None:
    text = "name: t\ncommand: |\n  echo $(({note})) # {lr}\n  cat <<'EOF'\n  {lr}\n  EOF\n" + PARAMS
    manifest, errors = parse_manifest(text)
    assert manifest is None
    assert [f"{e.line}:{e.col}" for e in errors] == [position(text, "{note}"), position(text, "{lr}"),
                                                     position(text, "{lr}", 1)]
    assert all(e.hint for e in errors)
    assert "comment" in str(errors[1]) and "quoted delimiter" in str(errors[2])


def test_a_single_quoted_placeholder_is_accepted_and_safe() -> None:
    manifest, errors = parse_manifest("name: t\ncommand: echo 'note={note}'\n" + PARAMS)
    assert errors == [] and manifest is not None
    assert render_command(manifest.command, {"note": "$(touch x)"}) == "echo 'note=''$(touch x)'''"


def test_an_unknown_placeholder_is_reported_where_it_stands() -> None:
    text = "name: t\ncommand: |\n  echo {note}\n  echo {nte}\n" + PARAMS
    [error] = errors_of(text)
    assert error.startswith("orchestra.yaml:4:8: command: placeholder {nte} names no parameter")


def test_a_double_quoted_placeholder_is_accepted_and_safe() -> None:
    manifest, errors = parse_manifest('name: t\ncommand: echo "note={note}"\n' + PARAMS)
    assert errors == [] and manifest is not None
    assert render_command(manifest.command, {"note": "$(touch x)"}, manifest.shell) == 'echo "note=\\$(touch x)"'


def test_argv_form_renders_words_that_never_meet_shell_syntax() -> None:
    text = "name: t\ncommand: [python, train.py, --lr, \"{lr}\", \"--note={note}\", \"it's\"]\n" + PARAMS
    manifest, errors = parse_manifest(text)
    assert errors == [] and manifest is not None
    assert render_command(manifest.command, {"lr": 0.5, "note": "a b;$(x)"}) == \
        "python train.py '--lr' 0.5 '--note=''a b;$(x)' 'it'\"'\"'s'"


def test_argv_form_words_are_not_shell_text() -> None:
    # A quote in an argv word is a character of the argument, not shell quoting: nothing to refuse.
    manifest, errors = parse_manifest("name: t\ncommand:\n  - echo\n  - \"'{note}'\"\n" + PARAMS)
    assert errors == [] and manifest is not None
    assert shlex.split(render_command(manifest.command, {"note": "x"})) == ["echo", "'x'"]


def test_argv_form_errors_point_into_the_word() -> None:
    text = "name: t\ncommand:\n  - echo\n  - --x={nope}\n" + PARAMS
    [error] = errors_of(text)
    assert error.startswith(f"orchestra.yaml:{position(text, '{nope}')}: command[1]: placeholder {{nope}} names")


@pytest.mark.parametrize("command_yaml,problem", [
    ("command: []\n", "must not be empty"),
    ("command: [python, 3]\n", "expected a string"),
    ("command: {a: 1}\n", "expected"),
    ("command: ['', x]\n", "the program to run is empty"),
])
def test_bad_argv_forms(command_yaml: str, problem: str) -> None:
    [error] = errors_of("name: t\n" + command_yaml + PARAMS)
    assert problem in error


def test_shell_is_recorded_and_used() -> None:
    manifest, errors = parse_manifest("name: t\nshell: bash\ncommand: echo {note}\n" + PARAMS)
    assert errors == [] and manifest is not None and manifest.shell == "bash"
    assert render_command(manifest.command, {"note": "a"}, manifest.shell) == "bash -c -- 'echo a' bash"
    default, _ = parse_manifest("name: t\ncommand: echo\n")
    assert default is not None and default.shell is None


@pytest.mark.parametrize("value,problem", [
    ("bash -e", "neither a command name nor an absolute path"),
    ("fish", "not a POSIX shell"),
    ("\"\"", "must not be empty"),
    ("[bash]", "expected a string"),
])
def test_bad_shells_are_refused_with_their_position(value: str, problem: str) -> None:
    text = f"name: t\nshell: {value}\ncommand: echo\n"
    [error] = errors_of(text)
    assert error.startswith("orchestra.yaml:2:8: shell") and problem in error


def test_every_placeholder_is_checked_however_many() -> None:
    command = " ".join("{lr}" for _ in range(40)) + " {nope}"
    [error] = errors_of(f"name: t\ncommand: echo {command}\n" + PARAMS)
    assert "placeholder {nope} names no parameter" in error


def test_errors_of_a_huge_command_are_bounded() -> None:
    command = " ".join(f"$(({{lr}}))" for _ in range(500))
    errors = errors_of(f"name: t\ncommand: echo {command}\n" + PARAMS)
    assert len(errors) <= 25 and "inside arithmetic" in errors[0]
