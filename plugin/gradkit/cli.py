"""The ``gradkit`` command: everything ``yolo`` accepts, plus ``gradkit=`` keys and own subcommands.

``gradkit train <yolo args> gradkit=CFG gradkit.clip.mode=agc`` strips the plugin keys, registers
the plugin as a default callback so the model that Ultralytics' entrypoint builds picks it up, and
hands the rest over to Ultralytics' ``yolo`` entrypoint (both through
``gradkit.integrations.ultralytics.seams``). ``gradkit val`` adds a report; any other yolo mode
(predict, export...) passes through.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from gradkit.config import ConfigError, GradkitConfig, did_you_mean, load_config

__all__ = ["main", "split_plugin_args"]

#: The one plugin key that other modes than train accept (val, predict... resolve datasets too).
_ALLOW_DOWNLOAD = "data.allow_download"
_OWN = ("synth", "demo", "config-doc", "report", "augment", "convert", "check", "plan", "tile")
_HELP = """gradkit - Ultralytics YOLO with visible and controllable backpropagation

  gradkit train <yolo train args> [gradkit=CFG.yaml|PRESET] [gradkit.SECTION.KEY=VALUE ...]
  gradkit predict|export|... <yolo args>          passed to yolo unchanged
  gradkit synth out=DIR [{synth}]
  gradkit demo [{demo}
               <any yolo train argument, e.g. epochs=>]
  gradkit val model=RUN/weights/best.pt data=DATA.yaml [split=test] [gradkit.report.conf=C gradkit.report.gallery=N
              gradkit.report.resamples=N]
              [gradkit.report.tile_size=PX gradkit.report.tile_overlap=PX]
                                                  validation + report.html/json/md (whole images through tiles)
  gradkit report RUN_DIR                          rebuild a run's report from its files
  gradkit report RUN_A RUN_B ... [out=DIR]        comparison report
  gradkit augment data=DATA.yaml [gradkit=CFG] [{augment}] [degrees=0 mosaic=0 ...]
                                                  preview of the training augmentation, boxes drawn
  gradkit convert voc src=DIR out=DIR [split=0.8,0.1,0.1 seed=0 difficult=keep|skip classes=[..]]
  gradkit convert coco src=annotations.json images=DIR out=DIR [split=0.8,0.2 seed=0]
  gradkit check data=DATA.yaml [--fix [out=DIR overwrite=false]]
                                                  every image and label; exit 1 on errors (with --fix: in the copy)
  gradkit config-doc                              the configuration reference (Markdown)
  gradkit plan data=DATA.yaml [budget=MIN {plan}]
                                                  dataset fingerprint -> recommended train command
  gradkit tile data=DATA.yaml size=PX [out=DIR {tile}]
                                                  a copy cut into overlapping tiles at native resolution

Presets (gradkit=NAME): {presets}. Example:
  gradkit train model=yolo26n.yaml data=datasets/defects-synth/data.yaml epochs=10 imgsz=320 \\
      gradkit=configs/gradkit/defect.yaml gradkit.clip.mode=agc
"""
#: The arguments of ``gradkit synth`` (SynthSpec's fields; its splits and class names are the generator's own).
SYNTH_KEYS = ("images", "imgsz", "seed", "empty_frac", "class_weights", "max_defects", "faint_frac",
              "relief_frac", "colour_frac")


def synth_options() -> dict[str, Any]:
    """``gradkit synth``'s arguments with their defaults: SynthSpec's own (one definition of each)."""
    from gradkit.synth_spec import SYNTH_DIR, SynthSpec

    spec = SynthSpec()
    return {"out": SYNTH_DIR, **{key: _as_given(getattr(spec, key)) for key in SYNTH_KEYS}}


def _as_given(value: Any) -> Any:
    """A default as a user would give it on the command line (a tuple as a YAML list)."""
    return list(value) if isinstance(value, tuple) else value


def _shown(value: Any) -> str:
    """A default as the help shows it, in the form the CLI parses back (YAML)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return f"[{','.join(_shown(v) for v in value)}]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def help_text() -> str:
    """The CLI's usage, the defaults filled in from their one definition each."""
    from gradkit.demo import DEMO_DEFAULTS
    from gradkit.plan import PLAN_ARGS

    synth = {k: v for k, v in synth_options().items() if k != "out"}  # shown as out=DIR
    return _HELP.format(synth=_defaults_shown(synth), demo=_defaults_shown(DEMO_DEFAULTS),
                        augment=_defaults_shown(AUGMENT_ARGS), tile=_defaults_shown(tile_options()),
                        plan=_defaults_shown(PLAN_ARGS), presets=", ".join(preset_names()))


def preset_names() -> list[str]:
    """The presets ``gradkit=NAME`` loads (the files shipped in the package)."""
    from gradkit.config import PRESET_DIR

    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _defaults_shown(options: dict[str, Any]) -> str:
    """``key=default ...`` of the options that have a default (None: required, or shown by the usage line)."""
    return " ".join(f"{k}={_shown(v)}" for k, v in options.items() if v is not None)


#: ``gradkit augment``'s arguments and defaults.
AUGMENT_ARGS = {"data": None, "n": 16, "out": "preview.jpg", "imgsz": 640, "seed": 0}


def tile_options() -> dict[str, Any]:
    """``gradkit tile``'s arguments and defaults (``min_visibility``: the tiler's own)."""
    from gradkit.data.tile import MIN_VISIBILITY

    return {"data": None, "size": None, "out": None, "overlap": "auto", "min_visibility": MIN_VISIBILITY,
            "keep_empty": 1.0, "seed": 0, "overwrite": False}


