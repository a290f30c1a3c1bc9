"""Writing the whole site: ``write_report`` is the one entry point the git layer calls.

Layout: index.html, executions.html, plots.html, analysis.html, compare.html, execution.html (+ details/<xx>.js shards), data.js,
packages.js (the compare view's package lists),
assets/, files/<execution>/<output path>, curves/<execution>.svg (learning curves, when reported).

The site is built in a sibling temporary directory and swapped in with renames, so a reader (or a web
server behind a post-receive hook) never sees a half-written report, and outputs of executions that no
longer exist do not linger from a previous render.
"""
from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from importlib import resources
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestra.errors import UsageError

from .datafile import DATA_FILE, FORMAT, build_payload, render_data_js
from .execution_page import DETAILS_DIR, detail_entry, execution_shell, page_href, render_shard, shard_key
from .files import FILES_DIR, OutputEntry, write_outputs
from .fmt import safe_page_name
from .model import OutputLoader, ReportData, objective_label
from .analysis import analysis_page
from .packagesfile import PACKAGES_FILE, render_packages_js
from .pages import compare_page, executions_page, overview_page, plots_page
from .plots import progress_plot
from .reuse import previous_details, reuse_outputs

MARKER = ".orchestra-report"
ASSETS = ("report.css", "report.js")
CURVES_DIR = "curves"  # learning curves of executions that reported metrics, one SVG each


def _write(path: Path, text: str) -> None:
    # 'replace': a lone surrogate in some odd record shows as '?' instead of aborting the report.
    path.write_bytes(text.encode("utf-8", "replace"))


def page_names(data: ReportData) -> list[str]:
    """Unique, filesystem-safe page names, in report order (duplicate ids get a suffix)."""
    used: set[str] = set()
    names = []
    for view in data.executions:
        base = safe_page_name(view.record.id)
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        names.append(name)
    return names


def _copy_assets(root: Path) -> None:
    target = root / "assets"
    target.mkdir()
    static = resources.files("expegit.report") / "static"
    for name in ASSETS:
        (target / name).write_bytes((static / name).read_bytes())


def render_site(data: ReportData, root: Path, load_outputs: OutputLoader | None = None,
                previous: Path | None = None) -> None:
    """Render into an existing empty directory ``root`` (no swapping; ``write_report`` adds that).

    With ``previous`` (the report being replaced) and ``load_outputs``, outputs of unchanged final
    executions are hard-linked from it instead of loaded again (see reuse.py).
    """
    names = page_names(data)
    pages = [page_href(name) for name in names]
    _copy_assets(root)
    _write(root / DATA_FILE, render_data_js(build_payload(data, pages)))
    metric, goal = objective_label(data)
    progress = progress_plot([v.record for v in data.executions], metric, goal)
    _write(root / "index.html", overview_page(data, pages, progress))
    _write(root / "executions.html", executions_page(data))
    _write(root / "plots.html", plots_page(data, progress))
    _write(root / "analysis.html", analysis_page(data, pages))
    _write(root / "compare.html", compare_page(data))
    _write(root / PACKAGES_FILE, render_packages_js(data.packages, data.packages_left_out))
    _write(root / "execution.html", execution_shell(data))
    shards: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    last = len(names) - 1
    # Only a previous site that copied output files has any to hard-link. Without one (every output small
    # enough to sit inline in the shards) parsing its shards and comparing each record costs more than
    # reading the outputs again: at 100,000 executions 20 s of CPU and 450 MB for 129 MB of old shards.
    reusable = previous is not None and (previous / FILES_DIR).is_dir()
    old_details = previous_details(previous) if load_outputs is not None and reusable else {}
    for k, (view, name) in enumerate(zip(data.executions, names)):
        outputs = dict(view.output_files)
        entries: list[OutputEntry] | None = None
        if load_outputs is not None:
            if not outputs and previous is not None and name in old_details:
                entries = reuse_outputs(previous, root, name, view.record, old_details[name])
            if entries is None:
                outputs.update(load_outputs(str(view.record.id)))
        if entries is None:
            entries = write_outputs(root, name, outputs) if outputs else []
        shards[shard_key(name)][name] = entry = detail_entry(
            view, entries, data.commits.get(str(view.record.commit)),
            pages[k - 1] if k > 0 else None, pages[k + 1] if k < last else None, data.parameter_types)
        if view.curve:
            entry["curve"] = write_curve(root, name, view.curve, metric)
    (root / DETAILS_DIR).mkdir()
    for key, entries_by_name in shards.items():
        _write(root / DETAILS_DIR / f"{key}.js", render_shard(entries_by_name))
    _write(root / MARKER, FORMAT + "\n")


def write_curve(root: Path, name: str, points: Sequence[Mapping[str, Any]], metric: str) -> str | None:
    """The execution page's learning curve as ``curves/<name>.svg`` (an image: the page's script renders
    text only); a file only for executions that reported metrics. Returns its href."""
    from .curves import execution_curve_svg

    document = execution_curve_svg(points, prefer=metric)
    if document is None:
        return None
    (root / CURVES_DIR).mkdir(exist_ok=True)
    _write(root / CURVES_DIR / f"{name}.svg", document)
    return f"{CURVES_DIR}/{name}.svg"


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector for a report's build.

    Why: a report allocates millions of small dicts, lists and strings that refcounting frees (they hold no
    cycles), and the collector's full passes re-traverse all of them again and again as the heap grows: at
    30,000 synthetic executions 40% of the render's CPU (12.4 s against 7.6 s paused), for the same peak
    memory. Nested uses keep the outer state.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def write_report(data: ReportData, out_dir: Path | str, *, load_outputs: OutputLoader | None = None) -> Path:
    """Render ``data`` as a static site in ``out_dir`` (replaced atomically) and return its index.html.

    ``out_dir`` may be missing, empty, or a previous report; anything else is refused rather than
    deleted. ``load_outputs(id)`` is called once per execution for output files not already in the view,
    except for finished executions unchanged since the report being replaced: their files are reused.
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UsageError(f"{out_dir} exists and is not a directory", hint="choose another --output")
        if any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
            raise UsageError(f"{out_dir} is not empty and holds no Orchestra report; refusing to replace it",
                             hint="choose an empty or new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is meant to be served and shared
        previous = out_dir if (out_dir / MARKER).is_file() else None
        with no_cyclic_gc():
            render_site(data, tmp, load_outputs, previous)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rename(out_dir, old / "site")
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / "index.html"
