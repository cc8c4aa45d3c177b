"""Thin boxes through Ultralytics' affine warp: stock drops a long 1-2 px line's label while its pixels stay;
with gradkit's augmentation installed the label is kept, and lies on the line's pixels (boxes from the
transformed image itself are the oracle)."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from gradkit.augment.affine_boxes import affine_survivors
from gradkit.config import load_config

SIZE = 256
#: one line per image, drawn white on the pad gray: (x0, y0, x1, y1) of its pixels, inclusive
LINES = {"horizontal_1px": (48, 128, 207, 128), "vertical_1px": (100, 60, 100, 189),
         "horizontal_2px": (40, 90, 199, 91)}
SAMPLES = 24  # warps per image
PAD = 114  # Ultralytics' fill for what a warp brings into view: the background here too, so only the line is bright


def _write_lines(root):
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for name, (x0, y0, x1, y1) in LINES.items():
            img = np.full((SIZE, SIZE, 3), PAD, np.uint8)
            img[y0:y1 + 1, x0:x1 + 1] = 255
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), img)
            w, h = x1 + 1 - x0, y1 + 1 - y0  # the box encloses the pixels
            (root / "labels" / split / f"{name}.txt").write_text(
                f"0 {(x0 + w / 2) / SIZE} {(y0 + h / 2) / SIZE} {w / SIZE} {h / SIZE}\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: scratch\n")
    return yaml


def _dataset(yaml, aug_cfg=None):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.integrations.ultralytics.augment import install_augmentation

    data = check_det_dataset(str(yaml))
    # no mosaic: every line stays in view, so every sample's one label is expected back
    args = get_cfg(overrides={"imgsz": SIZE, "data": str(yaml), "mode": "train", "mosaic": 0.0, "fliplr": 0.0,
                                "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0})  # geometry only: the pad stays PAD
    dataset = build_yolo_dataset(args, data["train"], 4, data, mode="train")
    if aug_cfg is not None:
        install_augmentation(dataset, aug_cfg, args)
    return dataset


def _samples(dataset):
    """(image name, labels kept, box in pixels or None, box of the bright pixels) for SAMPLES warps of each image."""
    out = []
    for i, label in enumerate(dataset.labels):
        name = label["im_file"].rsplit("/", 1)[-1].split(".")[0]
        for k in range(SAMPLES):
            random.seed(k)
            np.random.seed(k)
            item = dataset[i]
            img = item["img"].numpy().transpose(1, 2, 0)[..., 0]
            ys, xs = np.nonzero(img > PAD + 20)  # a 1 px line shrunk 0.5x still reads ~PAD + 70
            pixels = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else None
            boxes = item["bboxes"].numpy() * SIZE  # xywh, pixels
            box = None
            if len(boxes):
                x, y, w, h = boxes[0]
                box = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
            out.append((name, len(boxes), box, pixels))
    return out


def _shown(samples):
    """The samples whose line is still in the image. Ultralytics' own Albumentations stage median-blurs 1 sample
    in 100, which erases a 1 px line; a seed here hits it once."""
    shown = [s for s in samples if s[3] is not None]
    assert len(shown) >= len(samples) - 2
    return shown


def test_stock_ultralytics_drops_a_one_pixel_line_it_still_shows(tmp_path):
    """The defect this fixes, on Ultralytics alone: the line is in every image, its label in none."""
    samples = _samples(_dataset(_write_lines(tmp_path)))
    one_px = [s for s in _shown(samples) if s[0].endswith("1px")]
    assert sum(kept for _, kept, _, _ in one_px) == 0


@pytest.mark.parametrize("config", [{"augment.ultralytics": {"degrees": 0.0}},  # Ultralytics' stock stages
                                    {"augment.transforms": [{"__class_fullname__": "D4", "p": 1.0}],  # gradkit's
                                     "augment.ultralytics": {"degrees": 4.0}}])
def test_gradkit_keeps_every_visible_line_and_its_box_lies_on_the_line(tmp_path, config):
    aug = load_config(None, config).augment
    samples = _samples(_dataset(_write_lines(tmp_path), aug))
    blurred = 0
    for name, kept, box, pixels in _shown(samples):
        assert kept == 1, f"{name}: the line is in the image, its label was dropped"
        # a warp moves a box's corners with the image (then clips), so it encloses the line's pixels to
        # within the interpolation's pixel; the line's pixels fill it to within that pixel too
        off = max(abs(b - p) for b, p in zip(box, pixels, strict=True))
        assert off <= 3.5, (name, box, pixels)  # Ultralytics' stage blurs 1 sample in 100 by up to 3 px a side
        blurred += off > 1.5
    assert blurred <= 2


def test_the_rule_drops_a_box_only_when_cut_away():
    """Hand-made boxes, against Ultralytics' own filter on the same boxes."""
    before = np.array([[0, 0, 160, 1], [0, 0, 1, 120], [0, 0, 100, 10], [0, 0, 3, 3], [0, 0, 10, 10],
                       [0, 0, 10, 10], [0, 0, 80, 1]], float).T
    after = np.array([[0, 0, 160, 1],      # a 1 px line: kept (Ultralytics drops it: a side <= 2 px)
                      [5, 5, 6, 125],      # a 1 x 120 px line, shifted: kept (Ultralytics: aspect ratio >= 100)
                      [0, 0, 5, 10],       # cut to 5% of its area: dropped by both
                      [0, 0, 1.5, 1.5],    # a pit zoomed to 1.5 px: kept (a smudge still shows)
                      [0, 0, 0, 10],       # zero width: dropped by both
                      [0, 0, 14, 14],      # a rotation's larger enclosing box: kept by both
                      [0, 0, 80, 0.09]], float).T  # clipped at the border to 9% of its height: dropped
    keep = affine_survivors(before, after, min_visibility=0.1)
    assert keep.tolist() == [True, True, False, True, False, True, False]
    from ultralytics.data.augment import RandomPerspective

    stock = RandomPerspective.box_candidates(before, after)
    assert stock.tolist() == [False, False, False, False, False, True, False]


