"""The pure parse of `resources:` (orchestra.resources): sizes, GPU fractions, placeholders per execution."""
from fractions import Fraction

import pytest

from orchestra.resources import (DEFAULT, Request, parse_cpus, parse_gpus, parse_size, problems, render_gpus,
                                 render_size, resolve)


@pytest.mark.parametrize("text, size", [("16G", 16 * 2**30), ("512M", 512 * 2**20), ("1.5G", 3 * 2**29),
                                        ("2GiB", 2 * 2**30), ("1T", 2**40), (2048, 2048), ("4k", 4096),
                                        ("100", 100)])
def test_sizes_parse_in_binary_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["12Q", "", "G", "-1G", 0, True, "1iB", "0.1"])
def test_bad_sizes_are_refused_with_the_expected_form(bad):
    with pytest.raises(ValueError):
        parse_size(bad)


@pytest.mark.parametrize("size", [1, 1023, 1024, 16 * 2**30, 3 * 2**29, 2**40 + 2**20])
def test_render_size_reads_back(size):
    assert parse_size(render_size(size)) == size


def test_gpu_fractions_are_exact():
    assert parse_gpus(0.25) == Fraction(1, 4)
    assert parse_gpus("1/3") * 3 == 1  # three executions fill one device exactly
    assert sum([parse_gpus(0.1)] * 10) == 1
    assert parse_gpus(2) == 2
    assert render_gpus(Fraction(1, 4)) == "0.25" and render_gpus(Fraction(1, 3)) == "1/3"


@pytest.mark.parametrize("bad", [1.5, -1, "x", True, float("nan"), "1/3000"])
def test_bad_gpu_requests_are_refused(bad):
    with pytest.raises(ValueError):
        parse_gpus(bad)


def test_cpus_must_be_whole_and_positive():
    assert parse_cpus(4) == 4 and parse_cpus("8") == 8
    for bad in (0, 1.5, "two", True):
        with pytest.raises(ValueError):
            parse_cpus(bad)


def test_resolve_reads_placeholders_from_the_execution_parameters():
    declared = {"cpus": 4, "gpus": "{n_gpus}", "memory": "16G"}
    assert resolve(declared, {"n_gpus": 2}) == Request(4, Fraction(2), 16 * 2**30)
    assert resolve(declared, {"n_gpus": 0.25}).gpus == Fraction(1, 4)
    with pytest.raises(ValueError, match="n_gpus=1.5"):
        resolve(declared, {"n_gpus": 1.5})


def test_no_resources_is_the_one_core_default():
    assert resolve(None) == DEFAULT == Request(cpus=1)
    assert resolve({}) == DEFAULT


def test_problems_name_the_key_and_the_fix():
    found = problems({"cpus": 0, "gpus": "{missing}", "memory": "16G", "disk": 1, "x": 2}, {"n": None})
    keys = [key for key, _message, _hint in found]
    assert keys == ["cpus", "gpus", "disk", "x"]
    assert "no parameter 'missing'" in found[1][1]
    assert problems({"gpus": "{n}x"}, {"n": None})[0][1].startswith("resources.gpus: '{n}x': a placeholder")
