"""Why thin defects fail: measurements on rendered lines, no training (seconds on a CPU).

    python benchmarks/thin_defects.py

Prints four Markdown tables (README, "Why thin defects fail"):
1. how much of a thin line's box is background, by angle and width;
2. what a stride-s feature cell sees of the line: the largest share of any s x s cell it covers
   (the line's contrast diluted by average pooling over the cell);
3. what augmentation and resizing leave of the line's contrast (peak |difference| along the line
   between the transformed image with and without the line, over the drawn contrast);
4. Ultralytics' task-aligned assigner: candidate anchors inside the box at each stride (its own
   ``select_candidates_in_gts``), and the IoU left after a 1-pixel error (the alignment metric uses IoU^6).
Lines are drawn by ``gradkit.synth_photo``'s 4x-supersampled renderer at 256 px.
"""

from __future__ import annotations

import cv2
import numpy as np

from gradkit.synth_photo import _coverage

N = 256
LENGTH = 80.0
CONTRAST = 60.0
BACKGROUND = 120.0


def line_mask(width: float, angle_deg: float, n: int = N, length: float = LENGTH) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    d = np.array([np.cos(a), np.sin(a)]) * length / 2
    c = np.array([n / 2, n / 2]) + 0.3
    return _coverage(n, [(np.stack([c - d, c + d]), width)])


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > 0.25)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def background_share(mask: np.ndarray) -> float:
    x0, y0, x1, y1 = box_of(mask)
    return 1.0 - float(mask[y0:y1, x0:x1].sum()) / ((x1 - x0) * (y1 - y0))


def best_cell_share(mask: np.ndarray, stride: int) -> float:
    """Largest mean coverage of any stride x stride cell on the stride grid (as pooling sees it)."""
    n = mask.shape[0] - mask.shape[0] % stride
    cells = mask[:n, :n].reshape(n // stride, stride, n // stride, stride).mean(axis=(1, 3))
    return float(cells.max())


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    _, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)


TRANSFORMS = {
    "Gaussian blur 3x3 (preset: 3-7)": lambda im: cv2.GaussianBlur(im, (3, 3), 0),
    "Gaussian blur 7x7": lambda im: cv2.GaussianBlur(im, (7, 7), 0),
    "JPEG q95": lambda im: _jpeg(im, 95),
    "JPEG q60 (preset: 60-95)": lambda im: _jpeg(im, 60),
    "resize 0.75x (e.g. 256 -> 192 px) and back": lambda im: cv2.resize(
        cv2.resize(im, (192, 192), interpolation=cv2.INTER_AREA), (N, N), interpolation=cv2.INTER_LINEAR),
    "resize 0.5x (e.g. 512 -> 256 px) and back": lambda im: cv2.resize(
        cv2.resize(im, (128, 128), interpolation=cv2.INTER_AREA), (N, N), interpolation=cv2.INTER_LINEAR),
}


def contrast_left(width: float, transform, angle: float = 45.0, seed: int = 0) -> float:
    """Peak |T(line) - T(no line)| along the line over the drawn contrast (mean of 5 noise draws)."""
    mask = line_mask(width, angle)
    out = []
    for k in range(5):
        noise = np.random.default_rng([seed, k]).normal(0, 2, (N, N))
        plain = np.clip(BACKGROUND + noise, 0, 255).astype(np.uint8)
        lined = np.clip(BACKGROUND + noise + CONTRAST * mask, 0, 255).astype(np.uint8)
        diff = np.abs(transform(lined).astype(np.float32) - transform(plain).astype(np.float32))
        near = cv2.dilate((mask > 0.25).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        # a robust peak: the 90th percentile along the line, not a single lucky pixel
        out.append(float(np.percentile(diff[near], 90)) / CONTRAST)
    return float(np.mean(out))


def assigner_candidates(box: tuple[float, float, float, float]) -> dict[int, int]:
    """Anchors per stride that Ultralytics' task-aligned assigner may assign to ``box`` (yolo26n: 8/16/32)."""
    import torch
    from ultralytics.utils.tal import TaskAlignedAssigner, make_anchors

    strides = [8, 16, 32]
    feats = [torch.zeros(1, 1, N // s, N // s) for s in strides]
    anchors, stride_tensor = make_anchors(feats, torch.tensor(strides, dtype=torch.float32), 0.5)
    assigner = TaskAlignedAssigner(topk=10, num_classes=1, stride=strides)
    inside = assigner.select_candidates_in_gts(anchors * stride_tensor, torch.tensor([[box]], dtype=torch.float32),
                                               torch.ones(1, 1, 1))[0, 0]
    return {s: int(inside[(stride_tensor[:, 0] == s)].sum()) for s in strides}


def iou_after_shift(w: float, h: float, shift: float = 1.0) -> float:
    """IoU of a w x h box with the same box moved by ``shift`` pixels across its short side."""
    short, long = min(w, h), max(w, h)
    return max(short - shift, 0) * long / ((short + shift) * long)


def main() -> None:
    print("| line (80 px long) | 0° | 22.5° | 45° |\n|---|---|---|---|")
    for width in (1.0, 2.0, 4.0):
        shares = [background_share(line_mask(width, a)) for a in (0, 22.5, 45)]
        print(f"| {width:g} px wide: background share of its box | " + " | ".join(f"{s:.0%}" for s in shares) + " |")

    print("\n| line width | stride 4 (P2) | stride 8 (P3) | stride 16 (P4) | stride 32 (P5) |\n|---|---|---|---|---|")
    for width in (1.0, 2.0, 4.0):
        for angle in (0.0, 45.0):
            mask = line_mask(width, angle)
            cells = [best_cell_share(mask, s) for s in (4, 8, 16, 32)]
            print(f"| {width:g} px, {angle:g}° | " + " | ".join(f"{c:.2f}" for c in cells) + " |")

    print("\n| transform (45° line) | 1 px: contrast left | 2 px: contrast left |\n|---|---|---|")
    print(f"| none | {contrast_left(1, lambda im: im):.2f} | {contrast_left(2, lambda im: im):.2f} |")
    for name, fn in TRANSFORMS.items():
        print(f"| {name} | {contrast_left(1, fn):.2f} | {contrast_left(2, fn):.2f} |")

    print("\n| box (px at 256) | candidates stride 8 / 16 / 32 | IoU after 1 px error | IoU^6 |\n|---|---|---|---|")
    c = N / 2
    for name, (w, h) in {"80 x 2 (horizontal scratch)": (80, 2), "58 x 58 (45° scratch, 80 px)": (58, 58),
                         "6 x 6 (pit)": (6, 6), "30 x 30 (stain)": (30, 30)}.items():
        cand = assigner_candidates((c - w / 2, c - h / 2, c + w / 2, c + h / 2))
        iou = iou_after_shift(w, h)
        print(f"| {name} | {cand[8]} / {cand[16]} / {cand[32]} | {iou:.2f} | {iou ** 6:.3f} |")


if __name__ == "__main__":
    main()
