"""Hand-made evaluations for report tests (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradkit.report import EvalData
from gradkit.report.coco import Box


def png(path: Path, value: int, size=(60, 80)) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.full((*size, 3), value, np.uint8)
    img[10:20, 10:30] = 255 - value
    cv2.imwrite(str(path), img)
    return path


def hand_made_evaluation(data_dir: Path, names=None) -> EvalData:
    """Six images (four with a scratch, two defect-free) and predictions of known outcome."""
    files = {i: str(png(data_dir / f"img{i}.png", 40 * i)) for i in range(6)}
    gts = [Box(i, 0, 0.1, 0.1, 0.4, 0.3) for i in range(4)]
    preds = [Box(0, 0, 0.1, 0.1, 0.4, 0.3, 0.9), Box(1, 0, 0.6, 0.6, 0.9, 0.9, 0.8), Box(4, 0, 0.2, 0.2, 0.5, 0.5, 0.7),
             Box(2, 0, 0.12, 0.1, 0.4, 0.3, 0.3)]
    names = names or {0: "scratch", 1: "pit"}
    return EvalData(names=names, split="val", data="d.yaml", model="runs/exp/weights/best.pt", images=list(range(6)),
                    files=files, sizes=dict.fromkeys(range(6), (80, 60)), gts=gts, preds=preds,
                    headline={"precision": 0.5, "recall": 0.5, "mAP50": 0.4, "mAP50-95": 0.2},
                    per_class={0: {"precision": 0.5, "recall": 0.5, "AP50": 0.4, "AP50-95": 0.2}},
                    instances={0: 4, 1: 0}, image_counts={0: 4, 1: 0}, conf_threshold=0.5,
                    image_stats=[_stats(hits, conf, objects) for hits, conf, objects in (
                        ([10], [0.9], 1), ([0], [0.8], 1), ([9], [0.3], 1), ([], [], 1), ([0], [0.7], 0),
                        ([], [], 0))])


def _stats(hits: list[int], conf: list[float], objects: int) -> dict[str, np.ndarray]:
    """One image's validator statistics for class 0: per prediction, at how many of the ten IoU thresholds it hits
    (the first ones: IoU 1 hits all ten, 0.93 nine), its confidence, and ``objects`` labels."""
    return {"tp": np.array([[k < n for k in range(10)] for n in hits], bool).reshape(-1, 10),
            "conf": np.array(conf, float), "pred_cls": np.zeros(len(hits)), "target_cls": np.zeros(objects)}
