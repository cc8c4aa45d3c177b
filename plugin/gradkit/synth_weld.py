"""A sixth evaluation set, built after every rule and every ablation, to report on once: weld radiographs.

The other five sets show defects on a surface under light. A radiograph shows the inside of a part: how much
metal the X-rays crossed. This set is a sixth renderer of that; no rule or threshold of ``gradkit plan`` was
designed or tuned on it, and its training results were reported once, and once more after a rule decided on
another set (README, "A sixth evaluation set"):

- **A butt weld along one image axis** (horizontal or vertical, one per image) on a film: base metal on
  either side, the weld bead lighter (more metal), its cap rippled in chevrons, its toes thin lines along
  it; a density gradient across the film (the tube's heel effect) and film grain. Unlabelled look-alikes:
  **wire image-quality indicators** (a row of 5-7 parallel straight wires, 2.5 down to 0.6 px thick, lighter:
  scratch look-alikes), **lead markers** (light glyphs) and **weld spatter** (light round dots: pores are dark).
- **Defects drawn from their geometry**, not rasterised and blurred: scratches and cracks by a distance
  field (each pixel's value from its distance to the line, the cross-section convolved with a one-pixel box;
  the strip set supersamples a raster, the photographs blur one), pores by the depth of a sphere averaged
  over 4 x 4 points per pixel, slag as a noisy elliptic field with a soft edge. Scratches are film-handling
  scratches, light, gently curved arcs at any angle across the film, 0.6-1.8 px wide; cracks are dark, jagged
  and tapering, starting in the weld and mostly running along it (a long one may wander out of the bead),
  sometimes across it or branching; pores are dark gas pores in the weld, 2-7 px across, darkest at the
  centre; slag inclusions (the stain class) are dark, irregular and elongated along the weld.
- Images are ``width`` x ``height`` (3:2 by default); defect-free images (``empty_frac``); the exposure adds
  geometric unsharpness (a Gaussian blur of sigma 0.3-0.8 px) and grain that grows with exposure. Images are
  gray, stored in three channels.

A defect's mask is its coverage (for a pore, its depth as a share of the centre's; for slag, its soft
field); its box is the tight box of the mask above 25%. Boxes never overlap. Each image uses its own
generator seeded with ``(seed, index)``; a seed gives byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import SizedSpec, _gray_frame, _place_defects, _write_sized_dataset

__all__ = ["WeldSpec", "generate_weld_dataset", "render_weld_image"]


@dataclass(frozen=True)
class WeldSpec(SizedSpec):
    """What to generate (:class:`gradkit.synth.SizedSpec`), 384 x 256 images (3:2) by default."""

    width: int = 384
    height: int = 256


@dataclass(frozen=True)
class _Weld:
    """Where the bead lies on the frame drawn with the weld along x: centre row and half-width, px."""

    centre: float
    half_width: float


# ------------------------------------------------------------- the distance-field rasteriser

def _segment_distance(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``px`` (N x 2) to the segment ``a``-``b``."""
    ab = b - a
    t = np.clip(((px - a) @ ab) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.linalg.norm(px - (a + t[:, None] * ab), axis=1)


def _polyline_coverage(h: int, w: int, pts: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Coverage of a polyline through ``pts`` (K x 2, x/y px; pixel i spans [i, i + 1)), segment k being
    ``widths[k]`` px wide, from each pixel centre's distance to it: the line's cross-section convolved with
    a one-pixel box, so exact for a line along an axis, and a line thinner than a pixel covers its pixels
    by its width at most. Computed only in the polyline's box."""
    margin = float(widths.max()) / 2 + 2
    x0, y0 = np.maximum(np.floor(pts.min(0) - margin).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0) + margin).astype(int), (w, h))
    out = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    cover = np.max([np.clip((widths[k] + 1) / 2 - _segment_distance(px, pts[k], pts[k + 1]), 0.0, min(widths[k], 1.0))
                    for k in range(len(pts) - 1)], axis=0)
    out[y0:y1, x0:x1] = cover.reshape(y1 - y0, x1 - x0)
    return out


def _pore_depth(h: int, w: int, centre: np.ndarray, radius: float) -> np.ndarray:
    """A spherical pore's depth along the beam, relative to its centre's: ``sqrt(1 - (r / R)^2)``,
    averaged over 4 x 4 points per pixel. Computed only in the pore's box."""
    x0, y0 = np.maximum(np.floor(centre - radius).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.ceil(centre + radius).astype(int) + 1, (w, h))
    out = np.zeros((h, w), np.float32)
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = np.mgrid[y0 * 4:y1 * 4, x0 * 4:x1 * 4]
    r2 = ((xs + 0.5) / 4 - centre[0]) ** 2 + ((ys + 0.5) / 4 - centre[1]) ** 2
    depth = np.sqrt(np.clip(1.0 - r2 / radius**2, 0.0, 1.0)).astype(np.float32)
    out[y0:y1, x0:x1] = depth.reshape(y1 - y0, 4, x1 - x0, 4).mean((1, 3))
    return out


# ----------------------------------------------------- the film: gray, H x W float, the weld along x

