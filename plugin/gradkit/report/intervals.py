"""How much a validation's AP would move on another draw of images like these: a percentile bootstrap over images.

A validation split is a sample of the parts a line produces. With 31 cracks in 90 images, one crack found or missed
moves that class's AP50 by several hundredths, so a run and a goal that differ by less than the spread of the AP
over resamples of the images are not told apart by this split (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 13: the percentile interval). The unit resampled is the image, because an image's detections are
matched to its own labels only: resampling images keeps every match as the validator made it, so each resample is
scored by the validator's own AP function on its own statistics. Two validations of the same images drawn with one
seed are drawn alike, so their difference draw by draw is a paired interval (:func:`paired_intervals`): narrower
than the two intervals side by side, because both runs meet the same hard and easy images in each draw.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gradkit.config import MIN_RESAMPLES

__all__ = ["INTERVAL_LEVEL", "MIN_DRAWS", "MIN_HELD", "MIN_IMAGES", "ap_intervals", "ap_resamples", "images_digest",
           "paired_intervals", "percentile_interval", "unpaired_because"]

#: The interval's coverage: the central 95% of the resampled values.
INTERVAL_LEVEL = 0.95
#: A class in fewer images than this gets no interval: a resample leaves a class of one image out about one time
#: in three (and of five images one in 150), so the interval would describe the few resamples that hold it.
MIN_IMAGES = 5
#: Fewest draws an interval is read from: the 2.5th and 97.5th percentiles of fewer rest on a handful of values.
MIN_DRAWS = MIN_RESAMPLES
#: Share of the draws that must hold a value (a class, any label) for its interval: a class in 5 of 35 images is
#: missing from one draw in 220, which must not cost it its interval, while one missing from a draw in ten would
#: be described by the draws that happen to hold it.
MIN_HELD = 0.9

#: (tp, conf, pred_cls, target_cls) -> (classes present, AP at each IoU threshold per class): the validator's own.
APFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def ap_intervals(image_stats: Sequence[dict[str, np.ndarray]], average_precision: APFunction, resamples: int,
                 seed: int = 0, level: float = INTERVAL_LEVEL, iou50_only: bool = False) -> dict[str, Any] | None:
    """The ``level`` percentile intervals of mAP50, mAP50-95 and each class's AP50 over ``resamples`` resamples of
    the images (drawn with replacement, as many as there are), or None without images or resamples.

    Args:
        image_stats: Per image, the validator's ``tp`` (predictions x IoU thresholds, hits), ``conf``,
            ``pred_cls`` and ``target_cls``.
        average_precision: The validator's AP function (:data:`APFunction`).
        resamples: How many draws (``report.resamples``).
        iou50_only: Only IoU 0.5: mAP50 and AP50, not mAP50-95 (a tenth of the work).
        seed: Seeds the draw: a report rebuilt from the same validation gives the same intervals.

    Returns:
        ``{"mAP50": [lo, hi], "mAP50-95": [lo, hi], "AP50": {class: [lo, hi]}, "resamples": n, "level": level,
        "seed": seed, "draws": {"mAP50": [...], "mAP50-95": [...], "AP50": {class: [...]}}}``, each draw's values
        kept for paired comparisons; a class in fewer than :data:`MIN_IMAGES` images, or missing from more than
        a tenth of the draws (:data:`MIN_HELD`), has no interval. The means are over the split's classes, as the
        validator's, in the draws that hold every one of them: None where more than a tenth do not. None with fewer
        than :data:`MIN_DRAWS` draws.
    """
    drawn = ap_resamples(image_stats, average_precision, resamples, seed, iou50_only)
    if drawn is None:
        return None
    if resamples < MIN_DRAWS:
        return None
    # None where more than a tenth of the draws lack a class of the split (a class of few images)
    means = {k: percentile_interval(drawn[k], level) for k in ("mAP50", "mAP50-95") if k in drawn}
    return {**means, "AP50": {c: i for c, v in drawn["AP50"].items() if (i := percentile_interval(v, level))},
            "resamples": resamples, "level": level, "seed": seed,
            "draws": {k: _rounded(drawn[k]) for k in means}
            | {"AP50": {c: _rounded(v) for c, v in drawn["AP50"].items()}}}


def _rounded(values: np.ndarray) -> list[float | None]:
    """A draw's values as a report keeps them: 6 decimals, None for a draw without the class."""
    return [None if math.isnan(v) else round(float(v), 6) for v in values]


def percentile_interval(values: np.ndarray | Sequence[float | None], level: float = INTERVAL_LEVEL
                        ) -> list[float] | None:
    """The central ``level`` of ``values`` (NaN or None, a draw without the class, left out); None where fewer than
    :data:`MIN_HELD` of the draws hold a value (the interval would describe the few that do)."""
    kept = np.array([np.nan if v is None else v for v in values], float)
    kept = kept[~np.isnan(kept)]
    if not len(kept) or len(kept) < MIN_HELD * len(values):
        return None
    return [float(v) for v in np.percentile(kept, [50 * (1 - level), 100 - 50 * (1 - level)])]


