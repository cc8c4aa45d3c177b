"""Render a report dict as one self-contained HTML file (images inlined) and as Markdown.

Every value taken from the report (class names, paths, config values, alert messages, counts) goes
through ``html.escape``; nothing is fetched from the network when the page opens, and only image
files inside the allowed directories (the report's own directory) are embedded: a report.json can be
edited, and the page must not carry a file from elsewhere on the disk.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gradkit.report.box_fit import FIT_IOUS, iou_key
from gradkit.report.coco import ALL_OBJECTS
from gradkit.report.errors import BG_IOU, FG_IOU, pairwise_iou
from gradkit.report.inspection import TINY_SPLIT, VALIDATION_CONF
from gradkit.report.intervals import INTERVAL_LEVEL, MIN_IMAGES

__all__ = ["GALLERY_MIN_PX", "PALETTE", "draw_label", "render_html", "render_markdown", "verdict", "warnings"]

#: Okabe-Ito colours (colour-blind safe), RGB: what each box in the gallery means.
PALETTE = {"true positive": (0, 114, 178), "false positive": (213, 94, 0), "missed object": (240, 228, 66)}
GALLERY_MIN_PX = 320  # gallery images are drawn at least this large (long side)
GALLERY_MAX_PX = 640
MAX_DRAWN_FP = 5  # false positives drawn per gallery image (highest scores); the caption counts all
FEW_STEPS = 300  # fewer optimizer steps than this: a barely trained model
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

_CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;
padding:0 1em;line-height:1.45;overflow-wrap:anywhere}
h1{font-size:1.5em;line-height:1.25}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;
overflow-wrap:normal}
th{background:#f4f4f4}td.l,th.l{text-align:left}.na{color:#999}.good{color:#0a6b2e}.bad{color:#b00}
td.win{background:#dcecf7;font-weight:600}
.verdict{font-size:1.1em;background:#f3f7fb;border-left:4px solid #0072b2;padding:.6em 1em}
.warn{background:#fff6e5;border-left:4px solid #d55e00;padding:.4em 1em}.warn li{margin:.2em 0}
.cards{display:flex;gap:.8em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em;
min-width:9em}.card b{display:block;font-size:1.5em}.card small{color:#555}
.gallery{display:flex;flex-wrap:wrap;gap:.8em}.gallery figure{margin:0;border:1px solid #ddd;padding:4px;
max-width:100%}figcaption{font-size:.85em;max-width:420px}
.legend span{display:inline-block;margin-right:1.2em}.legend i{display:inline-block;width:1.4em;height:.9em;
border:3px solid;margin-right:.3em;vertical-align:middle}
.panels{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:.6em}
.panels.wide{grid-template-columns:repeat(auto-fill,minmax(min(100%,480px),1fr))}
img{max-width:100%;height:auto}img.wideplot{min-width:760px}.note{color:#555;font-size:.9em}
pre{background:#f7f7f7;padding:.6em;overflow:auto;white-space:pre-wrap}
@media (max-width:600px){body{margin:.6em auto;padding:0 .5em}h1{font-size:1.2em}h2{font-size:1.15em}
.card b{font-size:1.2em}}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return '<span class="na">n/a</span>'
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return _e(x)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _md_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else _md_text(x)


#: How the pages name the intervals' level (the schema holds report.json's to it).
LEVEL = f"{INTERVAL_LEVEL:.0%}"
#: The per-class column of the AP50 intervals.
INTERVAL_HEADER = f"AP50, {LEVEL} over images"


def _interval(pair: list[float]) -> str:
    """``0.081–0.247``."""
    return f"{pair[0]:.3f}–{pair[1]:.3f}"


def _class_interval(row: dict[str, Any]) -> str:
    """A class's AP50 interval, n/a for a class absent from the split, or why it has none."""
    if row["AP50"] is None:
        return "n/a"
    pair = row.get("AP50_interval")
    if pair:
        return _interval(pair)
    if row.get("images") is not None and row["images"] < MIN_IMAGES:
        return f"none (in {row['images']} image{'' if row['images'] == 1 else 's'}: under {MIN_IMAGES})"
    return "none (missing from more than a tenth of the draws)"


#: What a paired comparison's table says.
PAIRED_NOTE = (f"Each score's difference from the first run, and its {LEVEL} interval over the same draws of the "
               "same images for both runs (each draw scored for each run): an interval that holds 0 means these "
               "images do not tell the two runs apart on that score. Another training of either recipe moves them "
               "too, which only more trainings measure.")


def _card_spread(spread: dict[str, Any] | None, key: str) -> str:
    return f"<small>{LEVEL}: {_e(_interval(spread[key]))}</small>" if spread and spread.get(key) else ""


def _unpaired(p: dict[str, Any]) -> str:
    return f"Not compared draw by draw: {p['why']}."


def _not_compared(p: dict[str, Any]) -> str:
    return (f"No paired interval for {', '.join(p['not_compared'])}: a class in fewer than {MIN_IMAGES} images, or "
            "missing from more than a tenth of the draws (for mAP50: a draw missing any class).")


def _md_spread(spread: dict[str, Any] | None, key: str) -> str:
    return f" ({LEVEL}: {_interval(spread[key])})" if spread and spread.get(key) else ""


def interval_note(spread: dict[str, Any]) -> str:
    """What the intervals are, and what they allow a reader to conclude."""
    return (f"{LEVEL} intervals: the central {LEVEL} of each AP over {spread['resamples']} draws of these images "
            "with replacement (the validator's own matches and AP on each draw): how far it would move on another "
            "set of parts like these. A run and a goal inside the interval are not told apart by this split; two "
            "runs on the same images are compared draw by draw by gradkit report A B. More images narrow it.")


def _images(count: int, kind: str) -> str:
    """``1 defect-free image``, ``2 defect-free images``."""
    return f"{count} {kind} image{'' if count == 1 else 's'}"


def _md_text(x: Any) -> str:
    """Text safe in a Markdown table cell: one line, ``|`` escaped, no HTML (a class name is user input)."""
    one_line = " ".join(str(x).splitlines())
    return one_line.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _img_tag(png: bytes, alt: str, mime: str = "image/png", cls: str = "plot") -> str:
    return f'<img class="{cls}" alt="{_e(alt)}" src="data:{mime};base64,{base64.b64encode(png).decode()}">'


def allowed_file(path: str | None, roots: Sequence[Path]) -> Path | None:
    """``path`` (relative to the first root when not absolute) if it resolves to a PNG or JPEG file inside one
    of ``roots``; otherwise None."""
    if not path or not roots:
        return None
    p = Path(path)
    p = (p if p.is_absolute() else roots[0] / p).resolve()
    if not any(p.is_relative_to(r.resolve()) for r in roots) or not p.is_file():
        return None
    with open(p, "rb") as f:
        head = f.read(8)
    return p if head.startswith(_IMAGE_MAGIC) else None


#: The folder of a training run where the end-of-training report's validation writes its curves.
REPORT_VAL_DIR = "report_val"


def _beside_report(path: str | None, roots: Sequence[Path]) -> str | None:
    """Earlier releases named the curves by absolute path: after the run folder was copied, the curve is the
    file of that name beside the report, or in its ``report_val/`` when it was there (Ultralytics'
    training-time curves of the same name beside the report are another split's: never taken for those)."""
    if not (path and Path(path).is_absolute() and roots and allowed_file(path, roots) is None):
        return path
    old = Path(path)
    return f"{REPORT_VAL_DIR}/{old.name}" if old.parent.name == REPORT_VAL_DIR else old.name


def _file_img(path: str | None, alt: str, roots: Sequence[Path]) -> str:
    p = allowed_file(path, roots)
    if p is None:
        return (f'<p class="note">{_e(alt)}: not embedded (no image file inside the report directory)</p>'
                if path else "")
    data = p.read_bytes()
    return _img_tag(data, alt, "image/png" if data.startswith(_IMAGE_MAGIC[0]) else "image/jpeg")


