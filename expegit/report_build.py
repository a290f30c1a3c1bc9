"""From a campaign's execution branches to the report's ``ReportData`` (the renderer itself never reads git).

Records come through ``RecordIndex`` (its tip-keyed cache makes a re-render after a pull or a push cost
only the branches that moved). stdout/stderr tails, diffstats and output files are read from each
branch's tip commit, never from a working tree, so the same code renders a bare repository on a server
(the post-receive hook) and a user's campaign. Output files are loaded lazily, one execution at a time,
through ``load_outputs``: a campaign's outputs need not fit in memory.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any
from pathlib import Path

from orchestra.execution import RECORD_PATH, STDERR_PATH, STDOUT_PATH, ExecutionRecord

from . import report_bulk
from .gitstore import GitStore
from .journal import iso_from_epoch, utc_now
from .metrics import MAX_METRICS_BYTES, MetricsIndex
from .records import RecordIndex
from .report import CommitInfo, ExecutionView, Objective, ReportData, write_report

MANIFEST_NAME = "orchestra.yaml"
TAIL_LINES = 40
TAIL_BYTES = 8192
# Distinct package lists read for the compare view (one per node and environment in practice); past this the
# rest are left out, and the page says so, rather than one list per execution bloating packages.js.
MAX_PACKAGE_LISTS = 300


def tail(data: bytes | None, lines: int = TAIL_LINES, limit: int = TAIL_BYTES) -> str:
    """The last ``lines`` lines (at most ``limit`` bytes) of an output, decoded leniently."""
    if not data:
        return ""
    chunk = data[-limit:]
    text = chunk.decode("utf-8", "replace")
    parts = text.splitlines()
    return "\n".join(parts[-lines:])


@dataclasses.dataclass(frozen=True)
class ManifestFacts:
    """What the report takes from the manifest; every field may be missing in a broken manifest."""

    name: str | None = None
    objective: Objective | None = None
    metrics_file: str | None = None  # the objective's ``from``: where every other metric is read too
    parameter_types: dict[str, str] = dataclasses.field(default_factory=dict)
    has_metrics: bool = False  # `metrics:` declared: learning curves are read from .orchestra/metrics.jsonl
    objectives: tuple[Objective, ...] = ()  # `objective:` as a list: the Pareto front's axes, first = objective


def manifest_facts(text: bytes | str | None) -> ManifestFacts:
    """Labels, the metrics file and declared parameter types, leniently: a report renders even a broken one."""
    if text is None:
        return ManifestFacts()
    try:
        from orchestra.yamlio import load_plain

        data = load_plain(text)
    except Exception:  # ruamel's many error classes: a bad manifest only loses the labels
        return ManifestFacts()
    if not isinstance(data, Mapping):
        return ManifestFacts()
    name = data.get("name")
    objective = data.get("objective")
    parsed: Objective | None = None
    source: str | None = None
    several: list[Objective] = []
    # Several objectives: the first is the one the views rank by (as the records' `objective` is).
    for item in (objective if isinstance(objective, list) else [objective]):
        if isinstance(item, Mapping) and item.get("metric"):
            goal = item.get("goal", "minimize")
            several.append(Objective(metric=str(item["metric"]), goal="maximize" if goal == "maximize" else "minimize"))
            if source is None and isinstance(item.get("from"), str) and item["from"]:
                source = item["from"]
    parsed = several[0] if several else None
    return ManifestFacts(str(name) if name is not None else None, parsed, source,
                         declared_parameter_types(data.get("parameters")), has_metrics="metrics" in data,
                         objectives=tuple(several) if len(several) > 1 else ())


def declared_parameter_types(parameters: object) -> dict[str, str]:
    """``{name: float|int|str}`` for parameters declared with ``type:``; choices and values have no declared
    type (their values carry it)."""
    if not isinstance(parameters, Mapping):
        return {}
    out: dict[str, str] = {}
    for name, decl in parameters.items():
        if isinstance(decl, Mapping) and decl.get("type") in ("float", "int", "str"):
            out[str(name)] = str(decl["type"])
    return out


def manifest_summary(text: bytes | str | None) -> tuple[str | None, Objective | None]:
    """(campaign name, objective) from a manifest's text, leniently."""
    facts = manifest_facts(text)
    return facts.name, facts.objective


def _manifest_text(store: GitStore) -> bytes | None:
    working = store.root / MANIFEST_NAME
    if working != store.git_dir / MANIFEST_NAME and working.is_file():  # a working tree: what the user sees
        try:
            return working.read_bytes()
        except OSError:
            pass
    head = store.head_commit()
    return store.read_path(head, MANIFEST_NAME) if head else None


