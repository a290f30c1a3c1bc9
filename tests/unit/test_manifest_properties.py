"""Property-based tests of the manifest and profile loaders (Hypothesis).

Whatever the input (random YAML-shaped text, random bytes, random keys, random edits of a valid manifest),
the loader answers with a valid Manifest or with located one-line errors (`orchestra.yaml:LINE:COL: ...`,
exit code 3), never another exception, and within the deadline.

Example counts are bounded: `CI=true` selects the "loader-ci" profile (deterministic, sized for a 2-core
machine); otherwise "loader-dev" runs fewer, random examples. HYPOTHESIS_PROFILE=loader-long digs deeper.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import string
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestra.errors import ManifestError, ProfileError
from orchestra.manifest import check_manifest, parse_manifest
from runaway.profiles import build_profile, load_profile_file

_COMMON = dict(database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("loader-ci", max_examples=100, deadline=timedelta(seconds=5), derandomize=True,
                          **_COMMON)
settings.register_profile("loader-dev", max_examples=60, deadline=timedelta(seconds=2), **_COMMON)
settings.register_profile("loader-long", max_examples=3000, deadline=timedelta(seconds=2), **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or ("loader-ci" if os.environ.get("CI") == "true" else "loader-dev")
LOADER = settings.get_profile(PROFILE)

LOCATED = re.compile(r"^orchestra\.yaml:\d+:\d+: [^\n]+$")
VALID = """\
name: full
description: every feature
command: python t.py --lr {lr:.3g} --layers {layers} --opt {opt} --mom {momentum}
parameters:
  lr: {type: float, low: 1.0e-5, high: 1.0e-1, log: true, steps: 3, default: 0.01}
  layers: {type: int, low: 1, high: 8}
  opt: {choices: [sgd, adam], default: adam}
  momentum: {type: float, low: 0, high: 0.99, when: {opt: sgd}}
  seed: {value: 0}
env: {OMP_NUM_THREADS: 1}
outputs: [metrics.json, "plots/*.png"]
objective: {metric: val_loss, from: metrics.json, goal: minimize}
repeats: 2
timeout: 1h30m
retries: {max: 2, on: [node-failure, walltime]}
search: {algorithm: bayes, budget: 60, parallel: 8, seed: 1}
profile: local
profiles:
  local: {kind: local, slots: 4}
  cluster: &c {kind: slurm, host: mycluster, allocation: {nodes: 2, walltime: 1h}}
  big:
    <<: *c
    slots_per_node: 16
"""
TOP_KEYS = ["name", "description", "command", "parameters", "env", "outputs", "objective", "repeats", "timeout",
            "retries", "search", "profile", "profiles"]


def assert_clean(text: str | bytes) -> None:
    manifest, errors = parse_manifest(text, "orchestra.yaml")
    if manifest is not None:
        assert errors == []
        return
    assert errors, "neither a manifest nor an error"
    for error in errors:
        assert isinstance(error, ManifestError) and error.exit_code == 3
        assert LOCATED.match(str(error)), repr(str(error))


# -- strategies -----------------------------------------------------------------------------------------
TOKENS = st.sampled_from([
    "name", "command", "parameters", "choices", "type", "low", "high", "profiles", "kind", "slurm", "x", "{lr}",
    ":", ": ", "- ", "-", "[", "]", "{", "}", ",", "'", '"', "#", "&a", "*a", "&b", "*b", "<<", "!!str", "!!int",
    "!!map", "!x", "?", "|", ">", "---", "...", "%YAML 1.2", "\t", "  ", " ", "0", "1.5", "-3", ".inf", "null",
    "true", "~", "2024-01-01", "0x1F", "\\", "%", "@", "`", "é", "\u2028", "\x85", "\ufeff", "\x00", "\r",
])
LINES = st.lists(st.tuples(st.integers(0, 6), st.lists(TOKENS, max_size=8)), max_size=25)


@st.composite
def yamlish(draw: Any) -> str:
    """Lines of indentation and YAML tokens: most are broken, some are valid documents of odd shape."""
    return "".join(" " * indent + "".join(tokens) + "\n" for indent, tokens in draw(LINES))


scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12))
json_data = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) |
                         st.dictionaries(st.sampled_from(TOP_KEYS) | st.text(max_size=8), kids, max_size=5),
                         max_leaves=12)


@st.composite
def with_random_keys(draw: Any) -> str:
    """The valid manifest's data with random keys and values added or replaced, at any depth, as JSON."""
    from orchestra.yamlio import load_plain

    data = load_plain(VALID)

    def poke(node: Any, depth: int) -> None:
        if not isinstance(node, dict) or depth > 3:
            return
        for _ in range(draw(st.integers(0, 2))):
            new_key = st.text(string.ascii_letters + "_-. ", max_size=10)
            key = draw(st.sampled_from(sorted(map(str, node))) | new_key if node else new_key)
            node[key] = draw(json_data)
        for value in list(node.values()):
            if draw(st.booleans()):
                poke(value, depth + 1)

    poke(data, 0)
    return json.dumps(data, allow_nan=True)


