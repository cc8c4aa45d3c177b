"""Side-by-side comparison of evaluation reports."""

from __future__ import annotations

import json
from typing import Any

from gradkit.config import ULTRALYTICS_AUGMENT_KEYS
from gradkit.report.errors import class_labels
from gradkit.report.inspection import TINY_SPLIT
from gradkit.report.intervals import paired_intervals, unpaired_because
from gradkit.report.schema import REPORT_SCHEMA_VERSION

__all__ = ["compare_reports"]

HEADLINE = ("mAP50", "mAP50-95", "precision", "recall")


#: Inspection KPIs compared, and whether higher is better.
INSPECTION = {"escape_rate": False, "false_reject_rate": False, "fp_per_image": False}
#: Gradient summary compared (lower is better: fewer alerts, fewer rescaled steps).
GRADIENTS = ("alerts", "nonfinite alerts", "exploding alerts", "mean clip rate", "skipped steps")
#: Training curves overlaid in the comparison.
CURVES = ("metrics/mAP50-95(B)", "train/box_loss", "val/box_loss")


#: Decimals the winner is judged on: the pages show scores to three decimals and rates to a tenth of a percent,
#: so two values shown alike are a tie (a winner beside two equal numbers reads as an error).
SHOWN_DECIMALS = 3


def _best(values: list[float | None], labels: list[str], higher: bool = True) -> str:
    scored = [(round(v if higher else -v, SHOWN_DECIMALS), lab) for v, lab in zip(values, labels, strict=True)
              if v is not None]
    if not scored:
        return "n/a"
    top = max(v for v, _ in scored)
    winners = [lab for v, lab in scored if v == top]
    return winners[0] if len(winners) == 1 else "tie: " + ", ".join(winners)


def _row(values: list[float | None], labels: list[str], higher: bool = True) -> dict[str, Any]:
    first = values[0]
    return {"values": values, "best": _best(values, labels, higher), "higher_is_better": higher,
            "delta_vs_first": [None if v is None or first is None else round(v - first, 6) for v in values]}


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict) or (not d and prefix):  # an empty mapping is a value: "set nothing here"
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return {k.removesuffix("."): v for k, v in out.items()}


def _settings(r: dict[str, Any]) -> dict[str, Any]:
    t = r.get("training") or r.get("trained_with") or {}  # a val report: its model's run folder's record
    used = (t.get("augment_preset") or {}).get("used")  # what auto chose: two auto runs can differ there
    ran = {f"yolo.{k} (ran)": v for k, v in (t.get("as_run") or {}).items() if v is not None}  # batch=-1 chose
    args = t.get("train_args") or {}
    for k in ULTRALYTICS_AUGMENT_KEYS:  # a hyp gradkit's config did not set trained as args.yaml says
        if args.get(k) is not None:
            ran.setdefault(f"yolo.{k} (ran)", args[k])
    made = r.get("trained_with")
    config = r.get("plugin_config") or (made or {}).get("plugin_config") or {}
    # whether gradkit trained it, where that is known: a plain Ultralytics run's val report has no gradkit.* keys
    attached = {"gradkit": "attached" if config else
                "not known" if (made or {}).get("earlier_gradkit_run") else "not attached"} if t else {}
    validated = r.get("validated_with") if isinstance(r.get("validated_with"), dict) else {}
    return {**attached, **{f"gradkit.{k}": v for k, v in _flat(config).items()},
            **({"gradkit.augment.preset (used)": used} if used else {}),
            **{f"yolo.{k}": v for k, v in (t.get("train_args") or {}).items()}, **ran,
            **{f"val.{k}": v for k, v in validated.items()},
            "split": r["split"], "data": r["data"]}


def _config_diff(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every setting (plugin config, yolo args, split, data) whose value differs between the runs that
    recorded it (a `gradkit val` report of weights outside their run folder records no training settings: see
    ``settings_not_recorded``)."""
    settings = [_settings(r) for r in reports]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    diff = []
    for k in keys:  # a plugin setting one run made and another left out is a difference too
        having = [s for s in settings if _recorded(s, k)]
        if len(having) > 1 and len({json.dumps(s.get(k), sort_keys=True, default=str) for s in having}) > 1:
            diff.append({"key": k, "values": [s.get(k) for s in settings]})
    return diff


def _recorded(settings: dict[str, Any], key: str) -> bool:
    """Whether a run's flattened settings hold ``key``, or an empty mapping above it (``augment.ultralytics:
    {}`` sets none of what another run set there: a difference). A key a report lacks otherwise was not
    recorded: a `gradkit val` report of weights outside their run folder records no settings, a plain Ultralytics
    run's no gradkit ones (its ``gradkit`` key says so), reports of other releases other keys."""
    parts = key.split(".")
    return key in settings or any(settings.get(".".join(parts[:i])) == {} for i in range(1, len(parts)))


