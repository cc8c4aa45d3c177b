"""Copy-paste of defect crops for box-only labels (pure numpy/OpenCV).

Ultralytics' ``copy_paste`` needs segmentation masks and does nothing for box labels. Here a crop of
a defect box (plus a margin of its own background) is taken from another training image, its
background level is matched to the destination, and it is blended in with a feathered alpha so the
crop's rectangle does not show. The pasted box is the crop's inner box; places that would cover an
existing defect are rejected. Rare classes can be preferred to fight class imbalance.

The blend transfers whatever stands out from the crop's background, and on a strong texture (gravel,
grass, brushed metal) that is mostly the texture: a 1-2 px scratch as strong as the grain around it
gets pasted as a box of foreign grain labelled "scratch", which teaches the detector the wrong thing.
So ``DefectBank.screen`` keeps an instance only when the defect carries, by estimate, at least
``min_defect_share`` of the energy the blend would transfer (``defect_share``, against the crop's own
background ring with the image's other labelled defects masked out); the others are dropped from the
bank once, before training, and counted per class.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from gradkit.data.standout import crop_window, defect_share, screening_crop, standing_out

__all__ = ["DefectBank", "defect_share", "paste_defects", "screening_crop", "turn_crop"]


@dataclass
class _Instance:
    image: int
    box: tuple[float, float, float, float]  # normalised xyxy in its source image
    cls: int


class DefectBank:
    """All labelled defects of a training set, to sample paste sources from.

    Args:
        boxes: Per image, an (N, 4) array of normalised xyxy boxes.
        classes: Per image, an (N,) array of class ids.
        load_image: Loads image ``i`` as HxWxC uint8 (C as the training images have it: 3, or 1).
        nc: Number of classes.
        class_weights: Relative sampling weight per class; ``rare_first`` uses 1 / frequency instead.
        cache_bytes: Budget of the crop cache (least recently used crops go first): decoding a whole
            source image per paste costs more than the rest of the training pipeline.
    """

    def __init__(self, boxes: Sequence[np.ndarray], classes: Sequence[np.ndarray],
                 load_image: Callable[[int], np.ndarray], nc: int, class_weights: Sequence[float] | None = None,
                 rare_first: bool = False, cache_bytes: int = 64 << 20):
        self.load_image = load_image
        self.cache_bytes = cache_bytes
        self._crops: OrderedDict[tuple, tuple[np.ndarray, tuple[int, ...], np.ndarray]] = OrderedDict()
        self._cached_bytes = 0
        self.by_class: dict[int, list[_Instance]] = {c: [] for c in range(nc)}
        #: every labelled box of each image, screened out or not: their pixels are in the image all the same
        self.image_boxes: dict[int, list[tuple[float, float, float, float]]] = {}
        for i, (bb, cc) in enumerate(zip(boxes, classes, strict=True)):
            for b, c in zip(np.asarray(bb).reshape(-1, 4), np.asarray(cc).reshape(-1), strict=True):
                self.by_class[int(c)].append(_Instance(i, tuple(float(v) for v in b), int(c)))
                self.image_boxes.setdefault(i, []).append(self.by_class[int(c)][-1].box)
        if class_weights is not None and len(class_weights) != nc:
            raise ValueError(f"copy_paste.class_weights needs {nc} values (one per class), got {len(class_weights)}")
        self._class_weights, self._rare_first = class_weights, rare_first
        self.refused: dict[int, int] = {c: 0 for c in range(nc)}  # instances dropped as not transferable
        self._reweigh()

    def _reweigh(self) -> None:
        """Class sampling weights from the instances the bank holds now."""
        counts = np.array([len(v) for v in self.by_class.values()], dtype=np.float64)
        if self._class_weights is not None:
            weights = np.asarray(self._class_weights, dtype=np.float64)
        elif self._rare_first:
            weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        else:
            weights = counts.copy()  # proportional to frequency: uniform over instances
        weights = np.where(counts > 0, weights, 0.0)
        self.weights = weights / weights.sum() if weights.sum() > 0 else weights
        self.empty = counts.sum() == 0

    def screen(self, min_share: float, margin: int) -> dict[int, tuple[int, int]]:
        """Drop the instances whose ``defect_share`` is below ``min_share``; each source image is read
        once. Returns ``{class: (kept, refused)}``."""
        by_image: dict[int, list[_Instance]] = {}
        for insts in self.by_class.values():
            for inst in insts:
                by_image.setdefault(inst.image, []).append(inst)
        refused: set[int] = set()  # ids: one pass over the lists at the end, not a list.remove per refusal
        for image, insts in by_image.items():
            src = self.load_image(image)
            for inst in insts:
                patch, inner, others = screening_crop(src, inst.box, [o.box for o in insts if o is not inst], margin)
                if defect_share(patch, inner, margin, others) < min_share:
                    refused.add(id(inst))
                    self.refused[inst.cls] += 1
        self.by_class = {c: [i for i in insts if id(i) not in refused] for c, insts in self.by_class.items()}
        self._reweigh()
        return {c: (len(v), self.refused[c]) for c, v in self.by_class.items()}

    def sample(self, rng: random.Random) -> _Instance | None:
        if self.empty or self.weights.sum() == 0:
            return None
        c = rng.choices(range(len(self.weights)), weights=self.weights.tolist())[0]
        return rng.choice(self.by_class[c])

    def crop(self, inst: _Instance, margin: int
             ) -> tuple[np.ndarray, tuple[int, int, int, int, int, int, int, int], np.ndarray]:
        """The defect with ``margin`` pixels of its background (read-only), where it lies in its source, and where
        the source's other labelled defects lie in the crop (a paste must not carry them without their boxes).

        Returns:
            The crop, ``(px0, py0, px1, py1, cx0, cy0, cx1, cy1)``: the box and the crop in source pixels, and the
            crop's mask of other defects.
        """
        key = (inst.image, inst.box, margin)
        hit = self._crops.get(key)
        if hit is not None:
            self._crops.move_to_end(key)
            return hit
        src = self.load_image(inst.image)
        px0, py0, px1, py1, cx0, cy0, cx1, cy1 = crop_window(inst.box, src.shape, margin)
        crop = src[cy0:cy1, cx0:cx1].copy()  # a copy: a view would keep the whole source image alive
        crop.flags.writeable = False
        # a box holding the pasted defect's own (a spot labelled inside a stain) is not masked: that would blank it
        others = screening_crop(src, inst.box, [b for b in self.image_boxes.get(inst.image, [])
                                                if b != inst.box and not _holds(b, inst.box)], margin)[2]
        entry = (crop, (px0, py0, px1, py1, cx0, cy0, cx1, cy1), others)
        size = crop.nbytes + others.nbytes
        if size <= self.cache_bytes:
            self._crops[key] = entry
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                old, _, old_others = self._crops.popitem(last=False)[1]
                self._cached_bytes -= old.nbytes + old_others.nbytes
        return entry


def _holds(outer: tuple[float, ...], inner: tuple[float, ...]) -> bool:
    """Whether normalised xyxy box ``outer`` contains ``inner``."""
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _feather(h: int, w: int, margin: int, inner: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Alpha that falls smoothly to 0 across the margin towards the crop's edge, and is 1 on the inner box (where
    the crop has less margin than the fade, at its source's edge, a fade would fade the defect itself)."""
    if margin <= 0:
        return np.ones((h, w), np.float32)
    ys = np.minimum(np.arange(h), np.arange(h)[::-1]).astype(np.float32)
    xs = np.minimum(np.arange(w), np.arange(w)[::-1]).astype(np.float32)
    ramp = np.minimum.outer(ys, xs)
    if inner is not None:
        x0, y0, x1, y1 = inner
        ramp[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = np.inf
    return np.clip((ramp + 0.5) / margin, 0.0, 1.0) ** 1.5


def _blend(region: np.ndarray, patch: np.ndarray, inner: tuple[int, int, int, int], margin: int,
           strength: float = 1.0, others: np.ndarray | None = None) -> np.ndarray:
    """Transfer the defect, not its background: add ``strength`` times the crop's deviation from its own
    background level, weighted by how much each pixel stands out from the background's spread. The
    destination's texture and lighting show through everywhere else, so no rectangle appears; also over
    ``others``, the crop's other labelled defects (grown by a pixel for their blurred edge), which the paste's one
    box would not label.
    """
    ring, _, alpha, delta = standing_out(patch, inner, margin)
    # the blur softens the weight's edges and halves a 1 px line's own (0.76 of a 2 px one's): thin pastes are faint
    # copies. Softening outward only (np.maximum with the blur) scored lower on 2 of 2 paired seeds in session 52
    # (README, "Where the goals stood"): kept until that is separated from the crop fixes
    alpha = cv2.GaussianBlur(alpha, (3, 3), 0) * ~ring if ring.any() else alpha
    if others is not None and others.any():
        alpha = alpha * ~cv2.dilate(others.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    alpha = alpha * _feather(*alpha.shape, max(1, margin // 2), inner) * strength
    return np.clip(region + alpha[..., None] * delta, 0, 255).astype(np.uint8)


def _strength(rng: random.Random, contrast: tuple[float, float]) -> float:
    """The share of its contrast a paste carries: drawn in ``contrast``; none drawn at a fixed value, so that a run
    without fading keeps its random stream."""
    lo, hi = contrast
    return lo if lo == hi else rng.uniform(lo, hi)


def _free(box: tuple[int, int, int, int], others: np.ndarray, gap: int) -> bool:
    if not len(others):
        return True
    x0, y0, x1, y1 = box
    o = others
    inter_w = np.minimum(x1 + gap, o[:, 2]) - np.maximum(x0 - gap, o[:, 0])
    inter_h = np.minimum(y1 + gap, o[:, 3]) - np.maximum(y0 - gap, o[:, 1])
    return not np.any((inter_w > 0) & (inter_h > 0))


def turn_crop(crop: np.ndarray, others: np.ndarray, inner: tuple[int, int, int, int], symmetry: int
              ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """One of the eight symmetries of the square (``symmetry`` 0-7: ``symmetry % 4`` quarter turns anticlockwise,
    then a left-right mirror when ``symmetry >= 4``) applied to a paste: its crop, its mask of other defects and its
    defect's box inside the crop (xyxy, pixel edges), which stays the tight box of the same pixels. 0 returns them
    as given."""
    h, w = crop.shape[:2]
    x0, y0, x1, y1 = inner
    for _ in range(symmetry % 4):  # a quarter turn anticlockwise maps pixel (x, y) of a w-wide crop to (y, w - 1 - x)
        crop, others = np.rot90(crop), np.rot90(others)
        x0, y0, x1, y1 = y0, w - x1, y1, w - x0
        h, w = w, h
    if symmetry >= 4:
        crop, others = crop[:, ::-1], others[:, ::-1]
        x0, x1 = w - x1, w - x0
    return np.ascontiguousarray(crop), np.ascontiguousarray(others), (x0, y0, x1, y1)


def paste_defects(img: np.ndarray, boxes: np.ndarray, classes: np.ndarray, bank: DefectBank, rng: random.Random,
                  max_per_image: int = 3, margin: int = 4, scale: float | Callable[[int], float] = 1.0, tries: int = 20,
                  contrast: tuple[float, float] = (1.0, 1.0), d4: bool = False
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste up to ``max_per_image`` defects into ``img``.

    Args:
        img: HxWxC uint8 destination (not modified).
        boxes: (N, 4) pixel xyxy boxes already on the image.
        classes: (N,) class ids.
        bank: Where the defects come from.
        rng: Random source (Python's, which Ultralytics seeds per dataloader worker).
        max_per_image: Upper bound of pastes (the number is drawn from 1..max).
        margin: Pixels of source background around the crop, blended away by the feathered alpha.
        scale: Resize factor from source pixels to destination pixels, or a function of the source image's index
            giving it (each source's own: images of several sizes are each resized to the training size).
        contrast: Range of the share of its contrast each pasted defect keeps (drawn per paste): below 1, faint
            copies of defects that stand out, which the bank's screening (``min_defect_share``) keeps.
        d4: Turn or mirror each paste by one of the square's eight symmetries, drawn per paste (:func:`turn_crop`):
            a defect seen in new headings where the whole image keeps its own.

    Returns:
        The new image, the boxes (old then pasted), the classes.
    """
    out = img.copy()
    h, w = out.shape[:2]
    all_boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    all_cls = np.asarray(classes).reshape(-1)
    for _ in range(rng.randint(1, max(1, max_per_image))):
        inst = bank.sample(rng)
        if inst is None:
            break
        factor = scale(inst.image) if callable(scale) else scale
        # a ring of at least a pixel once shrunk: the defect is measured against it (none: against itself)
        ring = max(margin, math.ceil(1 / factor)) if 0 < factor < 1 else margin
        crop, (px0, py0, px1, py1, cx0, cy0, cx1, cy1), others = bank.crop(inst, ring)
        if factor != 1.0:
            size = (max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
            # reshaped: OpenCV returns a one-channel (h, w, 1) crop as (h, w)
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_LINEAR).reshape(size[1], size[0], -1)
            # by area: any coverage stays masked (nearest-neighbour drops a thin scratch at some rows)
            others = cv2.resize(others.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0
        # inner (defect) box inside the crop, after scaling
        inner = (round((px0 - cx0) * factor), round((py0 - cy0) * factor),
                 crop.shape[1] - round((cx1 - px1) * factor), crop.shape[0] - round((cy1 - py1) * factor))
        if d4:  # drawn only when asked, so that a run without it keeps its random stream
            crop, others, inner = turn_crop(crop, others, inner, rng.randrange(8))
        ch, cw = crop.shape[:2]
        if ch < 2 or cw < 2 or ch >= h or cw >= w:
            continue
        ix0, iy0, ix1, iy1 = inner
        m = round(ring * factor)
        for _try in range(tries):
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            box = (x + ix0, y + iy0, x + ix1, y + iy1)
            if _free((x, y, x + cw, y + ch), all_boxes, 1):
                break
        else:
            continue
        region = out[y:y + ch, x:x + cw].astype(np.float32)
        out[y:y + ch, x:x + cw] = _blend(region, crop.astype(np.float32), (ix0, iy0, ix1, iy1), m,
                                         _strength(rng, contrast), others)
        all_boxes = np.concatenate([all_boxes, np.array([box], np.float32)])
        all_cls = np.concatenate([all_cls, np.array([inst.cls], dtype=all_cls.dtype if all_cls.size else np.float32)])
    return out, all_boxes, all_cls
