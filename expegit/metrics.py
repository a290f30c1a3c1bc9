"""Every numeric metric of an execution's metrics file, read from its branch, with a tip-keyed cache.

The record keeps only the objective; a metrics file usually holds more (``val_acc`` beside ``val_loss``) and
users want all of it in ``export``, the report's table and its plots. The values are read from the file
committed on the execution's branch (the objective's ``from``), so they are exactly what was produced.
Reading one blob per branch costs as much as parsing its record, so, like ``RecordIndex``, the values are
cached by branch tip: only branches that moved since the last read are read again.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping

from .gitstore import GitStore

CACHE_VERSION = 1
MAX_METRICS_BYTES = 4 * 1024 * 1024  # a metrics file is small; a huge blob is not read whole for a table
Metrics = dict[str, float]


def parse_metrics(raw: bytes | None) -> Metrics:
    """The finite numbers at the top level of a JSON object, in file order; {} for anything else.

    Lenient by design: a report or an export must not fail because one execution wrote a bad file (the
    objective's own problems are already in the record's ``error``). Booleans are not metrics.
    """
    if not raw or len(raw) > MAX_METRICS_BYTES:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: Metrics = {}
    for name, value in data.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[str(name)] = float(value) if isinstance(value, float) else value
    return out


def metric_names(metrics: Mapping[str, Mapping[str, float]], first: str | None = None) -> list[str]:
    """Every metric name seen, ``first`` (the objective) leading, the others in first-seen order."""
    names: dict[str, None] = {}
    if first is not None:
        names[first] = None
    for values in metrics.values():
        for name in values:
            names.setdefault(name, None)
    if first is not None and not any(first in values for values in metrics.values()):
        del names[first]
    return list(names)


class MetricsIndex:
    """Metrics by execution id for one metrics file, cached in ``<git dir>/orchestra/metrics.json``."""

    def __init__(self, store: GitStore) -> None:
        self.store = store
        self.path = store.git_dir / "orchestra" / "metrics.json"

    def _load_cache(self, source: str) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
            if data.get("version") == CACHE_VERSION and data.get("source") == source:
                return data["metrics"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # a missing or damaged cache only costs a re-read
        return {}

    def _save_cache(self, source: str, entries: dict[str, list]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "source": source, "metrics": entries},
                                  separators=(",", ":")), "utf-8")
        os.replace(tmp, self.path)

    def load(self, source: str | None, tips: Mapping[str, str],
             read_many: Callable[[list[str]], list[bytes | None]] | None = None) -> dict[str, Metrics]:
        """{execution id: metrics} for the branches in ``tips`` (id → tip); {} without a metrics file.

        ``read_many`` (``<tip>:<path>`` specs → contents) reads every uncached file at once: the report
        passes a ``git cat-file --batch`` reader, since 100,000 reads one by one took minutes.
        """
        if not source:
            return {}
        cache = self._load_cache(source)
        fresh: dict[str, list] = {}
        out: dict[str, Metrics] = {}
        changed = len(cache) != len(tips)
        stale = [(i, t) for i, t in tips.items() if not _valid(cache.get(i), t)]
        # In bulk (one `git cat-file --batch` per 20,000): after a clone that is every branch, and one
        # dulwich lookup each cost a minute at 100,000.
        contents = (read_many([f"{t}:{source}" for _i, t in stale]) if read_many is not None
                    else self.store.read_path_many([t for _i, t in stale], source))
        read = dict(zip((i for i, _t in stale), contents))
        for execution_id, tip in tips.items():
            if execution_id in read:
                changed = True
                values = parse_metrics(read[execution_id])
            else:
                values = cache[execution_id][1]
            fresh[execution_id] = [tip, values]
            if values:
                out[execution_id] = values
        if changed:
            try:
                self._save_cache(source, fresh)
            except OSError:
                pass  # a read-only clone (a server's bare repository) still reads, only slower
        return out


def _valid(cached: object, tip: str) -> bool:
    return isinstance(cached, list) and len(cached) == 2 and cached[0] == tip and isinstance(cached[1], dict)


__all__ = ["MetricsIndex", "parse_metrics", "metric_names", "Metrics"]
