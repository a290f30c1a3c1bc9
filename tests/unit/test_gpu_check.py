"""bench/gpu_check.py's pure parts (the run itself needs a CUDA device): its campaign is a valid manifest
asking a quarter GPU each, its checks catch a binding CUDA did not obey, and without torch it says why."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from orchestra.manifest import parse_manifest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
assert spec is not None and spec.loader is not None
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def row(i: int, device: str, start: float, end: float, *, count: int = 1, share: str = "0.25") -> dict:
    return {"record": {"parameters": {"i": i}, "gpus": device, "cores": str(i)},
            "probe": {"name": "NVIDIA H200", "count": count, "current": 0, "on_cuda": True, "cuda_visible": device,
                      "orchestra_gpus": device, "share": share, "steps": 100, "loss": 1.0, "peak_mib": 40.0,
                      "start": start, "end": end}}


def test_the_campaign_asks_a_quarter_gpu_for_each_of_eight_executions() -> None:
    manifest, errors = parse_manifest(gpu_check.manifest(5), "orchestra.yaml")
    assert errors == [] and manifest is not None
    assert manifest.resources == {"cpus": 1, "gpus": 0.25}
    assert len(manifest.parameters["i"].choices) == 8
    assert manifest.profile == "gpu" and manifest.profiles["gpu"] == {"kind": "local"}  # GPUs detected, not declared


def test_checks_pass_four_quarters_per_device_and_catch_what_cuda_did_not_obey() -> None:
    good = [row(i, str(i // 4), 0, 10) for i in range(8)]
    assert gpu_check.checks(good) == []
    assert "Every check held" in gpu_check.summary(good, 12.0, [])
    five = good + [row(8, "0", 1, 5)]
    assert any("5 quarter shares at once" in f for f in gpu_check.checks(five))
    leaked = [row(0, "0", 0, 10, count=2)]
    assert gpu_check.checks(leaked) == ["execution i=0 saw 2 devices, not its one"]
    wrong = [row(0, "0", 0, 10)]
    wrong[0]["record"]["gpus"] = "1"
    assert "its record says 1" in gpu_check.checks(wrong)[0]


def test_without_torch_it_stops_at_once_and_says_why() -> None:
    hide = ("import sys, runpy; sys.modules['torch'] = None; sys.argv = ['gpu_check.py']; "
            f"runpy.run_path({str(ROOT / 'bench' / 'gpu_check.py')!r}, run_name='__main__')")
    run = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, timeout=60)
    assert run.returncode == gpu_check.NO_DEVICE
    assert run.stderr.startswith("gpu_check: no CUDA device: torch is not installed")
