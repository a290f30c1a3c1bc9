"""How well the packing rule uses GPU nodes on mixed campaigns (runaway/placement.py), in simulated time.

A campaign of executions needing 1, 2 or 4 GPUs with random durations runs on N nodes of G fake GPUs.
The simulation drives the real Packer the way the controller does (a look-ahead window of waiting
executions, the widest that fits placed first, more asked for only while none fits). It reports makespan
and utilisation (busy device-time over allocated device-time = devices x makespan) for:
- ffd: Orchestra's rule;
- in-order: each execution must start before any later one (a queue of one `srun --gres` step per
  execution in campaign order, or slots without look-ahead);
and compares them with a lower bound on the makespan (total GPU-work / devices; the longest execution;
executions wider than half a node cannot share one) and, on a small instance, with the best non-delay
schedule found by brute force over every order.

    python bench/packing.py                 # the default mixed campaign and a brute-forced small one
    python bench/packing.py --executions 500 --nodes 4 --seed 3
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import random
from collections.abc import Sequence
from fractions import Fraction

from orchestra.resources import Request
from runaway.controller import PACKING_PATIENCE
from runaway.placement import NodeCapacity, Packer

Work = tuple[Request, float]  # a request and how long it runs


def campaign(count: int, seed: int, widths: Sequence[int] = (1, 2, 4)) -> list[Work]:
    rng = random.Random(seed)
    return [(Request(cpus=1, gpus=Fraction(rng.choice(widths))), rng.uniform(1.0, 10.0)) for _ in range(count)]


def nodes(count: int, gpus: int, cores: int) -> list[NodeCapacity]:
    return [NodeCapacity(f"n{i}", tuple(range(cores)), tuple(str(g) for g in range(gpus))) for i in range(count)]


def simulate(work: Sequence[Work], capacities: Sequence[NodeCapacity], *, window: int = 64,
             in_order: bool = False) -> tuple[float, float]:
    """(makespan, busy GPU-time) of the campaign under the packing rule (or strictly in order)."""
    packer = Packer(capacities)
    queue = list(work)
    queue.reverse()
    pending: list[Work] = []
    passed: list[int] = []  # the controller's starvation guard (runaway/controller.py)
    running: list[tuple[float, int, object]] = []
    now, busy, serial = 0.0, 0.0, 0

    def fill() -> None:
        nonlocal serial, busy
        while True:
            placed = None
            if pending:
                if in_order:
                    binding = packer.place(pending[0][0])
                    placed = (0, binding) if binding is not None else None
                else:
                    starving = next((i for i, c in enumerate(passed) if c >= PACKING_PATIENCE), None)
                    if starving is not None:
                        binding = packer.place(pending[starving][0])
                        placed = (starving, binding) if binding is not None else None
                        if placed is None:
                            return  # its node drains for it
                    else:
                        placed = packer.choose([request for request, _ in pending])
            if placed is not None:
                index, binding = placed
                for earlier in range(index):
                    passed[earlier] += 1
                passed.pop(index)
                request, duration = pending.pop(index)
                heapq.heappush(running, (now + duration, serial, binding))
                serial += 1
                busy += float(request.gpus) * duration
                continue
            if queue and len(pending) < (1 if in_order else window):
                pending.append(queue.pop())
                passed.append(0)
                continue
            return

    fill()
    while running:
        now, _, binding = heapq.heappop(running)
        packer.release(binding)  # type: ignore[arg-type]
        while running and running[0][0] == now:
            packer.release(heapq.heappop(running)[2])  # type: ignore[arg-type]
        fill()
    return now, busy


def lower_bound(work: Sequence[Work], capacities: Sequence[NodeCapacity]) -> float:
    devices = sum(len(node.gpus) for node in capacities)
    per_node = max(len(node.gpus) for node in capacities)
    gpu_work = sum(float(request.gpus) * duration for request, duration in work)
    wide = sum(duration for request, duration in work if request.gpus * 2 > per_node)  # one per node at a time
    return max(gpu_work / devices, max(duration for _, duration in work), wide / len(capacities))


def brute_force(work: Sequence[Work], capacities: Sequence[NodeCapacity]) -> float:
    """The best makespan of a non-delay schedule over every order of the executions (small instances)."""
    return min(simulate(order, capacities, in_order=True)[0] for order in itertools.permutations(work))


def report(label: str, work: Sequence[Work], capacities: Sequence[NodeCapacity], exact: bool) -> None:
    devices = sum(len(node.gpus) for node in capacities)
    bound = lower_bound(work, capacities)
    print(f"{label}: {len(work)} executions (1, 2, 4 GPUs; 1-10 s), {len(capacities)} nodes x "
          f"{len(capacities[0].gpus)} GPUs")
    best = brute_force(work, capacities) if exact else None
    reference = best if best is not None else bound
    for name, in_order in (("ffd", False), ("in-order", True)):
        makespan, busy = simulate(work, capacities, in_order=in_order)
        print(f"  {name:9s} makespan {makespan:8.2f}  utilisation {busy / (devices * makespan):6.1%}  "
              f"vs {'best' if best is not None else 'bound'}: {reference / makespan:6.1%}")
    print(f"  lower bound {bound:8.2f}  (utilisation at most {sum(float(r.gpus) * d for r, d in work) / (devices * bound):.1%})")
    if best is not None:
        print(f"  brute force (best order) makespan {best:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=300)
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=4, help="GPUs per node")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--small-seeds", type=int, default=20, help="small instances brute-forced")
    args = parser.parse_args()
    capacities = nodes(args.nodes, args.gpus, 64)
    report("mixed campaign", campaign(args.executions, args.seed), capacities, exact=False)
    report("small instance", campaign(7, args.seed), nodes(1, args.gpus, 64), exact=True)
    small = nodes(1, args.gpus, 64)
    ratios: dict[str, list[float]] = {"ffd": [], "in-order": []}
    for seed in range(args.seed, args.seed + args.small_seeds):
        work = campaign(6, seed)
        best = brute_force(work, small)
        for name, in_order in (("ffd", False), ("in-order", True)):
            ratios[name].append(best / simulate(work, small, in_order=in_order)[0])
    for name, values in ratios.items():
        print(f"{args.small_seeds} small instances (6 executions, 1 node): {name:9s} makespan of the best order / "
              f"its own: mean {sum(values) / len(values):.1%}, worst {min(values):.1%}")


if __name__ == "__main__":
    main()
