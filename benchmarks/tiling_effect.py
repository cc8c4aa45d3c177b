"""Large images with small defects: stock Ultralytics on the whole images against training on ``gradkit tile``'s
tiles, at equal wall time, both scored on the same held-out whole images.

    python benchmarks/tiling_effect.py --seeds 0 --time-s 600 --out DIR      # one seed, three recipes
    python benchmarks/tiling_effect.py --merge A/results.json B/results.json  # seeds run apart, one table

The set (``panels``): each image is a panel of ``--cells`` x ``--cells`` cells of ``--cell`` pixels, every
cell rendered by one of the three generators of ``benchmarks/defect_quality.py`` picked at random (the
procedural grey surfaces of ``gradkit synth``, the photographs of ``gradkit.synth_photo``, the colour
surfaces of ``gradkit.synth_surface``), its defects at the size that generator gives a cell: 1-2 px lines
and pits of a few pixels on a 768 px image, the case of a camera image many times ``imgsz``.

Recipes (``yolo26n.yaml`` from scratch, batch 16 and ``nbs`` 16 (an optimizer step per batch, what ``gradkit
plan`` chooses for the panels and for their tiles, both under 2000 images; with Ultralytics' 64 a 10-minute
run makes ~120 steps and learns next to nothing), Ultralytics' defaults otherwise, each with ``time=`` set
to ``--time-s``):

- ``stock``: the whole panels at ``imgsz`` = ``--cell`` (each panel shrunk ``--cells`` times);
- ``native``: the whole panels at their own size (``imgsz`` = cells x cell: 9x the pixels per image);
- ``tiles``: ``gradkit tile size=--cell`` (overlap auto), trained at ``imgsz`` = ``--cell``. Two settings
  follow stock's iterations rather than its epochs, because an epoch of tiles is ~25 times stock's:
  ``warmup_epochs`` gives the same warm-up iterations as stock's (Ultralytics 8.4.190 warms up for
  ``warmup_epochs`` x batches per epoch; the runs in README were made while this script assumed a floor of
  100 iterations that release does not have, so their tiles warmed up for 100 iterations against stock's
  15), and ``close_mosaic=0`` (stock drops mosaic for its last 10 of ~150 epochs, a few per
  cent of its iterations; 10 epochs of tiles would be all of them).

Scoring, on the held-out panels (``val`` and ``test``; training runs with ``val=False`` and the last
weights are scored): ``stock`` and ``native`` by Ultralytics' validation at their training ``imgsz``;
``tiles`` twice: ``tiles`` through tiles (``gradkit.report.tile_size``: each panel cut as ``gradkit tile``
cuts it, the tiles' detections merged) and ``tiles-whole`` on the whole panel at its native size (the model
sees the pixels at the scale it learnt, without tiles). mAP50-95, mAP50, per-class AP50 and the inspection
KPIs of gradkit's report, printed by ``defect_quality.print_tables``; each run's score is kept in its
folder and reused (``--out`` again continues an interrupted comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from defect_quality import KPIS, SHIPPED, held_out_yaml, merge_or_run

RECIPES = ("stock", "native", "tiles")
#: Ultralytics' warm-up: warmup_epochs x batches per epoch (its default warmup_epochs).
DEFAULT_WARMUP_EPOCHS = 3
BATCH = 16


def _cell(kind: str, seed: int, index: int, cell: int) -> tuple[np.ndarray, list[tuple]]:
    """One cell: a BGR image of ``cell`` px and its YOLO labels, from the named generator."""
    from gradkit.synth import SynthSpec, render_image
    from gradkit.synth_photo import PhotoSpec, render_photo_image
    from gradkit.synth_surface import SurfaceSpec, render_surface_image

    if kind == "synth":
        return render_image(SynthSpec(images=3, imgsz=cell, seed=seed), index)
    if kind == "photo":
        return render_photo_image(PhotoSpec(images=3, imgsz=cell, seed=seed), index)[:2]
    return render_surface_image(SurfaceSpec(images=3, width=cell, height=cell, seed=seed), index)[:2]


def render_panel(seed: int, index: int, cells: int, cell: int) -> tuple[np.ndarray, list[tuple]]:
    """A panel of cells x cells cells, each from a generator picked at random; labels of the whole panel."""
    rng = np.random.default_rng([seed, index])
    panel = np.zeros((cells * cell, cells * cell, 3), np.uint8)
    labels = []
    for r in range(cells):
        for c in range(cells):
            kind = ("synth", "photo", "surface")[int(rng.integers(3))]
            img, labs = _cell(kind, seed, int(rng.integers(1 << 30)), cell)
            panel[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = img
            labels += [(k, (c + x) / cells, (r + y) / cells, w / cells, h / cells) for k, x, y, w, h in labs]
    return panel, labels


def build_panels(out: Path, images: int, cells: int, cell: int) -> Path:
    from gradkit.synth import CLASS_NAMES, SynthSpec, _split_of, write_yolo_dataset

    root = out / "data" / f"panels-{images}-{cells}x{cell}"
    if (root / "data.yaml").exists():
        return root / "data.yaml"
    spec = SynthSpec(images=images)  # the splits of every generated set: 70 / 20 / 10
    return write_yolo_dataset(root, images, lambda i: render_panel(2000, i, cells, cell), lambda i: _split_of(i, spec),
                              CLASS_NAMES, {"tiling_effect_panels": {"images": images, "cells": cells, "cell": cell}})


def _images(split_dir: Path) -> int:
    return sum(1 for p in split_dir.iterdir() if p.suffix == ".png")


def _score(weights: Path, held_out: Path, imgsz: int, run_dir: Path, tile: int | None) -> dict:
    from gradkit.integrations.ultralytics import validate_for_report
    from gradkit.integrations.ultralytics.sliced import TiledValidation
    from gradkit.report import build_report

    tiles = TiledValidation(tile) if tile else None
    ev = validate_for_report(weights, str(held_out), "test", run_dir.parent / f"{run_dir.name}-test", tiles=tiles,
                             imgsz=imgsz, batch=8, conf=0.001, device="cpu", verbose=False)
    report = build_report(ev)
    inspection = report["inspection"]
    return {"mAP50-95": ev.headline["mAP50-95"], "mAP50": ev.headline["mAP50"],
            "AP50": {ev.names[c]: v["AP50"] for c, v in ev.per_class.items()},
            **{k: inspection[k] for k in KPIS},
            SHIPPED: {c["name"]: c["shipped_parts"] / c["parts"] for c in inspection["per_class"] if c["parts"]},
            **({"tile_overlap": tiles.used_overlap} if tiles else {})}


def train_and_score(data: Path, run_dir: Path, train: dict, seed: int, held_out: Path,
                    scorings: dict[str, tuple[int, int | None]]) -> dict[str, dict]:
    """Train once (or reuse the weights) and score each way in ``scorings`` (name -> (imgsz, tile size));
    each score is kept in ``run_dir/score-NAME.json`` with the training it came from."""
    recipe = {"data": str(data), "train": train, "seed": seed}
    weights = run_dir / "weights" / "last.pt"
    meta = run_dir / "training.json"
    if meta.exists():
        kept = json.loads(meta.read_text(encoding="utf-8"))
        if kept.get("recipe") != json.loads(json.dumps(recipe)):
            raise SystemExit(f"{meta}: trained with another recipe; remove {run_dir} to train again")
    else:
        from ultralytics import YOLO

        yolo = YOLO("yolo26n.yaml")
        start = time.time()
        yolo.train(data=str(data), seed=seed, deterministic=True, workers=0, device="cpu", plots=False, val=False,
                   verbose=False, project=str(run_dir.parent), name=run_dir.name, exist_ok=True, **train)
        kept = {"recipe": recipe, "train_s": time.time() - start, "epochs_done": int(yolo.trainer.epoch) + 1}
        meta.write_text(json.dumps(kept), encoding="utf-8")
    scores = {}
    for name, (imgsz, tile) in scorings.items():
        path = run_dir / f"score-{name}.json"
        if not path.exists():
            path.write_text(json.dumps({**_score(weights, held_out, imgsz, run_dir / name, tile),
                                        "train_s": kept["train_s"], "epochs_done": kept["epochs_done"],
                                        "recipe": {**recipe, "scored_at": imgsz, "tile": tile}}), encoding="utf-8")
        scores[name] = json.loads(path.read_text(encoding="utf-8"))
    return scores


def run(args) -> dict:
    from gradkit.data.tile import tile_dataset

    out = Path(args.out).resolve()
    data = build_panels(out, args.images, args.cells, args.cell)
    held_out = held_out_yaml(data, out)
    side = args.cells * args.cell
    tiled = out / "data" / f"{data.parent.name}-tiles{args.cell}"
    if not (tiled / "data.yaml").exists():
        tile_dataset(data, args.cell, out=tiled)
    nb_stock = -(-_images(data.parent / "images" / "train") // BATCH)
    nb_tiles = -(-_images(tiled / "images" / "train") // BATCH)
    warmup = DEFAULT_WARMUP_EPOCHS * nb_stock
    hours = args.time_s / 3600
    recipes = {
        "stock": (data, {"imgsz": args.cell}, {"stock": (args.cell, None)}),
        "native": (data, {"imgsz": side}, {"native": (side, None)}),
        "tiles": (tiled / "data.yaml", {"imgsz": args.cell, "warmup_epochs": round(warmup / nb_tiles, 4),
                                        "close_mosaic": 0},
                  {"tiles": (args.cell, args.cell), "tiles-whole": (side, None)}),
    }
    chosen = args.recipes.split(",")
    unknown = set(chosen) - set(recipes)
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(sorted(unknown))}: {', '.join(recipes)}")
    results: dict = {"args": vars(args), "sets": {"panels": {"runs": {}}}}
    rows = results["sets"]["panels"]["runs"]
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in chosen:
            train_data, train, scorings = recipes[name]
            train = {**train, "batch": BATCH, "nbs": BATCH, "epochs": 1000, "time": hours}
            scores = train_and_score(train_data, out / "runs" / f"{name}-s{seed}", train, seed, held_out, scorings)
            for scored, res in scores.items():
                rows.setdefault(scored, []).append(res)
                print(f"[panels] seed {seed} {scored:12} mAP50-95 {res['mAP50-95']:.3f} mAP50 {res['mAP50']:.3f} "
                      f"train {res['train_s']:.0f}s epochs {res['epochs_done']}", flush=True)
            (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/tiling-effect")
    p.add_argument("--images", type=int, default=100, help="panels in all (70%% train, 20%% val, 10%% test)")
    p.add_argument("--cells", type=int, default=3)
    p.add_argument("--cell", type=int, default=256, help="cell and tile size, stock's imgsz")
    p.add_argument("--time-s", type=float, default=600, help="training budget of every recipe (seconds)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--merge", nargs="+", metavar="RESULTS_JSON", help="print one table from several results.json")
    merge_or_run(p.parse_args(), run)


if __name__ == "__main__":
    main()