def _film(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, _Weld]:
    """Base metal, a rippled weld bead with its toes, a heel-effect gradient."""
    weld = _Weld(centre=rng.uniform(0.35, 0.65) * h, half_width=rng.uniform(0.1, 0.22) * h)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    across = np.abs(y - weld.centre) / weld.half_width
    cap = np.sqrt(np.clip(1.0 - across**2, 0.0, 1.0))                      # thickness of a round cap
    period = rng.uniform(5.0, 14.0)
    ripple = np.cos(2 * np.pi * (x + rng.uniform(0.5, 2.0) * np.abs(y - weld.centre)) / period)  # chevrons
    img = rng.uniform(0.25, 0.45) + rng.uniform(0.12, 0.3) * cap * (1 + rng.uniform(0.03, 0.1) * ripple)
    toe = rng.choice([-1, 1]) * rng.uniform(0.02, 0.06)
    img += toe * np.exp(-((across - 1.0) * weld.half_width) ** 2 / 1.5)     # the toes: lines along the weld
    tilt = rng.uniform(-0.12, 0.12, 2)
    img *= 1 + tilt[0] * (x / w - 0.5) + tilt[1] * (y / h - 0.5)             # heel effect
    return img, weld


def _wire_iqi(rng: np.random.Generator, img: np.ndarray, weld: _Weld) -> np.ndarray:
    """A row of parallel straight wires across the weld, thickest first: light lines, not defects."""
    h, w = img.shape
    length, gap = rng.uniform(0.2, 0.35) * h, rng.uniform(4.0, 8.0)
    x = rng.uniform(0.05, 0.6) * w
    y = weld.centre + rng.uniform(-0.5, 0.5) * h * 0.3 - length / 2
    for thickness in np.geomspace(2.5, 0.6, int(rng.integers(5, 8))):
        pts = np.array([[x, y], [x, y + length]])
        img = img + rng.uniform(0.05, 0.12) * _polyline_coverage(h, w, pts, np.array([thickness]))
        x += gap
    return img


def _markers(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Lead letters and digits near an edge: light, sharp glyphs."""
    h, w = img.shape
    canvas = np.zeros((h, w), np.uint8)
    text = "".join(rng.choice(list("ABCDEFHKLMNPRSTUVWXYZ0123456789"), int(rng.integers(2, 6))))
    scale = rng.uniform(0.3, 0.6) * h / 256
    y = int(rng.choice([rng.uniform(0.06, 0.15), rng.uniform(0.9, 0.97)]) * h)
    cv2.putText(canvas, text, (int(rng.uniform(0.02, 0.6) * w), y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255,
                max(1, round(2 * scale)), cv2.LINE_AA)
    return img + rng.uniform(0.15, 0.3) * canvas.astype(np.float32) / 255.0


def _spatter(rng: np.random.Generator, img: np.ndarray, weld: _Weld) -> np.ndarray:
    """Weld spatter beside the bead: small light round dots, where pores are dark ones."""
    h, w = img.shape
    for _ in range(int(rng.integers(1, 6))):
        side = rng.choice([-1, 1]) * rng.uniform(1.1, 2.0) * weld.half_width
        centre = np.array([rng.uniform(0.03, 0.97) * w, np.clip(weld.centre + side, 3, h - 3)])
        img = img + rng.uniform(0.05, 0.15) * _pore_depth(h, w, centre, rng.uniform(1.0, 3.0))
    return img


# ------------------------------------------- defects: masks (H x W in [0, 1]), the weld along x

def _in_weld(rng: np.random.Generator, weld: _Weld, share: float) -> float:
    """A row inside the bead, within ``share`` of its half-width of the centre."""
    return weld.centre + rng.uniform(-share, share) * weld.half_width


def _scratch(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A gently curved arc at any angle across the film (a quadratic Bezier curve)."""
    length = rng.uniform(0.25, 0.7) * min(h, w)
    angle = rng.uniform(0, np.pi)
    d = length / 2 * np.array([np.cos(angle), np.sin(angle)])
    c = rng.uniform(length / 2 + 2, np.array([w, h]) - length / 2 - 2)
    bow = rng.uniform(-0.12, 0.12) * length * np.array([-np.sin(angle), np.cos(angle)])
    t = np.linspace(0, 1, 24)[:, None]
    pts = (1 - t) ** 2 * (c - d) + 2 * t * (1 - t) * (c + bow) + t**2 * (c + d)
    return _polyline_coverage(h, w, pts, np.full(len(pts) - 1, rng.uniform(0.6, 1.8)))


def _crack_path(rng: np.random.Generator, start: np.ndarray, heading: float, length: float) -> np.ndarray:
    """The corners of a crack ``length`` px long from ``start``: steps of 2 px (a kink every pixel or two
    reads as jagged at this scale) whose headings drift from ``heading`` and jitter about the drift."""
    step = 2.0
    n = max(3, int(length / step))
    headings = heading + np.cumsum(rng.normal(0, 0.35, n)) * 0.3 + rng.normal(0, 0.4, n)  # drift, jitter
    steps = step * np.stack([np.cos(headings), np.sin(headings)], 1)
    return start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, 0)])


