"""The notebook API: ``from expegit import open_campaign`` and read a campaign's results as Python data.

It is the CLI's Campaign with read methods added (a subclass, so ``c.manifest``, ``c.root`` and ``c.store``
work as for every command), and it reads what `expegit list` and `export` read: the tip-keyed record and
metrics caches, so a DataFrame of 10,000 executions costs what `expegit export` does.
pandas stays optional (the ``analysis`` extra): records and metrics need none of it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from orchestra.environment import Environment
from orchestra.errors import UsageError
from orchestra.execution import STATES, ExecutionRecord, render_branch_name

from .aggregate import Configuration, configurations
from .campaign import Campaign
from .campaign import open_campaign as _open_campaign
from .listing import campaign_metrics, export_row
from .metrics_stream import parse_metrics_text
from .records import RecordIndex

METRICS_STREAM_PATH = ".orchestra/metrics.jsonl"


def parse_metrics_lines(text: str) -> list[dict[str, Any]]:
    """The JSON objects of a metrics stream, in order. A line that is not one (the last line of a stream
    still being written, a stray print) is skipped: a learning curve with a gap beats no curve."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def render_metrics_lines(points: Sequence[dict[str, Any]]) -> str:
    """What a metrics stream holds (the inverse of parse_metrics_lines, for writers and tests)."""
    return "".join(json.dumps(p, ensure_ascii=False, allow_nan=False) + "\n" for p in points)


def _pandas() -> Any:
    import importlib

    try:  # through importlib: without pandas-stubs installed mypy would refuse the import statement
        return importlib.import_module("pandas")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "dataframe() needs pandas: pip install 'orchestra-campaigns[analysis]'", name="pandas") from exc


@dataclasses.dataclass
class AnalysisCampaign(Campaign):
    """A campaign opened for reading results (see the README's "Python API")."""

    def executions(self, state: str | Sequence[str] | None = None) -> list[ExecutionRecord]:
        """Records, oldest first; ``state``: one state or several."""
        states = [state] if isinstance(state, str) else list(state or [])
        for s in states:
            if s not in STATES:
                raise UsageError(f"state {s!r}: not one of {', '.join(STATES)}")
        records = RecordIndex(self.store).records()
        return [r for r in records if r.state in states] if states else records

    def execution(self, prefix: str) -> ExecutionRecord:
        index = RecordIndex(self.store)
        execution_id = index.resolve(prefix)
        records = index.load()[0]
        if execution_id not in records:
            raise UsageError(f"execution {execution_id} has an unreadable record")
        return records[execution_id]

    def rows(self, state: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per execution, the DataFrame's rows: `expegit export`'s columns (``param.NAME``,
        ``metric.NAME``, timings, host and node, commit) plus ``rerun_of``, ``environment`` (a one-line summary) and
        the ``env.*`` columns (Environment.columns: os, kernel, cpu, cores, memory, gpus, driver, cuda, python,
        packages, and ``env.var.NAME`` for record_env's values)."""
        records = self.executions(state)
        metrics = campaign_metrics(self, records)
        rows = []
        for r in records:
            row = export_row(r, metrics.get(r.id))
            row["rerun_of"] = r.rerun_of
            environment = Environment.from_dict(r.environment) if r.environment else None
            row["environment"] = environment.summary() if environment is not None else None
            row.update((environment or Environment()).columns())
            rows.append(row)
        return rows

    def dataframe(self, state: str | Sequence[str] | None = None) -> Any:
        """A pandas DataFrame, one row per execution, indexed by execution id. (Typed Any: pandas is an
        optional extra, and without pandas-stubs mypy knows nothing of it anyway.)"""
        pandas = _pandas()
        rows = self.rows(state)
        frame = pandas.DataFrame(rows)
        if rows:
            frame = frame.set_index("id")
            for column in ("created", "started", "ended"):
                frame[column] = pandas.to_datetime(frame[column], utc=True, errors="coerce")
        return frame

    def metrics(self, prefix: str, *, frame: bool = False) -> Any:
        """An execution's intermediate metrics (``.orchestra/metrics.jsonl`` on its branch): a list of dicts
        in the order written, [] before any; with ``frame=True`` a pandas DataFrame, one row per point.

        Why a flag rather than "a DataFrame whenever pandas is installed": the same notebook must get the
        same type on every machine it runs on. While an execution runs, this is what its controller
        committed last (at most ``metrics.every`` old)."""
        execution_id = RecordIndex(self.store).resolve(prefix)
        tip = self.store.ref("refs/heads/" + render_branch_name(execution_id))
        raw = self.store.read_path(tip, METRICS_STREAM_PATH) if tip else None
        points = parse_metrics_text(raw) if raw else []
        return _pandas().DataFrame(points) if frame else points

    def configurations(self, *, ignore: Sequence[str] | None = None) -> list[Configuration]:
        """Parameter points aggregated over their repeats, best mean first (``ignore``: the parameters that
        vary between repeats; by default those named like a seed)."""
        objective = self.manifest.objective
        goal = objective.goal if objective is not None else "minimize"
        return configurations(self.executions("finished"), goal, ignore=ignore)

    def compare(self, a: str, b: str) -> dict[str, Any]:
        """`expegit compare A B --json` as a dict."""
        from .compare import compare_executions, comparison_to_dict

        return comparison_to_dict(compare_executions(self, a, b))


def open_campaign(path: str | os.PathLike[str] = ".") -> AnalysisCampaign:
    """The campaign at or above ``path``, for reading results. The CLI's own opener
    (expegit.campaign.open_campaign) is reused: same discovery, same error when there is no manifest."""
    base = _open_campaign(path)
    return AnalysisCampaign(store=base.store)


__all__ = ["AnalysisCampaign", "open_campaign", "parse_metrics_lines", "render_metrics_lines",
           "METRICS_STREAM_PATH"]
