"""The report's precision floor on the estimate or on its lower bound: which classes each sets aside, and
what that does to the escape and false-reject rates (no training).

    python benchmarks/precision_floor.py --data HELD_OUT.yaml --weights RUN/weights/last.pt [more weights]

Each model is validated once on the ``test`` split of ``--data`` (Ultralytics' ``val`` at the image size of
its run folder's ``args.yaml``, every prediction down to its confidence 0.001, recorded by the evaluation
report's own hook); the inspection KPIs are then computed twice from the same predictions: by report schema
9's rule (each class at its max-F1 threshold, set aside where the precision there is below ``MIN_PRECISION``)
and by the rule now (each class at its best *trusted* threshold, where the precision's one-sided lower bound at
``PRECISION_CONFIDENCE`` clears the floor; set aside without one). Prints per class the max-F1
point (right boxes of boxes, precision, bound, AP50) and what each rule does with it (kept, set aside, or
moved to another threshold), then per model the escape and false-reject rates under each rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from gradkit.report.coco import Boxes
from gradkit.report.inspection import (
    MIN_PRECISION,
    PRECISION_CONFIDENCE,
    inspection_kpis,
    max_f1_points,
    precision_lower_bound,
)

#: the rule of report schema 9 (OperatingPoint): the max-F1 threshold, set aside where its precision is below the floor
ESTIMATE = None


def validated(weights: Path, data: Path):
    """The evaluation report's data (``EvalData``) for ``weights`` on ``data``'s test split."""
    from ultralytics import YOLO

    from gradkit.integrations.ultralytics import collect_validation, record_predictions

    args = weights.parent.parent / "args.yaml"
    if not args.is_file():
        raise SystemExit(f"{weights}: no args.yaml two folders up, so no training image size")
    imgsz = int(yaml.safe_load(args.read_text(encoding="utf-8"))["imgsz"])
    yolo, out = YOLO(str(weights)), {}
    yolo.add_callback("on_val_start", record_predictions)
    yolo.add_callback("on_val_end", lambda validator: out.update(ev=collect_validation(validator)))
    run = weights.parent.parent  # Ultralytics writes a folder per validation: beside the run, not in the cwd
    yolo.val(data=str(data), split="test", imgsz=imgsz, batch=16, device="cpu", plots=False, verbose=False,
             project=str(run.parent), name=run.name + "-floor", exist_ok=True)
    return out["ev"], imgsz


def class_rows(ev, kpis: dict[float, dict]) -> list[str]:
    """One table row per class with a true positive at some confidence: its max-F1 point and what each rule
    does with it."""
    gts, preds = Boxes.from_boxes(ev.gts), Boxes.from_boxes(ev.preds)
    points = max_f1_points(gts, preds, sorted(ev.names))
    rows = []
    for i, (c, name) in enumerate(sorted(ev.names.items())):
        p = points[c]
        if not p.boxes:
            continue
        kept = [_fate(k["per_class"][i]) for k in kpis.values()]
        ap50 = (ev.per_class.get(c) or {}).get("AP50")
        rows.append(f"| {name} | {'–' if ap50 is None else f'{ap50:.3f}'} | {p.threshold:.3f} | {p.tp} of {p.boxes}"
                    f" | {p.precision:.3f} | {precision_lower_bound(p.tp, p.boxes):.3f} | {' | '.join(kept)} |")
    return rows


def _fate(row: dict) -> str:
    """What a rule did with a class's max-F1 point: kept it, set the class aside, or moved it to a trusted one."""
    if row["set_aside"]:
        return "set aside"
    if row.get("untrusted_max_f1"):
        return f"moved to {row['threshold']:.3f} ({row['tp']} of {row['tp'] + row['fp']})"
    return "kept"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="dataset YAML whose test split is scored")
    ap.add_argument("--weights", type=Path, nargs="+", required=True, help="RUN/weights/last.pt, one or more")
    args = ap.parse_args()
    rules = {ESTIMATE: "schema 9 rule", PRECISION_CONFIDENCE: f"trusted at {PRECISION_CONFIDENCE:g}"}
    totals = []
    for weights in args.weights:
        ev, imgsz = validated(weights, args.data)
        kpis = {c: inspection_kpis(ev.gts, ev.preds, ev.images, ev.names, precision_confidence=c) for c in rules}
        print(f"\n{weights} ({imgsz} px), floor {MIN_PRECISION:g}\n")
        print("| class | AP50 | max-F1 threshold | right of boxes | precision | bound | "
              + " | ".join(rules.values()) + " |")
        print("|---|---|---|---|---|---|" + "---|" * len(rules))
        print("\n".join(class_rows(ev, kpis)))
        totals.append((weights, kpis))
    print("\n| model | " + " | ".join(f"escape / false-reject ({r})" for r in rules.values()) + " |")
    print("|---|" + "---|" * len(rules))
    for weights, kpis in totals:
        print(f"| {weights} | " + " | ".join(
            f"{k['escaped_images']}/{k['defective_images']} / {k['false_rejected_images']}/{k['defect_free_images']}"
            for k in kpis.values()) + " |")


if __name__ == "__main__":
    main()
