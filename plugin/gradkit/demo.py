"""``gradkit demo``: the main job. Synthetic defects -> ``gradkit plan`` on them -> the planned model
and recipe from scratch -> held-out evaluation, offline and within about ten minutes on a 2-core CPU."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gradkit.plan import MODEL, budget_minutes
from gradkit.synth_spec import SYNTH_DIR

__all__ = ["DEMO_DEFAULTS", "run_demo"]

#: Chosen so that the run fits in ~10 minutes on 2 CPU cores (see README for the measurement).
DEMO_DEFAULTS = {
    "data_dir": SYNTH_DIR,
    "images": 500,
    "imgsz": 256,
    "seed": 0,
    "out": "runs/gradkit-demo",
    "gradkit": "plan",
    "budget": 8.0,
    "threads": 0,
}
#: Ultralytics train arguments of the demo; any of them (or any other) can be given on the command line.
#: A short from-scratch run needs many optimizer steps (nbs=batch: one per batch instead of one per 64
#: images), a short warmup and AdamW at a slightly higher rate than Ultralytics' automatic choice.
#: Per-epoch validation is off to stay within the time budget: the final epoch is validated, and the
#: end-of-training and test reports evaluate the final weights. With ``gradkit=plan`` (the default) the
#: plan's model, imgsz and training time (``budget`` minutes) replace ``epochs``; arguments given on the
#: command line win over both (``epochs=`` then drops the plan's ``time``).
TRAIN_DEFAULTS = {"epochs": 30, "batch": 16, "nbs": 16, "workers": 1, "optimizer": "AdamW", "lr0": 0.002,
                  "warmup_epochs": 1, "val": False}


#: Train arguments the demo sets itself, and what to give instead.
SET_BY_DEMO = {"data": "give data_dir=", "project": "give out=", "name": "give out=", "exist_ok": "it reuses out=",
               "device": "it trains on the CPU"}


def _parse(args: Sequence[str]) -> tuple[dict, dict, dict]:
    """Demo options, the Ultralytics train arguments, and every argument given on the command line."""
    opts, train, given = dict(DEMO_DEFAULTS), dict(TRAIN_DEFAULTS), {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq:
            raise SystemExit(f"gradkit demo: arguments take the form key=value, got {arg!r}; demo "
                             f"arguments: {', '.join(f'{k}=' for k in opts)}, plus any yolo train argument")
        if key in SET_BY_DEMO:
            raise SystemExit(f"gradkit demo: {key}= is set by the demo ({SET_BY_DEMO[key]})")
        given[key] = yaml.safe_load(value) if key in opts else _yolo_value(arg, key, value)
        (opts if key in opts else train)[key] = given[key]
    if "budget" in given and opts["gradkit"] != "plan":
        raise SystemExit(f"gradkit demo: budget= is the plan's training time; with gradkit={opts['gradkit']} "
                         "give epochs= instead")
    opts["budget"] = budget_minutes(opts["budget"], "gradkit demo")
    _check_model(given.get("model"))
    return opts, train, given


def _yolo_value(arg: str, key: str, value: str) -> Any:
    """A train argument's value as the yolo entrypoint reads it (``1e-3`` a number, where YAML reads text)."""
    from gradkit.integrations.ultralytics.seams import yolo_given_args

    return yolo_given_args([arg]).get(key, value)


def _check_model(model: object) -> None:
    """A ``model=`` yaml that does not exist: one line, before any data is generated (the plan's timer and
    Ultralytics would find out with a traceback)."""
    from gradkit.integrations.ultralytics.models import missing_model_config

    missing = missing_model_config(model)
    if missing is not None:
        raise SystemExit(f"gradkit demo: {missing}")


def _planned(data_yaml: Path, opts: dict, train: dict, given: dict, out: Path) -> tuple[str, dict, dict]:
    """``gradkit plan`` on the demo's data: the model, train arguments and gradkit config it recommends,
    under the command line's own arguments; prints each choice and writes the plan into the run folder."""
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.integrations.ultralytics.throughput import training_seconds_per_image
    from gradkit.plan import make_plan, write_plan

    fp = fingerprint_dataset(data_yaml, split="train")
    given_model = None if "model" not in given else str(given["model"])
    timer = functools.partial(training_seconds_per_image, threads=_threads(opts), on_cpu=True)  # as the demo trains
    fixed_epochs = "epochs" in given and "time" not in given  # epochs= drops the budget and the plan's time=
    budget = None if fixed_epochs else opts["budget"]
    plan = make_plan(fp, budget, _yaml_timer(timer), model=given_model)  # the estimate counts a given model
    planned = {k: v for k, v in plan.train.items() if k not in given}
    if fixed_epochs:
        planned.pop("time", None)
    model = train.pop("model", planned.pop("model", MODEL))
    print(f"gradkit demo: the plan for {data_yaml} (gradkit plan data={data_yaml}"
          + (f" budget={budget:g})" if budget else "; epochs= given: no time budget)"))
    for c in plan.choices:
        print(f"  {c.key} = {c.value}{'  (provisional)' if c.provisional else ''}: {c.reason}")
    replaced = [k for k in plan.train if k not in planned and k != "model"]
    if replaced:
        print("  the command line replaces: " + ", ".join(
            f"{k}={given[k]}" if k in given else f"{k} (epochs={given['epochs']} given)" for k in replaced))
    added = {k: v for k, v in train.items() if k not in given and k not in planned and k != "epochs"}
    print("  the demo adds (a short run; plan.yaml keeps the plan's own command): "
          + " ".join(f"{k}={v}" for k, v in added.items()))
    write_plan(plan, fp, out / "plan.yaml")
    return model, {**train, **planned}, plan.gradkit


