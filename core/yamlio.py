"""The one place ruamel.yaml is used: bounded, located loading of the YAML Orchestra reads.

Why our own composer over ruamel's parser events: ruamel's loaders expand aliases without limit (a
529-byte "billion laughs" document took minutes and gigabytes), raise on the first duplicate key, recurse
per nesting level, and the round-trip loader that remembers positions runs at about 50 kB/s. Composing
from the C parser's events (libyaml through ruamel.yaml.clib) in one loop gives every limit a located
error, keeps one compact position per key and item, and reads megabytes per second.
"""
from __future__ import annotations

import dataclasses
import os
import re
import threading
from array import array
from typing import Any, Iterator

from ruamel.yaml import YAML
from ruamel.yaml import events as ev
from ruamel.yaml.error import YAMLError as _RuamelError
from ruamel.yaml.nodes import ScalarNode

# Every limit is a guard against a hostile or mistaken file, far above what a hand-written one needs.
MAX_ALIAS_NODES = 10_000  # nodes that alias references may add to a document, all aliases together
MAX_DEPTH = 100  # nested mappings and lists
MAX_BYTES = 2**20  # profile files are a dozen lines; manifests have their own limit (core/manifest.py)

_local = threading.local()
_TAG = "tag:yaml.org,2002:"
_STR, _MERGE = _TAG + "str", _TAG + "merge"
_CONSTRUCTED = {_TAG + t for t in ("null", "bool", "int", "float", "timestamp", "binary")}
# YAML 1.2's core schema words (ruamel's resolver for 1.2, the default), without a regex per scalar.
_WORDS: dict[str, Any] = {"": None, "~": None, "null": None, "Null": None, "NULL": None, "true": True, "True": True,
                          "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+\Z")  # decimal ints and floats are most numbers: built without ruamel
_FLOAT = re.compile(r"[-+]?(?:[0-9]+\.[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+)\Z")  # `.5e3` is text in 1.2
# The characters YAML allows in a stream (YAML 1.2, 5.1); the scanner's own error gives no line.
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class YamlError(Exception):
    """A document Orchestra cannot read: ``line`` and ``col`` are 1-based, ``message`` is one line."""

    def __init__(self, message: str, line: int, col: int, hint: str | None = None) -> None:
        super().__init__(f"{line}:{col}: {message}")
        self.message = message
        self.line = line
        self.col = col
        self.hint = hint


@dataclasses.dataclass(frozen=True)
class Duplicate:
    """A key given twice in one mapping: the first value is kept, and the caller says what it thinks."""

    path: tuple[Any, ...]
    key: Any
    first: tuple[int, int]
    again: tuple[int, int]


def _pack(mark: Any) -> int:
    return int(mark.line << 32 | mark.column)


def _unpack(packed: int) -> tuple[int, int]:
    return (packed >> 32) + 1, (packed & 0xFFFFFFFF) + 1


class Marks:
    """Where one mapping or list and its entries start: a packed int per entry keeps 300,000 items cheap."""

    __slots__ = ("start", "keys", "values", "children")

    def __init__(self, start: int, mapping: bool) -> None:
        self.start = start
        self.keys: dict[Any, int] | None = {} if mapping else None
        self.values: dict[Any, int] | array[int] = {} if mapping else array("q")
        self.children: dict[Any, Marks] = {}


@dataclasses.dataclass
class Document:
    """Plain data (dict, list, str, int, float, bool, None, dates) and where each part of it was written."""

    data: Any
    marks: Marks | None
    duplicates: list[Duplicate]
    start: tuple[int, int] = (1, 1)

    def _walk(self, path: list[Any] | tuple[Any, ...]) -> Iterator[tuple[Marks, Any]]:
        marks = self.marks
        for part in path:
            if marks is None:
                return
            yield marks, part
            marks = marks.children.get(part)

    def position(self, path: list[Any] | tuple[Any, ...]) -> tuple[int, int]:
        """1-based (line, col) of the value at ``path``, or of its nearest ancestor that was written."""
        best = _unpack(self.marks.start) if self.marks is not None else self.start
        for marks, part in self._walk(path):
            values = marks.values
            if isinstance(values, dict):
                if part not in values:
                    break
                best = _unpack(values[part])
            else:
                if not isinstance(part, int) or not -len(values) <= part < len(values):
                    break
                best = _unpack(values[part])
        return best

    def key_position(self, path: list[Any] | tuple[Any, ...], key: Any) -> tuple[int, int]:
        """Where ``key`` of the mapping at ``path`` was written; its mapping's position if it was not."""
        marks = self.marks
        for part in path:
            marks = marks.children.get(part) if marks is not None else None
        if marks is not None and marks.keys is not None and key in marks.keys:
            return _unpack(marks.keys[key])
        return self.position(path)


