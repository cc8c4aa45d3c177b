"""A third evaluation set, kept apart from every rule: colour surfaces, a third renderer.

``gradkit.synth`` (the design set) and ``gradkit.synth_photo`` (gray photographs; ``gradkit plan``'s
faint-defect rule was found on it) both have gray, square images and defects whose contrast is set
against the texture around them. This set differs on each of those points, so that a rule tuned on
the other two meets something it has not seen:

- **Colour, non-square images** (``width`` x ``height``, 5:4 by default). Backgrounds, one kind per
  image: woven fabric (dyed plain weave, thread slubs), brushed metal (grain along one direction,
  polishing lines), printed circuit boards (solder mask, copper traces at 0/45/90 degrees, pads) and
  crops of colour photographs bundled in scikit-image's wheel (coffee, immunohistochemistry,
  retina, hubble_deep_field, chelsea), none of which the other sets use.
- **A third renderer.** Scratches are smooth random walks of any heading, drawn with a soft
  (Gaussian-blurred) profile and broken where the tool lifted; cracks are jagged walks that taper
  and branch; pits are shaded dents (a light direction, a bright and a dark side); stains tint the
  surface towards a stain colour (rust, oil, water) with irregular outlines.
- **Contrast independent of the texture**: a defect's strength is drawn without looking at the
  texture around it, as a physical defect is as deep as it is whatever surface it is on. So a defect
  can be plain on a smooth board and lost in a coarse weave. Scratches and pits add a fixed amount of
  intensity; cracks darken by a fraction of the surface's brightness and stains blend towards their
  colour, so on a dark surface (a night-sky crop, black solder mask) those two are faint.
- Look-alikes come with the surfaces (traces, slubs, polishing lines, vessels in the retina),
  unlabelled; defect-free images (``empty_frac``); the camera adds an illumination gradient,
  sensor noise and a slight defocus over everything.

Boxes are the tight boxes of each defect's mask above 25% (tested against the masks); a defect's
faint fringe below that, and the camera's blur, reach a pixel or two beyond its box (a stain's soft
edge a few). Each image
uses its own generator seeded with ``(seed, index)``; a seed gives byte-identical files.
scikit-image is a development dependency (``pip install -e .[dev]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import CLASS_NAMES, SizedSpec, _box_from_mask, _near, _write_sized_dataset

__all__ = ["KINDS", "PHOTOS", "SurfaceSpec", "generate_surface_dataset", "render_surface_image"]

KINDS: tuple[str, ...] = ("fabric", "metal", "pcb", "photo")
#: colour photographs bundled in scikit-image's wheel (no network), none used by the other sets
PHOTOS: tuple[str, ...] = ("coffee", "immunohistochemistry", "retina", "hubble_deep_field", "chelsea")
_SS = 4  # supersampling factor of the stroke rasteriser


@dataclass(frozen=True)
class SurfaceSpec(SizedSpec):
    """What to generate (:class:`gradkit.synth.SizedSpec`), 320 x 256 images by default."""

    width: int = 320
    height: int = 256


# ---------------------------------------------------------------- backgrounds (H x W x 3, float in [0, 1])

def _rotated_coords(rng: np.random.Generator, h: int, w: int, angle: float | None = None):
    a = rng.uniform(0, np.pi) if angle is None else angle
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.standard_normal((cells, max(2, round(cells * w / h)))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain weave: warp and weft threads alternating over and under, dyed, with slubs."""
    period = rng.uniform(3.0, 8.0)
    u, v = _rotated_coords(rng, h, w, angle=rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.08))
    over = (np.floor(u / period) + np.floor(v / period)) % 2 == 0
    warp = 0.55 + 0.45 * np.cos(np.pi * ((v % period) / period - 0.5)) ** 2
    weft = 0.55 + 0.45 * np.cos(np.pi * ((u % period) / period - 0.5)) ** 2
    shade = np.where(over, warp, weft) * (1 + 0.08 * _smooth_noise(rng, h, w, 12))
    thread = np.floor(v / period)
    for t in rng.choice(np.unique(thread), int(rng.integers(0, 4))):  # slubs: thicker, brighter threads
        shade = shade + 0.25 * ((thread == t) & ~over)
    dye = rng.uniform(0.25, 0.9, 3)
    return shade[..., None] * dye


