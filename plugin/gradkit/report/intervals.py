"""How much a validation's AP would move on another draw of images like these: a percentile bootstrap over images.

A validation split is a sample of the parts a line produces. With 31 cracks in 91 images, one crack found or missed
moves that class's AP50 by several hundredths, so two runs, or a run and a goal, that differ by less than the spread
of the AP over resamples of the images are not told apart by this split (Efron & Tibshirani 1993, "An Introduction
to the Bootstrap", ch. 13: the percentile interval). The unit resampled is the image, because an image's detections
are matched to its own labels only: resampling images keeps every match as the validator made it, so each resample
is scored by the validator's own AP function on its own statistics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["INTERVAL_LEVEL", "MIN_IMAGES", "ap_intervals", "ap_resamples", "percentile_interval"]

#: The interval's coverage: the central 95% of the resampled values.
INTERVAL_LEVEL = 0.95
#: A class in fewer images than this gets no interval: a resample leaves a class of one image out about one time
#: in three (and of five images one in 150), so the interval would describe the few resamples that hold it.
MIN_IMAGES = 5

#: (tp, conf, pred_cls, target_cls) -> (classes present, AP at each IoU threshold per class): the validator's own.
APFunction = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def ap_intervals(image_stats: Sequence[dict[str, np.ndarray]], average_precision: APFunction, resamples: int,
                 seed: int = 0, level: float = INTERVAL_LEVEL) -> dict[str, Any] | None:
    """The ``level`` percentile intervals of mAP50, mAP50-95 and each class's AP50 over ``resamples`` resamples of
    the images (drawn with replacement, as many as there are), or None without images or resamples.

    Args:
        image_stats: Per image, the validator's ``tp`` (predictions x IoU thresholds, hits), ``conf``,
            ``pred_cls`` and ``target_cls``.
        average_precision: The validator's AP function (:data:`APFunction`).
        resamples: How many draws (``report.resamples``).
        seed: Seeds the draw: a report rebuilt from the same validation gives the same intervals.

    Returns:
        ``{"mAP50": [lo, hi], "mAP50-95": [lo, hi], "AP50": {class: [lo, hi]}, "resamples": n, "level": level,
        "seed": seed}``; a class in fewer than :data:`MIN_IMAGES` images has no entry in ``AP50``. The means are
        over the classes each resample holds, as the validator's are over the classes the split holds.
    """
    drawn = ap_resamples(image_stats, average_precision, resamples, seed)
    if drawn is None:
        return None
    return {**{k: percentile_interval(drawn[k], level) for k in ("mAP50", "mAP50-95")},
            "AP50": {c: percentile_interval(v, level) for c, v in drawn["AP50"].items()},
            "resamples": resamples, "level": level, "seed": seed}


def percentile_interval(values: np.ndarray, level: float = INTERVAL_LEVEL) -> list[float]:
    """The central ``level`` of ``values`` (NaN, a draw without the class, left out)."""
    tails = [50 * (1 - level), 100 - 50 * (1 - level)]
    return [float(v) for v in np.nanpercentile(values, tails)]


def ap_resamples(image_stats: Sequence[dict[str, np.ndarray]], average_precision: APFunction, resamples: int,
                 seed: int = 0) -> dict[str, Any] | None:
    """mAP50, mAP50-95 and each class's AP50 on each of ``resamples`` draws of the images: arrays of one value per
    draw, NaN where a draw holds no label (or not the class). The draws depend on the seed and the number of images
    only, so two validations of the same images with one seed are drawn alike: their difference, draw by draw, is
    a paired comparison. None without images or resamples; classes in fewer than :data:`MIN_IMAGES` images are left
    out of ``AP50``."""
    if resamples <= 0 or not image_stats:
        return None
    preds, labels = _Rows(image_stats, ("tp", "conf", "pred_cls")), _Rows(image_stats, ("target_cls",))
    in_images: dict[int, int] = {}
    for stats in image_stats:
        for c in np.unique(stats["target_cls"]).astype(int).tolist():
            in_images[c] = in_images.get(c, 0) + 1
    rng = np.random.default_rng(seed)
    out = {"mAP50": np.full(resamples, np.nan), "mAP50-95": np.full(resamples, np.nan),
           "AP50": {c: np.full(resamples, np.nan) for c, k in sorted(in_images.items()) if k >= MIN_IMAGES}}
    for i in range(resamples):
        drawn = rng.integers(0, len(image_stats), len(image_stats))
        p, t = preds.gather(drawn), labels.gather(drawn)
        if not len(t["target_cls"]):  # a draw of images without labels: no AP to average
            continue
        classes, ap = average_precision(p["tp"], p["conf"], p["pred_cls"], t["target_cls"])
        out["mAP50"][i], out["mAP50-95"][i] = ap[:, 0].mean(), ap.mean()
        for c, value in zip(classes.tolist(), ap[:, 0].tolist(), strict=True):
            if c in out["AP50"]:
                out["AP50"][c][i] = value
    if np.isnan(out["mAP50"]).all():
        return None
    return out


class _Rows:
    """Per-image arrays concatenated once, and gathered again for a draw of image indices (one with repeats)."""

    def __init__(self, image_stats: Sequence[dict[str, np.ndarray]], keys: tuple[str, ...]):
        self.counts = np.array([len(s[keys[0]]) for s in image_stats], np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.values = {k: np.concatenate([np.asarray(s[k]) for s in image_stats]) for k in keys}

    def gather(self, images: np.ndarray) -> dict[str, np.ndarray]:
        lengths = self.counts[images]
        # each drawn image's rows: its start, plus 0 .. its count - 1
        offsets = np.repeat(self.starts[images] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        rows = offsets + np.arange(int(lengths.sum()))
        return {k: v[rows] for k, v in self.values.items()}
