"""A model trained on tiles (``gradkit tile``) applied to whole images: each image cut as the training images
were, the tiles' detections merged (``gradkit.data.tile_merge``).

``predict_tiles`` does it for one image; ``TiledValidation`` makes an Ultralytics validation score those
merged detections instead of the model's own on the letterboxed whole image, so mAP, the confusion matrix,
the plots and gradkit's report all describe whole parts seen at the native pixel size the model learnt.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.config import ConfigError
from gradkit.data.tile import auto_overlap, check_tile_args
from gradkit.data.tile_merge import TileDetections, merge_tile_detections, tile_windows
from gradkit.integrations.ultralytics.seams import (
    image_placement,
    read_like_dataset,
    rect_padding,
    replace_predictions,
)

__all__ = ["TiledValidation", "check_report_tiles", "detect_over_tiles", "predict_tiles"]

#: Tiles sent to the model at once.
TILE_BATCH = 8


def check_report_tiles(size: int | None, overlap: int | None) -> None:
    """``ConfigError`` naming ``report.tile_size`` / ``report.tile_overlap`` when ``gradkit tile`` would refuse
    them (its own check: the tiles scored must be the tiles it cuts)."""
    if size is None:
        if overlap is not None:
            raise ConfigError(f"report.tile_overlap={overlap} needs report.tile_size (the tiles' pixels)")
        return
    try:
        check_tile_args(size, overlap, 0.5, 1.0)
    except ValueError as e:
        raise ConfigError(f"report.tile_{e}") from None


#: One tile's detections, pixel boxes of the tile: (xyxy n x 4, scores n, classes n).
Found = tuple[np.ndarray, np.ndarray, np.ndarray]


def detect_over_tiles(image: np.ndarray, size: int, overlap: int, detect: Callable[[list[np.ndarray]], list[Found]],
                      max_det: int | None = None) -> TileDetections:
    """``detect`` run on the tiles of ``image`` (``TILE_BATCH`` at a time), its detections merged: pixel boxes of
    the whole image."""
    h, w = image.shape[:2]
    windows = tile_windows(w, h, size, overlap)
    crops = [image[int(y0):int(y1), int(x0):int(x1)] for x0, y0, x1, y1 in windows]
    boxes, scores, classes, tiles = [], [], [], []
    for start in range(0, len(crops), TILE_BATCH):
        for k, (xyxy, conf, cls) in enumerate(detect(crops[start:start + TILE_BATCH]), start):
            boxes.append(np.asarray(xyxy, np.float64).reshape(-1, 4) + windows[k, [0, 1, 0, 1]])
            scores.append(np.asarray(conf).reshape(-1))
            classes.append(np.asarray(cls).reshape(-1))
            tiles.append(np.full(len(scores[-1]), k))
    det = TileDetections(np.concatenate(boxes), np.concatenate(scores), np.concatenate(classes), np.concatenate(tiles))
    return merge_tile_detections(det, windows, w, h, max_det)


def predict_tiles(model: Any, image: np.ndarray | str | Path, size: int, overlap: int, *, conf: float = 0.25,
                  iou: float = 0.7, max_det: int = 300, device: Any = None) -> TileDetections:
    """Detections of ``model`` (an ``ultralytics.YOLO``) on ``image`` (a file, or H x W [x C] pixels, BGR as
    Ultralytics reads them), made tile by tile with ``model.predict(imgsz=size)`` and merged; pixel boxes of
    the whole image. On an image no larger than a tile it is exactly ``model.predict`` on the image."""
    if isinstance(image, str | Path):
        from ultralytics.utils.patches import imread

        path, image = image, imread(str(image))
        if image is None:
            raise FileNotFoundError(f"{path}: not an image OpenCV can read")
    def detect(crops: list[np.ndarray]) -> list[Found]:
        results = model.predict(crops, imgsz=size, conf=conf, iou=iou, max_det=max_det, device=device, verbose=False)
        return [(r.boxes.xyxy.cpu().numpy(), r.boxes.conf.cpu().numpy(), r.boxes.cls.cpu().numpy()) for r in results]

    return detect_over_tiles(image, size, overlap, detect, max_det)


class _AsValidated:
    """Detections on tiles made as the validator makes them on whole images: the same weights loaded as it
    loads them (``AutoBackend``, its device, precision and head), each tile placed on the canvas its dataset
    gives an image of the tile's size (resized to ``size`` on its long side, then padded: with rectangular
    batches a border of half a stride or more, ``BaseDataset.set_rectangle``), and its own ``postprocess``
    (its NMS: multi-label, its conf, iou and max_det). So a tile that is a whole image gets exactly the
    detections plain validation at ``imgsz=size`` gets."""

    def __init__(self, validator: Any, size: int):
        from ultralytics.nn.autobackend import AutoBackend

        self.validator, self.size = validator, size
        self.rect, self.pad, self.stride = rect_padding(validator)
        self.backend = AutoBackend(model=str(validator.args.model), device=validator.device,
                                   fp16=validator.args.quantize == 16, end2end=validator.args.nms is False,
                                   verbose=False)
        self.backend.eval()

    def _canvas_shape(self, h: int, w: int) -> tuple[int, int]:
        if not self.rect:
            return self.size, self.size
        ar = h / w
        shape = np.array([ar, 1.0] if ar < 1 else [1.0, 1 / ar] if ar > 1 else [1.0, 1.0])
        hw = np.ceil(shape * self.size / self.stride + self.pad).astype(int) * self.stride
        return int(hw[0]), int(hw[1])

    def _placed(self, crop: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """The crop as the dataset would place it (resized like ``load_image``, centred like ``LetterBox``,
        grey 114 around), with the resize ratio and the left and top padding."""
        import cv2

        h0, w0 = crop.shape[:2]
        r = self.size / max(h0, w0)
        if r != 1:
            crop = cv2.resize(crop, (min(math.ceil(w0 * r), self.size), min(math.ceil(h0 * r), self.size)),
                              interpolation=cv2.INTER_LINEAR)
        crop = crop.reshape(*crop.shape[:2], -1)
        h1, w1 = crop.shape[:2]
        ch, cw = self._canvas_shape(h1, w1)
        top, left = round((ch - h1) / 2 - 0.1), round((cw - w1) / 2 - 0.1)
        canvas = np.full((ch, cw, crop.shape[2]), 114, crop.dtype)
        canvas[top:top + h1, left:left + w1] = crop
        return canvas, r, left, top

    def __call__(self, crops: list[np.ndarray]) -> list[Found]:
        import torch

        placed = [self._placed(c) for c in crops]
        out: dict[int, Found] = {}
        shapes = {p[0].shape for p in placed}  # one shape unless an image is smaller than a tile
        for shape in shapes:
            index = [i for i, p in enumerate(placed) if p[0].shape == shape]
            batch = np.stack([placed[i][0] for i in index])
            rgb = batch[..., ::-1] if shape[2] == 3 else batch  # BGR to RGB, as the dataset's Format does
            img = torch.from_numpy(np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))).to(self.validator.device)
            img = (img.half() if self.validator.args.quantize == 16 else img.float()) / 255
            with torch.inference_mode():
                preds = self.validator.postprocess(self.backend(img))
            for i, pred in zip(index, preds, strict=True):
                _, r, left, top = placed[i]
                xyxy = (pred["bboxes"].float().cpu().numpy() - [left, top, left, top]) / r  # back into the crop
                out[i] = (xyxy, pred["conf"].float().cpu().numpy(), pred["cls"].cpu().numpy())
        return [out[i] for i in range(len(crops))]


def _longest_label_side(validator: Any) -> float:
    """The longest box side (pixels) among the validated split's labels (sizes from the image headers: a
    rectangular validation drops the labels' ``shape``)."""
    from PIL import Image

    from gradkit.data.orientation import upright_size

    longest = 0.0
    for lab in validator.dataloader.dataset.labels:
        if len(lab["bboxes"]):
            with Image.open(lab["im_file"]) as im:
                w, h = upright_size(im)
            longest = max(longest, float((lab["bboxes"][:, 2:4] * np.array([w, h])).max()))
    return longest


