"""Are long lines found as fragments, and would joining the fragments box them? No training.

    python benchmarks/line_fragments.py RUN/weights/last.pt DATA_ROOT --imgsz 448 --cls scratch

For every object of class ``--cls`` whose box is at least ``--elongation`` times as long as wide, in the
``val`` and ``test`` images under ``DATA_ROOT`` (``images/`` and ``labels/`` in Ultralytics' layout), the
model's detections of that class at confidence >= ``--conf`` whose box overlaps the object's box:

- how many there are (median over objects);
- the share of the object's length that the union of their extents along it covers (median; and the share
  of objects covered over 80% of their length): a line found as several short boxes is covered well by
  them together and by none alone;
- the IoU of the box enclosing them all with the object's box: an upper bound on what joining the
  fragments after detection could reach, since the object's own box picks which detections to join.
  A joined box is at least as thick as the thickest fragment, so a model that boxes a line k times its
  width stays below IoU 1/k however well the fragments cover its length.

And where the best detection (the highest IoU with the object) puts the line across it: its thickness in
the object's thicknesses, how far its centre across lies from the line's, in the same unit, and the IoU the
detection would reach at the object's own thickness, centred where it is: what a box tightened after
detection could reach at best. A model that boxes a line thick because it cannot tell where across it lies
(its centres off by half a thickness or more) gains little from tightening.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")


def fragment_stats(obj: np.ndarray, dets: np.ndarray) -> tuple[int, float, float]:
    """(detections overlapping ``obj``, share of its length their union covers, IoU of their enclosing box with
    it) for one object box and an (n, 4) array of detection boxes, all xyxy pixels; its length is its longer
    side."""
    x0, y0, x1, y1 = obj
    inter = np.stack([np.maximum(dets[:, 0], x0), np.maximum(dets[:, 1], y0),
                      np.minimum(dets[:, 2], x1), np.minimum(dets[:, 3], y1)], 1) if len(dets) else np.zeros((0, 4))
    touching = (inter[:, 2] > inter[:, 0]) & (inter[:, 3] > inter[:, 1])
    if not touching.any():
        return 0, 0.0, 0.0
    along = 0 if x1 - x0 >= y1 - y0 else 1  # the axis the object is long on
    start, length = obj[along], obj[along + 2] - obj[along]
    covered = np.zeros(max(int(np.ceil(length)), 1), bool)
    for lo, hi in inter[touching][:, [along, along + 2]] - start:
        covered[int(np.floor(lo)):int(np.ceil(hi))] = True
    joined = np.concatenate([dets[touching][:, :2].min(0), dets[touching][:, 2:].max(0)])
    return int(touching.sum()), float(covered.mean()), _iou(obj, joined)


def placement_stats(obj: np.ndarray, dets: np.ndarray) -> tuple[float, float, float, float] | None:
    """For the detection with the highest IoU with ``obj`` (xyxy pixels, ``dets`` an (n, 4) array): (that IoU,
    its thickness across the object's long axis in the object's thicknesses, its centre's offset across from
    the object's centre in the same unit, signed, and the IoU it reaches resized across to the object's
    thickness about its own centre); None when no detection overlaps the object."""
    ious = np.array([_iou(obj, d) for d in dets])
    if not len(ious) or ious.max() <= 0:
        return None
    best = dets[ious.argmax()].astype(float)
    across = 1 if obj[2] - obj[0] >= obj[3] - obj[1] else 0  # y across a line lying along x
    thickness = obj[across + 2] - obj[across]
    centre, own_centre = (best[across] + best[across + 2]) / 2, (obj[across] + obj[across + 2]) / 2
    tightened = best.copy()
    tightened[[across, across + 2]] = centre - thickness / 2, centre + thickness / 2
    return (float(ious.max()), float((best[across + 2] - best[across]) / thickness),
            float((centre - own_centre) / thickness), _iou(obj, tightened))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def _objects(label: Path, cls: int, w: int, h: int, elongation: float) -> list[np.ndarray]:
    boxes = []
    for line in label.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 5 and int(float(parts[0])) == cls:
            cx, cy, bw, bh = (float(v) for v in parts[1:])
            box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            if max(bw * w, bh * h) >= elongation * max(min(bw * w, bh * h), 1e-9):
                boxes.append(box)
    return boxes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights")
    p.add_argument("data_root", type=Path)
    p.add_argument("--imgsz", type=int, required=True)
    p.add_argument("--cls", default="scratch", help="class name, as the model names it")
    p.add_argument("--conf", type=float, default=0.01)
    p.add_argument("--elongation", type=float, default=4.0, help="objects at least this long for their width")
    args = p.parse_args()
    from ultralytics import YOLO

    model = YOLO(args.weights)
    cls = {v: k for k, v in model.names.items()}[args.cls]
    rows, placed = [], []
    for split in ("val", "test"):
        for image in sorted((args.data_root / "images" / split).glob("*.png")):
            label = args.data_root / "labels" / split / (image.stem + ".txt")
            result = model.predict(str(image), imgsz=args.imgsz, conf=args.conf, max_det=300, verbose=False)[0]
            h, w = result.orig_shape
            objects = _objects(label, cls, w, h, args.elongation) if label.exists() else []
            dets = result.boxes.xyxy.numpy()[result.boxes.cls.numpy() == cls]
            rows += [fragment_stats(obj, dets) for obj in objects]
            placed += [placement_stats(obj, dets) for obj in objects]
    if not rows:
        raise SystemExit(f"no {args.cls} objects at least {args.elongation}x as long as wide under {args.data_root}")
    n, cover, iou = np.array(rows, float).T
    print(f"{len(rows)} {args.cls} objects; {args.cls} detections at confidence >= {args.conf} overlapping each: "
          f"median {np.median(n):.0f}; share of the length their union covers: median {np.median(cover):.2f}, "
          f"over 0.8 for {np.mean(cover > 0.8):.0%}; their enclosing box at IoU >= 0.3: {np.mean(iou >= 0.3):.0%}, "
          f">= 0.5: {np.mean(iou >= 0.5):.0%}")
    found = np.array([p for p in placed if p is not None], float).reshape(-1, 4)
    if len(found):
        best, thick, offset, tight = found.T
        print(f"best detection on each of {len(found)} ({len(placed) - len(found)} with none): IoU median "
              f"{np.median(best):.2f}, >= 0.5 for {np.mean(best >= 0.5):.0%}; {np.median(thick):.1f}x the line's "
              f"thickness (quartiles {np.percentile(thick, 25):.1f}-{np.percentile(thick, 75):.1f}); centre off "
              f"across by a median {np.median(np.abs(offset)):.2f} thickness, by over half for "
              f"{np.mean(np.abs(offset) > 0.5):.0%}; at the line's own thickness about its centre: IoU median "
              f"{np.median(tight):.2f}, >= 0.5 for {np.mean(tight >= 0.5):.0%}")


if __name__ == "__main__":
    main()
