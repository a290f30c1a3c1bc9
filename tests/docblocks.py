"""The fenced code blocks of a Markdown document, as tests/e2e/test_docs.py runs them.

Pure: text in, blocks out (tested in tests/unit/test_docblocks.py). A document marks how a block is used
with one HTML comment on the line just above its fence (invisible when the Markdown is rendered):

- ```` ```sh ```` (or ``bash``, ``shell``) blocks are commands: they run, in order, and must exit 0;
- ``<!-- not run: WHY -->`` above one: illustrative only (placeholders, commands that need root);
- ``<!-- exits N -->`` above one: it is expected to fail, with exactly that exit status;
- ``<!-- file: PATH -->`` above a block of any language: the reader saves it as PATH (relative to the
  directory the previous commands left them in), so the test writes it there before the next block;
- any other block (``text`` for printed output, ``yaml``, ``python``...) is shown, never run. A ``text``
  block right below a command block (blank lines between them at most) is what those commands print:
  the test checks it against what they printed (see :func:`output_mismatches`).

Why comments rather than info-string flags (```` ```sh norun ````): renderers differ on what they accept
after the language, and a reader copying the block must not see test machinery.
"""
from __future__ import annotations

import dataclasses
import re

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_MARK = re.compile(r"^\s*<!--\s*(?P<body>.*?)\s*-->\s*$")
_EXITS = re.compile(r"^exits\s+(?P<code>\d+)$")
_FILE = re.compile(r"^file:\s*(?P<path>\S+)$")
_NOT_RUN = re.compile(r"^not run(?::\s*(?P<why>.*))?$")


class DocFormatError(ValueError):
    """The document's own markup is wrong (an unknown mark, an unclosed fence): named with its line."""


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block. ``line`` is the 1-based line of its first content line in the document."""

    document: str
    line: int
    language: str
    text: str
    run: bool                  # a shell block to execute
    expected_exit: int = 0
    file: str | None = None    # save the text under this path instead of running it
    why_not_run: str | None = None
    shown_output: str | None = None   # the ```text block right below a command block
    shown_line: int = 0               # its first content line

    def command_at(self, offset: int) -> str:
        """The block's line ``offset`` (1-based), for naming the command that failed."""
        lines = self.text.splitlines()
        return lines[offset - 1].strip() if 1 <= offset <= len(lines) else self.text.strip().splitlines()[0]


@dataclasses.dataclass(frozen=True)
class _Mark:
    line: int
    not_run: bool = False
    why: str | None = None
    exits: int | None = None
    file: str | None = None


def _parse_mark(body: str, document: str, line: int) -> _Mark | None:
    """A test mark, or None for an ordinary comment (only comments that look like marks must be right)."""
    if m := _NOT_RUN.match(body):
        return _Mark(line, not_run=True, why=m.group("why"))
    if m := _EXITS.match(body):
        return _Mark(line, exits=int(m.group("code")))
    if m := _FILE.match(body):
        return _Mark(line, file=m.group("path"))
    if re.match(r"^(not[ -]?run|exits?|file)\b", body, re.IGNORECASE):
        raise DocFormatError(f"{document}:{line}: unknown block mark <!-- {body} -->; use "
                             "<!-- not run: WHY -->, <!-- exits N --> or <!-- file: PATH -->")
    return None


def parse_blocks(markdown: str, document: str) -> list[Block]:
    """Every fenced block of ``markdown`` with what its mark says, in document order."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    pending: _Mark | None = None
    index = 0
    previous_end = 0  # index of the line after the last closing fence
    while index < len(lines):
        raw = lines[index]
        opening = _FENCE.match(raw)
        if not opening:
            if m := _MARK.match(raw):
                pending = _parse_mark(m.group("body"), document, index + 1) or pending
            elif raw.strip():
                pending = None  # a mark applies only to the fence right below it
            index += 1
            continue
        fence, indent = opening.group("fence"), len(opening.group("indent"))
        language = opening.group("info").strip().split(" ")[0].lower() if opening.group("info").strip() else ""
        body: list[str] = []
        index += 1
        start = index + 1
        while index < len(lines):
            closing = _FENCE.match(lines[index])
            if closing and closing.group("fence")[0] == fence[0] and len(closing.group("fence")) >= len(fence) \
                    and not closing.group("info").strip():
                break
            # Content indented like its fence: strip that indent, as CommonMark does.
            line_text = lines[index]
            body.append(line_text[min(indent, len(line_text) - len(line_text.lstrip(" "))):])
            index += 1
        else:
            raise DocFormatError(f"{document}:{start - 1}: the ``` fence opened here is never closed")
        index += 1
        text = "\n".join(body) + "\n"
        mark = pending or _Mark(0)
        pending = None
        previous = blocks[-1] if blocks else None
        if language == "text" and previous is not None and previous.run and previous.shown_output is None \
                and not any(line.strip() for line in lines[previous_end:start - 2]):
            blocks[-1] = dataclasses.replace(previous, shown_output=text, shown_line=start)
        previous_end = index
        if mark.file is not None:
            blocks.append(Block(document, start, language, text, run=False, file=mark.file))
            continue
        is_shell = language in SHELL_LANGUAGES
        if mark.exits is not None and not is_shell:
            raise DocFormatError(f"{document}:{mark.line}: <!-- exits {mark.exits} --> marks a ```{language} "
                                 "block; only sh/bash blocks run")
        blocks.append(Block(document, start, language, text, run=is_shell and not mark.not_run,
                            expected_exit=mark.exits or 0, why_not_run=mark.why if mark.not_run else None))
    return blocks


def steps(blocks: list[Block]) -> list[Block]:
    """What a test does with a document, in order: the blocks to run and the files to write."""
    return [b for b in blocks if b.run or b.file is not None]


# -- shown output against printed output ------------------------------------------------------------------
# What differs from run to run, or from the reader's machine to the test's, is normalised on both sides:
# values (numbers, with their unit letters left alone: 0.175s; words of hexadecimal digits: ids and
# commits), host key fingerprints, the dev cluster's node names (node1...) and runs of spaces. What is
# left is the wording, which must not drift. In a shown line, "..." stands for anything (an abridged
# line); a line that is only "..." stands for lines left out.
_VALUE = re.compile(r"[-+]?(?:\b\d+\.\d+(?:e[-+]?\d+)?|\b[0-9a-f]*\d[0-9a-f]*\b)")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/=]+")
_NODE = re.compile(r"\bnode\d+\b")


def normalise(line: str) -> str:
    """A printed or shown line with what varies between runs replaced by stand-ins."""
    line = _FINGERPRINT.sub("SHA256:<fp>", line)
    line = _NODE.sub("node<v>", line)
    line = _VALUE.sub("<v>", line)
    return " ".join(line.split())


def output_mismatches(shown: str, printed: str) -> list[str]:
    """The shown lines that match no printed line (in any order: parallel executions finish in any order)."""
    candidates = [normalise(line) for line in printed.splitlines()]
    missing = []
    for line in shown.splitlines():
        wanted = normalise(line)
        if not wanted or wanted == "...":
            continue
        pattern = re.compile(".*".join(re.escape(part.strip()) for part in wanted.split("...")))
        if not any(pattern.fullmatch(candidate) for candidate in candidates):
            missing.append(line)
    return missing
