"""Reading a finished Ultralytics validation into plain data for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gradkit.integrations.ultralytics.seams import (
    SeamError,
    check_recorded_statistics,
    check_validator_results,
    json_predictions,
    latest_image_stats,
    prediction_recorder,
    scaled_predictions,
    set_prediction_recorder,
    tile_geometry,
    wrap_update_metrics,
)
from gradkit.report.data import EvalData

__all__ = ["PredictionRecorder", "collect_validation", "record_predictions", "validate_for_report"]


class PredictionRecorder:
    """Every prediction of one validation run, in original-image pixels, taken beside the metrics.

    Ultralytics keeps per-prediction data only with ``save_json=True``, which also dumps
    predictions.json and runs its own COCO evaluation: +50% validation time on 1000 images here
    (``benchmarks/report_cost.py``). Recording costs a copy of each image's boxes.
    """

    def __init__(self, validator):
        self.rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []
        #: per image, the statistics the validator's AP is computed from (the report resamples the images)
        self.image_stats: list[dict[str, np.ndarray]] = []

        def record(preds, batch):
            for si, pred in enumerate(preds):
                pbatch, scaled = scaled_predictions(validator, si, pred, batch)
                self.rows.append((str(pbatch["im_file"]), scaled["bboxes"].cpu().numpy().reshape(-1, 4),
                                  scaled["conf"].cpu().numpy().reshape(-1), scaled["cls"].cpu().numpy().reshape(-1)))
            recorded = latest_image_stats(validator, len(preds))
            counts = [len(c) for _, _, c, _ in self.rows[len(self.rows) - len(preds):]]
            if [len(s["conf"]) for s in recorded] != counts:  # the statistics of other images, or not per image
                raise SeamError(f"{type(validator).__qualname__}.metrics.stats' last {len(preds)} entries hold "
                                f"{[len(s['conf']) for s in recorded]} predictions, this batch's images {counts}: "
                                "they are not one entry per image, as gradkit's report resamples them")
            self.image_stats.extend(recorded)

        wrap_update_metrics(validator, record)

    def boxes(self, index_of: dict[str, int], sizes: dict[int, tuple[int, int]]):
        """The recorded predictions as normalised :class:`~gradkit.report.coco.Boxes`."""
        from gradkit.report.coco import Boxes

        if not self.rows:
            return Boxes([], [], [], [], [], [], [])
        image = np.concatenate([np.full(len(c), index_of[f], np.int64) for f, _, c, _ in self.rows])
        xyxy = np.concatenate([b for _, b, _, _ in self.rows]).astype(np.float64)
        wh = np.array([sizes[i] for i in range(len(sizes))], np.float64).reshape(-1, 2)[image]
        return Boxes(image, np.concatenate([k for *_, k in self.rows]), xyxy[:, 0] / wh[:, 0], xyxy[:, 1] / wh[:, 1],
                     xyxy[:, 2] / wh[:, 0], xyxy[:, 3] / wh[:, 1], np.concatenate([c for _, _, c, _ in self.rows]))


def record_predictions(validator) -> None:
    """``on_val_start`` callback: record predictions for the report (standalone validation only)."""
    if not validator.training:
        set_prediction_recorder(validator, PredictionRecorder(validator))


def collect_validation(validator) -> EvalData:
    """Copy what a report needs out of a finished ``DetectionValidator`` (call at ``on_val_end``).

    Uses the validator's own metrics (never re-computed), the predictions recorded by
    :func:`record_predictions` (else its ``jdict``, filled with ``save_json=True``) and its dataset's
    labels as ground truth.
    """
    from gradkit.report.build import without_cyclic_gc

    with without_cyclic_gc():
        return _collect(validator)


def label_image_hw(label: dict) -> tuple[int, int]:
    """(height, width) of the image an Ultralytics dataset label describes: its ``shape``, or, where rectangular
    batches popped it (``rect=True``, and validation), the EXIF-upright size read from the image's header."""
    if "shape" in label:
        h, w = (int(v) for v in label["shape"])
        return h, w
    from PIL import Image

    from gradkit.data.orientation import upright_size

    with Image.open(label["im_file"]) as im:  # reads the header only
        w, h = upright_size(im)  # Ultralytics loads (and labels describe) the EXIF-upright image
    return h, w