class TiledValidation:
    """``on_val_start`` callback: the validation scores each image's detections made over tiles of ``size``
    pixels overlapping by ``overlap`` (None: the longest label side of the split, at most half a tile, as
    ``gradkit tile`` chooses) instead of the model's own on the letterboxed whole image. Register it after
    gradkit's prediction recorder, so the report records the merged detections."""

    def __init__(self, size: int, overlap: int | None = None):
        check_report_tiles(size, overlap)
        self.size, self.overlap = size, overlap
        self.used_overlap: int | None = None

    def geometry(self) -> dict[str, int]:
        """What the report says of the scoring: the tiles' size and the overlap used (after a validation)."""
        return {"size": self.size, "overlap": self.used_overlap}

    def __call__(self, validator: Any) -> None:
        if validator.training:
            return
        detect = _AsValidated(validator, self.size)
        overlap = self.overlap if self.overlap is not None else auto_overlap(_longest_label_side(validator), self.size)
        self.used_overlap = overlap
        replace_predictions(validator, functools.partial(self._replace, validator, detect, overlap))

    def _replace(self, validator: Any, detect: _AsValidated, overlap: int, preds: list[dict], batch: Any) -> list[dict]:
        import torch

        out = []
        for si, pred in enumerate(preds):
            path, (gx, gy), (px, py) = image_placement(validator, si, batch)
            det = detect_over_tiles(read_like_dataset(validator, path), self.size, overlap, detect,
                                    validator.args.max_det)
            xyxy = det.boxes * np.array([gx, gy, gx, gy]) + np.array([px, py, px, py])  # into the batch's letterbox
            like = pred["bboxes"]
            out.append({**pred, "bboxes": torch.as_tensor(xyxy, dtype=like.dtype, device=like.device),
                        "conf": torch.as_tensor(det.scores, dtype=pred["conf"].dtype, device=like.device),
                        "cls": torch.as_tensor(det.classes, dtype=pred["cls"].dtype, device=like.device),
                        **({"extra": pred["extra"][:0].new_zeros((len(det), pred["extra"].shape[1]))}
                           if "extra" in pred else {})})
        return out
