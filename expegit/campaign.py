"""A campaign: a git repository with an ``orchestra.yaml`` at its root. Opening, creating and checking one."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from importlib import resources
from pathlib import Path

from orchestra.errors import ManifestError, RepositoryError, UsageError
from orchestra import __version__
from orchestra.manifest import MANIFEST_NAME, Manifest, check_manifest, load_manifest, manifest_from_checked_data

from .gitstore import GitStore
from .starter import find_entry_script, render_starter_manifest

STARTER_MANIFEST = """\
# orchestra.yaml: the manifest of this campaign. `expegit check` validates it.
# Every key is described in Orchestra's README ("Manifest reference") and its JSON Schema.
name: {name}

# The command one execution runs, from a fresh copy of this repository's code at the commit it runs.
# {{placeholders}} are replaced by parameter values, always shell-quoted.
command: python experiment.py --lr {{lr}} --seed {{seed}}

parameters:
  lr:   {{type: float, low: 1.0e-4, high: 1.0e-1, log: true, default: 1.0e-2, steps: 4}}
  seed: {{type: int, low: 0, high: 4, default: 0}}

# Files an execution produces (globs, relative to its run directory); they are committed to its branch.
outputs: [metrics.json]

# How an execution is judged: a key of a JSON output (or `pattern:` a regex on stdout).
objective: {{metric: loss, from: metrics.json, goal: minimize}}

# timeout: 2h
# retries: {{max: 2, on: [node-failure, timeout]}}
# search: {{algorithm: bayes, budget: 40, parallel: 4, seed: 1}}

profile: local
profiles:
  local: {{kind: local}}
"""


@dataclasses.dataclass
class Campaign:
    store: GitStore
    _manifest: Manifest | None = None

    @property
    def root(self) -> Path:
        return self.store.root

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def workdir(self) -> Path:
        """Orchestra's private state: inside .git, so it is never committed nor in the user's way."""
        return self.store.git_dir / "orchestra"

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = self._cached_manifest() or self._load_and_cache_manifest()
        return self._manifest

    # The last manifest that passed every check, keyed by a hash of its text and Orchestra's version: a
    # read-only command on an unchanged manifest needs neither the YAML round-trip nor the schema.
    def _manifest_key(self, text: bytes) -> str:
        return hashlib.sha256(text + b"\0" + __version__.encode()).hexdigest()

    def _cached_manifest(self) -> Manifest | None:
        try:
            text = self.manifest_path.read_bytes()
            cached = json.loads((self.workdir / "manifest.json").read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(cached, dict) or cached.get("key") != self._manifest_key(text):
            return None
        return manifest_from_checked_data(cached["data"], self._shown_path())

    def _load_and_cache_manifest(self) -> Manifest:
        manifest = load_manifest(self._shown_path())
        try:
            text = self.manifest_path.read_bytes()
            self.workdir.mkdir(parents=True, exist_ok=True)
            tmp = self.workdir / f"manifest.json.{os.getpid()}"
            tmp.write_text(json.dumps({"key": self._manifest_key(text), "data": manifest.data}), "utf-8")
            os.replace(tmp, self.workdir / "manifest.json")
        except OSError:
            pass  # a read-only repository: every command validates from scratch
        return manifest

    def _shown_path(self) -> str:
        """The manifest's path as the user sees it: relative to where they are, when it can be."""
        try:
            return os.path.relpath(self.manifest_path)
        except (ValueError, OSError):  # another drive, or the current directory was deleted
            return str(self.manifest_path)

    def check(self) -> list[ManifestError]:
        # The search: section is checked with the rest of the manifest (orchestra.search), in core.
        manifest, errors = check_manifest(self._shown_path())
        if manifest is not None and self._manifest is None:
            self._manifest = manifest  # `expegit check` then prints its summary without parsing again
        return errors


def open_campaign(start: str | os.PathLike[str] = ".") -> Campaign:
    store = GitStore.discover(start)
    if not (store.root / MANIFEST_NAME).exists():
        raise RepositoryError(f"{store.root} has no {MANIFEST_NAME}: it is not a campaign",
                              hint="run `expegit init` here to adopt it")
    return Campaign(store)


def available_examples() -> list[str]:
    base = resources.files("expegit.examples")
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("_"))


def init_campaign(directory: Path, *, example: str | None = None) -> tuple[Campaign, str]:
    """Create or adopt a campaign; returns it and the commit that added the manifest."""
    directory = directory.resolve()
    manifest_path = directory / MANIFEST_NAME
    if manifest_path.exists():
        raise RepositoryError(f"{manifest_path} already exists: this is a campaign already",
                              hint="`expegit check` validates it")
    added: list[str] = []
    if example is not None:
        if example not in available_examples():
            raise UsageError(f"no example {example!r}; available: {', '.join(available_examples())}")
        if directory.exists() and any(p.name != ".git" for p in directory.iterdir()):
            raise UsageError(f"{directory} is not empty: give a new directory for the example")
        source = resources.files("expegit.examples").joinpath(example)
        with resources.as_file(source) as src:
            shutil.copytree(src, directory, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        added = sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                       if p.is_file() and ".git" not in p.relative_to(directory).parts)
    store = GitStore.init(directory)
    if example is None:
        name = directory.name or "campaign"
        script = find_entry_script(directory, os.listdir(directory))
        text = render_starter_manifest(name, script) if script else STARTER_MANIFEST.format(name=name)
        manifest_path.write_text(text, "utf-8")
        added = [MANIFEST_NAME]
    sha = store.commit_all(added, f"expegit init: {'example ' + example if example else 'add orchestra.yaml'}")
    return Campaign(store), sha


def untracked_files(root: Path) -> list[str]:
    """Files git does not track (ignored ones left out): what an execution's copy of the code lacks."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
                             capture_output=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(p for p in out.decode("utf-8", "surrogateescape").split("\0") if p)
