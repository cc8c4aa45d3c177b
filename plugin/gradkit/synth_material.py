"""A fourth evaluation set, built after every rule of ``gradkit plan``: lit relief on material textures.

The other three sets paint a defect's intensity onto a texture. Here a defect is **relief and
pigment under one light**, a fourth renderer:

- The surface has a height map and an albedo. Scratches are grooves and pits are craters (with a
  raised rim) in the height map; cracks are dark gaps with a shallow groove; stains blend the albedo
  towards rust, oil or coolant residue, most at a ring where the liquid dried. One light per image
  (azimuth any, elevation 25-60 degrees) shades the relief by the surface normal, so **a groove shows
  as a bright and a dark line side by side**, its look set by its heading against the light: a
  scratch along the light's direction is nearly invisible. Scratch paths are arcs (a turning tool) or
  straight lines; a crack turns towards the darker texture ahead, as fractures follow grain
  boundaries (tested on planted dark valleys).
- Backgrounds are **material textures from GIMP's pattern library** (wood, stone, marble, paper,
  leather, burlap, cork; ``apt-get install gimp-data``), small tiles (43-156 px a side) repeated
  across the image at 1-2x magnification: periodic textures, none used by the other sets. Five of
  the patterns are gray, but the camera's noise is drawn per channel, so no image is exactly gray.
  Some patterns carry look-alikes of their own, unlabelled: the cracked and crater stones, dried
  ground, veined marble. A third of the images get a hair lying on the part, with its shadow,
  unlabelled.
- Images are 4:3 (``width`` x ``height``); defect-free images (``empty_frac``); the camera adds a
  vignette and sensor noise, no blur.

A defect's box is the tight box of its mask above 25%. The mask is what light can show of it: for a
relief the largest of its depth, its slope and the brightness change the image's light gives it, each
as a share of its largest value; for a pigment its opacity (tested: the box holds the pixels the
defect visibly changes). Boxes keep 2 px apart. Each
image uses its own generator seeded with ``(seed, index)``; a seed gives byte-identical files for the
same pattern files (``data.yaml`` records the folder and the pattern names).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import CLASS_NAMES, SizedSpec, _box_from_mask, _near, _split_of, write_yolo_dataset

__all__ = ["MATERIALS", "PATTERNS", "MaterialSpec", "generate_material_dataset", "read_gimp_pattern",
           "render_material_image"]

#: where Debian's ``gimp-data`` installs GIMP's patterns
PATTERNS = "/usr/share/gimp/2.0/patterns"
#: the material textures used (file names under ``PATTERNS``, without ``.pat``); the toy, sky, water
#: and food patterns are left out. cracked, Craters, ground1 and the marbles carry look-alikes.
MATERIALS: tuple[str, ...] = (
    "Animal/leather", "Fabric/burlap", "Paper/crinklepaper", "Paper/paper", "Stone/Craters", "Stone/cracked",
    "Stone/granite1", "Stone/ground1", "Stone/marble1", "Stone/marble2", "Stone/pink_marble", "Stone/slate",
    "Wood/burlwood", "Wood/corkboard", "Wood/pine", "Wood/walnut", "Wood/wood1", "Wood/wood2", "Wood/wood3",
    "Wood/wood4", "Wood/wood5")
_MAX_SIDE = 4096  # a pattern side beyond this is refused as not a pattern: GIMP's are tiles of tens of pixels


@dataclass(frozen=True)
class MaterialSpec(SizedSpec):
    """What to generate (:class:`gradkit.synth.SizedSpec`), 344 x 256 images by default; textures are the
    ``materials`` under ``patterns``."""

    width: int = 344
    height: int = 256
    patterns: str = PATTERNS
    materials: tuple[str, ...] = MATERIALS

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.materials:
            raise ValueError("materials must name at least one pattern")


# ---------------------------------------------------------------- textures

def read_gimp_pattern(path: str | Path) -> np.ndarray:
    """A GIMP pattern file (``.pat``: a big-endian header of header size, version 1, width, height,
    bytes per pixel, the magic ``GPAT`` and a name, then the pixels) as H x W x 3 uint8 RGB.
    Anything else is refused with a one-line ``ValueError`` naming the file, before its pixels are read."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(24), os.fstat(f.fileno()).st_size
            if len(head) < 24 or head[20:24] != b"GPAT":
                raise ValueError(f"{path}: not a GIMP pattern (no GPAT magic)")
            header, version, width, height, depth = struct.unpack(">5I", head[:20])
            if version != 1 or not 1 <= depth <= 4 or not (0 < width <= _MAX_SIDE and 0 < height <= _MAX_SIDE):
                raise ValueError(f"{path}: unsupported GIMP pattern (version {version}, {width} x {height} x {depth})")
            if not 24 <= header <= size or size - header != width * height * depth:
                raise ValueError(f"{path}: a GIMP pattern of {width} x {height} x {depth} with a {header}-byte "
                                 f"header needs {header + width * height * depth} bytes, the file has {size}")
            f.seek(header)
            raw = f.read()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror or exc})") from None
    pixels = np.frombuffer(raw, np.uint8).reshape(height, width, depth)
    colour = pixels[..., :3] if depth >= 3 else np.repeat(pixels[..., :1], 3, axis=2)  # drop alpha
    return colour.copy()


