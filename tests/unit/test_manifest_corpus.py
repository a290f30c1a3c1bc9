"""A corpus of bad manifests: each must give one clear `orchestra.yaml:LINE:COL: ...` message, never a traceback."""
from __future__ import annotations

import re
import textwrap

import pytest

from orchestra.errors import ManifestError
from orchestra.manifest import parse_manifest

GOOD_HEAD = "name: demo\ncommand: python run.py --lr {lr}\nparameters:\n  lr: {type: float, low: 0.001, high: 0.1}\n"

# (id, manifest text, expected line, regex the message must match)
CASES = [
    ("yaml-syntax-tab", "name: demo\ncommand: x\n\tparameters: {}\n", 3, r"YAML syntax error"),
    ("yaml-unclosed-flow", "name: demo\ncommand: x\nparameters: {lr: {type: float\n", 4, r"YAML syntax error"),
    ("yaml-bad-indent", "name: demo\n  command: x\n", 2, r"YAML syntax error"),
    ("yaml-duplicate-key", "name: demo\ncommand: x\nname: again\n", 3, r"YAML syntax error|appears twice|duplicate"),
    ("empty-file", "", 1, r"the manifest is empty"),
    ("not-a-mapping", "- name: demo\n", 1, r"must be a mapping"),
    ("missing-command", "name: demo\nparameters: {}\n", 1, r"missing required key 'command'"),
    ("missing-name", "command: x\n", 1, r"missing required key 'name'"),
    ("empty-command", "name: demo\ncommand: ''\n", 2, r"command: must not be empty"),
    ("unknown-top-key", GOOD_HEAD + "outptus: [a]\n", 5, r"unknown key 'outptus'.*did you mean 'outputs'"),
    ("unknown-param-key", "name: d\ncommand: x {a}\nparameters:\n  a: {type: int, low: 1, high: 3, lgo: true}\n",
     4, r"unknown key 'lgo' in parameters\.a"),
    ("wrong-type-repeats", GOOD_HEAD + "repeats: three\n", 5, r"repeats: expected an integer, got string 'three'"),
    ("repeats-zero", GOOD_HEAD + "repeats: 0\n", 5, r"repeats: must be at least 1"),
    ("outputs-not-list", GOOD_HEAD + "outputs: metrics.json\n", 5, r"outputs: expected a list"),
    ("outputs-absolute", GOOD_HEAD + "outputs: [/etc/passwd]\n", 5, r"must be relative to the run directory"),
    ("outputs-dotdot", GOOD_HEAD + "outputs:\n  - ok.txt\n  - ../secret\n", 7, r"without '\.\.'"),
    ("outputs-reserved", GOOD_HEAD + "outputs: [.orchestra/x]\n", 5, r"reserved"),
    ("param-type-unknown", "name: d\ncommand: x {a}\nparameters:\n  a: {type: double, low: 1, high: 2}\n",
     4, r"'double' is not one of: float, int, str"),
    ("param-inverted-range", "name: d\ncommand: x {a}\nparameters:\n  a: {type: float, low: 2, high: 1}\n",
     4, r"the range is inverted"),
    ("param-empty-range", "name: d\ncommand: x {a}\nparameters:\n  a: {type: int, low: 3, high: 3}\n",
     4, r"the range is empty"),
    ("param-log-nonpositive", "name: d\ncommand: x {a}\nparameters:\n  a: {type: float, low: 0, high: 1, log: true}\n",
     4, r"log scale needs low > 0"),
    ("param-int-float-bounds", "name: d\ncommand: x {a}\nparameters:\n  a: {type: int, low: 0.5, high: 3}\n",
     4, r"integer bounds"),
    ("param-missing-high", "name: d\ncommand: x {a}\nparameters:\n  a: {type: float, low: 0}\n",
     4, r"needs `low` and `high` \(missing high\)"),
    ("param-both-kinds", "name: d\ncommand: x {a}\nparameters:\n  a: {type: int, low: 1, high: 2, choices: [1]}\n",
     4, r"exactly one of `type`.*not type and choices"),
    ("param-nothing", "name: d\ncommand: x {a}\nparameters:\n  a: {default: 1}\n", 4, r"exactly one of `type`"),
    ("param-empty-choices", "name: d\ncommand: x {a}\nparameters:\n  a: {choices: []}\n", 4, r"must not be empty"),
    ("param-duplicate-choice", "name: d\ncommand: x {a}\nparameters:\n  a:\n    choices: [sgd, adam, sgd]\n",
     5, r"'sgd' appears twice"),
    ("param-bad-name", "name: d\ncommand: x\nparameters:\n  2fast: {value: 1}\n", 4, r"not a valid parameter name"),
    ("param-default-outside", "name: d\ncommand: x {a}\nparameters:\n  a:\n    type: float\n    low: 0\n    high: 1\n"
     "    default: 5\n", 8, r"default: 5 is outside \[0, 1\]"),
    ("param-default-not-choice", "name: d\ncommand: x {a}\nparameters:\n  a:\n    choices: [x, y]\n    default: z\n",
     6, r"'z' is not one of the choices"),
    ("param-steps-on-choice", "name: d\ncommand: x {a}\nparameters:\n  a: {choices: [1, 2], steps: 3}\n",
     4, r"'steps' applies only to type: float or int"),
    ("placeholder-unknown", "name: d\ncommand: python t.py --lr {lrr}\nparameters:\n  lr: {value: 1}\n",
     2, r"placeholder \{lrr\} names no parameter.*did you mean \{lr\}"),
    ("placeholder-empty", "name: d\ncommand: echo {}\n", 2, r"placeholder \{\} is not a parameter name"),
    ("placeholder-unbalanced", "name: d\ncommand: echo {lr\nparameters:\n  lr: {value: 1}\n", 2, r"command:"),
    ("placeholder-bad-format", "name: d\ncommand: echo {a:.3f}\nparameters:\n  a: {choices: [x, y]}\n",
     2, r"format spec \{a:\.3f\} does not apply"),
    ("unknown-profile", GOOD_HEAD + "profile: clustr\nprofiles:\n  cluster: {kind: slurm}\n", 5,
     r"unknown profile 'clustr'.*did you mean 'cluster'"),
    ("profile-bad-kind", GOOD_HEAD + "profiles:\n  p: {kind: kubernetes}\n", 6, r"'kubernetes' is not one of"),
    ("timeout-bad", GOOD_HEAD + "timeout: two hours\n", 5, r"timeout: 'two hours' is not a duration"),
    ("timeout-negative", GOOD_HEAD + "timeout: -5\n", 5, r"timeout: a duration must be positive"),
    ("retries-unknown-kind", GOOD_HEAD + "retries: {max: 2, on: [segfault]}\n", 5, r"'segfault' is not one of"),
    ("objective-both-sources", GOOD_HEAD + "objective: {metric: loss, from: m.json, pattern: 'loss=(.*)'}\n", 5,
     r"exactly one of `from`"),
    ("objective-bad-goal", GOOD_HEAD + "objective: {metric: loss, from: m.json, goal: minimise}\n", 5,
     r"'minimise' is not one of: minimize, maximize.*did you mean 'minimize'"),
    ("objective-bad-regex", GOOD_HEAD + "objective: {metric: loss, pattern: 'loss=([0-9'}\n", 5,
     r"invalid regular expression"),
    ("objective-no-group", GOOD_HEAD + "objective: {metric: loss, pattern: 'loss=[0-9.]+'}\n", 5,
     r"needs one \(group\)"),
    ("search-bad-algorithm", GOOD_HEAD + "objective: {metric: l, from: m.json}\nsearch: {algorithm: genetic, budget: 10}\n",
     6, r"'genetic' is not one of: grid, random, sobol, halton, lhs, bayes"),
    ("search-budget-below-parallel", GOOD_HEAD + "objective: {metric: l, from: m.json}\n"
     "search: {algorithm: random, budget: 2, parallel: 8}\n", 6, r"budget \(2\) is below search.parallel \(8\)"),
    ("search-grid-float-no-steps", GOOD_HEAD + "search: {algorithm: grid, budget: 10}\n", 4,
     r"grid search needs `steps:`"),
    ("search-bayes-no-objective", GOOD_HEAD + "search: {algorithm: bayes, budget: 10}\n", 5, r"needs an objective"),
    ("when-unknown-parameter", "name: d\ncommand: x {a}\nparameters:\n  a:\n    type: float\n    low: 1\n"
     "    high: 2\n    when: {opt: adam}\n", 8, r"when: no parameter 'opt'"),
    ("when-bad-value", "name: d\ncommand: x {a} {opt}\nparameters:\n  opt: {choices: [sgd, adam]}\n  a:\n"
     "    value: 1\n    when: {opt: rmsprop}\n", 7, r"'rmsprop' is not a choice of opt"),
    ("name-multiline", "name: \"a\\nb\"\ncommand: x\n", 1, r"name must be one line"),
    ("env-nested", GOOD_HEAD + "env:\n  A: {b: 1}\n", 6, r"env\.A: expected"),
]


