"""Read-only views of a campaign's executions: status, list, show, export; and `rm`."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TextIO

from orchestra.errors import UsageError
from orchestra.resources import render_size
from orchestra.execution import STATES, STDERR_PATH, STDOUT_PATH, ExecutionRecord, render_branch_name, \
    render_record

from .campaign import Campaign
from .metrics import MetricsIndex
from .records import FIELDS, PROBLEM, Entry, RecordIndex, list_line, record_list_line, records_of, unescape

PROBLEM_MARK = f"\t{PROBLEM}\t"

# ``node`` beside ``host``: on Slurm the host is the login node reached by SSH, the node is where it ran.
EXPORT_FIELDS = ("id", "state", "commit", "profile", "repeat", "attempt", "host", "node", "slot", "created",
                 "started", "ended", "duration", "exit_code", "objective", "author", "search", "error",
                 # What it was given when placed by resources (empty for the others): where the GPU time went.
                 "cores", "gpus", "gpu_share", "memory_limit")
LIST_HEADER = ("id", "state", "objective", "duration", "commit", "parameters")


def status_text(campaign: Campaign) -> str:
    """From the record cache's summary line: when no branch moved, two lines of one file, whatever the
    campaign's size. Only where repeats may exist are the scored records parsed in full."""
    index = RecordIndex(campaign.store)
    summary = index.summary()
    counts: dict[str, int] = summary["states"]
    problems = counts.get(PROBLEM, 0)
    lines = [f"campaign {campaign.manifest.name}: {sum(counts.values()) - problems} executions"]
    lines.append("  " + ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES))
    objective = campaign.manifest.objective
    if objective is not None:
        best_json = summary["min" if objective.goal == "minimize" else "max"]
        if best_json is not None:
            best = ExecutionRecord.from_checked_dict(json.loads(best_json))
            params = " ".join(f"{k}={v}" for k, v in best.parameters.items())
            lines.append(f"  best {objective.metric} = {best.objective:g} ({best.id}: {params})")
            lines.extend(_configuration_lines(index, summary, objective.goal, objective.metric,
                                              campaign.manifest.parameters))
    running = [ExecutionRecord.from_checked_dict(json.loads(text)) for text in summary["running"]]
    from .running import running_lines  # how long, latest metrics (reads only the shown ones' blobs)

    tips = {r.id: tip for r in running if (tip := campaign.store.execution_tip(r.id))}
    lines.extend(running_lines(campaign.store, running, tips))
    if counts.get("running", 0) > len(running):
        lines.append(f"  ... and {counts['running'] - len(running)} more running")
    resumable = counts.get("created", 0) + counts.get("cancelled", 0)
    if resumable:
        lines.append(f"  {resumable} not run yet: `expegit resume` runs them")
    if problems:
        lines.append(f"  {problems} branches with unreadable records (`expegit list` names them)")
    return "\n".join(lines)


def _configuration_lines(index: RecordIndex, summary: dict[str, Any], goal: str, metric: str,
                         parameter_names: Iterable[str]) -> list[str]:
    """Only where a parameter point has repeats: one execution per point is already the list above."""
    from .aggregate import configurations, has_repeats, is_seed, render_configurations

    # may_have_repeats' test, on the summary: repeats come from --repeat or a seed parameter
    if not (any(is_seed(n) for n in parameter_names) or summary["repeats"]):
        return []
    scored = [e for e in index.entries() if e.state == "finished" and e.objective is not None]
    configs = configurations(records_of(scored), goal)
    return render_configurations(configs, metric) if has_repeats(configs) else []


def _check_states(states: Sequence[str]) -> None:
    for state in states:
        if state not in STATES:
            raise UsageError(f"--state {state}: not one of {', '.join(STATES)}")


def select(campaign: Campaign, states: Sequence[str] = ()) -> list[ExecutionRecord]:
    _check_states(states)
    records = RecordIndex(campaign.store).records()
    if states:
        records = [r for r in records if r.state in states]
    return records