def _cell(i: int, c: str | tuple[str, str], left: int) -> str:
    """A cell is HTML, or (HTML, extra CSS class)."""
    text, extra = c if isinstance(c, tuple) else (c, "")
    cls = " ".join(x for x in ("l" if i < left else "", extra) if x)
    return f'<td class="{cls}">{text}</td>'


MISS_HEADERS = ["class", "objects", "found", "mislocalised", "confused", "unseen"]
MISS_NOTE = (f"Judged by the detections at the operating point that are not another object's true positive. "
             f"mislocalised: one of its class overlaps it (IoU ≥ {BG_IOU:g}, below the match's {FG_IOU:g}): the "
             f"defect is seen and its box disagrees; confused: only another class's overlaps it (IoU ≥ {BG_IOU:g}; "
             f"the class it was taken for in brackets); unseen: none overlaps it (IoU ≥ {BG_IOU:g}).")


def _taken_for(row: dict) -> list[tuple[str, int]]:
    """The classes a row's confused objects were taken for, most often first."""
    return sorted((row.get("confused_with") or {}).items(), key=lambda t: -t[1])


def _confused(row: dict) -> str:
    taken = _taken_for(row)
    return str(row["confused"]) + (" (as " + ", ".join(f"{n} {k}" for n, k in taken) + ")" if taken else "")


FIT_HEADERS = ["class", "objects", *(f"IoU ≥ {t:g}" for t in FIT_IOUS), "near misses", "their box: across",
               "along"]
FIT_NOTE = (f"Every detection the validator kept, whatever its confidence. IoU ≥ t: the objects a detection of their "
            f"class overlaps by at least t (a ceiling of the recall at that IoU). Near misses: the best such overlap "
            f"is from {BG_IOU:g} up to the match's {FG_IOU:g}; their box: the median size of that detection's box "
            f"against the object's, across the object (its shorter side) and along it. Across well above 1 with "
            f"along near 1 is a thin defect seen and boxed too thick.")