def _parse_value(key: str, text: str) -> Any:
    """``text`` as YAML reads it; a whole number it would read in another base (YAML 1.1: ``010`` octal 8, ``1:30``
    base 60, 90) refused, naming ``key``."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    digits = text.strip().lstrip("+-")
    if type(value) is int and (":" in digits or (len(digits) > 1 and digits[0] == "0" and digits.isdigit())):
        raise ConfigError(f"{key}={text}: YAML reads this as {value} (base {60 if ':' in digits else 8}): write it "
                          "without the leading zero or colon, as the number meant")
    return value


def split_plugin_args(args: Sequence[str]) -> tuple[str | None, dict[str, Any], list[str]]:
    """Separate ``gradkit=`` and ``gradkit.*=`` from the yolo arguments.

    Returns:
        The config source (or None), the dotted overrides, and the untouched remaining arguments.
    """
    source: str | None = None
    overrides: dict[str, Any] = {}
    rest: list[str] = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if not _is_plugin_arg(arg):
            rest.append(arg)
        elif key == "gradkit":
            if not eq or not value:
                raise ConfigError("gradkit= needs a config file or preset name, e.g. gradkit=defect")
            if source is not None and source != value:
                raise ConfigError(f"gradkit= is given twice, ={source} and ={value}: give it once")
            source = value
        else:
            if not eq:
                raise ConfigError(f"{arg!r}: plugin overrides take the form gradkit.SECTION.KEY=VALUE")
            name, parsed = key.removeprefix("gradkit."), _parse_value(key, value)
            if name in overrides and overrides[name] != parsed:  # which one was meant is not ours to guess
                raise ConfigError(f"{key} is given twice, ={typed_overrides(args)[name]} and ={value}: give it once")
            overrides[name] = parsed
    return source, overrides, rest


def typed_overrides(args: Sequence[str]) -> dict[str, str]:
    """The ``gradkit.KEY=VALUE`` arguments' values as typed (the first of a key), for messages: YAML reads ``yes`` as
    true and ``1_0`` as 10."""
    typed: dict[str, str] = {}
    for arg in args:
        key, _, value = arg.partition("=")
        if _is_plugin_arg(arg) and key != "gradkit":
            typed.setdefault(key.removeprefix("gradkit."), value)
    return typed


def _is_plugin_arg(arg: str) -> bool:
    """``gradkit=...`` or ``gradkit.SECTION.KEY=...``: the plugin's own, never yolo's."""
    key = arg.partition("=")[0]
    return key == "gradkit" or key.startswith("gradkit.")


def _kv(args: Sequence[str], allowed: dict[str, Any], command: str, *also: str) -> dict[str, Any]:
    """``key=value`` arguments of an own command, parsed as YAML and checked against ``allowed``'s keys and default
    types (``also``: what else the command takes, named in the refusal of an unknown argument)."""
    out = dict(allowed)
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in allowed:
            raise SystemExit(f"gradkit {command}: unknown argument {arg!r}{did_you_mean(key, allowed, '=')}; "
                             f"arguments: {', '.join([*(f'{k}=' for k in allowed), *also])}")
        out[key] = _parse_value(key, value)
    for key, default in allowed.items():  # a value of the default's type, where the default has one
        _check_type(command, key, out[key], default)
    return out


def _check_type(command: str, key: str, value: Any, default: Any) -> None:
    if value is default or default is None or isinstance(default, str | list):
        return
    if isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    else:
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    if not ok:
        raise SystemExit(f"gradkit {command}: {key}= takes {kind}, got {value!r}")


def _synth(args: Sequence[str]) -> int:
    from gradkit.synth import SynthSpec, generate_dataset

    opts = _kv(args, synth_options(), "synth")
    out = opts.pop("out")
    weights = opts["class_weights"]
    if not (isinstance(weights, list) and all(isinstance(w, int | float) and not isinstance(w, bool) for w in weights)):
        raise SystemExit(f"gradkit synth: class_weights= takes a list of numbers such as [1,1,1,1], got {weights!r}")
    opts["class_weights"] = tuple(float(w) for w in weights)
    from gradkit.data.output import OutputRefused

    try:
        spec = SynthSpec(**opts)
    except ValueError as exc:
        raise SystemExit(f"gradkit synth: {exc}") from None
    try:
        print(generate_dataset(out, spec))
    except OutputRefused as exc:
        raise SystemExit(f"gradkit synth: {exc}") from None
    return 0


def _register_default_callbacks(cfg: GradkitConfig) -> list[str]:
    """Make every model the yolo entrypoint builds carry the plugin (Model deep-copies these).

    Returns the list that collects the end-of-training extras that failed: Model's deep copy
    separates the plugin from this one, but a plain function is not copied, so it can report back.
    """
    from gradkit.integrations.ultralytics import GradkitCallback, check_ultralytics_version
    from gradkit.integrations.ultralytics.seams import register_default_callbacks

    check_ultralytics_version()
    plugin = GradkitCallback(cfg)
    register_default_callbacks(plugin.events())
    failed: list[str] = []

    def collect_failed_extras(trainer) -> None:  # runs after the plugin's on_train_end
        for fn in trainer.callbacks["on_train_end"]:
            failed.extend(getattr(getattr(fn, "__self__", None), "extras_failed", []))

    register_default_callbacks({"on_train_end": collect_failed_extras})
    return failed


def _check_augment(cfg: GradkitConfig, source, overrides) -> None:
    from gradkit.augment.checks import check_augment_config

    check_augment_config(cfg, source, overrides)


def _run_folder_before(args: list[str]) -> dict[str, Any] | None:
    """The run folder a training of ``args`` writes into, as it is before (``seams.run_folder_before``)."""
    from gradkit.integrations.ultralytics.seams import run_folder_before

    return run_folder_before(args)


def _restore_run_folder(before: dict[str, Any] | None, run: dict[str, Any]) -> None:
    """A run refused or interrupted before gradkit took its folder over: the folder as it was (a new one gone, so the
    next run of the name is not NAME2; a used one with its earlier args.yaml and labels.jpg, not the refused run's)."""
    from gradkit.integrations.ultralytics.seams import restore_run_folder

    restore_run_folder(before, run)


def _track_checkpoint() -> dict[str, Any]:
    """What the run being trained has saved, for the Ctrl-C message (``seams.track_run``)."""
    from gradkit.integrations.ultralytics.seams import track_run

    return track_run()


def _augment_preview(args: Sequence[str]) -> int:
    try:
        source, overrides, rest = split_plugin_args(args)
        cfg = load_config(source, overrides, typed_overrides(args))
        _check_augment(cfg, source, overrides)
    except ConfigError as exc:
        print(f"gradkit: {exc}", file=sys.stderr)
        return 2
    from gradkit.integrations.ultralytics.seams import yolo_merged_args

    merged = yolo_merged_args(rest)  # as yolo reads them: imgsz = 64, --mosaic=0
    own = [a for a in merged if a.partition("=")[0] in AUGMENT_ARGS]
    opts = _kv(own, AUGMENT_ARGS, "augment")
    if not opts["data"]:
        raise SystemExit("gradkit augment: data=DATA.yaml is required")
    _check_preview_args(opts)
    from gradkit.integrations.ultralytics import preview_augmentation

    hyps = _preview_hyps([a for a in merged if a not in own])
    try:
        print(preview_augmentation(str(opts["data"]), cfg, int(opts["n"]), opts["out"], int(opts["imgsz"]),
                                   int(opts["seed"]), hyps))
    except ConfigError as exc:  # a typed hyp outside the range the config keeps (degrees=-5)
        print(f"gradkit: {exc}", file=sys.stderr)
        return 2
    return 0


def _preview_hyps(others: list[str]) -> dict[str, Any]:
    """The Ultralytics augmentation hyps among ``gradkit augment``'s arguments (merged as yolo merges them), as yolo
    parses them; anything else refused, named."""
    from gradkit.integrations.ultralytics.augment import PREVIEW_HYPS
    from gradkit.integrations.ultralytics.seams import yolo_given_args

    hyps = yolo_given_args(others)
    unknown = [a for a in others if a.partition("=")[0] not in PREVIEW_HYPS]
    if unknown:
        hint = did_you_mean(unknown[0].partition("=")[0], (*AUGMENT_ARGS, *PREVIEW_HYPS), "=") \
            if len(unknown) == 1 else ""
        raise SystemExit(f"gradkit augment: unknown argument{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}{hint}; arguments: "
                         f"{', '.join(f'{k}=' for k in AUGMENT_ARGS)}, gradkit=, gradkit.SECTION.KEY=, and "
                         f"Ultralytics' augmentation hyps {', '.join(f'{k}=' for k in PREVIEW_HYPS)} as yolo takes "
                         "them")
    valueless = [a for a in others if a.partition("=")[0] not in hyps]
    if valueless:
        raise SystemExit(f"gradkit augment: {', '.join(valueless)}: no value yolo can read (e.g. degrees=0)")
    return hyps


#: What ``gradkit augment out=`` can write (OpenCV picks the encoder from the suffix).
PREVIEW_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _check_preview_args(opts: dict[str, Any]) -> None:
    """n, imgsz and out= of ``gradkit augment``; out= never on or inside the dataset."""
    from pathlib import Path

    from gradkit.data.check import dataset_place_of

    if opts["n"] < 1 or opts["imgsz"] < 32:
        raise SystemExit(f"gradkit augment: n= takes 1 or more samples and imgsz= 32 px or more, got "
                         f"n={opts['n']} imgsz={opts['imgsz']}")
    out = Path(str(opts["out"])).resolve()
    if out.suffix.lower() not in PREVIEW_SUFFIXES:
        raise SystemExit(f"gradkit augment: out={opts['out']}: an image file ({', '.join(PREVIEW_SUFFIXES)})")
    data = Path(str(opts["data"]))
    if not data.is_file():
        return  # Ultralytics resolves it (or says what is missing) when the dataset is built
    try:
        hit = dataset_place_of(out, data)
    except ValueError:  # a YAML only Ultralytics reads (nc without names, a list file that is not UTF-8): it decides
        return
    if hit is not None:
        raise SystemExit(f"gradkit augment: out={opts['out']} lies in the {hit[0]} {hit[1]}: the preview is never "
                         "written among the dataset's files; choose another out=")


def _split_ratios(value) -> tuple[float, ...] | None:
    if value in (None, "", False):
        return None
    try:
        ratios = tuple(float(v) for v in (value if isinstance(value, list | tuple) else str(value).split(",")))
    except (TypeError, ValueError):
        ratios = ()
    if not 2 <= len(ratios) <= 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6:
        raise SystemExit(f"gradkit convert: split takes 2 or 3 fractions summing to 1 (train,val[,test]), got {value}")
    return ratios


def _convert(args: Sequence[str]) -> int:
    from gradkit.data import convert_coco, convert_voc

    if args and args[0] not in {"voc", "coco"} and "=" not in args[0]:
        raise SystemExit(f"gradkit convert: unknown format {args[0]!r}; voc or coco")
    if not args or args[0] not in {"voc", "coco"}:
        raise SystemExit("gradkit convert voc src=DIR out=DIR [split=0.8,0.1,0.1 seed=0 difficult=keep|skip "
                         "classes=[a,b] overwrite=false]\ngradkit convert coco src=annotations.json images=DIR "
                         "out=DIR [split=0.8,0.2 seed=0 overwrite=false]")
    if args[0] == "voc":
        o = _kv(args[1:], {"src": None, "out": None, "split": None, "seed": 0, "difficult": "keep", "classes": None,
                           "overwrite": False}, "convert voc")
        if not o["src"] or not o["out"]:
            raise SystemExit("gradkit convert voc: src= and out= are required")
        convert, inputs = convert_voc, dict(src=o["src"], out=o["out"], difficult=o["difficult"], classes=o["classes"])
    else:
        o = _kv(args[1:], {"src": None, "images": None, "out": None, "split": None, "seed": 0, "overwrite": False},
                "convert coco")
        if not o["src"] or not o["images"] or not o["out"]:
            raise SystemExit("gradkit convert coco: src=, images= and out= are required")
        convert, inputs = convert_coco, dict(src=o["src"], images=o["images"], out=o["out"])
    ratios = _split_ratios(o["split"])
    if ratios:  # otherwise the converter's own default split
        inputs["split"] = ratios
    try:
        path, report = convert(**inputs, seed=int(o["seed"]), overwrite=o["overwrite"])
    except ValueError as exc:
        raise SystemExit(f"gradkit convert {args[0]}: {exc}") from None
    print(report.summary())
    print(path)
    return 0


def _tile(args: Sequence[str]) -> int:
    from gradkit.data.tile import check_tile_args, tile_dataset

    o = _kv(args, tile_options(), "tile")
    if not o["data"] or o["size"] is None:
        raise SystemExit("gradkit tile: data= and size= are required (gradkit tile data=DATA.yaml size=640)")
    overlap = None if o["overlap"] == "auto" else o["overlap"]
    try:
        check_tile_args(o["size"], overlap, o["min_visibility"], o["keep_empty"])
        data, summary = tile_dataset(o["data"], o["size"], o["out"], overlap, o["min_visibility"],
                                     o["keep_empty"], o["seed"], o["overwrite"])
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"gradkit tile: {exc}") from None
    print("\n".join(summary.lines()))
    print(f"tiled copy: {data}\nnext: gradkit plan data={shlex.quote(str(data))}, then train at imgsz={o['size']}; "
          "score whole parts through the same tiles with gradkit val model=RUN/weights/best.pt "
          f"data={shlex.quote(str(o['data']))} imgsz={o['size']} "
          f"gradkit.report.tile_size={o['size']} gradkit.report.tile_overlap={summary.overlap}")
    return 0


