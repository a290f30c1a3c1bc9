"""Where each placeholder stands in a POSIX shell command: the quoting context the shell will read it in.

A value can be quoted only for the context it lands in: single quotes (shlex.quote) are right for an unquoted
word and wrong inside "...", where they stay literal and `$(...)` still runs. This lexer reads the command
text the way sh and bash do, just far enough to tell, for every placeholder, whether it is an unquoted word,
inside "..." or '...', in a heredoc body, inside backticks (how deep), or somewhere no quoting can protect
a value (comments, arithmetic, quoted heredocs, ...). It is a pure function of the text, tested alone.

Hints are written in the template's syntax (braces the shell sees are doubled) with {x} for the placeholder.
Placeholders are marked by NUL in the text it reads (a shell command cannot contain NUL, so the mark cannot
collide with the user's text). The lexer follows the syntax of bash as a superset of POSIX sh: where the
two read a construct differently (``((...))``, quotes inside ``"${...}"``), placeholders there are refused
rather than quoted for one shell and misread by the other. One pass, linear in the text: a manifest's
command may be large, and `expegit check` must stay fast.
"""
from __future__ import annotations

import dataclasses
import re

MARK = "\0"

# Contexts where the value is quoted (see quoting.py for how each is quoted).
WORD = "word"  # an unquoted word, also inside $(...) and unquoted ${VAR:-...}
DOUBLE = "double"  # inside "..."
HEREDOC = "heredoc"  # the body of a heredoc with an unquoted delimiter
SINGLE = "single"  # inside '...'
ANSI = "ansi"  # inside bash's $'...'

_BLANK = " \t"
_META = " \t\n;&|()<>"  # characters that end an unquoted word
_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
_NAME = _NAME_START + "0123456789"
_SPECIAL_PARAMS = "@*#?-$!0123456789"
# The characters each reader must stop at; runs of others are skipped in one regex step, which keeps a
# large command's check fast (a character loop in Python costs microseconds per character).
_SCRIPT_SPECIAL = re.compile(r"[\0\\'\"`$#<>()\n;&| \t]")
_DOUBLE_SPECIAL = re.compile(r"[\0\\\"`$]")
_WORD_SPECIAL = re.compile(r"[\0\\'\"`$}]")
_HEREDOC_SPECIAL = re.compile(r"[\0\\`$]")


def _next(text: str, special: re.Pattern[str], i: int) -> int:
    found = special.search(text, i)
    return len(text) if found is None else found.start()


# An assignment word, NAME=... or NAME[subscript]=... (group 1: the subscript part, bash arrays).
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^\]]*\])?\+?=")
# A program that takes a script after -c (sh -c, bash -ec, ...): placeholders in that script would be code.
_SHELL_NAMES = frozenset({"sh", "bash", "dash", "zsh", "ksh", "ksh93", "mksh", "ash", "yash", "posh", "su"})
_DASH_C = re.compile(r"-[A-Za-z]*c[A-Za-z]*")
# Reserved words after which the next word is again the first word of a command.
_LEADING_KEYWORDS = frozenset({"then", "do", "else", "elif", "if", "while", "until", "!", "{", "time"})


@dataclasses.dataclass(frozen=True)
class Site:
    """The context of one placeholder: how to quote its value, or why it cannot be."""

    context: str  # WORD, DOUBLE, HEREDOC, SINGLE or ANSI when quotable; "refused" otherwise
    backticks: int = 0  # enclosing `...` levels, each one more layer of backslash-escaping
    # WORD: the template goes on with = + or [ right after it, so a bare value could complete an assignment
    # ({x}=1 with x=PATH): its value is then always quoted, and a quoted name is never an assignment.
    glued: bool = False
    refused: str | None = None  # why no quoting is safe there (a phrase that follows "placeholder {x} ")
    hint: str | None = None  # how to rewrite the command

    @property
    def ok(self) -> bool:
        return self.refused is None


@dataclasses.dataclass(frozen=True)
class _Refusal:
    reason: str
    hint: str


_COMMENT = _Refusal("is inside a comment: a newline in its value would end the comment and run the rest",
                    "delete it from the comment, or write {{x}} for literal braces")
