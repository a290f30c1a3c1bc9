"""Placeholders quoted for where they stand: every command shape × hostile value, run by real shells.

Each rendered command is eval'ed the way runaway's wrapper does (``eval "$1"`` in /bin/sh, dash on Debian),
and by bash; the program must receive the value's exact bytes and no hostile value may have a side effect.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestra.quoting import (LINE_GUARD, TemplateError, argv_template, parse_template, placeholders,
                               refusals, render_command, shell_problem, under_shell)
from orchestra.shell_lexer import ANSI, DOUBLE, HEREDOC, MARK, SINGLE, WORD, scan

BASH = shutil.which("bash")
SHELLS = ["/bin/sh"] + ([BASH] if BASH else [])

HOSTILE = [
    "$(touch pwned)", "`touch pwned`", '"', "'", "\\", "a\nb", "\nEOF\n", "EOF", "$HOME", ";rm -rf pwned;touch pwned",
    "ünïcødé €", "", "\t\tEOF", "}", "$(touch pwned)\n\tEOF\ntouch pwned\n", "*", "-n", "\\$", " a  b ", "${-+}",
    "'; touch pwned; '", '"; touch pwned; "', "\\`touch pwned\\`", "\\\n", "a=b", "if", "x\n", "$((1/0))",
    "${HOME:?boom}", "}}{{", "\r\n", "~root", "!!",
]


def run_in_shell(rendered: str, shell: str, cwd: Path) -> bytes:
    """What the command writes to stdout when the wrapper evals it (see runaway/rundir.WRAPPER)."""
    done = subprocess.run([shell, "-c", 'eval "$1"', "sh", rendered], cwd=cwd, capture_output=True,
                          env={"PATH": os.environ["PATH"], "HOME": "/home/nobody", "LC_ALL": "C.UTF-8"},
                          timeout=30)
    assert done.returncode == 0, (rendered, done.stderr)
    return done.stdout


# (template, what the program prints for value v). Braces the shell sees are doubled in templates.
SHAPES: dict[str, tuple[str, object]] = {
    "unquoted": ("printf %s {x}", lambda v: v),
    "word part": ("printf %s --x={x}.", lambda v: f"--x={v}."),
    "double quotes": ('printf %s "note={x}"', lambda v: f"note={v}"),
    "double quotes twice, with $HOME": ('printf %s "{x}:$HOME:{x}"', lambda v: f"{v}:/home/nobody:{v}"),
    "assignment": ('X={x}; printf %s "$X"', lambda v: v),
    "command substitution": ('v=$(printf %s. {x}); printf %s "${{v%.}}"', lambda v: v),
    "double quotes in $(...) in double quotes": ('v="$(printf %s. "<{x}>")"; printf %s "${{v%.}}"',
                                                  lambda v: f"<{v}>"),
    "backticks": ('v=`printf %s. {x}`; printf %s "${{v%.}}"', lambda v: v),
    "double quotes in backticks": ('v=`printf %s. "{x}"`; printf %s "${{v%.}}"', lambda v: v),
    "nested backticks": ('v=`w=\\`printf %s. {x}\\`; printf %s "$w"`; printf %s "${{v%.}}"', lambda v: v),
    "heredoc": ("cat <<EOF\n{x}\nEOF\n", lambda v: v + "\n"),
    "heredoc mid-line": ("cat <<EOF\nnote={x}!\nthen\nEOF\n", lambda v: f"note={v}!\nthen\n"),
    "heredoc <<- with tabs": ("cat <<-EOF\n\t{x}\n\tEOF\n", lambda v: v + "\n"),
    "heredoc with a continued line": ("cat <<EOF\na\\\nEOF\n{x}\nEOF\n", lambda v: f"aEOF\n{v}\n"),
    "heredoc with an escaped backslash at a line end": ("cat <<EOF\na\\\\\nEOF\nprintf %s {x}\n",
                                                        lambda v: "a\\\n" + v),
    "double quotes in ${VAR:-...}": ('printf %s ${{UNSET_Z:-"<{x}>"}}', lambda v: f"<{v}>"),
    "heredoc in $(...)": ('v=$(cat <<EOF\n{x}\nEOF\n); printf %s "$v"', lambda v: v.rstrip("\n")),
    "case in $(...)": ('v=$(case a in a) printf %s. {x};; esac); printf %s "${{v%.}}" "$(echo case)" "{x}"',
                       lambda v: v + "case" + v),
    "argument of sh -c": ("sh -c 'printf %s \"$1\"' sh {x}", lambda v: v),
    "heredoc then a word on its line": ("cat <<EOF; printf %s {x}\nbody\nEOF\n", lambda v: "body\n" + v),
    "${VAR:-{x}}": ("printf %s ${{UNSET_Z:-{x}}}", lambda v: v),
    "${VAR:+{x}}": ("V=1; printf %s ${{V:+{x}}}", lambda v: v),
    "${VAR#{x}}": ("V=abc; printf %s ${{V#{x}}}", lambda v: "abc"[len(v):] if "abc".startswith(v) else "abc"),
    "single quotes": ("printf %s 'note={x}!'", lambda v: f"note={v}!"),
    "single quotes in $(...) in double quotes": ('v="$(printf %s. \'a {x}\')"; printf %s "${{v%.}}"',
                                                  lambda v: f"a {v}"),
    "single quotes in backticks": ("v=`printf %s. 'a {x}'`; printf %s \"${{v%.}}\"", lambda v: f"a {v}"),
    "single quotes in ${VAR:-...}": ("printf %s ${{UNSET_Z:-'a {x}'}}", lambda v: f"a {v}"),
    "${VAR:-{x}} in $(...)": ('v=$(printf %s. ${{UNSET_Z:-{x}}}); printf %s "${{v%.}}"', lambda v: v),
}


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_passes_every_hostile_value_exactly(shape: str, shell: str, tmp_path: Path) -> None:
    template, expected = SHAPES[shape]
    for value in HOSTILE:
        rendered = render_command(template, {"x": value})
        out = run_in_shell(rendered, shell, tmp_path)
        assert out.decode() == expected(value), (shape, value, rendered)  # type: ignore[operator]
        assert list(tmp_path.iterdir()) == [], (shape, value, rendered)


@pytest.mark.parametrize("shell", SHELLS)
def test_argv_form_gives_one_argument_per_word(shell: str, tmp_path: Path) -> None:
    template = argv_template(["printf", "[%s]", "{x}", "--lr={x}", "lit eral", "{{x}}", "if", "A=b", ""])
    for value in HOSTILE:
        out = run_in_shell(render_command(template, {"x": value}), shell, tmp_path)
        assert out.decode() == f"[{value}][--lr={value}][lit eral][{{x}}][if][A=b][]", value
        assert list(tmp_path.iterdir()) == []


def test_argv_form_quotes_a_program_that_would_read_as_syntax(tmp_path: Path) -> None:
    # A first word `A=b` unquoted is an assignment and `if` a reserved word: quoted, both name programs.
    assert argv_template(["A=b", "x"]) == "'A=b' x"
    assert argv_template(["if"]) == "'if'"
    assert render_command(argv_template(["{p}", "x"]), {"p": "A=b"}) == "'A=b' x"


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
@pytest.mark.parametrize("shape", ["arrays", "here-string", "RANDOM", "double quotes"])
def test_shell_bash_runs_bash_syntax_with_hostile_values(shape: str, tmp_path: Path) -> None:
    template, expected = {
        "arrays": ('a=({x} b); printf %s "${{a[0]}}"', lambda v: v),
        "here-string": ("cat <<< {x}", lambda v: v + "\n"),
        "RANDOM": ('[ -n "$RANDOM" ] && printf %s "r={x}"', lambda v: f"r={v}"),
        "double quotes": ('printf %s "{x}"', lambda v: v),
    }[shape]
    for value in HOSTILE:
        rendered = render_command(template, {"x": value}, shell="bash")
        out = run_in_shell(rendered, "/bin/sh", tmp_path)  # the wrapper is sh; the command runs under bash
        assert out.decode() == expected(value), (value, rendered)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_shell_bash_keeps_dollar_zero_and_arguments_sane(tmp_path: Path) -> None:
    rendered = render_command('printf "%s|%s|%s" "$0" "$#" "$*"', {}, shell="bash")
    assert run_in_shell(rendered, "/bin/sh", tmp_path) == b"bash|0|"
    # A script starting with "-" is not read as an option of the shell.
    assert run_in_shell(under_shell("-x() { printf ok; }; -x", "bash"), "/bin/sh", tmp_path) == b"ok"


def test_dash_has_no_random_so_the_default_shell_matters(tmp_path: Path) -> None:
    if os.path.realpath("/bin/sh").endswith("bash"):
        pytest.skip("/bin/sh is bash here")
    assert run_in_shell('printf %s "$RANDOM"', "/bin/sh", tmp_path) == b""


# ---------------------------------------------------------------------------------------- refusals
REFUSED = {
    "echo $'a\\{x}'": "backslash",
    "echo hi # {x}": "comment",
    "echo $(( {x} + 1 ))": "arithmetic",
    "(( i = {x} ))": "arithmetic",
    "echo \\{x}": "backslash",
    'echo "\\{x}"': "backslash",
    "echo $${x}": "bare $",
    'echo "${{X:-{x}}}"': '"${...}"',
    "echo ${{X/a/{x}}}": "other than",
    "echo ${{X:1:{x}}}": "other than",
    'echo "`echo {x}`"': "backticks within double quotes",
    "cat <<'EOF'\n{x}\nEOF\n": "quoted delimiter",
    'cat <<"EOF"\n{x}\nEOF\n': "quoted delimiter",
    "cat <<EOF\n$(echo {x})\nEOF\n": "substitution within a heredoc",
    "cat <<EOF\n${{X:-{x}}}\nEOF\n": "substitution within a heredoc",
    "cat <<EOF\n`echo {x}`\nEOF\n": "substitution within a heredoc",
    "cat <<E{x}\nE\n": "heredoc delimiter",
    "echo 'unterminated {x}": "unterminated",
    "echo $'unterminated {x}": "unterminated",
}


@pytest.mark.parametrize("template", list(REFUSED))
def test_placeholders_where_no_quoting_is_safe_are_refused(template: str) -> None:
    problems = refusals(template)
    assert len(problems) == 1
    assert REFUSED[template] in str(problems[0])
    assert problems[0].offset == template.index("{x}")
    assert problems[0].hint
    with pytest.raises(TemplateError):
        render_command(template, {"x": "v"})


def test_refusal_hint_names_the_placeholder() -> None:
    [problem] = refusals("echo hi # note={note}")
    assert str(problem).startswith("placeholder {note} is inside a comment")
    assert "{{note}}" in (problem.hint or "")


@pytest.mark.parametrize("template", list(SHAPES))
def test_quotable_shapes_are_not_refused(template: str) -> None:
    assert refusals(SHAPES[template][0]) == []


# ---------------------------------------------------------------------------------------- the lexer
def contexts(text: str) -> list[str]:
    return [s.context if s.ok else "refused" for s in scan(text)]


@pytest.mark.parametrize("text,expected", [
    (f"a {MARK} b", [WORD]),
    (f'a "{MARK}" {MARK}', [DOUBLE, WORD]),
    (f"a '{MARK}' \"'{MARK}'\" $'{MARK}'", [SINGLE, DOUBLE, ANSI]),  # a ' inside "..." is plain text
    (f'a "$(b "{MARK}" {MARK})"', [DOUBLE, WORD]),  # $(...) starts afresh inside "..."
    (f"a $(case x in y) b {MARK};; esac) {MARK}", [WORD, WORD]),  # a case pattern's ) does not close $(
    (f"a $( (b) {MARK}) # {MARK}", [WORD, "refused"]),
    # `case` is a reserved word only as a command's first word: here the ) closes $( and "{x}" is quoted.
    (f'"$(echo case)" "{MARK}" $(if case a in (a) :;; esac; then :; fi) "{MARK}"', [DOUBLE, DOUBLE]),
    (f'$(:;case a in a) {MARK};; esac) "{MARK}" $(:&&[[ 1 -eq {MARK} ]])', [WORD, DOUBLE, "refused"]),
    (f"cat <<A; cat <<'B'\n{MARK}\nA\n{MARK}\nB\n{MARK}", [HEREDOC, "refused", WORD]),
    (f"cat <<-A\n\t{MARK}\n\tA\n{MARK}", [HEREDOC, WORD]),
    (f"cat <<A\n\"{MARK}\"\nA\n", [HEREDOC]),  # " is not special in a heredoc body
    (f"a#{MARK} #{MARK}\n{MARK}", [WORD, "refused", WORD]),  # # starts a comment only at a word start
    (f"a ${{X:-'{MARK}'{MARK}}} {MARK}", [SINGLE, WORD, WORD]),
    (f"a ${{#X}} {MARK}", [WORD]),
    (f"a $$ {MARK} $# {MARK}", [WORD, WORD]),
    (f"cat <<< {MARK}", [WORD]),
])
def test_lexer_contexts(text: str, expected: list[str]) -> None:
    assert contexts(text) == expected


def test_lexer_counts_backtick_levels() -> None:
    [site] = scan(f"a `b \\`c {MARK}\\``")
    assert site.ok and site.backticks == 2 and site.context == WORD


# ---------------------------------------------------------------------------------------- rendering
def test_double_quotes_escape_only_what_is_special_there() -> None:
    assert render_command('echo "n={x}"', {"x": 'a"b$c`d\\e\'f'}) == 'echo "n=a\\"b\\$c\\`d\\\\e\'f"'


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_ansi_c_quotes_keep_their_escapes_after_the_value(tmp_path: Path) -> None:
    template = "printf %s $'a\\t{x}\\tb'"
    for value in HOSTILE:
        out = run_in_shell(render_command(template, {"x": value}), BASH or "bash", tmp_path)
        assert out.decode() == f"a\t{value}\tb", value
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("shell", SHELLS)
def test_a_value_never_completes_an_assignment(shell: str, tmp_path: Path) -> None:
    # `{x}=1 cmd` with x=HOME would set HOME for cmd if the value went bare; quoted, it names a program.
    rendered = render_command('{x}=1 printf %s "$HOME" 2>/dev/null; {y}+=2 2>/dev/null; printf %s "$HOME"',
                              {"x": "HOME", "y": "HOME"})
    assert rendered.startswith("'HOME'=1 ") and "'HOME'+=2" in rendered
    done = subprocess.run([shell, "-c", 'eval "$1"', "sh", rendered], cwd=tmp_path, capture_output=True,
                          env={"PATH": os.environ["PATH"], "HOME": "/home/nobody"}, timeout=30)
    assert done.stdout == b"/home/nobody"


def test_heredoc_values_cannot_forge_the_delimiter() -> None:
    rendered = render_command("cat <<EOF\nE{x}OF\nEOF\n", {"x": ""})
    assert rendered == f"cat <<EOF\nE{LINE_GUARD}OF\nEOF\n"


def test_format_spec_and_inactive_values() -> None:
    assert render_command('p "{lr:.2e}" {y}', {"lr": 0.000123, "y": None}) == "p \"1.23e-04\" ''"
    assert render_command("p {b}", {"b": True}) == "p true"


@pytest.mark.parametrize("template,problem", [
    ("a {", "without its"), ("a }", "single '}'"), ("a {0}", "not a parameter name"),
    ("a {x!r}", "conversions"), ("a ${X:-{x}}", "nested braces"), ("a \0 {x}", "NUL"),
])
def test_bad_templates(template: str, problem: str) -> None:
    with pytest.raises(TemplateError, match=problem):
        parse_template(template)


def test_template_offsets() -> None:
    template = parse_template("ab {{c}} {x} {y:.2f}")
    assert [(p.field, p.spec, p.start, p.end) for p in template.fields] == [("x", "", 9, 12), ("y", ".2f", 13, 20)]
    assert template.shell_text == f"ab {{c}} {MARK} {MARK}"
    assert placeholders("a {x} {y:.3f} {{z}}") == [("x", ""), ("y", ".3f")]


@pytest.mark.parametrize("shell,ok", [
    ("bash", True), ("/usr/bin/bash", True), ("zsh", True), ("ksh93", True), ("/opt/my shell/bash", False),
    ("bash -e", False), ("../bash", False), ("fish", False), ("/usr/bin/fish", False), ("", False), ("/", False),
    (3, False), ("-bash", False),
])
def test_shell_values(shell: object, ok: bool) -> None:
    assert (shell_problem(shell) is None) == ok


# ---------------------------------------------------------------------------------------- robustness
PIECES = st.sampled_from(list("ab {}'\"`$()\\#<-\n\t;|&:=+?%!") + [
    "{x}", "{y:>3}", "$(", "${{", "}}", "{{", "<<EOF\n", "<<-EOF\n", "<<'EOF'\n", "\nEOF\n", "$((", "((", "$'",
    "case ", " esac", "`", "\\`"])


@given(st.lists(PIECES, max_size=40).map("".join))
@settings(max_examples=400, deadline=None)
def test_any_template_renders_or_is_refused_with_an_offset(text: str) -> None:
    try:
        template = parse_template(text)
    except TemplateError as exc:
        assert 0 <= exc.offset <= len(text)
        return
    assert len(template.sites) == len(template.fields)
    problems = refusals(text)
    assert all(text[p.offset] == "{" for p in problems)
    try:
        render_command(text, {"x": "v'\"$`\\\n}", "y": "z"})
    except TemplateError:
        assert problems
    else:
        assert not problems


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(TemplateError, match="nested too deeply"):
        parse_template("echo " + "$(" * 5000 + "{x}" + ")" * 5000)


@pytest.mark.parametrize("template,problem", [
    ('echo "${{X:-"a}}"}}" {x}', "dash and bash disagree"),
    ("echo ${{X/'a'/b}} {x}", "dash and bash disagree"),
    ("[[ 1 -eq {x} ]] && echo", "arithmetic comparison"),
    ("if [[ {x} -lt 3 ]]; then :; fi", "arithmetic comparison"),
    ("a[{x}]=1", "array subscript"),
    ("sh -c 'exit {x}'", "nested shell"),
    ("timeout 5 /bin/bash -ec \"echo {x}\" name", "nested shell"),
    ("sh -c -- 'echo '{x}", "nested shell"),
    ("eval echo {x}", "eval"),
    ("trap 'echo {x}' EXIT", "trap"),
    ("su -c 'id {x}' nobody", "nested shell"),
    ("v=$(eval \"echo {x}\")", "eval"),
    ("A=1 a[{x}]+=1 cmd", "array subscript"),
])
def test_bash_arithmetic_and_ambiguous_expansions_are_refused(template: str, problem: str) -> None:
    [refusal] = refusals(template)
    assert problem in str(refusal)


@pytest.mark.parametrize("template", ["[[ {x} == a ]] && echo", "a[0]={x}", "echo a[{x}]=1", "echo ${{X:-a}} {x}",
                                      "sh -c 'exit \"$1\"' sh {x}", "sh script.sh {x}", "echo eval {x}",
                                      "eval true; echo {x}", "sh -c 'echo $0' {x}"])
def test_bash_constructs_without_arithmetic_are_quoted(template: str) -> None:
    assert refusals(template) == []


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_double_brackets_string_comparison_is_safe_under_bash(tmp_path: Path) -> None:
    for value in HOSTILE:
        rendered = render_command('[[ {x} == "$V" ]] && printf yes', {"x": value}, shell="bash")
        out = subprocess.run(["/bin/sh", "-c", 'eval "$1"', "sh", rendered], cwd=tmp_path, capture_output=True,
                             env={"PATH": os.environ["PATH"], "V": value}, timeout=30)
        assert out.stdout == b"yes", (value, out.stderr)
        assert list(tmp_path.iterdir()) == []


# Pieces a random template is built from, to run: no `&`, `|` or bare `(`, so no random text can define and
# fork a function; no command name that exists, so only a value could create a file.
RUNNABLE_PIECES = st.sampled_from(list("ab {}'\"`$)\\#<-\n\t;:=+?%!") + [
    "{x}", "{x}", "{x}", "$(", "${{", "}}", "{{", "<<EOF\n", "<<-EOF\n", "<<'EOF'\n", "\nEOF\n", "$((", "$'",
    "case ", " in ", " esac", "`", "\\`", "[[ ", " ]]", " -eq ", "printf %s "])
ATTACKS = ["$(touch pwned1)", "`touch pwned2`", "'$(touch pwned3)'", '"$(touch pwned4)"', "\ntouch pwned5\n",
           "\nEOF\ntouch pwned6\n", "\\", "a'b\"c}", "${-+}", ";touch pwned7;", "\n\tEOF\n$(touch pwned8)\n"]


@given(st.lists(RUNNABLE_PIECES, max_size=30).map("".join), st.sampled_from(ATTACKS))
@settings(max_examples=250, deadline=None)
def test_no_accepted_template_lets_a_value_run(template: str, value: str) -> None:
    try:
        rendered = render_command(template, {"x": value})
    except TemplateError:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for shell in SHELLS:
            subprocess.run([shell, "-c", 'eval "$1"', "sh", rendered], cwd=tmp, capture_output=True,
                           stdin=subprocess.DEVNULL, env={"PATH": os.environ["PATH"]}, timeout=30)
            assert not [p for p in os.listdir(tmp) if p.startswith("pwned")], (template, value, rendered, shell)
