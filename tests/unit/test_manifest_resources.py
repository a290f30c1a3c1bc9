"""`expegit check` on bad `resources:` requests: each reported at its file:line:col with what is wrong."""
from __future__ import annotations

import pytest

from orchestra.manifest import parse_manifest

HEAD = """\
name: r
command: python3 train.py {n_gpus}
parameters:
  n_gpus: {choices: [1, 2]}
resources:
"""


def errors(body: str) -> list[str]:
    manifest, found = parse_manifest(HEAD + body, "orchestra.yaml")
    assert manifest is None
    return [str(e) for e in found]


@pytest.mark.parametrize("body, where, says", [
    ("  gpus: -1\n", "orchestra.yaml:6:9:", "the number of GPUs cannot be negative"),
    ("  gpus: 1.5\n", "orchestra.yaml:6:9:", "above 1 a GPU request must be whole"),
    ("  gpus: 0.0001\n", "orchestra.yaml:6:9:", "finer than 1/1000"),
    ("  gpus: lots\n", "orchestra.yaml:6:9:", "is not a number of GPUs"),
    ("  cpus: -2\n", "orchestra.yaml:6:9:", "cpus"),
    ("  cpus: four\n", "orchestra.yaml:6:9:", "is not a whole number of cores"),
    ("  cpus: 2.5\n", "orchestra.yaml:6:9:", "cpus"),
    ("  memory: -1\n", "orchestra.yaml:6:11:", "memory"),
    ("  memory: 12Q\n", "orchestra.yaml:6:11:", "is not a size"),
    ("  gpus: \"{n_gpu}\"\n", "orchestra.yaml:6:9:", "no parameter 'n_gpu'"),
    ("  gpus: \"{n_gpus}x\"\n", "orchestra.yaml:6:9:", "a placeholder must be the whole value"),
])
def test_a_bad_value_is_reported_at_its_position(body: str, where: str, says: str) -> None:
    found = errors(body)
    assert any(e.startswith(where) and says in e for e in found), found


def test_an_unknown_key_is_reported_with_the_known_ones() -> None:
    found = errors("  gpu: 1\n")
    assert any(e.startswith("orchestra.yaml:6:3:") and "gpu" in e for e in found), found


def test_a_placeholder_whose_parameter_can_take_a_bad_value_names_it() -> None:
    manifest, found = parse_manifest(HEAD.replace("[1, 2]", "[1, 2.5]") + "  gpus: \"{n_gpus}\"\n",
                                     "orchestra.yaml")
    assert manifest is None
    assert any(str(e).startswith("orchestra.yaml:6:9: resources.gpus from parameter n_gpus=2.5") for e in found)


def test_a_good_request_passes() -> None:
    manifest, found = parse_manifest(HEAD + "  gpus: \"{n_gpus}\"\n  cpus: 2\n  memory: 8G\n", "orchestra.yaml")
    assert found == [] and manifest is not None and manifest.resources == {"gpus": "{n_gpus}", "cpus": 2,
                                                                           "memory": "8G"}


def _points(parameters: str, resources: str) -> list[dict]:
    from parasearch.study import resource_points

    manifest, found = parse_manifest(f"name: r\ncommand: x {{a}} {{b}}\nparameters:\n{parameters}resources:\n{resources}")
    assert found == [] and manifest is not None, found
    return resource_points(manifest)


def test_a_study_checks_every_choice_and_a_range_s_bounds_of_the_parameters_resources_name() -> None:
    assert _points("  a: {choices: [1, 2, 4]}\n  b: {type: float, low: 0, high: 1}\n", "  gpus: \"{a}\"\n") \
        == [{"a": 1}, {"a": 2}, {"a": 4}]
    assert _points("  a: {type: int, low: 1, high: 3}\n  b: {value: 2}\n", "  gpus: \"{a}\"\n  cpus: \"{b}\"\n") \
        == [{"a": 1, "b": 2}, {"a": 3, "b": 2}]
    assert _points("  a: {choices: [1]}\n  b: {choices: [2]}\n", "  gpus: 1\n") == [{}]  # no placeholder