_ARITH = _Refusal("is inside arithmetic ($((...)) or ((...))), where the shell evaluates the value as code",
                  "pass it as a word to the program instead, or use the argv form")
_BACKSLASH = _Refusal("follows a backslash, which would escape the quote Orchestra puts around the value",
                      "remove the backslash: the value is quoted for you")
_DOLLAR = _Refusal("follows a bare $, which would turn the quoted value into $'...' or a variable name",
                   "quote the $ ('$'{x}) or put a space between them")
_HEREDOC_QUOTED = _Refusal("is in the body of a heredoc with a quoted delimiter (<<'EOF'), which the shell "
                           "copies literally: nothing can stop a value from forging the end line",
                           "use an unquoted delimiter (<<EOF): Orchestra then escapes the value for the body")
_HEREDOC_NESTED = _Refusal("is inside a substitution within a heredoc body, where a newline in the value could "
                           "end the heredoc early", "compute it before the heredoc (v=$(cmd {x})) and write "
                           "$v in the body")
_HEREDOC_DELIM = _Refusal("is part of a heredoc delimiter, which must be a fixed word",
                          "write the delimiter literally (<<EOF)")
_PARAM_NAME = _Refusal("is part of the name in ${...}", "a placeholder cannot name a variable; write ${{NAME:-{x}}}")
_PARAM_OP = _Refusal("is in a ${...} form other than :- - := = :+ + :? ? # ## % %%, whose word the shell may "
                     "evaluate", "use one of those forms unquoted, e.g. ${{VAR:-{x}}}, or move it out")
_PARAM_DOUBLE = _Refusal("is inside \"${...}\": bash and dash read quotes in that word differently, so no "
                         "quoting is right for both", "write the expansion unquoted (${{VAR:-{x}}}), where the "
                         "value is quoted for you, or move the placeholder out of it")
_BACKTICK_DOUBLE = _Refusal("is inside backticks within double quotes, where shells disagree on escapes",
                            "use $(...) instead of backticks")
_AFTER_AMBIGUOUS = _Refusal("follows a ${...} with quotes or substitutions in its word, where dash and bash "
                            "disagree on where it ends, so the quoting context after it is uncertain",
                            "simplify that ${...} (no quotes inside), or put the placeholder before it")
_TEST_ARITH = _Refusal("is in a [[ ... ]] with an arithmetic comparison (-eq, -lt, ...), whose operands bash "
                       "evaluates as code", "compare with [ ... ] (test), or use the argv form")
_SUBSCRIPT = _Refusal("is an array subscript in an assignment, which bash evaluates as arithmetic code",
                      "pass it as a value (a[0]={x}), not as a subscript")
_NESTED_SHELL = _Refusal("is in the script of a nested shell (sh -c '...'), which runs the value as code",
                         "pass it to the script as an argument: sh -c 'exit \"$1\"' sh {x}")
_EVAL = _Refusal("is an argument of eval or trap, which run it as code",
                 "run the command directly, or have the handler read the value from a variable")
_UNTERMINATED = _Refusal("follows an unterminated quote or substitution", "close the quote or the substitution")


def scan(text: str) -> list[Site]:
    """The Site of every MARK in ``text``, in order of position."""
    sink: dict[int, Site] = {}
    _Lexer(text, list(range(len(text))), sink, 0, None).run()
    return [sink.get(i, Site("refused", refused=_UNTERMINATED.reason, hint=_UNTERMINATED.hint))
            for i, ch in enumerate(text) if ch == MARK]


