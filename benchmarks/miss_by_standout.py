"""Which held-out defects a trained detector misses: the faint ones or all of them? (no training)

    python benchmarks/miss_by_standout.py --data DIR/data.yaml --weights RUN/weights/last.pt [more weights]

For every labelled defect of the held-out images (``val`` and ``test``), its *standout*: the share of
the standing-out energy inside its box that belongs to the defect rather than to the texture, judged
against the ring around the box (``gradkit.data.standout.defect_share``, the measure behind ``gradkit
plan``'s faint-defect rule); and its outcome under each model: the evaluation report's error analysis
(``gradkit.report.errors``) applied to Ultralytics' ``predict`` at confidence ``--conf``: found, or
missed as mislocalised, confused or unseen. Prints per class and per model the share found among the
defects that stand out (standout >= ``STANDS_OUT``) and among the faint ones (defects without a ring to
judge by are in neither). If faint defects are missed and clear ones found, contrast is what fails; if
both are missed alike, it is something else. Each model predicts at the image size it was trained at
(its run folder's ``args.yaml``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from gradkit.data.check import CheckResult, _check_labels, _label_path, _read_splits
from gradkit.data.fingerprint import _image_stats, _standout
from gradkit.data.splits import list_split_images
from gradkit.data.standout import STANDS_OUT
from gradkit.report.coco import Box
from gradkit.report.errors import MISS_CAUSES, analyse_errors

Labels = list[tuple[int, tuple[float, ...]]]  # (class, normalised xc, yc, w, h) per defect


def held_out_objects(data_yaml: Path) -> tuple[dict[int, str], list[tuple[Path, Labels, list[float]]]]:
    """The class names, and (image, labels, standout per label) for every val and test image."""
    splits, names = _read_splits(data_yaml)
    images = list_split_images(splits.get("val", []) + splits.get("test", [])).images
    if not images:
        raise SystemExit(f"{data_yaml}: no val or test images")
    out = []
    for img in images:
        label = _label_path(img)
        found = CheckResult()
        rows = _check_labels(label, len(names), "held-out", found) if label.exists() else []
        errors = [f for f in found.findings if f.severity == "error"]
        if errors:  # a dropped label line would count its defect as never there
            raise SystemExit(f"{errors[0].path}:{errors[0].line or ''}: {errors[0].message} (gradkit check data=...)")
        labels = [(c, tuple(b)) for c, b in rows]
        stats = _image_stats(img)
        if stats is None:
            raise SystemExit(f"{img}: cannot read the image")
        boxes = [b for _, b in labels]
        out.append((img, labels, [_standout(stats[0], k, boxes) for k in range(len(boxes))]))
    return names, out


def match_outcomes(labels: Labels, pred_xyxyn: list, pred_cls: list, pred_conf: list, conf: float) -> list[str]:
    """Each labelled defect's outcome on one image ("found" or one of ``MISS_CAUSES``), in label order:
    the report's error analysis of the predictions (normalised x0, y0, x1, y1) at ``conf``."""
    gts = [Box(0, c, x - w / 2, y - h / 2, x + w / 2, y + h / 2) for c, (x, y, w, h) in labels]
    preds = [Box(0, int(c), *xyxy, float(s)) for xyxy, c, s in zip(pred_xyxyn, pred_cls, pred_conf, strict=True)]
    _, per_image = analyse_errors(gts, preds, [0], conf=conf)
    return [kind for _, kind, _ in per_image[0].objects]


def outcomes(weights: Path, objects: list, conf: float) -> list[str]:
    """Each labelled defect's outcome under one model, in the order of ``objects``."""
    from ultralytics import YOLO

    imgsz = int(yaml.safe_load((weights.parent.parent / "args.yaml").read_text(encoding="utf-8"))["imgsz"])
    model = YOLO(str(weights))
    result = []
    for img, labels, _ in objects:
        boxes = model.predict(str(img), imgsz=imgsz, conf=conf, verbose=False)[0].boxes
        result += match_outcomes(labels, boxes.xyxyn.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), conf)
    return result


def table(names: dict[int, str], objects: list, runs: dict[str, list[str]]) -> str:
    """Markdown: per class, the defects (standing out, unmeasured) and per model the share found among
    the clear and among the faint ones, with the misses by cause."""
    cls = np.array([c for _, labels, _ in objects for c, _ in labels])
    standout = np.array([s for _, _, st in objects for s in st], float)
    clear, faint = standout >= STANDS_OUT, standout < STANDS_OUT  # NaN (no ring to judge by): neither
    columns = " | ".join(f"{m}: found, clear / faint (misses)" for m in runs)
    lines = [f"| class | defects (stand out, unmeasured) | {columns} |",
             "|---|---|" + "---|" * len(runs)]
    for c, name in names.items():
        sel = cls == c
        cells = []
        for kinds in runs.values():
            kinds = np.array(kinds)
            shares = " / ".join(f"{(kinds[sel & part] == 'found').mean():.2f}" if (sel & part).any() else "-"
                                for part in (clear, faint))
            missed = ", ".join(f"{int((sel & (kinds == cause)).sum())} {cause}" for cause in MISS_CAUSES)
            cells.append(f"{shares} ({missed})")
        counts = f"{int(sel.sum())} ({int((sel & clear).sum())}, {int((sel & ~clear & ~faint).sum())})"
        lines.append(f"| {name} | {counts} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, type=Path, help="the dataset YAML (its val and test are scored)")
    p.add_argument("--weights", required=True, nargs="+", type=Path, help="RUN/weights/last.pt, one or more")
    p.add_argument("--conf", type=float, default=0.25, help="the confidence a detection needs to count")
    args = p.parse_args()
    runs_named = [w.parent.parent.name for w in args.weights]  # the run folder names the column
    if len(set(runs_named)) < len(runs_named):
        raise SystemExit(f"--weights: two runs share a folder name ({', '.join(runs_named)}): one column each")
    try:
        names, objects = held_out_objects(args.data)
    except ValueError as exc:  # the dataset YAML's own errors, one line each
        raise SystemExit(str(exc)) from None
    runs = {name: outcomes(w, objects, args.conf) for name, w in zip(runs_named, args.weights, strict=True)}
    print(f"{sum(len(o[1]) for o in objects)} defects on {len(objects)} held-out images; found = a detection of "
          f"its class at conf >= {args.conf} with IoU >= 0.5; stand out: standout >= {STANDS_OUT}\n")
    print(table(names, objects, runs))


if __name__ == "__main__":
    main()
