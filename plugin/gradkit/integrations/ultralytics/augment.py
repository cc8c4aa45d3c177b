"""gradkit's augmentation stages inside Ultralytics' training dataset pipeline, and the preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gradkit.augment.copy_paste import paste_defects
from gradkit.config import GradkitConfig
from gradkit.integrations.ultralytics.version import check_ultralytics_version

__all__ = ["AlbumentationsStage", "CopyPasteStage", "install_augmentation", "preview_augmentation"]


class AlbumentationsStage:
    """Replaces Ultralytics' ``Albumentations`` stage: gradkit's validated pipeline with box filtering.

    Unlike the stock stage, a sample whose boxes were all removed by a crop becomes a clean
    background sample (transformed image, no labels) instead of keeping stale labels.
    """

    def __init__(self, aug_cfg):
        from gradkit.augment.pipeline import build_runner

        self.runner = build_runner(aug_cfg)

    def __call__(self, labels: dict) -> dict:
        if self.runner is None:
            return labels
        if self.runner.seed != torch.initial_seed():  # each dataloader worker its own stream
            self.runner.set_random_seed(torch.initial_seed())
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        if len(inst.segments):
            raise ValueError("gradkit augmentation handles box labels only; this dataset has segments")
        inst.convert_bbox("xywh")
        inst.normalize(w, h)
        boxes = np.clip(inst.bboxes, 0.0, 1.0) if len(inst.bboxes) else np.zeros((0, 4), np.float32)
        out = self.runner(image=img, bboxes=boxes, class_labels=labels["cls"].reshape(-1))
        new_boxes = np.array(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels["img"] = out["image"]
        labels["cls"] = np.array(out["class_labels"], dtype=np.float32).reshape(-1, 1)
        labels["instances"] = Instances(new_boxes, segments=inst.segments[:0], bbox_format="xywh", normalized=True)
        return labels


class CopyPasteStage:
    """Ultralytics labels-dict adapter of :func:`gradkit.augment.paste_defects`."""

    def __init__(self, dataset, cp_cfg):
        import random

        from gradkit.augment.copy_paste import DefectBank

        self.p, self.cfg = cp_cfg.p, cp_cfg
        self.imgsz = dataset.imgsz
        boxes, classes = [], []
        for lab in dataset.labels:
            b = np.asarray(lab["bboxes"], dtype=np.float32).reshape(-1, 4)
            boxes.append(np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1))
            classes.append(np.asarray(lab["cls"]).reshape(-1))
        files = [lab["im_file"] for lab in dataset.labels]
        self.files = files
        self.bank = DefectBank(boxes, classes, self._load, len(dataset.data["names"]), cp_cfg.class_weights,
                               cp_cfg.rare_first)
        self.rng = random  # Ultralytics seeds Python's RNG per worker

    def _load(self, i: int) -> np.ndarray:
        import cv2

        img = cv2.imread(self.files[i])
        if img is None:
            raise FileNotFoundError(f"copy-paste source image not readable: {self.files[i]}")
        return img

    def __call__(self, labels: dict) -> dict:
        if self.p <= 0 or self.rng.random() >= self.p:
            return labels
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        inst.convert_bbox("xyxy")
        inst.denormalize(w, h)
        src_scale = self.imgsz / max(labels.get("ori_shape", (self.imgsz, self.imgsz)))
        new_img, boxes, cls = paste_defects(img, inst.bboxes, labels["cls"].reshape(-1), self.bank, self.rng,
                                            self.cfg.max_per_image, self.cfg.margin, scale=src_scale)
        labels["img"] = new_img
        labels["cls"] = cls.astype(np.float32).reshape(-1, 1)
        labels["instances"] = Instances(boxes, segments=inst.segments[:0], bbox_format="xyxy", normalized=False)
        return labels


def _apply_hyp(hyp, overrides: dict[str, float]):
    """A copy of the dataset hyp with the config's values, where the user did not set the key."""
    from copy import copy

    from ultralytics.cfg import DEFAULT_CFG_DICT

    hyp = copy(hyp)
    for k, v in overrides.items():
        if getattr(hyp, k, None) == DEFAULT_CFG_DICT.get(k):
            setattr(hyp, k, v)
    return hyp


