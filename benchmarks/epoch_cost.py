"""What one epoch costs whatever the set's size, against ``gradkit plan budget=``'s estimate.

The plan's timer prices an epoch as its training images times the seconds one costs, plus its validation
images likewise (``gradkit.integrations.ultralytics.throughput``). Real epochs also pay for what does not grow
with the set: saving ``last.pt``/``best.pt``, starting the loaders and the validator. Trained here on
``gradkit synth`` sets of growing size at one image size (validation after every epoch, as a user's run does),
each epoch's wall time against the estimate: the intercept of a straight line through them is that fixed cost,
and where it dominates (a few dozen images at small sizes) the estimate reads too many epochs.

    python benchmarks/epoch_cost.py --out /tmp/epoch-cost [--sizes 16,48,144 --imgsz 128 --epochs 5]

Prints, per model, each set's epoch seconds (median of the epochs after the first), the estimate, their
ratio, and the fitted fixed seconds per epoch and slope. Runs one training at a time: run it alone.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np

MODELS = ("yolo26n.yaml", "yolo26n-half.yaml")


def epoch_seconds(results_csv: Path) -> float:
    """The median wall seconds of an epoch after the first (``time`` is cumulative, validation included)."""
    with open(results_csv, encoding="utf-8") as f:
        times = [float(row["time"]) for row in csv.DictReader(f)]
    return statistics.median(b - a for a, b in itertools.pairwise(times))


def estimate_seconds(model: str, imgsz: int, train_images: int, val_images: int, nc: int) -> float:
    """The plan's price of one epoch: its training and validation images at the timer's seconds each."""
    from gradkit.integrations.ultralytics import throughput as timer

    return (timer.training_seconds_per_image(model, imgsz, nc) * train_images
            + timer.validation_seconds_per_image(model, imgsz, nc) * val_images)


def run(model: str, images: int, imgsz: int, epochs: int, out: Path) -> dict:
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.models import resolved_model
    from gradkit.synth import SynthSpec, generate_dataset

    root = out / f"synth-{images}-{imgsz}"
    data = root / "data.yaml" if (root / "data.yaml").exists() else generate_dataset(
        root, SynthSpec(images=images, imgsz=imgsz, seed=5), progress=False)
    counts = {s: len(list((root / "images" / s).iterdir())) for s in ("train", "val")}
    yolo = YOLO(resolved_model(model))
    gradkit.attach(yolo, "default", {"report.enabled": False, "monitor.plot": False})
    name = f"{Path(model).stem}-{images}"
    yolo.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=16, nbs=16, plots=False, verbose=False, seed=0,
               project=str(out / "runs"), name=name, exist_ok=True)
    real = epoch_seconds(out / "runs" / name / "results.csv")
    estimate = estimate_seconds(model, imgsz, counts["train"], counts["val"], 4)
    return {"model": model, "train": counts["train"], "val": counts["val"], "real": real, "estimate": estimate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="16,48,144", help="images per generated set (all splits)")
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--out", default="runs/epoch-cost")
    args = p.parse_args()
    out = Path(args.out).resolve()
    runs = {model: [run(model, int(n), args.imgsz, args.epochs, out) for n in args.sizes.split(",")]
            for model in MODELS}
    print("\n| model | training / val images | epoch s: estimate, real, real / estimate |\n|---|---|---|")
    for model, rows in runs.items():
        for r in rows:
            print(f"| {model} | {r['train']} / {r['val']} | {r['estimate']:.2f}, {r['real']:.2f}, "
                  f"{r['real'] / r['estimate']:.2f} |")
        slope, fixed = np.polyfit([r["estimate"] for r in rows], [r["real"] for r in rows], 1)
        print(f"| {model} | fit | fixed {fixed:.2f} s per epoch, slope {slope:.2f} |")

if __name__ == "__main__":
    main()