SORT_KEYS = ("created", "id", "state", "objective", "duration")


class RawEntries(Sequence[Entry]):
    """Cache lines seen as entries, with the two columns `list` prints cut out of the line without
    splitting it (for 100,000 lines, an Entry each costs more than the rest of the command)."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, index):  # type: ignore[no-untyped-def,override]
        if isinstance(index, slice):
            return RawEntries(self._lines[index])
        return Entry(self._lines[index].split("\t", FIELDS - 1))

    def json_texts(self) -> Iterator[str]:
        for line in self._lines:
            yield line[line.rindex("\t") + 1:]  # the JSON column is the last and holds no tab

    def list_lines(self) -> Iterator[str]:
        for line in self._lines:
            cut = line[:line.rindex("\t")]
            text = cut[cut.rindex("\t") + 1:]
            yield unescape(text) if "\\" in text else text


def select_entries(campaign: Campaign, states: Sequence[str] = (), *, sort: str = "created",
                   reverse: bool = False, limit: int | None = None) -> tuple[list[Entry], list[Entry]]:
    """(what `expegit list` shows, branches with unreadable records). Shown: by state, sorted
    (``objective``: best first by the manifest's goal; executions without one last, whichever the
    direction), at most ``limit``."""
    _check_states(states)
    if sort not in SORT_KEYS:
        raise UsageError(f"--sort {sort}: use one of {', '.join(SORT_KEYS)}")
    if limit is not None and limit < 0:
        raise UsageError(f"--limit {limit}: must be 0 or more")
    index = RecordIndex(campaign.store)
    if sort == "created" and not reverse and not states and limit is not None:
        head = index.head_lines(limit)
        if head is not None:
            return RawEntries(head), []
    lines = index.lines()
    if sort == "created" and not reverse and not states:  # the cache is in list order: no object per line
        problem_lines_ = [line for line in lines if PROBLEM_MARK in line]
        shown = [line for line in lines if PROBLEM_MARK not in line] if problem_lines_ else lines
        return RawEntries(shown if limit is None else shown[:limit]), \
            [Entry(line.split("\t", FIELDS - 1)) for line in problem_lines_]
    every = [Entry(line.split("\t", FIELDS - 1)) for line in lines]
    problems = [e for e in every if e.state == PROBLEM]
    entries = [e for e in every if e.state != PROBLEM] if problems else every
    if states:
        entries = [e for e in entries if e.state in states]
    if sort in ("objective", "duration"):
        sign = -1.0 if sort == "objective" and _maximizes(campaign) else 1.0
        present = [e for e in entries if getattr(e, sort) is not None]
        present.sort(key=lambda e: sign * getattr(e, sort), reverse=reverse)
        entries = present + [e for e in entries if getattr(e, sort) is None]
    elif sort != "created" or reverse:  # entries already come oldest first
        entries.sort(key=lambda e: getattr(e, sort), reverse=reverse)
    return (entries if limit is None else entries[:limit]), problems


def problem_lines(problems: Sequence[Entry], *, limit: int = 10) -> list[str]:
    """What the list says on stderr about branches it could not show."""
    lines = [f"executions/{e.id} (tip {e.tip[:12]}): unreadable record: {e.problem}" for e in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more branches with unreadable records")
    return lines


def _maximizes(campaign: Campaign) -> bool:
    objective = campaign.manifest.objective
    return objective is not None and objective.goal == "maximize"


def export_row(record: ExecutionRecord, metrics: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Record fields, then ``param.NAME`` per parameter and ``metric.NAME`` per metric of the metrics file."""
    row = {field: getattr(record, field) for field in EXPORT_FIELDS}
    for name, value in record.parameters.items():
        row[f"param.{name}"] = value
    for name, value in (metrics or {}).items():
        row[f"metric.{name}"] = value
    return row