def install_augmentation(dataset, aug_cfg, hyp) -> None:
    """Make the dataset build gradkit's stages on every (re)build of its transforms.

    Ultralytics rebuilds transforms at ``close_mosaic`` and rebuilds the whole dataset after an OOM
    retry; patching ``build_transforms`` on the instance covers the first, calling this again on
    the new dataset (idempotent) covers the second.
    """
    from copy import copy

    from ultralytics.data.augment import Albumentations

    if getattr(dataset, "_gradkit_augment", None) is aug_cfg:
        return
    original = dataset.build_transforms
    stage = AlbumentationsStage(aug_cfg)
    paste = CopyPasteStage(dataset, aug_cfg.copy_paste) if aug_cfg.copy_paste.p > 0 else None
    replace_stock = aug_cfg.preset != "none" or bool(aug_cfg.transforms)

    def build_transforms(hyp=None):
        compose = original(_apply_hyp(hyp, aug_cfg.ultralytics) if hyp is not None else hyp)
        stages = compose.transforms
        idx = next((i for i, t in enumerate(stages) if isinstance(t, Albumentations | AlbumentationsStage)), None)
        if idx is None:  # validation-style pipeline (augment=False): nothing to do
            return compose
        if replace_stock:
            stages[idx] = stage
        if paste is not None:
            stages.insert(idx, paste)
        return compose

    dataset.build_transforms = build_transforms
    dataset.transforms = build_transforms(copy(hyp))
    dataset._gradkit_augment = aug_cfg


def preview_augmentation(data_yaml: str, cfg: GradkitConfig, n: int = 16, out: str | Path = "preview.jpg",
                         imgsz: int = 640, seed: int = 0) -> Path:
    """A grid of ``n`` training samples with boxes, from exactly the pipeline training builds."""
    import math
    import random

    import cv2
    import ultralytics.data.utils as data_utils
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset

    from gradkit.integrations.ultralytics.datasets import install_dataset_guard, resolve_dataset

    check_ultralytics_version()
    install_dataset_guard(cfg.data.allow_download)
    data = (data_utils.check_det_dataset(data_yaml) if cfg.data.allow_download
            else resolve_dataset(data_yaml, required=("train",)))
    args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml, "mode": "train", "seed": seed})
    dataset = build_yolo_dataset(args, data["train"], 16, data, mode="train")
    if cfg.augment.active:
        install_augmentation(dataset, cfg.augment, args)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tiles = []
    names = data["names"]
    for i in random.sample(range(len(dataset)), min(n, len(dataset))):
        item = dataset[i]
        img = np.ascontiguousarray(item["img"].numpy().transpose(1, 2, 0)[..., ::-1])  # RGB CHW -> BGR HWC
        h, w = img.shape[:2]
        for c, (x, y, bw, bh) in zip(item["cls"].reshape(-1).tolist(), item["bboxes"].tolist(), strict=True):
            p0 = (round((x - bw / 2) * w), round((y - bh / 2) * h))
            p1 = (round((x + bw / 2) * w), round((y + bh / 2) * h))
            cv2.rectangle(img, p0, p1, (0, 0, 255), 1)
            cv2.putText(img, str(names[int(c)]), (p0[0], max(8, p0[1] - 2)), cv2.FONT_HERSHEY_PLAIN, 0.8,
                        (0, 0, 255), 1)
        tiles.append(img)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    grid = np.full((rows * th, cols * tw, 3), 114, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * th:(r + 1) * th, c * tw:c * tw + t.shape[1]] = t[:th, :tw]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    return out
