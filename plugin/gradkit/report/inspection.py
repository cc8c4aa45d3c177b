"""Inspection KPIs at one operating point: what a factory asks of a defect detector.

A part (image) is rejected when any prediction reaches its class's confidence threshold. At that
operating point: the escape rate (defective images not rejected: a defective part shipped), the
false-reject rate (defect-free images rejected: a good part scrapped), false positives per image and
per-class precision, recall and F1. The threshold of a class is the confidence that maximises its
F1 on the evaluated split among the *trusted* ones, those whose boxes show at ``PRECISION_CONFIDENCE`` that
at least ``MIN_PRECISION`` of them are right, or one user-given confidence (``report.conf``) for every class.
An untrusted threshold lies among its class's false boxes and rejects parts for nothing, nearly every part on
a model that never learnt the class, which a line cannot run on and which makes the escape rate read as if the
model caught everything. A class without a trusted threshold is set aside (never fires, and the report says
so); one whose max-F1 threshold is untrusted fires at its best trusted one (and the report says so).

Predictions are matched to objects greedily in descending score (IoU >= 0.5, same class, each object
once), the rule of the error analysis; greedy matching in score order makes the matches above any
threshold the same as matching only the predictions above it, so one matching serves every threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any, NamedTuple

import numpy as np

from gradkit.report.coco import AREA_BUCKETS, Box, Boxes

__all__ = ["MATCH_IOU", "MIN_PRECISION", "NEVER_FIRES", "PRECISION_CONFIDENCE", "VALIDATION_CONF", "BestF1",
           "Matching", "OperatingPoint", "inspection_kpis", "max_f1_points", "max_f1_thresholds",
           "precision_lower_bound", "threshold_array"]

MATCH_IOU = 0.5
#: The confidence floor of the validation a report scores (Ultralytics' detection validator's own when ``conf`` is
#: not given): "all confidences" in a report means every detection from here up.
VALIDATION_CONF = 0.001
#: Threshold of a class for which no confidence gives a true positive (or that has no objects in the split), or
#: that was set aside: with no ``report.conf`` such a class never fires, not even on a score of exactly 1.
NEVER_FIRES = 1.0
#: Fewer images than this in a split: every rate moves by more than 2 points per image (said in the reports).
TINY_SPLIT = 50
#: A threshold that lets through fewer right boxes than this share of its class's boxes (its precision there,
#: held at PRECISION_CONFIDENCE: ``precision_lower_bound``) is not trusted: it rejects parts for nothing.
#: Precision, not F1: a class found rarely but without false boxes (low recall, F1 below any floor) rejects no
#: good part and keeps its threshold. Learnt classes sit far above it and unlearnt ones far below: on the strip
#: set (session 37) cracks at 0.39-0.43 and a barely learnt pit class (AP50 0.02) at 0.19, the unlearnt
#: scratches at 0.0006 (1 true positive among 1771 boxes at confidence 0.003, rejecting all 90 held-out parts)
#: and 0.0016 (1 among 628).
MIN_PRECISION = 0.05
#: How sure the precision at a candidate threshold must be to clear MIN_PRECISION (one-sided, for that threshold
#: alone). The max-F1 point is the best of many thresholds on the same split, so its precision flatters the
#: class most where it rests on few right boxes: on the photographs (session 40) a pit class at AP50 0.004 had
#: its best F1 at 2 right boxes of 33 (0.061, bound 0.020) and that threshold rejected 3 of the 14 clean parts.
PRECISION_CONFIDENCE = 0.95


class BestF1(NamedTuple):
    """A class's max-F1 point: its confidence threshold, the F1 and the precision there, from ``tp`` right boxes
    among the ``boxes`` that reach the threshold."""
    threshold: float
    f1: float
    precision: float
    tp: int
    boxes: int


#: Significant digits report.json keeps of every number (gradkit.report.build writes floats with them).
REPORT_DIGITS = 7


def written_threshold(threshold: float) -> float:
    """``threshold`` as report.json keeps it: rounded down to REPORT_DIGITS significant digits, so the box scored
    at it (the lowest the operating point counted) still reaches it when the threshold is read back and applied
    with >= (rounded to the nearest it was above that score half the time)."""
    if not math.isfinite(threshold) or threshold <= 0 or threshold >= NEVER_FIRES:
        return threshold
    scale = 10.0 ** (REPORT_DIGITS - 1 - math.floor(math.log10(threshold)))
    return math.floor(threshold * scale) / scale


#: The point of a class without objects or without any true positive.
NO_POINT = BestF1(NEVER_FIRES, 0.0, 0.0, 0, 0)


def precision_lower_bound(tp: int, boxes: int, confidence: float = PRECISION_CONFIDENCE) -> float:
    """The one-sided lower bound at ``confidence`` of the share of right boxes, from ``tp`` right among ``boxes``:
    the lower end of Wilson's score interval (Wilson 1927, JASA 22:209), which stays inside [0, 1] where the normal
    approximation's bound goes negative. It is an approximation: at a handful of boxes its coverage dips below
    ``confidence`` (a class exactly at a 5% precision clears a 5% floor with 1 right of 4 boxes 18.5% of the time,
    not 5%; the exact Clopper-Pearson bound would not). ``confidence`` 0.5 gives ``tp / boxes`` itself."""
    return float(_wilson_lower(np.asarray(tp), np.asarray(boxes), confidence))


def _wilson_lower(tp: np.ndarray, boxes: np.ndarray, confidence: float) -> np.ndarray:
    """``precision_lower_bound`` element-wise (0 where there are no boxes)."""
    z = NormalDist().inv_cdf(confidence)
    n = np.maximum(boxes, 1).astype(float)
    p, z2n = tp / n, z * z / n
    spread = z * np.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return np.where(boxes > 0, np.maximum(0.0, (p + z2n / 2 - spread) / (1 + z2n)), 0.0)


class Matching:
    """Greedy matching of the predictions in ``keep`` (all when None): ``pred_tp[i]`` and, per object, the score
    of the prediction that found it (``gt_score[j]``, -inf when none did). Predictions outside ``keep`` are
    unmatched; ``keep`` is meant to be the predictions above a threshold, for which the matching is the same
    as matching every prediction."""

    def __init__(self, gts: Boxes, preds: Boxes, keep: np.ndarray | None = None, iou: float = MATCH_IOU):
        self.gts, self.preds = gts, preds
        self.pred_tp = np.zeros(len(preds), bool)
        self.gt_score = np.full(len(gts), -np.inf)
        sub = np.arange(len(preds)) if keep is None else np.flatnonzero(keep)
        p_idx, g_idx, ious = _same_class_pairs(gts, preds[sub])
        close = ious >= iou
        p_idx, g_idx, ious = sub[p_idx[close]], g_idx[close], ious[close]
        score = np.nan_to_num(preds.score[p_idx], nan=-np.inf)
        order = np.lexsort((-ious, p_idx, -score))  # by descending score, per prediction by descending IoU
        used: set[int] = set()
        last = -1
        for p, g in zip(p_idx[order].tolist(), g_idx[order].tolist(), strict=True):
            if p == last or g in used:  # this prediction already matched, or the object is taken
                continue
            used.add(g)
            last = p
            self.pred_tp[p] = True
            self.gt_score[g] = preds.score[p]


def _same_class_pairs(gts: Boxes, preds: Boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (prediction, object) pair on the same image with the same class, and its IoU."""
    n_cls = int(max(gts.cls.max(initial=0), preds.cls.max(initial=0))) + 1
    g_key = gts.image * n_cls + gts.cls
    g_order = np.argsort(g_key, kind="stable")
    p_key = preds.image * n_cls + preds.cls
    lo, hi = np.searchsorted(g_key[g_order], p_key, "left"), np.searchsorted(g_key[g_order], p_key, "right")
    counts = hi - lo
    p_idx = np.repeat(np.arange(len(preds)), counts)
    starts = np.repeat(lo - np.cumsum(counts) + counts, counts)
    g_idx = g_order[starts + np.arange(counts.sum())]
    ix0, iy0 = np.maximum(preds.x0[p_idx], gts.x0[g_idx]), np.maximum(preds.y0[p_idx], gts.y0[g_idx])
    ix1, iy1 = np.minimum(preds.x1[p_idx], gts.x1[g_idx]), np.minimum(preds.y1[p_idx], gts.y1[g_idx])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_p = (preds.x1 - preds.x0)[p_idx] * (preds.y1 - preds.y0)[p_idx]
    area_g = (gts.x1 - gts.x0)[g_idx] * (gts.y1 - gts.y0)[g_idx]
    union = area_p + area_g - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return p_idx, g_idx, iou


