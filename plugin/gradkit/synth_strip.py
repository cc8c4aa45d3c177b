"""A fifth evaluation set, built after the warp's label filter was found: defects along a material's axes.

The other four sets draw thin defects mostly diagonal, so their boxes are wide. On rolled strip, woven
fabric and ground parts a scratch runs **along the grain**: along the rolling direction, a thread or the
grinding marks. Its box is then 1-4 px high and up to hundreds long, the shape Ultralytics' warp drops
(README, "Why thin defects fail"). This set is made of such surfaces, with a fifth renderer:

- **Gray surfaces with a grain along one image axis** (horizontal or vertical, one per image), three
  kinds: cold-rolled strip (streaks smeared along the rolling direction, full-length roll marks),
  plain weave (threads exactly along both axes, bright slubs) and ground metal (short parallel
  grinding marks). The roll marks, slubs and grinding marks are look-alikes of a scratch, unlabelled.
- **Defects drawn with hard edges** (rasterised 8x and area-averaged, no blur): scratches are straight
  lines along the grain (drifting at most 1 px across it over their length), 0.7-2 px wide, a fifth to
  two thirds of the image long, bright or dark, their strength varying along them; cracks run across
  the grain, jagged and tapering; pits are dark rolled-in specks stretched along the grain, 1.5-5 px
  high. Stains are the one soft-edged class: faint oil streaks stretched along the grain.
- Images are ``width`` x ``height`` (5:3 by default, wider than the other sets, so that a training
  ``imgsz`` of their height shrinks them); defect-free images (``empty_frac``); the camera adds a
  vignette, a slight defocus on some images and sensor noise. Images are gray, stored in three channels.

A defect's box is the tight box of its mask (its coverage) above 25%: a box may be 1 px high. Boxes
never overlap. Each image uses its own generator seeded with ``(seed, index)``; a seed gives
byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import SizedSpec, _gray_frame, _place_defects, _write_sized_dataset

__all__ = ["KINDS", "StripSpec", "generate_strip_dataset", "render_strip_image"]

KINDS: tuple[str, ...] = ("rolled", "weave", "ground")
_SS = 8  # supersampling factor of the hard-edged rasteriser


@dataclass(frozen=True)
class StripSpec(SizedSpec):
    """What to generate (:class:`gradkit.synth.SizedSpec`), 400 x 240 images (5:3) by default."""

    width: int = 400
    height: int = 240


# ------------------------------------------------- backgrounds: gray, H x W float, the grain along x

def _streaks(rng: np.random.Generator, h: int, w: int, length: int) -> np.ndarray:
    """Unit-variance noise smeared ``length`` px along x."""
    s = cv2.blur(rng.standard_normal((h, w + length)).astype(np.float32), (length, 1))[:, length // 2:length // 2 + w]
    return s / (s.std() + 1e-6)


def _rolled(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Cold-rolled strip: streaks along the rolling direction, banding across it, full-length roll marks."""
    img = rng.uniform(0.35, 0.7) + rng.uniform(0.01, 0.04) * _streaks(rng, h, w, int(rng.integers(40, 200)))
    band = cv2.resize(rng.standard_normal((max(2, h // 24), 1)).astype(np.float32), (w, h),
                      interpolation=cv2.INTER_CUBIC)
    img = img + rng.uniform(0.0, 0.04) * band
    for y in rng.integers(0, h, int(rng.integers(0, 4))):  # roll marks: scratch look-alikes, edge to edge
        img[y] += rng.choice([-1, 1]) * rng.uniform(0.02, 0.08)
    return img


def _weave(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain weave exactly along the axes (threads over and under), with thick, bright slubs."""
    period = rng.uniform(3.0, 6.0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    over = (np.floor(x / period) + np.floor(y / period)) % 2 == 0
    warp = 0.6 + 0.4 * np.cos(np.pi * ((y % period) / period - 0.5)) ** 2
    weft = 0.6 + 0.4 * np.cos(np.pi * ((x % period) / period - 0.5)) ** 2
    img = np.where(over, warp, weft) * rng.uniform(0.35, 0.75)
    thread = np.floor(y / period)
    for t in rng.choice(np.unique(thread), int(rng.integers(0, 3)), replace=False):  # where weft thread t is on top
        img = img + rng.uniform(0.05, 0.15) * ((thread == t) & over)
    return img


def _ground(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Ground metal: fine streaks and many short, faint grinding marks, all along x."""
    img = rng.uniform(0.45, 0.75) + rng.uniform(0.01, 0.03) * _streaks(rng, h, w, int(rng.integers(8, 30)))
    for _ in range(int(rng.integers(10, 40))):
        y, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        img[y, x0:x0 + int(rng.integers(6, 60))] += rng.choice([-1, 1]) * rng.uniform(0.01, 0.05)
    return img


_BACKGROUND = {"rolled": _rolled, "weave": _weave, "ground": _ground}


# ----------------------------------------- defects: coverage masks (H x W in [0, 1]), the grain along x

def _hard_canvas(h: int, w: int) -> np.ndarray:
    return np.zeros((h * _SS, w * _SS), np.uint8)


def _coverage(big: np.ndarray, h: int, w: int) -> np.ndarray:
    """A ``_SS``x canvas area-averaged down: each pixel's value is the share of it the shapes cover."""
    return cv2.resize(big.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_AREA)


def _hard_strokes(h: int, w: int, segments: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """Coverage of segments ``(a, b, width)`` in pixel coordinates (pixel i spans [i, i + 1))."""
    big = _hard_canvas(h, w)
    for a, b, width in segments:
        cv2.line(big, tuple(int(c) for c in np.round(a * _SS)), tuple(int(c) for c in np.round(b * _SS)), 255,
                 max(1, round(width * _SS)), cv2.LINE_8)
    return _coverage(big, h, w)


def _hard_ellipse(rng: np.random.Generator, h: int, w: int, half_height: float, stretch: float) -> np.ndarray:
    """Coverage of an ellipse ``2 * half_height`` px high and ``stretch`` times as long along x, anywhere in
    the image."""
    big = _hard_canvas(h, w)
    c = rng.uniform(0.05, 0.95, 2) * (w, h) * _SS
    axes = (max(1, round(half_height * stretch * _SS)), max(1, round(half_height * _SS)))
    cv2.ellipse(big, (round(float(c[0])), round(float(c[1]))), axes, 0.0, 0.0, 360.0, 255, -1, cv2.LINE_8)
    return _coverage(big, h, w)


def _scratch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    length = rng.uniform(0.2, 0.67) * w
    heading = rng.uniform(-1, 1) / length  # along the grain, drifting at most 1 px across it
    c = np.array([rng.uniform(length / 2 + 1, w - length / 2 - 1), rng.uniform(0.05, 0.95) * h])
    d = length / 2 * np.array([np.cos(heading), np.sin(heading)])  # |d_y| <= 0.5: the line stays in the image
    return _hard_strokes(h, w, [(c - d, c + d, rng.uniform(0.7, 2.0))])


def _crack(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    length, step = rng.uniform(0.08, 0.3) * h, 2.5
    n = max(3, int(length / step))
    down = rng.random() < 0.5
    heading = (np.pi / 2 if down else -np.pi / 2) + rng.uniform(-0.3, 0.3) + rng.normal(0, 0.5, n)  # jagged
    start = np.array([rng.uniform(0.05, 0.95) * w, rng.uniform(0.1, 0.6) * h if down else rng.uniform(0.4, 0.9) * h])
    pts = start + np.concatenate([[[0.0, 0.0]], np.cumsum(step * np.stack([np.cos(heading), np.sin(heading)], 1), 0)])
    w0 = rng.uniform(1.2, 2.5)
    return _hard_strokes(h, w, [(pts[i], pts[i + 1], w0 * (1 - 0.6 * i / n)) for i in range(n)])


def _apply(rng: np.random.Generator, img: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of class ``cls`` on the gray ``img`` (grain along x); returns the new image and
    the defect's coverage mask."""
    h, w = img.shape
    if cls == 0:    # scratch: bright (burnished) or dark, its strength varying along it
        mask = _scratch(rng, h, w)
        along = 0.7 + 0.3 * cv2.resize(rng.standard_normal((1, 5)).astype(np.float32), (w, 1),
                                       interpolation=cv2.INTER_CUBIC)
        return img + rng.choice([-1, 1]) * rng.uniform(0.06, 0.25) * mask * along.clip(0.3, 1.3), mask
    if cls == 1:    # crack: dark, a share of the surface's brightness
        mask = _crack(rng, h, w)
        return img * (1 - rng.uniform(0.3, 0.65) * mask), mask
    if cls == 2:    # pit: a dark rolled-in speck stretched along the grain
        mask = _hard_ellipse(rng, h, w, rng.uniform(0.75, 2.5), rng.uniform(1.0, 3.0))
        return img * (1 - rng.uniform(0.3, 0.7) * mask), mask
    mask = _hard_ellipse(rng, h, w, rng.uniform(4, 12), rng.uniform(2.0, 5.0))   # stain: a faint oil streak
    soft = cv2.GaussianBlur(mask, (0, 0), 2.0)
    return img + rng.choice([-1, 1]) * rng.uniform(0.06, 0.18) * soft, np.maximum(mask, soft)


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A vignette, defocus on some images, sensor noise."""
    h, w = img.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = img * (1 - rng.uniform(0, 0.25) * (((x / w - 0.5) ** 2 + (y / h - 0.5) ** 2) * 2))
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.6))
    return img + rng.normal(0, rng.uniform(0.004, 0.012), img.shape)


def render_strip_image(spec: StripSpec, index: int) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """Render one image.

    Returns:
        The image (H x W x 3 uint8, three equal channels), YOLO labels ``(class, xc, yc, w, h)`` and the
        defect masks (coverage in [0, 1]) in label order.
    """
    rng = np.random.default_rng([spec.seed, index])
    vertical_grain = rng.random() < 0.5       # then drawn along x on a transposed frame
    h, w = (spec.width, spec.height) if vertical_grain else (spec.height, spec.width)
    img = _BACKGROUND[KINDS[int(rng.integers(len(KINDS)))]](rng, h, w).astype(np.float32)
    img, classes, masks = _place_defects(rng, img, spec, lambda r, im, cls: _apply(r, im, cls))
    return _gray_frame(_camera(rng, img), classes, masks, transposed=vertical_grain)


def generate_strip_dataset(out: str | Path, spec: StripSpec | None = None) -> Path:
    """Write the set in YOLO layout; returns its ``data.yaml`` (absolute ``path``)."""
    return _write_sized_dataset(out, spec or StripSpec(), render_strip_image, "gradkit_synth_strip")
