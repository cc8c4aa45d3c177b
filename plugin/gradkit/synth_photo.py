"""A second evaluation set of a different kind: defects on real photographs.

``gradkit.synth`` draws procedural surfaces with OpenCV primitives; this set was built not to tune
anything on (``gradkit plan``'s faint-defect rule was found on it in the end: README).
Backgrounds are crops of photographs that ship with scikit-image (``skimage.data``: grass,
gravel, brick, moon, camera, coins — bundled in its wheel, no download), several with a strong
directional grain. Defects come from another renderer: Bézier curves rasterised at 4x and averaged
down (exact anti-aliasing, true stroke widths of 1-2.5 px), scratches mostly diagonal and
spanning ~25-60% of the image; branching cracks by midpoint displacement; pits with a shaded rim;
stains from thresholded smooth noise. Contrast is set against the local texture, so a scratch is
about as strong as the grain around it. Defect-free images and **look-alike distractors** (straight
grain lines and fibres across the image, unlabelled) make false rejects measurable. Boxes are the
tight boxes of each defect's mask above 25% coverage, as in ``gradkit.synth``.

Each image uses its own generator seeded with ``(seed, index)``; the same seed gives byte-identical
files. scikit-image is a development dependency (``pip install -e .[dev]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import CLASS_NAMES, _box_from_mask, _near, _split_of, write_yolo_dataset

__all__ = ["BACKGROUNDS", "PhotoSpec", "generate_photo_dataset", "render_photo_image"]

#: skimage.data grayscale photographs bundled in scikit-image's wheel (no network needed).
BACKGROUNDS: tuple[str, ...] = ("grass", "gravel", "brick", "moon", "camera", "coins")
_SS = 4  # supersampling factor of the curve rasteriser


@dataclass(frozen=True)
class PhotoSpec:
    """What to generate (same meaning as ``gradkit.synth.SynthSpec``).

    Attributes:
        distractors: Probability that an image carries look-alike grain lines (unlabelled).
    """

    images: int = 400
    imgsz: int = 256
    seed: int = 0
    empty_frac: float = 0.2
    max_defects: int = 3
    distractors: float = 0.5
    splits: tuple[float, float, float] = (0.7, 0.2, 0.1)
    class_names: tuple[str, ...] = CLASS_NAMES

    def __post_init__(self) -> None:
        if self.images < 3:
            raise ValueError(f"images must be >= 3 (one per split), got {self.images}")
        if not 64 <= self.imgsz <= 2048:
            raise ValueError(f"imgsz must be in [64, 2048], got {self.imgsz}")
        if not 0.0 <= self.empty_frac < 1.0 or not 0.0 <= self.distractors <= 1.0:
            raise ValueError("empty_frac must be in [0, 1) and distractors in [0, 1]")


_CACHE: dict[str, np.ndarray] = {}


def _photo(name: str) -> np.ndarray:
    if name not in _CACHE:
        try:
            from skimage import data
        except ImportError:
            raise ImportError("gradkit.synth_photo needs scikit-image: pip install 'scikit-image>=0.22'") from None
        img = getattr(data, name)()
        _CACHE[name] = (img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)).astype(np.float32) / 255.0
    return _CACHE[name]


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random crop (80-100% of the photo's short side) turned by a D4 symmetry, resized to n."""
    photo = _photo(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    h, w = photo.shape
    side = int(min(h, w) * rng.uniform(0.5, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = np.rot90(photo[y:y + side, x:x + side], int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(np.ascontiguousarray(crop), (n, n), interpolation=cv2.INTER_AREA)


def _bezier(p: np.ndarray, samples: int) -> np.ndarray:
    """Points of a Bézier curve with control points ``p`` (k x 2), by de Casteljau."""
    t = np.linspace(0.0, 1.0, samples)[:, None, None]
    pts = np.broadcast_to(p, (samples, *p.shape)).astype(np.float64)
    while pts.shape[1] > 1:
        pts = (1 - t) * pts[:, :-1] + t * pts[:, 1:]
    return pts[:, 0]


def _coverage(n: int, curves: list[tuple[np.ndarray, float]]) -> np.ndarray:
    """Anti-aliased coverage of polylines of given widths: drawn at 4x without AA, area-averaged."""
    big = np.zeros((n * _SS, n * _SS), np.uint8)
    for pts, width in curves:
        thick = max(1, round(width * _SS))
        cv2.polylines(big, [np.round(pts * _SS).astype(np.int32)], False, 255, thick, cv2.LINE_8)
    return cv2.resize(big, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _scratch(rng: np.random.Generator, n: int) -> np.ndarray:
    length = rng.uniform(0.25, 0.6) * n
    # mostly diagonal: the failing case; a quarter at any angle
    if rng.random() < 0.75:
        angle = rng.choice([np.pi / 4, 3 * np.pi / 4]) + rng.normal(0, 0.2)
    else:
        angle = rng.uniform(0, np.pi)
    c = rng.uniform(0.2, 0.8, 2) * n
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    bow = np.array([-d[1], d[0]]) * rng.uniform(-0.15, 0.15)
    pts = _bezier(np.stack([c - d, c + bow, c + d]), 200)
    return _coverage(n, [(pts, rng.uniform(1.0, 2.0))])


def _displace(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, depth: int, rough: float) -> list[np.ndarray]:
    if depth == 0:
        return [a]
    mid = (a + b) / 2 + rng.normal(0, rough * np.linalg.norm(b - a), 2)
    return _displace(rng, a, mid, depth - 1, rough) + _displace(rng, mid, b, depth - 1, rough)


def _crack(rng: np.random.Generator, n: int) -> np.ndarray:
    a = rng.uniform(0.2, 0.8, 2) * n
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.45) * n
    b = np.clip(a + length * np.array([np.cos(angle), np.sin(angle)]), 2, n - 3)
    trunk = np.array([*_displace(rng, a, b, 5, 0.18), b])
    k = int(rng.integers(len(trunk) // 3, 2 * len(trunk) // 3))
    turn = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
    end = np.clip(trunk[k] + 0.4 * length * np.array([np.cos(turn), np.sin(turn)]), 2, n - 3)
    branch = np.array([*_displace(rng, trunk[k], end, 4, 0.18), end])
    return _coverage(n, [(trunk, rng.uniform(1.2, 2.5)), (branch, 1.0)])


def _pit(rng: np.random.Generator, n: int) -> np.ndarray:
    r = rng.uniform(2.0, 5.0) * n / 256
    c = rng.uniform(0.05, 0.95, 2) * n
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    d = np.hypot(x - c[0], (y - c[1]) * rng.uniform(1.0, 1.4))
    return np.clip(r + 0.5 - d, 0, 1).astype(np.float32)


def _stain(rng: np.random.Generator, n: int) -> np.ndarray:
    cells = 6
    field = cv2.resize(rng.standard_normal((cells, cells)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    c, r = rng.uniform(0.25, 0.75, 2) * n, rng.uniform(0.05, 0.12) * n
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    envelope = np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2) / (2 * r * r))
    blob = envelope * (1 + 0.4 * field)  # irregular outline, but nothing far from the centre
    return np.clip((blob - 0.5) / 0.3, 0, 1).astype(np.float32)


_DRAW = (_scratch, _crack, _pit, _stain)
#: Contrast in units of the background's local standard deviation (sign drawn per defect).
_CONTRAST = ((1.2, 2.5), (1.2, 2.5), (2.0, 3.5), (0.8, 1.5))


def _grain(rng: np.random.Generator, n: int) -> np.ndarray:
    """Look-alike distractor: parallel straight lines crossing the whole image (no label)."""
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)]) * 2 * n
    normal = np.array([-d[1], d[0]]) / np.linalg.norm(d)
    curves = []
    for offset in rng.uniform(-0.5, 0.5, int(rng.integers(2, 6))) * n:
        c = np.array([n / 2, n / 2]) + offset * normal
        curves.append((np.stack([c - d, c + d]), rng.uniform(1.0, 2.0)))
    return _coverage(n, curves)


def _local_std(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    return max(float(img[y0:y1, x0:x1].std()), 0.02)


def render_photo_image(spec: PhotoSpec, index: int) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """Render one image.

    Returns:
        The image (HxWx3 uint8, identical channels), YOLO labels ``(class, xc, yc, w, h)`` and the
        defect masks (coverage in [0, 1]) in label order.
    """
    rng = np.random.default_rng([spec.seed, index])
    n = spec.imgsz
    img = _background(rng, n)
    labels, masks, boxes = [], [], []
    if rng.random() < spec.distractors:
        grain = _grain(rng, n)
        img = img + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2) * float(img.std()) * grain
    if rng.random() >= spec.empty_frac:
        for _ in range(int(rng.integers(1, spec.max_defects + 1))):
            cls = int(rng.integers(len(_DRAW)))
            mask = _DRAW[cls](rng, n)
            box = _box_from_mask(mask)
            if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if _near(box, boxes):
                continue  # no overlapping defects: each box is the mask of one defect only
            lo, hi = _CONTRAST[cls]
            img = img + rng.choice([-1, 1]) * rng.uniform(lo, hi) * _local_std(img, box) * mask
            boxes.append(box)
            masks.append(mask)
            x0, y0, x1, y1 = box
            labels.append((cls, (x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n))
    img = img + rng.normal(0, rng.uniform(0.005, 0.02), img.shape)
    gray = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    return cv2.merge([gray, gray, gray]), labels, masks


def generate_photo_dataset(out: str | Path, spec: PhotoSpec | None = None) -> Path:
    """Write the photo-background set in YOLO layout; returns its ``data.yaml`` (absolute ``path``)."""
    spec = spec or PhotoSpec()
    provenance = {"gradkit_synth_photo": {"images": spec.images, "imgsz": spec.imgsz, "seed": spec.seed}}
    return write_yolo_dataset(out, spec.images, lambda i: render_photo_image(spec, i)[:2],
                              lambda i: _split_of(i, spec), spec.class_names, provenance)
