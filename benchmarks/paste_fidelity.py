"""How much of what copy-paste transfers is the defect, and what the ``min_defect_share`` gate keeps.

    python benchmarks/paste_fidelity.py [--images 200 --imgsz 256 --min-share 0.5]

On the photographed set (``gradkit.synth_photo``) every defect's exact coverage mask is known, so the
true share of the blend's transferred energy that is the defect can be measured: the blend is pasted
onto a flat gray destination, and the share of the transferred signal's energy explained by the
defect's own shape (its least-squares projection onto the coverage mask; the texture, uncorrelated
with the mask, projects to about nothing) is set against the estimate the gate uses
(``defect_share``: from the crop alone, against its background ring). On the design set
(``gradkit.synth``, no masks) only the estimate and the gate's pass rate are printed.
"""

from __future__ import annotations

import argparse

import numpy as np

from gradkit.augment.copy_paste import _blend
from gradkit.config import CopyPasteConfig
from gradkit.data.standout import crop_window, defect_share, screening_crop
from gradkit.synth import SynthSpec, render_image
from gradkit.synth_photo import PhotoSpec, render_photo_image

MARGIN = CopyPasteConfig().margin


def _xyxy(label) -> tuple[float, float, float, float]:
    _, xc, yc, bw, bh = label
    return xc - bw / 2, yc - bh / 2, xc + bw / 2, yc + bh / 2


def _crops(img: np.ndarray, labels):
    """Per defect: the crop, its inner box, its window in the image and the estimated share, judged as
    ``DefectBank.screen`` judges it."""
    out = []
    for label in labels:
        others = [_xyxy(o) for o in labels if o is not label]
        crop, inner, exclude = screening_crop(img, _xyxy(label), others, MARGIN)
        window = crop_window(_xyxy(label), img.shape, MARGIN)[4:]
        out.append((crop, inner, window, defect_share(crop, inner, MARGIN, exclude)))
    return out


def _true_share(crop: np.ndarray, inner, mask: np.ndarray) -> float:
    signal = _blend(np.full_like(crop, 128.0), crop, inner, MARGIN)[..., 0].astype(np.float64) - 128.0
    shape = mask.astype(np.float64)
    along = float((signal * shape).sum()) ** 2 / max(float((shape**2).sum()), 1e-12)  # projection's energy
    return along / max(float((signal**2).sum()), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--min-share", type=float, default=CopyPasteConfig().min_defect_share)
    args = ap.parse_args()
    size = max(args.images, 300)  # 300 and seed 1000: the sets of defect_quality.py
    photo = PhotoSpec(images=size, imgsz=args.imgsz, seed=1000)
    synth = SynthSpec(images=size, imgsz=args.imgsz, seed=1000)
    rows = {"photo": [], "synth": []}  # (class, estimated share, true share or nan)
    for i in range(args.images):
        img, labels, masks = render_photo_image(photo, i)
        for label, mask, (crop, inner, (cx0, cy0, cx1, cy1), share) in zip(labels, masks, _crops(img, labels),
                                                                             strict=True):
            rows["photo"].append((int(label[0]), share, _true_share(crop, inner, mask[cy0:cy1, cx0:cx1])))
        img, labels = render_image(synth, i)
        for label, (_, _, _, share) in zip(labels, _crops(img, labels), strict=True):
            rows["synth"].append((int(label[0]), share, float("nan")))
    names = photo.class_names
    print(f"{args.images} images per set at {args.imgsz} px, margin {MARGIN}, gate min_defect_share {args.min_share}")
    print("| set | class | defects | estimated share (median) | passes the gate "
          "| true share: passed / refused (median) |")
    print("|---|---|---|---|---|---|")
    for set_name, data in rows.items():
        a = np.array(data)
        for k, name in enumerate(names):
            s = a[a[:, 0] == k]
            ok = s[:, 1] >= args.min_share
            true = "–" if set_name == "synth" else (
                f"{np.median(s[ok, 2]) if ok.any() else float('nan'):.2f} / "
                f"{np.median(s[~ok, 2]) if (~ok).any() else float('nan'):.2f}")
            print(f"| {set_name} | {name} | {len(s)} | {np.median(s[:, 1]):.2f} | {ok.mean():.0%} | {true} |")
    a = np.array(rows["photo"])
    mostly_texture, mostly_defect, ok = a[:, 2] < 0.2, a[:, 2] > 0.5, a[:, 1] >= args.min_share
    print(f"photographs, all classes: {np.mean(~ok[mostly_texture]):.0%} of the {mostly_texture.sum()} pastes that "
          f"would be mostly texture (true share < 0.2) are refused, {np.mean(ok[mostly_defect]):.0%} of the "
          f"{mostly_defect.sum()} mostly defect (> 0.5) kept")


if __name__ == "__main__":
    main()