def _class_max_f1(gts: Boxes, preds: Boxes, ranked_idx: np.ndarray, trusted: float | None = None) -> BestF1:
    """The confidence that maximises F1 for one class's objects ``gts`` and predictions ``preds[ranked_idx]``
    (in descending score), the highest such confidence on ties, with the F1 and precision there; with ``trusted``
    (a confidence), only among the thresholds whose precision clears MIN_PRECISION at that confidence.

    Only a prefix of the ranking is matched: the top k, grown until no larger k can beat the best F1 found
    (F1 at k predictions is at most 2 n / (k + n) for n objects). A validation at conf 0.001 has ~100
    predictions per image, most of them far below any useful threshold.
    """
    n = len(gts)
    ranked_idx = ranked_idx[~np.isnan(preds.score[ranked_idx])]  # a NaN score is no confidence: never a threshold
    if n == 0 or len(ranked_idx) == 0:
        return NO_POINT
    ranked = preds.score[ranked_idx]
    k = min(len(ranked), max(64, 4 * n))
    while True:
        k = int(np.searchsorted(-ranked, -ranked[k - 1], side="right"))  # a threshold keeps a whole tie group
        ctp = np.cumsum(Matching(gts, preds[ranked_idx[:k]]).pred_tp)
        ends = np.flatnonzero(np.r_[ranked[1:k] != ranked[:k - 1], True])
        f1 = 2 * ctp[ends] / (ends + 1 + n)
        if trusted is not None:  # an untrusted threshold is no candidate: -1 below any F1
            f1 = np.where(_wilson_lower(ctp[ends], ends + 1, trusted) >= MIN_PRECISION, f1, -1.0)
        if k == len(ranked) or f1.max() >= 2 * n / (k + 1 + n):
            break
        k = min(len(ranked), 4 * k)
    if f1.max() <= 0:  # no true positive (or none at a trusted threshold)
        return NO_POINT
    end = ends[int(np.argmax(f1))]
    tp = int(ctp[end])
    return BestF1(float(ranked[end]), float(2 * tp / (end + 1 + n)), float(tp / (end + 1)), tp, int(end + 1))


