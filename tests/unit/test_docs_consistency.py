"""What the README, the tutorial, the schemas and the example profiles say agrees with what the code does.

Each test reads a claim where users read it (a table, a schema description, a comment in an example) and
checks it against the behaviour or the default in code, so a changed default fails here instead of
leaving two documents that contradict each other. Claims are found by pattern, and each test also checks
that it found some, so a reworded document cannot make it pass by matching nothing.
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from orchestra import errors
from orchestra.durations import parse_duration
from orchestra.errors import ProfileError
from parasearch.study import StudyConfig
from runaway.check import _check_agent_python
from runaway.profiles import build_profile, load_profile_file

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
TUTORIAL = (ROOT / "docs" / "tutorial.md").read_text()
PROFILE_SCHEMA = json.loads((ROOT / "schemas" / "profile.schema.json").read_text())
MANIFEST_SCHEMA = json.loads((ROOT / "schemas" / "orchestra.schema.json").read_text())
EXAMPLES = sorted((ROOT / "runaway" / "examples").glob("*.yaml"))

MINIMAL = {
    "local": {"kind": "local"},
    "ssh": {"kind": "ssh", "host": "h"},
    "slurm": {"kind": "slurm", "host": "h"},
    "command": {"kind": "command", "host": "h", "start": "s", "list_nodes": "l {job_id}",
                "cancel": "c {job_id}", "launch": "x {node}"},
}


# ------------------------------------------------------------------------------- the agent's python
class _ProbedHost:
    """Answers the version probe of `runaway test` as a host with that python3 would."""

    name = "h"

    def __init__(self, version: str) -> None:
        self.version = version

    def run(self, command: str, **_: Any) -> Any:
        return type("Result", (), {"stdout": self.version + "\n"})()


def _oldest_accepted_agent_python() -> str:
    for version in ("3.4", "3.5", "3.6", "3.7", "3.8", "3.9", "3.10"):
        try:
            _check_agent_python(_ProbedHost(version), "python3", 1.0)  # type: ignore[arg-type]
        except ProfileError:
            continue
        return version
    raise AssertionError("runaway test refuses every python3")


def test_every_document_states_the_agent_python_that_runaway_test_checks() -> None:
    oldest = _oldest_accepted_agent_python()
    texts = {"README.md": README, "schemas/profile.schema.json": json.dumps(PROFILE_SCHEMA, ensure_ascii=False)}
    texts.update({f"runaway/examples/{p.name}": p.read_text() for p in EXAMPLES})
    claims = [(name, m.group(1)) for name, text in texts.items()
              for m in re.finditer(r"python3`?\s*(?:≥|>=)\s*(\d\.\d+)", text)]
    assert len(claims) >= 3, claims  # README, and the ssh and slurm launchers in the schema
    assert {version for _, version in claims} == {oldest}, claims


def test_the_agent_parses_as_the_oldest_python_it_claims_to_run_on() -> None:
    """Syntax newer than the documented minimum (a walrus, a match) would fail on such a host at start."""
    major, minor = map(int, _oldest_accepted_agent_python().split("."))
    sources = sorted((ROOT / "runaway" / "agent").glob("*.py"))  # the package the shipped zipapp is built from
    assert sources
    for source in sources:
        ast.parse(source.read_text(), filename=str(source), feature_version=(major, minor))


def test_the_tutorial_asks_for_the_python_setup_py_requires() -> None:
    required = re.search(r'python_requires=">=(\d\.\d+)"', (ROOT / "setup.py").read_text())
    assert required
    stated = re.findall(r"Python (\d\.\d+) or later", TUTORIAL)
    assert stated and set(stated) == {required.group(1)}, stated


# ------------------------------------------------------------------------------- profile defaults
def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if not ref:
        return node
    target: Any = PROFILE_SCHEMA
    for part in ref.lstrip("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _literal(text: str) -> Any:
    text = text.strip()
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"\d+", text):
        return int(text)
    try:
        return parse_duration(text)
    except Exception:
        return text


def _schema_defaults() -> list[tuple[str, str, Any]]:
    """(kind, dotted key, stated default) for every `(default X)` with a literal X in the profile schema."""
    found = []
    for kind in MINIMAL:
        properties = PROFILE_SCHEMA["$defs"][kind]["properties"]
        nested = {"allocation": PROFILE_SCHEMA["$defs"]["allocation"]["properties"]}
        items = [(key, _resolve(value)) for key, value in properties.items() if isinstance(value, dict)]
        items += [(f"{outer}.{key}", _resolve(value)) for outer, props in nested.items() if outer in properties
                  for key, value in props.items()]
        for key, spec in items:
            match = re.search(r"\(default ([^):;]+)[);]", spec.get("description", ""))
            if match:
                found.append((kind, key, _literal(match.group(1))))
            match = re.match(r"(\w+) \(default\)", spec.get("description", ""))
            if match:
                found.append((kind, key, match.group(1)))
    return found


def _value(profile: Any, key: str) -> Any:
    if key == "slots" and profile.kind == "ssh":
        return profile.hosts[0].slots  # per host
    value = profile
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_every_default_the_profile_schema_states_is_the_default_a_profile_gets() -> None:
    stated = _schema_defaults()
    assert len(stated) >= 20, stated  # each remote kind states a dozen
    wrong = []
    for kind, key, default in stated:
        actual = _value(build_profile("p", MINIMAL[kind]), key)
        if actual != default:
            wrong.append(f"{kind}.{key}: the schema says {default!r}, a profile gets {actual!r}")
    assert not wrong, wrong


def _commented_defaults(text: str) -> list[tuple[str, str, str]]:
    """(key, value, comment) of `key: value  # ... (default) ...` lines in YAML shown to users."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^\s*(\w+):\s*([^#\s]+)\s*#(.*)$", line)
        if match and "default" in match.group(3):
            out.append(match.groups())
    return out


