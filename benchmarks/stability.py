"""When does clipping matter? Policies x learning-rate multipliers x optimizers x seeds.

Fine-tunes yolo26n on the synthetic defect dataset with each clipping policy, each multiple of the
optimizer's base lr0 (``BASE_LR``: SGD 0.001, AdamW 0.0001 when fine-tuning; SGD 0.01, Ultralytics'
default, and AdamW 0.001 from scratch), each optimizer and seed, with the same data and budget.
Ultralytics' warm-up stays as users get it: over the first epoch the bias lr falls from
``warmup_bias_lr`` 0.1 to lr0 while the others rise from 0; the multiplier scales lr0 only. Prints
per cell the mean ± std over seeds of val mAP50-95, non-finite (skipped) optimizer steps, rollbacks
(the per-run lines also give the optimizer steps they undid), share of clipped steps and minutes,
then per policy the widest stable lr multiplier: the largest multiplier up to which every multiplier
keeps the mean mAP50-95 at >= 90% of the same policy's at 1x.

Every run starts from one warm checkpoint the script trains first (stock Ultralytics, yolo26n.yaml,
AdamW lr0 0.002 as in the demo, ``--pretrain_epochs``), because from scratch this budget learns
nothing at any rate (160 images at 128 px, 6 epochs: mAP50-95 0.0000 for SGD at 1x, 3 seeds), so
"stable" could not be told from "collapsed". Users fine-tune too. ``--pretrain_epochs 0`` trains
from scratch.

A policy name ending in ``+rollback`` adds ``monitor.on_divergence: rollback`` to that policy.

    python benchmarks/stability.py                 # the whole grid
    python benchmarks/stability.py --quick         # a small subset that shows the script works
    python benchmarks/stability.py --policies stock,agc --mults 1,10 --optimizers SGD --seeds 0
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np

POLICIES: dict[str, dict] = {
    "stock": {"clip.mode": "stock"},
    "none": {"clip.mode": "none"},
    "norm(100)": {"clip.mode": "norm", "clip.max_norm": 100.0},
    "agc": {"clip.mode": "agc"},
    "autoclip": {"clip.mode": "autoclip"},
    "zclip": {"clip.mode": "zclip"},
}
ROLLBACK = {"monitor.on_divergence": "rollback"}
#: The lr0 each multiplier scales. From scratch: Ultralytics' SGD default and the fine-tuning recipe's
#: AdamW rate. Fine-tuning the warm start: a tenth of those, because at SGD 0.01 this fine-tune already
#: collapses (warm start at mAP50-95 0.131 -> 0.004 after 5 epochs; at 0.001 it rises to 0.146).
BASE_LR = {"scratch": {"SGD": 0.01, "AdamW": 0.001}, "warm": {"SGD": 0.001, "AdamW": 0.0001}}
STABLE_SHARE = 0.9  # "stable": mean mAP50-95 at least this share of the same policy's at 1x

FULL = dict(policies="stock,none,norm(100),agc,autoclip,zclip,stock+rollback,agc+rollback", mults="1,3,10,30",
            optimizers="SGD,AdamW", seeds="0,1,2", images=240, imgsz=160, epochs=5, pretrain_epochs=30)
QUICK = dict(policies="stock,zclip+rollback", mults="1,10", optimizers="SGD", seeds="0", images=48, imgsz=64,
             epochs=2, pretrain_epochs=2)


def overrides_of(policy: str) -> dict:
    base, _, extra = policy.partition("+")
    if base not in POLICIES or extra not in ("", "rollback"):
        raise SystemExit(f"unknown policy {policy!r}; policies: {', '.join(POLICIES)} (optionally +rollback)")
    return {**POLICIES[base], **(ROLLBACK if extra else {})}


def _pretrain(data: Path, out: Path, args) -> str:
    """The warm start every grid run fine-tunes from: stock Ultralytics, the demo's AdamW recipe."""
    from ultralytics import YOLO

    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    model = YOLO("yolo26n.yaml")
    keep_training_threads(model, os.cpu_count() or 1)
    model.train(data=str(data), epochs=args.pretrain_epochs, imgsz=args.imgsz, batch=16, nbs=16, workers=1,
                optimizer="AdamW", lr0=0.002, warmup_epochs=1, plots=False, device="cpu", seed=0, val=False,
                project=str(out), name="pretrain", exist_ok=True, verbose=False)
    return str(Path(model.trainer.save_dir) / "weights" / "last.pt")