@pytest.mark.parametrize("case_id,text,line,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_manifest_is_one_clear_line(case_id: str, text: str, line: int, pattern: str) -> None:
    manifest, errors = parse_manifest(text, "orchestra.yaml")
    assert manifest is None, f"{case_id}: accepted a bad manifest"
    assert errors, f"{case_id}: no error reported"
    first = errors[0]
    assert isinstance(first, ManifestError)
    message = str(first)
    assert "\n" not in message, f"{case_id}: message spans lines: {message!r}"
    assert message.startswith(f"orchestra.yaml:{line}:"), f"{case_id}: wrong position: {message}"
    assert re.search(pattern, message), f"{case_id}: {message!r} does not match {pattern!r}"
    assert first.exit_code == 3


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


def test_good_manifest_loads_with_every_feature() -> None:
    text = textwrap.dedent("""\
        name: full
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
          cluster: {kind: slurm, host: mycluster}
        """)
    manifest, errors = parse_manifest(text)
    assert errors == []
    assert manifest is not None
    assert manifest.timeout == 5400
    assert manifest.parameters["lr"].log is True
    assert manifest.parameters["momentum"].when == {"opt": ("sgd",)}
    assert manifest.env == {"OMP_NUM_THREADS": "1"}
    assert manifest.retries.max == 2 and manifest.retries.on == ("node-failure", "walltime")
    assert manifest.objective is not None and manifest.objective.source == "metrics.json"