def _check(args: Sequence[str]) -> int:
    from gradkit.data import check_dataset, fix_dataset, fix_output
    from gradkit.data.output import OutputRefused

    fix = "--fix" in args
    o = _kv([a for a in args if a != "--fix"], {"data": None, "out": None, "overwrite": False}, "check", "--fix")
    if not o["data"]:
        raise SystemExit("gradkit check data=DATA.yaml [--fix [out=DIR overwrite=false]]")
    if not fix and (o["out"] is not None or o["overwrite"]):
        raise SystemExit("gradkit check: out= and overwrite= go with --fix "
                         "(gradkit check data=DATA.yaml --fix out=DIR)")
    try:
        if fix:  # refuse a bad out= before the long check
            fix_output(o["data"], o["out"], o["overwrite"])
        result = check_dataset(o["data"])
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"gradkit check: {exc}") from None
    for f in result.findings:
        print(f)
    print(result.summary())
    if fix:
        try:
            fixed, changes = fix_dataset(o["data"], o["out"], o["overwrite"], checked=result)
        except OutputRefused as exc:  # out= refused once the check has run (overwrite=true of a foreign folder)
            raise SystemExit(f"gradkit check: {exc}") from None
        _print_fix(fixed, changes)
        # the copy is what the user goes on with (gradkit check --fix && gradkit plan data=COPY): its own check
        return 1 if check_dataset(fixed, images=False).errors else 0
    return 1 if result.errors else 0


