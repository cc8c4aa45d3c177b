"""Does ``gradkit plan budget=``'s estimate match what training costs on this machine?

For each generated evaluation set, the plan's timer (``gradkit.integrations.ultralytics.throughput``:
a few real steps of the model on random images at two sizes, read off the line through both, Ultralytics' CPU
threads)
against a real run of the plan itself (its model, imgsz, batch/nbs and gradkit configuration, Ultralytics'
default workers and threads, validating after every epoch as Ultralytics does by default) for
``--epochs`` epochs. Measured over the epochs after the first (the first holds the warm-up and the label
caches): seconds per validation image, the wall time between the validator's start and end callbacks over
the val images, and seconds per training image, the rest of each epoch's wall time (``results.csv``'s
``time`` is cumulative) over the training images. Their ratios to the timer's are the overheads of loading,
augmenting, post-processing and bookkeeping over the model's own passes: ``throughput.DATA_OVERHEAD`` and
``throughput.VAL_OVERHEAD`` are set from them.

    python benchmarks/plan_estimate.py --out /tmp/gradkit-estimate
    python benchmarks/plan_estimate.py --sets synth,photo --models yolo26n.yaml,yolo26n-half.yaml --out DIR

(``--models``: each model at the plan's size and settings, one after the other, for the timer's error per model.)

Runs one training at a time and uses the whole machine: run it alone.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

from defect_quality import build_sets


def epoch_seconds(results_csv: Path) -> list[float]:
    """Wall seconds of each epoch after the first, validation included (``time`` is cumulative)."""
    with open(results_csv, encoding="utf-8") as f:
        times = [float(row["time"]) for row in csv.DictReader(f)]
    if len(times) < 2:
        raise SystemExit(f"{results_csv}: fewer than 2 epochs; give --epochs 2 or more")
    return [b - a for a, b in itertools.pairwise(times)]


def run_set(name: str, data: Path, out: Path, epochs: int, models: list[str] | None = None,
            workers: int | None = None) -> list[dict]:
    """One row per model of ``models`` (None: the plan's own), each trained for ``epochs`` epochs."""
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.plan import make_plan

    fp = fingerprint_dataset(data)
    plan = make_plan(fp)
    return [run_model(name, data, out, epochs, fp, plan, model, workers) for model in models or [plan.train["model"]]]


def run_model(name: str, data: Path, out: Path, epochs: int, fp, plan, model: str, workers: int | None) -> dict:
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics import throughput as T
    from gradkit.integrations.ultralytics.models import resolved_model

    train = {k: v for k, v in plan.train.items() if k not in ("model", "epochs", "time")}
    imgsz, nc = train["imgsz"], len(fp.class_names)
    estimate = T.training_seconds_per_image(model, imgsz, nc) / T.DATA_OVERHEAD
    batch = train.get("batch", T.TRAIN_BATCH)
    val_estimate = T.validation_seconds_per_image(model, imgsz, nc, batch=batch) / T.VAL_OVERHEAD
    yolo = YOLO(resolved_model(model))  # a gradkit variant's name becomes the path of its YAML
    gradkit.attach(yolo, plan.gradkit, {"report.enabled": False, "monitor.plot": False})
    validations: list[list[float]] = []
    yolo.add_callback("on_val_start", lambda v: validations.append([time.perf_counter()]))
    yolo.add_callback("on_val_end", lambda v: validations[-1].append(time.perf_counter()))
    yolo.train(data=str(data), epochs=epochs, plots=False, verbose=False, seed=0, project=str(out),
               name=f"{name}-{Path(model).stem}", exist_ok=True, **train,
               **({} if workers is None else {"workers": workers}))
    epochs_s = epoch_seconds(Path(yolo.trainer.save_dir) / "results.csv")
    val_s = [end - start for start, end in validations[1:len(epochs_s) + 1]]  # the epochs after the first
    measured = statistics.mean(e - v for e, v in zip(epochs_s, val_s, strict=True)) / fp.images
    val_measured = statistics.mean(val_s) / fp.val_images
    return {"set": name, "model": model, "imgsz": imgsz, "train_images": fp.images, "val_images": fp.val_images,
            "estimated_ms": 1000 * estimate, "measured_ms": 1000 * measured, "ratio": measured / estimate,
            "val_estimated_ms": 1000 * val_estimate, "val_measured_ms": 1000 * val_measured,
            "val_ratio": val_measured / val_estimate}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default="synth,surface,photo")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--models", default=None,
                   help="comma-separated model YAMLs to time and train, e.g. yolo26n.yaml,yolo26n-half.yaml "
                        "(default: the plan's own, without a budget)")
    p.add_argument("--workers", type=int, default=None,
                   help="dataloader workers (default: Ultralytics'; 0 loads in the training process, as "
                        "benchmarks/defect_quality.py trains)")
    p.add_argument("--out", default="runs/plan-estimate")
    args = p.parse_args()
    out = Path(args.out).resolve()
    sets = build_sets(out, args.sets.split(","), args.images, args.imgsz)
    models = args.models.split(",") if args.models else None
    rows = [row for name, data in sets.items()
            for row in run_set(name, data, out / "runs", args.epochs, models, args.workers)]
    (out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print("\n| set | model | imgsz | training / val images | training ms/image: timer, measured, ratio | "
          "validation ms/image: timer, measured, ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['model']} | {r['imgsz']} | {r['train_images']} / {r['val_images']} | "
              f"{r['estimated_ms']:.0f}, {r['measured_ms']:.0f}, {r['ratio']:.2f} | "
              f"{r['val_estimated_ms']:.1f}, {r['val_measured_ms']:.1f}, {r['val_ratio']:.2f} |")


if __name__ == "__main__":
    main()
