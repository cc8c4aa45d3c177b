"""Images/s of the training dataset pipeline: stock vs defect preset vs preset + copy-paste.

Iterates the Ultralytics training dataset (mosaic on, as in training) in one process and times
``dataset[i]`` for the same indices under each configuration, side by side, after one warm-up epoch
(the copy-paste crop cache fills during the first epoch of training). "defect preset" is defect.yaml
without copy-paste: the preset's transforms and its Ultralytics hyper-parameters.

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


def _dataset(data_yaml: str, imgsz: int, overrides: dict | None, color: bool = False):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import install_augmentation

    data = check_det_dataset(data_yaml)
    args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml, "mode": "train"})
    ds = build_yolo_dataset(args, data["train"], 16, data, mode="train")
    if overrides is not None:
        cfg = load_config("defect", {"augment.preset": "defect", **overrides})  # auto's largest list: the cost
        install_augmentation(ds, cfg.augment, args)
    return ds


def _stage_vs_compose(root: Path, n: int = 1000) -> None:
    """The preset on dataset images: gradkit's runner vs one ``A.Compose`` of the same transforms."""
    import cv2
    import numpy as np

    from gradkit.augment import build_compose, build_runner
    from gradkit.config import load_config

    images = [cv2.imread(str(f)) for f in sorted((root / "images" / "train").glob("*.png"))[:20]]
    boxes, labels = np.array([[0.5, 0.5, 0.2, 0.1], [0.3, 0.3, 0.05, 0.4]], np.float32), np.array([0.0, 1.0])
    cfg = load_config("defect", {"augment.preset": "defect"})  # the list auto takes when defects stand out
    timings = {}
    pipelines = {"one A.Compose": build_compose(cfg, seed=0), "gradkit runner": build_runner(cfg, seed=0)}
    for name, pipeline in pipelines.items():
        for k in range(len(images)):
            pipeline(image=images[k], bboxes=boxes, class_labels=labels)
        t0 = time.perf_counter()
        for k in range(n):
            pipeline(image=images[k % len(images)], bboxes=boxes, class_labels=labels)
        timings[name] = (time.perf_counter() - t0) / n * 1e3
    print(f"preset on {images[0].shape} images: " + ", ".join(f"{k} {v:.2f} ms" for k, v in timings.items())
          + f" ({timings['one A.Compose'] / timings['gradkit runner']:.1f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--colour", action="store_true", help="false-colour the images (the grayscale fast path off)")
    args = ap.parse_args()
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-augtp-"))
    data = str(generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz), progress=False))
    if args.colour:
        import cv2

        for f in (tmp / "data" / "images").rglob("*.png"):
            cv2.imwrite(str(f), cv2.applyColorMap(cv2.imread(str(f)), cv2.COLORMAP_JET))
    _stage_vs_compose(tmp / "data")
    # defect.yaml as users get it: the preset's transforms and its Ultralytics hyper-parameters
    configs = {
        "stock": None,
        "defect preset": {"augment.copy_paste.p": 0.0},
        "defect.yaml (+ copy-paste p 0.3)": {},
        "preset + copy-paste p 1": {"augment.copy_paste.p": 1.0},
    }
    datasets = {name: _dataset(data, args.imgsz, o) for name, o in configs.items()}
    for ds in datasets.values():  # one epoch first: steady state, as from the second epoch of training on
        for i in range(len(ds)):
            ds[i]
    rates = {name: [] for name in configs}
    rounds = 5
    for _ in range(rounds):  # interleave rounds so drift hits every configuration
        for name, ds in datasets.items():
            random.seed(0)
            idx = [random.randrange(len(ds)) for _ in range(args.samples // rounds)]
            t0 = time.perf_counter()
            for i in idx:
                ds[i]
            rates[name].append(len(idx) / (time.perf_counter() - t0))
    base = sorted(rates["stock"])[rounds // 2]
    print(f"\ntraining pipeline at {args.imgsz}px (mosaic on), {args.samples} samples per configuration, 1 process")
    print(f"{'configuration':34}{'images/s':>10}{'vs stock':>10}")
    for name, r in rates.items():
        med = sorted(r)[rounds // 2]
        print(f"{name:34}{med:>10.1f}{med / base:>10.2f}")


if __name__ == "__main__":
    main()