def _run(data: Path, out: Path, policy: str, optimizer: str, mult: float, seed: int, args, weights: str) -> dict:
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.throughput import keep_training_threads

    model = YOLO(weights)
    extra = {"monitor.rollback.lr_factor": args.rollback_lr_factor} if args.rollback_lr_factor else {}
    gradkit.attach(model, "default", {**overrides_of(policy), **extra, "monitor.plot": False,
                                      "report.enabled": False})
    keep_training_threads(model, os.cpu_count() or 1)
    name = f"{optimizer}-{policy}-x{mult:g}-s{seed}".replace("(", "").replace(")", "").replace("+", "_")
    t0 = time.time()
    losses: list[float] = []  # batch = nbs: one loss per optimizer step, for the divergence triggers
    model.add_callback("on_train_batch_end", lambda t: losses.append(float(t.loss.detach().sum())))
    model.train(data=str(data), epochs=args.epochs, imgsz=args.imgsz, batch=16, nbs=16, workers=1,
                optimizer=optimizer, lr0=_base_lr(args)[optimizer] * mult, warmup_epochs=1, plots=False, device="cpu",
                seed=seed, deterministic=True, project=str(out), name=name, exist_ok=True, verbose=False)
    run = Path(model.trainer.save_dir)
    (run / "step_losses.json").write_text(json.dumps(losses), encoding="utf-8")
    with open(run / "gradient_steps.csv", encoding="utf-8", newline="") as f:
        steps = list(csv.DictReader(f))
    with open(run / "results.csv", encoding="utf-8", newline="") as f:
        results = [{k.strip(): v for k, v in r.items()} for r in csv.DictReader(f)]
    final_map = float(results[-1]["metrics/mAP50-95(B)"])
    if args.score == "last":  # the weights the user keeps: a rollback after the last validation changes them
        final_map = float(YOLO(str(run / "weights" / "last.pt")).val(
            data=str(data), split="val", imgsz=args.imgsz, batch=16, device="cpu", plots=False, verbose=False,
            project=str(out), name=name + "-last", exist_ok=True).box.map)
    rollbacks = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text(encoding="utf-8").splitlines()
                 if '"rollback"' in line]
    return {"map": final_map if math.isfinite(final_map) else 0.0,
            "skipped": sum(int(s["skipped"]) for s in steps),
            "rollbacks": len(rollbacks), "steps_lost": sum(a["from_step"] - a["to_step"] for a in rollbacks),
            "clip_rate": sum(int(s["clipped"]) for s in steps) / max(len(steps), 1),
            "minutes": (time.time() - t0) / 60}


def _warm(args) -> bool:
    return bool(args.weights) or args.pretrain_epochs > 0


