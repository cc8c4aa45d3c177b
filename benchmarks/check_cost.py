"""Cost of the dataset check that runs before training vs one training epoch of the demo.

Times ``check_dataset(images=False)`` (what ``gradkit train`` runs before training: labels, pairing
and the header-level image check that catches unreadable and truncated files) on a synthetic set of
``--images`` images at the demo's image size, next to the full ``gradkit check`` (every image
decoded, duplicates hashed), and one epoch of the demo's training (``gradkit demo`` settings, demo
data) measured between Ultralytics' epoch events.

Ratios printed: the check of all ``--images`` images against one demo epoch, and per image (the
check of a dataset against one epoch over that same dataset).

    python benchmarks/check_cost.py [--images 5000 --workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")


def _time_check(data_yaml: Path, images: bool) -> float:
    from gradkit.data import check_dataset

    t0 = time.perf_counter()
    check_dataset(data_yaml, images=images)
    return time.perf_counter() - t0


def _demo_epoch(tmp: Path) -> tuple[float, int]:
    """Seconds of the demo's first training epoch and the number of training images."""
    from ultralytics import YOLO

    import gradkit
    from gradkit.demo import DEMO_DEFAULTS, TRAIN_DEFAULTS, _ensure_dataset
    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    data = _ensure_dataset(tmp / "demo-data", DEMO_DEFAULTS["images"], DEMO_DEFAULTS["imgsz"], DEMO_DEFAULTS["seed"])
    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, DEMO_DEFAULTS["gradkit"], {"data.check": False, "report.enabled": False})
    marks: dict[str, float] = {}
    keep_training_threads(model, os.cpu_count() or 1)
    model.add_callback("on_train_epoch_start", lambda t: marks.setdefault("start", time.perf_counter()))
    model.add_callback("on_train_epoch_end", lambda t: marks.setdefault("end", time.perf_counter()))
    model.train(data=str(data), imgsz=DEMO_DEFAULTS["imgsz"], seed=DEMO_DEFAULTS["seed"], project=str(tmp),
                name="demo", device="cpu", plots=False, verbose=False, **{**TRAIN_DEFAULTS, "epochs": 1})
    return marks["end"] - marks["start"], len(model.trainer.train_loader.dataset)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--workdir", default=None, help="reuse the datasets generated there by an earlier run")
    args = ap.parse_args()
    from gradkit.demo import DEMO_DEFAULTS
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="gradkit-checkcost-"))
    spec = SynthSpec(images=args.images, imgsz=DEMO_DEFAULTS["imgsz"], seed=1)
    data = tmp / "data" / "data.yaml"
    meta = (yaml.safe_load(data.read_text(encoding="utf-8")) if data.exists() else {}).get("gradkit_synth", {})
    if meta.get("images") != spec.images:
        shutil.rmtree(tmp / "data", ignore_errors=True)  # this script's own data, of another size
        data = generate_dataset(tmp / "data", spec, progress=False)
    _time_check(data, images=False)  # warm the page cache and imports: both checks read the same files
    fast = _time_check(data, images=False)
    full = _time_check(data, images=True)
    epoch, n_train = _demo_epoch(tmp)
    print(f"check before training, {args.images} images at {DEMO_DEFAULTS['imgsz']} px: {fast:.2f} s "
          f"({1000 * fast / args.images:.2f} ms/image)")
    print(f"full 'gradkit check' (for reference):            {full:.2f} s ({1000 * full / args.images:.2f} ms/image)")
    print(f"one demo training epoch, {n_train} images:            {epoch:.2f} s "
          f"({1000 * epoch / n_train:.1f} ms/image)")
    print(f"ratio check({args.images} images) / demo epoch:       {fast / epoch:.3f}")
    print(f"ratio per image (check / epoch over the same data):   {(fast / args.images) / (epoch / n_train):.4f}")
    print(f"files in {tmp} (--workdir {tmp} reuses them)")


if __name__ == "__main__":
    main()