def campaign_metrics(campaign: Campaign, records: Sequence[ExecutionRecord]) -> dict[str, dict[str, float]]:
    """Every numeric metric of the objective's metrics file, by execution id (cached by branch tip)."""
    objective = campaign.manifest.objective
    source = objective.source if objective is not None else None
    if not source or not records:
        return {}
    # All branches, not just the selected ones: the cache then stays whole for the next report or export.
    every = MetricsIndex(campaign.store).load(source, campaign.store.execution_tips())
    return {r.id: every[r.id] for r in records if r.id in every}


def write_list(records: Iterable[ExecutionRecord], out: TextIO, *, as_json: bool) -> None:
    if as_json:
        # dumps, not dump: json.dump streams through the pure-Python encoder, dumps uses the C one (5x).
        out.write(json.dumps([r.to_dict() for r in records], ensure_ascii=False))
        out.write("\n")
        return
    rows = list(records)
    if not rows:
        out.write("no executions yet: `expegit run` creates some\n")
        return
    out.write(list_line(*LIST_HEADER) + "\n")
    for r in rows:
        out.write(record_list_line(r) + "\n")


LIST_CHUNK = 2000  # lines per write: a pager or a pipe gets its first screen at once, memory stays flat


def write_entries(entries: Sequence[Entry], out: TextIO, *, as_json: bool) -> None:
    """write_list's output, from the cache's columns: each record's list line and JSON text are copied as
    the cache holds them (the same text write_list formats), never parsed, formatted or re-encoded."""
    if isinstance(entries, RawEntries):
        texts: Iterable[str] = entries.json_texts() if as_json else entries.list_lines()
    else:
        texts = (e.json for e in entries) if as_json else (e.line for e in entries)
    if as_json:
        out.write("[")
        out.write(", ".join(texts))  # one string of ~100 MB at 100,000: the C join beats chunked writes
        out.write("]\n")
        return
    write_list_texts(texts, bool(entries), out)


def list_texts(campaign: Campaign, states: Sequence[str] = (), *, sort: str = "created", reverse: bool = False,
               limit: int | None = None) -> Iterable[str] | None:
    """The text list's lines straight from the record cache's list file, for the default order with no
    filter (what `expegit list` is mostly run as); None when select_entries must answer."""
    _check_states(states)
    if sort not in SORT_KEYS or (limit is not None and limit < 0):
        return None  # select_entries says what is wrong
    lines = RecordIndex(campaign.store).list_texts()
    if lines is None:
        return None
    if states or sort != "created" or reverse:
        rows = [line.split("\t", 5) for line in lines]
        if states:
            rows = [r for r in rows if r[2] in states]
        if sort in ("objective", "duration"):  # select_entries' order, from the same columns
            column = 3 if sort == "objective" else 4
            sign = -1.0 if sort == "objective" and _maximizes(campaign) else 1.0
            present = [r for r in rows if r[column]]
            present.sort(key=lambda r: sign * float(r[column]), reverse=reverse)
            rows = present + [r for r in rows if not r[column]]
        elif sort != "created" or reverse:
            column = {"created": 1, "id": 0, "state": 2}[sort]
            rows.sort(key=lambda r: unescape(r[column]) if column == 1 else r[column], reverse=reverse)
        shown = [r[5] for r in (rows if limit is None else rows[:limit])]
    else:
        shown = [line[line.rindex("\t") + 1:] for line in (lines if limit is None else lines[:limit])]
    return (unescape(t) if "\\" in t else t for t in shown) if shown else []


def write_list_texts(texts: Iterable[str], any_shown: bool, out: TextIO) -> None:
    if not any_shown:
        out.write("no executions yet: `expegit run` creates some\n")
        return
    out.write(list_line(*LIST_HEADER) + "\n")
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= LIST_CHUNK:  # a pager gets its first screen at once
            out.write("\n".join(batch) + "\n")
            batch = []
    if batch:
        out.write("\n".join(batch) + "\n")


