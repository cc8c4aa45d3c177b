"""Thin boxes through Ultralytics' affine warp: stock drops a long 1-2 px line's label while its pixels stay;
with gradkit's augmentation installed the label is kept, and lies on the line's pixels (boxes from the
transformed image itself are the oracle)."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest

from gradkit.augment.affine_boxes import (
    ULTRALYTICS_MAX_ASPECT,
    ULTRALYTICS_MIN_SIDE_PX,
    affine_survivors,
    drop_rate,
    zoom_range,
)
from gradkit.config import load_config
from gradkit.integrations.ultralytics.augment import seeded_sample

SIZE = 256
#: one line per image, drawn white on the pad gray: (x0, y0, x1, y1) of its pixels, inclusive
LINES = {"horizontal_1px": (48, 128, 207, 128), "vertical_1px": (100, 60, 100, 189),
         "horizontal_2px": (40, 90, 199, 91), "vertical_2px": (180, 40, 181, 179)}
SAMPLES = 24  # warps per image
STOCK_BLUR_RADIUS_PX = 3  # Ultralytics' Albumentations stage: Blur(blur_limit=(3, 7))
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
            item = seeded_sample(dataset, i, seed=k)  # Ultralytics' own Albumentations stage seeded too
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
        # Ultralytics' stage box-blurs 1 sample in 100 with a kernel of up to 7 px: 3 px a side, plus that pixel
        assert off <= STOCK_BLUR_RADIUS_PX + 1, (name, box, pixels)
        blurred += off > 1.5
    assert blurred <= 2


def test_the_rule_drops_a_box_only_when_cut_away():
    """Hand-made warped and clipped boxes, against Ultralytics' own filter given the same boxes."""
    warped = np.array([[0, 0, 160, 1], [5, 5, 6, 125], [0, 0, 100, 10], [0, 0, 1.5, 1.5], [0, 0, 0, 10],
                       [-80, 0, 80, 1], [0, -199.6, 14.95, 0.0], [0, -199.6, 14.95, 0.0]], float).T
    clipped = np.array([[0, 0, 160, 1],     # a 1 px line in view: kept (Ultralytics: a side <= 2 px)
                        [5, 5, 6, 125],     # a 1 x 120 px line: kept (Ultralytics: aspect ratio >= 100)
                        [0, 0, 5, 10],      # 5% of it in view: dropped by both
                        [0, 0, 1.5, 1.5],   # a pit zoomed to 1.5 px: kept (a smudge still shows)
                        [0, 0, 0, 10],      # empty: dropped by both
                        [0, 0, 80, 1],      # half of a line cut off: kept
                        [0, -1.8, 14.95, 0.0],    # a 200 px line turned 4 deg, 0.9% of its box in view: dropped
                        [0, -40.0, 14.95, 0.0]], float).T  # the same with 20% in view: kept
    keep = affine_survivors(warped, clipped, min_visibility=0.1)
    assert keep.tolist() == [True, True, False, True, False, True, False, True]


def test_ultralytics_thresholds_are_the_ones_gradkit_names():
    """One definition each, checked against the installed Ultralytics (its box_candidates defaults)."""
    from gradkit.integrations.ultralytics.seams import ultralytics_box_filter_thresholds

    assert ultralytics_box_filter_thresholds() == (ULTRALYTICS_MIN_SIDE_PX, ULTRALYTICS_MAX_ASPECT)


@pytest.mark.parametrize(("w", "h", "scale"), [(160, 1, 0.5), (160, 2, 0.5), (80, 3, 0.5), (210, 4.5, 0.5),
                                               (450, 4.4, 0.5), (3, 3, 0.5), (4, 4, 0.5), (5, 5, 0.5),
                                               (58, 58, 0.5), (20, 2.5, 0.9), (30, 3, (0.5, 2.0))])
def test_drop_rates_are_those_of_ultralytics_own_warp(w, h, scale):
    """Oracle: Ultralytics' own warp (no rotation), 600 draws of one box in a 1024 px image; the rate is a
    uniform zoom's, so a binomial spread (at most 0.02 here) bounds the difference."""
    from ultralytics.data.augment import RandomPerspective
    from ultralytics.utils.instance import Instances

    n = 1024  # room for every box at the largest zoom: clipping would change its aspect ratio
    warp = RandomPerspective(degrees=0.0, translate=0.0, scale=scale, size=(n, n))
    random.seed(0)
    np.random.seed(0)
    draws, kept = 600, 0
    for _ in range(draws):
        box = np.array([[n / 2 - w / 2, n / 2 - h / 2, n / 2 + w / 2, n / 2 + h / 2]], np.float32)
        out = warp({"img": np.zeros((n, n, 3), np.uint8), "cls": np.zeros((1, 1)),
                    "instances": Instances(box, bbox_format="xyxy", normalized=False)})
        kept += len(out["cls"])
    rate = float(drop_rate(np.array([[w, h]]), zoom_range(scale))[0])
    assert abs(rate - (1 - kept / draws)) <= 0.06, (rate, 1 - kept / draws)
    assert (rate == 0) == (kept == draws)


