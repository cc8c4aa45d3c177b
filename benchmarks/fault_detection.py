"""Does the monitor catch planted gradient faults, and does it stay quiet on healthy runs?

Trains yolo26n.yaml on tiny generated data with the DEFAULT gradkit configuration:

* a healthy corpus (demo recipe, SGD and AdamW from scratch at the default lr0 over seeds, fine-tuning
  with freeze=10, accumulation batch 4 / nbs 64, a 2-step run, the CPU GradScaler path) and counts
  every alert (all are false alarms);
* a planted grid: a gradient hook multiplies one layer's gradients by a factor from an onset step on
  (x1e3, x1e4, x1e-6, x1e-9, x0) or puts NaN in them at the onset step only; an alert of the right kind
  on the right layer within 5 optimizer steps of onset is a hit (NaN: at the onset step itself).

It prints recall per fault kind and onset, precision per kind (alerts of that kind naming a layer
that were hits)
and the false-alarm count on the healthy corpus. ``--replay`` re-runs the detector on the recorded
statistics of earlier runs (no training), and prints the healthy quantiles of each rule's statistic;
``--kinds exploding`` plants only that kind. ``--runs RUN...`` replays the detector over any runs'
recorded statistics (longer runs on other data: the benchmark's, the demo's) and prints their alert counts.

    python benchmarks/fault_detection.py [--out /tmp/gradkit-faults --images 24 --imgsz 64]
    python benchmarks/fault_detection.py --runs RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
from collections import Counter
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np
import torch

ONSETS = (2, 5, 10, 40)
FAULTS = {  # name -> (kind, factor, layer)
    "exploding x1e3": ("exploding", 1e3, "5"),
    "exploding x1e4": ("exploding", 1e4, "8"),
    "vanishing x1e-6": ("vanishing", 1e-6, "13"),
    "vanishing x1e-9": ("vanishing", 1e-9, "6"),
    "dead x0": ("dead", 0.0, "4"),
    "nonfinite once": ("nonfinite", float("nan"), "10"),
}
WINDOW = 5  # optimizer steps after onset within which a report counts
MODEL = "yolo26n.yaml"  # what train() builds unless told otherwise (benchmarks/divergence.py --model)
IMAGES, IMGSZ = 24, 64  # the generated dataset of the corpus and the grid (--images, --imgsz)


def healthy_corpus(seeds=(0, 1, 2)) -> dict[str, dict]:
    """Name -> train keyword arguments (+ '_gradkit' preset, '_scaler' flag) of the healthy runs."""
    runs: dict[str, dict] = {"demo recipe": dict(optimizer="AdamW", lr0=0.002, warmup_epochs=1, _gradkit="defect")}
    for s in seeds:
        runs[f"SGD seed {s}"] = dict(optimizer="SGD", lr0=0.01, seed=s)
        runs[f"AdamW seed {s}"] = dict(optimizer="AdamW", lr0=0.01, seed=s)
    runs["accumulate nbs=64"] = dict(nbs=64, epochs=12)
    runs["2 optimizer steps"] = dict(nbs=8, epochs=1)
    runs["CPU GradScaler"] = dict(optimizer="SGD", lr0=0.01, _scaler=True)
    return runs


BASE = dict(epochs=8, imgsz=64, batch=4, nbs=4, workers=0, plots=False, verbose=False, val=False, device="cpu", seed=0,
            warmup_epochs=0)


def _plugin(trainer):
    from gradkit.integrations.ultralytics import GradkitCallback

    for fn in trainer.callbacks["on_pretrain_routine_end"]:
        if isinstance(getattr(fn, "__self__", None), GradkitCallback):
            return fn.__self__
    raise RuntimeError("gradkit is not attached")


def plant(layer: str, factor: float, onset: int, once: bool = False):
    """Callback that multiplies ``layer``'s gradients by ``factor`` from optimizer step ``onset`` on."""

    def arm(trainer):
        plugin = _plugin(trainer)

        def hook(g):
            step = plugin.step + 1
            return g * factor if (step == onset if once else step >= onset) else g

        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == layer and p.requires_grad:
                p.register_hook(hook)

    return arm


