"""Which boxes survive a warp of the whole image (zoom, shift, rotation, crop), by gradkit's box rule.

Ultralytics' affine warp (``RandomPerspective``, run on every training sample, after the mosaic) keeps a
box only when both of its sides exceed 2 px and its aspect ratio is below 100. A long 1-2 px scratch
along an image axis fails one or both: with Ultralytics' defaults (no rotation, zoom 0.5-1.5x) a
160 x 1 px box is dropped from every sample and a 160 x 2 px one from half of them
(``benchmarks/affine_labels.py``). The scratch's pixels stay in the image; only its label goes, so the
model is taught that the scratch is background. gradkit drops a box in that warp only when less than
``augment.bbox.min_visibility`` of the warped box is left in view, never for its size or shape: the zoom
is drawn to vary the scale, and a line it shrinks below a pixel still shows, with less contrast (a 1 px
line at 0.5x keeps about half of it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["REPORTED_DROP_RATE", "ULTRALYTICS_MAX_ASPECT", "ULTRALYTICS_MIN_SIDE_PX", "ULTRALYTICS_ZOOM",
           "affine_survivors", "drop_rate", "zoom_range"]

#: Ultralytics' default ``scale`` (ultralytics/cfg/default.yaml): its warp zooms by 0.5-1.5x
ULTRALYTICS_ZOOM = 0.5
#: Ultralytics' ``box_candidates`` defaults (tests/test_affine_boxes.py compares them with its signature): a box
#: needs both sides above this many pixels ...
ULTRALYTICS_MIN_SIDE_PX = 2.0
#: ... and an aspect ratio below this.
ULTRALYTICS_MAX_ASPECT = 100.0
#: Boxes dropped in at least this share of the samples are named (one sample in 20).
REPORTED_DROP_RATE = 0.05


def affine_survivors(warped: np.ndarray, clipped: np.ndarray, min_visibility: float) -> np.ndarray:
    """Boolean mask of the boxes a warp keeps: not empty, and at least ``min_visibility`` of each in view.

    Args:
        warped: (4, N) x0, y0, x1, y1 of each box after the warp (zoom, rotation, shear), before clipping.
        clipped: (4, N) the same boxes clipped to the image.
        min_visibility: smallest share of the warped box's area left in the image.
    """
    w0, h0 = warped[2] - warped[0], warped[3] - warped[1]
    w1, h1 = clipped[2] - clipped[0], clipped[3] - clipped[1]
    area = w0 * h0
    visible = np.divide(w1 * h1, area, out=np.zeros_like(area, dtype=float), where=area > 0)
    return (w1 > 0) & (h1 > 0) & (visible >= min_visibility)


def zoom_range(scale: float | tuple[float, float] | list[float]) -> tuple[float, float]:
    """The zooms Ultralytics' warp draws from (uniformly) for its ``scale`` argument: [1 - s, 1 + s] for a
    number (a negative zoom mirrors the image; counted here from 0), the range itself for a pair."""
    if isinstance(scale, tuple | list):
        lo, hi = float(scale[0]), float(scale[1])
    else:
        lo, hi = 1.0 - float(scale), 1.0 + float(scale)
    return max(lo, 0.0), max(hi, 0.0)


def drop_rate(wh_px: np.ndarray, zooms: tuple[float, float], min_side: float = ULTRALYTICS_MIN_SIDE_PX,
              max_aspect: float = ULTRALYTICS_MAX_ASPECT) -> np.ndarray:
    """Share of Ultralytics' warps without rotation that drop each box for its shape alone.

    Args:
        wh_px: (N, 2) box widths and heights in pixels at the training size (after Ultralytics resizes the
            image's long side to ``imgsz``).
        zooms: (lo, hi) of :func:`zoom_range`.
        min_side, max_aspect: Ultralytics' thresholds (a side must exceed ``min_side``, the aspect ratio stay
            below ``max_aspect``).

    A box whose aspect ratio reaches ``max_aspect`` is dropped at every zoom; otherwise whenever the zoom
    leaves its short side at ``min_side`` or less. A rotation (``degrees``) enlarges a line's enclosing box
    and spares it some of the time (``benchmarks/affine_labels.py``), so with rotation these are upper bounds.
    """
    wh = np.asarray(wh_px, dtype=float).reshape(-1, 2)
    short, long = wh.min(1), wh.max(1)
    lo, hi = zooms
    limit = np.divide(min_side, short, out=np.full_like(short, np.inf), where=short > 0)  # drops at zoom <= limit
    rate = (np.clip((limit - lo) / (hi - lo), 0.0, 1.0) if hi > lo else (limit >= lo).astype(float))
    return np.where(long >= max_aspect * short, 1.0, rate)
