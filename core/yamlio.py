"""The one place ruamel.yaml is used: plain (fast, safe) loading and round-trip loading with positions."""
from __future__ import annotations

import threading
from typing import Any

from ruamel.yaml import YAML

_local = threading.local()


def _safe() -> YAML:
    # YAML instances are not re-entrant; one per thread (greenlets never yield inside a load).
    yaml = getattr(_local, "safe", None)
    if yaml is None:
        yaml = YAML(typ="safe", pure=False)
        _local.safe = yaml
    return yaml


def load_plain(text: str | bytes) -> Any:
    """Plain Python data (dict, list, scalars), using the C loader when ruamel.yaml.clib is there."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return _safe().load(text)


def load_roundtrip(text: str) -> Any:
    """CommentedMap/CommentedSeq that remember line and column of every key and item (for error messages)."""
    yaml = YAML(typ="rt")
    return yaml.load(text)
