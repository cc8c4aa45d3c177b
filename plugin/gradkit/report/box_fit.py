"""How close each class's boxes come to its objects, at any confidence.

The miss table judges objects at the operating point. A class that never fires there has every object
"unseen", yet the model may see them and draw boxes that miss the IoU a match needs: around a 2 px
scratch a box 4 px too thick has IoU 0.33 whatever its confidence (README, "Why thin defects fail").
Per class, over every detection the validator kept (down to its confidence floor): how many objects
have a detection of their class at IoU >= 0.1, 0.3 and 0.5 (the recall the class would reach at that
IoU if confidence ranked nothing wrongly: a ceiling, since one detection may be the best for two
objects), and for the near misses (best IoU from 0.1 up to the match's 0.5) how that detection's box
differs from the object's: the median ratio of its side across the object (the object's shorter
side's axis) and along it. ``across`` well above 1 with ``along`` near 1 is a thin defect seen and
boxed too thick.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradkit.report.coco import Box, Boxes, box_columns
from gradkit.report.errors import BG_IOU, FG_IOU, pairwise_iou

__all__ = ["FIT_IOUS", "box_fit", "iou_key"]

#: The IoUs at which the table counts objects reached: the miss table's overlap, a midpoint, the match's.
FIT_IOUS = (BG_IOU, 0.3, FG_IOU)


def iou_key(iou: float) -> str:
    """The report.json key of one of FIT_IOUS (JSON keys are strings)."""
    return f"{iou:g}"


def _corners(cols: dict[str, np.ndarray], keep: np.ndarray) -> np.ndarray:
    return np.stack([cols[k][keep] for k in ("x0", "y0", "x1", "y1")], 1)


def _groups(col: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[tuple[int, int], slice]]:
    """An order of ``col`` by (image, class), and each (image, class)'s slice of it: one sort, not a scan of
    every detection per group (a validation keeps up to 300 detections per image)."""
    order = np.lexsort((col["cls"], col["image"]))
    keys = np.stack([col["image"][order], col["cls"][order]], 1).astype(np.int64)
    if not len(keys):  # no boxes at all (a model that detects nothing)
        return order, {}
    starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(1)])
    ends = np.r_[starts[1:], len(keys)]
    return order, {(int(keys[a, 0]), int(keys[a, 1])): slice(a, b) for a, b in zip(starts, ends, strict=True)}


def _best_matches(g: dict[str, np.ndarray], p: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per object, the best IoU with a detection of its class in its image, and that detection's index
    into ``p`` (-1 without one)."""
    best, which = np.zeros(len(g["cls"])), np.full(len(g["cls"]), -1)
    g_order, g_groups = _groups(g)
    p_order, p_groups = _groups(p)
    for key, gs in g_groups.items():
        if key not in p_groups:
            continue
        gi, pi = g_order[gs], p_order[p_groups[key]]
        iou = pairwise_iou(_corners(g, gi), _corners(p, pi))
        j = iou.argmax(1)
        best[gi], which[gi] = iou[np.arange(len(gi)), j], pi[j]
    return best, which


def _side_ratios(g: dict[str, np.ndarray], p: dict[str, np.ndarray], gi: np.ndarray, pi: np.ndarray,
                 sizes: dict[int, tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray]:
    """Detection side / object side, across the object and along it. Across is the axis of the object's
    shorter side in pixels (boxes are normalised per axis, so on a 424 x 256 image a 100 x 90 px box is taller
    than wide in those units); a square object's is its height. Near misses only: their IoU is at least
    BG_IOU, so neither box has a zero side."""
    gw, gh = g["x1"][gi] - g["x0"][gi], g["y1"][gi] - g["y0"][gi]
    pw, ph = p["x1"][pi] - p["x0"][pi], p["y1"][pi] - p["y0"][pi]
    wh = np.array([sizes[i] if sizes else (1, 1) for i in g["image"][gi].tolist()], np.float64).reshape(-1, 2)
    wide = gw * wh[:, 0] >= gh * wh[:, 1]
    return np.where(wide, ph / gh, pw / gw), np.where(wide, pw / gw, ph / gh)


def _median(x: np.ndarray) -> float | None:
    return float(np.median(x)) if len(x) else None


def box_fit(gts: Sequence[Box] | Boxes, preds: Sequence[Box] | Boxes, classes: Sequence[int],
            sizes: dict[int, tuple[int, int]] | None = None) -> dict[int, dict]:
    """Per class in ``classes`` with objects: ``objects``, ``reached`` ({iou_key: objects whose best
    detection of their class has at least that IoU} for FIT_IOUS), ``near_misses`` (best IoU in
    [BG_IOU, FG_IOU)) and their detections' median side ratios ``across`` and ``along`` (None without
    near misses). Every prediction counts, whatever its score. ``sizes``: image id -> (width, height) in
    pixels, which side of an object is the shorter (without it, that of the normalised box)."""
    g, p = box_columns(gts), box_columns(preds)
    best, which = _best_matches(g, p)
    out: dict[int, dict] = {}
    for c in classes:
        mine = g["cls"] == c
        if not mine.any():
            continue
        near = np.flatnonzero(mine & (best >= BG_IOU) & (best < FG_IOU))
        across, along = _side_ratios(g, p, near, which[near], sizes)
        out[c] = {"objects": int(mine.sum()),
                  "reached": {iou_key(t): int((best[mine] >= t).sum()) for t in FIT_IOUS},
                  "near_misses": len(near), "across": _median(across), "along": _median(along)}
    return out