class _Frame:
    __slots__ = ("data", "marks", "size", "anchor", "key", "key_mark", "merges", "at", "start_mark")

    def __init__(self, data: Any, marks: Marks, anchor: str | None, at: Any, start_mark: Any) -> None:
        self.data = data
        self.marks = marks
        self.size = 1
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.key_mark = 0  # packed position of the pending key
        self.merges: list[tuple[dict[Any, Any], Marks]] = []
        self.at = at  # this collection's key or index in its parent, for Duplicate.path
        self.start_mark = start_mark


_NO_KEY = object()
_MERGE_KEY = object()


def _loader(text: str) -> tuple[Any, Any, Any]:
    """(parser, resolver, constructor) for ``text``: libyaml's C parser when ruamel.yaml.clib is there."""
    yaml = YAML(typ="safe", pure=False)
    constructor, parser = yaml.get_constructor_parser(text)
    resolver = parser if hasattr(parser, "resolve") else yaml.resolver
    return parser, resolver, constructor


def _first_chars(resolver: Any) -> frozenset[str]:
    chars = getattr(_local, "first_chars", None)
    if chars is None:
        table = getattr(resolver, "versioned_resolver", None)
        chars = frozenset(k for k in table if k) if isinstance(table, dict) else None
        _local.first_chars = chars
    return chars if chars is not None else frozenset(map(chr, range(0x80)))


def _error(message: str, mark: Any, hint: str | None = None) -> YamlError:
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return YamlError(message, line, col, hint)


def line_col(text: str, index: int) -> tuple[int, int]:
    """1-based (line, col) of the character at ``index``."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def decode(data: bytes) -> str:
    """UTF-8 text, or YamlError at the line and column of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[:exc.start]
        line_start = head.rfind(b"\n") + 1
        col = len(head[line_start:].decode("utf-8", errors="replace")) + 1
        raise YamlError(f"not UTF-8 text (byte 0x{data[exc.start]:02x} {exc.reason})", head.count(b"\n") + 1,
                        col, hint="save the file as UTF-8") from None


