"""Assemble the evaluation report (a JSON-able dict) from an evaluation and a training run's files.

The report's numbers come from Ultralytics' validator (headline, per class), faster-coco-eval (COCO
metrics and the defect-aware buckets) and the TIDE-style error analysis; nothing here computes AP.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import hashlib
import json
import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.data.yaml_file import read_yaml
from gradkit.report.box_fit import box_fit
from gradkit.report.coco import Boxes, CocoEvaluation, bucket_metrics, coco_metrics
from gradkit.report.data import EvalData
from gradkit.report.errors import analyse_errors, class_labels, miss_causes
from gradkit.report.inspection import REPORT_DIGITS, Matching, OperatingPoint, inspection_kpis
from gradkit.report.intervals import ap_intervals, images_digest
from gradkit.report.schema import REPORT_SCHEMA_VERSION

__all__ = ["REPORT_SCHEMA_VERSION", "build_report", "other_records", "training_section", "without_cyclic_gc",
           "write_report"]

COCO_NOTE = (
    "Ultralytics interpolates precision at 101 recall points with np.interp and integrates with the "
    "trapezoid rule, and averages over the classes present in the split; pycocotools-style COCO "
    "evaluation takes the precision envelope at 101 recall points by search-sorted lookup and averages "
    "them, caps detections at 100 per image and treats crowd regions specially. The two differ by up "
    "to a few points on the same predictions."
)


@contextlib.contextmanager
def without_cyclic_gc():
    """Pause the cycle collector: building ~10^5 annotation dicts triggers it again and again, each time
    scanning every live object (a third of the report's time), while none of them forms a cycle."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _clean(x: Any) -> Any:
    """NaN/inf -> None so the JSON is standard; recursive."""
    if isinstance(x, float):
        return None if not math.isfinite(x) else float(f"{x:.{REPORT_DIGITS}g}")  # significant: 1e-9 stays 1e-9
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def _versions() -> dict[str, str]:
    import torch
    import ultralytics

    import gradkit

    return {"gradkit": gradkit.__version__, "ultralytics": ultralytics.__version__, "torch": torch.__version__,
            "python": platform.python_version()}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [{k.strip(): v.strip() for k, v in row.items()} for row in csv.DictReader(f)]


#: args.yaml keys that name the run's own folder: they differ between any two runs and say nothing of how
#: a run was trained, so comparisons leave them out.
RUN_FOLDER_ARGS = ("save_dir", "name", "project")


def _last_try_of_each_epoch(rows: list[dict[str, str]]) -> tuple[list[dict[str, str]], list[int]]:
    """results.csv's rows of the training the weights went on from, one per epoch, and the epochs of the rows left
    out. A resume from an earlier checkpoint (``epoch1.pt`` of a run that went on) trains from there again, and
    Ultralytics appends its rows after the first try's: where the epoch number falls back, the earlier rows from
    that epoch on are of an abandoned try, also those the later try never reached (it stopped earlier)."""
    kept: list[dict[str, str]] = []
    left_out: set[int] = set()
    for row in rows:
        epoch = int(float(row["epoch"]))
        while kept and int(float(kept[-1]["epoch"])) >= epoch:
            left_out.add(int(float(kept.pop()["epoch"])))
        kept.append(row)
    return kept, sorted(left_out)


def training_section(run_dir: Path) -> dict[str, Any] | None:
    """Loss and mAP curves, clip rate and gradient alerts of a training run, from its files."""
    results = run_dir / "results.csv"
    if not results.exists():
        return None
    rows, left_out = _last_try_of_each_epoch(_read_csv(results))

    def col(name: str) -> list[float | None]:
        values = [float(r[name]) if r.get(name) not in (None, "") else None for r in rows]
        return [v if v is not None and math.isfinite(v) else None for v in values]  # an infinite loss: a gap

    curves = {k: col(k) for k in rows[0] if k != "epoch"} if rows else {}
    resumed = _resumed(run_dir)
    args = _run_arguments(run_dir, resumed)
    if args.get("val") is False:  # Ultralytics validated only the last epoch and wrote 0 for the others
        for k, values in curves.items():
            if k.startswith(("metrics/", "val/")):
                curves[k] = [None] * (len(values) - 1) + values[-1:]
    alerts = []
    if (run_dir / "gradient_alerts.jsonl").exists():
        text = (run_dir / "gradient_alerts.jsonl").read_text(encoding="utf-8")
        alerts = [json.loads(line) for line in text.splitlines() if line]
    steps = run_summary(run_dir).get("optimizer_steps")
    return {
        "run_dir": str(run_dir),
        "epochs": [int(float(r["epoch"])) for r in rows],
        "epochs_left_out": left_out,
        "curves": curves,
        "alerts": alerts,
        "alert_counts": {k: sum(a["kind"] == k for a in alerts) for k in ("exploding", "vanishing", "dead",
                                                                            "nonfinite", "diverging", "rollback")},
        "heatmap": str(run_dir / "gradients.png") if (run_dir / "gradients.png").exists() else None,
        "seed": args.get("seed"),
        "optimizer_steps": steps,
        "resumed": resumed.get("at") or [],
        "train_args": _recorded_args(args),
        **_monitor_keys(run_dir),
    }


#: What gradkit writes into a run folder at the end of training (optimizer steps, the preset ``auto`` chose, resumes,
#: the monitor's findings).
SUMMARY_FILE = "gradkit_summary.json"


def run_summary(run_dir: Path) -> dict[str, Any]:
    """``run_dir``'s gradkit_summary.json, read back so untrusted: {} where it is absent, not a mapping (the schema
    checks the values taken from it) or an earlier run's (:func:`earlier_run_summary`); a file that is not JSON is a
    one-line ValueError naming it."""
    summary = _read_summary(run_dir / SUMMARY_FILE)
    return {} if earlier_run_summary(summary, run_dir) else summary


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    except RecursionError:
        raise ValueError(f"{path} nests deeper than any summary gradkit writes") from None
    return summary if isinstance(summary, dict) else {}


def results_digest(run_dir: Path) -> str | None:
    """The SHA-256 of ``run_dir``'s results.csv (None without one): what a run's summary records it was written
    beside."""
    path = run_dir / "results.csv"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def earlier_run_summary(summary: dict[str, Any], run_dir: Path) -> bool:
    """Whether the summary names a results.csv other than the one in ``run_dir``: a plain Ultralytics run reused the
    folder (exist_ok=True) and wrote its own epochs, and the summary (and gradkit.yaml beside it) are an earlier
    run's. A summary naming none (an earlier release; a gradkit run resumed, until it ends) is not judged."""
    recorded = summary.get("results_sha256")
    return isinstance(recorded, str) and recorded != results_digest(run_dir)


def _run_arguments(run_dir: Path, resumed: dict[str, Any]) -> dict[str, Any]:
    """The yolo arguments a run was given: args.yaml, or for a resumed run (``resumed``: :func:`_resumed`'s record,
    read once by the caller) the record gradkit kept of them as the run started (args.yaml then holds Ultralytics'
    rewrites); {} where neither is."""
    if isinstance(resumed.get("train_args"), dict):
        return resumed["train_args"]
    if not (run_dir / "args.yaml").exists():
        return {}
    args = read_yaml(run_dir / "args.yaml") or {}
    if not isinstance(args, dict):
        raise ValueError(f"{run_dir / 'args.yaml'} is not a mapping of arguments")
    return args


def _json_safe(value: Any) -> Any:
    """``value`` as JSON holds it: keys as text, what JSON has no type for (a hand-edited file's dates, sets) as its
    text, NaN and infinities as None."""
    return _clean(json.loads(json.dumps(_clean(value), default=str)))


def _recorded_args(args: dict[str, Any]) -> dict[str, Any]:
    """The arguments as a report keeps them: without the run folder's own name, as JSON holds them."""
    return _json_safe({str(k): v for k, v in args.items() if k not in RUN_FOLDER_ARGS})


def trained_with(model: str) -> dict[str, Any] | None:
    """How the weights ``gradkit val`` scores were trained, where they lie in their run folder (``RUN/weights/X.pt``
    beside ``RUN/args.yaml``, after links): the run's arguments as its own report records them, the transform list
    ``auto`` chose, and its gradkit configuration (``RUN/gradkit.yaml``; None for a plain Ultralytics run). None
    elsewhere: a copied checkpoint's folder says nothing of its training. The files are read back, so untrusted:
    what a report could not hold raises a one-line ValueError naming the file (or OSError)."""
    typed = Path(model).absolute()  # a weights file that is itself a link (a DVC cache) lies in the folder typed
    run_dir = next((p.parent.parent.resolve() for p in (typed, typed.resolve())
                    if p.parent.name == "weights" and (p.parent.parent / "args.yaml").is_file()), None)
    if run_dir is None:
        return None
    config_file = run_dir / "gradkit.yaml"
    config = read_yaml(config_file) if config_file.is_file() else None
    if config_file.is_file() and not isinstance(config, dict):
        raise ValueError(f"{config_file} is not a mapping of settings")
    try:
        return _trained_with_record(run_dir, config)
    except RecursionError:  # a YAML anchor that holds itself
        raise ValueError(f"{run_dir}: args.yaml or gradkit.yaml refers to itself (a YAML anchor inside itself)") \
            from None


def _trained_with_record(run_dir: Path, config: dict[str, Any] | None) -> dict[str, Any]:
    """:func:`trained_with`'s record of ``run_dir``, checked against the report's schema."""
    summary_file = run_dir / SUMMARY_FILE
    summary = _read_summary(summary_file)  # read once here: its mark decides what of it is this run's
    earlier = earlier_run_summary(summary, run_dir)
    record = {"run_dir": str(run_dir), "train_args": _recorded_args(_run_arguments(run_dir, _resumed(run_dir)))}
    if earlier:
        record.update(plugin_config=None, as_run=None, augment_preset=None,
                      earlier_gradkit_run=(f"{summary_file} and gradkit.yaml are" if config is not None else
                                           f"{summary_file} is") + " an earlier run's: results.csv has changed "
                                          "since it was written")
    else:
        record.update(plugin_config=None if config is None else _json_safe(config),
                      as_run=_json_safe(summary.get("as_run")),
                      augment_preset=_json_safe(summary.get("augment_preset")))
    from pydantic import ValidationError

    from gradkit.report.schema import TrainedWith

    try:
        TrainedWith.model_validate(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ValueError(f"{summary_file}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    return record


def other_records(stored: dict[str, Any], fresh: dict[str, Any] | None) -> str | None:
    """What says a run's training files (``fresh``, :func:`training_section`) are not those its report.json's
    training section (``stored``) was built from: the epochs in results.csv, then each argument the stored section
    recorded (reports before schema 4 recorded a few) against args.yaml; None where they agree."""
    def span(epochs: list) -> str:
        return f"epochs {epochs[0]}-{epochs[-1]}" if epochs else "no epochs"

    if fresh is None:
        return "results.csv is missing"
    # a report from before schema 13 kept both tries of an epoch trained again: the same records, once each
    if isinstance(stored.get("epochs"), list) and sorted(set(stored["epochs"])) != fresh["epochs"]:
        return f"results.csv holds {span(fresh['epochs'])}, report.json's training {span(stored['epochs'])}"
    was, now = stored.get("train_args"), fresh["train_args"]
    missing = object()
    differs = [k for k in (was if isinstance(was, dict) else {}) if now.get(k, missing) != was[k]]
    if differs:
        key = differs[0]
        return (f"args.yaml says {key}: {str(now.get(key, '(absent)'))[:40]!r}, report.json's training "
                f"{key}: {str(was[key])[:40]!r}")
    return None


def _monitor_keys(run_dir: Path) -> dict[str, Any]:
    """The optimizer, image size, batch and transform list (``augment.preset: auto``) that ran, the monitor's
    coverage and noise scale from ``gradkit_summary.json`` (absent: empty/None)."""
    summary = run_summary(run_dir)
    taught = summary.get("taught") if isinstance(summary.get("taught"), dict) else {}
    return {"untaught": [_untaught_entry(u) for u in taught.get("untaught") or [] if isinstance(u, dict)],
            "optimizer_used": summary.get("optimizer"),
            "as_run": summary.get("as_run"),
            "augment_preset": summary.get("augment_preset"),
            "inactive_rules": summary.get("inactive_rules", {}),
            "inactive_rules_message": summary.get("inactive_rules_message", ""),
            "noise_scale": summary.get("noise_scale")}


def _resumed(run_dir: Path) -> dict[str, Any]:
    """``gradkit_summary.json``'s record of a resumed run (``at``: each resume's first epoch, checkpoint and changed
    arguments; ``train_args``: the arguments as the run started, with those changes), {} for another run. Read back,
    so untrusted: entries not of that shape are left out (the schema then checks the values), and ``train_args``
    stands in for args.yaml as a hand edit of args.yaml would (it only changes what the report shows)."""
    resumed = run_summary(run_dir).get("resumed")
    if not isinstance(resumed, dict):
        return {}
    at = resumed.get("at") if isinstance(resumed.get("at"), list) else []
    args = resumed.get("train_args")
    return {"at": [r for r in at if isinstance(r, dict) and isinstance(r.get("epoch"), int)
                   and not isinstance(r["epoch"], bool) and isinstance(r.get("checkpoint"), str)
                   and isinstance(r.get("changed", {}), dict)],
            "train_args": args if isinstance(args, dict) and all(isinstance(k, str) for k in args) else None}


def _untaught_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``monitor.taught`` warning as the report keeps it (``class`` is ``name`` here; the schema checks it)."""
    return {"name": entry.get("class"), **{k: entry.get(k) for k in ("epoch", "boxes", "median_target",
                                                                    "median_short_side")}}


def _gallery_entry(ev: EvalData, m: Matching, found: np.ndarray, fires: np.ndarray, r) -> dict[str, Any]:
    """One worst image: its objects (found at the operating point: 1/0) and its predictions at the operating
    point (true positive: 1/0), in descending score."""
    g_sel = m.gts.image == r.image
    gts = [[*b[1:6], int(f)] for b, f in zip(m.gts[g_sel], found[g_sel].tolist(), strict=True)]
    p_sel = np.flatnonzero((m.preds.image == r.image) & fires)
    p_sel = p_sel[np.argsort(-m.preds.score[p_sel], kind="stable")]
    preds = [[b.cls, b.score, b.x0, b.y0, b.x1, b.y1, int(t)]
             for b, t in zip(m.preds[p_sel], m.pred_tp[p_sel].tolist(), strict=True)]
    return {"image": ev.files[r.image], "missed": r.missed, "false_positives": r.false_positives, "tp": r.tp,
            "errors": dict(r.counts), "gt": gts, "pred": preds}


def _run_name(run_dir: Path | None, model: str) -> str:
    """The run's name: its directory, or for runs/NAME/weights/best.pt the NAME."""
    if run_dir is not None:
        return run_dir.name
    p = Path(model)
    return p.parent.parent.name if p.parent.name == "weights" else p.stem


def build_report(ev: EvalData, run_dir: Path | None = None, plugin_config: dict | None = None,
                 gallery_size: int = 6, trained_with: dict[str, Any] | None = None,
                 resamples: int | None = None) -> dict[str, Any]:
    """The report as a dict with stable keys (see README, "report.json"). ``trained_with``: for a report that is
    not the training run's own, how its model was trained (the record the function of that name reads).
    ``resamples``: of the images, for the AP intervals (None: ``report.resamples``' default; 0: none)."""
    classes = sorted(ev.names)
    gts, preds = Boxes.from_boxes(ev.gts), Boxes.from_boxes(ev.preds)
    intervals = _intervals(ev, resamples)
    per_class = []
    for c in classes:
        present = c in ev.per_class and ev.instances.get(c, 0) > 0
        row = {"class": c, "name": ev.names[c], "instances": ev.instances.get(c, 0),
               "images": ev.image_counts.get(c, 0)}
        # Ultralytics' `maps` fills absent classes with the mean: report them as n/a (None) instead.
        for key in ("precision", "recall", "AP50", "AP50-95"):
            row[key] = ev.per_class[c][key] if present else None
        row["AP50_interval"] = intervals["AP50"].get(c) if present and intervals else None
        per_class.append(row)
    trained = ev.extra.get("classes")  # the run's classes= (Ultralytics scores those only), None: every class
    left_out = set() if trained is None else set(classes) - {int(c) for c in trained}
    present_classes = [c for c in classes if ev.instances.get(c, 0) > 0]
    coco, area, elong = {}, {}, {}
    with without_cyclic_gc():
        if len(gts):
            evaluation = CocoEvaluation(gts, preds, ev.images, classes)  # built once, evaluated three times
            coco = coco_metrics(gts, preds, ev.images, classes, evaluation, ev.sizes)
            area = bucket_metrics(gts, preds, ev.images, classes, ev.sizes, "area", evaluation)
            elong = bucket_metrics(gts, preds, ev.images, classes, ev.sizes, "elongation", evaluation)
            del evaluation
        # one operating point for the KPIs, the error analysis and the gallery
        op = OperatingPoint(gts, preds, classes, ev.conf_threshold)
        inspection = inspection_kpis(gts, preds, ev.images, ev.names, ev.conf_threshold, op)
        errors, per_image = analyse_errors(gts, preds[op.fires], ev.images, -np.inf)
        fit = box_fit(gts, preds, present_classes, ev.sizes)
    failed = [r for r in per_image.values() if r.missed + r.false_positives]  # an image without error is no "worst"
    worst = sorted(failed, key=lambda r: (-(r.missed + r.false_positives), r.image))[:gallery_size]
    defect_free = len(set(ev.images) - set(gts.image.tolist()))
    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "evaluation",
        "model": ev.model,
        "run": _run_name(run_dir, ev.model),
        "data": ev.data,
        "split": ev.split,
        "images": len(ev.images),
        "images_skipped": ev.extra.get("images_skipped"),
        "defect_free_images": defect_free,
        "instances": len(gts),
        "class_names": {str(c): ev.names[c] for c in classes},
        "data_class_names": _str_keys(ev.extra.get("data_class_names")),
        "versions": _versions(),
        "plugin_config": plugin_config,
        "headline": dict(ev.headline),
        "intervals": {k: v for k, v in intervals.items() if k != "AP50"} if intervals else None,
        "per_class": per_class,
        "classes_absent": [ev.names[c] for c in classes if c not in present_classes and c not in left_out],
        "classes_left_out": [ev.names[c] for c in sorted(left_out)] if trained is not None else None,
        "coco": {"metrics": coco, "library": "faster-coco-eval", "note": COCO_NOTE},
        "size_buckets": {"by_relative_area": area, "by_elongation": elong},
        "inspection": inspection,
        "errors": {"conf_threshold": ev.conf_threshold, "operating_point": inspection["operating_point"],
                   "counts": errors, "by_class": miss_causes(per_image, {c: ev.names[c] for c in classes}),
                   "worst_images": [_gallery_entry(ev, op.matching, op.found, op.fires, r) for r in worst]},
        # labelled as the miss table labels them: by every class's name, so a name two classes share is told apart
        "box_fit": {label: fit[c] for c, label in sorted(class_labels(set(ev.names), ev.names).items()) if c in fit},
        "confusion_matrix": ev.confusion_matrix,
        "plots": dict(ev.plots),
        "speed_ms": ev.extra.get("speed_ms"),
        "tiles": ev.extra.get("tiles"),
        "tiled_copy_of": _tiled_copy_of(ev.data),
        "training": training_section(run_dir) if run_dir else None,
        "trained_with": trained_with,
        "validated_with": ev.extra.get("validated_with"),
    }
    return _clean(report)


def _intervals(ev: EvalData, resamples: int | None) -> dict[str, Any] | None:
    """The AP intervals over resamples of the images, where the validation's per-image statistics were recorded;
    none on `gradkit tile`'s copy, whose images are tiles of fewer parts (a draw of tiles is not a draw of parts)."""
    from gradkit.config import ReportConfig
    from gradkit.integrations.ultralytics.seams import average_precision

    if not ev.image_stats or _tiled_copy_of(ev.data):
        return None
    count = ReportConfig.model_fields["resamples"].default if resamples is None else resamples
    out = ap_intervals(ev.image_stats, average_precision, count, iou50_only=True)  # AP50's: a tenth of the work
    if out is None:
        return None
    draws = out["draws"]
    labels = class_labels(set(ev.names), ev.names)  # compared by name, as the classes are (a shared one with its id)
    draws["AP50"] = {labels[c]: v for c, v in draws["AP50"].items() if c in labels}
    return {**out, "images_digest": evaluation_digest(ev)}


def evaluation_digest(ev: EvalData) -> str:
    """What identifies the images an evaluation's draws pick from (:func:`~gradkit.report.intervals.images_digest`
    of each image's file name and label rows, class, x0, y0, x1, y1, in the order the statistics were recorded)."""
    gts = Boxes.from_boxes(ev.gts).columns
    rows: dict[int, list[list[float]]] = {i: [] for i in ev.images}
    for row in zip(*(gts[k].tolist() for k in ("image", "cls", "x0", "y0", "x1", "y1")), strict=True):
        rows[int(row[0])].append(list(row[1:]))
    return images_digest([(Path(ev.files[i]).name, rows[i]) for i in ev.images])


def _tiled_copy_of(data: str) -> dict[str, Any] | None:
    """The record of ``gradkit tile`` (``source``, ``size``, ``overlap``) where ``data`` is its copy, whose images
    are tiles: the report's parts are then tiles. None for other data (or a record that does not read)."""
    from gradkit.data.tile import tiled_copy_of

    try:
        return tiled_copy_of(data)
    except (ValueError, OSError):
        return None


def _str_keys(names: dict[int, str] | None) -> dict[str, str] | None:
    return None if names is None else {str(c): n for c, n in sorted(names.items())}


GALLERY_DIR = "report_gallery"
GALLERY_COPY_MAX_PX = 640


def copy_gallery_images(report: dict[str, Any], out_dir: Path) -> None:
    """Copy each worst image (at most GALLERY_COPY_MAX_PX on the long side) into ``out_dir/report_gallery`` and
    name the copy in the entry: a rebuilt report embeds only files inside its directory."""
    import cv2

    for k, entry in enumerate(report.get("errors", {}).get("worst_images", [])):
        img = cv2.imread(entry["image"], cv2.IMREAD_COLOR)
        if img is None:
            entry["copy"] = None
            continue
        h, w = img.shape[:2]
        if max(h, w) > GALLERY_COPY_MAX_PX:
            f = GALLERY_COPY_MAX_PX / max(h, w)
            img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
        (out_dir / GALLERY_DIR).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out_dir / GALLERY_DIR / f"{k:02d}.png"), img)
        entry["copy"] = f"{GALLERY_DIR}/{k:02d}.png"


