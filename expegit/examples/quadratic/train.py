"""A stand-in for a training script: fast, deterministic under its seed, and shaped like a real one."""
import argparse
import json
import math
import os
import random
import signal
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--opt", choices=["sgd", "adam"], required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed * 1000 + args.layers)
    best_lr = 3e-3 if args.opt == "adam" else 3e-2
    loss = (math.log10(args.lr) - math.log10(best_lr)) ** 2 + 0.1 * (args.layers - 2) ** 2 + 0.05
    os.makedirs("curves", exist_ok=True)
    # Checkpoints (the manifest's `checkpoint:`): the epochs done survive an attempt stopped before its
    # allocation's walltime (warned by SIGUSR1) or preempted; the next attempt goes on from them.
    saved = os.path.join(os.environ.get("ORCHESTRA_CHECKPOINT_DIR", ""), "epochs.json")
    noise = [rng.random() for _ in range(10)]  # drawn up front: a resumed run draws the same numbers
    rows = json.load(open(saved)) if os.environ.get("ORCHESTRA_CHECKPOINT_DIR") and os.path.exists(saved) else []
    warned = []
    signal.signal(signal.SIGUSR1, lambda *_: warned.append(True))
    # Orchestra names a file for intermediate metrics: one JSON object a line, streamed while it runs
    # (`expegit status`, the report's learning curves, `c.metrics(id)`).
    live = os.environ.get("ORCHESTRA_METRICS")
    for epoch in range(len(rows), 10):
        train_loss = loss * (1 + 2.0 / (epoch + 1)) + noise[epoch] * 0.01
        rows.append(f"{epoch},{train_loss:.5f}")
        if live:
            with open(live, "a") as m:
                m.write(json.dumps({"epoch": epoch, "train_loss": round(train_loss, 5)}) + "\n")
        if os.environ.get("ORCHESTRA_CHECKPOINT_DIR"):
            with open(saved + ".tmp", "w") as f:
                json.dump(rows, f)
            os.replace(saved + ".tmp", saved)
        if warned:
            sys.exit(0)  # saved: the next attempt resumes from here
    with open("curves/train.csv", "w") as f:
        f.write("epoch,loss\n" + "".join(row + "\n" for row in rows))
    val_loss = loss + rng.random() * 0.01
    with open("metrics.json", "w") as f:
        json.dump({"val_loss": val_loss, "train_loss": loss}, f)
    print(f"lr={args.lr} layers={args.layers} opt={args.opt} val_loss={val_loss:.5f}")


if __name__ == "__main__":
    main()