def _gradient_summary(r: dict[str, Any]) -> dict[str, float | None]:
    t = r.get("training")
    if not t:
        return dict.fromkeys(GRADIENTS)
    counts = t.get("alert_counts") or {}
    curves = t.get("curves") or {}
    clip = [v for v in curves.get("grad/clip_rate", []) if v is not None]
    skipped = [v for v in curves.get("grad/skipped", []) if v is not None]
    return {"alerts": sum(counts.values()), "nonfinite alerts": counts.get("nonfinite", 0),
            "exploding alerts": counts.get("exploding", 0), "mean clip rate": sum(clip) / len(clip) if clip else None,
            "skipped steps": sum(skipped) if "grad/skipped" in curves else None}


def _set_aside(report: dict[str, Any]) -> list[str]:
    """The classes the report's operating point set aside (too few right boxes at their best threshold)."""
    return [c["name"] for c in (report.get("inspection") or {}).get("per_class", []) if c.get("set_aside")]


def _moved(report: dict[str, Any]) -> list[str]:
    """The classes that fire at a trusted threshold instead of their untrusted best-F1 one, in words."""
    out = []
    for c in (report.get("inspection") or {}).get("per_class", []):
        if (u := c.get("untrusted_max_f1")) is not None:
            counts = f", where {u['tp']} of {u['boxes']} boxes were right" if u.get("boxes") is not None else ""
            out.append(f"{c['name']} at {c['threshold']:.3f}, not {u['threshold']:.3f}{counts}")
    return out


def _precision_rule(report: dict[str, Any]) -> str:
    """How the report's floor held each class's precision (schema 9 held the precision itself)."""
    inspection = report.get("inspection") or {}
    floor, confidence = inspection.get("min_precision"), inspection.get("precision_confidence")
    if floor is None:
        return "no floor"
    if confidence is None:
        return f"precision ≥ {floor:.0%}"
    return f"lower bound at {confidence:.0%} confidence ≥ {floor:.0%}"


def _operating_point_warnings(reports: list[dict[str, Any]], labels: list[str]) -> list[str]:
    """Where the runs' operating points were chosen differently, so their escape rates are not like for like."""
    out = []
    aside = [_set_aside(r) for r in reports]
    if any(a != aside[0] for a in aside):
        out.append("Classes set aside at each run's operating point (" + "; ".join(
            f"{lab}: {', '.join(a) or 'none'}" for lab, a in zip(labels, aside, strict=True))
            + "): their escape rates count different parts.")
    moved = [_moved(r) for r in reports]
    if any(m != moved[0] for m in moved):
        out.append("Classes that fire at a trusted threshold instead of their best F1's (" + "; ".join(
            f"{lab}: {', '.join(m) or 'none'}" for lab, m in zip(labels, moved, strict=True))
            + "): their escape rates are not read at the best F1 in every run.")
    points = [(r.get("inspection") or {}).get("operating_point") for r in reports]
    if len(set(points)) > 1:  # a fixed report.conf against another, or against the max-F1 point
        out.append("The runs' operating points were chosen by different rules (" + "; ".join(
            f"{lab}: {point or 'not recorded'}" for lab, point in zip(labels, points, strict=True))
            + "): their escape and false-reject rates differ by the thresholds as much as by the models.")
    rules = [_precision_rule(r) for r in reports]
    if len(set(rules)) > 1:
        out.append("The runs' classes were held to different precision rules (" + "; ".join(
            f"{lab}: {rule}" for lab, rule in zip(labels, rules, strict=True))
            + "): a class set aside in one might fire in the other.")
    return out


def _warnings(reports: list[dict[str, Any]], labels: list[str]) -> list[str]:
    out = _operating_point_warnings(reports, labels)
    tiny = [(lab, r["images"]) for lab, r in zip(labels, reports, strict=True) if r["images"] < TINY_SPLIT]
    if tiny:
        fewest = min(n for _, n in tiny)
        out.append("Tiny split: " + ", ".join(f"{lab} {n} images" for lab, n in tiny) + f"; each image moves a rate "
                   f"by {100 / max(fewest, 1):.0f} points or more, so smaller differences between the runs are noise.")
    for key in ("split", "data"):
        values = [str(r[key]) for r in reports]
        if len(set(values)) > 1:
            out.append(f"The runs were evaluated on different {'splits' if key == 'split' else 'datasets'} ("
                       + ", ".join(f"{lab}: {v}" for lab, v in zip(labels, values, strict=True))
                       + "): their numbers are not directly comparable.")
    scoring = [f"through tiles of {t['size']} px (overlap {t['overlap']} px)" if (t := r.get("tiles")) else
               "on whole images" for r in reports]
    if len(set(scoring)) > 1:
        out.append("The runs were scored differently (" + ", ".join(f"{lab}: {v}" for lab, v in
                                                             zip(labels, scoring, strict=True))
                   + "): the same images, each model seeing them as it was trained to.")
    return out


