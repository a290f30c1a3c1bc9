"""A stand-in for a training script: fast, deterministic under its seed, and shaped like a real one."""
import argparse
import json
import math
import os
import random


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
    # Orchestra names a file for intermediate metrics: one JSON object a line, streamed while it runs
    # (`expegit status`, the report's learning curves, `c.metrics(id)`).
    live = os.environ.get("ORCHESTRA_METRICS")
    with open("curves/train.csv", "w") as f:
        f.write("epoch,loss\n")
        for epoch in range(10):
            train_loss = loss * (1 + 2.0 / (epoch + 1)) + rng.random() * 0.01
            f.write(f"{epoch},{train_loss:.5f}\n")
            if live:
                with open(live, "a") as m:
                    m.write(json.dumps({"epoch": epoch, "train_loss": round(train_loss, 5)}) + "\n")
    val_loss = loss + rng.random() * 0.01
    with open("metrics.json", "w") as f:
        json.dump({"val_loss": val_loss, "train_loss": loss}, f)
    print(f"lr={args.lr} layers={args.layers} opt={args.opt} val_loss={val_loss:.5f}")


if __name__ == "__main__":
    main()
