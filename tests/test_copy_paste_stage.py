"""``augment.copy_paste.contrast`` reaches the pastes made in Ultralytics' pipeline: the stage on a real
Ultralytics dataset of tiny data, the same sample and random stream at full strength and at 0.4 (the oracle: a
faded paste's peak deviation from the image is 0.4 of the full one's, as gradkit.augment's own test shows)."""

import copy
import random

import numpy as np


def test_the_stage_pastes_with_the_configured_contrast(tiny_data):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.augment import CopyPasteStage

    data = check_det_dataset(str(tiny_data))
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": 64}), data["train"], 4, data, mode="val")
    labels = dataset.get_image_and_label(0)
    deviations = {}
    for contrast in ((1.0, 1.0), (0.4, 0.4)):
        cfg = load_config("default", {"augment.copy_paste.p": 1.0, "augment.copy_paste.contrast": list(contrast),
                                      "augment.copy_paste.min_defect_share": 0.0})
        stage = CopyPasteStage(dataset, cfg.augment.copy_paste)
        random.seed(3)
        out = stage(copy.deepcopy(labels))
        assert len(out["cls"]) > len(labels["cls"])  # something was pasted
        deviations[contrast] = np.abs(out["img"].astype(int) - labels["img"].astype(int)).max()
    assert abs(deviations[(0.4, 0.4)] / deviations[(1.0, 1.0)] - 0.4) < 0.06
