"""`expegit compare A B`: why did these two executions differ?

Parameters, code (with git's diffstat), environment (packages, GPUs, driver), objective and metrics, and the
files each produced. ``compare_executions`` gathers the facts from the branches (the one module here that
reads git); ``render_text`` and ``comparison_to_dict`` / ``comparison_from_dict`` are pure, so the CLI's text,
its ``--json`` and the report's compare view all show one Comparison.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from orchestra.environment import (CONDA_EXPORT_PATH, PIP_FREEZE_PATH, Environment, PackageDiff,
                                   diff_environments, diff_packages)
from orchestra.errors import UsageError
from orchestra.execution import RECORD_PATH, ExecutionRecord, render_branch_name

from .campaign import Campaign
from .gitcli import diff_stat
from .metrics import parse_metrics
from .records import RecordIndex

# Files every execution's branch has that are compared elsewhere (the record field by field, the
# environment's blobs package by package) or would always differ.
NOT_OUTPUTS = frozenset({RECORD_PATH, PIP_FREEZE_PATH, CONDA_EXPORT_PATH})


@dataclasses.dataclass(frozen=True)
class Side:
    id: str
    state: str
    commit: str
    host: str | None
    profile: str
    duration: float | None
    objective: float | None


@dataclasses.dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    parameters: dict[str, tuple[Any, Any]]          # only those that differ; a missing one is None
    diffstat: str                                   # git diff --stat a.commit b.commit ('' if same commit)
    environment: dict[str, tuple[Any, Any]] | None  # None: neither record has an environment section
    environment_note: str | None                    # why the environment could not be compared
    packages: PackageDiff | None
    conda: PackageDiff | None
    metrics: dict[str, tuple[float | None, float | None]]  # every metric of either side, the objective first
    objective_metric: str | None
    outputs: dict[str, tuple[str | None, str | None]]      # path → (blob in a, blob in b), only differing


def _side(r: ExecutionRecord) -> Side:
    return Side(id=r.id, state=r.state, commit=r.commit, host=r.node or r.host, profile=r.profile,
                duration=r.duration, objective=r.objective)


def _diff_maps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    names = list(dict.fromkeys([*a, *b]))
    return {n: (a.get(n), b.get(n)) for n in names if n not in a or n not in b or a[n] != b[n]
            or type(a[n]) is not type(b[n])}


def compare_executions(campaign: Campaign, first: str, second: str) -> Comparison:
    index = RecordIndex(campaign.store)
    ids = [index.resolve(first), index.resolve(second)]
    tips = [campaign.store.ref("refs/heads/" + render_branch_name(i)) for i in ids]
    ta, tb = tips
    if ta is None or tb is None:  # deleted between resolve() and here
        raise UsageError(f"execution {ids[0] if ta is None else ids[1]} no longer exists")
    ra, rb = index.record_at(ta), index.record_at(tb)
    store = campaign.store

    def blob_text(tip: str, path: str) -> str | None:
        raw = store.read_path(tip, path)
        return None if raw is None else raw.decode("utf-8", "replace")

    environment = note = None
    packages = conda = None
    if ra.environment is not None and rb.environment is not None:
        environment = diff_environments(Environment.from_dict(ra.environment), Environment.from_dict(rb.environment))
        for path, field in ((PIP_FREEZE_PATH, "packages_blob"), (CONDA_EXPORT_PATH, "conda_blob")):
            if ra.environment.get(field) == rb.environment.get(field):
                diff = PackageDiff({}, {}, {}) if ra.environment.get(field) else None  # one blob: same text
            else:
                texts = blob_text(ta, path), blob_text(tb, path)
                diff = diff_packages(texts[0] or "", texts[1] or "") if any(t is not None for t in texts) else None
            if field == "packages_blob":
                packages = diff
            else:
                conda = diff
    elif ra.environment is not None or rb.environment is not None:
        missing = ra.id if ra.environment is None else rb.id
        note = f"{missing} has no environment recorded"
    else:
        note = "neither execution has its environment recorded"

    objective = campaign.manifest.objective
    metrics: dict[str, tuple[float | None, float | None]] = {}
    metric_name = objective.metric if objective is not None else None
    if objective is not None:
        metrics[objective.metric] = (ra.objective, rb.objective)
        if objective.source:
            ma = parse_metrics(store.read_path(ta, objective.source))
            mb = parse_metrics(store.read_path(tb, objective.source))
            for name in dict.fromkeys([*ma, *mb]):
                if name != objective.metric:
                    metrics[name] = (ma.get(name), mb.get(name))

    fa = {p: sha for p, _mode, sha in store.changed_files(ra.commit, ta) if p not in NOT_OUTPUTS}
    fb = {p: sha for p, _mode, sha in store.changed_files(rb.commit, tb) if p not in NOT_OUTPUTS}
    outputs = {p: (fa.get(p), fb.get(p)) for p in sorted(set(fa) | set(fb)) if fa.get(p) != fb.get(p)}
    return Comparison(a=_side(ra), b=_side(rb), parameters=_diff_maps(ra.parameters, rb.parameters),
                      diffstat=diff_stat(campaign.root, ra.commit, rb.commit), environment=environment,
                      environment_note=note, packages=packages, conda=conda, metrics=metrics,
                      objective_metric=metric_name, outputs=outputs)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return ""
    diff = b - a
    rel = f" ({diff / abs(a) * 100:+.1f}%)" if a else ""
    return f"{diff:+.6g}{rel}"


def _table(rows: list[tuple[str, str, str, str]], head: tuple[str, str, str, str]) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]


def render_text(c: Comparison) -> str:
    """The side-by-side text `expegit compare` prints."""
    a, b = c.a, c.b
    out = [f"compare {a.id} (A) with {b.id} (B)"]
    out += _table([("state", a.state, b.state, ""), ("commit", a.commit[:12], b.commit[:12], ""),
                   ("profile", a.profile, b.profile, ""), ("host", _fmt(a.host), _fmt(b.host), ""),
                   ("duration", _fmt(a.duration), _fmt(b.duration), _delta(a.duration, b.duration))],
                  ("", "A", "B", "B - A"))
    out.append("parameters:" if c.parameters else "parameters: the same")
    if c.parameters:
        out += _table([(n, _fmt(x), _fmt(y), "") for n, (x, y) in c.parameters.items()], ("", "A", "B", ""))
    if a.commit == b.commit:
        out.append("code: the same commit")
    else:
        out.append(f"code: git diff --stat {a.commit[:12]} {b.commit[:12]}")
        out += ["  " + line for line in (c.diffstat or "(no file differs)").splitlines()]
    if c.environment is None:
        out.append(f"environment: not compared ({c.environment_note})")
    else:
        same = not c.environment and not c.packages and not c.conda
        out.append("environment: the same" if same else "environment:")
        if c.environment:
            out += _table([(n, _fmt(x), _fmt(y), "") for n, (x, y) in c.environment.items()], ("", "A", "B", ""))
        for label, diff in (("packages", c.packages), ("conda", c.conda)):
            if not diff:
                continue
            out.append(f"  {label}:")
            out += [f"    + {n}=={v}" for n, v in diff.added.items()]
            out += [f"    - {n}=={v}" for n, v in diff.removed.items()]
            out += [f"    ~ {n} {x} -> {y}" for n, (x, y) in diff.changed.items()]
    if c.metrics:
        out.append("metrics:")
        rows = [(n + (" (objective)" if n == c.objective_metric else ""), _fmt(x), _fmt(y), _delta(x, y))
                for n, (x, y) in c.metrics.items()]
        out += _table(rows, ("", "A", "B", "B - A"))
    out.append("outputs: the same" if not c.outputs else "outputs that differ:")
    for path, (x, y) in c.outputs.items():
        how = "only in B" if x is None else "only in A" if y is None else f"{x[:8]} -> {y[:8]}"
        out.append(f"  {path}  {how}")
    return "\n".join(out) + "\n"


def comparison_to_dict(c: Comparison) -> dict[str, Any]:
    """`expegit compare --json`: pairs as {"a": ..., "b": ...} so a reader needs no positional convention."""
    def pairs(mapping: dict[str, tuple[Any, Any]] | None) -> dict[str, dict[str, Any]] | None:
        return None if mapping is None else {k: {"a": x, "b": y} for k, (x, y) in mapping.items()}

    return {
        "a": dataclasses.asdict(c.a), "b": dataclasses.asdict(c.b),
        "parameters": pairs(c.parameters),
        "code": {"same": c.a.commit == c.b.commit, "diffstat": c.diffstat},
        "environment": None if c.environment is None else {
            "fields": pairs(c.environment),
            "packages": None if c.packages is None else c.packages.to_dict(),
            "conda": None if c.conda is None else c.conda.to_dict()},
        "environment_note": c.environment_note,
        "objective_metric": c.objective_metric,
        "metrics": {k: {"a": x, "b": y, "difference": None if x is None or y is None else y - x}
                    for k, (x, y) in c.metrics.items()},
        "outputs": pairs(c.outputs),
    }


def render_json(c: Comparison) -> str:
    return json.dumps(comparison_to_dict(c), ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def _package_diff(data: dict[str, Any] | None) -> PackageDiff | None:
    if data is None:
        return None
    return PackageDiff(added=dict(data["added"]), removed=dict(data["removed"]),
                       changed={k: (v[0], v[1]) for k, v in data["changed"].items()})


def comparison_from_dict(data: dict[str, Any]) -> Comparison:
    """The inverse of comparison_to_dict (what a script reading `--json` gets back as a Comparison)."""
    def unpair(mapping: dict[str, dict[str, Any]] | None) -> dict[str, tuple[Any, Any]] | None:
        return None if mapping is None else {k: (v["a"], v["b"]) for k, v in mapping.items()}

    env = data["environment"]
    return Comparison(
        a=Side(**data["a"]), b=Side(**data["b"]), parameters=unpair(data["parameters"]) or {},
        diffstat=data["code"]["diffstat"], environment=None if env is None else unpair(env["fields"]),
        environment_note=data["environment_note"],
        packages=None if env is None else _package_diff(env["packages"]),
        conda=None if env is None else _package_diff(env["conda"]),
        metrics={k: (v["a"], v["b"]) for k, v in data["metrics"].items()},
        objective_metric=data["objective_metric"], outputs=unpair(data["outputs"]) or {})


def parse_json(text: str) -> Comparison:
    return comparison_from_dict(json.loads(text))