def test_the_example_profiles_say_what_the_default_launcher_is() -> None:
    checked = 0
    for path in EXAMPLES:
        kind = load_profile_file(path)["kind"]
        default = build_profile("p", MINIMAL[kind]).launcher
        for key, value, comment in _commented_defaults(path.read_text()):
            if key != "launcher":
                continue
            named = re.search(r"(\w+) \(default\)|default:? (\w+)", comment)
            assert named, f"{path.name}: {comment!r} says default without naming it"
            assert default in (named.group(1), named.group(2)), f"{path.name}: {comment!r}, but the default is {default}"
            checked += 1
    assert checked >= 1


def test_the_readme_profile_examples_mark_their_defaults_truly() -> None:
    """`key: value  # default...` in the README's profile example means value is the default for its kind."""
    section = README.split("## Running elsewhere", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    kinds = {"lab": "ssh", "cluster": "slurm"}
    checked = 0
    profile = None
    for line in section.splitlines():
        if m := re.match(r"^  (\w+):\s*(#.*)?$", line):
            profile = kinds[m.group(1)]
            continue
        m = re.match(r"^\s*(\w+):\s*([^#\s]+)\s*#\s*(?:the )?default\b", line)
        if m and profile:
            value = _value(build_profile("p", MINIMAL[profile]), m.group(1))
            assert str(value) == m.group(2), (line, value)
            checked += 1
    assert checked >= 2, section


# ------------------------------------------------------------------------------- search defaults
def test_the_search_defaults_the_schema_and_readme_state_are_the_studys() -> None:
    fields = {f.name: f.default for f in dataclasses.fields(StudyConfig)}
    search = MANIFEST_SCHEMA["properties"]["search"]["properties"]
    stated = {key: int(m.group(1)) for key, spec in search.items()
              if (m := re.search(r"\(default (\d+)", spec.get("description", "")))}
    readme = README.split("## Search (`parasearch`)", 1)[1].split("```", 2)[1]
    stated_readme = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\s*(\w+):.*#.*\bdefault (\d+)", readme, re.M)}
    assert {"seed", "parallel"} <= stated.keys() and {"seed", "parallel"} <= stated_readme.keys()
    for key, value in [*stated.items(), *stated_readme.items()]:
        assert fields[key] == value, (key, value, fields[key])


# ------------------------------------------------------------------------------- exit codes
def test_the_readme_exit_code_table_is_core_errors() -> None:
    table = README.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    documented = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", table, re.M)}
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.OrchestraError)]
    codes = {c.exit_code for c in classes} | {errors.EXIT_OK, errors.EXIT_EXECUTIONS_FAILED, errors.EXIT_INTERRUPTED}
    assert documented == codes


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_profiles_name_only_tests_that_exist(path: Path) -> None:
    for name in re.findall(r"tests/[\w/]+\.py", path.read_text()):
        assert (ROOT / name).exists(), f"{path.name} cites {name}, which does not exist"