class _Lexer:
    """Reads one text (the command, or the unescaped body of a backtick substitution).

    ``origin`` maps each index of this text back to the command's index, so sites found in a backtick body
    are reported where the placeholder stands in the command. ``forced`` refuses every placeholder found
    (a context where none is safe, like a substitution in a heredoc body), while still skipping the syntax.
    """

    def __init__(self, text: str, origin: list[int], sink: dict[int, Site], backticks: int,
                 forced: _Refusal | None) -> None:
        self.t = text
        self.origin = origin
        self.sink = sink
        self.backticks = backticks
        self.forced = forced
        self.pending: list[tuple[str, bool, bool]] = []  # heredocs waiting for the next newline
        self.poisoned = False  # every placeholder from some point on is already refused

    # ------------------------------------------------------------------ recording
    def site(self, i: int, context: str) -> None:
        if self.forced is not None:
            self.refuse(i, self.forced)
            return
        known = self.sink.get(self.origin[i])
        if known is not None and not known.ok:
            return  # refused up front (a [[ ]] comparison, text after an ambiguous ${...}): refusal wins
        glued = context == WORD and self.t[i + 1:i + 2] in ("=", "+", "[")
        self.sink[self.origin[i]] = Site(context, self.backticks, glued=glued)

    def refuse(self, i: int, why: _Refusal) -> None:
        self.sink[self.origin[i]] = Site("refused", self.backticks, refused=why.reason, hint=why.hint)

    def refuse_span(self, start: int, end: int, why: _Refusal) -> None:
        for k in range(start, min(end, len(self.t))):
            if self.t[k] == MARK:
                self.refuse(k, self.forced or why)

    def single(self, i: int) -> int:
        """Inside '...' from ``i`` (nothing is special but the closing quote); returns the index after it."""
        end = self.t.find("'", i)
        if end < 0:
            self.refuse_span(i, len(self.t), _UNTERMINATED)
            return len(self.t)
        for k in range(i, end):
            if self.t[k] == MARK:
                self.site(k, SINGLE)
        return end + 1

    def at_word_start(self, i: int) -> bool:
        return i == 0 or self.t[i - 1] in _META

    # ------------------------------------------------------------------ top level
    def run(self) -> None:
        self.script(0, None)

    def script(self, i: int, closer: str | None) -> int:
        """Commands from ``i`` to the end, or to the ``)`` closing a $( ... ); returns the index after it."""
        t = self.t
        depth = 0  # unquoted ( ... ) inside, so their ) does not close $(
        cases = 0  # open `case`: its patterns end with a bare )
        command_position = True  # where a reserved word (case, esac) is one: the first word of a command
        code = _CodeWords(self)
        while i < len(t):
            c = t[i]
            if c in _BLANK:
                code.word_ends(i)
            if c in ";&|()\n":
                code.command_ends(i)
                command_position = True
            elif c not in _BLANK and self.at_word_start(i):
                word = self.raw_word(i)
                code.word_starts(i, word, command_position)
                if command_position and word == "case":
                    cases += 1
                elif command_position and word == "esac" and cases:
                    cases -= 1
                elif command_position and word == "[[":
                    self.double_brackets(i)
                assignment = _ASSIGNMENT.match(word)
                if command_position and assignment and assignment.group(1):
                    self.refuse_span(i, i + assignment.end(1), _SUBSCRIPT)
                command_position = word in _LEADING_KEYWORDS or (command_position and assignment is not None)
            if c == MARK:
                self.word_mark(i, WORD)
                i += 1
            elif c == "\\":
                if i + 1 < len(t) and t[i + 1] == MARK:
                    self.refuse(i + 1, _BACKSLASH)
                i += 2
            elif c == "'":
                i = self.single(i + 1)
            elif c == '"':
                i = self.double(i + 1)
            elif c == "`":
                i = self.backtick(i + 1, in_double=False)
            elif c == "$":
                i = self.dollar(i, quoted=False)
            elif c == "#" and self.at_word_start(i):
                end = t.find("\n", i)
                end = len(t) if end < 0 else end
                self.refuse_span(i, end, _COMMENT)
                i = end
            elif c == "<" and t.startswith("<<", i) and not t.startswith("<<<", i):
                i = self.heredoc_operator(i + 2)
            elif c == "<" and t.startswith("<<<", i):
                i += 3
            elif c == "(" and t.startswith("((", i) and self.at_word_start(i):
                i = self.arithmetic(i + 2)
            elif c == "(":
                depth += 1
                i += 1
            elif c == ")":
                if depth:
                    depth -= 1
                elif cases:
                    pass  # a case pattern's )
                elif closer == ")":
                    code.command_ends(i)
                    return i + 1
                i += 1
            elif c == "\n":
                i = self.heredoc_bodies(i + 1) if self.pending else i + 1
            else:
                # A blank or operator ends a word: the next character may start one (#, case, [[).
                i = i + 1 if c in _META else _next(t, _SCRIPT_SPECIAL, i + 1)  # plain text in one step
        code.command_ends(i)
        return i

    def double_brackets(self, i: int) -> None:
        """bash's [[ ... ]] at ``i``: with an arithmetic comparison, every placeholder in it is refused."""
        words = []
        j = i + 2
        while j < len(self.t):
            while j < len(self.t) and self.t[j] in _BLANK:
                j += 1
            word = self.raw_word(j)
            if word == "]]" or self.t[j:j + 1] in ("\n", ";", "&", "|") and word == "":
                break
            words.append(word)
            j += max(1, len(word))
        if any(w in ("-eq", "-ne", "-lt", "-le", "-gt", "-ge") for w in words):
            self.refuse_span(i, j, _TEST_ARITH)

    def raw_word(self, i: int) -> str:
        """The unquoted characters from ``i`` to the next metacharacter: enough to spot a reserved word."""
        end = i
        while end < len(self.t) and self.t[end] not in _META:
            end += 1
        return self.t[i:end]

    def word_mark(self, i: int, context: str) -> None:
        if i > 0 and self.t[i - 1] == "$" and not (i > 1 and self.t[i - 2] == "\\"):
            self.refuse(i, _DOLLAR)
        else:
            self.site(i, context)

    # ------------------------------------------------------------------ quotes and substitutions
    def double(self, i: int) -> int:
        """Inside "..." from ``i``; returns the index after the closing quote."""
        t = self.t
        while i < len(t):
            c = t[i]
            if c == '"':
                return i + 1
            if c == MARK:
                self.word_mark(i, DOUBLE)
                i += 1
            elif c == "\\":
                if i + 1 < len(t) and t[i + 1] == MARK:
                    self.refuse(i + 1, _BACKSLASH)
                i += 2
            elif c == "`":
                i = self.backtick(i + 1, in_double=True)
            elif c == "$":
                i = self.dollar(i, quoted=True)
            else:
                i = _next(t, _DOUBLE_SPECIAL, i + 1)  # past plain text in one step
        return i

    def dollar(self, i: int, *, quoted: bool) -> int:
        """A $ at ``i``: the expansion it starts; returns the index after it."""
        t = self.t
        nxt = t[i + 1] if i + 1 < len(t) else ""
        if t.startswith("$((", i):
            return self.arithmetic(i + 3)
        if nxt == "(":
            return self.script(i + 2, ")")
        if nxt == "{":
            return self.parameter(i + 2, quoted=quoted)
        if nxt == "'" and not quoted:
            j = i + 2
            while j < len(t) and t[j] != "'":
                if t[j] == MARK:
                    self.site(j, ANSI)
                elif t[j] == "\\":
                    if j + 1 < len(t) and t[j + 1] == MARK:
                        self.refuse(j + 1, _BACKSLASH)
                    j += 1
                j += 1
            if j >= len(t):
                self.refuse_span(i + 2, j, _UNTERMINATED)
            return j + 1
        if nxt == '"' and not quoted:
            return self.double(i + 2)
        return i + 1  # $NAME, $1, $?: the name is scanned as ordinary text; a MARK after $ is refused there

    def arithmetic(self, i: int) -> int:
        """Inside $(( or (( from ``i``: to the )) that closes it."""
        t = self.t
        depth = 0
        start = i
        while i < len(t):
            if t[i] == "(":
                depth += 1
            elif t[i] == ")":
                if depth == 0 and t.startswith("))", i):
                    self.refuse_span(start, i, _ARITH)
                    return i + 2
                depth = max(0, depth - 1)
            i += 1
        self.refuse_span(start, i, _ARITH)
        return i

    def parameter(self, i: int, *, quoted: bool) -> int:
        """Inside ${ from ``i``: name, operator, word; returns the index after the closing }."""
        t = self.t
        start = i
        if i < len(t) and t[i] == "#" and i + 1 < len(t) and t[i + 1] not in "}:-=+?%":
            i += 1  # ${#NAME}: length
        if i < len(t) and t[i] in _NAME_START:
            while i < len(t) and t[i] in _NAME:
                i += 1
        elif i < len(t) and t[i] in _SPECIAL_PARAMS:
            i += 1
        if i < len(t) and t[i] == MARK or any(t[k] == MARK for k in range(start, i)):
            end = self.skip_parameter(i)
            self.refuse_span(start, end, _PARAM_NAME)
            return end
        op_start = i
        for op in (":-", ":=", ":+", ":?", "##", "%%", "-", "=", "+", "?", "#", "%"):
            if t.startswith(op, i):
                i += len(op)
                break
        else:
            if i < len(t) and t[i] == "}":
                return i + 1
            end = self.skip_parameter(i)
            self.refuse_span(op_start, end, _PARAM_OP)
            return end
        if quoted:
            end = self.skip_parameter(i)
            self.refuse_span(i, end, _PARAM_DOUBLE)
            return end
        return self.parameter_word(i)

    def parameter_word(self, i: int) -> int:
        """The word of an unquoted ${NAME:-word}: quoting works in it as in a word, and it ends at a bare }."""
        t = self.t
        while i < len(t):
            c = t[i]
            if c == "}":
                return i + 1
            if c == MARK:
                self.word_mark(i, WORD)
                i += 1
            elif c == "\\":
                if i + 1 < len(t) and t[i + 1] == MARK:
                    self.refuse(i + 1, _BACKSLASH)
                i += 2
            elif c == "'":
                i = self.single(i + 1)
            elif c == '"':
                i = self.double(i + 1)
            elif c == "`":
                i = self.backtick(i + 1, in_double=False)
            elif c == "$":
                i = self.dollar(i, quoted=False)
            else:
                i = _next(t, _WORD_SPECIAL, i + 1)  # past plain text in one step
        return i

    def skip_parameter(self, i: int) -> int:
        """Past the } that closes a ${ whose word is not read (placeholders in it are refused)."""
        t = self.t
        depth = 0
        tricky = False
        while i < len(t):
            c = t[i]
            if c == "\\":
                i += 2
                continue
            if c in "'\"`" or t.startswith("$(", i):
                tricky = True  # where the } is depends on the shell: bash reads quotes here, dash does not
            if c == "'":
                end = t.find("'", i + 1)
                i = len(t) if end < 0 else end + 1
                continue
            if t.startswith("${", i):
                depth += 1
                i += 2
                continue
            if c == "}":
                if depth == 0:
                    break
                depth -= 1
            i += 1
        end = min(i + 1, len(t))
        if tricky and not self.poisoned:
            self.refuse_span(end, len(t), _AFTER_AMBIGUOUS)
            self.poisoned = True
        return end

    def backtick(self, i: int, *, in_double: bool) -> int:
        """Inside `...` from ``i``: the body, unescaped one level, is a script of its own."""
        t = self.t
        body: list[str] = []
        origin: list[int] = []
        escapes = "$`\\" + ('"' if in_double else "")
        while i < len(t) and t[i] != "`":
            if t[i] == "\\" and i + 1 < len(t) and t[i + 1] in escapes:
                body.append(t[i + 1])
                origin.append(self.origin[i + 1])
                i += 2
                continue
            body.append(t[i])
            origin.append(self.origin[i])
            i += 1
        forced = self.forced or (_BACKTICK_DOUBLE if in_double else None)
        inner = _Lexer("".join(body), origin, self.sink, self.backticks + 1, forced)
        inner.run()
        return i + 1

    # ------------------------------------------------------------------ heredocs
    def heredoc_operator(self, i: int) -> int:
        """After << (or <<-): read the delimiter word; its body starts after the next newline."""
        t = self.t
        strip = i < len(t) and t[i] == "-"
        i += strip
        while i < len(t) and t[i] in _BLANK:
            i += 1
        start = i
        word: list[str] = []
        quoted = False
        while i < len(t) and t[i] not in _META:
            c = t[i]
            if c in "'\"":
                end = t.find(c, i + 1)
                end = len(t) if end < 0 else end
                word.append(t[i + 1:end])
                quoted = True
                i = end + 1
            elif c == "\\":
                word.append(t[i + 1:i + 2])
                quoted = True
                i += 2
            else:
                word.append(c)
                i += 1
        self.refuse_span(start, i, _HEREDOC_DELIM)
        self.pending.append(("".join(word), quoted, strip))
        return i

    def heredoc_bodies(self, i: int) -> int:
        """The bodies of the heredocs opened on the line that just ended, from ``i``; returns their end."""
        t = self.t
        pending, self.pending = self.pending, []
        for delimiter, quoted, strip in pending:
            while i < len(t):
                end = t.find("\n", i)
                end = len(t) if end < 0 else end
                # In an unquoted body, backslash-newline joins lines before the shell compares them with the
                # delimiter (dash and bash alike): `a\` then `EOF` is the line `aEOF`, and the body goes on.
                while not quoted and end < len(t) and _odd_backslashes(t, i, end):
                    nxt = t.find("\n", end + 1)
                    end = len(t) if nxt < 0 else nxt
                line = t[i:end] if quoted else t[i:end].replace("\\\n", "")
                if (line.lstrip("\t") if strip else line) == delimiter:
                    i = end + 1
                    break
                if quoted:
                    self.refuse_span(i, end, _HEREDOC_QUOTED)
                else:
                    self.heredoc_line(i, end)
                i = end + 1
        return i

    def heredoc_line(self, i: int, end: int) -> None:
        """One line of an unquoted heredoc body: like "..." except that " is not special."""
        t = self.t
        while i < end:
            c = t[i]
            if c == MARK:
                if i > 0 and t[i - 1] == "$" and not (i > 1 and t[i - 2] == "\\"):
                    self.refuse(i, _DOLLAR)
                else:
                    self.site(i, HEREDOC)
                i += 1
            elif c == "\\":
                if i + 1 < end and t[i + 1] == MARK:
                    self.refuse(i + 1, _BACKSLASH)
                i += 2
            elif c == "$" and i + 1 < end and t[i + 1] in "({":
                # A substitution may span lines, but the shell ends the heredoc on a line equal to the
                # delimiter first; what it contains is read with placeholders refused.
                sub = _Lexer(t[i:end], self.origin[i:end], self.sink, self.backticks, _HEREDOC_NESTED)
                i += sub.dollar(0, quoted=True)
            elif c == "`":
                close = t.find("`", i + 1, end)
                close = end if close < 0 else close
                self.refuse_span(i, close, _HEREDOC_NESTED)
                i = close + 1
            else:
                i = _next(t, _HEREDOC_SPECIAL, i + 1)  # past plain text in one step


