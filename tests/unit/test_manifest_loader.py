"""The manifest loader under hostile and large input: bounded aliases, sizes and nesting, located messages,
every independent problem in one run (core/yamlio.py, core/manifest.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestra import manifest as manifest_module
from orchestra.errors import ManifestError, did_you_mean
from orchestra.manifest import check_manifest, load_manifest, parse_manifest
from orchestra.yamlio import MAX_ALIAS_NODES, MAX_DEPTH, YamlError, load_located, load_plain
from tests.helpers import cli, make_campaign

HEAD = "name: demo\ncommand: python run.py --lr {lr}\nparameters:\n  lr: {type: float, low: 0.001, high: 0.1}\n"
LOCATED = re.compile(r"^orchestra\.yaml:\d+:\d+: [^\n]+$")


def laughs(levels: int = 9) -> str:
    """The "billion laughs": nine aliases per level, 9**levels strings once expanded, in ~500 bytes."""
    lines = ["name: lol", "command: echo {x}", "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    lines.append(f"parameters: {{x: {{choices: *a{levels - 1}}}}}")
    return "\n".join(lines) + "\n"


def only_error(text: str | bytes) -> str:
    manifest, errors = parse_manifest(text)
    assert manifest is None and len(errors) == 1, errors
    assert errors[0].exit_code == 3
    message = str(errors[0])
    assert LOCATED.match(message), message
    return message


# -- aliases, nesting, size -----------------------------------------------------------------------------
def test_billion_laughs_is_refused_at_the_alias_that_crosses_the_limit() -> None:
    text = laughs()
    assert len(text.encode()) < 600
    message = only_error(text)
    assert f"past {MAX_ALIAS_NODES} nodes" in message
    line = int(message.split(":")[1])
    assert text.splitlines()[line - 1].startswith("a")  # one of the alias lines, not the top of the file


def test_aliases_within_the_bound_still_work_including_merge_keys() -> None:
    text = HEAD + ("profiles:\n  base: &base {kind: slurm, host: c, slots_per_node: 4}\n"
                   "  big:\n    <<: *base\n    slots_per_node: 16\n")
    manifest, errors = parse_manifest(text)
    assert errors == [] and manifest is not None
    assert manifest.profiles["big"] == {"kind": "slurm", "host": "c", "slots_per_node": 16}


@pytest.mark.parametrize("text, needle, line", [
    ("a: &x [1, *x]\n", "refers to a mapping or list that contains it", 1),
    ("name: d\ncommand: *nowhere\n", "alias *nowhere has no anchor", 2),
    ("name: d\ncommand: x\n---\nname: e\n", "second YAML document", 3),
    ("name: d\ncommand: !!python/object:os.system x\n", "is not supported", 2),
    ("name: d\ncommand: x\n? [a, b]\n: c\n", "a key must be a plain value", 3),
    ("name: d\ncommand: \"x\x07\"\n", "U+0007 is not allowed", 2),
])
def test_unreadable_yaml_is_one_located_line(text: str, needle: str, line: int) -> None:
    message = only_error(text)
    assert needle in message and message.startswith(f"orchestra.yaml:{line}:"), message


def test_deep_nesting_is_refused_without_recursion() -> None:
    message = only_error("name: d\ncommand: x\nenv: " + "[" * 50_000)
    assert f"more than {MAX_DEPTH} levels" in message and message.startswith("orchestra.yaml:3:")


def test_a_manifest_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "orchestra.yaml"
    path.write_text(HEAD + "description: " + "x" * 5000 + "\n")
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 4096)
    manifest, errors = check_manifest(path)
    assert manifest is None and len(errors) == 1
    assert "over 0.00390625 MiB" not in str(errors[0])  # the limit is given in readable units
    assert re.search(r"the file is over [\d.]+ (MiB|KiB)", str(errors[0])), errors[0]


def test_the_real_limit_admits_a_few_megabytes_and_refuses_fifty(tmp_path: Path) -> None:
    path = tmp_path / "orchestra.yaml"
    with open(path, "w") as f:
        f.write("name: huge\ncommand: echo\ndescription: ")
        f.write("x" * (50 * 2**20))
    manifest, errors = check_manifest(path)
    assert manifest is None and "the file is over 8 MiB" in str(errors[0]) and errors[0].exit_code == 3


def test_three_hundred_thousand_choices_load() -> None:
    # Outcome only; the time it takes is bench/manifest_load.py's business.
    n = 300_000
    text = "name: big\ncommand: echo {c}\nparameters:\n  c:\n    choices:\n" + "".join(f"    - c{i}\n" for i in range(n))
    manifest, errors = parse_manifest(text)
    assert errors == [] and manifest is not None
    assert len(manifest.parameters["c"].choices) == n


def test_a_duplicate_among_many_choices_is_found_at_its_line() -> None:
    n = 50_000
    text = "name: big\ncommand: echo {c}\nparameters:\n  c:\n    choices:\n" + "".join(f"    - c{i}\n" for i in range(n))
    text += "    - c7\n"
    message = only_error(text)
    assert message.startswith(f"orchestra.yaml:{n + 6}:7: parameters.c.choices: 'c7' appears twice"), message


# -- messages -----------------------------------------------------------------------------------------
def test_duplicate_key_names_the_key_and_both_lines() -> None:
    message = only_error(HEAD + "timeout: 1h\nrepeats: 2\ntimeout: 2h\n")
    assert message.startswith("orchestra.yaml:7:1: key 'timeout' appears twice: first at line 5, again at line 7")
    assert "{" not in message.split("appears twice")[1]  # no dict repr


def test_nested_duplicate_key_says_where() -> None:
    message = only_error("name: d\ncommand: x {a}\nparameters:\n  a:\n    type: int\n    low: 1\n    high: 3\n"
                         "    low: 2\n")
    assert message.startswith("orchestra.yaml:8:5: key 'low' appears twice in parameters.a: first at line 6")


def test_non_utf8_bytes_give_line_and_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("orchestra.yaml").write_bytes(b"name: d\ncommand: x\ndescription: caf\xe9 cr\xe8me\n")
    _, errors = check_manifest("orchestra.yaml")
    assert len(errors) == 1 and errors[0].exit_code == 3
    assert str(errors[0]).startswith("orchestra.yaml:3:17: not UTF-8 text"), errors[0]
    assert "byte" in str(errors[0]) and "at byte" not in str(errors[0])
    assert str(only_error(b"name: d\n\xff: x\n")).startswith("orchestra.yaml:2:1: not UTF-8")


def test_unknown_top_level_key_gets_did_you_mean_even_for_a_case_slip() -> None:
    message = only_error(HEAD + "PROFILE: local\n")
    assert "unknown key 'PROFILE'" in message and "did you mean 'profile'?" in message
    assert did_you_mean("slot_per_node", ["slots_per_node", "host"]) == "did you mean 'slots_per_node'?"
    assert did_you_mean("zzz", ["host"]) is None


def test_manifest_profiles_are_checked_with_positions_and_suggestions() -> None:
    text = HEAD + "profiles:\n  cluster:\n    kind: slurm\n    hots: login\n    slots_per_node: many\n"
    manifest, errors = parse_manifest(text)
    assert manifest is None
    messages = [str(e) for e in errors]
    assert messages[0].startswith("orchestra.yaml:8:5: unknown key 'hots' in profiles.cluster") and \
        "did you mean 'host'?" in messages[0]
    assert messages[1].startswith("orchestra.yaml:9:21: profiles.cluster.slots_per_node: expected an integer")
    # A shared profile may leave `host` to each user's personal file: not an error here.
    assert parse_manifest(HEAD + "profiles:\n  cluster: {kind: slurm}\n")[1] == []


def test_independent_errors_are_all_reported_in_file_order() -> None:
    text = ("name: d\ncommand: python t.py {lr} {nope}\nparameters:\n  lr: {type: float, low: 2, high: 1}\n"
            "  opt: {choices: [a, b, a]}\n  bad: {tpye: int}\nrepeats: many\nname: again\ntimout: 5\n")
    manifest, errors = parse_manifest(text)
    assert manifest is None
    lines = [(e.line, str(e)) for e in errors]
    assert [line for line, _ in lines] == sorted(line for line, _ in lines)
    expected = [(2, "placeholder {nope} names no parameter"), (4, "the range is inverted"),
                (5, "'a' appears twice"), (6, "unknown key 'tpye' in parameters.bad"),
                (7, "repeats: expected an integer"), (8, "key 'name' appears twice"), (9, "unknown key 'timout'")]
    for line, needle in expected:
        assert any(got == line and needle in message for got, message in lines), (line, needle, lines)
    # `bad` is broken: what merely follows from it (an echo about its placeholder or kind) is not repeated
    assert len(errors) == len(expected), lines
    for error in errors:
        assert LOCATED.match(str(error)) and error.exit_code == 3


def test_load_manifest_says_how_many_more_problems_there_are(tmp_path: Path) -> None:
    path = tmp_path / "orchestra.yaml"
    path.write_text(HEAD + "repeats: many\ntimout: 5\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert "1 more problem: `expegit check` lists them all" in str(err.value)


def test_expegit_check_prints_every_problem(tmp_path: Path) -> None:
    root = make_campaign(tmp_path / "c", HEAD + "repeats: many\ntimout: 5\nrepeats: 3\n")
    result = cli(root, "expegit", "check")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert [line.split(":")[1] for line in lines] == ["5", "6", "7"], lines
    assert all(line.startswith("orchestra.yaml:") for line in lines) and "Traceback" not in result.stderr


# -- the plain loader other files use ------------------------------------------------------------------
def test_load_plain_is_bounded_too() -> None:
    with pytest.raises(YamlError) as err:
        load_plain(laughs())
    assert f"past {MAX_ALIAS_NODES} nodes" in str(err.value)
    with pytest.raises(YamlError, match="appears twice, at line 1 and line 2"):
        load_plain("a: 1\na: 2\n")
    assert load_plain("a: [1, 2.5, '3', true, null, 2024-01-01]\n")["a"][:5] == [1, 2.5, "3", True, None]


def test_positions_are_kept_for_keys_values_and_items() -> None:
    doc = load_located("a:\n  b: [x, {c: 1}]\n  d: e\n")
    assert doc.key_position(["a"], "d") == (3, 3)
    assert doc.position(["a", "d"]) == (3, 6)
    assert doc.position(["a", "b", 1, "c"]) == (2, 14)
    assert doc.position(["a", "missing", "deeper"]) == (2, 3)  # nearest ancestor written


def test_expegit_check_parses_the_manifest_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestra.yamlio as yamlio
    from expegit.campaign import open_campaign

    root = make_campaign(tmp_path / "c", HEAD)
    calls: list[int] = []
    real = yamlio.load_located
    monkeypatch.setattr(yamlio, "load_located", lambda *a, **k: calls.append(1) or real(*a, **k))
    campaign = open_campaign(root)
    assert campaign.check() == []
    assert campaign.manifest.name == "demo"  # what `expegit check` prints next
    assert len(calls) == 1


def test_messages_stay_short_for_huge_values_and_keys() -> None:
    manifest, errors = parse_manifest("name: d\ncommand: x\nrepeats: " + "x" * 100_000 + "\n" + "k" * 1000 + ": 1\n")
    assert manifest is None and len(errors) == 2
    too_long = parse_manifest("name: d\ncommand: x\ntimeout: " + "9" * 5000 + "\n")[1]
    assert len(too_long) == 1 and "is not a valid int" in str(too_long[0])
    # A hex int that Python builds but cannot print (repr raises past 4300 digits) is refused while loading.
    hex_int = parse_manifest("name: 0x" + "f" * 5000 + "\ncommand: x\n")[1]
    assert len(hex_int) == 1 and "is not a valid int" in str(hex_int[0])
    errors += hex_int
    for error in errors + too_long:
        assert LOCATED.match(str(error)) and len(str(error)) < 400, str(error)[:500]
