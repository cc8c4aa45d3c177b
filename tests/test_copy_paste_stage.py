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


def _big_and_small(tmp_path):
    """A dataset of a 256 px image holding a 40 px pit and an empty 64 px one, read at imgsz 64; the small one's
    index and a copy-paste configuration pasting one defect into every sample."""
    import cv2
    import yaml
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config

    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    big = np.full((256, 256, 3), 128, np.uint8)
    big[100:140, 100:140] = 20
    cv2.imwrite(str(root / "images" / "train" / "a_big.png"), big)
    (root / "labels" / "train" / "a_big.txt").write_text("0 0.46875 0.46875 0.15625 0.15625\n")
    cv2.imwrite(str(root / "images" / "train" / "b_small.png"), np.full((64, 64, 3), 128, np.uint8))
    (root / "labels" / "train" / "b_small.txt").write_text("")
    cv2.imwrite(str(root / "images" / "val" / "v.png"), np.full((64, 64, 3), 128, np.uint8))
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train",
                                                   "val": "images/val", "names": {0: "pit"}}))
    data = check_det_dataset(str(root / "data.yaml"))
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": 64}), data["train"], 2, data, mode="val")
    small = next(i for i, lab in enumerate(dataset.labels) if lab["im_file"].endswith("b_small.png"))
    cfg = load_config("default", {"augment.copy_paste.p": 1.0, "augment.copy_paste.max_per_image": 1,
                                  "augment.copy_paste.min_defect_share": 0.0})
    return dataset, small, cfg


def test_a_paste_is_scaled_by_its_own_source_s_size_not_the_destination_s(tmp_path):
    """The scale from a source's pixels to the training size is imgsz over the source image's long side: it was
    taken from the destination's (after a mosaic, whichever image came first), so a 40 px defect of a 256 px
    image pasted into a 64 px one at imgsz 64 came out 40 px, not 10. Known answer: 10 px."""
    from gradkit.integrations.ultralytics.augment import CopyPasteStage

    dataset, small, cfg = _big_and_small(tmp_path)
    stage = CopyPasteStage(dataset, cfg.augment.copy_paste)
    random.seed(0)
    out = stage(dataset.get_image_and_label(small))
    (box,) = out["instances"].bboxes
    assert np.allclose(box[2:] - box[:2], 10, atol=1), box


def test_a_paste_follows_the_size_the_dataset_reads_at_now(tmp_path):
    """size.final_scale changes the dataset's imgsz mid-run (the stage is built once): the scale must be read at
    each paste. Known answer: the 40 px pit of a 256 px image is 20 px at imgsz 128 (10 px from a stage that kept
    the size it was built at)."""
    from gradkit.integrations.ultralytics.augment import CopyPasteStage

    dataset, small, cfg = _big_and_small(tmp_path)
    stage = CopyPasteStage(dataset, cfg.augment.copy_paste)
    dataset.imgsz = 128
    random.seed(0)
    out = stage(dataset.get_image_and_label(small))
    (box,) = out["instances"].bboxes
    assert np.allclose(box[2:] - box[:2], 20, atol=1), box


def test_the_stage_builds_on_a_rect_dataset(tiny_data):
    """``rect=True``: Ultralytics' set_rectangle pops each label's ``shape``, which the stage read for each source's
    size (a KeyError when the stage was built). The size now comes the way the rest of gradkit reads it."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.augment import CopyPasteStage
    from gradkit.integrations.ultralytics.validation import label_image_hw

    data = check_det_dataset(str(tiny_data))
    dataset = build_yolo_dataset(get_cfg(overrides={"imgsz": 64}), data["train"], 4, data, mode="val", rect=True)
    assert all("shape" not in lab for lab in dataset.labels)  # the case
    cfg = load_config("default", {"augment.copy_paste.p": 1.0, "augment.copy_paste.min_defect_share": 0.0})
    stage = CopyPasteStage(dataset, cfg.augment.copy_paste)
    assert stage.long_sides == [max(label_image_hw(lab)) for lab in dataset.labels]