def _print_fix(data_yaml, changes) -> None:
    from collections import Counter

    from gradkit.data.check import FIX_CHANGES_FILE, MAX_PRINTED_CHANGES

    for change in changes[:MAX_PRINTED_CHANGES]:
        print(f"fixed {change}")
    counts = ", ".join(f"{k} {n}" for k, n in sorted(Counter(c.action for c in changes).items()))
    hidden = max(len(changes) - MAX_PRINTED_CHANGES, 0)
    print(f"{len(changes)} change(s) ({counts or 'none'}){f', {hidden} not shown' if hidden else ''}; all listed in "
          f"{data_yaml.parent / FIX_CHANGES_FILE}")
    print(f"cleaned copy: {data_yaml}")


#: The report settings ``gradkit val`` uses (its split is yolo's ``split=``; it always writes the report).
VAL_REPORT_KEYS = ("report.conf", "report.gallery", "report.resamples", "report.tile_size", "report.tile_overlap")


def _register_val_report(settings) -> None:
    """``gradkit val``: write the evaluation report into the val run directory, with the ``report`` settings
    (operating point ``conf``, ``gallery`` size) given as gradkit.report.* keys."""
    import functools

    from gradkit.integrations.ultralytics import check_ultralytics_version, record_predictions
    from gradkit.integrations.ultralytics.seams import register_default_callbacks

    check_ultralytics_version()
    start = record_predictions
    if settings.tile_size is not None:
        from gradkit.integrations.ultralytics.sliced import TiledValidation

        start = _after(record_predictions, TiledValidation(settings.tile_size, settings.tile_overlap))
    register_default_callbacks({"on_val_start": start,
                                "on_val_end": functools.partial(_write_val_report, settings=settings)})


def _val_conf_refused(conf: str | None) -> str | None:
    """``gradkit val conf=`` other than the validation floor the report describes: every detection below it would
    be gone before the report scores them (its mAP, PR curve and "all confidences" figures of what is left)."""
    from gradkit.report.inspection import VALIDATION_CONF

    try:
        if conf is None or conf.lower() in ("none", "null") or float(conf) == VALIDATION_CONF:
            return None
    except ValueError:
        pass
    return (f"gradkit val: conf={conf} would change which detections the report scores (it scores every confidence "
            f"from {VALIDATION_CONF:g}, the detection validator's own floor); leave conf= out and set the report's "
            "operating point with gradkit.report.conf=")


