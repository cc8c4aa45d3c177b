"""Images/s of the training dataset pipeline: stock vs defect preset vs preset + copy-paste.

Iterates the Ultralytics training dataset (mosaic on, as in training) in one process and times
``dataset[i]`` for the same indices under each configuration, side by side.

    python benchmarks/augment_throughput.py [--images 200 --imgsz 320 --samples 300]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def _dataset(data_yaml: str, imgsz: int, overrides: dict | None):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import install_augmentation

    data = check_det_dataset(data_yaml)
    args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml, "mode": "train"})
    ds = build_yolo_dataset(args, data["train"], 16, data, mode="train")
    if overrides is not None:
        cfg = load_config("default", overrides)
        install_augmentation(ds, cfg.augment, args)
    return ds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-augtp-"))
    data = str(generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz), progress=False))
    configs = {
        "stock": None,
        "defect preset": {"augment.preset": "defect"},
        "preset + copy-paste": {"augment.preset": "defect", "augment.copy_paste.p": 1.0,
                                "augment.copy_paste.rare_first": True},
    }
    datasets = {name: _dataset(data, args.imgsz, o) for name, o in configs.items()}
    rates = {name: [] for name in configs}
    for _ in range(3):  # interleave rounds so drift hits every configuration
        for name, ds in datasets.items():
            random.seed(0)
            idx = [random.randrange(len(ds)) for _ in range(args.samples // 3)]
            t0 = time.perf_counter()
            for i in idx:
                ds[i]
            rates[name].append(len(idx) / (time.perf_counter() - t0))
    base = sorted(rates["stock"])[1]
    print(f"\ntraining pipeline at {args.imgsz}px (mosaic on), {args.samples} samples per configuration, 1 process")
    print(f"{'configuration':24}{'images/s':>10}{'vs stock':>10}")
    for name, r in rates.items():
        med = sorted(r)[1]
        print(f"{name:24}{med:>10.1f}{med / base:>10.2f}")


if __name__ == "__main__":
    main()
