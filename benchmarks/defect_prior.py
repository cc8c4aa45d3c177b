"""A defect prior: yolo26n at half its width trained on ``gradkit synth``'s renderer, for other sets to start from.

The question (issue 13's thin-class goal): the plan trains from scratch, and on three evaluation sets the
thin lines are scored at about a prior's level after stock's minutes ("What fails them there is the class
score", README). Does a network that has already learnt lines, pits and stains on one renderer learn them
sooner on data drawn by another? This script builds that network, which gradkit ships as ``init.prior: defect``
(``benchmarks/defect_quality.py --recipes plan-budget-prior@time`` trains the plan from it).

1. ``gradkit synth`` images (``--images``, ``--imgsz``, seed ``SYNTH_SEED``, not the design set's 1000, so the
   design set's held-out images are not among them);
2. the plan for them with a budget of ``--minutes``, with yolo26n at half its width whatever the timer says and
   from scratch (never from the prior being rebuilt), trained with ``val=False`` (the time buys training);
3. ``OUT/prior.pt``: the trained model with its class outputs (the last convolution of every class branch,
   ``cv3.i.2`` and ``one2one_cv3.i.2``) replaced by a freshly initialised model's, so what carries over is the
   features, the box regression and the batch statistics, not which index means which class (the sets name
   their classes in their own order, and a user's data has its own classes); Ultralytics' ``pretrained=`` reads
   it (a pickle: for this script's own file only);
4. ``OUT/defect-half.pt``: the trained weights as a plain state dict, class outputs included, with the names of
   their classes (``meta["names"]``, by row), what gradkit ships as ``init.prior: defect`` (``plugin/gradkit/priors/``,
   read with ``weights_only=True``): a run takes every layer but the class outputs, and with
   ``init.classes: by_name`` also the rows of the classes its data names alike.

    python benchmarks/defect_prior.py --out DIR [--images 1500 --imgsz 256 --minutes 25 --threads 1 --faint-frac 0
                                               --relief-frac 0 --colour-frac 0]

``--threads``: the torch threads the plan's timer times and the training steps run on. Until session 60 the
script timed on 2 but trained on 1: Ultralytics' CPU training sets its own count (min(8, cpus - 1), 1 on this
project's 2-core machine) once the trainer is built, so the shipped prior trained on one thread, and 1 is the
default (the plan for its images is the same timed on one thread or two: 256 px, the same gradkit config).

The prior's training time is not counted in any ``@time`` budget (as a pretrained network's is not): a
result with it answers whether starting from learnt features helps the thin classes, not the equal-time goal.
"""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

import yaml

os.environ.setdefault("YOLO_OFFLINE", "1")

from gradkit.integrations.ultralytics.prior import CLASS_OUTPUT
from gradkit.plan import MODEL_HALF

#: The synth seed of the prior's images (benchmarks/defect_quality.py's design set uses 1000).
SYNTH_SEED = 7