def _use_cpu_scaler(trainer):
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)


def train(data: Path, out: Path, name: str, kw: dict, callbacks=(), model: str | None = None,
          overrides: dict | None = None) -> Path:
    from ultralytics import YOLO

    import gradkit

    kw = {**BASE, **kw}
    preset = kw.pop("_gradkit", "default")
    if kw.pop("_scaler", False):
        callbacks = [*callbacks, ("on_train_start", _use_cpu_scaler)]
    yolo = YOLO(model or MODEL)
    gradkit.attach(yolo, preset, {"monitor.plot": False, "report.enabled": False, **(overrides or {})})
    for event, fn in callbacks:
        yolo.add_callback(event, fn)
    yolo.train(data=str(data), project=str(out), name=name, exist_ok=True, **kw)
    return Path(yolo.trainer.save_dir)


def alerts_of(run: Path) -> list[dict]:
    path = run / "gradient_alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def optimizer_of(run: Path) -> str:
    """The optimizer class a run trained with: gradkit_summary.json's (args.yaml is written before
    Ultralytics resolves optimizer=auto, and keeps the name as typed), else args.yaml's."""
    import yaml

    summary = run / "gradkit_summary.json"
    written = json.loads(summary.read_text(encoding="utf-8")) if summary.exists() else {}
    used = (written.get("optimizer") or {}).get("name")
    return str(used or yaml.safe_load((run / "args.yaml").read_text(encoding="utf-8")).get("optimizer"))


def growth_watched(run: Path) -> bool:
    """Whether the plugin's weight-growth arm watched this run (gradkit's weight_growth_watched: SGD, MuSGD)."""
    return optimizer_of(run).lower() in {"sgd", "musgd"}