@st.composite
def mutated(draw: Any) -> str:
    """The valid manifest after a few random insertions, deletions and replacements of characters."""
    text = VALID
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from([":", " ", "\n", "-", "[", "{", "'", '"', "*c", "&c", "\t", "x", "0", "#"])
                     | st.text(max_size=3))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        else:
            text = text[:at] + piece + text[at + len(piece):]
    return text


# -- properties -----------------------------------------------------------------------------------------
def test_the_valid_manifest_is_valid() -> None:
    manifest, errors = parse_manifest(VALID)
    assert errors == [] and manifest is not None


@LOADER
@given(yamlish())
def test_random_yaml_documents(text: str) -> None:
    assert_clean(text)


@LOADER
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    assert_clean(data)
    assert_clean(b"name: d\ncommand: x\ndescription: " + data)


@LOADER
@given(with_random_keys())
def test_random_keys_and_values(text: str) -> None:
    assert_clean(text)


@LOADER
@given(mutated())
def test_mutations_of_a_valid_manifest(text: str) -> None:
    assert_clean(text)


@LOADER
@given(json_data)
def test_any_json_document(data: Any) -> None:
    assert_clean(json.dumps(data))


@LOADER
@given(st.binary(max_size=300) | yamlish().map(str.encode))
def test_manifest_and_profile_files(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orchestra.yaml"
        path.write_bytes(data)
        manifest, errors = check_manifest(path)
        assert (manifest is None) == bool(errors)
        for error in errors:
            assert isinstance(error, ManifestError) and re.match(r"^\S+:\d+:\d+: [^\n]+$", str(error)), str(error)
        try:
            profile = load_profile_file(path)
        except ProfileError as exc:
            assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: [^\n]+$", str(exc)), str(exc)
            return
        try:
            build_profile("p", profile, str(path))
        except ProfileError as exc:
            assert "\n" not in str(exc) and "'p'" in str(exc)


@LOADER
@given(st.from_regex(r"[-+]?[0-9._eExXoObB+a-fA-F:~]{0,9}", fullmatch=True)
       | st.sampled_from(["yes", "No", "on", "null", "Null", "NULL", "~", "true", "TRUE", "False", ".inf", "-.INF",
                          ".nan", "2024-01-01", "2024-01-01T10:00:00Z", "0o17", "0x1F", "1_000", "<<", "="]))
def test_scalars_read_as_ruamel_reads_them(word: str) -> None:
    # The composer builds common numbers itself: it must agree with ruamel's own safe loader (YAML 1.2).
    from ruamel.yaml import YAML

    from orchestra.yamlio import YamlError, load_plain

    text = f"a: {word}\n"
    try:
        expected = YAML(typ="safe", pure=False).load(text)
    except Exception:
        try:
            got = load_plain(text)
        except YamlError:
            return  # both refuse it
        # `<<` and `=` as values: ruamel's safe loader has no constructor for their tags; they are text here
        assert word in ("<<", "=") and got == {"a": word}
        return
    assert repr(load_plain(text)) == repr(expected), (word, load_plain(text), expected)


PLAIN = (str, int, float, bool, type(None), bytes, datetime.date)


def is_plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, PLAIN) and is_plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    return isinstance(value, PLAIN)


@LOADER
@given(yamlish() | mutated())
def test_the_plain_loader_gives_plain_data_or_a_located_error(text: str) -> None:
    from orchestra.yamlio import YamlError, load_plain

    try:
        data = load_plain(text)
    except YamlError as exc:
        assert exc.line >= 1 and exc.col >= 1 and "\n" not in exc.message
        return
    assert is_plain(data), repr(data)