def max_f1_thresholds(gts: Boxes, preds: Boxes, classes: Sequence[int]) -> dict[int, float]:
    """Per class, the confidence that maximises F1 (the highest such confidence on ties); NEVER_FIRES for a class
    without objects or without any true positive."""
    return {c: point.threshold for c, point in max_f1_points(gts, preds, classes).items()}


def max_f1_points(gts: Boxes, preds: Boxes, classes: Sequence[int], trusted: float | None = None
                  ) -> dict[int, BestF1]:
    """Per class, its max-F1 point (the highest such confidence on ties); NO_POINT for a class without objects or
    without any true positive. With ``trusted`` (a confidence), the max-F1 point among the thresholds whose
    precision clears MIN_PRECISION at that confidence, NO_POINT where none does."""
    score = np.nan_to_num(preds.score, nan=-1.0)  # scores lie in [0, 1]: one sort by class, then by score
    order = np.argsort(preds.cls * 4.0 - score, kind="stable")
    p_bounds = np.searchsorted(preds.cls[order], [classes, np.add(classes, 1)])
    g_order = np.argsort(gts.cls, kind="stable")
    g_bounds = np.searchsorted(gts.cls[g_order], [classes, np.add(classes, 1)])
    return {c: _class_max_f1(gts[g_order[g_bounds[0, i]:g_bounds[1, i]]], preds, order[p_bounds[0, i]:p_bounds[1, i]],
                             trusted) for i, c in enumerate(classes)}