def _write_boxes(root, width, height, boxes):
    """One image of width x height with the given (w, h) boxes (pixels) side by side; class 0, one split."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        cv2.imwrite(str(root / "images" / split / "part.png"), np.full((height, width, 3), PAD, np.uint8))
        lines = [f"0 {(10 + 40 * k + w / 2) / width} {0.5} {w / width} {h / height}" for k, (w, h) in enumerate(boxes)]
        (root / "labels" / split / "part.txt").write_text("\n".join(lines) + "\n")
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: scratch\n")
    return yaml


def test_training_without_gradkit_augmentation_names_the_labels_ultralytics_drops(tmp_path):
    """A real run, monitoring only: Ultralytics' filter stays, and the log says which boxes it drops. The image
    is 512 x 256, trained at 128 px (a quarter of its long side): a box 14 px high is 3.5 px there, dropped
    when the zoom is under 0.57 (7% of samples); one 18 px high is 4.5 px, never dropped; a 1 px line 60 px
    long (aspect 60) is dropped by its 0.25 px side at every zoom; one 30 x 200 px, never."""
    import logging

    from ultralytics.utils import LOGGER

    from conftest import train_tiny

    log = []
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        data = _write_boxes(tmp_path / "data", 512, 256, [(30, 14), (30, 18), (60, 1), (30, 200)])
        train_tiny(data, tmp_path, overrides={"report.enabled": False}, epochs=1, imgsz=128)
    finally:
        LOGGER.removeHandler(handler)
    warned = [m for m in log if "gradkit: Ultralytics' warp" in m]
    assert len(warned) == 1, warned
    assert "drops 2 of 4 training boxes at imgsz 128 (scratch 2) in 54% of their samples" in warned[0], warned
    assert "zoom 0.5-1.5x, sides above 2 px, aspect ratio below 100" in warned[0]


def test_a_trainer_without_ultralytics_data_set_up_gets_no_warning_and_no_error():
    """A custom loop drives the callback on a trainer with no ``train_loader`` (as the DDP worker does):
    there are no labels to count, so the warning is skipped; it must not stop the run (it did, in CI)."""
    import logging
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.utils import LOGGER

    from gradkit.integrations.ultralytics.callback import _warn_labels_ultralytics_drops

    trainer = BaseTrainer.__new__(BaseTrainer)
    vars(trainer).update(args=SimpleNamespace(scale=0.5))
    log = []
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        _warn_labels_ultralytics_drops(trainer)
    finally:
        LOGGER.removeHandler(handler)
    assert log == []


def test_a_changed_warp_stops_training_by_name(tmp_path, monkeypatch):
    """Planted upgrades, each caught by the probe before training: the filter no longer asked, boxes handed
    to it unclipped, boxes warped some other way than by apply_bboxes; and a pipeline without a warp."""
    from ultralytics.data.augment import RandomPerspective
    from ultralytics.utils.instance import Instances

    import gradkit.integrations.ultralytics.seams as seams
    from gradkit.integrations.ultralytics.seams import SeamError, replace_affine_box_filter

    dataset = _dataset(_write_lines(tmp_path))
    keep = lambda warped, clipped: affine_survivors(warped, clipped, 0.1)  # noqa: E731
    compose = dataset.transforms
    without_warp = [t for t in compose.transforms if not hasattr(t, "transforms") and not hasattr(t, "pre_transform")]
    with pytest.raises(SeamError, match="no RandomPerspective in the training transforms"):
        replace_affine_box_filter(type(compose)(without_warp), dataset, keep)
    stock_apply = RandomPerspective.apply_instances

    def unasked(self, labels, params):  # a release that filters boxes some other way
        return labels

    def unclipped(self, labels, params):  # a release that clips after filtering
        monkeypatch.setattr(Instances, "clip", lambda *a, **k: None)
        try:
            return stock_apply(self, labels, params)
        finally:
            monkeypatch.undo()

    def warped_elsewhere(self, labels, params):  # a release that no longer warps boxes through apply_bboxes
        self.apply_bboxes = lambda bboxes, M: RandomPerspective.apply_bboxes(self, bboxes, M)
        return stock_apply(self, labels, params)

    for planted, message in [(unasked, "no longer calls box_candidates"),
                             (unclipped, r"handed box_candidates \[40.0, 10.0, 90.0, 20.0\]"),
                             (warped_elsewhere, "without its own apply_bboxes before it")]:
        with monkeypatch.context() as m:
            m.setattr(seams, "_AFFINE_PROBES", {})
            m.setattr(RandomPerspective, "apply_instances", planted)
            with pytest.raises(SeamError, match=message):
                replace_affine_box_filter(compose, dataset, keep)
