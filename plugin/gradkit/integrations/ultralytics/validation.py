"""Reading a finished Ultralytics validation into plain data for the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradkit.report.data import EvalData

__all__ = ["collect_validation", "validate_for_report"]


def collect_validation(validator) -> EvalData:
    """Copy what a report needs out of a finished ``DetectionValidator`` (call at ``on_val_end``).

    Uses the validator's own metrics (never re-computed), its ``jdict`` predictions (requires
    ``save_json=True``) and its dataset's labels as ground truth.
    """
    from gradkit.report.coco import Box, Boxes

    dataset = validator.dataloader.dataset
    metrics = validator.metrics
    box = metrics.box
    images, files, sizes, gts = [], {}, {}, []
    by_name: dict[str, int] = {}
    from PIL import Image

    for i, lab in enumerate(dataset.labels):
        if "shape" in lab:  # rectangular validation pops it
            h, w = (int(v) for v in lab["shape"])
        else:
            with Image.open(lab["im_file"]) as im:  # reads the header only
                w, h = im.size
        images.append(i)
        files[i] = lab["im_file"]
        sizes[i] = (w, h)
        by_name[Path(lab["im_file"]).name] = i
        for c, (x, y, bw, bh) in zip(lab["cls"].reshape(-1).tolist(), lab["bboxes"].tolist(), strict=True):
            gts.append(Box(i, int(c), x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2))
    inv_map = {v: k for k, v in enumerate(validator.class_map)}
    jdict = validator.jdict or []
    image = np.array([by_name[d["file_name"]] for d in jdict], np.int64)
    wh = np.array([sizes[i] for i in images], np.float64).reshape(-1, 2)[image]  # dataset index == position
    xywh = np.array([d["bbox"] for d in jdict], np.float64).reshape(-1, 4)  # pixels, top-left corner
    x0, y0 = xywh[:, 0] / wh[:, 0], xywh[:, 1] / wh[:, 1]
    preds = Boxes(image, [inv_map[d["category_id"]] for d in jdict], x0, y0, x0 + xywh[:, 2] / wh[:, 0],
                  y0 + xywh[:, 3] / wh[:, 1], [d["score"] for d in jdict])
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
        data=str(validator.args.data),
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
        extra={"speed_ms": {k: float(v) for k, v in validator.speed.items()}},
    )


def validate_for_report(weights: str | Path, data: str, split: str, save_dir: Path, **val_args) -> EvalData:
    """Run Ultralytics validation of ``weights`` with what a report needs, and collect it."""
    from ultralytics import YOLO

    captured: dict[str, EvalData] = {}
    model = YOLO(str(weights))
    model.add_callback("on_val_end", lambda v: captured.__setitem__("data", collect_validation(v)))
    model.val(data=data, split=split, save_json=True, plots=True, project=str(save_dir.parent),
              name=save_dir.name, exist_ok=True, **val_args)
    return captured["data"]


