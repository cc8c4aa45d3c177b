"""What reading no label cache costs: Ultralytics' dataset set-up, stock (first run: scan and write
``labels/train.cache``; later runs: read it) against gradkit's guard (scan every run, write nothing).

Each set-up runs in a fresh process (the guard is process-wide once gradkit's integration is imported)
on a copy of a generated dataset, timed around ``YOLODataset(...)`` alone: Ultralytics' label scan opens
every image header and every label file on its thread pool. Runs alternate stock and gradkit so that
drift hits both.

    python benchmarks/label_scan.py [--images 2000 --imgsz 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

# A fresh process builds the training split's dataset as the trainer does, and prints the seconds it took.
_SET_UP = """
import sys, time
if sys.argv[2] == "gradkit":
    import gradkit.integrations.ultralytics  # installs the dataset guard
from ultralytics.cfg import get_cfg
from ultralytics.data import build_yolo_dataset
from ultralytics.data.utils import check_det_dataset
data = check_det_dataset(sys.argv[1])
cfg = get_cfg(overrides={"imgsz": int(sys.argv[3]), "cache": False})
start = time.perf_counter()
build_yolo_dataset(cfg, data["train"], 16, data, mode="train")
print(time.perf_counter() - start)
"""


def set_up_seconds(data: Path, who: str, imgsz: int) -> float:
    proc = subprocess.run([sys.executable, "-c", _SET_UP, str(data), who, str(imgsz)], capture_output=True,
                          text=True, check=True, env={**os.environ, "YOLO_OFFLINE": "1"})
    return float(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    from gradkit.synth import SynthSpec, generate_dataset

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        source = generate_dataset(Path(tmp) / "source", SynthSpec(images=args.images, imgsz=args.imgsz, seed=0),
                                  progress=False)
        stock_first, stock_cached, guarded = [], [], []
        for r in range(args.repeats):
            copy = Path(tmp) / f"copy{r}"
            shutil.copytree(source.parent, copy)
            data = copy / source.name
            data.write_text(data.read_text(encoding="utf-8").replace(str(source.parent), str(copy)), encoding="utf-8")
            stock_first.append(set_up_seconds(data, "stock", args.imgsz))
            guarded.append(set_up_seconds(data, "gradkit", args.imgsz))
            stock_cached.append(set_up_seconds(data, "stock", args.imgsz))
            shutil.rmtree(copy)
    train = round(args.images * 0.7)
    print(f"training split: {train} images of {args.imgsz} px; {args.repeats} repeats; median seconds")
    rows = [("stock, first run (scan, write the cache)", stock_first),
            ("stock, later runs (read the cache)", stock_cached),
            ("gradkit (scan, write nothing)", guarded)]
    base = statistics.median(stock_cached)
    for name, seconds in rows:
        med = statistics.median(seconds)
        print(f"  {name:44s} {med:7.2f} s  {1000 * med / train:6.2f} ms/image  {med / base:5.2f}x stock's later runs")


if __name__ == "__main__":
    main()
