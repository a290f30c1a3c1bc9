"""Synthetic campaigns for the benchmark, the tests and a quick look at the report without a repository.

Deterministic (seeded) so benchmark figures and screenshots compare across runs. ``hostile=True`` adds
executions whose every field tries to inject markup: the report must show them as text.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import random
import struct
import zlib
from collections.abc import Mapping

from orchestra.execution import ExecutionRecord

from .model import CommitInfo, ExecutionView, OutputLoader, ReportData

HOSTILE = '<script>alert(1)</script>"\'&<!--</script><img src=x onerror=alert(2)>'
T0 = _dt.datetime(2024, 5, 1, 8, 0, tzinfo=_dt.timezone.utc)


def tiny_png(width: int, height: int, seed: int) -> bytes:
    """A valid RGB PNG (a gradient) without any imaging library: enough to show images inline."""
    rows = []
    for y in range(height):
        row = bytearray([0])
        for x in range(width):
            row += bytes(((x * 255 // max(width - 1, 1) + seed * 37) % 256, y * 255 // max(height - 1, 1),
                          (seed * 91) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def _iso(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _commits() -> dict[str, CommitInfo]:
    subjects = ["Baseline MLP trainer", "Add Adam optimizer and LR warmup", "Fix data loader shuffling"]
    out = {}
    for k, subject in enumerate(subjects):
        sha = f"{k + 1:x}" * 40
        out[sha] = CommitInfo(sha, subject, ["Alice Martin", "Bob Chen", "Alice Martin"][k],
                              _iso(T0 - _dt.timedelta(days=3 - k)))
    return out


def val_acc(objective: float) -> float:
    """A second metric beside the objective, as real metrics files have (deterministic in the loss)."""
    return round(max(0.0, min(1.0, 1.15 - objective)), 6)


def metrics_outputs(execution_id: str, objective: float | None, with_image: bool) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    if objective is not None:
        files["metrics.json"] = json.dumps({"val_loss": objective, "val_acc": val_acc(objective),
                                            "id": execution_id}, indent=1).encode()
    if with_image:
        files["plots/loss.png"] = tiny_png(48, 32, int(execution_id[:4], 16))
    return files


def synthetic_report(n: int, *, seed: int = 1, hostile: bool = False, slots_per_host: int = 4,
                     hosts: int = 4, include_outputs: bool = True) -> ReportData:
    """``n`` executions of a learning-rate search spread over hosts and slots.

    With ``include_outputs=False`` views carry no output files; use ``demo_loader`` to stream them.
    Hosts other than node1 are nodes of a Slurm cluster reached through the login host ``login.cluster``.
    """
    rng = random.Random(seed)
    commits = _commits()
    shas = list(commits)
    free_at = {(f"node{h + 1}", s): T0 for h in range(hosts) for s in range(slots_per_host)}
    views = []
    for k in range(n):
        lr = 10 ** rng.uniform(-5, -1)
        layers = rng.randint(1, 8)
        opt = rng.choice(["sgd", "adam"])
        params: dict[str, object] = {"lr": lr, "layers": layers, "opt": opt, "seed": 0}
        loss = (0.2 + 0.05 * (math.log10(lr) + 3) ** 2 + 0.01 * abs(layers - 4)
                + (0.0 if opt == "adam" else 0.04) + rng.gauss(0, 0.01))
        roll = rng.random()
        # The tail of the campaign is still in flight: running, then not yet launched.
        state = ("created" if k >= n - n // 100 else "running" if k >= n - n // 100 - n * 3 // 100
                 else "finished" if roll < 0.90 else "failed" if roll < 0.97 else "cancelled")
        lane = min(free_at, key=lambda key: free_at[key])
        start = free_at[lane] + _dt.timedelta(seconds=rng.uniform(1, 20))
        duration = rng.uniform(60, 900)
        ended = start + _dt.timedelta(seconds=duration)
        if state == "created":
            host, slot, started, end_text, dur = None, None, None, None, None
        else:
            free_at[lane] = ended if state != "running" else ended + _dt.timedelta(days=365)
            host, slot = lane
            started = _iso(start)
            end_text = _iso(ended) if state in ("finished", "failed", "cancelled") else None
            dur = round(duration, 2) if end_text else None
        node = None
        if host is not None and host != "node1":  # a cluster's node: the SSH host is its login node
            host, node = "login.cluster", host
        objective = round(loss, 6) if state == "finished" else None
        exid = f"{rng.getrandbits(48):012x}"
        record = ExecutionRecord(
            id=exid, campaign="mnist-lr", commit=shas[min(k * len(shas) // max(n, 1), len(shas) - 1)],
            command=f"python train.py --lr {lr:.3g} --layers {layers} --opt {opt} --seed 0",
            parameters=params, profile="cluster" if node else "local", state=state,
            author=["alice", "bob"][k % 2], host=host, node=node, slot=slot,
            remote_dir=f"/scratch/orchestra/runs/{exid}" if host else None,
            created=_iso(start - _dt.timedelta(seconds=30)), started=started, ended=end_text, duration=dur,
            exit_code=0 if state == "finished" else (1 if state == "failed" else None), objective=objective,
            outputs=["metrics.json", "plots/*.png"],
            error="CUDA out of memory at step 1200" if state == "failed" else None)
        stdout = "".join(f"epoch {e:3d}  loss {loss + 1.0 / (e + 1):.4f}\n" for e in range(1, 21))
        if state == "finished":
            stdout += f"\x1b[32mdone\x1b[0m val_loss={objective}\n"
        stderr = "Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory\n" if state == "failed" else ""
        outputs = metrics_outputs(exid, objective, k % 50 == 0) if include_outputs else {}
        diffstat = ([(p, len(c)) for p, c in outputs.items()] if outputs
                    else [("metrics.json", 3)] if objective is not None else [])
        metrics = {"val_loss": objective, "val_acc": val_acc(objective)} if objective is not None else {}
        views.append(ExecutionView(record, stdout, stderr, outputs, diffstat, metrics))
    if hostile:
        views.extend(hostile_views(rng, shas[0]))
    busy = [t for t in free_at.values() if t < T0 + _dt.timedelta(days=300)]
    generated = max(busy, default=T0) + _dt.timedelta(minutes=10)
    return ReportData("mnist-lr", {"metric": "val_loss", "goal": "minimize"}, _iso(generated), commits, views,
                      parameter_types={"lr": "float", "layers": "int"})


def grid_report(repeats: int = 3) -> ReportData:
    """A grid campaign with repeats on Slurm: every repeat of a point gives the same metrics (a deterministic
    script), which is what made parallel coordinates overplot; ``scale`` takes whole float values (1.0)."""
    sha = "a" * 40
    commits = {sha: CommitInfo(sha, "Grid over scale and layers", "Alice Martin", _iso(T0))}
    views = []
    n = 0
    for scale in (0.5, 1.0, 2.0):
        for layers in (1, 2, 4):
            for opt in ("sgd", "adam"):
                loss = round(0.2 + 0.1 * abs(scale - 1.0) + 0.02 * layers + (0.05 if opt == "sgd" else 0.0), 6)
                for repeat in range(repeats):
                    start = T0 + _dt.timedelta(minutes=n)
                    exid = f"{0xa00000000000 + n:012x}"
                    record = ExecutionRecord(
                        id=exid, campaign="grid", commit=sha, command="python train.py",
                        parameters={"scale": scale, "layers": layers, "opt": opt}, profile="cluster",
                        state="finished", repeat=repeat, attempt=1, author="alice", host="login.cluster",
                        node=f"c{n % 4 + 1:02d}", slot=n % 2, created=_iso(start), started=_iso(start),
                        ended=_iso(start + _dt.timedelta(seconds=50)), duration=50.0, exit_code=0,
                        objective=loss, outputs=["metrics.json"])
                    views.append(ExecutionView(record, "", "", {}, [("metrics.json", 40)],
                                               {"val_loss": loss, "val_acc": val_acc(loss)}))
                    n += 1
    return ReportData("grid", {"metric": "val_loss", "goal": "minimize"}, _iso(T0 + _dt.timedelta(hours=2)),
                      commits, views, parameter_types={"scale": "float", "layers": "int"})


def repeats_report(repeats: int = 4, seed: int = 3) -> ReportData:
    """Repeats over seeds that do differ (noise on the objective): configurations with real intervals, enough
    executions for parameter importance, and an environment section on the first two executions (one
    package apart) for the compare view."""
    rng = random.Random(seed)
    sha = "b" * 40
    commits = {sha: CommitInfo(sha, "Sweep lr and width over seeds", "Alice Martin", _iso(T0))}
    views = []
    n = 0
    for lr in (0.001, 0.01, 0.1):
        for width in (64, 256):
            for opt in ("sgd", "adam"):
                centre = 0.3 + 0.4 * abs(math.log10(lr) + 2) + (0.02 if width == 64 else 0.0) + (0.01 if opt == "sgd" else 0)
                for repeat in range(repeats):
                    loss = round(centre + rng.gauss(0, 0.03), 6)
                    start = T0 + _dt.timedelta(minutes=n)
                    env = None
                    if n < 2:
                        env = {"os": "Debian 13", "python": "3.11.7 /usr/bin/python3", "driver": "550.54",
                               "gpus": [{"name": "H200"}], "packages_blob": ("c" if n == 0 else "d") * 40}
                    record = ExecutionRecord(
                        id=f"{0xb00000000000 + n:012x}", campaign="sweep", commit=sha, command="python train.py",
                        parameters={"lr": lr, "width": width, "opt": opt, "seed": repeat}, profile="local",
                        state="finished", repeat=0, attempt=1, author="alice", host="laptop", slot=n % 4,
                        created=_iso(start), started=_iso(start), ended=_iso(start + _dt.timedelta(seconds=30)),
                        duration=30.0, exit_code=0, objective=loss, outputs=["metrics.json"], environment=env)
                    views.append(ExecutionView(record, "", "", {}, [("metrics.json", 40)],
                                               {"val_loss": loss, "val_acc": val_acc(loss)}))
                    n += 1
    # The two lists differ by one version, one package removed and one added (a direct reference carrying markup).
    base = {"numpy": "1.26.4", "torch": "2.3.0", "tqdm": "4.66.1"}
    packages = {"c" * 40: base, "d" * 40: {"numpy": "1.26.4", "torch": "2.4.1", "mylib": "file:///src/<b>mylib</b>"}}
    return ReportData("sweep", {"metric": "val_loss", "goal": "minimize"}, _iso(T0 + _dt.timedelta(hours=2)),
                      commits, views, parameter_types={"lr": "float", "width": "int", "seed": "int"},
                      packages=packages)


def hostile_views(rng: random.Random, sha: str) -> list[ExecutionView]:
    """Executions with markup in every user-controlled field, including parameter names."""
    views = []
    for k in range(2):
        exid = f"{rng.getrandbits(48):012x}"
        record = ExecutionRecord(
            id=exid, campaign=HOSTILE, commit=sha, command=f"echo '{HOSTILE}'",
            parameters={HOSTILE: HOSTILE, "lr": 0.01 * (k + 1), "opt": HOSTILE if k else "adam"},
            profile=HOSTILE, state="finished", search=HOSTILE, author=HOSTILE, host=HOSTILE, slot=0,
            remote_dir=HOSTILE, created=_iso(T0), started=_iso(T0 + _dt.timedelta(minutes=k)),
            ended=_iso(T0 + _dt.timedelta(minutes=k + 5)), duration=300.0, exit_code=0, objective=0.5 + k,
            outputs=[HOSTILE], error=HOSTILE)
        files: Mapping[str, bytes] = {
            f"{HOSTILE}.txt": HOSTILE.encode(), "../../escape.txt": b"x", "/etc/passwd": b"x",
            "report.html": HOSTILE.encode(),
            "plot.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20" onload="alert(3)">'
                        b'<script>alert(4)</script><rect width="40" height="20" fill="#4655c4"/></svg>',
        }
        views.append(ExecutionView(record, HOSTILE + "\n", HOSTILE, files, [(HOSTILE, 3)]))
    return views


def demo_loader(data: ReportData) -> OutputLoader:
    """A lazy ``load_outputs`` for a report built with ``include_outputs=False``."""
    by_id = {v.record.id: (v.record.objective, k) for k, v in enumerate(data.executions)}

    def load(execution_id: str) -> dict[str, bytes]:
        objective, k = by_id.get(execution_id, (None, 1))
        return metrics_outputs(execution_id, objective, k % 50 == 0)

    return load


def gpu_report(n: int = 24, *, seed: int = 5, nodes: int = 2, gpus_per_node: int = 4) -> ReportData:
    """A campaign placed by resources on GPU nodes: ``n_gpus`` in 0.25, 0.5, 1, 2, packed by the real rule
    (runaway.placement.Packer) as executions end, so the GPU lanes show what a run would have recorded."""
    from fractions import Fraction

    from orchestra.resources import Request
    from runaway.capacity import render_cpu_list
    from runaway.placement import Binding, NodeCapacity, Packer

    rng = random.Random(seed)
    sha = next(iter(_commits()))
    packer = Packer([NodeCapacity(f"gpu{k + 1}", tuple(range(16)), tuple(str(g) for g in range(gpus_per_node)))
                     for k in range(nodes)])
    wanted = [rng.choice([Fraction(1, 4), Fraction(1, 2), Fraction(1), Fraction(2)]) for _ in range(n)]
    running: list[tuple[_dt.datetime, Binding, int]] = []
    now = T0
    views = []
    for k, amount in enumerate(wanted):
        request = Request(cpus=2, gpus=amount)
        binding = packer.place(request)
        while binding is None:  # wait for the next execution to end, as the controller does
            running.sort(key=lambda item: item[0])
            now, freed, _slot = running.pop(0)
            packer.release(freed)
            binding = packer.place(request)
        used = {slot for _e, b, slot in running if b.node == binding.node}
        slot = next(i for i in range(len(used) + 1) if i not in used)  # the lowest free, as PackedSlots does
        duration = rng.uniform(300, 1800)
        ended = now + _dt.timedelta(seconds=duration)
        running.append((ended, binding, slot))
        exid = f"{rng.getrandbits(48):012x}"
        loss = round(rng.uniform(0.1, 0.9), 6)
        record = ExecutionRecord(
            id=exid, campaign="gpu-sweep", commit=sha, command="python train.py --gpus {n_gpus}",
            parameters={"n_gpus": float(amount), "k": k}, profile="gpus", state="finished", author="alice",
            host=binding.node, slot=slot, created=_iso(T0), started=_iso(now), ended=_iso(ended),
            duration=round(duration, 2), exit_code=0, objective=loss, outputs=["metrics.json"],
            cores=render_cpu_list(binding.cores), gpus=",".join(binding.gpus),
            gpu_share=float(binding.gpu_share) if binding.gpu_share < 1 else None)
        views.append(ExecutionView(record, "", "", {}, [("metrics.json", 40)], {"val_loss": loss}))
    generated = max((e for e, _b, _s in running), default=T0) + _dt.timedelta(minutes=5)
    return ReportData("gpu-sweep", {"metric": "val_loss", "goal": "minimize"}, _iso(generated), _commits(), views,
                      parameter_types={"n_gpus": "float", "k": "int"})