def _crack(rng: np.random.Generator, h: int, w: int, weld: _Weld) -> np.ndarray:
    """Jagged and tapering, in the weld: along it (longitudinal) or across it (transverse), maybe branched."""
    longitudinal = rng.random() < 0.7
    if longitudinal:
        length, heading = rng.uniform(0.12, 0.4) * w, rng.choice([0.0, np.pi])
        start = np.array([rng.uniform(0.3, 0.7) * w, _in_weld(rng, weld, 0.4)])
    else:
        length, heading = rng.uniform(1.2, 2.0) * weld.half_width, rng.choice([np.pi / 2, -np.pi / 2])
        start = np.array([rng.uniform(0.1, 0.9) * w, weld.centre - np.sin(heading) * length / 2])
    pts = _crack_path(rng, start, heading, length)
    width0 = rng.uniform(0.8, 1.8)
    taper = width0 * (1 - 0.7 * np.abs(np.linspace(-1, 1, len(pts) - 1)))   # thickest in the middle
    mask = _polyline_coverage(h, w, pts, taper)
    if rng.random() < 0.3:                                                   # a branch from its middle
        fork = pts[len(pts) // 2]
        branch = _crack_path(rng, fork, heading + rng.choice([-1, 1]) * rng.uniform(0.4, 1.0), length * 0.3)
        mask = np.maximum(mask, _polyline_coverage(h, w, branch, np.full(len(branch) - 1, width0 * 0.5)))
    return mask


def _slag(rng: np.random.Generator, h: int, w: int, weld: _Weld) -> np.ndarray:
    """An irregular, elongated inclusion along the weld: an ellipse with a noisy outline, soft-edged."""
    a, b = rng.uniform(4.0, 16.0), rng.uniform(1.5, 4.5)
    c = np.array([rng.uniform(0.08, 0.92) * w, _in_weld(rng, weld, 0.6)])
    y, x = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    noise = cv2.resize(rng.standard_normal((max(2, h // 6), max(2, w // 6))).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC)
    field = 1.0 - ((x - c[0]) / a) ** 2 - ((y - c[1]) / b) ** 2 + 0.3 * noise
    return np.clip(field / 0.4, 0.0, 1.0)


def _apply(rng: np.random.Generator, img: np.ndarray, cls: int, weld: _Weld) -> tuple[np.ndarray, np.ndarray]:
    """Draw one defect of class ``cls`` on the film ``img`` (the weld along x); returns the new image and
    the defect's mask."""
    h, w = img.shape
    if cls == 0:    # scratch on the film: light, the emulsion scraped off
        mask = _scratch(rng, h, w)
        return img + rng.uniform(0.06, 0.2) * mask, mask
    if cls == 1:    # crack: dark, less metal along the beam
        mask = _crack(rng, h, w, weld)
        return img * (1 - rng.uniform(0.15, 0.4) * mask), mask
    if cls == 2:    # pore: dark, deepest at its centre
        centre = np.array([rng.uniform(0.05, 0.95) * w, _in_weld(rng, weld, 0.7)])
        mask = _pore_depth(h, w, centre, rng.uniform(1.0, 3.5))
        return img * (1 - rng.uniform(0.2, 0.45) * mask), mask
    mask = _slag(rng, h, w, weld)   # slag inclusion
    return img * (1 - rng.uniform(0.1, 0.3) * mask), mask


def _exposure(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Geometric unsharpness, then film grain that grows with the exposure (the darker, the grainier)."""
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.8))
    grain = cv2.GaussianBlur(rng.standard_normal(img.shape).astype(np.float32), (0, 0), 0.6)
    return img + rng.uniform(0.01, 0.03) * grain * (1.2 - img).clip(0.2, 1.0) / 0.6


def render_weld_image(spec: WeldSpec, index: int) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """Render one image.

    Returns:
        The image (H x W x 3 uint8, three equal channels), YOLO labels ``(class, xc, yc, w, h)`` and the
        defect masks (in [0, 1]) in label order.
    """
    rng = np.random.default_rng([spec.seed, index])
    vertical = rng.random() < 0.5             # then drawn along x on a transposed frame
    h, w = (spec.width, spec.height) if vertical else (spec.height, spec.width)
    img, weld = _film(rng, h, w)
    if rng.random() < 0.5:
        img = _wire_iqi(rng, img, weld)
    if rng.random() < 0.5:
        img = _markers(rng, img)
    if rng.random() < 0.5:
        img = _spatter(rng, img, weld)
    # a pixel of space between boxes: no defect's faint edge lies in another's box
    img, classes, masks = _place_defects(rng, img, spec, lambda r, im, cls: _apply(r, im, cls, weld), margin=1)
    return _gray_frame(_exposure(rng, img), classes, masks, transposed=vertical)


def generate_weld_dataset(out: str | Path, spec: WeldSpec | None = None) -> Path:
    """Write the set in YOLO layout; returns its ``data.yaml`` (absolute ``path``)."""
    return _write_sized_dataset(out, spec or WeldSpec(), render_weld_image, "gradkit_synth_weld")
