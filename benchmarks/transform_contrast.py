"""What each augmentation transform leaves of a defect's contrast, per class, on the photographed set.

    python benchmarks/transform_contrast.py [--images 160 --imgsz 256]

``gradkit.synth_photo`` returns every defect's exact mask, so a defect's contrast-to-noise ratio
(CNR) can be measured: |mean inside the mask - mean of a ring around it| / std of the ring. Each
transform of the ``defect-sensor`` preset (``defect`` plus blur and JPEG) is applied alone with p=1
over its whole parameter range (a fresh draw per image), and the ratio CNR after / CNR before is
reported per class: median and 10th percentile (the defects it hurts most). D4 is left out: flips
and quarter turns move a defect without changing its pixels.
"""

from __future__ import annotations

import argparse

import albumentations as A
import cv2
import numpy as np

from gradkit.augment.pipeline import PRESETS
from gradkit.synth_photo import PhotoSpec, render_photo_image

RING_KERNEL = np.ones((7, 7), np.uint8)


def cnr(image: np.ndarray, mask: np.ndarray) -> float:
    """Contrast-to-noise ratio of the defect covering ``mask > 0.5`` (NaN when too small to measure)."""
    gray = image[..., 0].astype(np.float32)
    inside = (mask > 0.5).astype(np.uint8)
    near = cv2.dilate(inside, RING_KERNEL) > 0
    ring = (cv2.dilate(inside, RING_KERNEL, iterations=2) > 0) & ~near
    if inside.sum() < 2 or ring.sum() < 10:
        return float("nan")
    return float(abs(gray[inside > 0].mean() - gray[ring].mean()) / (gray[ring].std() + 1e-3))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1000, help="the photographed set's seed (defect_quality.py: 1000)")
    args = ap.parse_args()
    spec = PhotoSpec(images=max(args.images, 3), imgsz=args.imgsz, seed=args.seed)
    names = spec.class_names
    samples = []  # (image, class, mask) of every defect
    for i in range(args.images):
        img, labels, masks = render_photo_image(spec, i)
        samples += [(img, int(label[0]), mask) for label, mask in zip(labels, masks, strict=True)]
    before = [cnr(img, m) for img, _, m in samples]
    measured = [(s, b) for s, b in zip(samples, before, strict=True) if b == b and b > 0]
    print(f"{len(measured)} defects on {args.images} photographed images at {args.imgsz} px")
    print("| transform | " + " | ".join(f"{n}: median (p10)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    print("| CNR before | " + " | ".join(
        f"{np.median([b for (_, c, _), b in measured if c == k]):.2f}" for k in range(len(names))) + " |")
    for t in PRESETS["defect-sensor"]:
        name = t["__class_fullname__"]
        if name == "D4":
            continue
        transform = getattr(A, name)(p=1.0, **{k: v for k, v in t.items() if k not in ("__class_fullname__", "p")})
        transform.set_random_seed(0)
        ratios: dict[int, list[float]] = {k: [] for k in range(len(names))}
        for (img, c, mask), b in measured:
            ratios[c].append(cnr(transform(image=img)["image"], mask) / b)
        cells = [f"{np.nanmedian(r):.2f} ({np.nanpercentile(r, 10):.2f})" for r in ratios.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
