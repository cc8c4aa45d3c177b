"""Error analysis in the style of TIDE (Bolya et al. 2020, "TIDE: A General Toolbox for
Identifying Object Detection Errors").

Every prediction at or above a confidence threshold is one of: true positive, duplicate,
localisation (right class, 0.1 <= IoU < 0.5), classification (wrong class, IoU >= 0.5), both (wrong
class, 0.1 <= IoU < 0.5) or background (IoU < 0.1 with every object; counted separately on
defect-free images). Every object that no true positive found is missed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gradkit.report.coco import Box, Boxes, box_columns

__all__ = ["ERROR_KINDS", "ImageErrors", "analyse_errors"]

ERROR_KINDS = ("classification", "localization", "both", "duplicate", "background", "background_on_defect_free",
               "missed")
FG_IOU, BG_IOU = 0.5, 0.1


@dataclass
class ImageErrors:
    """Outcome per image (for the gallery of worst images)."""

    image: int
    tp: int = 0
    counts: Counter = field(default_factory=Counter)

    @property
    def missed(self) -> int:
        return self.counts["missed"]

    @property
    def false_positives(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "missed")


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), corners x0, y0, x1, y1; 0 where the
    union is empty. torchvision's ``box_iou`` computes the same (the test's oracle), but costs ~0.15 ms a
    call in tensor set-up: a report calls this once per image, thousands of times."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    union = np.prod(a[:, 2:] - a[:, :2], axis=1)[:, None] + np.prod(b[:, 2:] - b[:, :2], axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def _classify(p_box: np.ndarray, p_cls: np.ndarray, g_box: np.ndarray, g_cls: np.ndarray) -> tuple[list[str], int]:
    """Kinds of one image's predictions (in descending score order) and the number of objects found."""
    iou = pairwise_iou(p_box, g_box)
    same = p_cls[:, None] == g_cls[None, :]
    best_same = np.where(same, iou, 0.0).max(1)
    best_other = np.where(same, 0.0, iou).max(1)
    kinds = np.where(best_other >= FG_IOU, "classification",
                     np.where(best_same >= BG_IOU, "localization",
                              np.where(iou.max(1) >= BG_IOU, "both", "background"))).astype(object)
    matched = np.zeros(len(g_cls), bool)
    for i in np.flatnonzero(best_same >= FG_IOU):  # greedy in score order: the order decides duplicates
        free = np.where(~matched & same[i], iou[i], 0.0)
        j = int(free.argmax())
        if free[j] >= FG_IOU:
            matched[j] = True
            kinds[i] = "tp"
        else:
            kinds[i] = "duplicate"
    return kinds.tolist(), int(matched.sum())


def analyse_errors(gts: Sequence[Box] | Boxes, preds: Sequence[Box] | Boxes, images: Sequence[int], conf: float = 0.25
                   ) -> tuple[dict[str, int], dict[int, ImageErrors]]:
    """Classify every prediction with ``score >= conf`` and every missed object.

    Returns:
        Totals per kind (plus ``tp``) and the per-image outcomes.
    """
    g, p = box_columns(gts), box_columns(preds)
    keep = np.nan_to_num(p["score"], nan=-np.inf) >= conf
    p = {k: v[keep] for k, v in p.items()}
    p_order = np.lexsort((-p["score"], p["image"]))  # by image, then by descending score (stable on ties)
    g_order = np.argsort(g["image"], kind="stable")
    p_img, g_img = p["image"][p_order], g["image"][g_order]
    p_box = np.stack([p[k] for k in ("x0", "y0", "x1", "y1")], 1)[p_order]
    g_box = np.stack([g[k] for k in ("x0", "y0", "x1", "y1")], 1)[g_order]
    p_cls, g_cls = p["cls"][p_order], g["cls"][g_order]
    totals: Counter = Counter()
    per_image: dict[int, ImageErrors] = {}
    for img in dict.fromkeys([*images, *np.unique(g_img).tolist()]):
        ps = slice(*np.searchsorted(p_img, [img, img + 1]))
        gs = slice(*np.searchsorted(g_img, [img, img + 1]))
        n_pred, n_gt = int(ps.stop - ps.start), int(gs.stop - gs.start)
        res = ImageErrors(img)
        if n_gt == 0:
            kinds, found = ["background_on_defect_free"] * n_pred, 0
        elif n_pred == 0:
            kinds, found = [], 0
        else:
            kinds, found = _classify(p_box[ps], p_cls[ps], g_box[gs], g_cls[gs])
        res.tp = found
        res.counts.update(k for k in kinds if k != "tp")
        res.counts["missed"] += n_gt - found
        totals.update(res.counts)
        totals["tp"] += res.tp
        per_image[img] = res
    return {k: int(totals[k]) for k in ("tp", *ERROR_KINDS)}, per_image