def _yaml_timer(timer):
    """``timer`` for model yamls; None (not timed) for weights such as ``model=yolo26n.pt``, which it cannot build."""
    def seconds(model: str, imgsz: int, nc: int) -> float | None:
        return timer(model, imgsz, nc) if model.lower().endswith((".yaml", ".yml")) else None
    return seconds


def _ensure_dataset(data_dir: Path, images: int, imgsz: int, seed: int) -> Path:
    from gradkit.data.output import OutputRefused
    from gradkit.synth import SynthSpec, generate_dataset, made_by

    try:
        spec = SynthSpec(images=images, imgsz=imgsz, seed=seed)
    except ValueError as exc:
        raise SystemExit(f"gradkit demo: {exc}") from None
    data_yaml = data_dir / "data.yaml"
    if data_yaml.exists() and made_by(yaml.safe_load(data_yaml.read_text(encoding="utf-8")), spec):
        return data_yaml
    try:
        return generate_dataset(data_dir, spec)
    except OutputRefused:  # another dataset (or other files) there: never overwritten
        raise SystemExit(f"gradkit demo: data_dir={data_dir} already holds files but not a dataset generated with "
                         f"images={images} imgsz={imgsz} seed={seed}; remove it or give another data_dir=") from None


def _threads(opts: dict) -> int:
    """The torch threads the demo trains with: ``threads=``, else every core."""
    return int(opts["threads"]) or os.cpu_count() or 1


def few_steps_note(steps: int) -> str | None:
    """What the summary says when the time budget bought fewer optimizer steps than the report calls a
    trained model (its FEW_STEPS): the time= budget is wall-clock, so a busy or slow machine trains less."""
    from gradkit.report.render import FEW_STEPS

    if steps >= FEW_STEPS:
        return None
    return (f"only {steps} optimizer steps in the time budget (the report calls under {FEW_STEPS} barely trained): "
            "the machine was busier or slower than when the plan timed it; run it on an idle machine, or give "
            "epochs=40 to train a fixed number of epochs")


def run_demo(args: Sequence[str] = ()) -> int:
    """Run the demo; returns a process exit code."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    opts, train_args, given = _parse(args)
    from ultralytics import YOLO

    import gradkit
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import validate_for_report
    from gradkit.integrations.ultralytics.models import VariantNotWritten, resolved_model
    from gradkit.integrations.ultralytics.throughput import keep_training_threads
    from gradkit.report import build_report, write_report

    start = time.time()
    data_yaml = _ensure_dataset(Path(opts["data_dir"]), int(opts["images"]), int(opts["imgsz"]), int(opts["seed"]))
    out = Path(opts["out"]).resolve()
    if opts["gradkit"] == "plan":
        model_yaml, train_args, cfg = _planned(data_yaml, opts, train_args, given, out)
    else:
        model_yaml, cfg = train_args.pop("model", MODEL), opts["gradkit"]
    imgsz = int(train_args.pop("imgsz", opts["imgsz"]))
    try:
        model = YOLO(resolved_model(model_yaml))  # the plan's yolo26n-half.yaml is gradkit's: its YAML written here
    except VariantNotWritten as exc:
        print(f"gradkit demo: {exc}", file=sys.stderr)
        return 2
    cfg, changed = load_config(cfg).with_given_hyps(given)  # a hyp given on the command line wins, as train's does
    if changed:
        print("gradkit demo: the command line replaces " + ", ".join(
            f"augment.ultralytics.{k}={c:g} with {v:g}" for k, (c, v) in changed.items()))
    gradkit.attach(model, cfg)
    # Ultralytics trains on min(8, cpus - 1) threads; on a 2-core machine that halves the demo's speed.
    keep_training_threads(model, _threads(opts))
    model.train(data=str(data_yaml), imgsz=imgsz, seed=int(opts["seed"]), project=str(out.parent),
                name=out.name, exist_ok=True, device="cpu", **train_args)
    run_dir = Path(model.trainer.save_dir)
    test_dir = out.parent / (out.name + "-test")
    ev = validate_for_report(run_dir / "weights" / "best.pt", str(data_yaml), "test", test_dir,
                             imgsz=imgsz, batch=int(train_args["batch"]), device="cpu")
    report = build_report(ev, run_dir=run_dir, plugin_config=model.gradkit.cfg.model_dump(mode="json"),
                          resamples=model.gradkit.cfg.report.resamples)
    paths = write_report(report, test_dir)
    minutes = (time.time() - start) / 60
    h = ev.headline
    print("\n" + "=" * 72)
    print(f"gradkit demo finished in {minutes:.1f} min ({model_yaml}, imgsz {imgsz}, "
          f"{model.trainer.epoch + 1} epochs)")
    print(f"  held-out test split: mAP50 {h['mAP50']:.3f}  mAP50-95 {h['mAP50-95']:.3f}  "
          f"P {h['precision']:.3f}  R {h['recall']:.3f}")
    print(f"  test report:         {paths['html']}")
    print(f"  training run:        {run_dir} (report.html: the val split)")
    print(f"  gradient records:    {run_dir / 'gradients.csv'}, {run_dir / 'gradient_steps.csv'}")
    print(f"  gradient heatmap:    {run_dir / 'gradients.png'}")
    print(f"  gradient alerts:     {run_dir / 'gradient_alerts.jsonl'} ({model.gradkit.alert_count} alerts)")
    note = few_steps_note(model.gradkit.step) if train_args.get("time") else None  # time=: a wall-clock budget
    if note:
        print(f"  note: {note}")
    print("=" * 72)
    return 0