def replay(run: Path, cfg=None, deviations: list | None = None) -> list[dict]:
    """Run the current detector over a run's recorded statistics (gradients.csv, gradient_steps.csv);
    appends each step's relative deviations (layers x [rise, drop], decades) to ``deviations``."""
    from gradkit.config import AlertsConfig
    from gradkit.monitor import AlertDetector
    from gradkit.monitor.alerts import AlertThresholds

    cfg = cfg if cfg is not None else AlertThresholds.of(AlertsConfig())  # the defaults
    with open(run / "gradients.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(run / "gradient_steps.csv", encoding="utf-8", newline="") as f:
        steps = {int(r["step"]): r for r in csv.DictReader(f)}
    labels = list(dict.fromkeys(f'{r["layer"]} {r["module"]}' for r in rows))
    by_step: dict[int, list[dict]] = {}
    for r in rows:
        by_step.setdefault(int(r["step"]), []).append(r)
    det = AlertDetector(labels, cfg, weight_growth=growth_watched(run))  # as the plugin decides it
    out, last_w = [], np.full(len(labels), np.nan)
    for step in sorted(by_step):
        rs = by_step[step]
        g = np.array([float(r["grad_norm"]) for r in rs])
        fresh = np.array([float(r["weight_norm"]) for r in rs])
        # measured at the first steps and every monitor.update_every (NaN in every row in between), as the plugin
        is_fresh = bool(np.isfinite(fresh).any())
        w = fresh if is_fresh else last_w
        last_w = w
        nf = np.array([float(r["nonfinite"]) for r in rs])
        out += [a.to_dict() for a in det.update(int(rs[0]["epoch"]), step, g, w,
                                                float(steps[step]["total_norm"]), nf, weights_fresh=is_fresh)]
        if deviations is not None:
            deviations.append(det.relative_deviation.copy())
    return out


def healthy_quantiles(runs) -> str:
    """Table of the healthy distribution of each relative rule's statistic against its threshold."""
    from gradkit.config import AlertsConfig

    cfg = AlertsConfig()
    devs: list = []
    for run in runs:
        replay(run, deviations=devs)
    d = np.concatenate(devs)
    rise, drop = d[:, 0][np.isfinite(d[:, 0])], d[:, 1][np.isfinite(d[:, 1])]
    q = (50, 99, 99.9, 100)
    lines = [f"  {'rule (decades vs usual)':34}" + "".join(f"{'q' + str(v):>8}" for v in q)
             + f"{'threshold':>10}{'margin':>8}{'n':>7}"]
    hi, lo = np.log10(cfg.exploding_factor), np.log10(cfg.vanishing_factor)
    lines.append(f"  {'exploding: rise relative to layers':34}" + "".join(f"{np.percentile(rise, v):>8.2f}" for v in q)
                 + f"{hi:>10.2f}{hi - rise.max():>8.2f}{rise.size:>7}")
    lines.append(f"  {'vanishing: drop relative to layers':34}"
                 + "".join(f"{np.percentile(drop, 100 - v):>8.2f}" for v in q)
                 + f"{lo:>10.2f}{drop.min() - lo:>8.2f}{drop.size:>7}")
    return "\n".join(lines)


def score(alerts: list[dict], kind: str, layer: str, onset: int) -> tuple[bool, int, int]:
    """(hit, alerts of this kind that are right, alerts of this kind that blame a layer). Alerts on
    the total norm blame no layer (a planted x1e4 does raise the total) and are left out."""
    window = 0 if kind == "nonfinite" else WINDOW
    right = [a for a in alerts if a["kind"] == kind and a["layer"] == layer and onset <= a["step"] <= onset + window]
    return bool(right), len(right), sum(a["kind"] == kind and a["layer"] != "total" for a in alerts)


def _dataset(out: Path, images: int, imgsz: int) -> Path:
    from gradkit.synth import SynthSpec, generate_dataset

    yaml = out / "data" / "data.yaml"
    if yaml.exists():
        return yaml
    shutil.rmtree(out / "data", ignore_errors=True)  # this script's own, left half-written by an interruption
    return generate_dataset(out / "data", SynthSpec(images=images, imgsz=imgsz, seed=3), progress=False)


def run_healthy(data: Path, out: Path, do_train: bool) -> dict[str, Path]:
    runs = {}
    for name, kw in healthy_corpus().items():
        slug = "healthy-" + name.replace(" ", "_").replace("=", "")
        if do_train or not (out / slug / "gradients.csv").exists():
            train(data, out, slug, dict(kw))
        runs[name] = out / slug
    # fine-tuning from the trained SGD weights with the backbone frozen
    slug = "healthy-finetune_freeze10"
    if do_train or not (out / slug / "gradients.csv").exists():
        from ultralytics import YOLO

        import gradkit

        yolo = YOLO(str(runs["SGD seed 0"] / "weights" / "last.pt"))
        gradkit.attach(yolo, "finetune", {"monitor.plot": False, "report.enabled": False, "data.check": False})
        yolo.train(data=str(data), project=str(out), name=slug, exist_ok=True,
                   **{**BASE, "freeze": 10, "optimizer": "AdamW", "lr0": 0.001})
    runs["finetune freeze=10"] = out / slug
    return runs


def run_grid(data: Path, out: Path, do_train: bool, onsets=ONSETS, kinds=None) -> dict[tuple[str, int], Path]:
    """The planted runs (of the fault ``kinds`` given, else all) by (fault, onset)."""
    runs = {}
    for fault, (kind, factor, layer) in FAULTS.items():
        if kinds and kind not in kinds:
            continue
        for onset in onsets:
            slug = f"fault-{kind}-{factor:g}-at{onset}"
            if do_train or not (out / slug / "gradients.csv").exists():
                epochs = -(-(onset + WINDOW + 1) // 5)  # 5 optimizer steps per epoch on the tiny data
                train(data, out, slug, {"epochs": max(epochs, 2)},
                      [("on_train_start", plant(layer, factor, onset, once=kind == "nonfinite"))])
            runs[(fault, onset)] = out / slug
    return runs


def report(healthy: dict[str, Path], grid: dict[tuple[str, int], Path], use_replay: bool) -> None:
    get = replay if use_replay else alerts_of
    print(f"\nhealthy corpus ({'replayed' if use_replay else 'live'} alerts, default config)")
    total = 0
    for name, run in healthy.items():
        alerts = get(run)
        total += len(alerts)
        steps = len((run / "gradient_steps.csv").read_text(encoding="utf-8").splitlines()) - 1
        print(f"  {name:24} {steps:4d} steps  {len(alerts)} alert(s) "
              f"{[(a['kind'], a['layer'], a['step']) for a in alerts][:4]}")
    print(f"  false alarms: {total}")
    print(f"\nplanted grid: hit = right kind and layer within {WINDOW} steps of onset (NaN: at onset)")
    onsets = sorted({o for _, o in grid})
    print(f"  {'fault':18}" + "".join(f"{'onset ' + str(o):>10}" for o in onsets) + f"{'recall':>8}{'precision':>10}")
    for fault, (kind, _, layer) in FAULTS.items():
        if not any(f == fault for f, _ in grid):
            continue
        hits, right, of_kind, cells = 0, 0, 0, []
        for o in onsets:
            if (fault, o) not in grid:
                cells.append("-")
                continue
            alerts = get(grid[(fault, o)])
            h, r, k = score(alerts, kind, layer, o)
            hit_step = min((a["step"] for a in alerts if a["kind"] == kind and a["layer"] == layer
                            and a["step"] >= o), default=None)
            hits, right, of_kind = hits + h, right + r, of_kind + k
            cells.append(f"+{hit_step - o}" if h else "miss")
        n = sum(c != "-" for c in cells)
        print(f"  {fault:18}" + "".join(f"{c:>10}" for c in cells) + f"{hits / max(n, 1):>8.2f}"
              f"{(right / of_kind if of_kind else float('nan')):>10.2f}")


def replay_runs(runs: list[Path]) -> None:
    """Per run: the alerts it recorded and the ones the current detector raises over its statistics."""
    totals = {"recorded": Counter(), "replayed": Counter()}
    for run in runs:
        missing = [f for f in ("gradients.csv", "gradient_steps.csv", "args.yaml") if not (run / f).is_file()]
        if missing:
            print(f"  {run}: no {', '.join(missing)} (not a monitored training run), left out")
            continue
        recorded, replayed = Counter(a["kind"] for a in alerts_of(run)), Counter(a["kind"] for a in replay(run))
        totals["recorded"].update(recorded)
        totals["replayed"].update(replayed)
        print(f"  {run}: recorded {dict(recorded) or 'none'}, replayed {dict(replayed) or 'none'}")
    print(f"  all: recorded {dict(totals['recorded'])}, replayed {dict(totals['replayed'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/gradkit-faults")
    ap.add_argument("--images", type=int, default=IMAGES)
    ap.add_argument("--imgsz", type=int, default=IMGSZ)
    ap.add_argument("--onsets", default=",".join(map(str, ONSETS)))
    ap.add_argument("--replay", action="store_true",
                    help="re-run the detector on recorded runs, train only missing ones")
    ap.add_argument("--healthy-only", action="store_true")
    ap.add_argument("--kinds", default="", help="plant only these fault kinds (comma-separated: "
                    + ", ".join(sorted({k for k, _, _ in FAULTS.values()})) + ")")
    ap.add_argument("--runs", nargs="+", type=Path, metavar="RUN",
                    help="only replay the detector over these run folders (any gradkit runs: their "
                    "gradients.csv) and print the alerts it raises, recorded against replayed; trains nothing")
    args = ap.parse_args()
    kinds = set(filter(None, args.kinds.split(",")))
    if kinds - {k for k, _, _ in FAULTS.values()}:
        ap.error(f"--kinds: no planted fault of kind {', '.join(sorted(kinds - {k for k, _, _ in FAULTS.values()}))}")
    if args.runs:
        replay_runs(args.runs)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _dataset(out, args.images, args.imgsz)
    BASE["imgsz"] = args.imgsz
    healthy = run_healthy(data, out, not args.replay)
    grid = {} if args.healthy_only else run_grid(data, out, not args.replay, tuple(map(int, args.onsets.split(","))),
                                                kinds=kinds)
    report(healthy, grid, args.replay)
    if args.replay:
        print("\nhealthy quantiles of each rule's statistic (decades), threshold and margin")
        print(healthy_quantiles([run for run in healthy.values()]))
    print(f"\nyolo26n.yaml, {args.images} images at {args.imgsz} px, torch threads "
          f"{torch.get_num_threads()}")


if __name__ == "__main__":
    main()