def _tiled_copy_refused(data: str | None, tile_size: int | None) -> str | None:
    """``gradkit val`` through tiles of ``gradkit tile``'s copy cuts its tiles again and reports them as parts:
    refused, naming the data that scores whole parts."""
    from gradkit.data.tile import tiled_copy_of

    try:
        record = tiled_copy_of(data) if tile_size is not None and data else None
    except ValueError:
        record = None  # the validation itself reads the YAML and names what is wrong with it
    if record is None:
        return None
    return (f"gradkit: {data} is gradkit tile's copy: each of its images is one tile, which report.tile_size would "
            f"cut again and report as parts; to score whole parts through tiles give "
            f"data={shlex.quote(record['source'])}")


def _after(first, then):
    """One callback running ``first`` then ``then`` (the tiled predictions must wrap the recorder)."""
    def both(validator) -> None:
        first(validator)
        then(validator)

    return both


def _write_val_report(validator, settings) -> None:
    if validator.training:
        return
    from pathlib import Path

    from gradkit.integrations.ultralytics import collect_validation
    from gradkit.report import build_report, write_report

    ev = collect_validation(validator)
    ev.conf_threshold = settings.conf
    paths = write_report(build_report(ev, gallery_size=settings.gallery, trained_with=_trained_with(ev.model),
                                      resamples=settings.resamples),
                         Path(validator.save_dir))
    print(f"gradkit: report {paths['html']}")


def _trained_with(model: str) -> dict[str, Any] | None:
    """The run folder's record of how ``model`` was trained, for the val report; where it cannot be read, None
    and one line saying so (the scores do not depend on it)."""
    from gradkit.report.build import trained_with

    try:
        return trained_with(model)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"gradkit: the report does not record how {model} was trained: its run folder's records are "
              f"unreadable ({exc})", file=sys.stderr)
        return None


def _comparison_out_refused(out) -> str | None:
    """A comparison goes into a folder of its own: never over a file, never over an evaluation's report
    (a previous comparison there is its own output and is replaced)."""
    import json

    if out.exists() and not out.is_dir():
        return f"gradkit report: out={out} is a file; the comparison is written into a folder"
    previous = out / "report.json"
    try:
        kind = json.loads(previous.read_text(encoding="utf-8")).get("kind") if previous.is_file() else "comparison"
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind != "comparison":
        return (f"gradkit report: out={out} holds an evaluation report ({previous}) that the comparison would "
                "replace; choose another out=")
    return None


#: What a report that is not the run's own points to instead.
_SCORE_AFRESH = "'gradkit val model=... data=...' scores the weights afresh"


def _report(args: Sequence[str]) -> int:
    """``gradkit report RUN_DIR`` rebuilds; ``gradkit report RUN_A RUN_B ... [out=DIR]`` compares."""
    import json
    from pathlib import Path

    from gradkit.report import compare_reports, write_report
    from gradkit.report.schema import ReportSchemaError, validate_report

    out = Path("runs/gradkit-compare")
    dirs = []
    for a in args:
        if a.startswith("out="):
            out = Path(a.removeprefix("out="))
        else:
            dirs.append(Path(a))
    twice = next((d for i, d in enumerate(dirs) if d.resolve() in {e.resolve() for e in dirs[:i]}), None)
    if twice is not None:  # a comparison of a run with itself: every row a tie that says nothing
        print(f"gradkit report: {twice} is given twice; compare different runs", file=sys.stderr)
        return 2
    if not dirs:
        print("gradkit report: give one run directory to rebuild, or several to compare", file=sys.stderr)
        return 2
    reports = []
    for d in dirs:
        path = d / "report.json"
        if not path.is_file():
            print(f"gradkit report: {path} not found; 'gradkit train' (report.enabled) or 'gradkit val' writes it",
                  file=sys.stderr)
            return 2
        try:
            reports.append(validate_report(json.loads(path.read_text(encoding="utf-8")), str(path)))
        except json.JSONDecodeError as e:
            print(f"gradkit report: {path}: not JSON (line {e.lineno}: {e.msg})", file=sys.stderr)
            return 2
        except ReportSchemaError as e:
            print(f"gradkit report: {e}", file=sys.stderr)
            return 2
    for d, report in zip(dirs, reports, strict=True):
        refused = _records_refused(d, report)
        if refused:
            print(refused, file=sys.stderr)
            return 2
    if len(dirs) == 1:
        paths = write_report(reports[0], dirs[0], from_file=True)
    else:
        labels = [d.name if [x.name for x in dirs].count(d.name) == 1 else str(d) for d in dirs]
        if any(r.get("kind") == "comparison" for r in reports):
            print("gradkit report: a comparison's report.json cannot be compared again; give evaluation runs",
                  file=sys.stderr)
            return 2
        refused = _comparison_out_refused(out)
        if refused:
            print(refused, file=sys.stderr)
            return 2
        paths = write_report(compare_reports(reports, labels), out, from_file=True)
    print(f"gradkit: report {paths['html']}")
    return 0


def _records_refused(run_dir, report: dict[str, Any]) -> str | None:
    """Why ``run_dir``'s report.json cannot be drawn or compared with the run's own files, or None; a training
    report's section is then rebuilt from them (as the first build wrote it). The files are read again: as much user
    input as report.json. Where they are not those report.json was built from (copied beside another run, or a
    plain run reused the folder), one run's scores would stand under another's training."""
    from gradkit.report.build import other_records, training_section
    from gradkit.report.schema import validate_report

    if report.get("training") is None:
        if (run_dir / "results.csv").is_file():
            return (f"gradkit report: {run_dir}: report.json has no training section but the folder holds a training "
                    f"run's results.csv: it is not this run's report; {_SCORE_AFRESH}")
        return None
    try:
        fresh = training_section(run_dir.resolve())
        differ = other_records(report["training"], fresh)
        report["training"] = fresh
        validate_report(report, f"{run_dir} (results.csv, gradient_alerts.jsonl, args.yaml)")
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:  # ValueError: the schema's refusal too
        return f"gradkit report: {run_dir}: training records unreadable: {e}"
    if differ:
        return (f"gradkit report: {run_dir}: the run's training records are not those report.json was built from "
                f"({differ}); {_SCORE_AFRESH}")
    return None


