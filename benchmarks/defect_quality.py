"""Stock Ultralytics vs the planned recipe (``gradkit plan``), on more than one kind of data.

    python benchmarks/defect_quality.py --seeds 0,1,2                  # the full comparison (hours on a CPU)
    python benchmarks/defect_quality.py --quick                        # tiny smoke version (minutes)
    python benchmarks/defect_quality.py --merge A/results.json B/results.json   # seeds run apart, one table
    python benchmarks/defect_quality.py --sets weld --channels 1 ...   # the sets' YAMLs say channels: 1 (set-ch1)

Evaluation sets: ``synth`` (``gradkit synth``: procedural surfaces, the set the rules were designed
on) and ``photo`` (``gradkit.synth_photo``: real photographs, another renderer, distractors; built to
design nothing on, though the plan's faint-defect rule was found on it in the end: README) and
``surface`` (``gradkit.synth_surface``: colour, 5:4 images whose height is ``--imgsz``, fabric,
brushed metal, circuit boards and colour photographs, a third renderer, contrast blind to the texture;
built after the rules and kept out of their design) and ``material`` (``gradkit.synth_material``: 4:3
images whose height is ``--imgsz``, GIMP's material patterns (``apt-get install gimp-data``), a fourth
renderer of relief and pigment under one light; built after every rule, including the budget rule,
and used to decide nothing) and ``strip`` (``gradkit.synth_strip``: 5:3 gray images whose height is
``--imgsz``, rolled strip, weave and ground metal with scratches along the grain in boxes 1-3 px thin, a
fifth renderer; built after the warp's label filter was found, to measure it where it bites) and ``weld``
(``gradkit.synth_weld``: 3:2 gray weld radiographs whose height is ``--imgsz``, film scratches, cracks, pores
and slag in a rippled bead, wire indicators, lead markers and spatter as look-alikes, a sixth renderer drawing by
distance field; built after every rule and ablation, to report on once). Each set
gets its own plan from its own fingerprint (that is the point of a self-configuring recipe). Recipes, all
from scratch, trained on ``train`` and scored on ``test``:

- ``stock``: Ultralytics, ``yolo26n.yaml``, given ``imgsz``/``epochs``/``batch``, nothing else;
- ``preset``: the same plus ``gradkit=configs/gradkit/defect.yaml`` (the issue's "preset alone" goal; its
  ``augment.preset: auto`` takes the ``defect`` transform list or none, measured on each set's training split);
- ``plan@epochs``: the plan's model, imgsz, batch/nbs and gradkit config, at the same epochs as stock;
- ``plan@time``: the same with ``time=`` set to the wall time the stock run of that seed took;

Ablations (on request, ``--recipes``), each one part of the plan on its own, to say where a gain comes from:

- ``plan-p2@time``: ``plan@time`` with the stride-4 head, ``yolo26n-p2.yaml`` (the plan's choice until
  this ablation showed it loses at equal wall time); ``plan-p2@epochs``: the same at stock's epochs,
  whether the finer head pays for thin lines once time is not what limits it;
- ``stock-nbs@epochs``: stock with the plan's ``batch``/``nbs`` only;
- ``stock-imgsz@epochs``: stock at the plan's ``imgsz`` only (on ``surface`` the plan trains at the
  native 320 px where stock is given 256: what that alone is worth);
- ``plan-aug@epochs``: stock with the plan's gradkit configuration only (its augmentation);
- ``preset-list``: ``preset`` with its transform list forced on (``augment.preset: defect``, whatever auto
  would choose): the preset file as it was before ``auto``;
- ``preset-sensor``: ``preset`` with ``augment.preset: defect-sensor`` (the defect transforms plus blur
  and JPEG: the ``defect`` preset until this ablation);
- ``preset-nopaste``: ``preset`` with copy-paste off (``augment.copy_paste.p: 0``): what the
  preset's transforms do without the pasted defects;
- ``preset-notransforms``: ``preset`` without its Albumentations transforms (``augment.preset: none``;
  copy-paste, box filters and Ultralytics settings kept);
- ``plan-narrowscale@epochs``: ``plan@epochs`` with Ultralytics' random zoom narrowed from its
  default ``scale: 0.5`` (0.5-1.5x) to ``NARROW_SCALE`` (0.75-1.25x): the plan keeps thin lines at
  their native size, and the default zoom still shrinks them to half;
- ``plan-cls2@epochs``: ``plan@epochs`` with Ultralytics' classification loss gain doubled (``cls``
  0.5 -> ``CLS_GAIN``): missed thin defects are mostly unseen, a failure of the class score (tried as
  a rule for thin data and withdrawn: README, "Stock vs plan");
- ``plan-defectcells@epochs``: ``plan@epochs`` with ``assign.defect_cells``: the assigner's positives for a
  box only from the feature cells holding pixels that stand out from the texture around it (a thin line's
  box is mostly background: ``benchmarks/assigner_cells.py``);
- ``plan-nwd@epochs`` and ``plan-nwd@time``: the plan with ``assign.nwd``: the assigner scores predictions by the
  larger of CIoU and the normalized Wasserstein distance, so tiny and thin boxes that no prediction overlaps yet
  get a class target (README, "What the assigner teaches each class": what is taught 0 is never detected);
  ``plan-nwdwide@epochs``: the same with ``assign.nwd_scale`` ``NWD_WIDE_SCALE`` px (4 of yolo26n's finest strides):
  a trained model's boxes at the pits lie so far off that NWD at 8 px scores them 0.001, at 32 px 0.445
  (``benchmarks/assigner_targets.py --nwd-scale``);
- ``plan-nopaste@epochs``: ``plan@epochs`` with copy-paste off (``augment.copy_paste.p: 0``): what the plan's
  pasted defects are worth to the thin classes (``preset-nopaste`` measured it for the preset only);
- ``plan-thinpaste@epochs``: ``plan@epochs`` pasting the fingerprint's thin classes (``thin_classes()``)
  ``THIN_PASTE_WEIGHT`` times as often as each other class: do thin lines gain from more pasted thin lines? (On
  faint data the fingerprint's stroke measure may pick other classes: on the photographs it picked the stains,
  README "Stock vs plan"; each run records its ``class_weights`` in its ``score.json``.)
  ``plan-linepaste@epochs``: the same favouring the line classes by name (``LINE_CLASSES``), the question
  thin-paste meant to ask where the fingerprint picks other classes;
- ``plan-fliplr@epochs``: ``plan@epochs`` with Ultralytics' own left-right flips (its default ``fliplr``);
  until session 31 the plan turned flips off on every set, and this measured what that cost where it leaves
  out the transform list (which would flip). Since then the plan keeps them there itself, so this recipe is
  ``plan@epochs`` on such a set and differs only where the list's D4 flips already;
  ``plan-nofliplr@epochs``: ``plan@epochs`` with ``fliplr`` 0, the plan as it was until session 31: the same
  question asked the other way round on sets the flip rule was not decided on;
- ``preset-d4only`` / ``preset-nod4``: ``preset`` with only the D4 symmetries of its transform list /
  with all of it but D4 (the photometric transforms): which part of the list costs where it does;
- ``preset-stockhyp``: ``preset`` with Ultralytics' own augmentation settings left at their defaults
  (``augment.ultralytics: {}``: colour jitter, left-right flips, no rotation);
- ``plan-notransforms@time``: ``plan@time`` without the Albumentations transforms (``augment.preset:
  none``), whatever the plan chose for them;
- ``plan-transforms@time``: ``plan@time`` with the ``defect`` transform list, whatever the plan chose:
  where the faint-defect rule left the list out, what the plan would have done without that rule;
- ``plan-stocksize@time``: ``plan@time`` at stock's ``imgsz`` (``--imgsz``) instead of the plan's: what
  the plan's image size costs or gains at equal wall time; ``plan-stocksize@epochs``: the same at
  stock's epochs, what it costs or gains once time is not the limit;
- ``plan-shrunk@time``: ``plan@time`` at the smallest size ``gradkit plan``'s budget rule trained at until
  session 25 (``BUDGET_SHRINK`` of the plan's ``imgsz``, rounded up to 32; 256 -> 192; the floor is now
  ``DEEP_SHRINK``, ``plan-deep@time``): at a short budget, do more
  epochs at a smaller size beat fewer at the size the plan chose?
- ``plan-budget@time``: the plan ``gradkit plan budget=B`` makes on this machine (B: the same seed's stock
  minutes, or ``--time-s``), timed when the run starts: its own ``imgsz``, model and configuration (since
  session 44 yolo26n at half its width, ``yolo26n-half.yaml``; until then yolo26n);
- ``stock@time``: ``stock`` stopped by Ultralytics' clock (``time=``) at ``--time-s`` instead of after ``--epochs``
  (which it then only sizes the first epoch's schedule by): stock and the plan side by side for one budget
  where the machine, not stock's run, sets it (the compute-ceiling runs on a GPU, README);
- ``plan-deep@time``: ``plan@time`` at ``DEEP_SHRINK`` of the smaller of the plan's ``imgsz`` and the native
  size (``gradkit.plan.deepest_budget_size``; 256 -> 128, the strip set's 704 -> 224): where even
  ``plan-shrunk@time`` buys too few steps, does a deeper shrink pay? ``plan-deep-norot@time``: the same without
  the plan's small rotations (``degrees`` 0): the strip set's scratches, found at that size, get boxes 3.4x
  too thick across the line (the report's box fit), and a line along an axis turned by 2 deg has a box
  several times its width: do the rotations teach the model to box such lines thick? (No: README.)
  ``plan-deep-p2@time``: the same size with the stride-4 head (``yolo26n-p2.yaml``): a 1-2 px line anywhere in
  a stride-8 cell, boxed by offsets from the cell's centre; does a grid twice as fine box it tighter?
  ``plan-deep-dfl@time``: the same size with YOLO26n's box head regressing each side as a distribution
  over 16 bins (DFL, as YOLOv8/11 do: ``reg_max`` 16) instead of one number with an L1 loss; a side a
  fraction of a stride from the cell's centre is where a distribution can be sharper than one value. (It was
  not: README.) ``plan-deep-tiles@time``: the same size, model and configuration trained on ``gradkit tile``'s
  copy of the set cut at its native size into tiles of that size (a step costs what one of plan-deep@time's
  costs; the strip set's 1-2 px scratches keep their width instead of going to 0.5-1 px), Ultralytics' warm-up
  given in the whole images' batches and its mosaic-free end to the nearest epoch of tiles, scored on the
  whole held-out images at their native size: does the shrink cost the thinnest lines what tiles would keep?
  ``plan-deep-box2@time`` and ``plan-deep-l1x2@time``: the same size with twice Ultralytics' ``box`` gain (its
  CIoU term) or twice its ``dfl`` gain (which weighs YOLO26's L1 term on the box sides): the loss gains the
  issue names, tried on the scratches boxed several times too thick. ``plan-deep-nwd@time``: the same size with
  ``assign.nwd`` at its default scale (the finest stride): the scratches' best predictions overlap their 3 px
  boxes at CIoU about 0.2 (``monitor.taught``'s median best target, 0.15-0.26 over the last 30 epochs), which is
  both their class target and their weight in the box loss; NWD scores such a prediction higher
  (``plan-nwd@epochs`` measured it on the photographs only).
  ``plan-deep-perobject@time``: the same size with ``assign.box_loss_per_object``: the scratches' box-loss weights,
  those targets, are under a third of the stains' (0.59-0.79); here each object's best anchor weighs the same.
  ``plan-perobject@time``: ``plan@time`` with the same option, for the sets the plan does not shrink. Since
  session 37 the plan turns it on itself (these two recipes are then the plan); ``plan-noperobject@time`` is the
  plan with Ultralytics' own box-loss weights, and ``plan-budget-noperobject@time`` the same for
  ``plan-budget@time`` (each run times the machine itself, so the two can choose different sizes where the
  budget is a close call: its ``imgsz`` reason, printed, says so). ``plan-budget-fastest@time``: ``plan-budget@time``
  with ``speed.memory_format: fastest``, its budget timed in the faster layout too (session 42 ran these pairs while
  the plan set it, as ``plan-budget@time`` against a ``plan-budget-nchw@time`` that was the plan as it is now).
  ``plan-budget-lr2@time`` and ``plan-budget-lr4@time``: ``plan-budget@time`` with AdamW (as Ultralytics'
  ``optimizer=auto`` picks it for a short run) at twice or four times the rate auto picks (0.00125 for 4
  classes): the thin classes learn with more time; does a faster rate buy what more steps would?
  ``plan-budget-batch8@time``: ``plan-budget@time`` at batch 8 with a step per batch (``nbs`` 8), its size kept:
  on these sets (under 2000 training images, where the plan steps per batch of 16) twice the optimizer steps per
  epoch, as ``nbs`` 16 gave four times stock's; ``optimizer=auto`` counts iterations per batch, so on a set of
  more than about 800 images it would switch to MuSGD.
  ``plan-budget-narrow@time``: ``plan-budget@time`` with yolo26n at half its channel width (``yolo26n-half.yaml``,
  depth and layers kept: more images per second for less capacity), what the plan chooses since session 44 where
  the timer puts it at 1.5x yolo26n's images per second or more and yolo26n would take at most 1526 steps;
  ``plan-budget-yolo26n@time``: ``plan-budget@time`` with yolo26n at its own width, the plan until then. The
  recipes built on ``plan-budget@time`` (``-noperobject``, ``-fastest``, ``-lr2``, ``-lr4``, ``-batch8``) train the
  plan's model too, so since session 44 the half width where the timer chooses it (and since session 46 from the
  defect prior): their README numbers are yolo26n's, from scratch. The width recipes train from scratch.
  ``plan-budget-prior@time``: ``plan-budget@time`` started from gradkit's defect prior (``init.prior: defect``, the
  half width trained on ``gradkit synth``'s renderer by ``benchmarks/defect_prior.py``; the prior's own training is
  not in the budget), what the plan does since session 46 where it trains the half width, with the plan's
  ``init.classes``; ``plan-budget-prior-fresh@time`` and ``plan-budget-prior-byname@time``: the same with the class
  outputs from Ultralytics' initialisation, or the prior's rows for the classes named as its own;
  ``plan-budget-noprior@time``: the same from scratch, the plan until then, at the budget rule's size (since
  session 49 the plan from the prior trains at 1.25x the size the data calls for where the budget rule keeps that
  size, ``gradkit.plan.upscale_from_prior``, since session 57 only where the larger size still buys MIN_STEPS, and
  since session 56 its budget rule counts the half width's steps; the
  recipes from scratch, these and the width recipes, take neither: yolo26n's steps size them, as the plan sizes a
  run from scratch). (Session 46 trained the first with
  Ultralytics' ``pretrained=`` from ``defect_prior.py``'s ``prior.pt``: the same weights, the class outputs
  initialised by a fresh model instead of the run's own.) ``plan-budget-prior-x1.25@time`` and
  ``plan-budget-prior-x1.5@time``: ``plan-budget-prior@time`` at 1.25 or 1.5 times the size the data calls for
  (the plan without a budget; rounded up to 32): from the prior, does the budget pay more as pixels than as steps?
  ``plan-budget-prior-halfsteps@time``: ``plan-budget-prior@time`` with the budget rule counting the half width's
  own steps (it sized by yolo26n's until session 56, as its pairs were measured from scratch), without the 1.25x;
  ``plan-budget-prior-halfsteps-up@time``:
  the same with the prior's 1.25x (``gradkit.plan.upscale_from_prior``) where that rule keeps the native size,
  whatever steps it leaves: the plan as session 56 made it (since session 57 the plan's own enlarges only where
  the larger size still buys MIN_STEPS).
  ``plan-budget-prior-paste2@time``: ``plan-budget-prior@time`` pasting into ``PASTE_DOSE`` times as many training
  samples (``augment.copy_paste.p``; measured only on and off before session 58);
  ``plan-budget-prior-pasted4@time``: ``plan-budget-prior@time`` with each paste turned or mirrored
  (``augment.copy_paste.d4``);
  ``plan-budget-prior-linecls2@time``: ``plan-budget-prior@time`` with the line classes (scratch, crack) weighing
  twice as much in the classification loss (``assign.class_loss_weights``);
  ``plan-budget-prior-thin3@time``: the three above together.

``--channels 1``: each set's YAML copied saying ``channels: 1`` (read gray, a first layer of one channel; runs,
held-out YAMLs and tiles under ``SET-ch1``).

Scored on the held-out images: ``val`` and ``test`` together (training runs with ``val=False`` and the
last weights are scored, so ``val`` takes no part in training or model selection; together they hold
3x the images of ``test`` alone, which matters for small sets). Prints mean ± std over seeds of
mAP50-95, mAP50 and per-class AP50, ratios against stock, and the inspection KPIs of gradkit's
evaluation report on the same images (escape rate: defective images not rejected; false-reject rate:
defect-free images rejected; at the report's operating point), and per class the share of the parts
holding it that were shipped. Each run's score is kept in its run
folder (``score.json``) and reused when the script is run again with the same ``--out``, so an
interrupted comparison continues (a score kept before the KPIs were gets them from its weights,
without training); results also go to ``--out/results.json`` after every run, with each set's
fingerprint (``gradkit plan``'s measures) and plan.
``--threads 1`` with ``taskset -c 0`` keeps the timing fair on a 2-core machine while the other core does something
else: Ultralytics trains and validates, and the budget timer times, on min(8, cpus - 1) threads whatever
``--threads`` says (one here), so on a larger machine pin as many cores as that count.
``--time-s S`` gives the ``@time`` recipes a budget of S seconds instead of the same seed's stock time,
so they can train beside stock (e.g. S = the mean of other seeds' stock times; report it as such).
``--device 0 --workers 8`` trains on a CUDA GPU (Ultralytics' default AMP); the device is part of the
recipe a cached score is checked against, and ``@time`` budgets then count that machine's seconds.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

#: Ultralytics' random zoom of ``plan-narrowscale@epochs`` (its default 0.5 zooms 0.5-1.5x). Tried for
#: thin lines on the design set and lost (README, "Stock vs plan"); the plan keeps Ultralytics' zoom.
NARROW_SCALE = 0.25
#: The classification loss gain of ``plan-cls2@epochs``: twice Ultralytics' default 0.5.
CLS_GAIN = 1.0
#: How much more often ``plan-thinpaste@epochs`` pastes each thin class than each other class.
THIN_PASTE_WEIGHT = 3.0
#: The evaluation sets' line-shaped classes, by the name every generator here gives them:
#: ``plan-linepaste@epochs`` favours these, whatever the fingerprint measures.
LINE_CLASSES = ("scratch", "crack")
RECIPES = ("stock", "preset", "plan@epochs", "plan@time")
#: Ablations, not run by default (see the module docstring).
ABLATIONS = ("stock@time", "plan-p2@time", "plan-p2@epochs", "stock-nbs@epochs", "stock-imgsz@epochs",
             "plan-aug@epochs",
             "preset-list", "preset-sensor", "preset-nopaste", "preset-notransforms", "preset-d4only", "preset-nod4",
             "preset-stockhyp", "plan-notransforms@time", "plan-narrowscale@epochs",
             "plan-cls2@epochs", "plan-transforms@time", "plan-stocksize@time",
             "plan-stocksize@epochs", "plan-shrunk@time", "plan-deep@time", "plan-budget@time",
             "plan-defectcells@epochs", "plan-deep-norot@time",
             "plan-deep-p2@time", "plan-deep-dfl@time", "plan-nopaste@epochs",
             "plan-thinpaste@epochs", "plan-linepaste@epochs", "plan-fliplr@epochs", "plan-nofliplr@epochs",
             "plan-nwd@epochs", "plan-nwd@time", "plan-nwdwide@epochs", "plan-deep-tiles@time",
             "plan-deep-box2@time", "plan-deep-l1x2@time", "plan-deep-nwd@time",
             "plan-deep-perobject@time", "plan-perobject@time", "plan-noperobject@time",
             "plan-budget-noperobject@time", "plan-budget-fastest@time",
             "plan-budget-lr2@time", "plan-budget-lr4@time", "plan-budget-batch8@time",
             "plan-budget-narrow@time", "plan-budget-yolo26n@time", "plan-budget-prior@time",
             "plan-budget-prior-fresh@time", "plan-budget-prior-byname@time", "plan-budget-noprior@time",
             "plan-budget-prior-x1.25@time", "plan-budget-prior-x1.5@time", "plan-budget-prior-halfsteps@time",
             "plan-budget-prior-halfsteps-up@time", "plan-budget-prior-faded@time", "plan-budget-prior-paste2@time",
             "plan-budget-prior-pasted4@time", "plan-budget-prior-linecls2@time",
             "plan-budget-prior-thin3@time", "plan-budget-prior-final1.5@time",
             "plan-budget-prior-final1.25@time")


#: ``plan-nwdwide``'s NWD constant in pixels: 4 of yolo26n's finest strides.
NWD_WIDE_SCALE = 32.0

SET_NAMES: tuple[str, ...] = ("synth", "photo", "surface", "material", "strip", "weld")  # the sets build_sets makes


def build_sets(out: Path, names: list[str], images: int, imgsz: int, seed: int = 1000) -> dict[str, Path]:
    """Each named set, generated once under ``out/data`` (the benchmark's own sets are drawn with seed 1000)."""
    from gradkit.synth import SynthSpec, generate_dataset
    from gradkit.synth_material import MaterialSpec, generate_material_dataset
    from gradkit.synth_photo import PhotoSpec, generate_photo_dataset
    from gradkit.synth_strip import StripSpec, generate_strip_dataset
    from gradkit.synth_surface import SurfaceSpec, generate_surface_dataset
    from gradkit.synth_weld import WeldSpec, generate_weld_dataset

    sets = {}
    for name in names:
        root = out / "data" / (f"{name}-{images}-{imgsz}" + ("" if seed == 1000 else f"-seed{seed}"))
        if (root / "data.yaml").exists():
            sets[name] = root / "data.yaml"
            continue
        shutil.rmtree(root, ignore_errors=True)  # this script's own, left half-written by an interruption
        if name == "synth":
            sets[name] = generate_dataset(root, SynthSpec(images=images, imgsz=imgsz, seed=seed), progress=False)
        elif name == "photo":
            sets[name] = generate_photo_dataset(root, PhotoSpec(images=images, imgsz=imgsz, seed=seed))
        elif name == "surface":  # 5:4 colour images, imgsz their height
            spec = SurfaceSpec(images=images, width=imgsz * 5 // 4, height=imgsz, seed=seed)
            sets[name] = generate_surface_dataset(root, spec)
        elif name == "material":  # 4:3 lit relief on GIMP's material patterns, imgsz their height
            spec = MaterialSpec(images=images, width=round(imgsz * 4 / 3 / 8) * 8, height=imgsz, seed=seed)
            sets[name] = generate_material_dataset(root, spec)
        elif name == "strip":  # 5:3 gray panels with the grain along an axis, imgsz their height
            spec = StripSpec(images=images, width=round(imgsz * 5 / 3 / 8) * 8, height=imgsz, seed=seed)
            sets[name] = generate_strip_dataset(root, spec)
        elif name == "weld":  # 3:2 gray radiographs, imgsz their height
            spec = WeldSpec(images=images, width=round(imgsz * 3 / 2 / 8) * 8, height=imgsz, seed=seed)
            sets[name] = generate_weld_dataset(root, spec)
        else:
            raise SystemExit(f"unknown set {name!r}: {', '.join(SET_NAMES)}")
    return sets


def one_channel_yaml(data: Path) -> Path:
    """A copy of the benchmark's own dataset YAML saying ``channels: 1`` (Ultralytics then reads the images gray and
    builds a first layer of one channel, as for a monochrome camera's data), in a folder of its own beside the set's
    under this script's ``out`` (its name keeps the held-out YAML and tiles made from it apart from the set's)."""
    import yaml

    cfg = yaml.safe_load(data.read_text(encoding="utf-8"))
    cfg["path"] = str(Path(cfg.get("path") or data.parent).resolve())
    cfg["channels"] = 1
    target = data.parent.with_name(f"{data.parent.name}-ch1") / "data.yaml"
    target.parent.mkdir(exist_ok=True)
    target.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return target


def held_out_yaml(data: Path, out: Path) -> Path:
    """A copy of the dataset YAML whose ``test`` is val + test (written under ``out``, never beside the data)."""
    import yaml

    cfg = yaml.safe_load(data.read_text(encoding="utf-8"))
    cfg["path"] = str(Path(cfg.get("path") or data.parent).resolve())
    cfg["test"] = [cfg["val"], cfg["test"]]
    cfg.pop("download", None)
    target = out / "held-out" / f"{data.parent.name}.yaml"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return target


def last_trained_size(run: Path) -> int:
    """The size a run's last epochs read its training images at: ``gradkit_summary.json``'s ``final_size`` where the
    run switched to it (``size.final_scale``), else ``args.yaml``'s ``imgsz``. Both files are read back: one that
    does not parse, or a size that is not a positive whole number, is refused, naming the file."""
    import yaml

    def read(path: Path, parse) -> dict:
        try:
            content = parse(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise SystemExit(f"{path}: not readable ({exc})") from None
        return content if isinstance(content, dict) else {}

    summary = run / "gradkit_summary.json"
    record = read(summary, json.loads).get("final_size") if summary.is_file() else None
    if isinstance(record, dict) and record.get("from_epoch") is not None:
        imgsz, where = record.get("final_imgsz"), summary
    else:
        where = run / "args.yaml"
        imgsz = read(where, yaml.safe_load).get("imgsz")
    if not isinstance(imgsz, int) or isinstance(imgsz, bool) or imgsz < 1:
        raise SystemExit(f"{where}: no training size in it ({imgsz!r})")
    return imgsz


def train_and_score(data: Path, run_dir: Path, model: str, gradkit_cfg, train: dict, seed: int,
                    held_out: Path, device: str = "cpu", workers: int = 0, score_imgsz: int | None = None) -> dict:
    """Train one recipe and score it on the held-out images (or reuse a finished run's score), at
    ``score_imgsz`` (None: the size its last epochs trained at)."""
    from gradkit.config import load_config

    score_file = run_dir / "score.json"
    recipe = {"data": str(data), "model": model, "train": train,
              "gradkit": None if gradkit_cfg is None else load_config(gradkit_cfg).model_dump(mode="json")}
    recipe.update(device=device, workers=workers)  # both change the numbers (and workers the random streams)
    if score_imgsz is not None:
        recipe["scored_at"] = score_imgsz
    weights = run_dir / "weights" / "last.pt"
    if score_file.exists():
        score = _reused(score_file, recipe)
        if not {KPIS[0], SHIPPED, INTERVALS} <= score.keys() and weights.is_file():  # scored before they were kept
            score.update(_scored(weights, held_out, score_imgsz or last_trained_size(run_dir), device, run_dir)[1])
            score_file.write_text(json.dumps(score), encoding="utf-8")
        return score
    from ultralytics import YOLO

    import gradkit
    from gradkit.integrations.ultralytics.models import resolved_model

    yolo = YOLO(resolved_model(model))  # yolo26n-half.yaml, gradkit's name, becomes the path of its YAML
    if gradkit_cfg is not None:
        gradkit.attach(yolo, gradkit_cfg, {"report.enabled": False, "monitor.plot": False})
    start = time.time()
    yolo.train(data=str(data), seed=seed, deterministic=True, workers=workers, device=device, plots=False, val=False,
               verbose=False, project=str(run_dir.parent), name=run_dir.name, exist_ok=True, **train)
    seconds = time.time() - start
    trained = Path(yolo.trainer.save_dir)
    metrics, kpis = _scored(trained / "weights" / "last.pt", held_out, score_imgsz or last_trained_size(trained),
                            device, run_dir)
    box = metrics.box
    per_class = {metrics.names[int(c)]: float(box.ap50[i]) for i, c in enumerate(box.ap_class_index)}
    score = {"mAP50-95": float(box.map), "mAP50": float(box.map50), "AP50": per_class, "train_s": seconds,
             "epochs_done": int(yolo.trainer.epoch) + 1, "recipe": recipe, **kpis,
             # the model trained, whatever its name: a variant's YAML is rewritten from the installed Ultralytics
             "parameters": sum(p.numel() for p in yolo.trainer.model.parameters())}
    score_file.write_text(json.dumps(score), encoding="utf-8")
    return score


#: The inspection KPIs of gradkit's evaluation report kept per run (``report.json``'s ``inspection``).
KPIS = ("escape_rate", "false_reject_rate")
#: Per class, the share of held-out parts (images) holding it that nothing rejected (the report's
#: ``parts with it shipped``): whether a thin class with a low AP is still caught at the part level.
SHIPPED = "shipped_share"
#: mAP50-95's and each class's AP50's 95% interval over resamples of the held-out images (the report's).
INTERVALS = "intervals"


def _scored(weights: Path, held_out: Path, imgsz: int, device: str, run_dir: Path):
    """Validate ``weights`` on the held-out images: Ultralytics' metrics, and the inspection KPIs of
    gradkit's evaluation report at its operating point (escape and false-reject rates)."""
    from ultralytics import YOLO

    from gradkit.integrations.ultralytics import collect_validation, record_predictions
    from gradkit.report import build_report

    yolo, report = YOLO(str(weights)), {}
    yolo.add_callback("on_val_start", record_predictions)
    yolo.add_callback("on_val_end", lambda validator: report.update(build_report(collect_validation(validator))))
    metrics = yolo.val(data=str(held_out), split="test", imgsz=imgsz, batch=16, device=device, plots=False,
                       verbose=False, project=str(run_dir.parent), name=run_dir.name + "-test", exist_ok=True)
    shipped = {c["name"]: c["shipped_parts"] / c["parts"] for c in report["inspection"]["per_class"] if c["parts"]}
    # how far each AP would move on another draw of held-out images like these (README, "How far the AP would move
    # on other parts"): the spread of one run's score, not of the recipe's
    spread = report["intervals"] or {}
    intervals = {"mAP50-95": spread.get("mAP50-95"),
                 "AP50": {c["name"]: c["AP50_interval"] for c in report["per_class"] if c["AP50_interval"]}}
    return metrics, {**{k: report["inspection"][k] for k in KPIS}, SHIPPED: shipped, INTERVALS: intervals}


def _reused(score_file: Path, recipe: dict) -> dict:
    """A finished run's score, if it was trained with this recipe: a folder left by another version of
    a recipe (other data, model, arguments, gradkit configuration) must not stand in for it. Scores
    written before a part of the recipe was kept are compared on the parts they keep."""
    try:
        score = json.loads(score_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"{score_file}: unreadable ({exc}); remove the folder to train again") from None
    if not isinstance(score, dict) or not {"mAP50-95", "mAP50", "AP50", "train_s", "epochs_done"} <= score.keys():
        raise SystemExit(f"{score_file}: not a score written by this script; remove the folder to train again")
    kept = score.get("recipe") or {}
    if isinstance(kept, dict) and kept:  # recipes kept before the device and workers were: CPU, no workers
        kept = {"device": "cpu", "workers": 0, **kept}
    now = json.loads(json.dumps(recipe))  # tuples become lists, as in the file
    changed = sorted(k for k in kept if kept[k] != now.get(k)) if isinstance(kept, dict) else ["recipe"]
    if changed:
        raise SystemExit(f"{score_file}: trained with another {', '.join(changed)}; remove the folder to train again")
    return score


def _folder(recipe_name: str) -> str:
    """The run folder's tag: the recipe's name, without characters a path should not hold."""
    return recipe_name.replace("@", "-at-")


#: DFL bins of ``plan-deep-dfl@time``: YOLOv8/11's ``reg_max`` (YOLO26's is 1, no distribution).
DFL_BINS = 16


def _dfl_model_yaml(model: str) -> str:
    """``model`` (an Ultralytics YOLO26 yaml name, e.g. ``yolo26n.yaml``) with ``reg_max`` DFL_BINS, the rest of
    the architecture exactly the installed one."""
    from gradkit.integrations.ultralytics.models import with_box_bins

    return _written_model_yaml(with_box_bins(model, DFL_BINS), f"{Path(model).stem}-dfl{DFL_BINS}.yaml")


def _written_model_yaml(cfg: dict, name: str) -> str:
    """Write a model yaml for one benchmark recipe into the temporary folder; its path."""
    import tempfile

    from gradkit.integrations.ultralytics.models import write_model_yaml

    return str(write_model_yaml(cfg, Path(tempfile.gettempdir()) / "gradkit-bench" / name))


def _recipe_args(recipe_name: str, plan, base: dict, stock: dict | None, fp=None) -> tuple[str, object, dict]:
    """(model yaml, gradkit configuration or None, train arguments) of one recipe for one seed;
    ``stock`` is that seed's stock score (None while stock itself is being trained); ``fp`` the set's
    fingerprint, which ``plan-deep@time`` needs."""
    from gradkit.augment.pipeline import PRESETS
    from gradkit.config import load_config
    from gradkit.plan import MODEL_P2, deepest_budget_size, smallest_budget_size

    planned = {k: v for k, v in plan.train.items() if k not in ("model", "epochs", "time")}
    at_stock_time = {**base, **planned, "time": stock["train_s"] / 3600} if stock else {}
    deep_at_stock_time = {**at_stock_time, "imgsz": deepest_budget_size(fp, planned["imgsz"]) if fp else 0}
    batching = {k: v for k, v in planned.items() if k in ("batch", "nbs")}
    built = {"preset-list": {"augment.preset": "defect"}, "preset-sensor": {"augment.preset": "defect-sensor"},
             "preset-nopaste": {"augment.copy_paste.p": 0.0},
             "preset-notransforms": {"augment.preset": "none"}, "preset-stockhyp": {"augment.ultralytics": {}},
             "preset-d4only": _transforms_only(PRESETS["defect"], keep_d4=True),
             "preset-nod4": _transforms_only(PRESETS["defect"], keep_d4=False)}
    if recipe_name in built:  # the preset with one override
        return "yolo26n.yaml", load_config("defect", built[recipe_name]), base
    if recipe_name in ("plan-budget@time", "plan-budget-noperobject@time", "plan-budget-fastest@time"):  # timed here
        fastest = recipe_name == "plan-budget-fastest@time"
        model, cfg, args = _budget_plan_args(fp, base, stock, recipe_name, "fastest" if fastest else "contiguous")
        if recipe_name == "plan-budget-noperobject@time" and cfg is not None:
            cfg = _with_assign(cfg, box_loss_per_object=False)
        if fastest and cfg is not None:
            cfg = {**cfg, "speed": {"memory_format": "fastest"}}
        return model, cfg, args
    if recipe_name in LR_RECIPES:  # the plan's own budget and size, its optimizer at a higher rate
        model, cfg, args = _budget_plan_args(fp, base, stock, recipe_name)
        return model, cfg, {**args, **_adamw_at(LR_RECIPES[recipe_name], len(fp.class_names))} if args else args
    if recipe_name == "plan-budget-batch8@time":  # the plan's own budget and size, half its batch
        model, cfg, args = _budget_plan_args(fp, base, stock, recipe_name)
        return model, cfg, {**args, "batch": SMALL_BATCH, "nbs": SMALL_BATCH} if args else args
    if recipe_name in WIDTH_RECIPES:  # the plan's own budget, size and configuration, one width of yolo26n
        import gradkit.plan

        _, cfg, args = _budget_plan_args(fp, base, stock, recipe_name)
        cfg = None if cfg is None else {**cfg, "init": {"prior": "none"}}  # both from scratch, as measured
        return (getattr(gradkit.plan, WIDTH_RECIPES[recipe_name]), cfg,
                _from_scratch_size(fp, args, stock, plan.train["imgsz"]))
    if recipe_name in PRIOR_RECIPES:  # the plan's own budget, size and model, from the prior or from scratch
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        if cfg is None:
            return model, cfg, args
        if PRIOR_RECIPES[recipe_name]["prior"] == "none":
            args = _from_scratch_size(fp, args, stock, plan.train["imgsz"])
        return model, {**cfg, "init": {**cfg.get("init", {}), **PRIOR_RECIPES[recipe_name]}}, args
    if recipe_name in PRIOR_SIZE_RECIPES:  # the plan from the prior, its images enlarged: pixels for its steps
        from gradkit.plan import _round_up

        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        if cfg is None:
            return model, cfg, args
        # of the size the data calls for, not of the budget rule's, whose timing moves it between runs
        size = _round_up(plan.train["imgsz"] * PRIOR_SIZE_RECIPES[recipe_name])
        print(f"{recipe_name}: imgsz {args['imgsz']} (the data's {plan.train['imgsz']}) -> {size}", flush=True)
        return model, cfg, {**args, "imgsz": size}
    if recipe_name in PASTE_RECIPES:  # the plan from the prior, pasting otherwise (faded, more often, turned)
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        return model, cfg if cfg is None else PASTE_RECIPES[recipe_name](cfg), args
    if recipe_name == LINE_CLASS_LOSS_RECIPE:  # the plan from the prior, its line classes weighing more as classes
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        return model, cfg if cfg is None else _with_line_class_loss(cfg, fp), args
    if recipe_name == THIN_OPTIONS_RECIPE:  # the plan from the prior with the three thin-class options together
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        return model, cfg if cfg is None else _with_thin_options(cfg, fp), args
    if recipe_name in FINAL_SIZE_RECIPES:  # the plan from the prior, its last epochs at a larger size
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        return model, cfg if cfg is None else _with_final_size(cfg, FINAL_SIZE_RECIPES[recipe_name]), args
    if recipe_name in (HALF_STEPS_RECIPE, HALF_STEPS_UP_RECIPE):  # the plan from the prior, sized by its own steps
        model, cfg, args = _prior_plan_args(fp, base, stock, recipe_name)
        if cfg is None:
            return model, cfg, args
        size = _half_width_budget_size(fp, plan, stock, args)
        return model, cfg, {**args, "imgsz": _prior_upscaled(fp, size) if recipe_name == HALF_STEPS_UP_RECIPE else size}
    if recipe_name == "plan-deep-dfl@time":  # writes a model yaml, only for this recipe
        return _dfl_model_yaml(plan.train["model"]), plan.gradkit, deep_at_stock_time
    return {
        "stock": ("yolo26n.yaml", None, base),
        "stock@time": ("yolo26n.yaml", None, {**base, "time": stock["train_s"] / 3600} if stock else {}),
        "preset": ("yolo26n.yaml", "defect", base),
        "plan@epochs": (plan.train["model"], plan.gradkit, {**base, **planned}),
        "plan@time": (plan.train["model"], plan.gradkit, at_stock_time),
        "plan-p2@time": (MODEL_P2, plan.gradkit, at_stock_time),
        "plan-p2@epochs": (MODEL_P2, plan.gradkit, {**base, **planned}),
        "plan-notransforms@time": (plan.train["model"], _with_preset(plan.gradkit, "none"), at_stock_time),
        "plan-transforms@time": (plan.train["model"], _with_preset(plan.gradkit, "defect"), at_stock_time),
        "plan-stocksize@time": (plan.train["model"], plan.gradkit, {**at_stock_time, "imgsz": base["imgsz"]}),
        "plan-stocksize@epochs": (plan.train["model"], plan.gradkit, {**base, **planned, "imgsz": base["imgsz"]}),
        "plan-shrunk@time": (plan.train["model"], plan.gradkit,
                             {**at_stock_time, "imgsz": smallest_budget_size(planned["imgsz"])}),
        "plan-deep@time": (plan.train["model"], plan.gradkit, deep_at_stock_time),
        "plan-deep-norot@time": (plan.train["model"], _with_ultralytics(plan.gradkit, {"degrees": 0.0}),
                                 deep_at_stock_time),
        "plan-deep-p2@time": (MODEL_P2, plan.gradkit, deep_at_stock_time),
        "stock-nbs@epochs": ("yolo26n.yaml", None, {**base, **batching}),
        "stock-imgsz@epochs": ("yolo26n.yaml", None, {**base, "imgsz": planned["imgsz"]}),
        "plan-aug@epochs": ("yolo26n.yaml", plan.gradkit, base),
        "plan-cls2@epochs": (plan.train["model"], plan.gradkit, {**base, **planned, "cls": CLS_GAIN}),
        "plan-narrowscale@epochs": (plan.train["model"], _with_ultralytics(plan.gradkit, {"scale": NARROW_SCALE}),
                                    {**base, **planned}),
        "plan-fliplr@epochs": (plan.train["model"], _with_ultralytics(plan.gradkit, {"fliplr": _stock("fliplr")}),
                               {**base, **planned}),
        "plan-nofliplr@epochs": (plan.train["model"], _with_ultralytics(plan.gradkit, {"fliplr": 0.0}),
                                 {**base, **planned}),
        "plan-nopaste@epochs": (plan.train["model"], _without_copy_paste(plan.gradkit), {**base, **planned}),
        "plan-thinpaste@epochs": (plan.train["model"], _thin_first_paste(plan.gradkit, fp), {**base, **planned}),
        "plan-linepaste@epochs": (plan.train["model"], _thin_first_paste(plan.gradkit, fp, LINE_CLASSES),
                                  {**base, **planned}),
        "plan-defectcells@epochs": (plan.train["model"], {**json.loads(json.dumps(plan.gradkit)),
                                                          "assign": {"defect_cells": True}}, {**base, **planned}),
        "plan-nwd@epochs": (plan.train["model"], _with_nwd(plan.gradkit), {**base, **planned}),
        "plan-nwd@time": (plan.train["model"], _with_nwd(plan.gradkit), at_stock_time),
        "plan-nwdwide@epochs": (plan.train["model"], _with_nwd(plan.gradkit, NWD_WIDE_SCALE), {**base, **planned}),
        "plan-deep-box2@time": (plan.train["model"], plan.gradkit, {**deep_at_stock_time, "box": 2 * _stock("box")}),
        "plan-deep-l1x2@time": (plan.train["model"], plan.gradkit, {**deep_at_stock_time, "dfl": 2 * _stock("dfl")}),
        "plan-deep-nwd@time": (plan.train["model"], _with_nwd(plan.gradkit), deep_at_stock_time),
        "plan-deep-perobject@time": (plan.train["model"], _with_assign(plan.gradkit, box_loss_per_object=True),
                                     deep_at_stock_time),
        "plan-perobject@time": (plan.train["model"], _with_assign(plan.gradkit, box_loss_per_object=True),
                                at_stock_time),
        "plan-noperobject@time": (plan.train["model"], _with_assign(plan.gradkit, box_loss_per_object=False),
                                  at_stock_time),
    }[recipe_name]


def _native_tiles(data: Path, out: Path, fp, deep: tuple[str, object, dict]) -> tuple[Path, tuple, int]:
    """``plan-deep-tiles@time``: ``plan-deep@time`` (``deep``: its model, configuration and training arguments)
    trained on ``gradkit tile``'s copy of the set, cut at the native size into tiles of the size plan-deep@time
    shrinks whole images to, so a step costs what one of its steps costs and a line keeps its native width;
    scored on the whole held-out images at their native size (the scale the model learnt). Returns the tiled
    copy's YAML, the recipe's arguments and the scoring size."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from gradkit.data.tile import tile_dataset
    from gradkit.plan import native_imgsz

    model, cfg, train = deep
    size = train["imgsz"]
    tiled = out / "data" / f"{data.parent.name}-tiles{size}"
    if not (tiled / "data.yaml").exists():
        tile_dataset(data, size, out=tiled)
    batch = train["batch"]
    whole = -(-fp.images // batch)
    tiles = -(-sum(1 for p in (tiled / "images" / "train").iterdir() if p.suffix == ".png") // batch)
    # Ultralytics warms up for warmup_epochs x batches per epoch and drops mosaic for the last close_mosaic
    # epochs: an epoch of tiles is several whole-image epochs, so both are given in the whole images' batches
    warmup, close = (train.get(k, DEFAULT_CFG_DICT[k]) for k in ("warmup_epochs", "close_mosaic"))
    train = {**train, "warmup_epochs": round(warmup * whole / tiles, 4),
             "close_mosaic": max(1, round(close * whole / tiles))}
    return tiled / "data.yaml", (model, cfg, train), native_imgsz(fp, size)


def _with_assign(gradkit_cfg: dict, **options) -> dict:
    """A plan's gradkit configuration with these ``assign`` options (a copy)."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg.setdefault("assign", {}).update(options)
    return cfg


def _with_nwd(gradkit_cfg: dict, scale: float | None = None) -> dict:
    """The plan's gradkit configuration with ``assign.nwd`` on (at ``scale`` px; None: the finest stride)."""
    return _with_assign(gradkit_cfg, nwd=True, **({} if scale is None else {"nwd_scale": scale}))


def _prior_plan_args(fp, base: dict, stock: dict | None, recipe_name: str) -> tuple[str, object, dict]:
    """:func:`_budget_plan_args` for a recipe that starts from the prior: stops where the plan trains another model
    than the prior's (it would train from scratch under the recipe's name)."""
    from gradkit.plan import MODEL_HALF

    model, cfg, args = _budget_plan_args(fp, base, stock, recipe_name)
    if cfg is not None and model != MODEL_HALF:
        raise SystemExit(f"{recipe_name}: the plan trains {model} here, and the prior is {MODEL_HALF}'s")
    return model, cfg, args


def _from_scratch_size(fp, args: dict, stock: dict | None, wanted: int) -> dict:
    """``args`` at the size the plan's budget rule gives a run from scratch (yolo26n's steps, as its pairs were
    measured), for a recipe from scratch: not the one the plan trains at from the prior (counted in the half width's
    steps since session 56, and 1.25x where that keeps the native size, ``gradkit.plan.upscale_from_prior``)."""
    from gradkit.integrations.ultralytics.throughput import training_seconds_per_image
    from gradkit.plan import ULTRALYTICS_NBS, budget_size

    if not args or not stock:
        return args
    size = budget_size(fp, stock["train_s"] / 60, wanted, args.get("nbs", ULTRALYTICS_NBS), training_seconds_per_image)
    print(f"from scratch: imgsz {args['imgsz']} (the plan's from the prior) -> {size} (by yolo26n's steps)", flush=True)
    return {**args, "imgsz": size}


def _budget_plan_args(fp, base: dict, stock: dict | None, recipe_name: str,
                      memory_format: str = "contiguous") -> tuple[str, object, dict]:
    """What ``gradkit plan budget=B`` makes on this machine, B the same seed's stock minutes: its own size,
    model and gradkit configuration, timed now with the integration's training timer (as the command times it,
    in the layout the run will train in: ``memory_format``).
    The benchmark trains with ``val=False``, so the estimate leaves out the validation after every epoch that
    a user's run (``val=True``) pays for: with it, the plan would count 10-20% fewer steps than these runs get."""
    from gradkit.integrations.ultralytics.throughput import training_seconds_per_image
    from gradkit.plan import make_plan

    if not stock or fp is None:
        return "yolo26n.yaml", None, {}  # while stock trains: never used
    timer = functools.partial(training_seconds_per_image, memory_format=memory_format)
    plan = make_plan(fp, stock["train_s"] / 60, timer)
    print(f"{recipe_name}: {plan.command()}\n  imgsz: {next(c.reason for c in plan.choices if c.key == 'imgsz')}",
          flush=True)
    planned = {k: v for k, v in plan.train.items() if k not in ("model", "epochs", "time")}
    return plan.train["model"], plan.gradkit, {**base, **planned, "time": stock["train_s"] / 3600}


#: The width recipes -> the name of their model in gradkit.plan: yolo26n at half its width (MODEL_HALF, the plan's
#: choice for a budget since session 44) and at its own (MODEL, the plan's until then); both at the size the plan's
#: budget rule chose. (Names, not the values: this module imports gradkit only inside functions.)
WIDTH_RECIPES = {"plan-budget-narrow@time": "MODEL_HALF", "plan-budget-yolo26n@time": "MODEL"}


#: The ``init`` section of the prior recipes over the plan's own (all train the plan's model, which must be the
#: prior's, the half width). ``plan-budget-prior@time`` keeps the plan's ``init.classes``, whatever it becomes; the
#: ``-fresh`` and ``-byname`` recipes fix it.
PRIOR_RECIPES = {"plan-budget-prior@time": {"prior": "defect"},
                 "plan-budget-prior-fresh@time": {"prior": "defect", "classes": "fresh"},
                 "plan-budget-prior-byname@time": {"prior": "defect", "classes": "by_name"},
                 "plan-budget-noprior@time": {"prior": "none"}}


#: ``plan-budget-prior-xF@time``: the plan (from the prior, as it trains since session 46) at F times the size the
#: data calls for (the plan without a budget), rounded up to a multiple of 32, instead of its budget rule's: does a
#: network that starts knowing defects spend the steps a budget buys it better on pixels? (The rule's MIN_STEPS
#: was measured from scratch.)
PRIOR_SIZE_RECIPES = {"plan-budget-prior-x1.25@time": 1.25, "plan-budget-prior-x1.5@time": 1.5}


#: ``plan-budget-prior-halfsteps@time``: the plan from the prior with its budget rule counting the steps of the
#: model it trains (the half width) instead of yolo26n's: the size the data calls for unless the budget buys the
#: half width fewer than MIN_STEPS there (until session 56 the rule sized by yolo26n's steps as its pairs were
#: measured, from scratch; the half width trains about twice yolo26n's steps in the same time), without the prior's
#: 1.25x. Since session 56 the plan's own rule counts the half width's steps, so ``plan-budget-prior@time`` trains
#: as ``plan-budget-prior-halfsteps-up@time`` does where the 1.25x still buys MIN_STEPS (session 57), as this
#: recipe does where it does not.
HALF_STEPS_RECIPE = "plan-budget-prior-halfsteps@time"
#: ``plan-budget-prior-halfsteps-up@time``: that size, PRIOR_UPSCALE times larger where it is the images' native one,
#: whatever steps that leaves: the plan with both rules as session 56 made it (since session 57
#: ``gradkit.plan.upscale_from_prior`` enlarges only where the larger size still buys MIN_STEPS).
HALF_STEPS_UP_RECIPE = "plan-budget-prior-halfsteps-up@time"


def _prior_upscaled(fp, size: int) -> int:
    from gradkit.plan import MAX_IMGSZ, PRIOR_UPSCALE, _round_up, native_imgsz

    if size != native_imgsz(fp, size) or size >= MAX_IMGSZ:
        print(f"{HALF_STEPS_UP_RECIPE}: imgsz {size}, not the native size: kept", flush=True)
        return size
    larger = min(_round_up(size * PRIOR_UPSCALE), MAX_IMGSZ)
    print(f"{HALF_STEPS_UP_RECIPE}: imgsz {size}, the native size -> {larger}", flush=True)
    return larger


def _half_width_budget_size(fp, plan, stock: dict, args: dict) -> int:
    """The budget rule's size (``gradkit.plan.size_buying_steps``, from the size the data calls for down to its
    floor) with the half width's steps on this machine's timer."""
    from gradkit.integrations.ultralytics.throughput import training_seconds_per_image
    from gradkit.plan import MODEL_HALF, ULTRALYTICS_NBS, budget_buys, deepest_budget_size, size_buying_steps

    wanted, nc, nbs = plan.train["imgsz"], len(fp.class_names), args.get("nbs", ULTRALYTICS_NBS)

    def steps(size: int) -> float:  # as gradkit.plan.fit_imgsz_to_budget counts them, for the half width
        seconds = training_seconds_per_image(MODEL_HALF, size, nc)
        return 0.0 if seconds is None else budget_buys(fp.images, stock["train_s"] / 60, nbs, seconds)[1]

    size = size_buying_steps(steps, wanted, deepest_budget_size(fp, wanted))
    print(f"{HALF_STEPS_RECIPE}: imgsz {args['imgsz']} (the plan's) -> {size} (the half width's: "
          f"{steps(size):.0f} estimated at {size}; the data calls for {wanted})", flush=True)
    return size


#: ``plan-budget-prior-faded@time``: the plan from the prior with its pasted defects keeping FADED_CONTRAST of their
#: contrast (``augment.copy_paste.contrast``): copy-paste screens out the faint defects (``min_defect_share``), and
#: two in three of the photographs' cracks and the material set's scratches are faint (README, "What the thin
#: classes still miss"); faded copies of the clear ones show the model faint thin lines on the data's own textures.
FADED_RECIPE = "plan-budget-prior-faded@time"
FADED_CONTRAST = [0.3, 1.0]


# The paste recipes below were tried on the material set's scratches: about 23 of their 72 training boxes pass the
# copy-paste gate (``min_defect_share``), so a run sees few clear examples of them ("few clear examples" below).

#: ``plan-budget-prior-paste2@time``: the plan from the prior pasting into PASTE_DOSE times as many training samples
#: (``augment.copy_paste.p``). Copy-paste was measured only on and off (0 against 0.3: README's rules table, where
#: turning it off cost every learnt class); Simple Copy-Paste (Ghiasi et al. 2021) pasted into every image. A thin
#: class with few clear examples would see each of them more often, in more places.
PASTE_DOSE_RECIPE = "plan-budget-prior-paste2@time"
PASTE_DOSE = 2.0

#: ``plan-budget-prior-pasted4@time``: the plan from the prior with each paste turned or mirrored by one of the
#: square's eight symmetries (``augment.copy_paste.d4``). Where the defects are faint the plan leaves out the transform
#: list, D4 included (the faint-defect rule: whole-image transforms cost the photographs), and keeps only Ultralytics'
#: left-right flips: a thin class with few clear examples then shows each in two headings, not eight.
PASTE_D4_RECIPE = "plan-budget-prior-pasted4@time"


def _paste_section(gradkit_cfg: dict, recipe_name: str) -> tuple[dict, dict]:
    """A copy of a plan's gradkit configuration and its ``augment.copy_paste`` section, for a recipe that changes
    how the plan pastes; stops where the plan does not paste on the set."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    paste = cfg.setdefault("augment", {}).setdefault("copy_paste", {})
    if not paste.get("p"):
        raise SystemExit(f"{recipe_name}: the plan does not paste on this set (augment.copy_paste.p 0)")
    return cfg, paste


def _with_paste_dose(gradkit_cfg: dict, dose: float) -> dict:
    """A plan's gradkit configuration pasting into ``dose`` times as many samples (a copy; at most every sample)."""
    cfg, paste = _paste_section(gradkit_cfg, PASTE_DOSE_RECIPE)
    paste["p"] = min(1.0, paste["p"] * dose)
    return cfg


def _with_paste_d4(gradkit_cfg: dict) -> dict:
    """A plan's gradkit configuration with each paste turned or mirrored (a copy)."""
    cfg, paste = _paste_section(gradkit_cfg, PASTE_D4_RECIPE)
    paste["d4"] = True
    return cfg


def _with_faded_paste(gradkit_cfg: dict) -> dict:
    """A plan's gradkit configuration with its pastes faded to FADED_CONTRAST (a copy)."""
    cfg, paste = _paste_section(gradkit_cfg, FADED_RECIPE)
    paste["contrast"] = FADED_CONTRAST
    return cfg


#: The recipes that change only how the plan from the prior pastes -> what they change in its configuration.
PASTE_RECIPES = {FADED_RECIPE: _with_faded_paste,
                 PASTE_DOSE_RECIPE: functools.partial(_with_paste_dose, dose=PASTE_DOSE),
                 PASTE_D4_RECIPE: _with_paste_d4}


#: ``plan-budget-prior-linecls2@time``: the plan from the prior with the line classes (LINE_CLASSES, by name: the
#: fingerprint's thin share calls half the stains of four sets thin too) weighing LINE_CLASS_LOSS_WEIGHT times as much
#: in the classification loss (``assign.class_loss_weights``). The material set's scratches are a recognition failure
#: (their found boxes rank below false ones); twice the ``cls`` gain for every class lifted the design set's cracks and
#: halved the colour set, so here only the line classes' columns weigh more.
LINE_CLASS_LOSS_RECIPE = "plan-budget-prior-linecls2@time"
LINE_CLASS_LOSS_WEIGHT = 2.0


def _with_line_class_loss(gradkit_cfg: dict, fp) -> dict:
    """A plan's gradkit configuration weighing the set's line classes LINE_CLASS_LOSS_WEIGHT times in the
    classification loss (a copy)."""
    lines = [name for name in fp.class_names.values() if name in LINE_CLASSES]
    if not lines:
        raise SystemExit(f"{LINE_CLASS_LOSS_RECIPE}: the set names none of {', '.join(LINE_CLASSES)}")
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg.setdefault("assign", {})["class_loss_weights"] = {name: LINE_CLASS_LOSS_WEIGHT for name in lines}
    print(f"{LINE_CLASS_LOSS_RECIPE}: class_loss_weights {cfg['assign']['class_loss_weights']}", flush=True)
    return cfg


#: ``plan-budget-prior-thin3@time``: the plan from the prior with the three options tried one at a time on the
#: material set's scratches in sessions 58-59 (PASTE_DOSE_RECIPE, PASTE_D4_RECIPE, LINE_CLASS_LOSS_RECIPE; level to
#: a little higher each) together: whether their small gains add up.
THIN_OPTIONS_RECIPE = "plan-budget-prior-thin3@time"


def _with_thin_options(gradkit_cfg: dict, fp) -> dict:
    """A plan's gradkit configuration pasting PASTE_DOSE times as often, each paste turned or mirrored, its line
    classes weighing LINE_CLASS_LOSS_WEIGHT times in the classification loss (a copy)."""
    return _with_line_class_loss(_with_paste_d4(_with_paste_dose(gradkit_cfg, PASTE_DOSE)), fp)


#: ``plan-budget-prior-finalK@time``: the plan from the prior reading its training images at K times its size for the
#: last part of the run (``size.final_scale``; ``size.final_share`` at its default, a quarter), scored at that size.
#: More pixels lifted the thin classes a little where the whole run paid for them in steps (the prior's 1.25x);
#: progressive resizing (Tan & Le 2021, EfficientNetV2) and FixRes (Touvron et al. 2019) buy them only for the end
#: of the run.
FINAL_SIZE_RECIPES = {"plan-budget-prior-final1.5@time": 1.5, "plan-budget-prior-final1.25@time": 1.25}


def _with_final_size(gradkit_cfg: dict, scale: float) -> dict:
    """A plan's gradkit configuration reading the training images at ``scale`` for the run's last part (a copy)."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg["size"] = {"final_scale": scale}
    return cfg


#: ``plan-budget-lrK@time``: ``plan-budget@time`` with AdamW at K times the rate Ultralytics' ``optimizer=auto``
#: chooses for a short run.
LR_RECIPES = {"plan-budget-lr2@time": 2.0, "plan-budget-lr4@time": 4.0}


#: ``plan-budget-batch8@time``'s batch, an optimizer step per batch: twice the plan's steps per epoch.
SMALL_BATCH = 8


def _adamw_at(multiple: float, nc: int) -> dict:
    """Train arguments for what ``optimizer=auto`` picks below 10000 iterations (``BaseTrainer.build_optimizer`` in
    8.4.190: AdamW, beta1 0.9, at 0.002 * 5 / (4 + nc), the biases' warm-up starting at 0 instead of
    ``warmup_bias_lr`` 0.1), its rate ``multiple`` times higher."""
    return {"optimizer": "AdamW", "momentum": 0.9, "lr0": round(multiple * 0.002 * 5 / (4 + nc), 6),
            "warmup_bias_lr": 0.0}


def _transforms_only(transforms: list[dict], keep_d4: bool) -> dict:
    """Overrides that replace the preset's transform list by its D4 entry alone, or by the rest of it."""
    kept = [t for t in transforms if (t["__class_fullname__"] == "D4") == keep_d4]
    if not kept:  # an empty list would hand the stage back to Ultralytics' own Albumentations transforms
        raise SystemExit(f"the preset's transform list has {'no' if keep_d4 else 'only a'} D4 entry: nothing to keep")
    return {"augment.preset": "none", "augment.transforms": json.loads(json.dumps(kept))}


def _stock(key: str) -> float:
    """Ultralytics' own default of a hyper-parameter (its default configuration's, read, not copied)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return float(DEFAULT_CFG_DICT[key])


def _with_ultralytics(gradkit_cfg: dict, hyp: dict) -> dict:
    """A plan's gradkit configuration with more of Ultralytics' hyper-parameters set (a copy)."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg.setdefault("augment", {}).setdefault("ultralytics", {}).update(hyp)
    return cfg


def _without_copy_paste(gradkit_cfg: dict) -> dict:
    """A plan's gradkit configuration with copy-paste off (a copy): its effect on the thin classes."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg.setdefault("augment", {}).setdefault("copy_paste", {})["p"] = 0.0
    return cfg


def _thin_first_paste(gradkit_cfg: dict, fp, classes=None) -> dict:
    """A plan's gradkit configuration pasting ``classes`` (names; the fingerprint's thin classes when None)
    ``THIN_PASTE_WEIGHT`` times as often per class as the others (a copy; weighted per class, not per instance)."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    favoured = set(fp.thin_classes() if classes is None else classes)
    weights = [THIN_PASTE_WEIGHT if name in favoured else 1.0 for _, name in sorted(fp.class_names.items())]
    cfg["augment"]["copy_paste"].update(rare_first=False, class_weights=weights)  # the two weightings exclude
    return cfg


def _with_preset(gradkit_cfg: dict, preset: str) -> dict:
    """A plan's gradkit configuration with another ``augment.preset`` (a copy)."""
    cfg = json.loads(json.dumps(gradkit_cfg))
    cfg.setdefault("augment", {})["preset"] = preset
    return cfg


def run(args) -> dict:
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.plan import make_plan

    unknown = set(args.recipes.split(",")) - set(RECIPES + ABLATIONS)
    if unknown:
        raise SystemExit(f"unknown recipe(s) {', '.join(sorted(unknown))}: {', '.join(RECIPES + ABLATIONS)}")
    if "stock@time" in args.recipes.split(",") and not args.time_s:
        raise SystemExit("stock@time needs --time-s (the budget it stops at)")
    out = Path(args.out).resolve()
    sets = build_sets(out, args.sets.split(","), args.images, args.imgsz)
    if args.channels == 1:
        sets = {f"{name}-ch1": one_channel_yaml(data) for name, data in sets.items()}  # runs apart from 3's
    base = {"imgsz": args.imgsz, "epochs": args.epochs, "batch": 16}
    results: dict = {"args": vars(args), "sets": {}}
    for name, data in sets.items():
        held_out = held_out_yaml(data, out)
        fp = fingerprint_dataset(data)
        plan = make_plan(fp)
        print(f"\n[{name}] plan: {plan.command()}")
        rows: dict = {r: [] for r in args.recipes.split(",")}
        # the fingerprint beside the runs: which measure separates where a recipe pays is asked of it later
        results["sets"][name] = {"fingerprint": fp.summary(), "plan": plan.as_dict(), "runs": rows}
        for seed in [int(s) for s in args.seeds.split(",")]:
            stock = {"train_s": args.time_s} if args.time_s else None  # a given budget stands in for stock's time
            timed = any(r.endswith("@time") for r in rows) and not args.time_s  # else stock sets it: it goes first
            for recipe_name in ["stock"] * ("stock" in rows or timed) + [r for r in rows if r != "stock"]:
                trained_on, recipe, score_imgsz = data, None, None
                if recipe_name == "plan-deep-tiles@time":
                    deep = _recipe_args("plan-deep@time", plan, base, stock, fp)
                    trained_on, recipe, score_imgsz = _native_tiles(data, out, fp, deep)
                res = train_and_score(trained_on, out / "runs" / f"{name}-{_folder(recipe_name)}-s{seed}",
                                      *(recipe or _recipe_args(recipe_name, plan, base, stock, fp)), seed, held_out,
                                      args.device, args.workers, score_imgsz)
                stock = res if recipe_name == "stock" and not args.time_s else stock
                if recipe_name in rows:
                    rows[recipe_name].append(res)
                print(f"[{name}] seed {seed} {recipe_name:16} mAP50-95 {res['mAP50-95']:.3f} mAP50 {res['mAP50']:.3f} "
                      f"train {res['train_s']:.0f}s epochs {res['epochs_done']}", flush=True)
                spread = (res.get(INTERVALS) or {}).get("AP50", {})
                print(f"[{name}] seed {seed} {recipe_name:16} AP50 (95% over held-out images) " + ", ".join(
                    f"{c} {v:.3f}" + (f" ({spread[c][0]:.3f}-{spread[c][1]:.3f})" if c in spread else "")
                    for c, v in res["AP50"].items()), flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results


def merge_results(files: list[str]) -> dict:
    """One results dict from several runs of this script (e.g. one seed per process or machine): each
    set's runs per recipe, concatenated in the order the files are given."""
    merged: dict = {"sets": {}}
    for f in files:
        try:
            written = json.loads(Path(f).read_text(encoding="utf-8"))
            sets = {name: one["runs"].items() for name, one in written["sets"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SystemExit(f"{f}: not a results.json written by this script ({exc!r})") from None
        for name, recipes in sets.items():
            runs = merged["sets"].setdefault(name, {"runs": {}})["runs"]
            for recipe, rows in recipes:
                runs.setdefault(recipe, []).extend(rows)
    return merged


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _kpi(values: list) -> str:
    """A KPI's mean ± std over the runs that have it (a rate is null when its denominator is 0; runs
    scored before the KPIs were kept have none): "–" when none has it, the count when some lack it."""
    kept = [v for v in values if isinstance(v, int | float)]
    if not kept:
        return "–"
    return _ms(kept) + (f" ({len(kept)} of {len(values)})" if len(kept) < len(values) else "")


def print_tables(results: dict) -> None:
    for name, block in results["sets"].items():
        rows = {recipe: runs for recipe, runs in block["runs"].items() if runs}  # a run still training has none
        classes = sorted({c for runs in rows.values() for r in runs for c in r["AP50"]})
        reference = next((r for r in ("stock", "stock@time") if r in rows), None)  # the ratios' denominator
        stock = statistics.mean(r["mAP50-95"] for r in rows[reference]) if reference else None
        print(f"\n### {name}\n")
        print("| recipe | mAP50-95 | vs stock | mAP50 | " + " | ".join(f"AP50 {c}" for c in classes)
              + " | escape rate | false-reject rate | train s | epochs |")
        print("|---|---|---|---|" + "---|" * len(classes) + "---|---|---|---|")
        for recipe, runs in rows.items():
            m = [r["mAP50-95"] for r in runs]
            ratio = f"{statistics.mean(m) / stock:.2f}x" if stock else "n/a"
            per = " | ".join(_ms([r["AP50"].get(c, 0.0) for r in runs]) for c in classes)
            kpis = " | ".join(_kpi([r.get(k) for r in runs]) for k in KPIS)
            print(f"| {recipe} | {_ms(m)} | {ratio} | {_ms([r['mAP50'] for r in runs])} | {per} | {kpis} | "
                  f"{statistics.mean(r['train_s'] for r in runs):.0f} | "
                  f"{statistics.mean(r['epochs_done'] for r in runs):.0f} |")
        print(f"\nShare of the held-out parts holding each class that were shipped ({name}; lower is better):\n")
        print("| recipe | " + " | ".join(classes) + " |\n|---|" + "---|" * len(classes))
        for recipe, runs in rows.items():
            print(f"| {recipe} | " + " | ".join(_kpi([(r.get(SHIPPED) or {}).get(c) for r in runs]) for c in classes)
                  + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny smoke run: 90 images at 128 px, 3 epochs, seed 0")
    p.add_argument("--sets", default="synth,photo")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--time-s", type=float, default=None,
                   help="the @time recipes' budget in seconds instead of the stock run's time of the same seed "
                        "(to train them in parallel with stock; say so next to the result)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="the sets' data YAMLs say channels: 1 (read gray, a first layer of one channel) or 3")
    p.add_argument("--images", type=int, default=500)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", default="runs/defect-quality")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads for gradkit's own work (0: torch's default); Ultralytics' training, "
                        "validation and the budget timer run on its own count, min(8, cpus - 1)")
    p.add_argument("--merge", nargs="+", metavar="RESULTS_JSON", help="print the tables of these files together")
    p.add_argument("--device", default="cpu", help="cpu, or a CUDA index such as 0 (Ultralytics' device=)")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers")
    args = p.parse_args()
    if args.quick:
        args.images, args.imgsz, args.epochs, args.seeds = 90, 128, 3, "0"
        args.out = args.out + "-quick"
    merge_or_run(args, run)


def merge_or_run(args, run_one) -> None:
    """``--merge`` prints one table from the given results.json files; otherwise ``run_one(args)`` runs (with
    ``--threads`` torch threads when given) and its results are printed."""
    if args.merge:
        print_tables(merge_results(args.merge))
        return
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print_tables(run_one(args))


if __name__ == "__main__":
    main()
