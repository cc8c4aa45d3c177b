"""AMP on a CUDA GPU: gradkit's clip and records under real mixed precision, against fp32 and stock.

    python benchmarks/amp_check.py --device 0 [--images 96 --imgsz 160 --epochs 3]

The CPU test suite drives an enabled CPU ``GradScaler``; this runs the real thing. Same data, seed and
``deterministic=True`` for every run, gradkit's default configuration (stock clip, monitor every step):

- ``fp32`` (``amp=False``), ``fp16`` (``amp=True``: autocast + ``GradScaler``), ``bf16`` (``amp="bf16"``,
  no scaler), each with gradkit;
- ``stock-fp16``: Ultralytics alone, ``amp=True``.

Checks (the script exits 1 naming each one that fails):

- every run makes all its optimizer steps and raises no alert: the runs are healthy, and CUDA's
  GradScaler overflowing several steps in a row at its starting scale of 2**16 is its own business;
- the recorded total norms are the unscaled gradients': over the steps where both runs are finite,
  the median ratio to fp32's is within MAX_NORM_RATIO (a gradient still multiplied by the loss scale
  would be off by that scale, 256 or more here). Runs part after step 1 (AMP rounds, fp16 skips its
  overflowed steps), so this is a check of magnitude, not equality; step 1's ratio is printed only
  (bf16's was 0.73 on an H200: at random initialisation, not investigated);
- with the stock clip, gradkit's fp16 run trains exactly like stock's fp16 run: equal losses and
  final weights (bit-identical on the H200, as on CPU in tests/test_e2e_parity.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch

RUNS = {"fp32": False, "fp16": True, "bf16": "bf16"}
MAX_NORM_RATIO = 8.0


def _train(data: Path, out: Path, name: str, amp, plugin: bool, args) -> dict:
    from ultralytics import YOLO

    import gradkit

    model = YOLO("yolo26n.yaml")
    if plugin:
        gradkit.attach(model, "default", {"report.enabled": False, "monitor.plot": False})
    seen: dict = {"scale": []}

    def batch_end(trainer):
        if trainer.scaler.is_enabled():
            seen["scale"].append(float(trainer.scaler.get_scale()))

    def train_end(trainer):
        seen["weights"] = {k: v.detach().float().cpu().clone() for k, v in trainer.model.state_dict().items()}

    model.add_callback("on_train_batch_end", batch_end)
    model.add_callback("on_train_end", train_end)
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, nbs=args.batch, amp=amp,
                workers=args.workers, val=False, plots=False, device=args.device, seed=0, deterministic=True,
                project=str(out), name=name, exist_ok=True, verbose=False)
    run = Path(model.trainer.save_dir)
    seen["amp"] = bool(model.trainer.amp)
    seen["losses"] = [[float(r[k]) for k in r if k.strip().startswith("train/")] for r in _rows(run / "results.csv")]
    if plugin:
        steps = _rows(run / "gradient_steps.csv")
        seen["norms"] = [float(r["total_norm"]) for r in steps]
        seen["skipped"] = [int(r["step"]) for r in steps if int(r["skipped"])]
        alerts = run / "gradient_alerts.jsonl"
        lines = alerts.read_text(encoding="utf-8").splitlines() if alerts.exists() else []
        seen["alerts"] = [json.loads(x) for x in lines if x.strip()]
    return seen


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]


def _max_weight_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) if a[k].numel() else 0.0 for k in a)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="0")
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--imgsz", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(args.out or tempfile.mkdtemp(prefix="gradkit-amp-"))
    data = generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz, seed=0), progress=False)
    runs = {k: v for k, v in RUNS.items() if args.device != "cpu" or v != "bf16"}  # Ultralytics: bf16 needs CUDA
    res = {name: _train(data, tmp / "runs", name, amp, True, args) for name, amp in runs.items()}
    res["stock-fp16"] = _train(data, tmp / "runs", "stock-fp16", True, False, args)

    print(f"\n{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA'}, torch {torch.__version__}, "
          f"{args.images} images at {args.imgsz}px, batch {args.batch}, {args.epochs} epochs")
    print(f"{'run':12}{'amp':>6}{'steps':>7}{'skipped':>9}{'alerts':>8}{'norm@1':>10}{'/fp32':>8}"
          f"{'median norm /fp32':>19}{'min scale':>11}")
    ref = res["fp32"]["norms"]
    failed = []
    for name in runs:
        r = res[name]
        n = r["norms"]
        ratios = sorted(a / b for a, b in zip(n, ref, strict=False) if b > 0 and math.isfinite(a))
        med = ratios[len(ratios) // 2] if ratios else float("nan")
        scale = f"{min(r['scale']):.0f}" if r["scale"] else "-"
        print(f"{name:12}{r['amp']!s:>6}{len(n):>7}{len(r['skipped']):>9}{len(r['alerts']):>8}{n[0]:>10.3f}"
              f"{n[0] / ref[0]:>8.4f}{med:>19.4f}{scale:>11}")
        failed += [f"{name}: {len(n)} optimizer steps, fp32 made {len(ref)}"] * (len(n) != len(ref))
        failed += [f"{name}: {len(r['alerts'])} alert(s) on a healthy run"] * bool(r["alerts"])
        failed += [f"{name}: median norm ratio to fp32 {med:.3g}"] * (not 1 / MAX_NORM_RATIO <= med <= MAX_NORM_RATIO)
    for name in runs:
        for a in res[name]["alerts"]:
            print(f"  alert {name}: step {a.get('step')} {a.get('kind')} {a.get('layer')}: {a.get('message')}")
        if res[name]["skipped"]:
            print(f"  skipped {name}: steps {res[name]['skipped'][:20]}; scale trace {res[name]['scale'][:12]}")
    g, s = res["fp16"], res["stock-fp16"]
    dl = max((abs(x - y) for a, b in zip(g["losses"], s["losses"], strict=True) for x, y in zip(a, b, strict=True)),
             default=float("nan"))
    dw = _max_weight_diff(g["weights"], s["weights"])
    print(f"gradkit fp16 vs stock fp16: max |train loss diff| over {len(g['losses'])} epochs {dl:.3g}, "
          f"max |weight diff| {dw:.3g}; skipped steps gradkit {len(g['skipped'])}")
    failed += [f"gradkit fp16 is not stock fp16: loss diff {dl:.3g}, weight diff {dw:.3g}"] * (dl != 0 or dw != 0)
    fp = _max_weight_diff(res["fp32"]["weights"], g["weights"])
    print(f"gradkit fp32 vs gradkit fp16 final weights: max |diff| {fp:.3g}"
          " (scale of an AMP-vs-fp32 difference, for reading the line above)")
    print("\n".join(["all checks passed"] if not failed else [f"FAILED: {f}" for f in failed]))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