class _CodeWords:
    """Words of a simple command run as shell code: the script of `sh -c` (or su -c), eval's and trap's.

    Quoting makes a value one exact argument, but these programs then parse that argument as a script, so
    a placeholder there would be code again (`sh -c 'exit {x}'` with x = `0; rm -rf ~`). Refused, with the
    fix that keeps the value data: pass it as an argument of the script, `sh -c 'exit "$1"' sh {x}`.
    """

    def __init__(self, lexer: _Lexer) -> None:
        self.lexer = lexer
        self.shell = False  # a shell's name was a word of this command
        self.dash_c = False  # ... and then its -c option: the next non-option word is the script
        self.script_start = -1
        self.eval_start = -1

    def word_starts(self, i: int, word: str, command_position: bool) -> None:
        if self.dash_c and not word.startswith("-"):
            self.script_start, self.dash_c, self.shell = i, False, False
        elif self.shell and _DASH_C.fullmatch(word):
            self.dash_c = True
        elif word.rsplit("/", 1)[-1] in _SHELL_NAMES:
            self.shell = True
        elif command_position and word in ("eval", "trap") and self.eval_start < 0:
            self.eval_start = i

    def word_ends(self, i: int) -> None:
        if self.script_start >= 0:
            self.lexer.refuse_span(self.script_start, i, _NESTED_SHELL)
            self.script_start = -1

    def command_ends(self, i: int) -> None:
        self.word_ends(i)
        if self.eval_start >= 0:
            self.lexer.refuse_span(self.eval_start, i, _EVAL)
        self.eval_start, self.shell, self.dash_c = -1, False, False


def _odd_backslashes(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] ends with an odd run of backslashes (the last one escapes the newline)."""
    count = 0
    while end - count - 1 >= start and text[end - count - 1] == "\\":
        count += 1
    return count % 2 == 1