def _metal(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Brushed metal: noise smeared along one direction, a sheen, polishing lines across the image."""
    n = int(np.ceil(np.hypot(h, w))) + 2
    streaks = cv2.blur(rng.standard_normal((n, n)).astype(np.float32), (int(rng.integers(15, 60)), 1))
    rot = cv2.getRotationMatrix2D((n / 2, n / 2), float(rng.uniform(0, 180)), 1.0)
    streaks = cv2.warpAffine(streaks, rot, (n, n))[(n - h) // 2:(n - h) // 2 + h, (n - w) // 2:(n - w) // 2 + w]
    base = rng.uniform(0.4, 0.75) + rng.uniform(0.1, 0.3) * streaks / (streaks.std() + 1e-6) * 0.15
    base = base + 0.08 * _smooth_noise(rng, h, w, 3)
    for _ in range(int(rng.integers(0, 3))):  # long, straight polishing lines: scratch look-alikes
        u, _v = _rotated_coords(rng, h, w)
        base = base + rng.choice([-1, 1]) * rng.uniform(0.03, 0.08) * (np.abs(u - rng.uniform(0, max(h, w))) < 0.7)
    tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.03, 3)
    return base[..., None] * tint


def _pcb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Green solder mask, copper traces at 0/45/90 degrees and round pads."""
    mask_colour = np.array([rng.uniform(0.05, 0.2), rng.uniform(0.3, 0.55), rng.uniform(0.1, 0.3)])
    img = np.ones((h, w, 3), np.float32) * mask_colour * (1 + 0.06 * _smooth_noise(rng, h, w, 6))[..., None]
    copper = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(3, 12))):
        p = rng.uniform(0, 1, 2) * (w, h)
        pts = [p]
        for _seg in range(int(rng.integers(1, 4))):
            a = rng.integers(8) * np.pi / 4
            p = p + rng.uniform(0.1, 0.5) * max(h, w) * np.array([np.cos(a), np.sin(a)])
            pts.append(p)
        cv2.polylines(copper, [np.round(np.array(pts)).astype(np.int32)], False, 255, int(rng.integers(2, 6)),
                      cv2.LINE_AA)
        for end in (pts[0], pts[-1]):
            cv2.circle(copper, tuple(int(c) for c in np.round(end)), int(rng.integers(3, 8)), 255, -1, cv2.LINE_AA)
    metal = np.array([0.8, 0.6, 0.35]) if rng.random() < 0.5 else np.array([0.78, 0.78, 0.74])
    a = copper.astype(np.float32)[..., None] / 255.0
    return img * (1 - a) + a * metal * rng.uniform(0.8, 1.0)


_PHOTO_CACHE: dict[str, np.ndarray] = {}


def _photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    name = PHOTOS[int(rng.integers(len(PHOTOS)))]
    if name not in _PHOTO_CACHE:
        try:
            from skimage import data
        except ImportError:
            raise ImportError("gradkit.synth_surface needs scikit-image: pip install 'scikit-image>=0.22'") from None
        _PHOTO_CACHE[name] = getattr(data, name)()[..., :3].astype(np.float32) / 255.0
    photo = _PHOTO_CACHE[name]
    ph, pw = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0) * min(ph / h, pw / w)
    ch, cw = int(h * scale), int(w * scale)
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        crop = crop[::-1]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_AREA)


_BACKGROUND = {"fabric": _fabric, "metal": _metal, "pcb": _pcb, "photo": _photo}


# ---------------------------------------------------------------- defects (coverage masks, H x W in [0, 1])

def _strokes(h: int, w: int, segments: list[tuple[np.ndarray, np.ndarray, float]], soften: float) -> np.ndarray:
    """Segments ``(a, b, width)`` rasterised at 4x, blurred to a soft profile, area-averaged down."""
    big = np.zeros((h * _SS, w * _SS), np.float32)
    for a, b, width in segments:
        cv2.line(big, tuple(int(c) for c in np.round(a * _SS)), tuple(int(c) for c in np.round(b * _SS)), 1.0,
                 max(1, round(width * _SS)), cv2.LINE_8)
    big = cv2.GaussianBlur(big, (0, 0), soften * _SS)
    return np.clip(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA) / max(float(big.max()), 1e-6), 0, 1)


def _walk(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, step: float,
          turn: float) -> np.ndarray:
    """Points of a random walk whose heading changes by N(0, turn) per step."""
    n = max(2, int(length / step))
    headings = heading + np.cumsum(rng.normal(0, turn, n))
    steps = step * np.stack([np.cos(headings), np.sin(headings)], 1)
    return start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, 0)])


def _scratch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    side = min(h, w)
    pts = _walk(rng, rng.uniform(0.15, 0.85, 2) * (w, h), rng.uniform(0, 2 * np.pi),
                rng.uniform(0.15, 0.5) * side, 2.0, 0.02)
    width = rng.uniform(0.8, 2.2)
    # smooth noise along the length: where it is low the tool lifted and the scratch breaks
    along = 0.75 + 0.5 * cv2.resize(rng.standard_normal((1, 6)).astype(np.float32), (len(pts), 1),
                                    interpolation=cv2.INTER_CUBIC)[0]
    segs = [(pts[i], pts[i + 1], width) for i in range(len(pts) - 1) if along[i] > 0.35]
    if not segs:
        segs = [(pts[0], pts[-1], width)]
    return _strokes(h, w, segs, soften=0.4)