#: First words the yolo CLI accepts besides its modes and tasks (``ultralytics.cfg.entrypoint``'s specials).
_YOLO_SPECIAL = ("checks", "version", "settings", "cfg", "login", "logout", "copy-cfg", "solutions", "help")
_HELP_FLAGS = {"-h", "--help", "help"}


def _unknown_command(word: str) -> str | None:
    """The error for a first word that is neither a gradkit command nor anything yolo accepts."""
    from ultralytics.cfg import MODES, TASKS

    if "=" in word or word.startswith("-") or word in (*_OWN, *MODES, *TASKS, *_YOLO_SPECIAL):
        return None
    import difflib

    close = difflib.get_close_matches(word, (*_OWN, *MODES, *_YOLO_SPECIAL), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"gradkit: unknown command '{word}'{hint}; the commands are:\n{help_text()}"


def _command_help(command: str) -> str:
    """The lines of the usage about one own command (one definition of each usage line): each line starting
    ``gradkit COMMAND`` and the indented lines that continue it."""
    out, inside = [], False
    for line in help_text().splitlines():
        if line.strip().startswith("gradkit "):
            inside = line.strip().startswith(f"gradkit {command}")
        elif not line.startswith("      "):
            inside = False
        if inside:
            out.append(line)
    return "\n".join(out)


def _config_keys(model, prefix: str = "gradkit.") -> list[str]:
    from pydantic import BaseModel

    lines = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            lines += _config_keys(ann, f"{prefix}{name}.")
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"  {prefix}{name}={'unset' if default is None else default}  {field.description or ''}")
    return lines


def _train_help() -> str:
    presets = ", ".join(preset_names())
    return "\n".join([
        "gradkit train <yolo train args> [gradkit=CFG.yaml|PRESET] [gradkit.SECTION.KEY=VALUE ...]", "",
        f"presets (gradkit=NAME): {presets}", "",
        "gradkit keys (gradkit.SECTION.KEY=VALUE, shown with their defaults):", *_config_keys(GradkitConfig), "",
        "Ultralytics' own train arguments (model=, data=, epochs=, imgsz=, batch=, ...): run 'yolo help' and "
        "'yolo cfg'; 'gradkit config-doc' prints the gradkit keys as a Markdown table.",
    ])


def _val_help() -> str:
    return "\n".join([
        _command_help("val"), "",
        "Ultralytics' own val arguments (imgsz=, batch=, split=, iou=, ...): run 'yolo help' and 'yolo cfg'; conf= "
        "stays at the validator's floor (the report's operating point is gradkit.report.conf=).",
    ])


def _interrupted(run: dict[str, Any], report=None) -> str:
    """Ctrl-C during training: where the last checkpoint is and the exact command that resumes it; after the last
    epoch, the command that writes the report (``report``: the run's report settings)."""
    import shlex
    from pathlib import Path

    from gradkit.config import ReportConfig
    from gradkit.integrations.ultralytics.callback import report_command

    if "last" not in run:
        return "gradkit: interrupted before training started; nothing was trained, nothing to resume"
    last = Path(run["last"]).resolve()
    if not run.get("saved"):  # a used folder's last.pt is another run's
        return (f"gradkit: training interrupted in its first epoch, before {last} was written (it is saved at the "
                "end of each epoch); nothing to resume, run the command again")
    if run.get("finished"):  # Ultralytics' final validation strips last.pt's optimizer: it resumes nothing
        command = report_command(run.get("best", last.parent / "best.pt"), last, run.get("data", "DATA.yaml"),
                                 report or ReportConfig(), run.get("classes"))
        return (f"gradkit: interrupted after training had finished (in the final validation or gradkit's report): "
                f"the weights are in {last.parent}, and {last} can no longer be resumed; for the report run: "
                f"{command}")
    return (f"gradkit: training interrupted; last checkpoint {last}; continue it with: "
            f"gradkit train resume=True model={shlex.quote(str(last))}")


def _user_error(exc: BaseException) -> str | None:
    """One line for a user's mistake found inside Ultralytics; None for a bug (keep its traceback)."""
    import errno

    from gradkit.integrations.ultralytics import DatasetError, PluginError
    from gradkit.integrations.ultralytics.seams import yolo_argument_error

    if (line := yolo_argument_error(exc)) is not None:
        return line
    if isinstance(exc, ConfigError):  # a setting found wrong once Ultralytics had the model or the data
        return f"gradkit: {exc}"
    if isinstance(exc, PluginError):  # a setting this model or trainer cannot take (its message names both)
        return str(exc)
    seen = exc
    while seen is not None:  # Ultralytics wraps dataset errors in RuntimeError("Dataset ... error")
        if isinstance(seen, DatasetError):
            return str(seen)
        seen = seen.__cause__
    if isinstance(exc, OSError) and exc.errno in {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}:
        return (f"gradkit: {exc.filename}: {exc.strerror}; fix its permissions, or for a run directory choose "
                "a writable project=DIR")
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"gradkit: {exc.filename} not found; check the path given (model=, data=, source=)"
    return None


def _arg(rest: Sequence[str], key: str) -> str | None:
    values = [a.partition("=")[2] for a in rest if a.partition("=")[0] == key]
    return values[-1] if values else None


