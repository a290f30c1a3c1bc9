"""Shell completion of profile names (argcomplete completers; see orchestra.cli for the wiring).

Completers run inside the shell's Tab press, so they read as little as possible and never fail: a broken
manifest completes nothing rather than printing an error into the user's command line.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .profiles import personal_dir

MANIFEST = "orchestra.yaml"


def _manifest_near(start: Path) -> Path | None:
    for directory in [start, *start.parents]:
        if (directory / MANIFEST).is_file():
            return directory / MANIFEST
        if (directory / ".git").exists():
            return None
    return None


def profile_names(directory: str | Path = ".") -> list[str]:
    """`local`, the manifest's shared profiles and the personal ones, sorted."""
    names = {"local"}
    manifest = _manifest_near(Path(directory).resolve())
    if manifest is not None:
        try:
            from orchestra.yamlio import load_plain

            data = load_plain(manifest.read_bytes()[:1_000_000])
            names.update(str(n) for n in ((data or {}).get("profiles") or {}))
        except Exception:  # noqa: BLE001 - a completion never reports errors
            pass
    try:
        names.update(p.stem for p in personal_dir().glob("*.yaml"))
    except OSError:
        pass
    return sorted(names)


def complete_profiles(prefix: str, parsed_args: Any = None, **_kwargs: Any) -> Iterable[str]:
    directory = getattr(parsed_args, "directory", None) or "."
    return [n for n in profile_names(directory) if n.startswith(prefix)]
