"""How much of a defect's box the assigner's candidate cells actually hold of the defect (no training).

Ultralytics' task-aligned assigner takes as candidates for a ground-truth box every anchor whose centre
lies inside the box (sides below the second stride floored to it), and makes the best ``topk`` of them
positives by ``score^0.5 * IoU^6``. A thin diagonal line's box is 95% background ("Why thin defects
fail"), so most candidate cells hold no defect at all: the classifier is asked to call plain texture a
scratch. This script counts it on the evaluation sets whose renderers return each defect's exact mask
(``gradkit.synth_photo``, ``synth_surface``, ``synth_material``; ``gradkit.synth`` keeps no masks),
with the sets' own seed and size as ``benchmarks/defect_quality.py`` builds them, at stride 8 (P3).

It also asks whether the pixels alone could tell the defect's cells apart, as a plugin would have to
without masks: a cell is *picked* when it holds a pixel of the box that stands out from the ring of
texture around the box (``gradkit.data.defect_cells``, with the copy-paste gate's measure, at
``--alpha`` or more; what ``assign.defect_cells`` trains with). Per class: the share of candidate cells that hold
the defect (what the assigner starts from), and of the picked cells the share that hold it
(precision), the share of the defect's candidate cells picked (recall) and the boxes where nothing
was picked.

    python benchmarks/assigner_cells.py --images 100 --imgsz 256
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from gradkit.data.defect_cells import DEFECT_ALPHA, standing_out_pixels
from gradkit.synth import CLASS_NAMES
from gradkit.synth_material import MaterialSpec, render_material_image
from gradkit.synth_photo import PhotoSpec, render_photo_image
from gradkit.synth_surface import SurfaceSpec, render_surface_image

STRIDES = [8, 16, 32]  # yolo26n's: the assigner floors box sides below the second to it
STRIDE = STRIDES[0]  # the finest level, counted here
COVERED = 0.25  # a pixel belongs to the defect above this mask coverage (the renderers' box rule)


def renderers(imgsz: int) -> dict:
    """The three sets as benchmarks/defect_quality.py builds them (seed 1000): name -> (render(i), class names)."""
    photo = PhotoSpec(images=1000, imgsz=imgsz, seed=1000)
    surface = SurfaceSpec(images=1000, width=imgsz * 5 // 4, height=imgsz, seed=1000)
    material = MaterialSpec(images=1000, width=round(imgsz * 4 / 3 / 8) * 8, height=imgsz, seed=1000)
    return {"photo": (lambda i: render_photo_image(photo, i), CLASS_NAMES),
            "surface": (lambda i: render_surface_image(surface, i), CLASS_NAMES),
            "material": (lambda i: render_material_image(material, i), CLASS_NAMES)}


def candidate_cells(box_px: tuple[float, float, float, float], shape: tuple[int, int]) -> list[tuple[int, int]]:
    """(row, col) of the stride-8 cells Ultralytics' own assigner (yolo26n's strides) takes as candidates."""
    import torch
    from ultralytics.utils.tal import TaskAlignedAssigner

    rows, cols = shape[0] // STRIDE, shape[1] // STRIDE
    centres = torch.tensor([((c + 0.5) * STRIDE, (r + 0.5) * STRIDE) for r in range(rows) for c in range(cols)])
    inside = TaskAlignedAssigner(stride=STRIDES).select_candidates_in_gts(
        centres, torch.tensor([[box_px]], dtype=torch.float32), torch.ones(1, 1, 1))
    return [divmod(int(i), cols) for i in torch.nonzero(inside[0, 0]).flatten()]


def cells_holding(pixels: np.ndarray) -> set[tuple[int, int]]:
    """The stride-8 cells holding at least one True pixel of an image-sized mask."""
    ys, xs = np.nonzero(pixels)
    return set(zip((ys // STRIDE).tolist(), (xs // STRIDE).tolist(), strict=True))


def measure(render, images: int, alpha: float) -> dict[int, list[tuple[int, float, float | None, float | None]]]:
    """Per class, per box: (candidate cells, share of them holding the defect, precision, recall of the picked)."""
    out: dict[int, list] = defaultdict(list)
    for i in range(images):
        img, labels, masks = render(i)
        h, w = img.shape[:2]
        boxes = [(xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2) for _, xc, yc, bw, bh in labels]
        for k, ((cls, *_), mask, box) in enumerate(zip(labels, masks, boxes, strict=True)):
            cand = set(candidate_cells((box[0] * w, box[1] * h, box[2] * w, box[3] * h), (h, w)))
            if not cand:
                continue
            truth = cells_holding(mask > COVERED) & cand
            picked = cells_holding(standing_out_pixels(img, boxes, k, alpha)) & cand
            precision = len(picked & truth) / len(picked) if picked else None
            recall = len(picked & truth) / len(truth) if truth else None
            out[int(cls)].append((len(cand), len(truth) / len(cand), precision, recall))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--alpha", type=float, default=DEFECT_ALPHA, help="standing-out level a picked pixel needs (0..1)")
    args = ap.parse_args()
    print(f"stride {STRIDE}; per class, medians over boxes ({args.images} images per set at {args.imgsz} px high)")
    print("| set | class | boxes | candidate cells | share holding the defect | picked: precision | picked: recall "
          "| boxes with none picked |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (render, classes) in renderers(args.imgsz).items():
        for cls, rows in sorted(measure(render, args.images, args.alpha).items()):
            share = [s for _, s, _, _ in rows]
            prec = [p for _, _, p, _ in rows if p is not None]
            rec = [r for _, _, _, r in rows if r is not None]
            print(f"| {name} | {classes[cls]} | {len(rows)} | {np.median([n for n, *_ in rows]):.0f} | "
                  f"{np.median(share):.2f} | "
                  f"{np.median(prec) if prec else float('nan'):.2f} | {np.median(rec) if rec else float('nan'):.2f} | "
                  f"{sum(p is None for _, _, p, _ in rows) / len(rows):.0%} |")


if __name__ == "__main__":
    main()