def plots_relative_to(plots: dict[str, str], out_dir: Path) -> dict[str, str]:
    """Name the curves Ultralytics wrote into ``out_dir`` relative to it: a run folder copied or moved elsewhere
    still embeds them when rebuilt (a rebuilt report embeds only files inside its directory)."""
    inside = out_dir.resolve()
    return {k: Path(v).resolve().relative_to(inside).as_posix() if Path(v).resolve().is_relative_to(inside) else v
            for k, v in plots.items()}


def write_report(report: dict[str, Any], out_dir: Path, *, from_file: bool = False) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and the self-contained ``report.html``.

    A report just built (``from_file=False``) names files this process found: its gallery images are copied
    into ``out_dir`` and the training run's directory may be embedded from. A report read back from
    report.json (``from_file=True``) is user input: the page embeds image files inside ``out_dir`` only.
    """
    from gradkit.report.render import render_html, render_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    roots = [out_dir]
    if not from_file:
        copy_gallery_images(report, out_dir)
        report["plots"] = plots_relative_to(report.get("plots") or {}, out_dir)
        if report.get("training"):
            roots.append(Path(report["training"]["run_dir"]))
    paths = {"json": out_dir / "report.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    paths["json"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    paths["html"].write_text(render_html(report, roots), encoding="utf-8")
    return paths
