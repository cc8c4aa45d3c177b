"""How far apart trained runs really are on one held-out split: each run's AP with its 95% interval over resamples
of the images, and each run's difference from the first, paired (the same draws of images for every run).

    python benchmarks/ap_spread.py --held-out HELD_OUT.yaml RUN_A RUN_B [RUN_C ...] [--resamples 1000]
    python benchmarks/ap_spread.py --generate photo --images 1000 --set-seed 2000 RUN_A ...   # a wider held-out set

``--generate SET`` draws a new set of ``defect_quality.py``'s renderer SET (at ``--set-imgsz``, another seed than
the benchmark's 1000, so none of its images was trained on) and scores every split of it: more images than the
benchmark's held-out split, for narrower intervals on the same trained models.

Each RUN is a training run folder (``RUN/weights/last.pt``, scored at the size its last epochs trained at, unless
``--imgsz``: ``RUN/args.yaml``'s ``imgsz``, or the final size its ``gradkit_summary.json`` records where
``size.final_scale`` switched to one); the held-out YAML's ``test`` split is scored, as ``defect_quality.py`` scores
it. The interval of a run says what another draw of images like these could give the same model; the paired interval
of a difference says whether these images tell two models apart. Neither says what another training of the same
recipe gives (the seed's and the time budget's spread): that needs several trainings (README, "Where the issue's
goals stood").
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
os.environ.setdefault("YOLO_OFFLINE", "1")


def _statistics(run: Path, held_out: Path, imgsz: int | None, out: Path):
    """The validation of ``run``'s last weights on the held-out test split, with its per-image statistics."""
    from defect_quality import last_trained_size

    from gradkit.integrations.ultralytics import validate_for_report

    size = imgsz or last_trained_size(run)
    logging.getLogger("ultralytics").setLevel(logging.WARNING)  # its progress lines: not between the table's rows
    with contextlib.redirect_stdout(sys.stderr):
        return validate_for_report(run / "weights" / "last.pt", str(held_out), "test", out / "val" / run.name,
                                   imgsz=size, batch=16, device="cpu", conf=0.001, verbose=False)


def _generated(name: str, images: int, imgsz: int, seed: int, out: Path) -> Path:
    """A new set of ``defect_quality.py``'s renderer ``name`` and a data YAML scoring all of its splits."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from defect_quality import build_sets

    if seed == 1000:
        raise SystemExit("--set-seed 1000 draws the benchmark's own set, whose train split the runs learnt from")
    data = build_sets(out, [name], images, imgsz, seed)[name]
    spec = yaml.safe_load(data.read_text(encoding="utf-8"))
    every = {**spec, "test": [spec[k] for k in ("train", "val", "test")]}
    target = out / "held-out" / f"{data.parent.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(every, sort_keys=False), encoding="utf-8")
    return target


def _cell(value: float, pair: list[float] | None) -> str:
    return f"{value:.3f} ({pair[0]:.3f}–{pair[1]:.3f})" if pair else f"{value:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders; the first is the reference")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--held-out", type=Path, help="data YAML whose test split scores the runs")
    where.add_argument("--generate", help="score on a new set of this defect_quality.py renderer (photo, ...)")
    parser.add_argument("--images", type=int, default=1000, help="--generate: images of the new set")
    parser.add_argument("--set-imgsz", type=int, default=256, help="--generate: the set's --imgsz")
    parser.add_argument("--set-seed", type=int, default=2000, help="--generate: its seed (the benchmark's is 1000)")
    parser.add_argument("--imgsz", type=int, help="score at this size (default: each run's args.yaml imgsz)")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/ap_spread"), help="where the validations go")
    args = parser.parse_args(argv)

    from gradkit.integrations.ultralytics.seams import average_precision
    from gradkit.report.intervals import ap_resamples

    held_out = args.held_out or _generated(args.generate, args.images, args.set_imgsz, args.set_seed, args.out)
    scored = [_statistics(r, held_out, args.imgsz, args.out) for r in args.runs]
    names = scored[0].names
    images = [len(ev.image_stats) for ev in scored]
    from gradkit.report.build import evaluation_digest

    if len({evaluation_digest(ev) for ev in scored}) != 1:  # the draws pick images by position: pairs need one list
        raise SystemExit(f"the runs were scored on different images, or in another order: {images} images")
    draws = [ap_resamples(ev.image_stats, average_precision, args.resamples, args.seed) for ev in scored]
    classes = list(draws[0]["AP50"])
    print(f"{images[0]} held-out images, {args.resamples} draws of them (seed {args.seed}); 95% intervals\n")
    header = "| run | mAP50-95 | mAP50 | " + " | ".join(f"AP50 {names[c]}" for c in classes) + " |\n" + \
        "|---" * (3 + len(classes)) + "|"
    print(header)
    for run, ev, d in zip(args.runs, scored, draws, strict=True):
        print(_row(run, _values(ev, classes), d, classes))
    if len(scored) > 1:
        print(f"\nPaired differences from {args.runs[0]} (the same draws; an interval holding 0: not told apart)\n")
        print(header)
        ref, first = draws[0], _values(scored[0], classes)
        for run, ev, d in zip(args.runs[1:], scored[1:], draws[1:], strict=True):
            diffs = {k: d[k] - ref[k] for k in ("mAP50-95", "mAP50")}
            diffs["AP50"] = {c: d["AP50"][c] - ref["AP50"][c] for c in classes}
            print(_row(run, {k: v - first[k] for k, v in _values(ev, classes).items()}, diffs, classes))


def _values(ev, classes: list[int]) -> dict:
    """The validator's own numbers: mAP50-95, mAP50 and each class's AP50 (keyed by class)."""
    return {"mAP50-95": ev.headline["mAP50-95"], "mAP50": ev.headline["mAP50"],
            **{c: ev.per_class.get(c, {}).get("AP50", float("nan")) for c in classes}}


def _row(run: Path, values: dict, draws: dict, classes: list[int]) -> str:
    from gradkit.report.intervals import percentile_interval

    cells = [_cell(values[k], percentile_interval(draws[k])) for k in ("mAP50-95", "mAP50")]
    cells += [_cell(values[c], percentile_interval(draws["AP50"][c])) for c in classes]
    return f"| {run} | " + " | ".join(cells) + " |"

if __name__ == "__main__":
    main()
