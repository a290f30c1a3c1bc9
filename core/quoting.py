"""Rendering the campaign's command: every parameter value reaches the shell quoted, byte for byte."""
from __future__ import annotations

import shlex
import string
from collections.abc import Mapping
from typing import Any

_FORMATTER = string.Formatter()


def placeholders(command: str) -> list[tuple[str, str]]:
    """(field name, format spec) of every ``{...}`` in the command; raises ValueError on bad braces."""
    fields = []
    for _literal, field, spec, conversion in _FORMATTER.parse(command):
        if field is None:
            continue
        if field == "" or not field.isidentifier():
            raise ValueError(f"placeholder {{{field}}} is not a parameter name (write {{{{ and }}}} for literal braces)")
        if conversion:
            raise ValueError(f"placeholder {{{field}!{conversion}}}: conversions are not supported")
        fields.append((field, spec or ""))
    return fields


def _text(value: Any, spec: str) -> str:
    if spec:
        return format(value, spec)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_command(command: str, values: Mapping[str, Any]) -> str:
    """The command with each placeholder replaced by its shell-quoted value.

    Inactive conditional parameters render as an empty quoted string, so the command stays well-formed.
    """
    out = []
    for literal, field, spec, _conversion in _FORMATTER.parse(command):
        out.append(literal)
        if field is None:
            continue
        value = values.get(field)
        out.append(shlex.quote("" if value is None else _text(value, spec or "")))
    return "".join(out)
