"""A model trained on tiles (``gradkit tile``) applied to whole images: each image cut as the training images
were, the tiles' detections merged (``gradkit.data.tile_merge``).

``predict_tiles`` does it for one image; ``TiledValidation`` makes an Ultralytics validation score those
merged detections instead of the model's own on the letterboxed whole image, so mAP, the confusion matrix,
the PR and F1 curves and gradkit's report all describe whole parts seen at the native pixel size the model
learnt. Not so Ultralytics' ``val_batch*_pred.jpg`` (drawn from the model's own predictions) and its speed
figures (the tiles are detected inside ``update_metrics``, outside its timers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.config import ConfigError
from gradkit.data.tile import MAX_OVERLAP_SHARE, MIN_VISIBILITY, auto_overlap, check_tile_args, tiled_copy_of
from gradkit.data.tile_merge import TileDetections, merge_tile_detections, tile_windows
from gradkit.integrations.ultralytics.seams import (
    image_placement,
    read_like_dataset,
    replace_predictions,
    set_tile_geometry,
    tile_canvas,
)

__all__ = ["ReportSource", "TiledValidation", "check_report_tiles", "detect_over_tiles", "predict_tiles",
           "report_source"]

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
        check_tile_args(size, None, MIN_VISIBILITY, 1.0)
    except ValueError as e:
        raise ConfigError(f"report.tile_{e}") from None
    cap = int(size * MAX_OVERLAP_SHARE)
    if overlap is not None and not 0 <= overlap <= cap:
        raise ConfigError(f"report.tile_overlap={overlap}: takes 0 to {cap} px ({MAX_OVERLAP_SHARE:g} of "
                          f"report.tile_size={size}), or unset for the longest box side")


@dataclass
class ReportSource:
    """Whole images an end-of-training report scores through tiles: the dataset ``gradkit tile`` cut the
    training tiles from, and the overlap it used."""

    data: str
    overlap: int


def report_source(data: str, report: Any) -> ReportSource | None:
    """For a run on ``gradkit tile``'s copy with ``report.tile_size`` set, the whole images to score (the copy's
    source and overlap); None otherwise. ``ConfigError`` when the tile size differs from the copy's or its
    record is unreadable, before training."""
    if not report.enabled or report.tile_size is None or not data.endswith((".yaml", ".yml")):
        return None
    try:
        record = tiled_copy_of(data)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if record is None:
        return None
    if record["size"] != report.tile_size:
        raise ConfigError(f"report.tile_size={report.tile_size}, but {data} holds tiles of {record['size']} px cut "
                          f"from {record['source']}: set report.tile_size={record['size']}")
    return ReportSource(record["source"], record["overlap"])


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
    loads them (``AutoBackend``, its device, precision and head), each tile placed as its dataset places an
    image of the tile's size (``seams.tile_canvas``: with rectangular batches, a border of half a stride or
    more), and its own ``postprocess`` (its NMS: multi-label, its conf, iou and max_det). So a tile that is a
    whole image gets exactly the detections plain validation at ``imgsz=size`` gets."""

    def __init__(self, validator: Any, size: int):
        from ultralytics.nn.autobackend import AutoBackend

        self.validator, self.size = validator, size
        self.backend = AutoBackend(model=str(validator.args.model), device=validator.device,
                                   fp16=validator.args.quantize == 16, end2end=validator.args.nms is False,
                                   verbose=False)
        self.backend.eval()

    def __call__(self, crops: list[np.ndarray]) -> list[Found]:
        import torch

        placed = [tile_canvas(self.validator, c, self.size) for c in crops]
        out: dict[int, Found] = {}
        for shape in {p[0].shape for p in placed}:  # one shape unless an image is smaller than a tile
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
        if validator.args.task != "detect":
            raise ConfigError(f"report.tile_size: scoring through tiles merges boxes; it is for detection models, "
                              f"not task={validator.args.task}")
        if not str(validator.args.model).endswith(".pt"):
            raise ConfigError(f"report.tile_size: scoring through tiles reloads the weights as a .pt file; got "
                              f"model={validator.args.model}")
        detect = _AsValidated(validator, self.size)
        overlap = self.overlap if self.overlap is not None else auto_overlap(_longest_label_side(validator), self.size)
        self.used_overlap = overlap
        replace_predictions(validator, functools.partial(self._replace, validator, detect, overlap))
        set_tile_geometry(validator, self.geometry())  # for the report (collect_validation)

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
