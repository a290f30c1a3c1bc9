"""The execution page: one shell (``execution.html?id=<id>``) plus sharded detail files.

Why not one static page per execution: at 10,000 executions those are 10,000 file creations, and file
creation, not rendering, dominates the time to write a report (and to delete the previous one). Details
(record, stdout/stderr tails, outputs, diff stat, commit) go instead into at most 256 ``details/<xx>.js``
files keyed by the first two characters of the page name. The shell loads only its shard with a
``<script src>`` (``fetch`` of ``file://`` is blocked), so opening an execution stays instant however
large the campaign. The shell's script renders with ``textContent`` only.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .datafile import dumps_script_safe, record_dict
from .files import OutputEntry
from .fmt import clean_tail, esc
from .layout import page
from .model import CommitInfo, ExecutionView, ReportData, browser_kinds, objective_label

DETAILS_DIR = "details"
DETAILS_GLOBAL = "ORCHESTRA_DETAILS"
TAIL_LIMIT = 64 * 1024  # characters per stream; a runaway log must not bloat a shard


def shard_key(page_name: str) -> str:
    """Lower-case so shards do not collide on case-insensitive file systems."""
    return page_name[:2].lower()


def page_href(page_name: str) -> str:
    # Page names are [0-9A-Za-z_-] by construction (fmt.safe_page_name): no quoting needed.
    return f"execution.html?id={page_name}"


def _tail(text: Any) -> str:
    cleaned = clean_tail(str(text or ""))
    return cleaned[-TAIL_LIMIT:]


def detail_entry(view: ExecutionView, entries: Sequence[OutputEntry], commit: CommitInfo | None,
                 prev_page: str | None, next_page: str | None,
                 declared: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything the execution page shows, as JSON-able data (rendered by report.js).

    ``types`` holds the kinds the browser would get wrong: JSON has one number type, so ``1.0`` reaches
    JavaScript as ``1`` and would be labelled int; ``declared`` (the manifest's types) wins over the value.
    Only those, because a shard holds thousands of executions and every other kind the value tells.
    """
    parameters = view.record.parameters if isinstance(view.record.parameters, dict) else {}
    return {
        "record": record_dict(view.record),
        "types": browser_kinds(parameters, declared or {}),
        "metrics": view.metrics,  # json.dumps reads it, never mutates it: no copy
        "stdout": _tail(view.stdout_tail),
        "stderr": _tail(view.stderr_tail),
        "outputs": [{"path": e.path, "href": e.href, "size": e.size, "kind": e.kind, "preview": e.preview,
                     "problem": e.problem, "active": e.active, "inline": e.inline} for e in entries],
        "diffstat": [[str(path), n] for path, n in view.diffstat],
        "commit": ({"sha": commit.sha, "subject": commit.subject, "author": commit.author, "time": commit.time}
                   if commit else None),
        "prev": prev_page,
        "next": next_page,
    }


def render_shard(entries: dict[str, dict[str, Any]]) -> str:
    return f"window.{DETAILS_GLOBAL} = {dumps_script_safe(entries)};\n"


def parse_shard(text: str) -> dict[str, Any]:
    import json

    prefix = f"window.{DETAILS_GLOBAL} = "
    if not text.startswith(prefix):
        raise ValueError("not an Orchestra details shard")
    return json.loads(text[len(prefix):].rstrip().rstrip(";"))


def execution_shell(data: ReportData) -> str:
    """The one execution page; report.js fills every element below from the shard."""
    metric, _ = objective_label(data)
    body = (
        '<div class="crumbs"><a href="index.html">Overview</a> › <a href="executions.html">Executions</a> › '
        '<span class="mono" id="ex-crumb"></span></div>'
        '<section class="hero"><div><h1>Execution <span class="mono" id="ex-id">…</span> '
        '<span id="ex-state"></span></h1><p class="muted mono" id="ex-params"></p></div>'
        '<nav class="pn"><a id="ex-prev">‹ previous</a><a href="executions.html">all executions</a>'
        '<a id="ex-next">next ›</a></nav></section>'
        '<section class="card empty" id="ex-missing" hidden><h2>Execution not found</h2>'
        '<p>This report has no execution with that id. <a href="executions.html">Browse all executions</a>.</p>'
        "</section>"
        f'<div id="ex-body" data-metric="{esc(metric)}" hidden>'
        '<section class="card error" id="ex-error-card" hidden><h2>Error</h2><pre class="tail" id="ex-error"></pre>'
        "</section>"
        '<section class="grid2"><div class="card"><h2>Summary</h2><dl class="kv" id="ex-summary"></dl></div>'
        '<div class="card"><h2>Parameters</h2><div id="ex-parameters"></div>'
        '<h2>Code commit</h2><div id="ex-commit"></div></div></section>'
        '<section class="card"><h2>Command</h2><pre class="cmd" id="ex-command"></pre></section>'
        '<section class="card" id="ex-curve-card" hidden><h2>Learning curve</h2><div id="ex-curve"></div></section>'
        '<section class="card"><h2>Outputs</h2><div id="ex-outputs"></div></section>'
        '<section class="card"><h2>stdout <span class="muted small" id="ex-stdout-info"></span></h2>'
        '<pre class="tail" id="ex-stdout"></pre></section>'
        '<section class="card"><h2>stderr <span class="muted small" id="ex-stderr-info"></span></h2>'
        '<pre class="tail" id="ex-stderr"></pre></section>'
        '<section class="card"><h2>Diff stat of outputs</h2><div id="ex-diffstat"></div></section>'
        "</div>"
        '<noscript><section class="card"><p>Execution pages need JavaScript; the record is also on the branch '
        "<code>executions/&lt;id&gt;</code>.</p></section></noscript>"
    )
    return page("Execution", body, root="", active="executions", campaign=data.campaign,
                generated=data.generated, with_data=False)


__all__ = ["DETAILS_DIR", "shard_key", "page_href", "detail_entry", "render_shard", "parse_shard",
           "execution_shell"]