def write_export(records: Sequence[ExecutionRecord], out: TextIO, fmt: str, *,
                 metrics: Mapping[str, Mapping[str, float]] | None = None) -> None:
    """One row per execution, parameters as ``param.NAME`` and metrics as ``metric.NAME`` columns: ready for
    pandas.read_csv / read_json. ``metrics`` maps an execution id to its metrics file's numbers."""
    metrics = metrics or {}
    rows = [export_row(r, metrics.get(r.id)) for r in records]
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    if fmt != "csv":
        raise UsageError(f"--format {fmt}: use csv or jsonl")
    extra: dict[str, None] = {}  # param.* then metric.* columns, each in first-seen order
    for prefix in ("param.", "metric."):
        for row in rows:
            for k in row:
                if k.startswith(prefix):
                    extra.setdefault(k, None)
    writer = csv.DictWriter(out, fieldnames=list(EXPORT_FIELDS) + list(extra), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def binding_text(record: ExecutionRecord) -> str:
    """What an execution placed by resources was given, in words; "" for one that declared none."""
    parts = []
    if record.cores is not None:
        parts.append(f"cores {record.cores}")
    if record.gpus:
        share = f" ({record.gpu_share:g} of it)" if record.gpu_share else ""
        parts.append(f"GPU{'s' if ',' in record.gpus else ''} {record.gpus}{share}")
    elif record.cores is not None:
        parts.append("no GPU")
    if record.memory_limit is not None:
        parts.append(f"memory limit {render_size(record.memory_limit)}")
    return ", ".join(parts)


def checkpoint_copy_text(campaign: Campaign, execution_id: str) -> str | None:
    """``copied back from HOST at 12:04:05 UTC (newest file 12:03:58)``: the copy the controller keeps of a
    checkpoint on a place that shares no filesystem (None when there is none: shared, or finished)."""
    import datetime

    from runaway.checkpoint_copy import read_stamp

    stamp = read_stamp(campaign.store.git_dir / "orchestra", execution_id)
    if stamp is None:
        return None

    def clock(epoch: float) -> str:
        return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

    newest = f" (newest file {clock(stamp.newest)})" if stamp.newest is not None else ""
    return f"copied back from {stamp.host} at {clock(stamp.copied)} UTC{newest}"


def show_text(campaign: Campaign, prefix: str, *, tail: int = 20) -> str:
    index = RecordIndex(campaign.store)
    execution_id = index.resolve(prefix)
    tip = campaign.store.ref("refs/heads/" + render_branch_name(execution_id))
    assert tip is not None
    record = index.record_at(tip)
    out = io.StringIO()
    out.write(f"execution {record.id}  (branch {render_branch_name(record.id)}, tip {tip[:12]})\n")
    out.write(render_record(record))
    got = binding_text(record)
    if got:
        out.write(f"got: {got}\n")
    copied = checkpoint_copy_text(campaign, record.id)
    if copied:
        out.write(f"checkpoint: {copied}\n")
    for label, path in (("stdout", STDOUT_PATH), ("stderr", STDERR_PATH)):
        data = campaign.store.read_path(tip, path)
        if data:
            lines = data.decode("utf-8", "replace").splitlines()
            shown = lines[-tail:]
            out.write(f"--- {label} ({len(lines)} lines{', last ' + str(tail) if len(lines) > tail else ''}) ---\n")
            out.write("\n".join(shown) + "\n")
    return out.getvalue()


def remove(campaign: Campaign, prefixes: Sequence[str]) -> list[str]:
    """Delete execution branches (the only way Orchestra rewrites them: asked for, by id)."""
    index = RecordIndex(campaign.store)
    ids = [index.resolve(p) for p in prefixes]
    removed = []
    for execution_id in ids:
        ref = "refs/heads/" + render_branch_name(execution_id)
        tip = campaign.store.ref(ref)
        if tip is not None and campaign.store.delete_ref(ref, tip):
            removed.append(execution_id)
    return removed