def _base_lr(args) -> dict[str, float]:
    return BASE_LR["warm" if _warm(args) else "scratch"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def widest_stable(means: dict[float, float]) -> float | None:
    """Largest multiplier up to which every multiplier keeps >= STABLE_SHARE of the 1x mean mAP."""
    if 1.0 not in means or means[1.0] <= 0:
        return None
    widest = None
    for mult in sorted(means):
        if means[mult] < STABLE_SHARE * means[1.0]:
            break
        widest = mult
    return widest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help=f"small subset: {QUICK}")
    for key, value in FULL.items():
        ap.add_argument(f"--{key}", type=type(value), default=None, help=f"(full grid: {value})")
    ap.add_argument("--weights", default=None, help="fine-tune from this checkpoint instead of pretraining one "
                    "(e.g. the pretrain/weights/last.pt an earlier call printed, on the same --images/--imgsz)")
    ap.add_argument("--score", choices=("epoch", "last"), default="epoch", help="epoch: the last epoch's "
                    "validation in results.csv (the grid); last: validate weights/last.pt after training, which "
                    "a rollback after the last validation replaces with the best validated state")
    ap.add_argument("--rollback_lr_factor", type=float, default=None, help="monitor.rollback.lr_factor of the "
                    "+rollback policies (default: gradkit's)")
    args = ap.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    policies = args.policies.split(",")
    for policy in policies:
        overrides_of(policy)
    mults = [float(m) for m in args.mults.split(",")]
    optimizers = args.optimizers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    from gradkit.synth import SynthSpec, generate_dataset

    tmp = Path(tempfile.mkdtemp(prefix="gradkit-stability-"))
    data = generate_dataset(tmp / "data", SynthSpec(images=args.images, imgsz=args.imgsz, seed=0), progress=False)
    started = time.time()
    weights = args.weights or "yolo26n.yaml"
    if args.pretrain_epochs > 0 and not args.weights:
        weights = _pretrain(data, tmp / "runs", args)
        print(f"warm start: {args.pretrain_epochs} epochs of stock AdamW ({(time.time() - started) / 60:.1f} min) -> "
              f"{weights}", flush=True)
    cells: dict[tuple[str, str, float], list[dict]] = {}
    for optimizer in optimizers:
        for mult in mults:
            for policy in policies:
                for seed in seeds:
                    r = _run(data, tmp / "runs", policy, optimizer, mult, seed, args, weights)
                    cells.setdefault((optimizer, policy, mult), []).append(r)
                    print(f"[{optimizer} {policy} x{mult:g} seed {seed}] mAP50-95 {r['map']:.4f} skipped "
                          f"{r['skipped']} rollbacks {r['rollbacks']} (steps lost {r['steps_lost']}) "
                          f"clip {r['clip_rate']:.2f} "
                          f"({r['minutes']:.1f} min)", flush=True)
    start = (f"fine-tuned from {args.weights}" if args.weights else
             f"warm start ({args.pretrain_epochs} epochs)" if _warm(args) else "from scratch")
    print(f"\n{args.images} images at {args.imgsz}px, {start}, {args.epochs} epochs, batch 16, seeds {args.seeds}; "
          f"base lr0 SGD {_base_lr(args)['SGD']}, AdamW {_base_lr(args)['AdamW']}; "
          f"total {(time.time() - started) / 60:.1f} min")
    print("cell: mAP50-95 mean ± std / non-finite steps / rollbacks / clipped share / minutes per run")
    for optimizer in optimizers:
        print(f"\n{optimizer}")
        print(f"{'policy':18}" + "".join(f"{'x' + format(m, 'g'):>46}" for m in mults) + f"{'widest stable':>16}")
        for policy in policies:
            parts, means = [], {}
            for mult in mults:
                rs = cells[(optimizer, policy, mult)]
                m, s = _mean_std([r["map"] for r in rs])
                means[mult] = m
                avg = {k: float(np.mean([r[k] for r in rs])) for k in ("skipped", "rollbacks", "clip_rate", "minutes")}
                cell = (f"{m:.4f} ± {s:.4f} / {avg['skipped']:.0f} / {avg['rollbacks']:.1f} / "
                        f"{100 * avg['clip_rate']:.0f}% / {avg['minutes']:.1f}")
                parts.append(f"{cell:>46}")
            widest = widest_stable(means)
            print(f"{policy:18}" + "".join(parts) + f"{'x' + format(widest, 'g') if widest else 'none':>16}")


if __name__ == "__main__":
    main()
