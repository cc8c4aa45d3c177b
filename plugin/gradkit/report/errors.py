"""Error analysis in the style of TIDE (Bolya et al. 2020, "TIDE: A General Toolbox for
Identifying Object Detection Errors").

Every prediction at or above a confidence threshold is one of: true positive, duplicate,
localisation (right class, 0.1 <= IoU < 0.5), classification (wrong class, IoU >= 0.5), both (wrong
class, 0.1 <= IoU < 0.5) or background (IoU < 0.1 with every object; counted separately on
defect-free images). Every object that no true positive found is missed, and why (an inspector's question
when a class's recall is low: is it boxed badly, taken for another defect, or not seen at all?),
judged only by detections that are not another object's true positive: mislocalised (a detection of
its class overlaps it, IoU >= 0.1), else confused (another class's detection overlaps it, IoU >= 0.1),
else unseen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gradkit.report.coco import Box, Boxes, box_columns

__all__ = ["ERROR_KINDS", "MISS_CAUSES", "ImageErrors", "analyse_errors", "class_labels", "miss_causes"]

ERROR_KINDS = ("classification", "localization", "both", "duplicate", "background", "background_on_defect_free",
               "missed")
MISS_CAUSES = ("mislocalised", "confused", "unseen")
FG_IOU, BG_IOU = 0.5, 0.1


@dataclass
class ImageErrors:
    """Outcome per image (for the gallery of worst images)."""

    image: int
    tp: int = 0
    counts: Counter = field(default_factory=Counter)
    #: (class of the object, "found" or a MISS_CAUSES entry, class of the overlapping detection or None) per object
    objects: list[tuple[int, str, int | None]] = field(default_factory=list)

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


def _classify(p_box: np.ndarray, p_cls: np.ndarray, g_box: np.ndarray, g_cls: np.ndarray
              ) -> tuple[list[str], np.ndarray, list[tuple[int, str, int | None]]]:
    """Kinds of one image's predictions (in descending score order), which objects were found, and each
    object's outcome (:func:`_object_outcomes`)."""
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
    return kinds.tolist(), matched, _object_outcomes(iou, same, kinds != "tp", p_cls, g_cls, matched)


def _object_outcomes(iou: np.ndarray, same: np.ndarray, spare: np.ndarray, p_cls: np.ndarray, g_cls: np.ndarray,
                     found: np.ndarray) -> list[tuple[int, str, int | None]]:
    """Each object's outcome: found, or why not (MISS_CAUSES), with the class it was taken for when confused.
    Only ``spare`` detections (not another object's true positive) explain a miss."""
    overlap = np.where(spare[:, None], iou, 0.0) >= BG_IOU
    near = (overlap & same).any(0)
    other = np.where(overlap & ~same, iou, 0.0)
    out: list[tuple[int, str, int | None]] = []
    for j, c in enumerate(g_cls.tolist()):
        if found[j]:
            out.append((c, "found", None))
        elif near[j]:
            out.append((c, "mislocalised", None))
        elif other[:, j].any():
            out.append((c, "confused", int(p_cls[int(other[:, j].argmax())])))
        else:
            out.append((c, "unseen", None))
    return out


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
            kinds = ["background_on_defect_free"] * n_pred
        elif n_pred == 0:
            kinds, res.objects = [], [(c, "unseen", None) for c in g_cls[gs].tolist()]
        else:
            kinds, found, res.objects = _classify(p_box[ps], p_cls[ps], g_box[gs], g_cls[gs])
            res.tp = int(found.sum())
        res.counts.update(k for k in kinds if k != "tp")
        res.counts["missed"] += n_gt - res.tp
        totals.update(res.counts)
        totals["tp"] += res.tp
        per_image[img] = res
    return {k: int(totals[k]) for k in ("tp", *ERROR_KINDS)}, per_image


def _miss_row() -> dict:
    return {"objects": 0, "found": 0, **dict.fromkeys(MISS_CAUSES, 0), "confused_with": Counter()}


def class_labels(ids: set[int], names: dict[int, str]) -> dict[int, str]:
    """A report key per class id: its name, or for an id without a name or a name two ids share, the name
    with its id (two classes named alike never merge into one row)."""
    shared = Counter(names.get(c) for c in ids)
    return {c: names[c] if c in names and shared[names[c]] == 1 else f"{names.get(c, 'class')} ({c})" for c in ids}


def miss_causes(per_image: dict[int, ImageErrors], names: dict[int, str]) -> dict[str, dict]:
    """Per class (named by ``names``; an id without a name, or a name two ids share, is shown with its id):
    objects, found, each of MISS_CAUSES, and ``confused_with`` (class label -> count)."""
    rows: dict[int, dict] = {c: _miss_row() for c in names}
    for res in per_image.values():
        for c, outcome, taken_for in res.objects:
            row = rows.setdefault(c, _miss_row())
            row["objects"] += 1
            row[outcome] += 1
            if taken_for is not None:
                row["confused_with"][taken_for] += 1
    label = class_labels(set(rows) | {t for r in rows.values() for t in r["confused_with"]}, names)
    return {label[c]: {**row, "confused_with": {label[t]: k for t, k in row["confused_with"].items()}}
            for c, row in sorted(rows.items())}
