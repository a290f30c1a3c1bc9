"""Rendering the campaign's command: every parameter value reaches the program byte for byte, never as code.

A command is a template: shell text with ``{name}`` placeholders (``{{``/``}}`` for literal braces). Each
placeholder's value is quoted for the context it stands in (shell_lexer tells which): single-quoted as an
unquoted word, backslash-escaped inside "..." or a heredoc body, quotes closed and reopened inside '...',
escaped once more per enclosing backtick. Where no quoting is safe (a comment, arithmetic, a quoted
heredoc, ...) the template is refused when the
manifest is checked, with the placeholder's position and a rewrite, so a hostile value never meets it.

The argv form (a list of words) is turned into a template whose literal text is fully quoted and whose
placeholders are unquoted words, so it goes through the same path and no shell syntax can appear in it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from .shell_lexer import ANSI, DOUBLE, HEREDOC, MARK, SINGLE, WORD, Site, scan


class TemplateError(ValueError):
    """A command template that cannot be rendered safely; ``offset`` is where in the command it is."""

    def __init__(self, message: str, offset: int = 0, hint: str | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.hint = hint


@dataclasses.dataclass(frozen=True)
class Placeholder:
    field: str
    spec: str
    start: int  # offset of "{" in the template
    end: int  # offset after "}"

    @property
    def text(self) -> str:
        return "{" + self.field + (":" + self.spec if self.spec else "") + "}"


@dataclasses.dataclass(frozen=True)
class Template:
    """A parsed command: shell text (MARK where each placeholder stands) and the placeholders in order."""

    source: str
    shell_text: str
    fields: tuple[Placeholder, ...]
    sites: tuple[Site, ...]


_BRACE = re.compile(r"[{}]")


@functools.lru_cache(maxsize=64)  # a run renders one template for each of thousands of executions
def parse_template(command: str) -> Template:
    """Split a command into shell text and placeholders; raises TemplateError on bad braces.

    Hand-written rather than string.Formatter so each placeholder keeps its offset (for file:line:col).
    """
    if MARK in command:
        raise TemplateError("the command contains a NUL character, which no shell can run", command.index(MARK))
    text: list[str] = []
    fields: list[Placeholder] = []
    i = 0
    while i < len(command):
        brace = _BRACE.search(command, i)
        if brace is None:
            text.append(command[i:])
            break
        if brace.start() > i:
            text.append(command[i:brace.start()])
            i = brace.start()
        c = command[i]
        if c == "{" and command.startswith("{{", i):
            text.append("{")
            i += 2
        elif c == "}" and command.startswith("}}", i):
            text.append("}")
            i += 2
        elif c == "}":
            raise TemplateError("a single '}' (write }} for a literal brace)", i)
        elif c == "{":
            close = command.find("}", i + 1)
            if close < 0:
                raise TemplateError("a '{' without its '}' (write {{ for a literal brace)", i)
            inner = command[i + 1:close]
            if "{" in inner:
                shell_like = i > 0 and command[i - 1] == "$"
                raise TemplateError(f"placeholder {{{inner}}}: nested braces are not supported", i,
                                    "braces the shell should see are doubled: write ${{VAR:-{x}}}" if shell_like
                                    else "write {{ and }} for literal braces")
            field, _, spec = inner.partition(":")
            if "!" in field:
                raise TemplateError(f"placeholder {{{inner}}}: conversions are not supported", i)
            if field == "" or not field.isidentifier():
                raise TemplateError(f"placeholder {{{inner}}} is not a parameter name "
                                    f"(write {{{{ and }}}} for literal braces)", i)
            fields.append(Placeholder(field, spec, i, close + 1))
            text.append(MARK)
            i = close + 1
    shell_text = "".join(text)
    try:
        sites = scan(shell_text)
    except RecursionError:  # thousands of nested $( or backticks: refuse rather than crash
        raise TemplateError("substitutions are nested too deeply to check", 0,
                            "use fewer nested $(...) or move the logic into a script") from None
    return Template(command, shell_text, tuple(fields), tuple(sites))


def placeholders(command: str) -> list[tuple[str, str]]:
    """(field name, format spec) of every ``{...}`` in the command; raises ValueError on bad braces."""
    return [(p.field, p.spec) for p in parse_template(command).fields]


def refusals(command: str) -> list[TemplateError]:
    """Every placeholder that stands where no quoting is safe, with its offset and the fix."""
    return _refusals(parse_template(command))


def _refusals(template: Template) -> list[TemplateError]:
    out = []
    for placeholder, site in zip(template.fields, template.sites):
        if not site.ok:
            out.append(TemplateError(f"placeholder {placeholder.text} {site.refused}", placeholder.start,
                                     (site.hint or "").replace("{x}", placeholder.text)))
    return out


def argv_template(words: Sequence[str]) -> str:
    """The template of an argv-form command: literal text fully quoted, each placeholder an unquoted word part.

    So ``[python, t.py, "--lr={lr}"]`` becomes ``python t.py '--lr='{lr}``: the shell sees only quoted (or
    plainly safe) text, and values render as quoted word parts: one argv word per element, whatever the value.
    """
    out = []
    for word in words:
        template = parse_template(word)
        pieces = []
        cursor = 0
        for placeholder in template.fields:
            literal = _unbrace(word[cursor:placeholder.start])
            if literal:
                pieces.append(_rebrace(quote_word(literal)))
            pieces.append(placeholder.text)
            cursor = placeholder.end
        literal = _unbrace(word[cursor:])
        if literal or not pieces:
            pieces.append(_rebrace(quote_word(literal)))
        out.append("".join(pieces))
    return " ".join(out)


# Words shlex.quote leaves bare that the shell would still read as syntax at a command's start.
RESERVED = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "case", "esac", "while", "until", "for",
                      "in", "function", "select", "time", "coproc"})


def quote_word(text: str) -> str:
    """One shell word that reads back as ``text`` wherever it stands, command position included.

    shlex.quote leaves [A-Za-z0-9@%+=:,./_-] bare, which is safe except for a reserved word (`if`), an
    assignment (`A=b`, which would set a variable instead of naming the program) and, inside bash's
    [[ ... ]], a word like `-n` that reads as an operator unless quoted: those are quoted too.
    """
    if text in RESERVED or "=" in text or text.startswith("-"):
        return _single_quoted(text)
    return shlex.quote(text)


def _single_quoted(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _unbrace(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def _rebrace(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _text(value: Any, spec: str) -> str:
    if spec:
        return format(value, spec)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_BACKTICK_SPECIAL = re.compile(r"([\\`$])")
_DOUBLE_SPECIAL = re.compile(r'([\\`$"])')
_HEREDOC_SPECIAL = re.compile(r"([\\`$])")
# Expands to nothing under every POSIX shell, even with `set -u` ($- is always set; `+` with an empty word).
# Put before a value in a heredoc body and after each of its newlines, it keeps every line the value
# touches from reading as the delimiter (even an empty value: E{x}OF), and keeps <<- from stripping the
# value's leading tabs: the shell compares and strips the raw lines, before it expands them.
LINE_GUARD = "${-+}"


def quote_for(site: Site, text: str) -> str:
    """``text`` written so that the shell reads it back exactly at ``site``.

    - an unquoted word: single quotes (quote_word), where nothing is special but the closing quote;
    - inside "...": backslash before $ ` " \\ (the only characters special there, POSIX 2.2.3); escaping
      keeps the word one double-quoted string, unlike closing and reopening the quotes around the value;
    - inside '...': close the quotes, the value as a quoted word, reopen: single quotes have no escapes,
      so a quote always closes them, and the pieces stay one word; inside $'...' the same, reopening with
      $' so the rest keeps its escapes;
    - a heredoc body: backslash before $ ` \\ (" is not special there), LINE_GUARD first and after each newline;
    - then one more layer of backslashes before $ ` \\ per enclosing backtick, which the shell removes when
      it reads the backtick's body.
    """
    if not site.ok:
        raise TemplateError(f"placeholder {site.refused}", hint=site.hint)
    if site.context == WORD:
        quoted = _single_quoted(text) if site.glued else quote_word(text)
    elif site.context == DOUBLE:
        quoted = _DOUBLE_SPECIAL.sub(r"\\\1", text)
    elif site.context == SINGLE:
        quoted = "'" + quote_word(text) + "'"
    elif site.context == ANSI:
        quoted = "'" + quote_word(text) + "$'"
    elif site.context == HEREDOC:
        quoted = LINE_GUARD + _HEREDOC_SPECIAL.sub(r"\\\1", text).replace("\n", "\n" + LINE_GUARD)
    else:  # pragma: no cover - the lexer makes no other context
        raise AssertionError(site.context)
    for _ in range(site.backticks):
        quoted = _BACKTICK_SPECIAL.sub(r"\\\1", quoted)
    return quoted


def render_command(command: str, values: Mapping[str, Any], shell: str | None = None) -> str:
    """The command line to eval: each placeholder replaced by its value quoted for where it stands.

    Inactive conditional parameters render as an empty string (an empty quoted word outside quotes), so
    the command stays well-formed. ``shell`` (a name or absolute path) runs the result under that shell
    instead of the wrapper's /bin/sh. Raises TemplateError for a placeholder no quoting can protect.
    """
    template = parse_template(command)
    refused = _refusals(template)
    if refused:
        raise refused[0]
    out = []
    cursor = 0
    for placeholder, site in zip(template.fields, template.sites):
        out.append(_unbrace(command[cursor:placeholder.start]))
        value = values.get(placeholder.field)
        out.append(quote_for(site, "" if value is None else _text(value, placeholder.spec)))
        cursor = placeholder.end
    out.append(_unbrace(command[cursor:]))
    script = "".join(out)
    return script if shell is None else under_shell(script, shell)


def under_shell(script: str, shell: str) -> str:
    """A command line for the wrapper's ``eval`` that runs ``script`` under ``shell``.

    Not ``exec``: the wrapper evals in its own process and writes the exit code from an EXIT trap, which
    exec would skip. ``--`` keeps a script starting with "-" from reading as an option; the shell's own name
    as $0 and no positional arguments, so $0, $# and "$@" read as in a script run by that shell.
    """
    name = shlex.quote(shell)
    return f"{name} -c -- {shlex.quote(script)} {name}"


# Shells whose quoting is not POSIX's: the single quotes and escapes written here would not hold there.
NOT_POSIX = frozenset({"fish", "csh", "tcsh", "nu", "nushell", "pwsh", "powershell", "xonsh", "elvish", "rc",
                       "es", "ion", "cmd", "cmd.exe"})
_SHELL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
_SHELL_PATH = re.compile(r"/[^\x00-\x20\x7f]*")


def shell_problem(shell: Any) -> tuple[str, str] | None:
    """(what is wrong, the fix) for a manifest's ``shell:`` value, or None when it is usable."""
    if not isinstance(shell, str) or not shell:
        return "must be a shell's name (bash) or absolute path (/bin/bash)", "write e.g. shell: bash"
    if not (_SHELL_NAME.fullmatch(shell) or _SHELL_PATH.fullmatch(shell)) or shell.endswith("/"):
        return (f"{shell!r} is neither a command name nor an absolute path",
                "write a name found on PATH (bash) or an absolute path without spaces (/usr/bin/bash)")
    if os.path.basename(shell).lower() in NOT_POSIX:
        return (f"{shell!r} is not a POSIX shell, so the quoting that keeps values from running as code "
                "would not hold in it", "use sh, bash, dash, ksh or zsh")
    return None
