"""Ultralytics' one-channel datasets (``channels: 1`` in the data YAML) hand the pipeline (H, W, 1) images: the
transform list failed on some samples (Albumentations' Illumination cannot broadcast that shape) and copy-paste
on every one (its sources were read as three channels). Oracle: the same seed on the 2-D image."""

from __future__ import annotations

import random

import numpy as np
import torch


def _labels(img: np.ndarray) -> dict:
    from ultralytics.utils.instance import Instances

    return {"img": img, "cls": np.zeros((1, 1), np.float32),
            "instances": Instances(np.array([[10, 10, 30, 12]], np.float32), bbox_format="xyxy", normalized=False)}


def test_the_transform_list_takes_one_channel_images_as_it_takes_gray_ones():
    from gradkit.config import AugmentConfig
    from gradkit.integrations.ultralytics.augment import AlbumentationsStage

    stage, twin = (AlbumentationsStage(AugmentConfig(preset="defect")) for _ in range(2))
    rng = np.random.default_rng(0)
    for seed in range(40):
        gray = rng.integers(60, 200, (64, 64), dtype=np.uint8)
        torch.manual_seed(seed)
        one = stage(_labels(gray[..., None].copy()))
        flat = twin(_labels(gray.copy()))  # its own stream, seeded alike
        assert one["img"].shape == (64, 64, 1)
        assert np.array_equal(one["img"][..., 0], flat["img"])
        assert np.array_equal(one["instances"].bboxes, flat["instances"].bboxes)


def test_copy_paste_pastes_into_a_one_channel_dataset_s_images(tmp_path):
    import cv2
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.augment import CopyPasteStage

    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for i in range(2):
        img = np.full((64, 64), 128, np.uint8)
        img[20:30, 20:30] = 20
        cv2.imwrite(str(root / "images" / "train" / f"{i}.png"), img)
        (root / "labels" / "train" / f"{i}.txt").write_text("0 0.390625 0.390625 0.15625 0.15625\n")
    cv2.imwrite(str(root / "images" / "val" / "v.png"), np.full((64, 64), 128, np.uint8))
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                   "names": {0: "pit"}, "channels": 1}))
    data = check_det_dataset(str(root / "data.yaml"))
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": 64}), data["train"], 2, data, mode="val")
    cfg = load_config("default", {"augment.copy_paste.p": 1.0, "augment.copy_paste.max_per_image": 1,
                                  "augment.copy_paste.min_defect_share": 0.0})
    stage = CopyPasteStage(dataset, cfg.augment.copy_paste)
    labels = dataset.get_image_and_label(0)
    assert labels["img"].shape == (64, 64, 1)  # what Ultralytics hands the pipeline
    random.seed(0)
    out = stage(labels)
    assert out["img"].shape == (64, 64, 1) and len(out["cls"]) == 2
    x0, y0, x1, y1 = (int(v) for v in out["instances"].bboxes[1])
    assert out["img"][(y0 + y1) // 2, (x0 + x1) // 2, 0] < 60  # the dark square, pasted
