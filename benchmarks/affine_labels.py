"""How many labels Ultralytics' affine warp drops while their defect stays in view (no training).

Every training sample goes through Ultralytics' ``RandomPerspective`` (after the mosaic, also without
it), whose ``box_candidates`` keeps a box only when both sides exceed 2 px and its aspect ratio is
below 100. gradkit, when its augmentation is on, keeps a box there while ``augment.bbox.min_visibility``
of the warped box is in view (``gradkit.augment.affine_boxes``). Two measurements, with Ultralytics' own classes:

1. **Box shapes**: one box in the middle of a 256 px image through 2000 warps each (mosaic off, zoom
   0.5-1.5x, shift 0.1), with Ultralytics' defaults (no rotation) and with the ``defect`` preset's 4°
   rotations: the share of warps after which Ultralytics' filter drops the box and gradkit's does not.
2. **The evaluation sets** as ``benchmarks/defect_quality.py`` builds them: the training split through
   Ultralytics' real training pipeline (mosaic on), every box the warp sees recorded with both filters'
   verdicts, per class: the share of boxes gradkit keeps that Ultralytics drops.

    python benchmarks/affine_labels.py --out DIR [--sets NAMES] [--samples 600]   # default: every set
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from defect_quality import SET_NAMES, build_sets

from gradkit.augment.affine_boxes import affine_survivors
from gradkit.config import BboxFilterConfig, load_config

MIN_VISIBILITY = BboxFilterConfig().min_visibility  # gradkit's default
SHAPES = [(160, 1), (160, 2), (160, 3), (80, 2), (120, 1), (250, 3), (3, 3), (4, 4), (6, 6), (58, 58)]
PRESET_DEGREES = load_config("defect").augment.ultralytics["degrees"]


def _recording_warp(warp, log: list) -> None:
    """Record, for every box this warp filters, (class, Ultralytics keeps, gradkit keeps); Ultralytics' verdict
    is what the warp applies. gradkit's needs each box as warped before clipping, which apply_bboxes returns."""
    stock_filter, stock_apply, stock_warp = warp.box_candidates, warp.apply_instances, warp.apply_bboxes
    current = {}

    def apply_instances(labels, params):
        current["cls"] = np.asarray(labels["cls"]).reshape(-1)
        return stock_apply(labels, params)

    def apply_bboxes(bboxes, M):
        out = stock_warp(bboxes, M)
        current["warped"] = np.array(out, dtype=float)  # a copy: the warp clips in place afterwards
        return out

    def box_candidates(box1, box2, **kwargs):
        stock = stock_filter(box1, box2, **kwargs)
        ours = affine_survivors(current["warped"].T, box2, MIN_VISIBILITY)
        log.extend(zip(current["cls"].tolist(), stock.tolist(), ours.tolist(), strict=True))
        return stock

    warp.apply_instances, warp.apply_bboxes, warp.box_candidates = apply_instances, apply_bboxes, box_candidates


def shape_table(draws: int, imgsz: int = 256) -> None:
    from ultralytics.data.augment import RandomPerspective
    from ultralytics.utils.instance import Instances

    print(f"\n## One box through {draws} of Ultralytics' warps (zoom 0.5-1.5x, shift 0.1, {imgsz} px image)\n")
    print("| box (w x h px) | dropped by Ultralytics, no rotation | gradkit | dropped by Ultralytics, ±4° "
          "(defect preset) | gradkit |")
    print("|---|---|---|---|---|")
    for w, h in SHAPES:
        row = []
        for degrees in (0.0, PRESET_DEGREES):
            warp = RandomPerspective(degrees=degrees, translate=0.1, scale=0.5, size=(imgsz, imgsz))
            log: list = []
            _recording_warp(warp, log)
            random.seed(0)
            np.random.seed(0)
            c = imgsz / 2
            for _ in range(draws):
                box = np.array([[c - w / 2, c - h / 2, c + w / 2, c + h / 2]], np.float32)
                warp({"img": np.zeros((imgsz, imgsz, 3), np.uint8), "cls": np.zeros((1, 1)),
                      "instances": Instances(box, bbox_format="xyxy", normalized=False)})
            log = np.array(log, dtype=float)
            row += [f"{1 - log[:, 1].mean():.2f}", f"{1 - log[:, 2].mean():.2f}"]
        print(f"| {w} x {h} | " + " | ".join(row) + " |")


def set_table(out: Path, names: list[str], images: int, imgsz: int, samples: int) -> None:
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.augment import RandomPerspective
    from ultralytics.data.utils import check_det_dataset

    print(f"\n## The evaluation sets' training splits through Ultralytics' training pipeline ({samples} samples, "
          "mosaic on)\n")
    print("| set | class | boxes the warp saw | in view (gradkit keeps) | dropped by Ultralytics while in view: "
          "no rotation | ±4° |")
    print("|---|---|---|---|---|---|")
    for name, data_yaml in build_sets(out, names, images, imgsz).items():
        data = check_det_dataset(str(data_yaml))
        counts = {}
        for degrees in (0.0, PRESET_DEGREES):
            args = get_cfg(overrides={"imgsz": imgsz, "data": str(data_yaml), "mode": "train", "degrees": degrees})
            dataset = build_yolo_dataset(args, data["train"], 16, data, mode="train")
            log: list = []
            seen: set[int] = set()
            for t in _walk(dataset.transforms):
                if isinstance(t, RandomPerspective) and id(t) not in seen:
                    seen.add(id(t))
                    _recording_warp(t, log)
            random.seed(0)
            np.random.seed(0)
            for k in range(samples):
                dataset[k % len(dataset)]
            counts[degrees] = np.array(log, dtype=float).reshape(-1, 3)
        classes = yaml.safe_load(Path(data_yaml).read_text(encoding="utf-8"))["names"]
        for c, cname in classes.items():
            cells = []
            for degrees in (0.0, PRESET_DEGREES):
                rows = counts[degrees][counts[degrees][:, 0] == c]
                in_view = rows[rows[:, 2] == 1]
                lost = float((in_view[:, 1] == 0).mean()) if len(in_view) else float("nan")
                cells.append((len(rows), len(in_view), lost))
            (n0, v0, lost0), (_, _, lost4) = cells
            print(f"| {name} | {cname} | {n0} | {v0} | {lost0:.3f} | {lost4:.3f} |")


def _walk(node, depth: int = 0):
    if node is None or depth > 6:
        return
    yield node
    for child in (*(getattr(node, "transforms", None) or []), getattr(node, "pre_transform", None)):
        if child is not None and not isinstance(child, str | bytes | dict):
            yield from _walk(child, depth + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="where the evaluation sets are built (or found)")
    ap.add_argument("--sets", default=",".join(SET_NAMES))
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--samples", type=int, default=600, help="training samples drawn per set and rotation")
    ap.add_argument("--draws", type=int, default=2000, help="warps per box shape")
    a = ap.parse_args()
    shape_table(a.draws)
    set_table(a.out, [s for s in a.sets.split(",") if s], a.images, a.imgsz, a.samples)


if __name__ == "__main__":
    main()