def read_text(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> str:
    """The file's text, refused before it is read whole when it is over ``limit`` bytes (OSError passes)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit / 2**10:g} KiB"
        raise YamlError(f"the file is over {size}, the most Orchestra reads here",
                        1, 1, hint="keep long value lists in a data file that the command reads")
    return decode(data)


def load_located(text: str | bytes, *, string_keys: bool = False) -> Document:
    """Compose one YAML document into plain data with positions; YamlError for anything unreadable.

    Limits: MAX_ALIAS_NODES nodes added by aliases, MAX_DEPTH levels of nesting, one document. A duplicate
    key keeps its first value and is listed in ``duplicates`` so the caller can report every one.
    ``string_keys``: keys become ``str(key)`` (what JSON Schema validates).
    """
    if isinstance(text, bytes):
        text = decode(text)
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        line, col = line_col(text, bad.start())
        raise YamlError(f"character U+{ord(bad.group()):04X} is not allowed in YAML", line, col,
                        hint="remove it, or write it as an escape inside double quotes")
    parser, resolver, constructor = _loader(text)
    try:
        return _compose(parser, resolver, constructor, string_keys)
    except _RuamelError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable YAML"])[0]
        raise _error(f"YAML syntax error: {problem}", mark,
                     "check indentation, colons and quotes around values with ':' or '#'") from None
    finally:
        try:
            parser.dispose()
        except Exception:  # pure-Python parsers may have nothing to dispose of
            pass


def _compose(parser: Any, resolver: Any, constructor: Any, string_keys: bool) -> Document:
    first_chars = _first_chars(resolver)
    get_event = parser.get_event
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, Marks | None, int]] = {}
    open_anchors: set[str] = set()
    duplicates: list[Duplicate] = []
    expanded = 0
    documents = 0
    root: list[Any] = []

    def scalar(event: Any) -> Any:
        value, tag = event.value, event.tag
        if tag is None or tag == "!":
            if tag == "!" or not event.implicit[0]:
                return value  # quoted or block scalars, and the non-specific tag, are text
            if value in _WORDS:
                return _WORDS[value]
            first = value[:1]
            if first not in first_chars or first in "tTfFnN~":  # only the words above start so
                return value
            if _INT.match(value) and len(value) <= 4000:  # longer: Python refuses int(str), see below
                return int(value)
            if _FLOAT.match(value):
                return float(value)
            tag = str(resolver.resolve(ScalarNode, value, event.implicit))
            if tag == _MERGE:
                return _MERGE_KEY
        if tag == _STR or tag == _TAG + "value":
            return value
        if tag not in _CONSTRUCTED:
            raise _error(f"tag {tag} is not supported (only YAML's standard scalar types are)",
                         event.start_mark, "remove the tag, or quote the value")
        try:
            constructed = constructor.construct_object(ScalarNode(tag, value, event.start_mark, event.end_mark,
                                                                  event.style))
            if type(constructed) is int and constructed.bit_length() > 13_000:
                # Python cannot print an int of more than 4300 digits (repr raises): refuse it here,
                # before any message tries to quote it.
                raise ValueError("more than 4000 digits")
            return constructed
        except Exception as exc:  # a constructor failing on any text (`!!int ''`: IndexError) is the text's fault
            problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
            shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
            raise _error(f"{shown} is not a valid {tag.rsplit(':', 1)[-1]}: {problem[:200]}", event.start_mark) from None

    def add(value: Any, mark: Any, marks: Marks | None, size: int) -> None:
        if not stack:
            root.append((value, marks, mark))
            return
        frame = stack[-1]
        frame.size += size
        if frame.marks.keys is None:  # a list
            values = frame.marks.values
            if marks is not None:
                frame.marks.children[len(frame.data)] = marks
            frame.data.append(value)
            values.append(mark.line << 32 | mark.column)  # type: ignore[union-attr]
            return
        if frame.key is _NO_KEY:
            if marks is not None:
                raise _error("a key must be a plain value (text or a number), not a mapping or a list", mark,
                             "write the key as text")
            if value is not _MERGE_KEY:
                if string_keys:
                    value = str(value)
                else:
                    try:
                        hash(value)
                    except TypeError:
                        raise _error("this key cannot be used as a key", mark, "write the key as text") from None
            frame.key, frame.key_mark = value, mark.line << 32 | mark.column
            return
        key, key_mark = frame.key, frame.key_mark
        frame.key = _NO_KEY
        if key is _MERGE_KEY:
            sources = [(value, marks)] if isinstance(value, dict) else \
                list(zip(value, (marks.children.get(i) for i in range(len(value))))) \
                if isinstance(value, list) and marks is not None else []
            if not sources or not all(isinstance(v, dict) and m is not None for v, m in sources):
                raise _error("a `<<` merge key needs a mapping or a list of mappings", mark)
            frame.merges.extend(sources)  # type: ignore[arg-type]
            return
        keys = frame.marks.keys
        if key in frame.data:
            path = tuple(f.at for f in stack[1:])
            duplicates.append(Duplicate(path, key, _unpack(keys[key]), _unpack(key_mark)))
            return
        frame.data[key] = value
        keys[key] = key_mark
        frame.marks.values[key] = mark.line << 32 | mark.column
        if marks is not None:
            frame.marks.children[key] = marks

    def where() -> Any:
        if not stack:
            return None
        frame = stack[-1]
        return len(frame.data) if frame.marks.keys is None else frame.key

    while True:
        event = get_event()
        kind = type(event)
        if kind is ev.ScalarEvent:
            value = scalar(event)
            if value is _MERGE_KEY and not (stack and stack[-1].marks.keys is not None and stack[-1].key is _NO_KEY):
                value = "<<"  # a merge key only means one where a key stands; elsewhere it is text
            if event.anchor is not None:
                anchors[event.anchor] = (value, None, 1)
            add(value, event.start_mark, None, 1)
        elif kind is ev.AliasEvent:
            name = event.anchor
            if name not in anchors:
                if name in open_anchors:
                    raise _error(f"alias *{name} refers to a mapping or list that contains it", event.start_mark)
                raise _error(f"alias *{name} has no anchor &{name} before it", event.start_mark)
            value, marks, size = anchors[name]
            expanded += size
            if expanded > MAX_ALIAS_NODES:
                raise _error(f"aliases expand the document past {MAX_ALIAS_NODES} nodes (at *{name}); Orchestra "
                             f"refuses bigger alias expansions", event.start_mark,
                             "write the repeated parts out, or alias smaller pieces")
            add(value, event.start_mark, marks, size)
        elif kind is ev.MappingStartEvent or kind is ev.SequenceStartEvent:
            mapping = kind is ev.MappingStartEvent
            tag = event.tag
            if tag is not None and tag != "!" and tag != _TAG + ("map" if mapping else "seq"):
                raise _error(f"tag {tag} is not supported here", event.start_mark, "remove the tag")
            if len(stack) >= MAX_DEPTH:
                raise _error(f"more than {MAX_DEPTH} levels of nesting", event.start_mark)
            if stack and stack[-1].marks.keys is not None and stack[-1].key is _NO_KEY:
                raise _error("a key must be a plain value (text or a number), not a mapping or a list",
                             event.start_mark, "write the key as text")
            if event.anchor is not None:
                open_anchors.add(event.anchor)
            stack.append(_Frame({} if mapping else [], Marks(_pack(event.start_mark), mapping), event.anchor,
                                where(), event.start_mark))
        elif kind is ev.MappingEndEvent or kind is ev.SequenceEndEvent:
            frame = stack.pop()
            for source, source_marks in frame.merges:  # explicit keys win, then earlier merges
                for key, value in source.items():
                    if key not in frame.data:
                        frame.data[key] = value
                        frame.marks.keys[key] = source_marks.keys[key]  # type: ignore[index]
                        frame.marks.values[key] = source_marks.values[key]
                        if key in source_marks.children:
                            frame.marks.children[key] = source_marks.children[key]
            if frame.anchor is not None:
                open_anchors.discard(frame.anchor)
                anchors[frame.anchor] = (frame.data, frame.marks, frame.size)
            add(frame.data, frame.start_mark, frame.marks, frame.size)
        elif kind is ev.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _error("a second YAML document (`---`): the file must hold one", event.start_mark,
                             "remove the `---` line and what follows, or merge the documents")
            anchors.clear()
        elif kind is ev.StreamEndEvent:
            break
    if not root:
        return Document(None, None, duplicates)
    value, marks, mark = root[0]
    return Document(value, marks, duplicates, _unpack(_pack(mark)))


def load_plain(text: str | bytes) -> Any:
    """Plain Python data (dict, list, scalars); YamlError for bad YAML and for a key given twice."""
    document = load_located(text)
    if document.duplicates:
        raise duplicate_error(document.duplicates[0])
    return document.data


def duplicate_error(dup: Duplicate) -> YamlError:
    key = repr(dup.key) if len(repr(dup.key)) <= 60 else repr(dup.key)[:57] + "..."
    return YamlError(f"key {key} appears twice, at line {dup.first[0]} and line {dup.again[0]}",
                     *dup.again, hint="keep one of them")


def load_roundtrip(text: str) -> Any:
    """CommentedMap/CommentedSeq that keep comments and layout, for a tool that rewrites a file.

    The round-trip loader has no limits of its own and reads about 50 kB/s: load_located() vets the text
    first, and is what to use for positions."""
    load_located(text)
    yaml = YAML(typ="rt")
    return yaml.load(text)
