"""COCO-standard metrics from faster-coco-eval, plus defect-aware buckets with the same machinery.

Boxes are evaluated in *normalised* coordinates (each image mapped to a 1000 x 1000 canvas). An
axis-aligned rescaling leaves every IoU unchanged, and makes ``area`` relative to the image, so the
COCO area ranges become relative-size buckets that mean the same on a 200 px NEU-DET crop and on a
3000 px PCB scan. The elongation buckets reuse the same code by putting the aspect ratio in ``area``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["AREA_BUCKETS", "ELONGATION_BUCKETS", "Box", "bucket_metrics", "coco_metrics"]

CANVAS = 1000.0
#: Relative box area (box area / image area) buckets.
AREA_BUCKETS: dict[str, tuple[float, float]] = {
    "<0.1%": (0.0, 0.001), "0.1-1%": (0.001, 0.01), "1-10%": (0.01, 0.1), ">10%": (0.1, 1.0 + 1e-9),
}
#: Aspect-ratio (long side / short side) buckets; > 5 is scratch/weld-like.
ELONGATION_BUCKETS: dict[str, tuple[float, float]] = {"compact (<=5)": (0.0, 5.0), "elongated (>5)": (5.0, 1e9)}


@dataclass(frozen=True)
class Box:
    """One box in normalised xyxy coordinates in [0, 1]; ``score`` is None for ground truth."""

    image: int
    cls: int
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None

    @property
    def rel_area(self) -> float:
        return max(self.x1 - self.x0, 0.0) * max(self.y1 - self.y0, 0.0)

    def elongation(self, width: float, height: float) -> float:
        """Aspect ratio in pixels (the image's own proportions, not the unit square's)."""
        w, h = (self.x1 - self.x0) * width, (self.y1 - self.y0) * height
        return max(w, h) / max(min(w, h), 1e-9)


def _coco(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], classes: Sequence[int],
          area_of=None):
    from faster_coco_eval import COCO

    def ann(b: Box, i: int) -> dict:
        w, h = (b.x1 - b.x0) * CANVAS, (b.y1 - b.y0) * CANVAS
        d = {"id": i + 1, "image_id": b.image, "category_id": b.cls, "bbox": [b.x0 * CANVAS, b.y0 * CANVAS, w, h],
             "area": area_of(b) if area_of else w * h, "iscrowd": 0}
        if b.score is not None:
            d["score"] = b.score
        return d

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": CANVAS, "height": CANVAS} for i in images],
                  "categories": [{"id": c, "name": str(c)} for c in classes],
                  "annotations": [ann(b, i) for i, b in enumerate(gts)]}
    gt.createIndex()
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"],
                  "annotations": [ann(b, i) for i, b in enumerate(preds)]}
    dt.createIndex()
    return gt, dt


def _evaluate(gt, dt, area_rng: list[list[float]] | None = None, cat_ids: list[int] | None = None):
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(gt, dt, iouType="bbox", print_function=lambda *a, **k: None)
    if area_rng is not None:
        ev.params.areaRng = area_rng
        ev.params.areaRngLbl = ["all"] + [f"b{i}" for i in range(len(area_rng) - 1)]
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(ev, area_index: int = 0, iou: float | None = None) -> float:
    """Mean precision over IoU thresholds (or one), recall points and classes, -1 entries excluded."""
    p = ev.eval["precision"]  # [T, R, K, A, M]
    if iou is not None:
        p = p[np.isclose(ev.params.iouThrs, iou)]
    p = p[:, :, :, area_index, -1]
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _ar(ev, area_index: int = 0, iou: float | None = None) -> float:
    r = ev.eval["recall"]  # [T, K, A, M]
    if iou is not None:
        r = r[np.isclose(ev.params.iouThrs, iou)]
    r = r[:, :, area_index, -1]
    valid = r[r > -1]
    return float(valid.mean()) if valid.size else float("nan")


def coco_metrics(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], classes: Sequence[int]
                 ) -> dict[str, float]:
    """AP, AP50, AP75, AR@100 and APs/m/l (absolute COCO areas on the 1000 px canvas).

    Classes without ground truth are excluded from the means (COCO's -1), not counted as zero.
    """
    gt, dt = _coco(gts, preds, images, classes)
    ev = _evaluate(gt, dt)
    return {"AP": _ap(ev), "AP50": _ap(ev, iou=0.5), "AP75": _ap(ev, iou=0.75), "AR100": _ar(ev),
            "APs": _ap(ev, 1), "APm": _ap(ev, 2), "APl": _ap(ev, 3)}


def bucket_metrics(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], classes: Sequence[int],
                   sizes: dict[int, tuple[int, int]], by: str = "area") -> dict[str, dict]:
    """AP50-95, AP50 and recall (at IoU 0.5, up to 100 detections) per bucket, overall and per class.

    Args:
        sizes: Image id -> (width, height) in pixels, for the elongation of boxes.
        by: ``area`` (relative area buckets) or ``elongation``.

    Returns:
        ``{bucket: {"gt": n, "AP": .., "AP50": .., "recall": .., "per_class": {cls: {...}}}}``;
        NaN where a bucket holds no ground truth.
    """
    buckets = AREA_BUCKETS if by == "area" else ELONGATION_BUCKETS

    def measure(b: Box) -> float:
        return b.rel_area if by == "area" else b.elongation(*sizes[b.image])

    gt, dt = _coco(gts, preds, images, classes, area_of=measure)
    ranges = [[0.0, 1e12], *[list(r) for r in buckets.values()]]
    out: dict[str, dict] = {}
    ev = _evaluate(gt, dt, ranges)
    per_class_ev = {c: _evaluate(gt, dt, ranges, [c]) for c in classes}
    for a, name in enumerate(buckets, start=1):
        lo, hi = buckets[name]
        n = sum(1 for b in gts if lo <= measure(b) < hi)
        row = {"gt": n, "AP": _ap(ev, a), "AP50": _ap(ev, a, 0.5), "recall": _ar(ev, a, 0.5), "per_class": {}}
        for c, cev in per_class_ev.items():
            nc = sum(1 for b in gts if b.cls == c and lo <= measure(b) < hi)
            row["per_class"][c] = {"gt": nc, "AP": _ap(cev, a), "AP50": _ap(cev, a, 0.5), "recall": _ar(cev, a, 0.5)}
        out[name] = row
    return out