def _view(store: GitStore, record: ExecutionRecord, tip: str, metrics: Mapping[str, float],
          curves: bool = False) -> ExecutionView:
    diffstat: list[tuple[str, int]] = []
    try:
        for path, mode, sha in store.changed_files(record.commit, tip):
            if path == RECORD_PATH or mode == 0o160000:  # gitlinks are no files
                continue
            diffstat.append((path, store.blob_size(sha)))
    except KeyError:  # the code commit is missing (a shallow clone): no diffstat rather than no report
        diffstat = []
    return ExecutionView(record=record, stdout_tail=tail(store.read_path(tip, STDOUT_PATH)),
                         stderr_tail=tail(store.read_path(tip, STDERR_PATH)), diffstat=sorted(diffstat),
                         metrics=metrics, curve=_curve(store, tip) if curves else ())


def _curve(store: GitStore, tip: str) -> list[dict[str, Any]]:
    """Only for manifests that declare `metrics:`: campaigns without them read no extra blob per branch."""
    from .metrics_stream import METRICS_PATH, parse_metrics_text

    raw = store.read_path(tip, METRICS_PATH)
    return parse_metrics_text(raw) if raw else []


def _views(store: GitStore, ordered: list[ExecutionRecord], tips: Mapping[str, str],
           metrics: Mapping[str, Mapping[str, float]], known_commits: set[str],
           curves: bool = False) -> list[ExecutionView]:
    """Every execution's view, its files and tails read in bulk (report_bulk: three git processes in all).

    An execution whose code commit is not in the repository (a shallow clone) is read through dulwich as
    before: git would refuse the whole diff for one unknown commit.
    """
    bulk = [r for r in ordered if r.commit in known_commits]
    changes = report_bulk.changed_files(store.git_dir, [(tips[r.id], str(r.commit)) for r in bulk])
    shown = {tip: [(path, sha) for path, mode, sha in files if path != RECORD_PATH and mode != 0o160000]
             for tip, files in changes.items()}
    sizes = report_bulk.blob_sizes(store.git_dir, (sha for files in shown.values() for _path, sha in files))
    specs = [f"{tips[r.id]}:{path}" for r in ordered for path in (STDOUT_PATH, STDERR_PATH)]
    tails = report_bulk.read_tails(store.git_dir, specs, TAIL_BYTES)
    # Learning curves only where `metrics:` is declared (campaigns without them read no extra blob), in bulk.
    from .metrics_stream import METRICS_PATH, parse_metrics_text

    raw_curves = store.read_path_many([tips[r.id] for r in ordered], METRICS_PATH) if curves else []
    views = []
    for k, record in enumerate(ordered):
        tip = tips[record.id]
        if record.commit not in known_commits:
            views.append(_view(store, record, tip, metrics.get(record.id, {}), curves))
            continue
        diffstat = sorted((path, sizes.get(sha, 0)) for path, sha in shown.get(tip, []))
        raw = raw_curves[k] if curves else None
        views.append(ExecutionView(record=record, stdout_tail=tail(tails[2 * k]), stderr_tail=tail(tails[2 * k + 1]),
                                   diffstat=diffstat, metrics=metrics.get(record.id, {}),
                                   curve=parse_metrics_text(raw) if raw else ()))
    return views


def package_lists(store: GitStore, ordered: list[ExecutionRecord], tips: Mapping[str, str],
                  limit: int = MAX_PACKAGE_LISTS) -> tuple[dict[str, dict[str, str]], int]:
    """({blob id: {name: version}}, lists left out) of the environments' pip freeze and conda exports.

    Each distinct blob is read once, through the tip of the first execution that names it, and parsed once:
    identical environments share one blob, so 100,000 executions on four nodes read a handful of lists.
    """
    from orchestra.environment import CONDA_EXPORT_PATH, PIP_FREEZE_PATH, parse_pip_freeze

    wanted: dict[tuple[str, str], str] = {}  # (path, blob) -> a tip that has it
    for record in ordered:
        env = record.environment if isinstance(record.environment, Mapping) else {}
        for field, path in (("packages_blob", PIP_FREEZE_PATH), ("conda_blob", CONDA_EXPORT_PATH)):
            blob = env.get(field)
            if isinstance(blob, str) and blob and (path, blob) not in wanted and record.id in tips:
                wanted[(path, blob)] = tips[record.id]
    distinct = list(dict.fromkeys(blob for _path, blob in wanted))
    keep = set(distinct[:limit])
    lists: dict[str, dict[str, str]] = {}
    for path in (PIP_FREEZE_PATH, CONDA_EXPORT_PATH):
        items = [(blob, tip) for (p, blob), tip in wanted.items() if p == path and blob in keep and blob not in lists]
        for (blob, _tip), raw in zip(items, store.read_path_many([tip for _blob, tip in items], path)):
            if raw is not None:
                lists[blob] = parse_pip_freeze(raw.decode("utf-8", "replace"))
    return lists, len(distinct) - len(keep)


