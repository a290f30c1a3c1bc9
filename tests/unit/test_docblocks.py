"""The docs test's machinery: the pure block parser, and the runner on tiny documents (bash only, no cluster)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.docblocks import DocFormatError, output_mismatches, parse_blocks, steps
from tests.docrunner import DocStepFailed, run_document

DOC = """\
# Title

```sh
echo one
```

Some text.

<!-- not run: placeholders -->
```sh
expegit show <id>
```

<!-- exits 3 -->
```bash
false
```

<!-- file: sub/train.py -->
```python
print("hi")
```

```text
printed output
```

```yaml
key: value
```
"""


def test_blocks_carry_their_language_line_and_what_their_mark_says() -> None:
    blocks = parse_blocks(DOC, "doc.md")
    assert [(b.language, b.line, b.run, b.expected_exit, b.file) for b in blocks] == [
        ("sh", 4, True, 0, None), ("sh", 11, False, 0, None), ("bash", 16, True, 3, None),
        ("python", 21, False, 0, "sub/train.py"), ("text", 25, False, 0, None), ("yaml", 29, False, 0, None)]
    assert blocks[0].text == "echo one\n" and blocks[1].why_not_run == "placeholders"
    assert [b.line for b in steps(blocks)] == [4, 16, 21]


def test_a_mark_applies_only_to_the_fence_right_below_it() -> None:
    blocks = parse_blocks("<!-- not run -->\n\nsome prose\n\n```sh\necho x\n```\n", "d.md")
    assert blocks[0].run
    blocks = parse_blocks("<!-- not run -->\n\n```sh\necho x\n```\n", "d.md")  # blank lines are fine
    assert not blocks[0].run


def test_ordinary_comments_are_not_marks_and_misspelt_marks_are_errors() -> None:
    assert parse_blocks("<!-- a note for editors -->\n```sh\necho\n```\n", "d.md")[0].run
    with pytest.raises(DocFormatError, match=r"^d\.md:1: unknown block mark"):
        parse_blocks("<!-- exit 3 -->\n```sh\nfalse\n```\n", "d.md")
    with pytest.raises(DocFormatError, match=r"d\.md:1: <!-- exits 3 --> marks a ```yaml block"):
        parse_blocks("<!-- exits 3 -->\n```yaml\na: 1\n```\n", "d.md")


def test_an_unclosed_fence_is_named_with_its_line() -> None:
    with pytest.raises(DocFormatError, match=r"^d\.md:2: the ``` fence"):
        parse_blocks("text\n```sh\necho\n", "d.md")


def test_longer_fences_tildes_and_indented_fences_are_read_as_commonmark_does() -> None:
    doc = "````sh\n```\ninner\n```\n````\n\n~~~sh\necho t\n~~~\n\n- item\n\n   ```sh\n   echo indented\n   ```\n"
    blocks = parse_blocks(doc, "d.md")
    assert [b.text for b in blocks] == ["```\ninner\n```\n", "echo t\n", "echo indented\n"]


def test_a_fence_without_language_or_an_unknown_one_never_runs() -> None:
    blocks = parse_blocks("```\nrm -rf /\n```\n```console\n$ ls\n```\n", "d.md")
    assert not any(b.run for b in blocks)


def test_the_readme_and_the_tutorial_parse_and_have_commands() -> None:
    root = Path(__file__).resolve().parents[2]
    for name in ("README.md", "docs/tutorial.md"):
        assert any(b.run for b in parse_blocks((root / name).read_text(), name)), name


# ------------------------------------------------------------------------------- the runner
def _run(tmp_path: Path, doc: str) -> list[str]:
    outputs: list[str] = []
    (tmp_path / "start").mkdir()
    run_document(doc, "doc.md", tmp_path / "start", tmp_path / "state", dict(os.environ), timeout=20,
                 on_output=lambda block, out: outputs.append(out))
    return outputs


def test_cwd_and_variables_carry_from_block_to_block_and_files_land_in_the_cwd(tmp_path: Path) -> None:
    doc = ("```sh\nmkdir -p work && cd work\nname=ada\n```\n\n<!-- file: hello.txt -->\n```text\nhi\n```\n\n"
           "```sh\necho \"$name $(pwd) $(cat hello.txt)\"\n```\n")
    assert _run(tmp_path, doc) == ["", f"ada {tmp_path / 'start' / 'work'} hi\n"]


def test_a_failing_command_is_named_with_its_document_line_and_later_blocks_do_not_run(tmp_path: Path) -> None:
    doc = "intro\n\n```sh\necho first\nls /nonexistent-dir\necho never\n```\n\n```sh\necho not reached\n```\n"
    with pytest.raises(DocStepFailed, match=r"^doc\.md:5: `ls /nonexistent-dir` exited 2") as failure:
        _run(tmp_path, doc)
    assert "first" in str(failure.value) and "never" not in str(failure.value)


def test_a_failure_inside_a_pipeline_counts(tmp_path: Path) -> None:
    with pytest.raises(DocStepFailed, match=r"doc\.md:2: `false \| cat` exited 1"):
        _run(tmp_path, "```sh\nfalse | cat\n```\n")


def test_an_expected_exit_passes_only_with_that_code(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    assert _run(tmp_path / "a", "<!-- exits 3 -->\n```sh\necho x; exit 3\n```\n") == ["x\n"]
    (tmp_path / "b").mkdir()
    with pytest.raises(DocStepFailed, match=r"exited 0 \(the document expects exit 3\)"):
        _run(tmp_path / "b", "<!-- exits 3 -->\n```sh\ntrue\n```\n")
    (tmp_path / "c").mkdir()
    with pytest.raises(DocStepFailed, match=r"exited 1 \(the document expects exit 3\)"):
        _run(tmp_path / "c", "<!-- exits 3 -->\n```sh\nexit 1\n```\n")


# ------------------------------------------------------------------------------- shown output
def test_a_text_block_right_below_a_command_block_is_its_shown_output() -> None:
    doc = ("```sh\necho a\n```\n\n```text\na\n```\n\nprose\n\n```text\nnot output\n```\n\n"
           "```sh\necho b\n```\nprose\n```text\nb\n```\n")
    first, _, _, second, _ = parse_blocks(doc, "d.md")
    assert (first.shown_output, first.shown_line) == ("a\n", 6)
    assert second.shown_output is None  # prose between: that text block is not what it printed


def test_what_varies_between_runs_is_normalised_and_wording_is_not() -> None:
    printed = ("finished 98bd8e9c0f78 lr=0.001 layers=2 exit=0 0.175s objective=1.10942\n"
               "FAIL  connection  0.05s  host key is unknown (ssh-ed25519 SHA256:1PBW0T6cZhH5/xx+z)\n"
               "expegit: 3 executions: 3 finished, 0 failed\n")
    shown = ("finished 2c09babe5e60 lr=0.01 layers=2 exit=0 0.246s objective=0.109417\n"
             "FAIL connection 0.10s host key is unknown (ssh-ed25519 SHA256:otherFingerprint)\n"
             "...\n"
             "expegit: 20 executions: 20 finished, 0 failed\n")
    assert output_mismatches(shown, printed) == []
    assert output_mismatches("expegit: 3 executions: 3 done, 0 failed\n", printed) == [
        "expegit: 3 executions: 3 done, 0 failed"]


def test_an_abridged_line_matches_with_its_dots_standing_for_anything() -> None:
    printed = "orchestra.yaml:8:1: unknown key 'objectve'; valid keys: name, command, outputs (hint: did you mean 'objective'?)\n"
    assert output_mismatches("orchestra.yaml:8:1: unknown key 'objectve'; valid keys: name, ... (hint: did you mean 'objective'?)\n",
                             printed) == []
    assert output_mismatches("orchestra.yaml:8:1: unknown key ... (hint: use 'objective')\n", printed) != []


def test_lines_match_in_any_order_but_each_must_be_printed() -> None:
    printed = "finished a1b2c3d4e5f6 lr=0.03\nfinished 0a1b2c3d4e5f lr=0.003\n"
    assert output_mismatches("finished 111111aaaaaa lr=0.003\nfinished 222222bbbbbb lr=0.03\n", printed) == []
    assert output_mismatches("failed 111111aaaaaa lr=0.003\n", printed) == ["failed 111111aaaaaa lr=0.003"]


@pytest.mark.parametrize("shown, printed", [
    ("7598ead finished: exit 0", "6051899 finished: exit 0"),              # a commit of digits only
    ("objective=1.1094171540468067", "objective=0.25"),
    ("0.175s  lr=1.0e-4", "12.5s  lr=0.001"),
    ("2 node(s) x 2 slot(s): node1, node2", "2 node(s) x 2 slot(s): node3, node4"),
    ("ok    allocation     1.56s  job 327", "ok    allocation     0.44s  job 331"),
])
def test_values_that_vary_normalise_alike(shown: str, printed: str) -> None:
    assert output_mismatches(shown, printed) == []


@pytest.mark.parametrize("shown, printed", [
    ("exit 0 on devcluster", "exit 0 on localhost"),
    ("0.175s", "0.175ms"),
    ("finished 98bd8e9c0f78", "failed 98bd8e9c0f78"),
])
def test_words_that_differ_do_not(shown: str, printed: str) -> None:
    assert output_mismatches(shown, printed) == [shown]