def _crack(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    side = min(h, w)
    length = rng.uniform(0.15, 0.4) * side
    trunk = _walk(rng, rng.uniform(0.2, 0.8, 2) * (w, h), rng.uniform(0, 2 * np.pi), length, 3.0, 0.35)
    w0 = rng.uniform(1.5, 2.5)
    segs = [(trunk[i], trunk[i + 1], w0 * (1 - 0.6 * i / len(trunk))) for i in range(len(trunk) - 1)]
    for _ in range(int(rng.integers(0, 3))):
        k = int(rng.integers(1, len(trunk) - 1))
        d = trunk[k + 1] - trunk[k]
        heading = np.arctan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
        branch = _walk(rng, trunk[k], heading, rng.uniform(0.25, 0.6) * length, 3.0, 0.35)
        segs += [(branch[i], branch[i + 1], 0.9) for i in range(len(branch) - 1)]
    return _strokes(h, w, segs, soften=0.3)


def _pit_shape(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A dent's coverage mask and its shading (-1 dark side .. +1 bright side)."""
    r = rng.uniform(1.5, 6.0) * min(h, w) / 256
    c = rng.uniform(0.05, 0.95, 2) * (w, h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (x - c[0]) / r, (y - c[1]) / r * rng.uniform(1.0, 1.5)
    d = np.hypot(dx, dy)
    inside = np.clip((1 - d) * r + 0.5, 0, 1)
    light = rng.uniform(0, 2 * np.pi)
    # a spherical dent: its wall facing the light is lit, the other is in shadow, the floor is dark
    slope = (dx * np.cos(light) + dy * np.sin(light)) * inside
    return inside, np.clip(slope - 0.5 * inside * (1 - d.clip(0, 1)), -1, 1)


def _stain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    side = min(h, w)
    c, r = rng.uniform(0.2, 0.8, 2) * (w, h), rng.uniform(0.04, 0.12) * side
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    blob = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(3, 7))):  # overlapping lobes: an irregular outline
        o = c + rng.normal(0, 0.5 * r, 2)
        rr = r * rng.uniform(0.5, 1.0)
        blob = np.maximum(blob, np.exp(-((x - o[0]) ** 2 + (y - o[1]) ** 2) / (2 * rr * rr)))
    return np.clip((blob - 0.35) / 0.3, 0, 1).astype(np.float32)


#: stain colours (RGB): rust, oil, dried water
_STAIN_COLOURS = np.array([[0.55, 0.27, 0.1], [0.12, 0.12, 0.14], [0.85, 0.85, 0.8]], np.float32)


def _apply(rng: np.random.Generator, img: np.ndarray, cls: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of class ``cls``; returns the new image and the defect's coverage mask."""
    if cls == 0:    # scratch: bright (burnished) or dark, absolute strength
        mask = _scratch(rng, h, w)
        return img + rng.choice([-1, 1]) * rng.uniform(0.06, 0.3) * mask[..., None], mask
    if cls == 1:    # crack: dark
        mask = _crack(rng, h, w)
        return img * (1 - rng.uniform(0.25, 0.7) * mask[..., None]), mask
    if cls == 2:    # pit: shading of a dent
        mask, shade = _pit_shape(rng, h, w)
        return img + rng.uniform(0.12, 0.35) * shade[..., None], mask
    mask = _stain(rng, h, w)   # stain: tint towards a stain colour
    colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
    a = rng.uniform(0.15, 0.5) * mask[..., None]
    return img * (1 - a) + a * colour, mask


def render_surface_image(spec: SurfaceSpec, index: int) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """Render one image.

    Returns:
        The image (H x W x 3 uint8, BGR as OpenCV writes it), YOLO labels ``(class, xc, yc, w, h)``
        and the defect masks (coverage in [0, 1]) in label order.
    """
    rng = np.random.default_rng([spec.seed, index])
    h, w = spec.height, spec.width
    img = _BACKGROUND[KINDS[int(rng.integers(len(KINDS)))]](rng, h, w).astype(np.float32)
    labels, masks, boxes = [], [], []
    if rng.random() >= spec.empty_frac:
        for _ in range(int(rng.integers(1, spec.max_defects + 1))):
            cls = int(rng.integers(len(CLASS_NAMES)))
            drawn, mask = _apply(rng, img, cls, h, w)
            box = _box_from_mask(mask)
            if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if _near(box, boxes):
                continue  # no overlapping boxes: each box holds one defect (and fringes, see above)
            img = drawn
            boxes.append(box)
            masks.append(mask)
            x0, y0, x1, y1 = box
            labels.append((cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    # the camera: uneven illumination, slight defocus, sensor noise
    u, _v = _rotated_coords(rng, h, w)
    img = img * (1 + rng.uniform(0, 0.15) * (u / max(h, w) - 0.5))[..., None]
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.7))
    img = img + rng.normal(0, rng.uniform(0.004, 0.015), img.shape)
    rgb = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1]), labels, masks


def generate_surface_dataset(out: str | Path, spec: SurfaceSpec | None = None) -> Path:
    """Write the set in YOLO layout; returns its ``data.yaml`` (absolute ``path``)."""
    return _write_sized_dataset(out, spec or SurfaceSpec(), render_surface_image, "gradkit_synth_surface")
