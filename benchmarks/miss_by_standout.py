"""Which held-out defects a trained detector misses: the faint ones or all of them? (no training)

    python benchmarks/miss_by_standout.py --data DIR/data.yaml --weights RUN/weights/last.pt [more weights]

For every labelled defect of the held-out images (``val`` and ``test``), its *standout* (the share of
the box whose pixels differ from the ring around it: the measure behind ``gradkit plan``'s faint-defect
rule, ``gradkit.data.fingerprint``) and its outcome under each model (the evaluation report's error
analysis at confidence ``--conf``: found, or missed as mislocalised, confused or unseen). Prints per
class and per model the share found among the defects that stand out (standout >= ``STANDS_OUT``) and
among the faint ones. If faint defects are missed and clear ones found, the failure is contrast, not
the class; if both are missed alike, it is something else (too few steps, size, shape).
Each model predicts at the image size it was trained at (its ``args.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from gradkit.data.fingerprint import _image_stats, _standout
from gradkit.data.splits import list_split_images
from gradkit.data.standout import STANDS_OUT
from gradkit.report.coco import Box
from gradkit.report.errors import MISS_CAUSES, analyse_errors


def held_out_objects(data_yaml: Path) -> list[tuple[Path, list[tuple[int, tuple[float, ...]]], list[float]]]:
    """(image, labels (class, normalised xywh), standout per label) for every val and test image."""
    cfg = yaml.safe_load(data_yaml.read_text())
    root = Path(cfg.get("path") or data_yaml.parent)
    images = list_split_images([root / cfg["val"], root / cfg["test"]]).images
    out = []
    for img in images:
        label = img.parent.parent.parent / "labels" / img.parent.name / (img.stem + ".txt")
        rows = [ln.split() for ln in label.read_text().splitlines() if ln.strip()] if label.exists() else []
        labels = [(int(r[0]), tuple(float(v) for v in r[1:5])) for r in rows]
        gray = _image_stats(img)[0]
        boxes = [b for _, b in labels]
        out.append((img, labels, [_standout(gray, k, boxes) for k in range(len(boxes))]))
    return out


def outcomes(weights: Path, objects: list, conf: float) -> list[str]:
    """Each labelled defect's outcome under one model, in the order of ``objects``."""
    from ultralytics import YOLO

    imgsz = int(yaml.safe_load((weights.parent.parent / "args.yaml").read_text())["imgsz"])
    model = YOLO(str(weights))
    result = []
    for img, labels, _ in objects:
        pred = model.predict(str(img), imgsz=imgsz, conf=conf, verbose=False)[0]
        gts = [Box(0, c, x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2) for c, (x, y, bw, bh) in labels]
        preds = [Box(0, int(c), *xyxy, s) for xyxy, c, s in
                 zip(pred.boxes.xyxyn.tolist(), pred.boxes.cls.tolist(), pred.boxes.conf.tolist(), strict=True)]
        _, per_image = analyse_errors(gts, preds, [0], conf=conf)
        result += [kind for _, kind, _ in per_image[0].objects] if labels else []
    return result


def table(names: dict[int, str], objects: list, runs: dict[str, list[str]]) -> str:
    cls = np.array([c for _, labels, _ in objects for c, _ in labels])
    standout = np.array([s for _, _, st in objects for s in st], float)
    clear = standout >= STANDS_OUT
    lines = [f"| class | defects (stand out) | {' | '.join(f'{m}: found, clear / faint (misses)' for m in runs)} |",
             "|---|---|" + "---|" * len(runs)]
    for c, name in names.items():
        sel = cls == c
        cells = []
        for kinds in runs.values():
            found = np.array(kinds) == "found"
            shares = " / ".join(f"{found[sel & part].mean():.2f}" if (sel & part).any() else "-"
                                for part in (clear, ~clear))
            missed = [f"{int((sel & (np.array(kinds) == cause)).sum())} {cause}" for cause in MISS_CAUSES]
            cells.append(f"{shares} ({', '.join(missed)})")
        lines.append(f"| {name} | {int(sel.sum())} ({int((sel & clear).sum())}) | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="the dataset YAML (its val and test are scored)")
    p.add_argument("--weights", required=True, nargs="+", type=Path, help="RUN/weights/last.pt, one or more")
    p.add_argument("--conf", type=float, default=0.25, help="the confidence a detection needs to count")
    args = p.parse_args()
    objects = held_out_objects(args.data)
    names = {int(k): v for k, v in yaml.safe_load(args.data.read_text())["names"].items()}
    runs = {w.parent.parent.name: outcomes(w, objects, args.conf) for w in args.weights}
    print(f"{sum(len(o[1]) for o in objects)} defects on {len(objects)} held-out images; found = a detection of "
          f"its class at conf >= {args.conf} with IoU >= 0.5; stand out: standout >= {STANDS_OUT}\n")
    print(table(names, objects, runs))


if __name__ == "__main__":
    main()
