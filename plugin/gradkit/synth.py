"""Seeded synthetic defect dataset: the offline default for the demo, the tests and the notebooks.

Every image is grayscale (stored as 3 identical channels, as inspection cameras deliver after
debayering; ``SynthSpec.colour_frac`` tints a share of them) and is rendered from one of several textured
surfaces under uneven illumination and sensor noise. Defects are drawn as masks first and composited
onto the surface, so the YOLO boxes are the tight bounding boxes of the visible defect pixels.

Each image uses its own generator seeded with ``(seed, index)``, so images do not depend on the
order of generation and the same seed always gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from tqdm import tqdm

from gradkit.synth_spec import CLASS_NAMES, SYNTH_DIR, SizedSpec, SynthSpec

__all__ = ["CLASS_NAMES", "SURFACES", "SYNTH_DIR", "SizedSpec", "SynthSpec", "generate_dataset", "made_by",
           "provenance", "render_image"]

SURFACES: tuple[str, ...] = ("brushed", "fabric", "cast", "pcb")
_SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- surfaces
def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def _surface(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """A float32 surface in roughly [0, 1]."""
    if kind == "brushed":  # rolled/brushed steel: fine streaks along the rolling direction
        streaks = rng.standard_normal((n, n)).astype(np.float32)
        streaks = cv2.blur(streaks, (max(3, n // 6), 1))
        img = 0.55 + 0.12 * streaks / (streaks.std() + 1e-6) + 0.05 * _smooth_noise(rng, n, 4)
    elif kind == "fabric":  # woven textile: two crossing periodic threads
        period = rng.uniform(5.0, 9.0)
        y, x = np.mgrid[0:n, 0:n].astype(np.float32)
        weave = np.sin(2 * np.pi * x / period) * np.sin(2 * np.pi * y / period)
        img = 0.5 + 0.08 * weave + 0.04 * _smooth_noise(rng, n, 8)
    elif kind == "cast":  # cast or painted surface: mottled low-frequency texture plus grain
        img = 0.5 + 0.07 * _smooth_noise(rng, n, 6) + 0.04 * _smooth_noise(rng, n, 24)
    else:  # pcb: dark laminate with bright straight traces and pads
        img = np.full((n, n), 0.3, np.float32) + 0.03 * _smooth_noise(rng, n, 12)
        for _ in range(rng.integers(4, 10)):
            p = rng.integers(0, n, 2)
            if rng.random() < 0.5:
                q = (int(rng.integers(0, n)), int(p[1]))
            else:
                q = (int(p[0]), int(rng.integers(0, n)))
            cv2.line(img, (int(p[0]), int(p[1])), q, 0.5, int(rng.integers(1, 3)))
        for _ in range(rng.integers(2, 6)):
            c = rng.integers(0, n, 2)
            cv2.circle(img, (int(c[0]), int(c[1])), int(rng.integers(2, 5)), 0.6, -1)
    return img.astype(np.float32)


def _illumination(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uneven lighting: a tilted ramp times an off-centre vignette."""
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) / n
    angle = rng.uniform(0, 2 * np.pi)
    ramp = 1.0 + rng.uniform(0.1, 0.35) * ((x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle))
    cx, cy = rng.uniform(0.2, 0.8, 2)
    vignette = 1.0 - rng.uniform(0.1, 0.3) * ((x - cx) ** 2 + (y - cy) ** 2)
    return ramp * vignette * rng.uniform(0.8, 1.2)


def _sensor_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Additive Gaussian read noise of a few grey levels."""
    return rng.normal(0, rng.uniform(0.01, 0.035), (n, n)).astype(np.float32)


# --------------------------------------------------------------------------- defects
def _draw_scratch(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Long, thin, nearly straight line (aspect ratio often > 5)."""
    n = mask.shape[0]
    length = rng.uniform(0.3, 0.7) * n
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.2, 0.8, 2) * n
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    bend = rng.uniform(-0.05, 0.05) * n
    pts = np.array(
        [[cx - dx, cy - dy], [cx - bend * np.sin(angle), cy + bend * np.cos(angle)], [cx + dx, cy + dy]]
    )
    cv2.polylines(mask, [np.round(pts).astype(np.int32)], False, 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)