# ------------------------------------------------------------------------------- the CLI tables
def _actions(parser: Any, words: list[str]) -> list[tuple[str, ...]] | None:
    """The options of the subcommand ``words``, each as its option strings (None if there is no such one)."""
    import argparse

    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            return None
        parser = subs[0].choices[word]
    return [tuple(action.option_strings) for action in parser._actions
            if action.option_strings and action.help != argparse.SUPPRESS]  # hidden ones are not for users


def _documented_commands() -> list[tuple[str, list[str], set[str], str]]:
    """(program, subcommand words, options, the README line) of each command syntax the README shows."""
    found = []
    for line in README.splitlines():
        m = re.match(r"^\| `((?:expegit|parasearch) [^`]*)` \|", line) or re.match(r"^    (runaway \w+ .*)$", line)
        if not m:
            continue
        program, *rest = m.group(1).split()
        words = []
        for word in rest:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            words.append(word)
        options = set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", m.group(1)))
        found.append((program, words, options, line.strip()))
    return found


def test_every_option_the_readme_shows_exists_and_every_option_of_a_command_is_shown() -> None:
    from expegit.cli import _parser as expegit_parser
    from parasearch.cli import _parser as parasearch_parser
    from runaway.cli import _parser as runaway_parser

    parsers = {"expegit": expegit_parser(), "parasearch": parasearch_parser(), "runaway": runaway_parser()}
    documented = _documented_commands()
    assert len(documented) >= 20, documented
    shown: dict[tuple[str, ...], set[str]] = {}
    for program, words, options, line in documented:
        real = _actions(parsers[program], words)
        assert real is not None, f"README shows `{program} {' '.join(words)}`, which does not exist: {line}"
        unknown = options - {s for strings in real for s in strings}
        assert not unknown, f"README shows {sorted(unknown)} that `{program} {' '.join(words)}` lacks: {line}"
        shown.setdefault((program, *words), set()).update(options)
    hidden = {"-h", "--debug", "-C"}  # common to all, described once above the table
    missing = {}
    for key, options in shown.items():
        actions = _actions(parsers[key[0]], list(key[1:])) or []
        lacking = [strings[-1] for strings in actions if not (set(strings) & (options | hidden))]
        if lacking:
            missing[" ".join(key)] = lacking
    assert not missing, f"options the README's command tables do not show: {missing}"


# ------------------------------------------------------------------------------- the dev cluster
def test_the_docs_list_the_packages_and_exports_devcluster_sh_has() -> None:
    """Bringing the cluster up needs root because it installs these: whoever reads that must see them all."""
    script = (ROOT / "tests" / "cluster" / "devcluster.sh").read_text()
    packages = set(re.findall(r"missing\+=\(([\w.-]+)\)", script))
    assert {"openssh-server", "slurmctld", "munge"} <= packages, packages
    cluster_readme = (ROOT / "tests" / "cluster" / "README.md").read_text()
    for name, text in (("docs/tutorial.md", TUTORIAL), ("tests/cluster/README.md", cluster_readme)):
        listed = re.search(r"Debian packages \(`([^`]+)`", text)
        assert listed, name
        assert set(listed.group(1).split()) == packages, (name, sorted(packages ^ set(listed.group(1).split())))
    exports = {e for e in re.findall(r"^export (\w+)=", script, re.M) if e.startswith("ORCHESTRA_DEVCLUSTER_")}
    assert len(exports) >= 5, exports
    missing = {e for e in exports if f"`{e}" not in cluster_readme}
    assert not missing, f"tests/cluster/README.md does not list the exports {sorted(missing)}"
