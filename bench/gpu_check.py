"""The real-GPU check of issue 12: 8 small PyTorch-on-CUDA executions with ``gpus: 0.25`` on the local
profile (capacity detected: no declared GPUs), each recording the device it saw.

Where the tests use fake GPUs (device ids only), this one runs CUDA kernels: it shows that the binding
is what CUDA itself obeys (an execution given device 1 sees ONE device, named, as cuda:0), that four
quarter shares sit on one device at a time, and that the executions really ran on the GPU.

    python bench/gpu_check.py              # prints the summary (markdown) and exits 0 when every check held
    python bench/gpu_check.py --write      # also puts it into BENCHMARKS.md ("Real GPU check")

A few minutes of GPU time at most: each execution trains a small MLP for ``--seconds`` (default 20).
Without torch or a CUDA device it stops at once with "gpu_check: no CUDA device: ..." (exit 3).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, expegit, machine, make_campaign, now, scratch, write_section  # noqa: E402

EXECUTIONS = 8
SHARE = Fraction(1, 4)
NO_DEVICE = 3

TRAIN = """\
import json, os, sys, time
import torch

start = time.time()
seconds = float(sys.argv[2])
device = torch.device("cuda")  # whatever CUDA_VISIBLE_DEVICES leaves: renumbered from 0
torch.manual_seed(int(sys.argv[1]))
model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10)).to(device)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x = torch.randn(4096, 512, device=device)
y = torch.randint(0, 10, (4096,), device=device)
steps = 0
while time.time() - start < seconds:
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    steps += 1
torch.cuda.synchronize()
json.dump({"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
           "current": torch.cuda.current_device(), "on_cuda": next(model.parameters()).is_cuda,
           "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "orchestra_gpus": os.environ.get("ORCHESTRA_GPUS"),
           "share": os.environ.get("ORCHESTRA_GPU_SHARE"), "steps": steps, "loss": float(loss),
           "peak_mib": torch.cuda.max_memory_allocated() / 2**20, "start": start, "end": time.time()},
          open("gpu.json", "w"))
"""


def no_device() -> str | None:
    """Why this machine cannot run the check (None: it can). Asked of the python the executions use."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not installed for {sys.executable} ({exc}); pip install torch"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    return None


def manifest(seconds: float) -> str:
    python = shlex.quote(sys.executable)  # the executions use this interpreter, which has torch
    return (f"name: gpu-check\n"
            f"command: {python} train.py {{i}} {seconds:g}\n"
            f"parameters:\n  i: {{choices: [{', '.join(str(i) for i in range(EXECUTIONS))}]}}\n"
            f"resources: {{cpus: 1, gpus: {float(SHARE)}}}\n"
            f"outputs: [gpu.json]\n"
            f"profile: gpu\n"
            f"profiles:\n  gpu: {{kind: local}}\n")


def run_campaign(seconds: float) -> tuple[list[dict[str, Any]], float]:
    import time

    with scratch("orchestra-gpu-check-") as tmp:
        root = make_campaign(Path(tmp) / "campaign", manifest(seconds), {"train.py": TRAIN})
        t0 = time.monotonic()
        run = subprocess.run(expegit("run", "--grid"), cwd=root, capture_output=True, text=True, timeout=900)
        wall = time.monotonic() - t0
        if run.returncode != 0:
            raise SystemExit(f"gpu_check: the campaign failed (exit {run.returncode}):\n{run.stderr[-2000:]}")
        listed = subprocess.run(expegit("list", "--json"), cwd=root, capture_output=True, text=True, check=True)
        rows = []
        for record in json.loads(listed.stdout):
            shown = subprocess.run(["git", "show", f"executions/{record['id']}:gpu.json"], cwd=root,
                                   capture_output=True, text=True, check=True)
            rows.append({"record": record, "probe": json.loads(shown.stdout)})
        return sorted(rows, key=lambda r: r["record"]["parameters"]["i"]), wall


def checks(rows: list[dict[str, Any]]) -> list[str]:
    """What must hold (each a failure message; empty: all held)."""
    failed = []
    for row in rows:
        record, probe = row["record"], row["probe"]
        tag = f"execution i={record['parameters']['i']}"
        if probe["count"] != 1:
            failed.append(f"{tag} saw {probe['count']} devices, not its one")
        if not probe["on_cuda"]:
            failed.append(f"{tag} did not run on CUDA")
        if probe["cuda_visible"] != record.get("gpus"):
            failed.append(f"{tag} saw CUDA_VISIBLE_DEVICES={probe['cuda_visible']}, its record says {record.get('gpus')}")
        if probe["share"] != "0.25":
            failed.append(f"{tag} saw ORCHESTRA_GPU_SHARE={probe['share']}")
    for row in rows:  # at any instant, at most four quarters on one device
        at = row["probe"]["start"]
        for device in {r["probe"]["cuda_visible"] for r in rows}:
            on = [r for r in rows if r["probe"]["cuda_visible"] == device and r["probe"]["start"] <= at < r["probe"]["end"]]
            if len(on) * SHARE > 1:
                failed.append(f"device {device}: {len(on)} quarter shares at once")
    return sorted(set(failed))


def summary(rows: list[dict[str, Any]], wall: float, failed: list[str]) -> str:
    lines = [f"{now()}; {machine()}", "",
             f"`python bench/gpu_check.py`: {EXECUTIONS} executions, `resources: {{cpus: 1, gpus: 0.25}}`, local "
             f"profile (GPUs detected), each training a small MLP on `cuda`; the campaign took {wall:.1f} s.", "",
             "| i | device name | CUDA_VISIBLE_DEVICES | devices seen | share | cores | steps | peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        r, p = row["record"], row["probe"]
        lines.append(f"| {r['parameters']['i']} | {p['name']} | {p['cuda_visible']} | {p['count']} | {p['share']} | "
                     f"{r.get('cores')} | {p['steps']} | {p['peak_mib']:.0f} |")
    lines += ["", "Every check held (one device seen, on CUDA, as recorded, at most four quarters per device)."
              if not failed else "FAILED: " + "; ".join(failed)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="training time of each execution")
    parser.add_argument("--write", action="store_true", help="put the summary into BENCHMARKS.md")
    args = parser.parse_args(argv)
    why = no_device()
    if why is not None:
        print(f"gpu_check: no CUDA device: {why}", file=sys.stderr)
        return NO_DEVICE
    rows, wall = run_campaign(args.seconds)
    failed = checks(rows)
    text = summary(rows, wall, failed)
    print(text)
    if args.write:
        write_section(ROOT / "BENCHMARKS.md", "Real GPU check (bench/gpu_check.py)", text)
    return 1 if failed or len(rows) != EXECUTIONS else 0


if __name__ == "__main__":
    sys.exit(main())