def _draw_crack(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Jagged random walk with a branch: medium-sized, irregular."""
    n = mask.shape[0]
    p = rng.uniform(0.25, 0.75, 2) * n
    heading = rng.uniform(0, 2 * np.pi)
    steps = int(rng.integers(8, 16))
    step_len = n * rng.uniform(0.015, 0.03)
    pts = [p.copy()]
    for _ in range(steps):
        heading += rng.normal(0, 0.6)
        p = p + step_len * np.array([np.cos(heading), np.sin(heading)])
        pts.append(p.copy())
    walk = np.clip(np.round(np.array(pts)), 0, n - 1).astype(np.int32)
    cv2.polylines(mask, [walk], False, 1.0, 2, cv2.LINE_AA)
    start = walk[len(walk) // 2].astype(np.float64)
    branch = [start]
    heading += rng.choice([-1.0, 1.0]) * 0.9
    for _ in range(steps // 2):
        heading += rng.normal(0, 0.6)
        start = start + step_len * np.array([np.cos(heading), np.sin(heading)])
        branch.append(start.copy())
    cv2.polylines(mask, [np.clip(np.round(np.array(branch)), 0, n - 1).astype(np.int32)], False, 1.0, 1)


def _draw_pit(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Tiny round cavity: a few pixels across (well below 1% of the image area)."""
    n = mask.shape[0]
    c = np.round(rng.uniform(0.05, 0.95, 2) * n).astype(int)
    r = max(2, round(n * rng.uniform(0.008, 0.02)))
    cv2.ellipse(mask, (int(c[0]), int(c[1])), (r, max(2, int(r * rng.uniform(0.7, 1.0)))),
                float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)


def _draw_stain(rng: np.random.Generator, mask: np.ndarray) -> None:
    """Large soft blob with an irregular outline (inclusion, oil or rust stain)."""
    n = mask.shape[0]
    c = rng.uniform(0.2, 0.8, 2) * n
    r = n * rng.uniform(0.06, 0.14)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    radii = r * rng.uniform(0.6, 1.3, 12)
    pts = np.stack([c[0] + radii * np.cos(angles), c[1] + radii * np.sin(angles)], 1)
    cv2.fillPoly(mask, [np.clip(np.round(pts), 0, n - 1).astype(np.int32)], 1.0, cv2.LINE_AA)
    cv2.GaussianBlur(mask, (0, 0), sigmaX=max(1.0, r / 6), dst=mask)
    mask /= max(float(mask.max()), 1e-6)


_DRAW = (_draw_scratch, _draw_crack, _draw_pit, _draw_stain)
# Contrast of each class against the surface (sign chosen per defect: dark or bright).
_CONTRAST = ((0.25, 0.4), (0.3, 0.45), (0.3, 0.45), (0.15, 0.3))
#: Range of the factor on ``_CONTRAST`` of a faint defect (``SynthSpec.faint_frac``).
FAINT_SCALE = (0.1, 0.3)
#: Classes ``SynthSpec.relief_frac`` may draw as a relief (damage to the surface's shape; a stain is a deposit).
RELIEF_CLASSES = (0, 1, 2)
#: Range of a colour image's surface gain per channel, and of a stroke's or stain's own colour per channel
#: (``SynthSpec.colour_frac``): a tinted metal, laminate or paint, and a deposit that is not its shade.
SURFACE_GAIN = (0.5, 1.3)
DEFECT_TINT = (0.3, 1.7)


def _relief_shading(mask: np.ndarray, azimuth: float) -> np.ndarray:
    """How a groove or crater of the mask's shape shows under a light from ``azimuth`` (radians, in the image
    plane; 0 lights from +x): Lambertian shading's first-order change, the slope of the sunk surface towards the
    light, scaled so that its largest magnitude is 1 (the flank facing the light bright, the other dark). A
    stroke that runs along the light shows little but its ends, as a groove lit along its length does."""
    gy, gx = np.gradient(-mask)
    change = -(gx * np.cos(azimuth) + gy * np.sin(azimuth))
    return (change / max(float(np.abs(change).max()), 1e-6)).astype(np.float32)


def _box_from_mask(mask: np.ndarray, level: float = 0.25) -> tuple[int, int, int, int] | None:
    """Tight pixel box (x0, y0, x1, y1) of the visible part of a defect, exclusive max."""
    ys, xs = np.nonzero(mask > level)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _near(box: tuple[int, int, int, int], boxes: Sequence[tuple[int, int, int, int]], margin: int = 0) -> bool:
    """Whether ``box`` overlaps, or comes within ``margin`` px of, any of ``boxes`` (exclusive-max pixel
    boxes): the evaluation sets keep one defect per box."""
    return any(min(box[2], b[2]) + margin > max(box[0], b[0]) and min(box[3], b[3]) + margin > max(box[1], b[1])
               for b in boxes)


def _place_defects(rng: np.random.Generator, img: np.ndarray, spec: SizedSpec,
                   draw: Callable[[np.random.Generator, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
                   margin: int = 0) -> tuple[np.ndarray, list[int], list[np.ndarray]]:
    """Up to ``spec.max_defects`` defects of random classes on ``img`` (none on ``spec.empty_frac`` of the
    images), each drawn by ``draw(rng, img, cls) -> (image with it, its mask)``. A defect whose mask is empty or
    whose box comes within ``margin`` px of a kept one is left out, its random numbers drawn all the same.
    Returns the image, the kept classes and their masks."""
    masks, boxes, classes = [], [], []
    if rng.random() >= spec.empty_frac:
        for _ in range(int(rng.integers(1, spec.max_defects + 1))):
            cls = int(rng.integers(len(CLASS_NAMES)))
            drawn, mask = draw(rng, img, cls)
            box = _box_from_mask(mask)
            if box is None or _near(box, boxes, margin):
                continue
            img = drawn
            boxes.append(box)
            masks.append(mask)
            classes.append(cls)
    return img, classes, masks


def _gray_frame(img: np.ndarray, classes: list[int], masks: list[np.ndarray],
                transposed: bool) -> tuple[np.ndarray, list[tuple], list[np.ndarray]]:
    """A gray float image in [0, 1] (drawn on a transposed frame if ``transposed``) as the generators return
    it: H x W x 3 uint8 with three equal channels, YOLO labels ``(class, xc, yc, w, h)`` of the masks' tight
    boxes, and the masks, all in the image's own orientation."""
    if transposed:
        img, masks = img.T, [m.T for m in masks]
    height, width = img.shape
    gray = np.clip(img * 255.0, 0, 255).astype(np.uint8)
    labels = []
    for cls, mask in zip(classes, masks, strict=True):
        x0, y0, x1, y1 = _box_from_mask(mask)
        labels.append((cls, (x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height))
    return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2)), labels, [np.ascontiguousarray(m) for m in masks]


def _write_sized_dataset(out: str | Path, spec: SizedSpec, render: Callable[[SizedSpec, int], tuple],
                         tag: str) -> Path:
    """Write a ``width`` x ``height`` set rendered by ``render(spec, i) -> (image, labels, ...)`` in YOLO layout,
    its provenance under ``tag``; returns its ``data.yaml``."""
    provenance = {tag: {"images": spec.images, "width": spec.width, "height": spec.height, "seed": spec.seed}}
    return write_yolo_dataset(out, spec.images, lambda i: render(spec, i)[:2], lambda i: _split_of(i, spec),
                              CLASS_NAMES, provenance)


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    area = (x1 - x0) * (y1 - y0)
    for a0, b0, a1, b1 in others:
        inter = max(0, min(x1, a1) - max(x0, a0)) * max(0, min(y1, b1) - max(y0, b0))
        if inter > 0.3 * min(area, (a1 - a0) * (b1 - b0)):
            return True
    return False


def render_image(spec: SynthSpec, index: int) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """Render one image and its labels.

    Returns:
        The image as HxWx3 uint8 (identical channels unless ``spec.colour_frac`` tinted it) and a list of
        YOLO labels ``(class, x_center, y_center, width, height)`` normalised to [0, 1].
    """
    rng = np.random.default_rng([spec.seed, index])
    faint_rng = np.random.default_rng([spec.seed, index, 1])  # its own stream: see SynthSpec.faint_frac
    relief_rng = np.random.default_rng([spec.seed, index, 2])  # relief_frac's own stream
    colour_rng = np.random.default_rng([spec.seed, index, 3])  # colour_frac's own stream
    n = spec.imgsz
    surface = _surface(rng, SURFACES[int(rng.integers(len(SURFACES)))], n)
    gain = colour_rng.uniform(*SURFACE_GAIN, 3).astype(np.float32) if colour_rng.random() < spec.colour_frac else None
    if gain is not None:
        surface = surface[..., None] * gain
    labels: list[tuple[int, float, float, float, float]] = []
    boxes: list[tuple[int, int, int, int]] = []
    if rng.random() >= spec.empty_frac:
        weights = np.asarray(spec.class_weights, dtype=np.float64)
        weights = weights / weights.sum()
        for _ in range(int(rng.integers(1, spec.max_defects + 1))):
            for _attempt in range(10):
                cls = int(rng.choice(len(weights), p=weights))
                mask = np.zeros((n, n), np.float32)
                _DRAW[cls](rng, mask)
                relief = cls in RELIEF_CLASSES and relief_rng.random() < spec.relief_frac
                # what the defect changes, signed: its mask, or its relief's shading (one flank lit, one in shade)
                shape = _relief_shading(mask, relief_rng.uniform(0, 2 * np.pi)) if relief else mask
                box = _box_from_mask(np.abs(shape))
                if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2 or _overlaps(box, boxes):
                    continue
                lo, hi = _CONTRAST[cls]
                strength = rng.uniform(lo, hi) * (1 if rng.random() < 0.25 else -1)
                if spec.faint_frac and faint_rng.random() < spec.faint_frac:
                    strength *= faint_rng.uniform(*FAINT_SCALE)
                surface += _defect_layer(shape, strength, relief, gain, colour_rng)
                boxes.append(box)
                x0, y0, x1, y1 = box
                labels.append((cls, (x0 + x1) / 2 / n, (y0 + y1) / 2 / n, (x1 - x0) / n, (y1 - y0) / n))
                break
    return _photograph(rng, surface), labels


def _defect_layer(shape: np.ndarray, strength: float, relief: bool, gain: np.ndarray | None,
                  colour_rng: np.random.Generator) -> np.ndarray:
    """What a defect adds to the surface: ``strength`` times its ``shape`` (its mask, or if ``relief`` its signed
    shading), per channel on a colour image (``gain``: the surface's). A relief takes the size of ``strength``
    only, so that the flank facing the light stays the bright one, and shows in the surface's colour (shading
    scales what is there); a stroke or stain takes a tint of its own. A bright defect on a bright tinted surface
    can reach the sensor's top and clip, as it would in a camera."""
    if relief:
        strength = abs(strength) * (1.0 if gain is None else gain)
    elif gain is not None:
        strength = strength * colour_rng.uniform(*DEFECT_TINT, 3).astype(np.float32)
    return strength * (shape if gain is None else shape[..., None])


def _photograph(rng: np.random.Generator, surface: np.ndarray) -> np.ndarray:
    """The surface (H x W grey, or H x W x 3 colour) under uneven light with sensor noise, as H x W x 3 uint8."""
    n = surface.shape[0]
    light = _illumination(rng, n)
    if surface.ndim == 2:
        img = surface * light + _sensor_noise(rng, n)
        gray = np.clip(img * 255.0, 0, 255).astype(np.uint8)
        return cv2.merge([gray, gray, gray])
    img = surface * light[..., None] + np.stack([_sensor_noise(rng, n) for _ in range(3)], axis=2)
    return np.clip(img * 255.0, 0, 255).astype(np.uint8)


def _split_of(index: int, spec: SynthSpec) -> str:
    n_train = round(spec.images * spec.splits[0])
    n_val = round(spec.images * spec.splits[1])
    n_train = min(max(n_train, 1), spec.images - 2)
    n_val = min(max(n_val, 1), spec.images - n_train - 1)
    return "train" if index < n_train else "val" if index < n_train + n_val else "test"


def write_yolo_dataset(out: str | Path, images: int, render: Callable[[int], tuple[np.ndarray, list[tuple]]],
                       split_of: Callable[[int], str], names: Sequence[str], provenance: dict[str, Any],
                       progress: bool = False) -> Path:
    """Write ``images`` images, ``render(i) -> (image, YOLO labels)``, in YOLO layout; return ``data.yaml``.
    ``out`` must be empty or new (:class:`gradkit.data.output.OutputRefused` otherwise).

    Layout: ``out/images/{train,val,test}/*.png``, ``out/labels/...``, ``out/data.yaml`` with an
    absolute ``path`` so Ultralytics resolves it from any working directory, the class ``names`` and
    ``provenance`` (how the set was generated). Shared by the six generated evaluation sets.
    """
    from gradkit.data.output import OutputRefused

    root = Path(out).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise OutputRefused(f"out={root} is not empty: a dataset is written into an empty or new folder, so that no "
                         "old image or label mixes with the new ones; remove it or choose another out=")
    for split in _SPLITS:
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i in tqdm(range(images), desc=f"gradkit synth {root.name}", disable=not progress, unit="img"):
        img, labels = render(i)
        split, stem = split_of(i), f"{i:06d}"
        cv2.imwrite(str(root / "images" / split / f"{stem}.png"), img)
        lines = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in labels)
        (root / "labels" / split / f"{stem}.txt").write_text(lines, encoding="utf-8")
    data = {"path": str(root), "train": "images/train", "val": "images/val", "test": "images/test",
            "names": dict(enumerate(names)), **provenance}
    yaml_path = root / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path


def generate_dataset(out: str | Path, spec: SynthSpec | None = None, progress: bool = True) -> Path:
    """Write a YOLO-format dataset (``write_yolo_dataset``) and return the path of its ``data.yaml``."""
    spec = spec or SynthSpec()
    return write_yolo_dataset(out, spec.images, lambda i: render_image(spec, i), lambda i: _split_of(i, spec),
                              spec.class_names, {"gradkit_synth": provenance(spec)}, progress)


#: The options added after sets had been written, at the value such a set was made with (it lacks their keys).
_ADDED_OPTIONS_AT_ZERO = {"faint_frac": 0.0, "relief_frac": 0.0, "colour_frac": 0.0}


def provenance(spec: SynthSpec) -> dict[str, Any]:
    """How a set was generated, as its ``data.yaml`` keeps it under ``gradkit_synth``."""
    return {"images": spec.images, "imgsz": spec.imgsz, "seed": spec.seed, "empty_frac": spec.empty_frac,
            "class_weights": list(spec.class_weights), "faint_frac": spec.faint_frac,
            "relief_frac": spec.relief_frac, "colour_frac": spec.colour_frac}


def made_by(data: Any, spec: SynthSpec) -> bool:
    """Whether a loaded ``data.yaml`` says it was generated with ``spec`` (a set from before ``faint_frac``,
    ``relief_frac`` or ``colour_frac`` existed, which has no such key, was made at 0)."""
    made = data.get("gradkit_synth") if isinstance(data, dict) else None
    return isinstance(made, dict) and {**_ADDED_OPTIONS_AT_ZERO, **made} == provenance(spec)