def images_digest(images: Sequence[tuple[str, Sequence[Sequence[float]]]]) -> str:
    """What identifies the images a validation drew from, in the order the draws pick them by: each image's file
    name with its labels (class and box, 6 decimals), so a relabelled split or another set's files of the same
    names is another digest."""
    text = "\n".join(f"{name}:" + ";".join(" ".join(f"{v:.6f}" for v in row) for row in rows) for name, rows in images)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def unpaired_because(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str | None:
    """Why two reports' ``intervals`` cannot be compared draw by draw, or None where they can."""
    if not a or not b or not a.get("draws") or not b.get("draws") or not a.get("images_digest"):
        return "a report has no draws kept (report.resamples: 0, or an older report)"
    if a.get("images_digest") != b.get("images_digest"):
        return "they were scored on other images (or other labels, or in another order)"
    if a.get("seed") != b.get("seed"):
        return "their draws were seeded differently"
    if min(len(a["draws"]["mAP50"]), len(b["draws"]["mAP50"])) < MIN_DRAWS:
        return f"fewer than {MIN_DRAWS} draws in common"
    return None


def paired_intervals(a: dict[str, Any], b: dict[str, Any], level: float = INTERVAL_LEVEL) -> dict[str, Any] | None:
    """B minus A draw by draw, for two reports' ``intervals`` holding ``draws`` of the same images (digest), seed
    and number of draws; None where they were not drawn alike. ``{"mAP50": [lo, hi], "mAP50-95": [lo, hi],
    "AP50": {class name: [lo, hi]}}`` (a class both hold; None where too few draws hold it in both)."""
    if unpaired_because(a, b):
        return None
    da, db = a["draws"], b["draws"]
    common = min(len(da["mAP50"]), len(db["mAP50"]))  # one seed draws the same first images for either count

    def diff(x: Sequence[float | None], y: Sequence[float | None]) -> list[float] | None:
        return percentile_interval([None if u is None or v is None else v - u
                                    for u, v in zip(x[:common], y[:common], strict=True)], level)

    return {**{k: diff(da[k], db[k]) for k in ("mAP50", "mAP50-95") if da.get(k) and db.get(k)},
            "AP50": {c: diff(v, db["AP50"][c]) for c, v in da["AP50"].items() if c in db["AP50"]}}


def ap_resamples(image_stats: Sequence[dict[str, np.ndarray]], average_precision: APFunction, resamples: int,
                 seed: int = 0, iou50_only: bool = False) -> dict[str, Any] | None:
    """mAP50, mAP50-95 and each class's AP50 on each of ``resamples`` draws of the images: arrays of one value per
    draw, NaN where a draw lacks the class (for the means: lacks any class of the split, whose mean would be over
    other classes than the validator's; with more than a tenth of such draws there is no interval). The draws depend
    on the seed and the number of images only, so two validations of the same images with one seed are drawn alike
    (the first n draws of any count alike): their difference, draw by draw, is a paired comparison. ``iou50_only``:
    score only IoU 0.5 (a tenth of the work; no ``mAP50-95``). None without images or resamples; classes in fewer
    than :data:`MIN_IMAGES` images are left out of ``AP50``."""
    if resamples <= 0 or not image_stats:
        return None
    rows = _Rows(image_stats, iou50_only)
    in_images: dict[int, int] = {}
    for stats in image_stats:
        for c in np.unique(stats["target_cls"]).astype(int).tolist():
            in_images[c] = in_images.get(c, 0) + 1
    rng = np.random.default_rng(seed)
    out = {"mAP50": np.full(resamples, np.nan), **({} if iou50_only else {"mAP50-95": np.full(resamples, np.nan)}),
           "AP50": {c: np.full(resamples, np.nan) for c, k in sorted(in_images.items()) if k >= MIN_IMAGES}}
    for i in range(resamples):
        p, t = rows.draw(rng.integers(0, len(image_stats), len(image_stats)))
        if not len(t):  # a draw of images without labels: no AP to average
            continue
        classes, ap = average_precision(p["tp"], p["conf"], p["pred_cls"], t)
        if len(classes) == len(in_images):  # a mean over the split's classes, as the validator's: else not counted
            out["mAP50"][i] = ap[:, 0].mean()
            if not iou50_only:
                out["mAP50-95"][i] = ap.mean()
        for c, value in zip(classes.tolist(), ap[:, 0].tolist(), strict=True):
            if c in out["AP50"]:
                out["AP50"][c][i] = value
    return out


class _Rows:
    """The images' predictions concatenated once, sorted by confidence (the AP function sorts a draw first: an
    already sorted one is the cheap case), and their labels; a draw of image indices (with repeats) takes each
    drawn image's rows as many times as it was drawn."""

    def __init__(self, image_stats: Sequence[dict[str, np.ndarray]], iou50_only: bool):
        preds = {k: np.concatenate([np.asarray(s[k]) for s in image_stats]) for k in ("tp", "conf", "pred_cls")}
        image = np.concatenate([np.full(len(s["conf"]), i) for i, s in enumerate(image_stats)]).astype(np.int64)
        order = np.argsort(-preds["conf"], kind="stable")
        self.preds = {k: v[order] for k, v in preds.items()}
        if iou50_only:
            self.preds["tp"] = self.preds["tp"][:, :1]
        self.pred_image = image[order]
        self.labels = np.concatenate([np.asarray(s["target_cls"]) for s in image_stats])
        self.label_image = np.concatenate([np.full(len(s["target_cls"]), i) for i, s in enumerate(image_stats)]
                                          ).astype(np.int64)
        self.images = len(image_stats)

    def draw(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        times = np.bincount(images, minlength=self.images)
        rows = np.repeat(np.arange(len(self.pred_image)), times[self.pred_image])  # still sorted by confidence
        return ({k: v[rows] for k, v in self.preds.items()},
                np.repeat(self.labels, times[self.label_image]))
