"""Where a trained detector's boxes of a class go, in the order of their scores (no training).

    python benchmarks/class_scores.py --data HELD_OUT.yaml --weights RUN/weights/last.pt [more] \
        [--classes scratch,crack]

A class with AP50 near 0 can fail in two ways that the AP does not tell apart: its right boxes exist but
are outranked (by boxes on another class's defects, on look-alikes, on clean parts), or the model scores the
class at about the same low level everywhere, so that nothing it has learnt separates the class from the rest.
For every held-out image (``val`` and ``test`` of ``--data``), each model predicts at confidence 0.001 (at
most 300 boxes, at the image size of its run folder's ``args.yaml``); each box of a named class is then
*right* (IoU >= 0.5 with a defect of its class), *near* (0.1-0.5), *on a CLASS* (IoU >= 0.1 with a defect of
another class only), on a *defect-free image*, or on the *background* of a defective one. Prints per model
and class: the highest score, the outcome of its top n boxes (n: the class's held-out defects) and of its
top 4n, and the ranks of its first right boxes; and the highest score of every class, for scale.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from miss_by_standout import held_out_objects  # a sibling script: the held-out labels, checked

from gradkit.report.errors import pairwise_iou

#: how close a box must come to a defect to count as on it (IoU), and to count as right (the AP50 match)
NEAR_IOU, RIGHT_IOU = 0.1, 0.5
#: how many of a class's first right boxes have their rank printed
RANKS_SHOWN = 10


def outcome(box: np.ndarray, cls: int, gt_cls: np.ndarray, gt_xyxy: np.ndarray, names: dict[int, str]) -> str:
    """Where one box of class ``cls`` lies among an image's defects (normalised x0, y0, x1, y1)."""
    if not len(gt_cls):
        return "defect-free image"
    iou = pairwise_iou(box[None, :], gt_xyxy)[0]
    same = iou[gt_cls == cls].max(initial=0.0)
    if same >= RIGHT_IOU:
        return "right"
    if same >= NEAR_IOU:
        return "near"
    other = iou * (gt_cls != cls)
    if other.max() >= NEAR_IOU:
        return f"on a {names[int(gt_cls[int(np.argmax(other))])]}"
    return "background"


def summary(scored: list[tuple[float, str]], n_objects: int) -> list[str]:
    """Lines for one class: its highest score, the outcomes of its top n and 4n boxes, the ranks of right ones."""
    scored = sorted(scored, key=lambda x: -x[0])
    if not scored:
        return ["  no box at confidence 0.001"]
    lines = [f"  {len(scored)} boxes, highest score {scored[0][0]:.3f}"]
    for top in (n_objects, 4 * n_objects):
        part = scored[:top]
        mix = ", ".join(f"{k} {v}" for k, v in Counter(o for _, o in part).most_common())
        lines.append(f"  top {top} (scores {part[0][0]:.3f} to {part[-1][0]:.3f}): {mix}")
    ranks = [i + 1 for i, (_, o) in enumerate(scored) if o == "right"]
    lines.append(f"  ranks of the first right boxes: {ranks[:RANKS_SHOWN] or 'none'} (of {len(ranks)} right)")
    return lines


def model_lines(weights: Path, objects: list, names: dict[int, str], classes: list[int]) -> list[str]:
    from ultralytics import YOLO

    imgsz = int(yaml.safe_load((weights.parent.parent / "args.yaml").read_text(encoding="utf-8"))["imgsz"])
    model = YOLO(str(weights))
    scored: dict[int, list[tuple[float, str]]] = {c: [] for c in names}
    for img, labels, _ in objects:
        gt_cls = np.array([c for c, _ in labels], int)
        gt_xyxy = np.array([(x - w / 2, y - h / 2, x + w / 2, y + h / 2) for _, (x, y, w, h) in labels]).reshape(-1, 4)
        boxes = model.predict(str(img), imgsz=imgsz, conf=0.001, max_det=300, verbose=False)[0].boxes
        for xyxy, c, s in zip(boxes.xyxyn.numpy(), boxes.cls.int().tolist(), boxes.conf.tolist(), strict=True):
            scored[c].append((s, outcome(xyxy, c, gt_cls, gt_xyxy, names) if c in classes else ""))
    counts = Counter(c for _, labels, _ in objects for c, _ in labels)
    lines = [f"\n{weights} ({imgsz} px); highest score per class: "
             + ", ".join(f"{names[c]} {max((s for s, _ in v), default=0):.3f}" for c, v in scored.items())]
    for c in classes:
        lines += [f"{names[c]}: {counts[c]} held-out defects", *summary(scored[c], counts[c])]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="the dataset YAML (its val and test are scored)")
    p.add_argument("--weights", required=True, nargs="+", type=Path, help="RUN/weights/last.pt, one or more")
    p.add_argument("--classes", default="scratch,crack", help="the classes whose boxes are followed (names)")
    args = p.parse_args()
    names, objects = held_out_objects(args.data)
    by_name = {n: c for c, n in names.items()}
    unknown = [n for n in args.classes.split(",") if n not in by_name]
    if unknown:
        raise SystemExit(f"--classes: {', '.join(unknown)} not in {args.data}'s names ({', '.join(names.values())})")
    for weights in args.weights:
        print("\n".join(model_lines(weights, objects, names, [by_name[n] for n in args.classes.split(",")])))


if __name__ == "__main__":
    main()
