"""How much a labelled defect stands out from its own surroundings (pure numpy).

A box's *defect share*: of the energy that stands out from the background level inside the box, the
share that is the defect's rather than the texture's, with the ring of pixels around the box as the
texture's sample. On a plain surface any visible defect has a share near 1; a defect as faint as the
grain of a strong texture (brushed metal, gravel, fabric) reads near 0.5 or below, because the box
holds as much standing-out texture as defect.

Two users: copy-paste screens its bank with it (a faint defect's crop pastes mostly foreign texture,
``gradkit.augment.copy_paste``), and the dataset fingerprint records it per box, so that
``gradkit plan`` can tell faint defects on strong textures from clear ones (``gradkit.plan``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["STANDS_OUT", "crop_window", "defect_share", "screening_crop", "standing_out"]

#: A defect stands out from its surroundings when it carries at least this share of what stands out
#: in its box (the copy-paste gate's default ``min_defect_share`` is the same half).
STANDS_OUT = 0.5


def crop_window(box: tuple[float, float, float, float], shape: tuple[int, ...], margin: int
                 ) -> tuple[int, int, int, int, int, int, int, int]:
    """``(px0, py0, px1, py1, cx0, cy0, cx1, cy1)``: a normalised xyxy box in pixels (outward-rounded)
    and the crop around it with ``margin`` pixels more on each side, clipped to the image."""
    sh, sw = shape[:2]
    bx0, by0, bx1, by1 = box
    px0, py0 = int(np.floor(bx0 * sw)), int(np.floor(by0 * sh))
    px1, py1 = int(np.ceil(bx1 * sw)), int(np.ceil(by1 * sh))
    return px0, py0, px1, py1, max(px0 - margin, 0), max(py0 - margin, 0), min(px1 + margin, sw), min(py1 + margin, sh)


def screening_crop(src: np.ndarray, box: tuple[float, float, float, float],
                   other_boxes: Sequence[tuple[float, float, float, float]], margin: int
                   ) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """What ``defect_share`` judges a defect on: its crop (float32), its box inside the crop, and where
    the image's other labelled defects lie in the crop (they are not background)."""
    px0, py0, px1, py1, cx0, cy0, cx1, cy1 = crop_window(box, src.shape, margin)
    others = np.zeros((cy1 - cy0, cx1 - cx0), bool)
    for other in other_boxes:
        ox0, oy0, ox1, oy1 = crop_window(other, src.shape, 0)[:4]
        others[max(oy0 - cy0, 0):max(oy1 - cy0, 0), max(ox0 - cx0, 0):max(ox1 - cx0, 0)] = True
    return src[cy0:cy1, cx0:cx1].astype(np.float32), (px0 - cx0, py0 - cy0, px1 - cx0, py1 - cy0), others


def standing_out(patch: np.ndarray, inner: tuple[int, int, int, int], margin: int
                  ) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
    """(ring, has_ring, alpha, delta): the crop outside the inner box, whether it can serve as the
    background (some pixels and a margin), how much each pixel stands out from the background's
    level (0 within 1.5 robust spreads, 1 beyond 3), and each pixel's deviation from its mean colour."""
    gray = patch.mean(-1)
    ring = np.ones(gray.shape, bool)
    x0, y0, x1, y1 = inner
    ring[y0:y1, x0:x1] = False
    has_ring = bool(ring.any()) and margin > 0
    background = gray[ring] if has_ring else gray.ravel()
    level = np.median(background)
    spread = 1.4826 * np.median(np.abs(background - level)) + 2.0
    alpha = np.clip((np.abs(gray - level) - 1.5 * spread) / (1.5 * spread), 0.0, 1.0)
    delta = patch - patch[ring].mean(0) if has_ring else patch - level
    return ring, has_ring, alpha, delta


def defect_share(patch: np.ndarray, inner: tuple[int, int, int, int], margin: int,
                 exclude: np.ndarray | None = None, unmeasurable: float = 1.0) -> float:
    """Estimated share of the energy the blend transfers from ``patch`` that belongs to the defect.

    The ring around the inner box is taken as background, so its standing-out energy per pixel is
    what the texture alone would contribute inside the box; the rest is the defect's: 1 - ring
    density x box area / box energy. 1: a defect on a plain background; 0 or below: the box stands
    out no more than its surroundings, or nothing in it stands out at all (a defect within ~3 robust
    spreads of its background is not carried by the blend either). ``exclude`` (patch-shaped, bool)
    removes pixels of other defects from the ring. A defect running past its box (a loose label)
    puts some of itself in the ring and reads lower: the estimate errs towards refusing. Without a
    ring (``margin`` 0, the crop clipped to its box, or every ring pixel inside another defect's box)
    nothing can be estimated and ``unmeasurable`` is returned (1: copy-paste keeps such a defect).
    """
    ring, has_ring, alpha, delta = standing_out(patch, inner, margin)
    background = ring & ~exclude if exclude is not None else ring
    if not has_ring or not background.any() or ring.all():
        return unmeasurable
    energy = ((alpha[..., None] * delta) ** 2).sum(-1)
    inside = energy[~ring].sum()
    if inside <= 0:
        return 0.0
    return float(1.0 - energy[background].mean() * (~ring).sum() / inside)