def _collect(validator) -> EvalData:
    from gradkit.report.coco import Box

    check_validator_results(validator)
    dataset = validator.dataloader.dataset
    metrics = validator.metrics
    box = metrics.box
    images, files, sizes, gts = [], {}, {}, []
    by_name: dict[str, int] = {}
    by_file: dict[str, int] = {}
    for i, lab in enumerate(dataset.labels):
        h, w = label_image_hw(lab)
        images.append(i)
        files[i] = lab["im_file"]
        sizes[i] = (w, h)
        by_name[Path(lab["im_file"]).name] = i
        by_file[str(lab["im_file"])] = i
        for c, (x, y, bw, bh) in zip(lab["cls"].reshape(-1).tolist(), lab["bboxes"].tolist(), strict=True):
            gts.append(Box(i, int(c), x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2))
    recorder = prediction_recorder(validator)
    if recorder is not None:
        preds = recorder.boxes(by_file, sizes)
    else:
        preds = _jdict_boxes(validator, by_name, images, sizes)
    per_class = {}
    for k, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(k)
        per_class[int(c)] = {"precision": float(p), "recall": float(r), "AP50": float(ap50), "AP50-95": float(ap)}
    nt_class = metrics.nt_per_class if metrics.nt_per_class is not None else np.zeros(len(validator.names))
    nt_image = metrics.nt_per_image if metrics.nt_per_image is not None else np.zeros(len(validator.names))
    cm = getattr(validator, "confusion_matrix", None)
    save_dir = Path(validator.save_dir)
    plots = {name: str(save_dir / f"Box{name}_curve.png") for name in ("PR", "F1", "P", "R")
             if (save_dir / f"Box{name}_curve.png").exists()}
    if (save_dir / "confusion_matrix_normalized.png").exists():
        plots["confusion"] = str(save_dir / "confusion_matrix_normalized.png")
    return EvalData(
        names={int(k): str(v) for k, v in validator.names.items()},
        split=str(validator.args.split),
        data=_data_path(validator.args.data),
        model=str(validator.args.model),
        images=images,
        files=files,
        sizes=sizes,
        gts=gts,
        preds=preds,
        headline={"precision": float(box.mp), "recall": float(box.mr), "mAP50": float(box.map50),
                  "mAP50-95": float(box.map)},
        per_class=per_class,
        instances={i: int(n) for i, n in enumerate(nt_class)},
        image_counts={i: int(n) for i, n in enumerate(nt_image)},
        confusion_matrix=cm.matrix.tolist() if cm is not None and cm.matrix.sum() > 0 else None,
        plots=plots,
        image_stats=_checked(recorder.image_stats, box, gts, len(images)) if recorder is not None else None,
        extra={"speed_ms": {k: float(v) for k, v in validator.speed.items()}, "tiles": tile_geometry(validator),
               "images_skipped": _images_skipped(validator, len(images)),
               "classes": _class_filter(getattr(validator.args, "classes", None)),
               "validated_with": _validation_args(validator.args),
               "data_class_names": _data_names_if_other(validator)},
    )


def _checked(image_stats: list[dict[str, np.ndarray]], box, gts, images: int) -> list[dict[str, np.ndarray]] | None:
    """The recorded per-image statistics, once they are one per image in the dataset's order (each holds that
    image's labels) and give the validator's own mAP; None without images."""
    if not image_stats:
        return None
    labels = np.bincount([g.image for g in gts], minlength=images).tolist() if gts else [0] * images
    if [len(s["target_cls"]) for s in image_stats] != labels:
        raise SeamError(f"the validator's per-image statistics hold {len(image_stats)} images whose label counts "
                        f"are not those of the dataset's {images} images in its order (ultralytics "
                        "metrics.stats): gradkit's report resamples them image by image")
    check_recorded_statistics(image_stats, float(box.map50), float(box.map))
    return image_stats


#: The validator's arguments that change what a report scores (the image size, the NMS and its limits, ...).
VALIDATION_ARGS = ("imgsz", "batch", "conf", "iou", "max_det", "half", "rect", "augment", "agnostic_nms",
                   "single_cls", "classes")