def build_prior(out: Path, images: int, imgsz: int, minutes: float, threads: int, faint_frac: float = 0.0,
                relief_frac: float = 0.0, colour_frac: float = 0.0) -> Path:
    import torch

    from gradkit.synth import SynthSpec, generate_dataset, made_by, provenance

    data = out / "data" / "data.yaml"
    spec = SynthSpec(images=images, imgsz=imgsz, seed=SYNTH_SEED, faint_frac=faint_frac, relief_frac=relief_frac,
                     colour_frac=colour_frac)
    if not data.exists():
        generate_dataset(data.parent, spec, progress=False)
    if not made_by(yaml.safe_load(data.read_text(encoding="utf-8")), spec):
        raise SystemExit(f"{data}: not made with {provenance(spec)}: remove {out} or choose another --out")
    weights = out / "run" / "weights" / "last.pt"
    if not weights.exists():
        train(data, out / "run", minutes, threads)
    ckpt = torch.load(weights, map_location="cpu", weights_only=False)  # written just above
    trained = (ckpt.get("ema") or ckpt["model"]).float()  # Ultralytics strips the EMA into "model" at the end
    trained_state = {k: v.clone() for k, v in trained.state_dict().items()}  # before the reset below
    trained_names = dict(trained.names)
    prior = out / "prior.pt"
    reset = reset_class_outputs(trained, fresh_like(trained))
    torch.save({"model": trained, "train_args": {}}, prior)
    shipped = out / "defect-half.pt"
    kept = trained_state  # cloned before the reset: the trained class outputs, not the fresh ones
    names = [trained_names[i] for i in range(len(trained_names))]
    torch.save({"state_dict": kept, "meta": {"model": MODEL_HALF, "images": images, "imgsz": imgsz,
                                             "synth_seed": SYNTH_SEED, "minutes": minutes, "names": names,
                                             "faint_frac": faint_frac, "relief_frac": relief_frac,
                                             "colour_frac": colour_frac}}, shipped)
    print(f"{shipped}: {len(kept)} tensors, {sum(map(bool, map(CLASS_OUTPUT.search, kept)))} of them class outputs "
          f"of {names} (init.prior: defect)")
    print(f"{prior}: {sum(p.numel() for p in trained.parameters())} parameters, class outputs reset: {len(reset)} "
          f"tensors ({', '.join(reset[:2])}, ...)")
    return prior


def train(data: Path, run: Path, minutes: float, threads: int) -> None:
    from ultralytics import YOLO

    import gradkit
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.integrations.ultralytics.models import resolved_model
    from gradkit.integrations.ultralytics.throughput import keep_training_threads, training_seconds_per_image
    from gradkit.plan import make_plan

    fp = fingerprint_dataset(data)
    plan = make_plan(fp, minutes, functools.partial(training_seconds_per_image, threads=threads, on_cpu=True))
    # from scratch: at the budget rule's size, never above the size the data calls for (the plan's 1.25x of it,
    # upscale_from_prior, is for a run that starts from a prior)
    args = {k: v for k, v in plan.train.items() if k != "model"}
    args["imgsz"] = min(args["imgsz"], make_plan(fp).train["imgsz"])
    print(f"prior: {plan.command()} (trained as {MODEL_HALF}, from scratch, at imgsz {args['imgsz']})", flush=True)
    yolo = YOLO(resolved_model(MODEL_HALF))
    gradkit.attach(yolo, {**plan.gradkit, "init": {"prior": "none"}}, {"report.enabled": False, "monitor.plot": False})
    keep_training_threads(yolo, threads)
    yolo.train(data=str(data), seed=0, workers=0, device="cpu", plots=False, val=False, verbose=False,
               project=str(run.parent), name=run.name, exist_ok=True, **args)


def fresh_like(model):
    """A newly built model of ``model``'s architecture and classes (Ultralytics' own initialisation)."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)  # the same prior.pt from the same run
    return DetectionModel(model.yaml, nc=model.model[-1].nc, verbose=False)


def reset_class_outputs(model, fresh) -> list[str]:
    """Copy ``fresh``'s class-output tensors into ``model`` (in place); the names copied."""
    import torch

    names = [k for k in model.state_dict() if CLASS_OUTPUT.search(k)]
    if not names:
        raise SystemExit("no class-output layer (cv3.i.2) in the trained model: the Detect head changed")
    with torch.no_grad():
        own, new = model.state_dict(), fresh.state_dict()
        for k in names:
            own[k].copy_(new[k])
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, timed and trained on (the shipped "
                    "prior: 1)")
    ap.add_argument("--faint-frac", type=float, default=0.0, help="SynthSpec.faint_frac of the prior's images "
                    "(the shipped prior: 0)")
    ap.add_argument("--relief-frac", type=float, default=0.0, help="SynthSpec.relief_frac of the prior's images "
                    "(the shipped prior: 0)")
    ap.add_argument("--colour-frac", type=float, default=0.0, help="SynthSpec.colour_frac of the prior's images "
                    "(the shipped prior: 0)")
    a = ap.parse_args()
    build_prior(Path(a.out).resolve(), a.images, a.imgsz, a.minutes, a.threads, a.faint_frac, a.relief_frac,
                a.colour_frac)


if __name__ == "__main__":
    main()
