"""The report's package lists (``packages.js``): pure render and pure parse.

Only the compare view needs them, so they ship in a file of their own that only compare.html loads (the
table and the overview never pay for them). Executions name their lists by blob id (``packages_blob``,
``conda_blob`` in data.js), and the file maps each distinct blob id to ``{name: version}`` once: a campaign
has one list per node and environment, not one per execution. Escaped as data.js is (no ``</script>``).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from orchestra.errors import UsageError

from .datafile import dumps_script_safe

PACKAGES_FILE = "packages.js"
GLOBAL_NAME = "ORCHESTRA_PACKAGES"
FORMAT = "orchestra-packages/1"
_ASSIGN = f"window.{GLOBAL_NAME} = "
_PREFIX = f"/* Orchestra report package lists ({FORMAT}); generated, do not edit. */\n{_ASSIGN}"


def packages_payload(packages: Mapping[str, Mapping[str, str]], left_out: int = 0) -> dict[str, Any]:
    return {"format": FORMAT, "lists": {str(blob): {str(k): str(v) for k, v in sorted(names.items())}
                                        for blob, names in sorted(packages.items())},
            "left_out": int(left_out)}


def render_packages_js(packages: Mapping[str, Mapping[str, str]], left_out: int = 0) -> str:
    return _PREFIX + dumps_script_safe(packages_payload(packages, left_out)) + ";\n"


def parse_packages_js(text: str) -> tuple[dict[str, dict[str, str]], int]:
    """(lists by blob id, blobs left out) from what ``render_packages_js`` wrote; UsageError otherwise."""
    start = text.find(_ASSIGN)
    if start < 0:
        raise UsageError("not an Orchestra report package file", hint=f"expected {PACKAGES_FILE} from `expegit report`")
    body = text[start + len(_ASSIGN):].rstrip().removesuffix(";")
    try:
        payload = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UsageError(f"report package lists are not valid JSON: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"report package lists are not in format {FORMAT}")
    return payload.get("lists") or {}, int(payload.get("left_out") or 0)


__all__ = ["PACKAGES_FILE", "render_packages_js", "parse_packages_js", "packages_payload"]
