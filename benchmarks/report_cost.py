"""Cost of the evaluation report vs the Ultralytics validation it is built from.

Validates a model on a 1000-image synthetic val set, then times building the report (copying the
validator's data, COCO metrics and buckets with faster-coco-eval, error analysis, rendering).
Also prints the whole extra of ``gradkit val`` over a plain ``yolo val``: recording the predictions
(instead of ``save_json=True``, which makes Ultralytics dump predictions.json and run its own COCO
evaluation) plus the report.

    python benchmarks/report_cost.py [--images 1000 --imgsz 160 --weights best.pt]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--weights", default=None, help="a trained .pt; default: train yolo26n.yaml for 3 epochs")
    args = ap.parse_args()
    from ultralytics import YOLO

    from gradkit.integrations.ultralytics import collect_validation, record_predictions
    from gradkit.report import build_report, write_report
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-reportcost-"))
    # all but two images in the val split
    spec = SynthSpec(images=args.images + 40, imgsz=args.imgsz, seed=1, splits=(38 / (args.images + 40),
                                                                                args.images / (args.images + 40),
                                                                                2 / (args.images + 40)))
    data = generate_dataset(tmp / "data", spec, progress=False)
    weights = args.weights
    if weights is None:
        m = YOLO("yolo26n.yaml")
        m.train(data=str(data), epochs=3, imgsz=args.imgsz, batch=16, workers=0, plots=False, val=False,
                project=str(tmp), name="train", verbose=False, device="cpu")
        weights = str(Path(m.trainer.save_dir) / "weights" / "best.pt")
    captured = {}
    model = YOLO(weights)

    def on_val_end(validator):
        t0 = time.perf_counter()
        ev = collect_validation(validator)
        t1 = time.perf_counter()
        report = build_report(ev)
        t2 = time.perf_counter()
        write_report(report, tmp / "report")
        t3 = time.perf_counter()
        build_report(ev, resamples=0)  # the same report without its intervals (report.resamples: 0)
        t4 = time.perf_counter()
        captured.update(report_s=t3 - t0, collect_s=t1 - t0, build_s=t2 - t1, write_s=t3 - t2,
                        intervals_s=(t2 - t1) - (t4 - t3))
        captured["images"] = len(ev.images)
        captured["preds"] = len(ev.preds)

    common = {"data": str(data), "split": "val", "imgsz": args.imgsz, "batch": 16, "plots": True, "verbose": False,
              "project": str(tmp), "device": "cpu"}
    plain = []
    for _ in range(2):  # plain validation, as `yolo val` runs it (the first pass also warms caches)
        t0 = time.perf_counter()
        YOLO(weights).val(**common, name="plain")
        plain.append(time.perf_counter() - t0)
    model.add_callback("on_val_start", record_predictions)  # what `gradkit val` does
    model.add_callback("on_val_end", on_val_end)
    t0 = time.perf_counter()
    model.val(**common, name="val")
    total = time.perf_counter() - t0
    val_s = total - captured["report_s"]
    print(f"\n{captured['images']} val images at {args.imgsz}px, {captured['preds']} predictions (conf >= 0.001)")
    print(f"{'plain validation (s)':44}{plain[-1]:>8.2f}")
    print(f"{'validation recording predictions (s)':44}{val_s:>8.2f}")
    print(f"{'gradkit report (s)':44}{captured['report_s']:>8.2f}")
    for part in ("collect", "build", "write"):
        print(f"{'  ' + part + ' (s)':44}{captured[part + '_s']:>8.2f}")
    print(f"{'    of it the intervals, 200 draws (s)':44}{captured['intervals_s']:>8.2f}")
    print(f"{'report / validation':44}{captured['report_s'] / val_s:>8.3f}")
    without = captured["report_s"] - captured["intervals_s"]
    print(f"{'report without intervals / validation':44}{without / val_s:>8.3f}")
    print(f"{'gradkit val / plain validation - 1':44}{(total - plain[-1]) / plain[-1]:>8.3f}")

if __name__ == "__main__":
    main()
