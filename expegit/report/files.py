"""Copying an execution's output files into the site, without ever writing outside it.

Output paths come from execution records, which collaborators push: a path such as ``../../.bashrc`` or
``/etc/passwd`` must be refused, not followed. Files land in ``files/<page-name>/<path>`` inside a freshly
created directory, so no pre-existing symlink can redirect a write either.

Small text outputs (at most ``PREVIEW_LIMIT`` bytes of UTF-8, e.g. a ``metrics.json``) are not copied at all:
their whole content is already the preview the execution page shows from its details shard, and the page
offers it as a download from memory. Why: at 100,000 executions a copy each is 100,000 directories and
files, which dominated the time to write (and to replace) a report and made the site's file count grow
with the campaign; images and larger files are still copied.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

IMAGE_TYPES = frozenset({"png", "jpg", "jpeg", "gif", "svg", "webp"})
TEXT_TYPES = frozenset({"json", "txt", "csv", "tsv", "yaml", "yml", "log", "md", "toml", "ini", "cfg", "out"})
# Opened directly from file://, these could run scripts the execution wrote; offer them as downloads.
ACTIVE_TYPES = frozenset({"html", "htm", "xhtml", "svg", "xml", "js", "mjs", "pdf"})
PREVIEW_LIMIT = 4096
FILES_DIR = "files"


@dataclass(frozen=True)
class OutputEntry:
    """One output as the execution page lists it; ``href`` is relative to the site root."""

    path: str
    href: str | None
    size: int
    kind: str  # "image", "text" or "other"
    preview: str | None = None
    problem: str | None = None
    inline: bool = False  # the content is ``preview`` in full; no file in the site (href is None)

    @property
    def active(self) -> bool:
        return extension(self.path) in ACTIVE_TYPES


def extension(path: str) -> str:
    return posixpath.splitext(path)[1][1:].lower()


def safe_relpath(path: object) -> str | None:
    """A normalized relative POSIX path, or None when the path could escape the site or is unusable."""
    if not isinstance(path, str) or not path or "\x00" in path or path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." or len(p.encode("utf-8", "surrogatepass")) > 255 for p in parts):
        return None
    try:
        "/".join(parts).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be a file name we can write
        return None
    return "/".join(parts)


def href_for(page_name: str, rel: str) -> str:
    """A URL-quoted, site-relative link: a name like ``a#b?.png`` must not become a fragment or query."""
    return "/".join([FILES_DIR, quote(page_name, safe="")] + [quote(p, safe="") for p in rel.split("/")])


def inline_text(rel: str, content: bytes) -> str | None:
    """The content as text when the site keeps it inline (small, UTF-8, a text type), else None."""
    ext = extension(rel)
    if len(content) > PREVIEW_LIMIT or not (ext in TEXT_TYPES or ext == ""):
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def write_outputs(site_root: Path, page_name: str, files: Mapping[str, bytes]) -> list[OutputEntry]:
    """Write every safe output under ``files/<page_name>/`` and describe each (including refused ones).

    Plain ``os`` calls rather than pathlib: with thousands of executions, file creation is the cost.
    """
    entries: list[OutputEntry] = []
    base = os.path.join(site_root, FILES_DIR, page_name)
    made: set[str] = set()
    for raw_path in sorted(files, key=str):
        content = files[raw_path]
        if isinstance(content, str):
            content = content.encode("utf-8", "replace")
        shown = str(raw_path)
        rel = safe_relpath(raw_path)
        if rel is None:
            entries.append(OutputEntry(shown, None, len(content), "other", problem="unsafe path, not copied"))
            continue
        text = inline_text(rel, content)
        if text is not None:
            entries.append(OutputEntry(rel, None, len(content), "text", text, inline=True))
            continue
        target = os.path.join(base, rel)
        parent = os.path.dirname(target)
        try:
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            with open(target, "xb") as handle:
                handle.write(content)
        except OSError as exc:  # e.g. "a" is a file and "a/b" is another output
            entries.append(OutputEntry(rel, None, len(content), "other", problem=f"not copied: {exc.strerror}"))
            continue
        ext = extension(rel)
        kind = "image" if ext in IMAGE_TYPES else "other"
        preview = None
        if kind == "other" and len(content) <= PREVIEW_LIMIT and (ext in TEXT_TYPES or ext == ""):
            try:
                preview = content.decode("utf-8")
                kind = "text"
            except UnicodeDecodeError:
                preview = None
        entries.append(OutputEntry(rel, href_for(page_name, rel), len(content), kind, preview))
    return entries
