"""Does ``gradkit plan budget=``'s estimate match what training costs on this machine?

For each generated evaluation set, the plan's timer (``gradkit.integrations.ultralytics.throughput``:
a few real steps of the model on random images at 128 px, scaled by pixels, Ultralytics' CPU threads)
against a real run of the plan itself (its model, imgsz, batch/nbs and gradkit configuration, Ultralytics'
default workers and threads, ``val=False``) for ``--epochs`` epochs. Measured seconds per training image:
the wall time of the epochs after the first (the first holds the warm-up and the label cache) over the
images they trained on, from the run's ``results.csv``. Their ratio is the overhead of loading,
augmenting and bookkeeping over the model's own step: ``throughput.DATA_OVERHEAD`` is set from it.

    python benchmarks/plan_estimate.py --out /tmp/gradkit-estimate

Runs one training at a time and uses the whole machine: run it alone.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from defect_quality import build_sets


def measured_seconds_per_image(results_csv: Path, train_images: int) -> float:
    """Mean wall seconds per training image over the epochs after the first (``time`` is cumulative)."""
    with open(results_csv) as f:
        times = [float(row["time"]) for row in csv.DictReader(f)]
    if len(times) < 2:
        raise SystemExit(f"{results_csv}: fewer than 2 epochs; give --epochs 2 or more")
    per_epoch = [b - a for a, b in itertools.pairwise(times)]
    return statistics.mean(per_epoch) / train_images


def run_set(name: str, data: Path, out: Path, epochs: int) -> dict:
    from ultralytics import YOLO

    import gradkit
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.integrations.ultralytics.throughput import DATA_OVERHEAD, training_seconds_per_image
    from gradkit.plan import make_plan

    fp = fingerprint_dataset(data)
    plan = make_plan(fp)
    train = {k: v for k, v in plan.train.items() if k not in ("model", "epochs", "time")}
    estimate = training_seconds_per_image(plan.train["model"], train["imgsz"], len(fp.class_names)) / DATA_OVERHEAD
    yolo = YOLO(plan.train["model"])
    gradkit.attach(yolo, plan.gradkit, {"report.enabled": False, "monitor.plot": False})
    yolo.train(data=str(data), epochs=epochs, val=False, plots=False, verbose=False, seed=0, project=str(out),
               name=name, exist_ok=True, **train)
    measured = measured_seconds_per_image(Path(yolo.trainer.save_dir) / "results.csv", fp.images)
    return {"set": name, "model": plan.train["model"], "imgsz": train["imgsz"], "train_images": fp.images,
            "estimated_ms": 1000 * estimate, "measured_ms": 1000 * measured, "ratio": measured / estimate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="synth,surface,photo")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default="runs/plan-estimate")
    args = p.parse_args()
    out = Path(args.out).resolve()
    sets = build_sets(out, args.sets.split(","), args.images, args.imgsz)
    rows = [run_set(name, data, out / "runs", args.epochs) for name, data in sets.items()]
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| set | model | imgsz | training images | estimated ms/image (model steps) | measured ms/image | "
          "measured / estimated |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['model']} | {r['imgsz']} | {r['train_images']} | {r['estimated_ms']:.0f} | "
              f"{r['measured_ms']:.0f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
    main()