def test_a_warp_that_no_longer_asks_its_filter_stops_training_by_name(tmp_path, monkeypatch):
    """Planted upgrades: the filter call gone from apply_instances, or no warp in the pipeline at all."""
    from ultralytics.data.augment import RandomPerspective

    from gradkit.integrations.ultralytics.seams import SeamError, check_seams, replace_affine_box_filter

    dataset = _dataset(_write_lines(tmp_path))
    keep = lambda before, after: affine_survivors(before, after, 0.1)  # noqa: E731
    compose = dataset.transforms
    without_warp = [t for t in compose.transforms if not hasattr(t, "transforms") and not hasattr(t, "pre_transform")]
    with pytest.raises(SeamError, match="no RandomPerspective in the training transforms"):
        replace_affine_box_filter(type(compose)(without_warp), dataset, keep)

    def apply_instances(self, labels, params):  # a release that filters boxes some other way
        return labels

    monkeypatch.setattr(RandomPerspective, "apply_instances", apply_instances)
    for call in (lambda: replace_affine_box_filter(compose, dataset, keep), check_seams):
        with pytest.raises(SeamError, match=r"apply_instances no longer calls self\.box_candidates"):
            call()


@pytest.mark.parametrize(("w", "h"), [(160, 1), (160, 2), (250, 3), (210, 4.5), (500, 4.5), (3, 3), (4, 4), (5, 5),
                                      (58, 58)])
def test_the_boxes_named_as_dropped_are_those_ultralytics_warp_drops(w, h):
    """Oracle: Ultralytics' own warp (no rotation, zoom 0.5-1.5x), 400 draws of one box in a 640 px image."""
    from ultralytics.data.augment import RandomPerspective
    from ultralytics.utils.instance import Instances

    from gradkit.augment.affine_boxes import dropped_by_ultralytics

    warp = RandomPerspective(degrees=0.0, translate=0.0, scale=0.5, size=(640, 640))
    random.seed(0)
    np.random.seed(0)
    kept = 0
    for _ in range(400):
        box = np.array([[320 - w / 2, 320 - h / 2, 320 + w / 2, 320 + h / 2]], np.float32)
        out = warp({"img": np.zeros((640, 640, 3), np.uint8), "cls": np.zeros((1, 1)),
                    "instances": Instances(box, bbox_format="xyxy", normalized=False)})
        kept += len(out["cls"])
    assert dropped_by_ultralytics(np.array([[w, h]]), zoom=0.5)[0] == (kept < 400), kept


def test_training_without_gradkit_augmentation_names_the_labels_ultralytics_drops(tmp_path):
    """A real run, monitoring only: Ultralytics' filter stays, and the log says which boxes it drops."""
    import logging

    from ultralytics.utils import LOGGER

    from conftest import train_tiny

    log = []
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        train_tiny(_write_lines(tmp_path / "data"), tmp_path, overrides={"report.enabled": False},
                   epochs=1)  # at 64 px: every line a quarter as long
    finally:
        LOGGER.removeHandler(handler)
    warned = [m for m in log if "Ultralytics' warp (scale=0.5) drops their labels" in m]
    # all three lines: 1 px (a side under 4 px), 1 px vertical, 2 px (halved by a 0.5x zoom: 1 px)
    assert len(warned) == 1 and "3 of 3 training boxes (scratch 3)" in warned[0], warned
    assert "side under 4 px at imgsz 64" in warned[0]
