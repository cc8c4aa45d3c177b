"""What a report is built from: plain data, no Ultralytics objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradkit.report.coco import Box, Boxes

__all__ = ["EvalData"]


@dataclass
class EvalData:
    """One evaluation: the validator's own numbers plus every box, for the analyses."""

    names: dict[int, str]
    split: str
    data: str
    model: str
    images: list[int]
    files: dict[int, str]
    sizes: dict[int, tuple[int, int]]  # id -> (width, height)
    gts: list[Box] | Boxes
    preds: list[Box] | Boxes  # a validation's ~10^5 predictions come as columns
    headline: dict[str, float]  # precision, recall, mAP50, mAP50-95 (Ultralytics' definitions)
    per_class: dict[int, dict[str, float]]  # class -> P, R, AP50, AP50-95 for classes present
    instances: dict[int, int]
    image_counts: dict[int, int]
    confusion_matrix: list[list[float]] | None = None
    conf_threshold: float | None = None  # the operating point: None is each class's max-F1 confidence
    plots: dict[str, str] = field(default_factory=dict)  # name -> PNG path written by Ultralytics
    #: per image, the validator's statistics its AP is computed from (tp, conf, pred_cls, target_cls), for the
    #: intervals; None where they were not recorded (predictions read from the validator's COCO json)
    image_stats: list[dict[str, Any]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
