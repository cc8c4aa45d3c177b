"""Which boxes survive a warp of the whole image (zoom, shift, rotation, crop), by gradkit's box rule.

Ultralytics' affine warp (``RandomPerspective``, run on every training sample, after the mosaic) keeps a
box only when both of its sides exceed 2 px and its aspect ratio is below 100. A long 1-2 px scratch
along an image axis fails one or both: with Ultralytics' defaults (no rotation, zoom 0.5-1.5x) a
160 x 1 px box is dropped from every sample and a 160 x 2 px one from half of them
(``benchmarks/affine_labels.py``). The scratch's pixels stay in the image; only its label goes, so the
model is taught that the scratch is background. gradkit drops a box in that warp only when less than
``augment.bbox.min_visibility`` of it is left in view (the share gradkit's own transforms use), never for
its size or shape: the zoom is drawn to vary the scale, and a line it shrinks below a pixel still shows,
with less contrast (a 1 px line at 0.5x keeps about half of it). The sizes in ``augment.bbox``
(``min_width``, ``min_height``, ``min_area``) filter what gradkit's own transforms leave.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ULTRALYTICS_MAX_ASPECT", "ULTRALYTICS_MIN_SIDE_PX", "affine_survivors", "dropped_by_ultralytics"]


def affine_survivors(before: np.ndarray, after: np.ndarray, min_visibility: float) -> np.ndarray:
    """Boolean mask of the boxes a warp keeps: not empty, and at least ``min_visibility`` of each in view.

    Args:
        before: (4, N) x0, y0, x1, y1 of each box before the warp, already scaled by the warp's zoom (so an
            uncut box has the area it has after the warp; a rotation only enlarges its enclosing box).
        after: (4, N) the same boxes after the warp, clipped to the image.
        min_visibility: smallest share of the zoomed box's area left after clipping.
    """
    w0, h0 = before[2] - before[0], before[3] - before[1]
    w1, h1 = after[2] - after[0], after[3] - after[1]
    visible = w1 * h1 / np.maximum(w0 * h0, 1e-12)
    return (w1 > 0) & (h1 > 0) & (visible >= min_visibility)


#: Ultralytics' ``box_candidates`` thresholds: a box needs both sides above this many pixels ...
ULTRALYTICS_MIN_SIDE_PX = 2.0
#: ... and an aspect ratio below this.
ULTRALYTICS_MAX_ASPECT = 100.0


def dropped_by_ultralytics(wh_px: np.ndarray, zoom: float) -> np.ndarray:
    """Mask of the boxes Ultralytics' warp filter drops in some training samples, without rotation.

    Args:
        wh_px: (N, 2) box widths and heights in pixels at the training size (after Ultralytics resizes the
            image's long side to ``imgsz``).
        zoom: Ultralytics' ``scale`` (the warp draws a zoom in [1 - zoom, 1 + zoom]).

    A box is dropped when the smallest zoom leaves a side of 2 px or less, and at every zoom when its aspect
    ratio is 100 or more. A rotation (``degrees``) enlarges a line's enclosing box and spares it some of the
    time (``benchmarks/affine_labels.py``), so with rotation these are the boxes at risk.
    """
    wh = np.asarray(wh_px, dtype=float).reshape(-1, 2)
    short, long = wh.min(1), wh.max(1)
    smallest_zoom = max(1.0 - zoom, 0.0)
    return (short * smallest_zoom < ULTRALYTICS_MIN_SIDE_PX) | (long >= ULTRALYTICS_MAX_ASPECT * short)