class OperatingPoint:
    """The thresholds (per class), which predictions reach them, their matching and the objects found; with no
    ``conf``, per class the max-F1 confidence among those where its precision clears MIN_PRECISION at
    ``precision_confidence`` (a *trusted* threshold). A class whose max-F1 points are all untrusted has its best
    in ``set_aside`` when no threshold is trusted (the class never fires, nor does a class without a true
    positive), else in ``moved``. ``precision_confidence`` None is the rule of report schema 9, kept to measure
    against (``benchmarks/precision_floor.py``): the max-F1 threshold, the class set aside where the precision
    there is below the floor."""

    def __init__(self, gts: Boxes, preds: Boxes, classes: Sequence[int], conf: float | None,
                 precision_confidence: float | None = PRECISION_CONFIDENCE):
        best = max_f1_points(gts, preds, classes) if conf is None else {}
        if precision_confidence is None:
            trusted = {c: p if p.precision >= MIN_PRECISION else NO_POINT for c, p in best.items()}
        else:  # a trusted max-F1 point is the best trusted one: search again only where it is not
            doubtful = [c for c, p in best.items()
                        if p != NO_POINT and precision_lower_bound(p.tp, p.boxes, precision_confidence) < MIN_PRECISION]
            trusted = {**best, **max_f1_points(gts, preds, doubtful, precision_confidence)}
        self.precision_confidence = precision_confidence
        # a trusted point as good as the best (a tie at a lower confidence) is a max-F1 point: nothing moved
        untrusted = {c: p for c, p in best.items() if p != NO_POINT and trusted[c].f1 < p.f1}
        self.set_aside = {c: p for c, p in untrusted.items() if trusted[c] == NO_POINT}
        self.moved = {c: p for c, p in untrusted.items() if trusted[c] != NO_POINT}  # fire at another threshold
        never = [c for c, p in trusted.items() if p == NO_POINT]
        self.thresholds = ({c: p.threshold for c, p in trusted.items()} if conf is None
                           else dict.fromkeys(classes, float(conf)))
        thr = threshold_array(self.thresholds, gts, preds)
        self.fires = (np.nan_to_num(preds.score, nan=-np.inf) >= thr[preds.cls]) & ~np.isin(preds.cls, never)
        self.matching = Matching(gts, preds, self.fires)
        self.found = self.matching.gt_score > -np.inf


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _untrusted(preds: Boxes, c: int, point: BestF1 | None, confidence: float | None) -> dict[str, Any] | None:
    """An untrusted max-F1 point (OperatingPoint), the lower bound of its precision at ``confidence`` (None under
    schema 9's rule) and how many parts (images) its threshold would reject."""
    if point is None:
        return None
    rejects = (preds.cls == c) & (np.nan_to_num(preds.score, nan=-np.inf) >= point.threshold)
    bound = None if confidence is None else precision_lower_bound(point.tp, point.boxes, confidence)
    return {**point._asdict(), "threshold": written_threshold(point.threshold), "precision_lower": bound,
            "parts_rejected": len(set(preds.image[rejects].tolist()))}


def _per_class(m: Matching, fires: np.ndarray, rejected: set[int], c: int, name: str, thr: float) -> dict[str, Any]:
    """Object-level counts at the class's threshold, and the parts (images) holding the class that no
    prediction rejected: what an inspector asks of a defect class."""
    tp = int((fires & m.pred_tp & (m.preds.cls == c)).sum())
    fp = int((fires & ~m.pred_tp & (m.preds.cls == c)).sum())
    n_gt = int((m.gts.cls == c).sum())
    p, r = _ratio(tp, tp + fp), _ratio(tp, n_gt)
    f1 = None if p is None or r is None else (2 * p * r / (p + r) if p + r else 0.0)
    parts = set(m.gts.image[m.gts.cls == c].tolist())
    return {"name": name, "threshold": thr, "objects": n_gt, "tp": tp, "fp": fp, "fn": n_gt - tp,
            "precision": p, "recall": r, "f1": f1, "parts": len(parts), "shipped_parts": len(parts - rejected)}