def build_report_data(store: GitStore, *, campaign: str | None = None,
                      objective: Objective | None = None) -> tuple[ReportData, _Outputs, dict[str, str]]:
    """(data, load_outputs, problems by id) for every execution branch of ``store``.

    Branches whose record does not parse are left out of the report and returned in ``problems``.
    """
    records, tips, problems = RecordIndex(store).load()
    facts = manifest_facts(_manifest_text(store))
    name, declared = facts.name, facts.objective
    metrics = MetricsIndex(store).load(  # all tips, as `export` does: one cache; uncached ones in bulk
        facts.metrics_file, tips,
        lambda specs: report_bulk.read_tails(store.git_dir, specs, MAX_METRICS_BYTES + 1))
    ordered = sorted(records.values(), key=lambda r: (r.created or "", r.id))
    commits: dict[str, CommitInfo] = {}
    for record in ordered:
        if record.commit in commits or not store.has_object(record.commit):
            continue
        subject, author, when = store.commit_info(record.commit)
        commits[record.commit] = CommitInfo(sha=record.commit, subject=subject, author=author,
                                            time=iso_from_epoch(when) or "")
    views = _views(store, ordered, tips, metrics, {sha for sha in commits}, facts.has_metrics)
    packages, packages_left_out = package_lists(store, ordered, tips)
    if campaign is None:
        campaign = name or (ordered[0].campaign if ordered else None) or _repository_name(store)
    data = ReportData(campaign=campaign, objective=objective if objective is not None else declared,
                      generated=utc_now(), commits=commits, executions=views,
                      parameter_types=facts.parameter_types, packages=packages,
                      packages_left_out=packages_left_out, objectives=facts.objectives)

    return data, _Outputs(store, records, tips), problems


class _Outputs:
    """The site's ``load_outputs``: an execution's declared output files at its tip, read through one
    long-lived ``git cat-file --batch`` (report_bulk.BlobReader) instead of dulwich file by file."""

    def __init__(self, store: GitStore, records: Mapping[str, ExecutionRecord], tips: Mapping[str, str]) -> None:
        self._records, self._tips = records, tips
        self._reader = report_bulk.BlobReader(store.git_dir, store.read_path)

    def __call__(self, execution_id: str) -> Mapping[str, bytes]:
        record = self._records.get(execution_id)
        if record is None:
            return {}
        files: dict[str, bytes] = {}
        for path in record.outputs:
            content = self._reader.read(self._tips[execution_id], path)
            if content is not None:
                files[path] = content
        return files

    def close(self) -> None:
        self._reader.close()


def _repository_name(store: GitStore) -> str:
    name = store.root.name
    return name[:-4] if name.endswith(".git") else name or "campaign"


def default_report_dir(store: GitStore) -> Path:
    """``<git dir>/orchestra/report``: private to this clone, never committed, never in the way."""
    return store.git_dir / "orchestra" / "report"


def render_report(store: GitStore, out_dir: Path | str | None = None) -> tuple[Path, ReportData, dict[str, str]]:
    """Build and write the report; (index.html, the data rendered, problems by id)."""
    from .report.site import no_cyclic_gc

    with no_cyclic_gc():  # reading 100,000 records allocates as much as rendering them (see no_cyclic_gc)
        data, load_outputs, problems = build_report_data(store)
        try:
            index = write_report(data, Path(out_dir) if out_dir is not None else default_report_dir(store),
                                 load_outputs=load_outputs)
        finally:
            load_outputs.close()
    return index, data, problems


def render_repository_report(repository: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """For the post-receive hook: render a (bare) repository given by path."""
    index, _data, _problems = render_report(GitStore(Path(repository)), Path(out_dir))
    return index


def main(argv: list[str] | None = None) -> int:
    """`python -m expegit.report_build GIT_DIR OUT_DIR`: what the post-receive hook's renderer runs.

    A process of its own, so that the hook programs (orchestra_hooks) never import expegit: they sit
    beside it, built on the backbone only, and expegit installs them (issue 11, layering).
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m expegit.report_build GIT_DIR OUT_DIR", file=sys.stderr)
        return 2
    try:
        print(render_repository_report(args[0], args[1]))
    except Exception as exc:  # noqa: BLE001 - one line for the hook's log and the next pusher
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


__all__ = ["build_report_data", "render_report", "render_repository_report", "default_report_dir", "tail",
           "manifest_summary", "manifest_facts", "package_lists", "declared_parameter_types", "ManifestFacts", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