def _share(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else str(n)


def _fit_row(name: str, r: dict[str, Any]) -> list[str]:
    return [name, str(r["objects"]), *(_share(r["reached"][iou_key(t)], r["objects"]) for t in FIT_IOUS),
            str(r["near_misses"]), _ratio(r["across"]), _ratio(r["along"])]


def _fit_table(fit: dict[str, dict]) -> str:
    return _table(FIT_HEADERS, [[_e(c) for c in _fit_row(name, r)] for name, r in fit.items()])


def _miss_table(by_class: dict[str, dict]) -> str:
    return _table(MISS_HEADERS, [[_e(name), _num(r["objects"]), _num(r["found"]), _num(r["mislocalised"]),
                                  _e(_confused(r)), _num(r["unseen"])] for name, r in by_class.items() if r["objects"]])


def _table(headers: list[str] | None, rows: list[list], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers or []))
    body = "".join("<tr>" + "".join(_cell(i, c, left) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f'<div class="scroll"><table>{f"<tr>{head}</tr>" if headers else ""}{body}</table></div>'


# ---------------------------------------------------------------------------------------------- verdict
def _title(r: dict[str, Any]) -> str:
    data = Path(str(r["data"]))  # its folder too: most datasets' YAMLs are called data.yaml
    return (f"{Path(str(r['model'])).name} on {Path(data.parent.name, data.name).as_posix()} / {r['split']}"
            f" — run {r.get('run') or Path(str(r['model'])).parent.parent.name or 'n/a'}")


def _operating_point(k: dict[str, Any]) -> str:
    """The operating point in words, with every class's threshold."""
    values = set(k["thresholds"].values())
    if k["operating_point"].startswith("report.conf") and len(values) == 1:
        return f"confidence ≥ {values.pop():.3f} for every class (report.conf)"
    aside = {c["name"] for c in k["per_class"] if c.get("set_aside")}
    thr = ", ".join(f"{n} set aside" if n in aside else f"{n} ≥ {t:.3f}" for n, t in k["thresholds"].items())
    trusted = "" if k.get("precision_confidence") is None else " among its trusted thresholds"
    return f"per class, the confidence of maximal F1 on this split{trusted}: {thr}"


def _set_aside(k: dict[str, Any]) -> str:
    """`` Set aside: scratch (best F1 ...); ...`` for the classes without a threshold that lets through enough right
    boxes (``inspection.min_precision``), and `` pit fires at ...`` for each class that fires at its best such
    threshold instead of its max-F1 one."""
    rows = [(c["name"], c["set_aside"]) for c in k["per_class"] if c.get("set_aside")]
    moved = [c for c in k["per_class"] if c.get("untrusted_max_f1")]
    text = "" if not rows else (
        " Set aside: " + "; ".join(f"{n} ({_untrusted(k, a)})" for n, a in rows)
        + f"; {'it never fires' if len(rows) == 1 else 'they never fire'} at this operating point.")
    return text + "".join(
        f" {c['name']} fires at confidence {c['threshold']:.3f}, its best trusted threshold (F1 {c['f1']:.3f}; "
        f"{_right(c['tp'], c['tp'] + c['fp'])}), not at its max-F1 one ({_untrusted(k, c['untrusted_max_f1'])})."
        for c in moved)


def _right(tp: int, boxes: int) -> str:
    return f"{tp} of its {boxes} {'box' if boxes == 1 else 'boxes'} {'was' if tp == 1 else 'were'} right"


def _untrusted(k: dict[str, Any], a: dict[str, Any]) -> str:
    """An untrusted max-F1 point in words: where it was, how right its boxes were and what it would reject."""
    return (f"best F1 {a['f1']:.3f} at confidence {a['threshold']:.3f}, where {_how_right(k, a)}, which would "
            f"reject {a['parts_rejected']} of the {k['images']} parts")


def _how_right(k: dict[str, Any], a: dict[str, Any]) -> str:
    """How right an untrusted point's boxes were: with its counts and the bound the floor held (schema 10), or the
    share alone (an older report)."""
    if a.get("tp") is None or a.get("precision_lower") is None or k.get("precision_confidence") is None:
        return f"{_pct(a['precision'])} of its boxes were right"
    return (f"{_right(a['tp'], a['boxes'])} ({_pct(a['precision'])}), too few to show at "
            f"{100 * k['precision_confidence']:g}% confidence that {100 * k['min_precision']:g}% are (only that "
            f"{_pct(a['precision_lower'])} are)")


def _worst_miss(k: dict[str, Any]) -> dict[str, Any] | None:
    rows = [x for x in k.get("missed_by_class_and_size") or [] if x["missed"]]
    return max(rows, key=lambda x: (x["missed"], x["missed"] / x["objects"]), default=None)


def verdict(r: dict[str, Any]) -> str:
    """The page's first paragraph, in words (plain text)."""
    tiles = r.get("tiles")
    scoring = ("" if not tiles else f" Each image was scored through tiles of {tiles['size']} px overlapping by "
               f"{tiles['overlap']} px, their detections merged (a model trained on gradkit tile's copy).")
    return _findings(r) + scoring


def _findings(r: dict[str, Any]) -> str:
    k = r.get("inspection")
    if not k:
        return (f"{r['images']} {r['split']} images evaluated; mAP50 {_md_num(r['headline'].get('mAP50'))}. "
                "This report has no inspection KPIs (written by an older gradkit).")
    found = sum(c["tp"] for c in k["per_class"])
    if found == 0 and k["false_positives"] == 0:
        return (f"The model detects nothing on the {k['images']} {r['split']} images at its operating point: "
                f"all {k['defective_images']} defective parts would ship (escape rate {_pct(k['escape_rate'])})."
                + _set_aside(k) + "".join(f" {name}: {seen}." for name, row in (r.get("box_fit") or {}).items()
                          if (seen := _near_misses(row))))
    text = (f"On {k['images']} {r['split']} images ({k['defective_images']} with defects, "
            f"{k['defect_free_images']} defect-free), at the operating point ({_operating_point(k)}), "
            f"{k['escaped_images']} of {k['defective_images']} defective parts would ship "
            f"(escape rate {_pct(k['escape_rate'])}) and {k['false_rejected_images']} of "
            f"{k['defect_free_images']} good parts would be scrapped (false-reject rate "
            f"{_pct(k['false_reject_rate'])}); {_md_num(k['fp_per_image'], 2)} false positives per image. "
            f"Ranking quality: mAP50 {_md_num(r['headline'].get('mAP50'))}, mAP50-95 "
            f"{_md_num(r['headline'].get('mAP50-95'))}.") + _set_aside(k)
    worst = _worst_miss(k)
    if worst:
        text += (f" What fails most: {worst['class']} objects covering {worst['relative_area']} of the image — "
                 f"{worst['missed']} of {worst['objects']} missed.")
    scored = [c for c in k["per_class"] if c["recall"] is not None and not c.get("set_aside")]
    if scored:
        text += _lowest_recall(scored, (r.get("errors") or {}).get("by_class", {}), r.get("box_fit") or {})
    return text


def _lowest_recall(scored: list[dict[str, Any]], by_class: dict[str, dict], fit: dict[str, dict]) -> str:
    """`` Lowest recall: crack (0.100 at confidence 0.300); of its ...`` — every class tied at the lowest, as
    on hard data several classes often sit at 0."""
    low = min(c["recall"] for c in scored)
    weak = [c for c in scored if c["recall"] == low]

    def why(name: str) -> str:
        seen = _near_misses(fit.get(name))
        return _why_missed(by_class.get(name)) + (f"; {seen}" if seen else "")

    if len(weak) == 1:
        c = weak[0]
        return f" Lowest recall: {c['name']} ({_md_num(low)} at confidence {c['threshold']:.3f}){why(c['name'])}."
    each = [f"{c['name']} (at confidence {c['threshold']:.3f}{why(c['name'])})" for c in weak]
    return f" Lowest recall, {_md_num(low)}, shared by {len(weak)} classes: " + "; ".join(each) + "."


def _why_missed(row: dict[str, Any] | None) -> str:
    """``; of its N objects, 25 unseen, 1 mislocalised, 2 taken for stain`` (empty without misses or the table)."""
    if not row or row["objects"] == row["found"]:
        return ""
    parts = [f"{row[k]} {k}" for k in ("unseen", "mislocalised") if row[k]]
    parts += [f"{n} taken for {c}" for c, n in _taken_for(row)]
    return f"; of its {row['objects']} objects, " + ", ".join(parts)


def _near_misses(fit: dict[str, Any] | None) -> str:
    """``at any confidence 11 of its 37 objects have a box of their class at IoU 0.1-0.5, 3.9x as wide across
    them and 0.7x along`` (empty without near misses): seen, and boxed wrongly."""
    if not fit or not fit["near_misses"] or fit["across"] is None or fit["along"] is None:
        return ""
    one = fit["near_misses"] == 1
    return (f"at any confidence {fit['near_misses']} of its {fit['objects']} objects "
            f"{'has a box of its' if one else 'have a box of their'} class at IoU {BG_IOU:g}–{FG_IOU:g}, "
            f"{_ratio(fit['across'])} as wide across {'it' if one else 'them'} and {_ratio(fit['along'])} along")


def _ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}×"


def warnings(r: dict[str, Any]) -> list[str]:
    """What makes the numbers less trustworthy than they look (plain text)."""
    from gradkit.report.inspection import NEVER_FIRES

    out = []
    k = r.get("inspection") or {}
    if k and sum(c["tp"] + c["fp"] for c in k["per_class"]) == 0:
        out.append("No detection reaches the operating point: the model finds nothing.")
    if r.get("images_skipped"):
        listed = r["images"] + r["images_skipped"]
        out.append(f"{r['images_skipped']} of the {listed} images of this split were skipped (Ultralytics could not "
                   "read them or their labels) and are not in these numbers: gradkit check names each.")
    if r.get("data_class_names"):
        out.append(f"The model's class names ({', '.join(r['class_names'].values())}) are not the data's "
                   f"({', '.join(r['data_class_names'].values())}): the report shows the model's, and scores its class "
                   "k against the data's class k.")
    if r.get("tiled_copy_of"):
        t = r["tiled_copy_of"]
        out.append(f"The data is gradkit tile's copy: each image is a tile, so the parts counted here are tiles; to "
                   f"score whole parts give data={t['source']} gradkit.report.tile_size={t['size']}.")
    if r["images"] < TINY_SPLIT:
        out.append(f"Tiny split: {r['images']} images; each image moves a rate by "
                   f"{100 / max(r['images'], 1):.0f} points or more.")
    if r.get("classes_absent"):
        out.append(f"Classes absent from this split (not evaluated): {', '.join(r['classes_absent'])}.")
    if r.get("classes_left_out"):
        out.append(f"Classes left out by classes= (not trained on, not evaluated): {', '.join(r['classes_left_out'])}; "
                   "Ultralytics drops their labels, so a part whose only defects are of those classes counts as "
                   "defect-free here (a box on it, as a false reject).")
    never = [c["name"] for c in k.get("per_class", [])  # at 1.0 with nothing firing (a score of 1.0 fires there)
             if c["threshold"] >= NEVER_FIRES and not c["tp"] + c["fp"] and c["objects"] and not c.get("set_aside")]
    if never:
        out.append(f"No confidence gives a true positive for: {', '.join(never)} (threshold 1.0: never fires).")
    if k and not k["defect_free_images"]:
        out.append("No defect-free images in this split: the false-reject rate cannot be measured.")
    steps = (r.get("training") or {}).get("optimizer_steps")
    if steps is not None and steps < FEW_STEPS:
        out.append(f"Only {steps} optimizer steps: the model is barely trained.")
    if r["split"] == "train":
        out.append("Evaluated on the training split: the numbers say nothing about unseen parts.")
    return out


def _epochs_trained(trained: int, planned: Any, hours: Any, again: list[int]) -> str | None:
    """"26 of 30" (early stopping, an interrupted run), or "34 in time= 0.13 h": with time= Ultralytics
    sets the number of epochs from the clock, whatever epochs= said; then the epochs whose rows an abandoned try
    wrote (a resume from an earlier checkpoint)."""
    if hours:
        said = f"{trained} in time= {hours} h"
    elif planned is None:
        return None
    else:
        said = f"{trained} of {planned}" if trained and trained != planned else f"{planned}"
    if again:
        said += (f" (rows of epochs {', '.join(map(str, again))} trained before a resume from an earlier checkpoint "
                 "left out: the curves show the training the weights went on from)")
    return said


def _settings(r: dict[str, Any]) -> str:
    t = r.get("training") or {}
    args = t.get("train_args") or {}
    cfg = r.get("plugin_config") or {}
    aug = cfg.get("augment") or {}
    rows = [("model", r["model"]), ("data", r["data"]), ("split", r["split"]), ("run", r.get("run")),
            ("images", f"{r['images']} ({r['images'] - r['defect_free_images']} with defects, "
                       f"{r['defect_free_images']} defect-free)"), ("objects", r["instances"])]
    made = r.get("trained_with")
    if made and not t:  # a val report of weights in their run folder
        rows.append(("model trained in", _trained_in(made)))
    rows.append(("epochs", _epochs_trained(len(t.get("epochs") or []), args.get("epochs"), args.get("time"),
                                           t.get("epochs_left_out") or [])))
    ran = t.get("as_run") or {}
    rows += [(k, _given_and_ran(args.get(k), ran.get(k))) for k in ("imgsz", "batch") if args.get(k) is not None]
    if t.get("resumed"):
        rows.append(("resumed", "; ".join(_resume(r) for r in t["resumed"])))
    rows += _optimizer_rows(args, t.get("optimizer_used"))
    if t.get("optimizer_steps") is not None:
        rows.append(("optimizer steps", t["optimizer_steps"]))
    if cfg:
        rows += [("clip mode", (cfg.get("clip") or {}).get("mode")),
                 ("augmentation preset", _preset_used(aug.get("preset"), t.get("augment_preset"))),
                 ("copy-paste p", (aug.get("copy_paste") or {}).get("p"))]
    rows += [("seed", t.get("seed")), ("versions", ", ".join(f"{k} {v}" for k, v in r["versions"].items()))]
    return _table(None, [[_e(k), _e(v)] for k, v in rows if v is not None], left=2)


def _trained_in(made: dict[str, Any]) -> str:
    """A val report's line on the run folder its weights were trained in (``trained_with``), and what is known of
    how."""
    if made.get("plugin_config"):
        kept = "its arguments and gradkit configuration are kept"
    elif made.get("earlier_gradkit_run"):  # a plain run reused a gradkit run's folder, or so the files say
        kept = f"its arguments are kept; whether gradkit trained it is not known: {made['earlier_gradkit_run']}"
    else:
        kept = "trained without gradkit; its arguments are kept"
    return f"{made['run_dir']} ({kept} here for 'gradkit report' comparisons)"


def _resume(r: dict[str, Any]) -> str:
    """``at epoch 3 from last.pt (patience=20)``: where a run was resumed, and what the resume changed."""
    changed = ", ".join(f"{k}={v}" for k, v in (r.get("changed") or {}).items())
    return f"at epoch {r['epoch']} from {r['checkpoint']}" + (f" ({changed})" if changed else "")


def _given_and_ran(given: Any, ran: Any) -> Any:
    """``-1 (16 ran)`` where the run trained at another value than args.yaml keeps (auto batch, an imgsz list)."""
    return given if ran is None or ran == given else f"{given} ({ran} ran)"


def _preset_used(configured: Any, chosen: dict[str, Any] | None) -> Any:
    """``auto -> none (only 52% of the defects stand out ...)``: what an auto preset trained with, and why."""
    return f"{configured} -> {chosen['used']} ({chosen['reason']})" if chosen else configured


def _optimizer_rows(args: dict[str, Any], used: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The optimizer and lr0 that ran; args.yaml keeps "auto" and the lr0 it ignored."""
    if not used or args.get("optimizer") != "auto":
        return [(k, args.get(k)) for k in ("optimizer", "lr0") if args.get(k) is not None]
    lrs = ", ".join(f"{lr:g}" for lr in used["lrs"])
    return [("optimizer", f"{used['name']} (optimizer=auto)"),
            ("lr0", f"{lrs} (optimizer=auto chose it; lr0={args.get('lr0')} was not used)")]


# ------------------------------------------------------------------------------------------- inspection
#: The per-class table of the inspection section, in the page and in the Markdown summary.
INSPECTION_COLUMNS = ["class", "threshold", "objects", "TP", "FP", "FN", "P", "R", "F1", "parts with it shipped"]


def _shipped(c: dict[str, Any]) -> str:
    """Parts holding the class that no prediction rejected ("–" when none hold it, and in reports written
    before gradkit counted them)."""
    return f"{c['shipped_parts']} of {c['parts']}" if c.get("parts") else "–"


def _threshold(c: dict[str, Any]) -> str:
    """A class's threshold in the tables: "set aside" for a class whose best threshold was set aside."""
    return "set aside" if c.get("set_aside") else _md_num(c["threshold"])


def _inspection(k: dict[str, Any]) -> str:
    cards = [("escape rate", _pct(k["escape_rate"]), f"{k['escaped_images']} of {k['defective_images']} "
              "defective images not rejected"),
             ("false-reject rate", _pct(k["false_reject_rate"]), f"{k['false_rejected_images']} of "
              f"{_images(k['defect_free_images'], 'defect-free')} rejected"),
             ("false positives / image", _md_num(k["fp_per_image"], 2), f"{k['false_positives']} in "
              f"{k['images']} images")]
    parts = [f'<p id="operating-point"><b>Operating point</b>: {_e(_operating_point(k))}. A part (image) is '
             "rejected when any prediction reaches its class's threshold.</p>",
             '<div class="cards">' + "".join(f'<div class="card" id="{_e(name.split()[0])}-rate">{_e(name)}'
                                             f"<b>{_e(v)}</b><small>{_e(sub)}</small></div>"
                                             for name, v, sub in cards) + "</div>"]
    rows = [[_e(c["name"]), _e(_threshold(c)), _num(c["objects"]), _num(c["tp"]), _num(c["fp"]), _num(c["fn"]),
             _num(c["precision"]), _num(c["recall"]), _num(c["f1"]), _e(_shipped(c))] for c in k["per_class"]]
    parts.append(_table(INSPECTION_COLUMNS, rows))
    parts.append(f'<p class="note">At the operating point, IoU ≥ {_num(k["match_iou"], 2)} with an object of '
                 f"the same class, each object found once (greedy in descending score). "
                 f"{k['defective_images_without_true_positive']} defective images have no true positive "
                 "(rejected for the wrong reason, or shipped).</p>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- gallery
#: The labels' font scale and stroke (cv2.FONT_HERSHEY_SIMPLEX).
LABEL_SCALE, LABEL_THICKNESS = 0.42, 1


def label_size(text: str) -> tuple[int, int]:
    """Width and height in pixels of the filled box :func:`draw_label` draws for ``text``."""
    import cv2

    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE, LABEL_THICKNESS)
    return tw + 5, th + base + 4  # a filled cv2.rectangle covers both corners


def draw_label(img, text: str, x: int, y: int, colour_bgr: tuple[int, int, int]) -> None:
    """``text`` on a filled box of ``colour_bgr``, kept inside the image (above the box, else below its top)."""
    import cv2

    font, scale, thick = cv2.FONT_HERSHEY_SIMPLEX, LABEL_SCALE, LABEL_THICKNESS
    (tw, th), base = cv2.getTextSize(text, font, scale, thick)
    h, w = img.shape[:2]
    x = min(max(0, x), max(0, w - tw - 5))  # its last column, x + tw + 4, inside
    top = y - th - base - 3 if y - th - base - 3 >= 0 else min(y + 1, h - th - base - 4)  # its last row inside
    cv2.rectangle(img, (x, top), (x + tw + 4, top + th + base + 3), colour_bgr, -1)
    luminance = 0.299 * colour_bgr[2] + 0.587 * colour_bgr[1] + 0.114 * colour_bgr[0]
    cv2.putText(img, text, (x + 2, top + th + 1), font, scale, (0, 0, 0) if luminance > 140 else (255, 255, 255),
                thick, cv2.LINE_AA)


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    return float(pairwise_iou(np.asarray([a], float), np.asarray([b], float))[0, 0])


def _fps_to_draw(fps: list, tps: list, gts: list) -> list:
    """At most one prediction per object (its TP, else the highest-scoring FP overlapping it, IoU >= 0.1), and of
    the FPs on no object the MAX_DRAWN_FP highest-scoring: a stack of boxes must not hide the defect."""
    taken = {max(range(len(gts)), key=lambda j: _box_iou(p[2:6], gts[j][1:5])) for p in tps} if gts else set()
    drawn, background = [], []
    for p in fps:  # in descending score
        overlaps = [(_box_iou(p[2:6], g[1:5]), j) for j, g in enumerate(gts)]
        iou, j = max(overlaps, default=(0.0, -1))
        if iou < 0.1:
            background.append(p)
        elif j not in taken:
            taken.add(j)
            drawn.append(p)
    return drawn + background[:MAX_DRAWN_FP]


def _gallery_image(img, entry: dict[str, Any], names: dict[str, str]) -> tuple[bytes, int]:
    """The image at >= GALLERY_MIN_PX (nearest-neighbour upscaling), boxes drawn; JPEG bytes, FPs not drawn."""
    import cv2

    h, w = img.shape[:2]
    if max(h, w) < GALLERY_MIN_PX:
        f = math.ceil(GALLERY_MIN_PX / max(h, w))
        img = cv2.resize(img, (w * f, h * f), interpolation=cv2.INTER_NEAREST)
    elif max(h, w) > GALLERY_MAX_PX:
        f = GALLERY_MAX_PX / max(h, w)
        img = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
    h, w = img.shape[:2]
    bgr = {k: (c[2], c[1], c[0]) for k, c in PALETTE.items()}
    preds = [p for p in entry["pred"] if len(p) > 6]
    tps, fps = [p for p in preds if p[6]], [p for p in preds if not p[6]]
    missed = [g for g in entry["gt"] if len(g) > 5 and not g[5]]
    drawn = [("false positive", p) for p in _fps_to_draw(fps, tps, entry["gt"])] + [("true positive", p) for p in tps]
    labels = []
    for kind, (cls, score, x0, y0, x1, y1, _) in drawn:
        p0, p1 = (round(x0 * w), round(y0 * h)), (min(round(x1 * w), w - 1), min(round(y1 * h), h - 1))
        cv2.rectangle(img, p0, p1, bgr[kind], 2)
        labels.append((f"{names.get(str(int(cls)), int(cls))} {score:.2f}", p0, bgr[kind]))
    for cls, x0, y0, x1, y1, _ in missed:
        p0, p1 = (round(x0 * w), round(y0 * h)), (min(round(x1 * w), w - 1), min(round(y1 * h), h - 1))
        cv2.rectangle(img, p0, p1, bgr["missed object"], 2)
        labels.append((f"{names.get(str(int(cls)), int(cls))} missed", p0, bgr["missed object"]))
    for text, (x, y), colour in labels:  # labels last: no box covers a label
        draw_label(img, text, x, y, colour)
    _, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return jpg.tobytes(), len(preds) - len(drawn)


def _caption(entry: dict[str, Any]) -> str:
    n_gt, n_pred = len(entry["gt"]), len(entry["pred"])
    tp = sum(1 for p in entry["pred"] if len(p) > 6 and p[6])
    fn, fp = n_gt - tp, n_pred - tp
    return (f"{n_gt} objects = {tp} found (TP) + {fn} missed (FN); {n_pred} predictions at the operating point = "
            f"{tp} TP + {fp} FP")


def _gallery(report: dict[str, Any], roots: Sequence[Path]) -> str:
    import cv2

    names = report["class_names"]
    figures = []
    for entry in report["errors"]["worst_images"]:
        src = allowed_file(entry.get("copy"), roots)
        img = cv2.imread(str(src)) if src else None
        label = _e(Path(entry["image"]).name)
        if img is None:
            figures.append(f"<figure><figcaption>{label}: {_e(_caption(entry))} (image not embedded: no copy "
                           "inside the report directory)</figcaption></figure>")
            continue
        jpg, hidden = _gallery_image(img, entry, names)
        more = (f"; {hidden} FP not drawn (a lower-scoring box on an object already drawn, or beyond the "
                f"{MAX_DRAWN_FP} highest-scoring background FPs)" if hidden else "")
        kinds = ", ".join(f"{k} {v}" for k, v in entry["errors"].items() if v and k != "missed")
        figures.append(f"<figure>{_img_tag(jpg, entry['image'], 'image/jpeg', 'gallery')}<figcaption><b>{label}</b>: "
                       f"{_e(_caption(entry))}{_e(more)}. FP kinds: {_e(kinds or 'none')}</figcaption></figure>")
    legend = "".join(f'<span><i style="border-color:rgb{c}"></i>{k}</span>' for k, c in PALETTE.items())
    return (f'<p class="legend">{legend}</p><p class="note">Boxes at the operating point; labels name the class '
            "and, for predictions, the score. An object found is shown by its true-positive box.</p>"
            f'<div class="gallery">{"".join(figures)}</div>')


# --------------------------------------------------------------------------------------------- training
def _panel(epochs: list[int], series: dict[str, list], title: str, ylabel: str, ylim=None, log: bool = False) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(3.6, 2.5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for label, values in series.items():
        ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", ms=3, label=label)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if log:
        ax.set_yscale("log")
    if len(series) > 1:
        ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return _img_tag(buf.getvalue(), title)


def _training_panels(t: dict[str, Any]) -> str:
    """One small panel per loss (train and val together), learning rate, mAP and clip rate."""
    curves, epochs = t["curves"], t["epochs"]
    panels = []
    for loss in dict.fromkeys(k.split("/", 1)[1] for k in curves if k.startswith(("train/", "val/"))):
        series = {s: curves[f"{s}/{loss}"] for s in ("train", "val") if f"{s}/{loss}" in curves}
        panels.append(_panel(epochs, series, loss, "loss"))
    lrs = {k.removeprefix("lr/"): v for k, v in curves.items() if k.startswith("lr/")}
    if lrs:
        panels.append(_panel(epochs, lrs, "learning rate", "lr"))
    maps = {k.removeprefix("metrics/"): v for k, v in curves.items() if k.startswith("metrics/mAP")}
    if maps:
        panels.append(_panel(epochs, maps, "mAP (val, per epoch)", "mAP", (0, 1)))
    if "grad/clip_rate" in curves:
        panels.append(_panel(epochs, {"clip rate": curves["grad/clip_rate"]}, "gradient clip rate", "share of steps",
                             (-0.05, 1.05)))
    if "grad/total_norm" in curves:
        panels.append(_panel(epochs, {"pre-clip norm": curves["grad/total_norm"]}, "pre-clip gradient norm",
                             "L2 norm", log=True))
    text = ('<p class="note">The clip rate is the share of an epoch\'s optimizer steps whose total gradient norm '
            "(the pre-clip norm: the L2 norm of all gradients before clipping) was above the clipping limit and was "
            "scaled down to it: 1.0 means every step was rescaled, by the pre-clip norm divided by the limit.</p>"
            if "grad/clip_rate" in curves else "")
    return f'<div class="panels">{"".join(panels)}</div>{text}'


def _taught(t: dict[str, Any]) -> str:
    """Each class's median best assigner target per epoch (``monitor.taught``) and the classes it warned of."""
    curves = {k.removeprefix("taught/"): v for k, v in t["curves"].items() if k.startswith("taught/")}
    if not curves and not t.get("untaught"):
        return ""
    parts = ["<h3>What the assigner taught each class</h3>"]
    if curves:
        parts.append('<div class="panels">' + _panel(t["epochs"], curves, "median best assigner target",
                                                     "best target (0 to 1)", (-0.02, 1.02)) + "</div>")
    parts.append('<p class="note">Per epoch and class, the median over its training boxes of the highest class '
                 "target Ultralytics' assigner gave any of the box's positive anchors: how well the model's boxes at "
                 "the object overlap it (their CIoU; with assign.nwd the larger of CIoU and the Wasserstein "
                 "similarity). A class near 0 while others rise is not being taught: its score is pulled "
                 "to 0 and, unless assign.box_loss_per_object is on, its box loss weighs about 0.</p>")
    for u in t.get("untaught") or []:
        parts.append(f'<p class="warn">Class {_e(u["name"])} was not being taught at epoch {_num(u["epoch"] + 1)}: '
                     f"median best target {_num(u['median_target'], 2)} over {_num(u['boxes'])} boxes, median short "
                     f"side {_num(u.get('median_short_side'), 1)} px at the training size.</p>")
    return "".join(parts)


def _monitor_notes(t: dict[str, Any]) -> str:
    """The diagnoses this run had too few optimizer steps for, and the gradient noise scale."""
    notes = []
    if t.get("inactive_rules"):
        notes.append(f'<p class="warn">{_e(t.get("inactive_rules_message") or "")} Inactive: '
                     + _e(", ".join(f"{k} (needs {v} steps)" for k, v in t["inactive_rules"].items())) + "</p>")
    ns = t.get("noise_scale") or {}
    if ns.get("reading"):
        notes.append(f"<p>Gradient noise scale (McCandlish et al. 2018), averaged over {_num(ns.get('steps'))} "
                     f"optimizer steps of {_num(ns.get('images_per_step'))} images: {_e(ns['reading'])}.</p>")
    return "".join(notes)


def _alerts(t: dict[str, Any]) -> str:
    """Alerts grouped by (kind, layer) with count, first and last step; every alert in a collapsible list."""
    alerts = t.get("alerts") or []
    counts = t.get("alert_counts") or {}
    parts = [f"<p>Gradient alerts: {_e(', '.join(f'{k} {v}' for k, v in counts.items()) or 'none')}</p>"]
    if not alerts:
        return parts[0]
    groups: dict[tuple[str, str], list[dict]] = {}
    for a in alerts:
        groups.setdefault((a["kind"], f"{a.get('layer')} {a.get('module') or ''}".strip()), []).append(a)
    severity = {"nonfinite": 0, "exploding": 1, "vanishing": 2, "dead": 3}
    rows = [[_e(kind), _e(layer), _num(len(g)), _num(min(a["step"] for a in g)), _num(max(a["step"] for a in g))]
            for (kind, layer), g in sorted(groups.items(), key=lambda kv: (severity.get(kv[0][0], 9), -len(kv[1])))]
    parts.append(_table(["kind", "layer", "alerts", "first step", "last step"], rows, left=2))
    full = _table(["step", "kind", "layer", "message"], [
        [_num(a["step"]), _e(a["kind"]), _e(f"{a.get('layer')} {a.get('module') or ''}"), _e(a.get("message", ""))]
        for a in alerts], left=4)
    parts.append(f"<details><summary>All {len(alerts)} alerts, in step order</summary>{full}</details>")
    return "\n".join(parts)


def _gradients(t: dict[str, Any], roots: Sequence[Path]) -> str:
    """The gradient view drawn from the run's CSV files, when the run directory is one the page may read."""
    from gradkit.report.gradients import gradient_view

    run_dir = Path(t["run_dir"]).resolve()
    if not any(run_dir.is_relative_to(r.resolve()) for r in roots):
        return '<p class="note">Gradient view not drawn: the run directory is not the report\'s.</p>'
    try:
        png = gradient_view(run_dir, t.get("alerts") or [])
    except (ValueError, KeyError, TypeError) as e:
        return f'<p class="note">Gradient view not drawn: gradients.csv / gradient_steps.csv unreadable ({_e(e)}).</p>'
    # a wide figure: on a phone it scrolls inside its box instead of shrinking to unreadable text
    return (f'<div class="scroll">{_img_tag(png, "gradient norms per layer and step", cls="wideplot")}</div>'
            if png else "")


# ------------------------------------------------------------------------------------------------- pages
def _evaluation_body(r: dict[str, Any], roots: Sequence[Path]) -> str:
    h = r["headline"]
    k = r.get("inspection")
    parts = [f"<h1>{_e(_title(r))}</h1>", f'<p class="verdict" id="verdict">{_e(verdict(r))}</p>']
    warns = warnings(r)
    if warns:
        parts.append('<div class="warn" id="warnings"><b>Warnings</b><ul>' + "".join(f"<li>{_e(w)}</li>" for w in warns)
                     + "</ul></div>")
    if k:
        parts += ["<h2>Inspection at the operating point</h2>", _inspection(k)]
    spread = r.get("intervals")
    parts += ["<h2>Run settings</h2>", _settings(r), "<h2>Ranking quality (all confidences)</h2>",
              '<div class="cards">' + "".join(f'<div class="card">{_e(x)}<b>{_num(h.get(x))}</b>'
                                              f"{_card_spread(spread, x)}</div>" for x in ("mAP50", "mAP50-95"))
              + "</div>"]
    rows = [[_e(c["name"]), _num(c["instances"]), _num(c["images"]), _num(c["AP50"]),
             *([_e(_class_interval(c))] if spread else []), _num(c["AP50-95"]),
             _num(c["precision"]), _num(c["recall"])] for c in r["per_class"]]
    parts.append(_table(["class", "instances", "images", "AP50", *([INTERVAL_HEADER] if spread else []), "AP50-95",
                         "P (Ultralytics)", "R (Ultralytics)"], rows))
    if spread:
        parts.append(f'<p class="note">{_e(interval_note(spread))}</p>')
    parts.append(f'<p class="note">AP sweeps every confidence. Ultralytics\' P and R (headline P '
                 f"{_num(h.get('precision'))}, R {_num(h.get('recall'))}) are read at the one confidence that "
                 "maximises its mean F1 over classes, not at the operating point above.</p>")
    if r["classes_absent"]:
        parts.append(f'<p class="note">Absent from this split (n/a, not the mean that Ultralytics\' '
                     f'<code>maps</code> would fill in): {_e(", ".join(r["classes_absent"]))}</p>')
    coco = r["coco"]["metrics"]
    if coco:
        parts.append("<h2>COCO metrics (faster-coco-eval, all confidences)</h2>")
        parts.append(_table(["metric", "COCO", "Ultralytics"], [
            ["AP (50-95)", _num(coco.get("AP")), _num(h.get("mAP50-95"))],
            ["AP50", _num(coco.get("AP50")), _num(h.get("mAP50"))], ["AP75", _num(coco.get("AP75")), ""],
            ["AR@100", _num(coco.get("AR100")), ""],
            ["APs / APm / APl", f'{_num(coco.get("APs"))} / {_num(coco.get("APm"))} / {_num(coco.get("APl"))}', ""]]))
        parts.append(f'<p class="note">{_e(r["coco"]["note"])} APs/m/l use COCO\'s absolute areas (32² and 96² '
                     "pixels) of the original images; the relative buckets below are the defect-aware "
                     "alternative.</p>")
    names = r["class_names"]
    sb = r["size_buckets"]
    if sb.get("by_relative_area"):
        parts.append("<h2>Defect-aware size buckets (all confidences)</h2><p>By box area relative to the image "
                     "(computed as COCO computes them, so a class's AP50 here can differ a little from "
                     "Ultralytics' in the per-class table; recall@0.5: share of objects found by any detection with "
                     "confidence ≥ "
                     f"{VALIDATION_CONF:g} — not the operating point; the verdict's misses are at the operating "
                     "point):</p>")
        parts.append(_bucket_table(sb["by_relative_area"], names))
        parts.append("<p>By elongation (long side / short side; &gt; 5 is scratch- or weld-like), against all "
                     "objects:</p>")
        reference = {k: v for k, v in sb["by_relative_area"].items() if k == ALL_OBJECTS}
        parts.append(_bucket_table({**reference, **(sb.get("by_elongation") or {})}, names))
    err = r["errors"]
    op = _operating_point(k) if k else f"confidence ≥ {_md_num(err.get('conf_threshold'), 2)}"
    parts.append("<h2>Error analysis (TIDE-style) at the operating point</h2>")
    parts.append(f'<p class="note">{_e(op)}</p>')
    parts.append(_table(["kind", "count"], [[_e(x), _num(v)] for x, v in err["counts"].items()]))
    parts.append('<p class="note">classification: right box, wrong class; localization: right class, '
                 "0.1 &le; IoU &lt; 0.5; both: wrong class and poor box; duplicate: a second detection of a "
                 "found object; background: IoU &lt; 0.1 with every object (separately on defect-free "
                 "images); missed: objects without a true-positive detection.</p>")
    if err.get("by_class"):
        parts.append("<h3>Why objects were missed, per class</h3>" + _miss_table(err["by_class"]))
        parts.append(f'<p class="note">{_e(MISS_NOTE)}</p>')
    if r.get("box_fit"):
        parts.append("<h3>How close the boxes come, per class (any confidence)</h3>" + _fit_table(r["box_fit"]))
        parts.append(f'<p class="note">{_e(FIT_NOTE)}</p>')
    parts.append("<h2>Worst images (at the operating point)</h2>" + _gallery(r, roots))
    if r.get("confusion_matrix"):
        cm = r["confusion_matrix"]
        labels = [*names.values(), "background"]
        rows = [[_e(labels[i]) if i < len(labels) else "", *[_num(int(v)) for v in row]] for i, row in enumerate(cm)]
        parts.append("<h3>Confusion matrix (rows: predicted, columns: true)</h3><p class=\"note\">Ultralytics' "
                     "matrix at its own thresholds (confidence 0.25, IoU 0.45), not the operating point; its "
                     "background column counts detections matching no object.</p>")
        parts.append(_table(["predicted \\ true", *labels], rows))
    plots = {k: _beside_report(v, roots) for k, v in (r.get("plots") or {}).items()}
    if plots:
        parts.append('<h3>Ultralytics curves (every confidence)</h3><div class="panels wide">' + "".join(
            _file_img(plots.get(x), f"{x} curve", roots) for x in ("PR", "F1")) + "</div>")
    t = r.get("training")
    if t:
        parts += ["<h2>Training</h2>", _training_panels(t), _taught(t), "<h3>Gradients</h3>", _monitor_notes(t),
                  _alerts(t), _gradients(t, roots)]
    if r.get("plugin_config"):
        parts.append("<details><summary>gradkit configuration</summary><pre>"
                     + _e(json.dumps(r["plugin_config"], indent=2)) + "</pre></details>")
    return "\n".join(parts)


def _bucket_table(buckets: dict[str, Any], names: dict[str, str]) -> str:
    headers = ["bucket", "objects", "AP50-95", "AP50", "recall@0.5", *[f"AP50 {n}" for n in names.values()]]
    rows = []
    for b, v in buckets.items():
        per = [_num(v["per_class"].get(str(c), {}).get("AP50")) for c in names]
        rows.append([_e(b), _num(v["gt"]), _num(v["AP"]), _num(v["AP50"]), _num(v["recall"]), *per])
    return _table(headers, rows)


def _winner_cells(row: dict[str, Any], labels: list[str], fmt) -> list:
    best = row["best"]
    winners = set(best.removeprefix("tie: ").split(", ")) if best != "n/a" else set()
    return [(fmt(v), "win") if lab in winners and len(labels) > 1 else fmt(v)
            for v, lab in zip(row["values"], labels, strict=True)]


def _delta_cells(row: dict[str, Any], pct: bool = False) -> list[str]:
    higher = row.get("higher_is_better", True)
    out = []
    for d in (row.get("delta_vs_first") or [])[1:]:
        if d is None:
            out.append(_num(None))
            continue
        cls = "" if d == 0 else ("good" if (d > 0) == higher else "bad")
        out.append(f'<span class="{cls}">{100 * d:+.1f} pt</span>' if pct else f'<span class="{cls}">{d:+.3f}</span>')
    return out


def _metric_table(rows: dict[str, dict], labels: list[str], pct: bool = False) -> str:
    """``pct``: rates (keys ending in ``_rate``) as percentages, deltas in points."""
    body = []
    for m, row in rows.items():
        as_pct = pct and m.endswith("_rate")
        body.append([_e(m), *_winner_cells(row, labels, _pct if as_pct else _num), *_delta_cells(row, as_pct),
                     _e(row["best"])])
    return _table(["metric", *labels, *[f"Δ {x} vs {labels[0]}" for x in labels[1:]], "best"], body)


def _overlaid_curves(r: dict[str, Any]) -> str:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    from gradkit.report.compare import CURVES

    panels = []
    for c in CURVES:
        series = {lab: v for lab, v in r["curves"].items() if v.get(c)}
        if not series:
            continue
        fig = Figure(figsize=(3.6, 2.5), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for lab, v in series.items():
            ax.plot(v["epochs"], [np.nan if x is None else x for x in v[c]], marker="o", ms=3, label=lab)
        ax.set_title(c, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("mAP" if "mAP" in c else "loss")
        ax.legend(fontsize=7)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        panels.append(_img_tag(buf.getvalue(), c))
    return f'<h2>Training curves</h2><div class="panels">{"".join(panels)}</div>' if panels else ""


def _comparison_body(r: dict[str, Any]) -> str:
    runs = r["runs"]
    labels = [x["label"] for x in runs]
    parts = [f"<h1>Run comparison: {_e(' vs '.join(labels))}</h1>"]
    insp = r.get("inspection") or {}
    summary = [f"{len(runs)} runs. Best mAP50-95: {r['headline']['mAP50-95']['best']}."]
    if insp.get("escape_rate"):
        summary.append(f"Lowest escape rate: {insp['escape_rate']['best']}; lowest false-reject rate: "
                       f"{insp['false_reject_rate']['best']} (each run at its own operating point).")
    parts.append(f'<p class="verdict" id="verdict">{_e(" ".join(summary))}</p>')
    if r.get("warnings"):
        parts.append('<div class="warn" id="warnings"><b>Warnings</b><ul>'
                     + "".join(f"<li>{_e(w)}</li>" for w in r["warnings"]) + "</ul></div>")
    parts.append(_table(["run", "model", "data", "split", "operating thresholds"], [
        [_e(x["label"]), _e(x["model"]), _e(x["data"]), _e(x["split"]),
         _e(", ".join(f"{n} set aside" if n in (x.get("set_aside") or ()) else f"{n} {t:.3f}"
                      for n, t in (x.get("thresholds") or {}).items()) or "n/a")]
        for x in runs], left=5))
    diff = r.get("config_diff") or []
    parts.append("<h2>What differs</h2>" + (_table(["setting", *labels], [
        [_e(d["key"]), *[_e(json.dumps(v, default=str)) for v in d["values"]]] for d in diff], left=len(labels) + 1)
        if diff else f"<p>{_e(_no_difference(r))}</p>"))
    if r.get("settings_not_recorded"):
        parts.append(f'<p class="note">{_e(_not_recorded(r))}</p>')
    if insp:
        parts += ['<h2>Inspection at each run\'s operating point</h2><p class="note" id="operating-point">'
                  "Escape rate: defective images with no prediction at the threshold; false-reject rate: "
                  "defect-free images with one; lower is better.</p>", _metric_table(insp, labels, pct=True)]
    parts += ["<h2>Headline (Ultralytics)</h2>", _metric_table(r["headline"], labels)]
    for p in r.get("paired") or []:
        parts.append(f"<h2>{_e(p['label'])} against {_e(p['against'])}: told apart by these images?</h2>")
        if p.get("why"):
            parts.append(f'<p class="note">{_e(_unpaired(p))}</p>')
            continue
        parts += [f'<p class="note">{_e(PAIRED_NOTE)}</p>',
                  _table(["score", "difference", f"{LEVEL} paired interval", "told apart"],
                         [[_e(x["score"]), f"{x['delta']:+.3f}", _e(_interval(x["interval"])),
                           "yes" if x["told_apart"] else "no"] for x in p["rows"]])]
        if p.get("not_compared"):
            parts.append(f'<p class="note">{_e(_not_compared(p))}</p>')
    if r.get("coco"):
        parts += ["<h2>COCO (faster-coco-eval)</h2>", _metric_table(r["coco"], labels)]
    if r.get("gradients"):
        parts += ["<h2>Gradients (lower is better)</h2>", _metric_table(r["gradients"], labels)]
    parts += ["<h2>Per class AP50-95</h2>", _metric_table(r["per_class"], labels)]
    if r.get("curves"):
        parts.append(_overlaid_curves(r))
    return "\n".join(parts)


def render_html(report: dict[str, Any], roots: Sequence[Path] = ()) -> str:
    """One self-contained page: inline CSS, images as data URIs, no scripts, no external fetch. Only image
    files inside ``roots`` (the report's directory) are embedded."""
    roots = [Path(x) for x in roots]
    if report.get("kind") == "comparison":
        body = _comparison_body(report)
        title = "gradkit comparison: " + " vs ".join(x["label"] for x in report["runs"])
    else:
        body, title = _evaluation_body(report, roots), "gradkit report: " + _title(report)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _md_rows(rows: dict[str, dict], labels: list[str], pct: bool = False) -> list[str]:
    lines = ["| metric | " + " | ".join(map(_md_text, labels)) + " | "
             + " | ".join(f"Δ {_md_text(x)}" for x in labels[1:]) + " | best |", "|---" * (2 * len(labels) + 1) + "|"]
    for m, row in rows.items():
        as_pct = pct and m.endswith("_rate")
        fmt = _pct if as_pct else _md_num
        deltas = [("n/a" if d is None else f"{100 * d:+.1f} pt" if as_pct else f"{d:+.3f}")
                  for d in (row.get("delta_vs_first") or [None] * len(labels))[1:]]
        lines.append(f"| {_md_text(m)} | " + " | ".join(fmt(v) for v in row["values"]) + " | " + " | ".join(deltas)
                     + f" | {_md_text(row['best'])} |")
    return lines


def _no_difference(r: dict[str, Any]) -> str:
    """What an empty difference list says: of every setting, or only of data and split where a run's training
    settings were not recorded (a ``gradkit val`` report: its model may be trained otherwise)."""
    if r.get("settings_not_recorded"):
        return "No difference in the settings recorded for every run (data, split)."
    return "No setting differs (plugin configuration, yolo arguments, validation arguments, data, split)."


def _not_recorded(r: dict[str, Any]) -> str:
    return (f"How the models of {', '.join(r['settings_not_recorded'])} were trained is not recorded (gradkit val "
            "reports of weights outside their run folder): only data and split are compared for them; compare the "
            "training runs' own reports for the rest.")


def _comparison_markdown(report: dict[str, Any]) -> str:
    labels = [x["label"] for x in report["runs"]]
    lines = ["# Run comparison", "", "| run | data | split |", "|---|---|---|"]
    lines += [f"| {_md_text(x['label'])} | {_md_text(x['data'])} | {_md_text(x['split'])} |" for x in report["runs"]]
    lines += [""] + [f"**Warning**: {_md_text(w)}" for w in report.get("warnings") or []]
    lines += ["", "## What differs", ""]
    if report.get("config_diff"):
        lines += ["| setting | " + " | ".join(map(_md_text, labels)) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| {_md_text(d['key'])} | " + " | ".join(_md_text(json.dumps(v, default=str)) for v in d["values"])
                  + " |" for d in report["config_diff"]]
    else:
        lines.append(_md_text(_no_difference(report)))
    if report.get("settings_not_recorded"):
        lines += ["", _md_text(_not_recorded(report))]
    for p in report.get("paired") or []:
        lines += ["", f"## {_md_text(p['label'])} against {_md_text(p['against'])}: told apart by these images?", ""]
        if p.get("why"):
            lines.append(_md_text(_unpaired(p)))
            continue
        lines += [PAIRED_NOTE, "", f"| score | difference | {LEVEL} paired interval | told apart |",
                  "|---|---|---|---|"]
        lines += [f"| {_md_text(x['score'])} | {x['delta']:+.3f} | {_interval(x['interval'])} | "
                  f"{'yes' if x['told_apart'] else 'no'} |" for x in p["rows"]]
        if p.get("not_compared"):
            lines += ["", _md_text(_not_compared(p))]
    for title, key, pct in (("Inspection", "inspection", True), ("Headline", "headline", False),
                            ("COCO", "coco", False), ("Gradients", "gradients", False),
                            ("Per class AP50-95", "per_class", False)):
        if report.get(key):
            lines += ["", f"## {title}", "", *_md_rows(report[key], labels, pct)]
    return "\n".join(lines) + "\n"


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown summary for pull requests and wikis."""
    if report.get("kind") == "comparison":
        return _comparison_markdown(report)
    h = report["headline"]
    lines = [f"# {_md_text(_title(report))}", "", _md_text(verdict(report)), ""]
    if report.get("trained_with") and not report.get("training"):
        lines += [f"Model trained in {_md_text(_trained_in(report['trained_with']))}.", ""]
    lines += [f"- **Warning**: {_md_text(w)}" for w in warnings(report)]
    k = report.get("inspection")
    if k:
        lines += ["", f"Operating point: {_md_text(_operating_point(k))}", "",
                  "| " + " | ".join(INSPECTION_COLUMNS) + " |", "|---" * len(INSPECTION_COLUMNS) + "|"]
        lines += [f"| {_md_text(c['name'])} | {_threshold(c)} | {c['objects']} | {c['tp']} | {c['fp']} | "
                  f"{c['fn']} | {_md_num(c['precision'])} | {_md_num(c['recall'])} | {_md_num(c['f1'])} | "
                  f"{_shipped(c)} |" for c in k["per_class"]]
    spread = report.get("intervals")
    lines += ["", f"**mAP50 {_md_num(h.get('mAP50'))}**{_md_spread(spread, 'mAP50')}, mAP50-95 "
              f"{_md_num(h.get('mAP50-95'))}{_md_spread(spread, 'mAP50-95')} (all confidences); "
              f"Ultralytics' P {_md_num(h.get('precision'))}, R {_md_num(h.get('recall'))} at its max-mean-F1 "
              f"confidence — {report['images']} images, {report['instances']} instances, "
              f"{_images(report['defect_free_images'], 'defect-free')}.", "",
              "| class | instances | images | P | R | AP50 |" + (f" {INTERVAL_HEADER} |" if spread else "")
              + " AP50-95 |", "|---|---|---|---|---|---|" + ("---|" if spread else "") + "---|"]
    for c in report["per_class"]:
        within = f" {_md_text(_class_interval(c))} |" if spread else ""
        lines.append(f"| {_md_text(c['name'])} | {_md_num(c['instances'])} | {_md_num(c['images'])} | "
                     f"{_md_num(c['precision'])} | {_md_num(c['recall'])} | {_md_num(c['AP50'])} |{within} "
                     f"{_md_num(c['AP50-95'])} |")
    if spread:
        lines += ["", interval_note(spread)]
    coco = report["coco"]["metrics"]
    if coco:
        lines += ["", "COCO (faster-coco-eval): " + ", ".join(f"{_md_text(x)} {_md_num(v)}" for x, v in coco.items())]
    area = report["size_buckets"].get("by_relative_area") or {}
    if area:
        lines += ["", f"| relative area | objects | AP50-95 | AP50 | recall@0.5 (conf ≥ {VALIDATION_CONF:g}) |",
                  "|---|---|---|---|---|"]
        lines += [f"| {_md_text(b)} | {_md_num(v['gt'])} | {_md_num(v['AP'])} | {_md_num(v['AP50'])} | "
                  f"{_md_num(v['recall'])} |" for b, v in area.items()]
    lines += ["", "Errors at the operating point: " + ", ".join(f"{_md_text(x)} {_md_num(v)}"
                                                                 for x, v in report["errors"]["counts"].items())]
    by_class = report["errors"].get("by_class") or {}
    if by_class:
        lines += ["", "| " + " | ".join(MISS_HEADERS) + " |", "|" + "---|" * len(MISS_HEADERS)]
        lines += [f"| {_md_text(n)} | {_md_num(r['objects'])} | {_md_num(r['found'])} | {_md_num(r['mislocalised'])} "
                  f"| {_md_text(_confused(r))} | {_md_num(r['unseen'])} |" for n, r in by_class.items() if r["objects"]]
        lines += ["", _md_text(MISS_NOTE)]
    fit = report.get("box_fit") or {}
    if fit:
        lines += ["", "| " + " | ".join(FIT_HEADERS) + " |", "|" + "---|" * len(FIT_HEADERS)]
        lines += ["| " + " | ".join(_md_text(c) for c in _fit_row(n, r)) + " |" for n, r in fit.items()]
        lines += ["", _md_text(FIT_NOTE)]
    t = report.get("training")
    if t:
        lines += ["", "Gradient alerts: " + ", ".join(f"{_md_text(x)} {_md_num(v)}"
                                                      for x, v in t["alert_counts"].items())]
    return "\n".join(lines) + "\n"