def _missed_by_size(m: Matching, found: np.ndarray, names: dict[int, str]) -> list[dict[str, Any]]:
    area = (m.gts.x1 - m.gts.x0) * (m.gts.y1 - m.gts.y0)
    rows = []
    for c, name in names.items():
        for bucket, (lo, hi) in AREA_BUCKETS.items():
            sel = (m.gts.cls == c) & (area >= lo) & (area < hi)
            if sel.any():
                rows.append({"class": name, "relative_area": bucket, "objects": int(sel.sum()),
                             "missed": int((sel & ~found).sum())})
    return rows


def threshold_array(thresholds: dict[int, float], gts: Boxes, preds: Boxes) -> np.ndarray:
    """``thresholds`` as an array indexed by class id (a class not in it never fires)."""
    n = max(max(thresholds, default=0), int(gts.cls.max(initial=0)), int(preds.cls.max(initial=0))) + 1
    thr = np.full(n, NEVER_FIRES)
    for c, t in thresholds.items():
        thr[c] = t
    return thr


def inspection_kpis(gts: Sequence[Box] | Boxes, preds: Sequence[Box] | Boxes, images: Sequence[int],
                    names: dict[int, str], conf: float | None = None, op: OperatingPoint | None = None,
                    precision_confidence: float | None = PRECISION_CONFIDENCE) -> dict[str, Any]:
    """The ``inspection`` object of report.json (see README) at per-class max-F1 thresholds, or at ``conf``
    (``op``, when the caller has it, is the operating point these give; ``precision_confidence``: OperatingPoint)."""
    gts, preds = Boxes.from_boxes(gts), Boxes.from_boxes(preds)
    classes = sorted(names)
    op = op or OperatingPoint(gts, preds, classes, conf, precision_confidence)
    m, chosen, fires, found = op.matching, op.thresholds, op.fires, op.found
    defective = set(gts.image.tolist())
    defect_free = set(images) - defective
    rejected = set(preds.image[fires].tolist())
    found_any = set(gts.image[found].tolist())
    n_fp = int((fires & ~m.pred_tp).sum())
    return {
        "operating_point": "per-class max F1 on this split, trusted thresholds" if conf is None
        else f"report.conf = {conf:g}",
        "min_precision": MIN_PRECISION if conf is None else None,  # the floor a trusted threshold clears
        "precision_confidence": op.precision_confidence if conf is None else None,  # how sure above the floor
        "thresholds": {names[c]: written_threshold(chosen[c]) for c in classes},
        "match_iou": MATCH_IOU,
        "images": len(set(images)),
        "defective_images": len(defective),
        "defect_free_images": len(defect_free),
        "escaped_images": len(defective - rejected),
        "escape_rate": _ratio(len(defective - rejected), len(defective)),
        "defective_images_without_true_positive": len(defective - found_any),
        "false_rejected_images": len(defect_free & rejected),
        "false_reject_rate": _ratio(len(defect_free & rejected), len(defect_free)),
        "false_positives": n_fp,
        "fp_per_image": _ratio(n_fp, len(set(images))),
        "per_class": [{**_per_class(m, fires, rejected, c, names[c], written_threshold(chosen[c])),
                       "set_aside": _untrusted(preds, c, op.set_aside.get(c), op.precision_confidence),
                       "untrusted_max_f1": _untrusted(preds, c, op.moved.get(c), op.precision_confidence)}
                      for c in classes],
        "missed_by_class_and_size": _missed_by_size(m, found, {c: names[c] for c in classes}),
    }
