"""Which feature-grid cells of a labelled box hold the defect, told from the pixels alone (pure numpy).

A detector's assigner takes every anchor whose centre lies in a ground-truth box as a candidate. For a
thin or diagonal line most of those cells hold texture only (``benchmarks/assigner_cells.py``: 21-59% of
a scratch's or crack's stride-8 candidates hold any of it on the three evaluation sets with exact masks),
so the classifier is taught to call plain texture a scratch. With box labels only, the defect's pixels
are estimated the way the copy-paste gate does: the pixels of the box that stand out from the ring of
texture around it (:func:`gradkit.data.standout.standing_out`). A cell *holds* the defect when one of
those pixels lies in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gradkit.data.standout import screening_crop, standing_out

__all__ = ["DEFECT_ALPHA", "RING_MARGIN", "anchor_count", "defect_cells", "standing_out_pixels"]

#: A pixel belongs to the defect when it stands out at least this much (``standing_out``'s alpha: 0 within
#: 1.5 robust spreads of the ring's level, 1 beyond 3; 0.5 is 2.25 spreads).
DEFECT_ALPHA = 0.5
#: Pixels of texture around the box taken as its background, as the copy-paste gate takes them.
RING_MARGIN = 4


def anchor_count(shape: tuple[int, int], strides: Sequence[int]) -> int:
    """Number of anchors of a feature pyramid over an image of ``shape`` (height, width)."""
    return sum((shape[0] // s) * (shape[1] // s) for s in strides)


def standing_out_pixels(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], k: int,
                        alpha: float = DEFECT_ALPHA) -> np.ndarray:
    """Image-sized bool mask: the pixels of normalised xyxy box ``k`` that stand out from the ring around it
    at ``alpha`` or more. The ring's level and spread are its median and MAD, as the copy-paste gate takes
    them, so another defect in the ring moves them only where it fills much of it. ``image``: HxWxC, 0-255."""
    box = tuple(float(np.clip(v, 0.0, 1.0)) for v in boxes[k])  # augmentation may leave a box a hair out
    patch, inner, _ = screening_crop(image, box, [], RING_MARGIN)
    _, _, standing, _ = standing_out(patch, inner, RING_MARGIN)
    x0, y0, x1, y1 = inner
    full = np.zeros(image.shape[:2], bool)
    px0, py0 = int(np.floor(box[0] * image.shape[1])), int(np.floor(box[1] * image.shape[0]))
    region = standing[y0:y1, x0:x1] >= alpha
    full[py0:py0 + region.shape[0], px0:px0 + region.shape[1]] = region
    return full


def defect_cells(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]], strides: Sequence[int],
                 alpha: float = DEFECT_ALPHA) -> np.ndarray:
    """(boxes, anchors) bool: whether each anchor's cell holds a standing-out pixel of each box.

    Anchors are ordered as a feature pyramid lists them: level by level in ``strides`` order, each level's
    cells row by row; the cell of stride ``s`` at (row, col) covers pixels [row*s, (row+1)*s) x
    [col*s, (col+1)*s). ``boxes``: normalised xyxy; ``image``: HxWxC, 0-255."""
    h, w = image.shape[:2]
    cells = np.zeros((len(boxes), anchor_count((h, w), strides)), bool)
    for k in range(len(boxes)):
        ys, xs = np.nonzero(standing_out_pixels(image, boxes, k, alpha))
        offset = 0
        for s in strides:
            rows, cols = h // s, w // s
            keep = (ys // s < rows) & (xs // s < cols)
            cells[k, offset + (ys[keep] // s) * cols + xs[keep] // s] = True
            offset += rows * cols
    return cells