def _validation_args(args) -> dict[str, Any]:
    """The validation's own arguments among :data:`VALIDATION_ARGS`, as JSON values."""
    import json

    return json.loads(json.dumps({k: getattr(args, k, None) for k in VALIDATION_ARGS}, default=str))


def _class_filter(classes) -> list[int] | None:
    """Ultralytics' ``classes=`` (one id or several; None: every class) as a list of ids."""
    if classes is None:
        return None
    return [int(c) for c in (classes if isinstance(classes, list | tuple) else [classes])]


def _data_path(data) -> str:
    """The data YAML as a path that names the file wherever the report is read (a relative one resolved against
    the working folder, as Ultralytics read it); a dataset name Ultralytics knows stays as given."""
    path = Path(str(data))
    return str(path.resolve()) if path.is_file() else str(data)


def _split_places(validator) -> list[Path]:
    """The folders and list files of the validated split, as Ultralytics resolved them (none where unknown)."""
    data = getattr(validator, "data", None)
    places = data.get(str(validator.args.split)) if isinstance(data, dict) else None
    return [Path(p) for p in (places if isinstance(places, list) else [places])] if places else []


def _images_skipped(validator, read: int) -> int | None:
    """How many images the split names that the validation did not read (Ultralytics drops an image it cannot
    read, or whose labels it cannot, with one log line): gradkit's own listing of the split against what was read;
    None where the split's places are unknown."""
    from gradkit.data.splits import list_split_images

    places = _split_places(validator)
    if not places:
        return None
    listed = list_split_images(places)
    return max(len(listed.images) + len(listed.unchecked) + listed.extra_reads - read, 0)


def _data_names_if_other(validator) -> dict[int, str] | None:
    """The data YAML's class names where they are not the model's (whose names the report shows), else None; None
    for a single-class run (``single_cls``: Ultralytics scores every box as its one class, on purpose)."""
    if getattr(validator.args, "single_cls", False):
        return None
    data = getattr(validator, "data", None)
    names = data.get("names") if isinstance(data, dict) else None
    if not isinstance(names, dict):
        return None
    ours = {int(k): str(v) for k, v in names.items()}
    return None if ours == {int(k): str(v) for k, v in validator.names.items()} else ours


def _jdict_boxes(validator, by_name: dict[str, int], images: list[int], sizes: dict[int, tuple[int, int]]):
    """Predictions from Ultralytics' ``jdict`` (COCO json: pixel xywh from the top-left corner)."""
    from gradkit.report.coco import Boxes

    inv_map = {v: k for k, v in enumerate(validator.class_map)}
    jdict = json_predictions(validator)
    image = np.array([by_name[d["file_name"]] for d in jdict], np.int64)
    wh = np.array([sizes[i] for i in images], np.float64).reshape(-1, 2)[image]  # dataset index == position
    xywh = np.array([d["bbox"] for d in jdict], np.float64).reshape(-1, 4)  # pixels, top-left corner
    x0, y0 = xywh[:, 0] / wh[:, 0], xywh[:, 1] / wh[:, 1]
    preds = Boxes(image, [inv_map[d["category_id"]] for d in jdict], x0, y0, x0 + xywh[:, 2] / wh[:, 0],
                  y0 + xywh[:, 3] / wh[:, 1], [d["score"] for d in jdict])
    return preds


def validate_for_report(weights: str | Path, data: str, split: str, save_dir: Path, tiles=None,
                        **val_args) -> EvalData:
    """Run Ultralytics validation of ``weights`` with what a report needs, and collect it; ``tiles`` (a
    :class:`~gradkit.integrations.ultralytics.sliced.TiledValidation`) scores detections made over tiles."""
    from ultralytics import YOLO

    captured: dict[str, EvalData] = {}
    model = YOLO(str(weights))
    model.add_callback("on_val_start", record_predictions)
    if tiles is not None:  # after the recorder: it records the merged detections
        model.add_callback("on_val_start", tiles)
    model.add_callback("on_val_end", lambda v: captured.__setitem__("data", collect_validation(v)))
    model.val(data=data, split=split, plots=True, project=str(save_dir.parent),
              name=save_dir.name, exist_ok=True, **val_args)
    return captured["data"]


