from __future__ import annotations

from pathlib import Path

from expegit.starter import Option, find_entry_script, parse_argparse_options, render_starter_manifest
from orchestra.manifest import check_manifest


def test_argparse_options_are_read_without_running_the_script() -> None:
    source = """
import argparse, sys
sys.exit("never run")
p = argparse.ArgumentParser()
p.add_argument("data")                       # positional: left out
p.add_argument("-l", "--lr", type=float, default=1e-3)
p.add_argument("--layers", default=4)
p.add_argument("--opt", choices=("sgd", "adam"))
p.add_argument("--name", dest="run_name", default="base")
p.add_argument("--flag", action="store_true")   # a flag: left out
p.add_argument("--sizes", nargs="+", type=int)  # a list: left out
p.add_argument("--seed", type=int, required=True)
"""
    assert parse_argparse_options(source) == [
        Option("--lr", "lr", "float", 1e-3), Option("--layers", "layers", "int", 4),
        Option("--opt", "opt", "choice", None, ("sgd", "adam")), Option("--name", "run_name", "str", "base"),
        Option("--seed", "seed", "int", None, (), True)]
    assert parse_argparse_options("def broken(:\n") == []


def test_the_entry_script_is_found_by_name_then_by_its_main_guard(tmp_path: Path) -> None:
    (tmp_path / "utils.py").write_text("def f(): pass\n")
    (tmp_path / "fit_model.py").write_text("if __name__ == '__main__':\n    pass\n")
    assert find_entry_script(tmp_path, ["utils.py", "fit_model.py"]).path == "fit_model.py"  # type: ignore[union-attr]
    (tmp_path / "train.py").write_text("print('x')\n")
    assert find_entry_script(tmp_path, ["utils.py", "fit_model.py", "train.py"]).path == "train.py"  # type: ignore[union-attr]
    assert find_entry_script(tmp_path, ["utils.py", "README.md"]) is None


def test_the_starter_manifest_is_valid(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text('import argparse\np = argparse.ArgumentParser()\n'
                                       'p.add_argument("--lr", type=float, default=0.1)\n'
                                       'p.add_argument("--opt", choices=["a", "b"], default="b")\n'
                                       'p.add_argument("--tag", default="it\'s \\"quoted\\"")\n')
    script = find_entry_script(tmp_path, ["train.py"])
    assert script is not None
    text = render_starter_manifest("my: campaign", script)
    path = tmp_path / "orchestra.yaml"
    path.write_text(text)
    manifest, errors = check_manifest(path)
    assert errors == [], errors
    assert manifest is not None and manifest.name == "my: campaign"
    assert manifest.parameters["tag"].value == 'it\'s "quoted"'