@lru_cache(maxsize=4)
def _textures(patterns: str, materials: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    folder = Path(patterns)
    missing = [m for m in materials if not (folder / f"{m}.pat").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: GIMP pattern {missing[0]}.pat not found ({len(missing)} of "
                                f"{len(materials)} missing); on Debian: apt-get install gimp-data")
    return tuple(read_gimp_pattern(folder / f"{m}.pat").astype(np.float32) / 255.0 for m in materials)


def _background(rng: np.random.Generator, texture: np.ndarray, h: int, w: int) -> np.ndarray:
    """The pattern magnified 1-2x, turned by a D4 symmetry, repeated over h x w from a random offset."""
    s = rng.uniform(1.0, 2.0)
    tile = cv2.resize(texture, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
    tile = np.rot90(tile, int(rng.integers(4)))
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    th, tw = tile.shape[:2]
    y, x = int(rng.integers(th)), int(rng.integers(tw))
    big = np.tile(tile, (-(-(h + y) // th), -(-(w + x) // tw), 1))
    return np.clip(big[y:y + h, x:x + w] * rng.uniform(0.85, 1.15), 0, 1).astype(np.float32)


# ---------------------------------------------------------------- paths and profiles

def _arc(rng: np.random.Generator, h: int, w: int, length: float) -> np.ndarray:
    """Points (1 px apart) of a straight line or a circular arc (a turning tool) of ``length``."""
    start = rng.uniform(0.1, 0.9, 2) * (w, h)
    heading = rng.uniform(0, 2 * np.pi)
    curvature = 0.0 if rng.random() < 0.4 else rng.choice([-1, 1]) / rng.uniform(0.5, 3.0) / min(h, w)
    t = np.arange(0.0, length, 1.0)
    angle = heading + curvature * t
    steps = np.stack([np.cos(angle), np.sin(angle)], 1)
    return start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps[:-1], 0)])


def _distance(points: np.ndarray, h: int, w: int, reach: float) -> np.ndarray:
    """Each pixel centre's distance to the nearest of ``points`` (dense along a path); +inf beyond ``reach``."""
    dist = np.full((h, w), np.inf, np.float32)
    x0, y0 = np.floor(points.min(0) - reach).astype(int).clip(0)
    x1, y1 = np.ceil(points.max(0) + reach + 1).astype(int)
    x1, y1 = min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return dist
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    pix = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    best = np.full(len(pix), np.inf, np.float32)
    for chunk in np.array_split(points.astype(np.float32), max(1, len(points) // 64)):
        best = np.minimum(best, np.sqrt(((pix[:, None, :] - chunk[None]) ** 2).sum(-1)).min(1))
    dist[y0:y1, x0:x1] = best.reshape(ys.shape)
    return dist


def _gaussian_profile(dist: np.ndarray, sigma: float) -> np.ndarray:
    """1 on a path, falling as a Gaussian of ``sigma`` px across it: a groove's depth, a gap's darkness."""
    return np.exp(-0.5 * (dist / sigma) ** 2).astype(np.float32)


def _fracture(rng: np.random.Generator, luminance: np.ndarray, start: np.ndarray, heading: float,
              length: float) -> np.ndarray:
    """A crack's path from ``start``: 1 px steps; every 2 px it turns towards the darkest of three
    directions 4 px ahead (fractures follow grain boundaries), with some randomness. It ends at the
    image's edge."""
    h, w = luminance.shape
    smooth = cv2.GaussianBlur(luminance, (0, 0), 1.5)
    spread = float(smooth.std()) + 1e-3
    p = np.asarray(start, float)
    points = [p.copy()]
    turns = np.array([-0.4, 0.0, 0.4])
    for _ in range(int(length)):
        if len(points) % 2 == 0:
            ahead = p + 4 * np.stack([np.cos(heading + turns), np.sin(heading + turns)], 1)
            ix = ahead[:, 0].clip(0, w - 1).astype(int)
            iy = ahead[:, 1].clip(0, h - 1).astype(int)
            score = smooth[iy, ix] / spread + rng.normal(0, 0.3, 3)
            heading += turns[int(np.argmin(score))] + rng.normal(0, 0.08)
        p = p + np.array([np.cos(heading), np.sin(heading)])
        if not (0 <= p[0] < w and 0 <= p[1] < h):
            break
        points.append(p.copy())
    return np.array(points)


def _relief_mask(relief: np.ndarray) -> np.ndarray:
    """What light can show of a relief: at each pixel the larger of its depth and its slope, each as a
    share of its largest value (a crater's steep walls and rim show, though shallower than its floor)."""
    gy, gx = np.gradient(relief)
    slope = np.hypot(gx, gy)
    depth = np.abs(relief)
    return np.maximum(depth / max(float(depth.max()), 1e-9), slope / max(float(slope.max()), 1e-9))


# ---------------------------------------------------------------- defects: (relief, pigment, mask)
# relief: a height change (pixels) or None; pigment: (opacity H x W, RGB colour the surface is blended
# towards) or None; mask: in [0, 1], the defect's box is where it exceeds 0.25.
Pigment = tuple[np.ndarray, np.ndarray]
Defect = tuple[np.ndarray | None, Pigment | None, np.ndarray]

def _scratch(rng: np.random.Generator, h: int, w: int, lum: np.ndarray) -> Defect:
    """A groove along an arc: its walls' steepest slope 0.1-0.6, which is what the light shows."""
    sigma = rng.uniform(0.4, 0.9)
    slope = rng.uniform(0.1, 0.6)
    path = _arc(rng, h, w, rng.uniform(0.15, 0.5) * min(h, w))
    # a Gaussian groove of depth d has its steepest slope d / sigma * exp(-1/2) = 0.61 d / sigma
    relief = -slope * sigma / 0.61 * _gaussian_profile(_distance(path, h, w, 4 * sigma), sigma)
    return relief, None, _relief_mask(relief)


def _crack(rng: np.random.Generator, h: int, w: int, lum: np.ndarray) -> Defect:
    """A dark gap with a shallow groove, along a fracture path with 0-2 branches."""
    width = rng.uniform(0.5, 1.0)
    trunk = _fracture(rng, lum, rng.uniform(0.15, 0.85, 2) * (w, h), rng.uniform(0, 2 * np.pi),
                      rng.uniform(0.15, 0.4) * min(h, w))
    paths = [trunk]
    for _ in range(int(rng.integers(0, 3))):
        if len(trunk) > 10:
            k = int(rng.integers(len(trunk) // 4, len(trunk) - 2))
            d = trunk[k + 1] - trunk[k]
            heading = np.arctan2(d[1], d[0]) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0)
            paths.append(_fracture(rng, lum, trunk[k], heading, rng.uniform(0.2, 0.5) * len(trunk)))
    gap = _gaussian_profile(_distance(np.concatenate(paths), h, w, 4 * width), width)
    relief = -0.5 * gap
    return relief, (rng.uniform(0.3, 0.75) * gap, _GAP), np.maximum(gap, _relief_mask(relief))


def _pit(rng: np.random.Generator, h: int, w: int, lum: np.ndarray) -> Defect:
    """A crater 1.5-6 px in radius (at 256 px) with a raised rim, 0.3-1.2 of its radius deep."""
    r = rng.uniform(1.5, 6.0) * min(h, w) / 256
    c = rng.uniform(0.05, 0.95, 2) * (w, h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.hypot(x + 0.5 - c[0], y + 0.5 - c[1]) / r
    depth = rng.uniform(0.3, 1.2) * r
    bowl = np.where(d < 1, 1 - d * d, 0.0)
    rim = 0.25 * np.exp(-((d - 1) / 0.3) ** 2)
    relief = (depth * (rim - bowl)).astype(np.float32)
    return relief, None, _relief_mask(relief)


def _stain(rng: np.random.Generator, h: int, w: int, lum: np.ndarray) -> Defect:
    """A dried spill: the surface blended towards rust, oil or coolant residue, most at a ring where the
    liquid dried, with a wobbly outline."""
    c = rng.uniform(0.15, 0.85, 2) * (w, h)
    radius = rng.uniform(0.04, 0.12) * min(h, w)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.arctan2(y - c[1], x - c[0])
    wobble = sum(rng.normal(0, 0.12 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    rho = np.hypot(x - c[0], y - c[1]) / (radius * (1 + wobble))
    inside = 1 / (1 + np.exp((rho - 1) / 0.05))
    ring = np.exp(-((rho - 0.97) / 0.06) ** 2)
    effect = (0.4 * inside + ring).astype(np.float32)
    effect /= effect.max()
    colour = _STAINS[int(rng.integers(len(_STAINS)))]
    return None, (rng.uniform(0.25, 0.6) * effect, colour), effect


#: what a stain leaves (RGB): rust, oil, coolant residue; and the dirt in a crack's gap
_STAINS = np.array([[0.55, 0.27, 0.1], [0.12, 0.12, 0.14], [0.45, 0.42, 0.3]], np.float32)
_GAP = np.array([0.05, 0.04, 0.03], np.float32)
_DRAW = {"scratch": _scratch, "crack": _crack, "pit": _pit, "stain": _stain}  # by class name


def _fibre(rng: np.random.Generator, h: int, w: int, light: np.ndarray) -> np.ndarray:
    """An albedo factor: a hair lying on the part (a long thin dark arc) and its shadow, cast away
    from the light."""
    points = _arc(rng, h, w, rng.uniform(0.4, 0.9) * min(h, w))
    hair = _gaussian_profile(_distance(points, h, w, 3.0), rng.uniform(0.3, 0.6))
    away = points - 1.5 * light[:2] / np.linalg.norm(light[:2])
    shadow = _gaussian_profile(_distance(away, h, w, 4.0), 0.8)
    return (1 - rng.uniform(0.3, 0.7) * hair) * (1 - 0.25 * shadow)


def _shade(height: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Lambertian shading of a height map (pixels) by a unit light, 1 where the surface is flat."""
    gy, gx = np.gradient(height)
    normal_z = 1 / np.sqrt(gx * gx + gy * gy + 1)
    lit = (-gx * light[0] - gy * light[1] + light[2]) * normal_z
    return np.clip(lit / light[2], 0, None).astype(np.float32)


def _shown(relief: np.ndarray, light: np.ndarray) -> np.ndarray:
    """How much this light changes the brightness at each pixel of a relief, as a share of its largest
    change: a steep crater's wall changes as much as its floor, so depth or slope alone miss some."""
    change = np.abs(_shade(relief, light) - 1)
    return change / max(float(change.max()), 1e-9)


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A vignette and sensor noise (drawn per channel)."""
    h, w = img.shape[:2]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((x - w / 2) ** 2 + (y - h / 2) ** 2) / ((w / 2) ** 2 + (h / 2) ** 2)
    img = img * (1 - rng.uniform(0, 0.3) * r2)[..., None]
    return img + rng.normal(0, rng.uniform(0.003, 0.012), img.shape)


def _apply(img: np.ndarray, height: np.ndarray, relief: np.ndarray | None,
           pigment: Pigment | None) -> tuple[np.ndarray, np.ndarray]:
    """The image and height map with one defect's relief added and its pigment blended in."""
    if relief is not None:
        height = height + relief
    if pigment is not None:
        opacity, colour = pigment
        img = img * (1 - opacity[..., None]) + opacity[..., None] * colour
    return img, height


def render_material_image(spec: MaterialSpec, index: int) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """Render one image.

    Returns:
        The image (H x W x 3 uint8, BGR as OpenCV writes it), YOLO labels ``(class, xc, yc, w, h)``
        and the defect masks (in [0, 1]) in label order.
    """
    rng = np.random.default_rng([spec.seed, index])
    h, w = spec.height, spec.width
    textures = _textures(spec.patterns, spec.materials)
    img = _background(rng, textures[int(rng.integers(len(textures)))], h, w)
    lum = img.mean(2)  # the texture cracks follow (not a hair lying on it)
    azimuth, elevation = rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(25, 60))
    light = np.array([np.cos(azimuth) * np.cos(elevation), np.sin(azimuth) * np.cos(elevation), np.sin(elevation)])
    if rng.random() < 1 / 3:
        img = img * _fibre(rng, h, w, light)[..., None]
    height = np.zeros((h, w), np.float32)
    labels, masks, boxes = [], [], []
    if rng.random() >= spec.empty_frac:
        for _ in range(int(rng.integers(1, spec.max_defects + 1))):
            cls = int(rng.integers(len(CLASS_NAMES)))
            relief, pigment, mask = _DRAW[CLASS_NAMES[cls]](rng, h, w, lum)
            if relief is not None:
                mask = np.maximum(mask, _shown(relief, light))
            box = _box_from_mask(mask)
            # 2 px apart: a relief's shading reaches a pixel beyond its mask, and each box holds one defect
            if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2 or _near(box, boxes, margin=2):
                continue
            img, height = _apply(img, height, relief, pigment)
            boxes.append(box)
            masks.append(mask)
            x0, y0, x1, y1 = box
            labels.append((cls, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    img = _camera(rng, img * _shade(height, light)[..., None])
    rgb = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb[..., ::-1]), labels, masks


def generate_material_dataset(out: str | Path, spec: MaterialSpec | None = None) -> Path:
    """Write the set in YOLO layout; returns its ``data.yaml`` (absolute ``path``)."""
    spec = spec or MaterialSpec()
    _textures(spec.patterns, spec.materials)  # a missing pattern stops here, before anything is written
    provenance = {"gradkit_synth_material": {"images": spec.images, "width": spec.width, "height": spec.height,
                                             "seed": spec.seed, "empty_frac": spec.empty_frac,
                                             "max_defects": spec.max_defects, "patterns": spec.patterns,
                                             "materials": list(spec.materials)}}
    return write_yolo_dataset(out, spec.images, lambda i: render_material_image(spec, i)[:2],
                              lambda i: _split_of(i, spec), CLASS_NAMES, provenance)