def _ap50_by_label(report: dict[str, Any]) -> dict[str, float | None]:
    """Each class's AP50 under the label its draws are kept by: its name, or with its id where two share it."""
    names = {c["class"]: c["name"] for c in report["per_class"] if isinstance(c.get("class"), int)}
    labels = class_labels(set(names), names)
    return {labels.get(c.get("class"), c["name"]): c["AP50"] for c in report["per_class"]}


def _paired(reports: list[dict[str, Any]], labels: list[str]) -> list[dict[str, Any]]:
    """Per run after the first: where both were drawn alike (the same images and seed; schema 15), each score's
    difference from the first run with its paired 95% interval (draw by draw) and whether the images tell the two
    apart (the interval excludes 0), and the scores without one (a class of too few images); else why not."""
    first = reports[0]
    out = []
    for lab, r in zip(labels[1:], reports[1:], strict=True):
        why = unpaired_because(first.get("intervals"), r.get("intervals"))
        if why is None and (r["data"], r["split"]) != (first["data"], first["split"]):
            why = "they were scored on other data or another split"
        if why is not None:
            out.append({"label": lab, "against": labels[0], "rows": [], "why": why})
            continue
        pairs = paired_intervals(first["intervals"], r["intervals"])
        values = {m: (first["headline"].get(m), r["headline"].get(m)) for m in ("mAP50", "mAP50-95")}
        mine = _ap50_by_label(r)
        values |= {f"AP50 {k}": (v, mine.get(k)) for k, v in _ap50_by_label(first).items()}
        intervals = {**{k: v for k, v in pairs.items() if k != "AP50"},
                     **{f"AP50 {c}": v for c, v in pairs["AP50"].items()}}
        both = {k: (a, b) for k, (a, b) in values.items() if a is not None and b is not None}
        rows = [{"score": k, "delta": round(b - a, 6), "interval": intervals[k],
                 "told_apart": not intervals[k][0] <= 0 <= intervals[k][1]} for k, (a, b) in both.items()
                if intervals.get(k)]
        out.append({"label": lab, "against": labels[0], "rows": rows,
                    "not_compared": [k for k in both if not intervals.get(k) and k != "mAP50-95"]})
    return out


def compare_reports(reports: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """Per-metric and per-class values, deltas against the first run and the winner of each row."""
    if len(reports) < 2:
        raise ValueError(f"a comparison needs at least two reports, got {len(reports)}")
    headline = {}
    for m in HEADLINE:
        vals = [r["headline"].get(m) for r in reports]
        headline[m] = _row(vals, labels)
    coco = {}
    for m in ("AP", "AP50", "AP75", "AR100"):
        vals = [r["coco"]["metrics"].get(m) for r in reports]
        coco[m] = _row(vals, labels)
    names = list(dict.fromkeys(c["name"] for r in reports for c in r["per_class"]))
    per_class = {}
    for n in names:
        vals = [next((c["AP50-95"] for c in r["per_class"] if c["name"] == n), None) for r in reports]
        per_class[n] = _row(vals, labels)
    inspection = {m: _row([(r.get("inspection") or {}).get(m) for r in reports], labels, higher)
                  for m, higher in INSPECTION.items()}
    grads = [_gradient_summary(r) for r in reports]
    gradients = {m: _row([g[m] for g in grads], labels, higher=False) for m in GRADIENTS
                 if any(g[m] is not None for g in grads)}  # val reports record no gradients: no row of n/a
    curves = {lab: {"epochs": (r.get("training") or {}).get("epochs", []),
                    **{c: ((r.get("training") or {}).get("curves") or {}).get(c) for c in CURVES}}
              for lab, r in zip(labels, reports, strict=True)}
    return {"schema_version": REPORT_SCHEMA_VERSION, "kind": "comparison",
            "runs": [{"label": lab, "model": r["model"], "data": r["data"], "split": r["split"],
                      "thresholds": (r.get("inspection") or {}).get("thresholds"), "set_aside": _set_aside(r)}
                     for lab, r in zip(labels, reports, strict=True)],
            "warnings": _warnings(reports, labels), "paired": _paired(reports, labels),
            "config_diff": _config_diff(reports),
            "settings_not_recorded": [lab for lab, r in zip(labels, reports, strict=True)
                                      if not r.get("plugin_config") and not r.get("training")
                                      and not r.get("trained_with")],
            "headline": headline, "coco": coco, "inspection": inspection, "gradients": gradients,
            "per_class": per_class, "curves": curves}