def _given_hyps_win(cfg: GradkitConfig, rest: Sequence[str]) -> GradkitConfig:
    """``cfg`` with the ``augment.ultralytics`` hyps given to yolo (typed, or in its ``cfg=`` file) set as given, said
    in one line; unchanged for a resume (Ultralytics then trains with the checkpoint's arguments, gradkit with the
    run's own configuration)."""
    from gradkit.integrations.ultralytics.seams import yolo_given_args

    given = yolo_given_args(rest)
    if given.get("resume"):  # as Ultralytics reads it: any value but False, None, 0 or ''
        return cfg
    cfg, changed = cfg.with_given_hyps(given)
    if changed:
        print(f"gradkit: {', '.join(f'{k}={v:g}' for k, (_, v) in changed.items())} given to yolo win over "
              f"augment.ultralytics ({', '.join(f'{k}={c:g}' for k, (c, _) in changed.items())}) of the gradkit "
              "config", file=sys.stderr)
    return cfg


def _unwritable_project(rest: Sequence[str]) -> str | None:
    """``project=DIR`` that cannot hold a run: found before Ultralytics builds the model and trainer."""
    import tempfile
    from pathlib import Path

    project = _arg(rest, "project")
    if not project or not Path(project).is_absolute():
        return None  # a relative project lies under Ultralytics' runs_dir; a failure there is caught later
    probe = Path(project)
    while not probe.exists():
        probe = probe.parent
    try:
        tempfile.TemporaryDirectory(dir=probe).cleanup()  # the real test: root passes every access() check
    except OSError as exc:
        return (f"gradkit: the run directory {project} is not writable ({probe}: {exc.strerror}); "
                "choose a writable project=DIR")
    return None


def _missing_model(rest: Sequence[str]) -> str | None:
    """``gradkit val model=PATH``: a missing local file is a typo, not a model to download."""
    from pathlib import Path

    value = _arg(rest, "model")
    if value and ("/" in value or "\\" in value) and not Path(value).exists():
        return f"gradkit: model file {value} not found; give model=RUN/weights/best.pt of a finished run"
    return None


def _with_model_variant(rest: list[str]) -> list[str]:
    """``model=`` naming one of gradkit's variants (``gradkit plan`` chooses ``yolo26n-half.yaml`` for a budget),
    replaced by the path of its YAML, written now; every other argument as given."""
    from gradkit.integrations.ultralytics.models import resolved_model

    value = _arg(rest, "model")
    path = resolved_model(value) if value else value
    return rest if path == value else [a for a in rest if a.partition("=")[0] != "model"] + [f"model={path}"]


def _missing_model_config(rest: Sequence[str]) -> str | None:
    """``gradkit train model=NAME.yaml`` that is neither a file nor one of Ultralytics' configurations
    (Ultralytics finds out only while building the model, with a traceback)."""
    from gradkit.integrations.ultralytics.models import missing_model_config

    missing = missing_model_config(_arg(rest, "model"))
    return None if missing is None else f"gradkit: {missing}"


def _finished_resume(rest: Sequence[str]) -> str | None:
    """``resume=`` on the ``last.pt`` of a run that finished: nothing to resume (Ultralytics would start a new
    training with every default); the commands that score it, or train on from its weights."""
    from pathlib import Path

    from gradkit.integrations.ultralytics.seams import finished_checkpoint, yolo_given_args

    given = yolo_given_args(rest)  # as yolo reads them: 'resume', 'resume = True', 'resume=last.pt'
    resume = given.get("resume")
    if not resume:
        return None
    path = given.get("model") if resume is True or resume == 1 else resume
    if not isinstance(path, str):
        return None
    args = finished_checkpoint(path)
    if args is None:
        return None
    best = Path(path).with_name("best.pt")
    data = shlex.quote(str(args.get("data") or "DATA.yaml"))
    return (f"gradkit: {path} is the checkpoint of a run that finished (Ultralytics' final validation strips what a "
            f"resume needs): nothing to resume; score it with: gradkit val model="
            f"{shlex.quote(str(best if best.is_file() else path))} data={data}, or train on from its weights with: "
            f"gradkit train model={shlex.quote(str(path))} data={data} (without resume=)")


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in _HELP_FLAGS:
        print(help_text())
        return 0
    if args[0] in _OWN and _HELP_FLAGS & set(args[1:]):
        print(_command_help(args[0]) or help_text())
        return 0
    if args[0] in ("train", "val") and _HELP_FLAGS & set(args[1:]):
        print(_train_help() if args[0] == "train" else _val_help())
        return 0
    if args[0] in _OWN or _GRADKIT_MODES & set(_mode_words(args)):
        _no_pip_installs_during_the_run()
    try:
        return _run_command(args)
    finally:  # this command's callbacks leave Ultralytics' global list with it (main() called from Python)
        seams = sys.modules.get("gradkit.integrations.ultralytics.seams")
        if seams is not None:
            seams.unregister_default_callbacks()


