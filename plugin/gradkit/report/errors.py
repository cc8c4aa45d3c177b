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
import torch
from torchvision.ops import box_iou

from gradkit.report.coco import Box

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


def _xyxy(boxes: Sequence[Box]) -> torch.Tensor:
    return torch.tensor([[b.x0, b.y0, b.x1, b.y1] for b in boxes], dtype=torch.float64).reshape(-1, 4)


def analyse_errors(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], conf: float = 0.25
                   ) -> tuple[dict[str, int], dict[int, ImageErrors]]:
    """Classify every prediction with ``score >= conf`` and every missed object.

    Returns:
        Totals per kind (plus ``tp``) and the per-image outcomes.
    """
    by_img_gt: dict[int, list[Box]] = {i: [] for i in images}
    by_img_pr: dict[int, list[Box]] = {i: [] for i in images}
    for b in gts:
        by_img_gt.setdefault(b.image, []).append(b)
    for b in preds:
        if b.score is not None and b.score >= conf:
            by_img_pr.setdefault(b.image, []).append(b)
    totals: Counter = Counter()
    per_image: dict[int, ImageErrors] = {}
    for img in by_img_gt:
        g, p = by_img_gt[img], sorted(by_img_pr.get(img, []), key=lambda b: -(b.score or 0.0))
        res = ImageErrors(img)
        iou = box_iou(_xyxy(p), _xyxy(g)).numpy() if g and p else np.zeros((len(p), len(g)))
        gcls = np.array([b.cls for b in g])
        matched = np.zeros(len(g), bool)
        for i, pb in enumerate(p):
            same = gcls == pb.cls if g else np.zeros(0, bool)
            iou_same = np.where(same, iou[i], 0.0) if g else np.zeros(0)
            iou_any = iou[i] if g else np.zeros(0)
            best_same = int(iou_same.argmax()) if len(g) else -1
            if len(g) and iou_same[best_same] >= FG_IOU:
                # highest IoU among the still unmatched objects of the class
                free = np.where(~matched & same, iou[i], 0.0)
                j = int(free.argmax())
                if free[j] >= FG_IOU:
                    matched[j] = True
                    res.tp += 1
                    continue
                kind = "duplicate"
            elif len(g) and (iou_any * ~same).max(initial=0.0) >= FG_IOU:
                kind = "classification"
            elif len(g) and iou_same.max(initial=0.0) >= BG_IOU:
                kind = "localization"
            elif len(g) and iou_any.max(initial=0.0) >= BG_IOU:
                kind = "both"
            else:
                kind = "background" if g else "background_on_defect_free"
            res.counts[kind] += 1
        res.counts["missed"] += int((~matched).sum())
        totals.update(res.counts)
        totals["tp"] += res.tp
        per_image[img] = res
    return {k: int(totals[k]) for k in ("tp", *ERROR_KINDS)}, per_image
