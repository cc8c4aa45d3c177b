"""Does the clipping policy matter? SGD at the default lr0 and at 10x and 30x it, per policy.

Trains yolo26n.yaml from scratch on the synthetic defect dataset with each clipping policy and each
learning rate (same data, seed and budget), and prints final mAP50-95 on the val split, the number
of non-finite (skipped) optimizer steps and whether training diverged, side by side.

    python benchmarks/stability.py [--images 300 --imgsz 192 --epochs 15 --lrs 0.01,0.1,0.3]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch

POLICIES: dict[str, dict] = {
    "stock": {"clip.mode": "stock"},
    "norm(100)": {"clip.mode": "norm", "clip.max_norm": 100.0},
    "agc": {"clip.mode": "agc"},
    "autoclip(p10)": {"clip.mode": "autoclip", "clip.percentile": 10.0},
}


def _run(data: Path, out: Path, name: str, lr0: float, overrides: dict, args) -> dict:
    from ultralytics import YOLO

    import gradkit

    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, "default", {**overrides, "monitor.plot": False})
    model.add_callback("on_pretrain_routine_end", lambda t: torch.set_num_threads(os.cpu_count() or 1))
    t0 = time.time()
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=16, nbs=16, workers=1,
                optimizer="SGD", lr0=lr0, warmup_epochs=1, plots=False, device="cpu", seed=0,
                project=str(out), name=name, exist_ok=True, verbose=False)
    run = Path(model.trainer.save_dir)
    with open(run / "gradient_steps.csv", newline="") as f:
        steps = list(csv.DictReader(f))
    with open(run / "results.csv", newline="") as f:
        results = list(csv.DictReader(f))
    last = results[-1]
    final_map = float(last["metrics/mAP50-95(B)"])
    losses = [float(last[k]) for k in last if k.startswith("train/")]
    skipped = sum(int(s["skipped"]) for s in steps)
    diverged = not all(math.isfinite(v) for v in losses) or skipped > 0.2 * len(steps)
    return {"map": final_map, "map50": float(last["metrics/mAP50(B)"]), "skipped": skipped,
            "clip_rate": sum(int(s["clipped"]) for s in steps) / max(len(steps), 1), "diverged": diverged,
            "minutes": (time.time() - t0) / 60}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--imgsz", type=int, default=192)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--lrs", default="0.01,0.1,0.3", help="SGD lr0 values (Ultralytics' default is 0.01)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-stability-"))
    data = generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz, seed=0), progress=False)
    lrs = [float(x) for x in args.lrs.split(",")]
    policies = args.policies.split(",")
    table: dict[tuple[str, float], dict] = {}
    for lr in lrs:
        for policy in policies:
            table[(policy, lr)] = _run(data, tmp / "runs", f"{policy}-{lr}".replace("(", "").replace(")", ""),
                                       lr, POLICIES[policy], args)
            r = table[(policy, lr)]
            print(f"[{policy} lr0={lr}] mAP50-95 {r['map']:.4f} skipped {r['skipped']} "
                  f"clip-rate {r['clip_rate']:.2f} diverged {r['diverged']} ({r['minutes']:.1f} min)", flush=True)
    print(f"\n{args.images} images at {args.imgsz}px, {args.epochs} epochs, SGD, batch 16, seed 0")
    header = "".join(f"{'lr0=' + str(lr):>28}" for lr in lrs)
    print(f"{'policy':16}{header}")
    print(f"{'':16}" + "".join(f"{'mAP50-95 / skipped / clip%':>28}" for _ in lrs))
    for policy in policies:
        cells = []
        for lr in lrs:
            r = table[(policy, lr)]
            cell = f"{r['map']:.4f} / {r['skipped']} / {100 * r['clip_rate']:.0f}%" + (" DIV" if r["diverged"] else "")
            cells.append(f"{cell:>28}")
        print(f"{policy:16}" + "".join(cells))


if __name__ == "__main__":
    main()