def _run_command(args: list[str]) -> int:
    """:func:`_dispatch`, with a user's mistake (and an interrupt, a closed pipe) answered in one line."""
    try:
        return _dispatch(args)
    except SystemExit as exc:
        if args[0] not in _OWN or not isinstance(exc.code, str):  # yolo's own exits, or a status chosen
            raise
        print(exc.code, file=sys.stderr)  # gradkit's own commands stop on a user's mistake with one line
        return 2
    except KeyboardInterrupt:
        print("gradkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit would raise again
        return 1
    except Exception as exc:
        message = _user_error(exc)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2


#: The yolo modes gradkit adds to (plugin keys, reports); every other mode is handed to yolo unchanged.
_GRADKIT_MODES = {"train", "val"}


def _train_only_keys(source: str | None, keys: list[str], accepted: list[str], mode: str) -> str:
    """The refusal of plugin keys that only ``gradkit train`` takes, naming them (a mistyped one with the closest
    key this mode takes)."""
    given = ", ".join(([f"gradkit={source}"] if source else []) + [f"gradkit.{k}" for k in keys])
    hint = did_you_mean(f"gradkit.{keys[0]}", [f"gradkit.{k}" for k in accepted]) if len(keys) == 1 else ""
    return (f"{given}: not a setting 'gradkit {mode}' takes{hint}; gradkit= and its keys apply to 'gradkit train' "
            f"('gradkit val' takes {', '.join(f'gradkit.{k}' for k in VAL_REPORT_KEYS)}; every mode "
            f"gradkit.{_ALLOW_DOWNLOAD})")


def _mode_words(args: Sequence[str]) -> list[str]:
    """Where yolo reads its task and mode (``train``, ``detect train``): the first two arguments once the
    plugin's own keys, which may come anywhere, are set aside."""
    return [a for a in args if not _is_plugin_arg(a)][:2]


def _no_pip_installs_during_the_run() -> None:
    """Ultralytics pip-installs a missing requirement mid-run when it is online (even for one odd image:
    its patched ``PIL.Image.open`` reaches for pi-heif); a training run must not change the user's
    environment. Ultralytics reads it once, when it is imported: so this holds for the console script (which
    imports ultralytics after this), not for a process that imported it before calling :func:`main`. The
    user's own value wins."""
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")


def _dispatch(args: list[str]) -> int:
    if args[0] in _OWN:
        if args[0] == "synth":
            return _synth(args[1:])
        if args[0] == "report":
            return _report(args[1:])
        if args[0] == "augment":
            return _augment_preview(args[1:])
        if args[0] == "convert":
            return _convert(args[1:])
        if args[0] == "check":
            return _check(args[1:])
        if args[0] == "tile":
            return _tile(args[1:])
        if args[0] == "plan":
            from gradkit.integrations.ultralytics.models import users_own_variant
            from gradkit.integrations.ultralytics.throughput import (
                training_seconds_per_image,
                validation_seconds_per_image,
            )
            from gradkit.plan import plan_command

            return plan_command(args[1:], training_seconds_per_image, validation_seconds_per_image,
                                users_own_variant)
        if args[0] == "config-doc":
            from gradkit.docs import config_reference

            print(config_reference())
            return 0
        from gradkit.demo import run_demo

        return run_demo(args[1:])
    unknown = _unknown_command(args[0])
    if unknown:
        print(unknown, file=sys.stderr)
        return 2
    try:
        source, overrides, rest = split_plugin_args(args)
        mode_words = _mode_words(rest)
        is_train, is_val = "train" in mode_words, "val" in mode_words
        accepted = {_ALLOW_DOWNLOAD} | (set(VAL_REPORT_KEYS) if is_val else set())
        mode = " ".join(a for a in mode_words if "=" not in a) or "none"
        if (source or set(overrides) - accepted) and not is_train:
            raise ConfigError(_train_only_keys(source, sorted(set(overrides) - accepted), sorted(accepted), mode))
        typed = typed_overrides(args)
        cfg = load_config(source, overrides, typed) if is_train else None
        if cfg is not None:
            _check_augment(cfg, source, overrides)
            cfg = _given_hyps_win(cfg, rest)
        from gradkit.integrations.ultralytics.sliced import check_report_tiles

        settings = cfg or load_config(None, overrides, typed)
        report = settings.report
        check_report_tiles(report.tile_size, report.tile_overlap)
        allow_download = settings.data.allow_download
    except ConfigError as exc:
        print(f"gradkit: {exc}", file=sys.stderr)
        return 2
    from gradkit.integrations.ultralytics import install_dataset_guard, resolve_dataset

    install_dataset_guard(allow_download)
    data = _arg(rest, "data")
    if not is_train and not allow_download and data and data.endswith((".yaml", ".yml")):
        resolve_dataset(data, _arg(rest, "split") or "")  # predict and export read it too: fail here, not inside
    unwritable = _unwritable_project(rest)
    if unwritable:
        print(unwritable, file=sys.stderr)
        return 2
    if is_train:  # before any callback is registered: an unwritable cache folder stops here
        from gradkit.integrations.ultralytics.models import VariantNotWritten

        try:
            rest = _with_model_variant(rest)
        except VariantNotWritten as exc:
            print(f"gradkit: {exc}", file=sys.stderr)
            return 2
    run, failed_extras, folder_before = None, [], None
    if cfg is not None:
        failed_extras = _register_default_callbacks(cfg)
        run = _track_checkpoint()
        folder_before = _run_folder_before(rest)
    if is_train:
        missing = _missing_model_config(rest) or _finished_resume(rest)
        if missing:
            print(missing, file=sys.stderr)
            return 2
    if is_val:
        refused = _val_conf_refused(_arg(rest, "conf")) or _tiled_copy_refused(data, report.tile_size)
        if refused:
            print(refused, file=sys.stderr)
            return 2
        missing = _missing_model(rest)
        if missing:
            print(missing, file=sys.stderr)
            return 2
        _register_val_report(report)
        keys = {a.partition("=")[0] for a in rest}
        rest += [a for a in ("plots=True",) if a.partition("=")[0] not in keys]
    from gradkit.integrations.ultralytics.seams import hand_over_to_yolo

    try:
        hand_over_to_yolo(rest)
    except KeyboardInterrupt:
        if run is None:
            raise
        _restore_run_folder(folder_before, run)
        print(_interrupted(run, cfg.report if cfg is not None else None), file=sys.stderr)
        return 130
    except Exception:  # a refusal before the first epoch (answered in one line by _run_command), or a bug
        if run is not None:
            _restore_run_folder(folder_before, run)
        raise
    if failed_extras:  # logged by the plugin with the command that rebuilds each
        print(f"gradkit: training finished, but {' and '.join(failed_extras)} failed (see the log)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
