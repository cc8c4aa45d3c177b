"""Does the defect preset help? Same budget, stock augmentation vs ``configs/gradkit/defect.yaml``.

Trains yolo26n.yaml from scratch on the synthetic defect dataset with each configuration (same
seed, epochs and data) and evaluates best.pt on the held-out test split and on a corrupted copy of
it (sensor noise, blur and low contrast: what the preset is meant to make the detector robust to).

    python benchmarks/augment_effect.py [--images 400 --imgsz 224 --epochs 15 --seeds 0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2
import numpy as np
import yaml


def corrupted_copy(data_yaml: Path, out: Path, seed: int = 0) -> Path:
    """The test split with Gaussian noise (sigma 12 grey levels), a 5x5 blur and contrast halved."""
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(data["path"])
    rng = np.random.default_rng(seed)
    (out / "images" / "test").mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "labels" / "test", out / "labels" / "test", dirs_exist_ok=True)
    for p in sorted((root / "images" / "test").glob("*.png")):
        img = cv2.imread(str(p)).astype(np.float32)
        img = cv2.GaussianBlur(img, (5, 5), 0)
        img = (img - img.mean()) * 0.5 + img.mean()
        img += rng.normal(0, 12, img.shape[:2])[..., None]
        cv2.imwrite(str(out / "images" / "test" / p.name), np.clip(img, 0, 255).astype(np.uint8))
    new = {**data, "path": str(out), "train": str(root / "images" / "train"), "val": str(root / "images" / "val")}
    (out / "data.yaml").write_text(yaml.safe_dump(new), encoding="utf-8")
    return out / "data.yaml"


def _train(data: Path, out: Path, name: str, preset: str, seed: int, args) -> Path:
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    model = YOLO("yolo26n.yaml")
    # "stock": the default preset (stock Ultralytics augmentation); "defect": configs/gradkit/defect.yaml
    gradkit.attach(model, "default" if preset == "stock" else preset, {"report.enabled": False, "monitor.plot": False})
    keep_training_threads(model, os.cpu_count() or 1)
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=16, nbs=16, workers=1, optimizer="AdamW",
                lr0=0.002, warmup_epochs=1, seed=seed, plots=False, device="cpu", project=str(out), name=name,
                exist_ok=True, verbose=False)
    return Path(model.trainer.save_dir) / "weights" / "best.pt"


def _test_map(weights: Path, data: Path, imgsz: int) -> float:
    from ultralytics import YOLO

    return float(YOLO(str(weights)).val(data=str(data), split="test", imgsz=imgsz, batch=16, plots=False,
                                        verbose=False, device="cpu").box.map)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--imgsz", type=int, default=224)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seeds", default="0")
    args = ap.parse_args()
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-augeffect-"))
    data = generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz, seed=0), progress=False)
    noisy = corrupted_copy(data, tmp / "data-corrupted")
    rows = {"stock": [], "defect": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for preset in rows:
            w = _train(data, tmp / "runs", f"{preset}-{seed}", preset, seed, args)
            rows[preset].append((_test_map(w, data, args.imgsz), _test_map(w, noisy, args.imgsz)))
            print(f"[{preset} seed {seed}] test mAP50-95 {rows[preset][-1][0]:.4f} corrupted {rows[preset][-1][1]:.4f}",
                  flush=True)
    print(f"\n{args.images} images at {args.imgsz}px, {args.epochs} epochs, seeds {args.seeds}; "
          "mAP50-95 on the test split")
    print(f"{'augmentation':16}{'clean':>10}{'corrupted':>12}")
    for preset, vals in rows.items():
        clean, bad = np.mean([v[0] for v in vals]), np.mean([v[1] for v in vals])
        label = "stock" if preset == "stock" else "defect preset"
        print(f"{label:16}{clean:>10.4f}{bad:>12.4f}")


if __name__ == "__main__":
    main()
