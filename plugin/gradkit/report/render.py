"""Render a report dict as one self-contained HTML file (images inlined) and as Markdown.

Every user-controlled string (class names, paths, config values, alert messages) goes through
``html.escape``; nothing is fetched from the network when the page opens.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["render_html", "render_markdown"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.na{color:#999}.good{color:#080}.bad{color:#b00}
.cards{display:flex;gap:1em;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1.2em}
.card b{display:block;font-size:1.6em}.gallery{display:flex;flex-wrap:wrap;gap:.8em}
.gallery figure{margin:0;border:1px solid #ddd;padding:4px}figcaption{font-size:.8em;max-width:320px}
img.plot{max-width:100%}.note{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.6em;overflow:auto}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return '<span class="na">n/a</span>'
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return _e(x)


def _md_num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _md_text(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _img_tag(png: bytes, alt: str, mime: str = "image/png") -> str:
    return f'<img class="plot" alt="{_e(alt)}" src="data:{mime};base64,{base64.b64encode(png).decode()}">'


def _file_img(path: str | None, alt: str) -> str:
    if not path or not Path(path).exists():
        return ""
    return _img_tag(Path(path).read_bytes(), alt)


def _table(headers: list[str] | None, rows: list[list[str]], left: int = 1) -> str:
    head = "".join(f'<th class="{"l" if i < left else ""}">{_e(h)}</th>' for i, h in enumerate(headers or []))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table>{f'<tr>{head}</tr>' if headers else ''}{body}</table>"


def _training_plot(training: dict[str, Any]) -> str:
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend switch

    curves, epochs = training["curves"], training["epochs"]
    losses = [k for k in curves if k.startswith(("train/", "val/"))]
    maps = [k for k in curves if k.startswith("metrics/mAP")]
    fig = Figure(figsize=(14, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for k in losses:
        axes[0].plot(epochs, [np.nan if v is None else v for v in curves[k]], label=k)
    axes[0].set_title("losses")
    for k in maps:
        axes[1].plot(epochs, [np.nan if v is None else v for v in curves[k]], label=k)
    axes[1].set_title("mAP (val, per epoch)")
    if "grad/clip_rate" in curves:
        axes[2].plot(epochs, [np.nan if v is None else v for v in curves["grad/clip_rate"]], label="clip rate")
        axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_title("gradient clip rate per epoch")
    for ax in axes:
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return _img_tag(buf.getvalue(), "training curves")


def _gallery(report: dict[str, Any]) -> str:
    import cv2

    names = report["class_names"]
    figures = []
    for entry in report["errors"]["worst_images"]:
        img = cv2.imread(entry["image"])
        if img is None:
            figures.append(f"<figure><figcaption>{_e(entry['image'])} (not readable now)</figcaption></figure>")
            continue
        h, w = img.shape[:2]
        scale = min(1.0, 320 / max(h, w))
        img = cv2.resize(img, (round(w * scale), round(h * scale)))
        h, w = img.shape[:2]
        for _cls, x0, y0, x1, y1 in entry["gt"]:
            cv2.rectangle(img, (round(x0 * w), round(y0 * h)), (round(x1 * w), round(y1 * h)), (0, 200, 0), 1)
        for cls, score, x0, y0, x1, y1 in entry["pred"]:
            cv2.rectangle(img, (round(x0 * w), round(y0 * h)), (round(x1 * w), round(y1 * h)), (0, 0, 230), 1)
            cv2.putText(img, f"{cls}:{score:.2f}", (round(x0 * w), max(8, round(y0 * h) - 2)),
                        cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 230), 1)
        _, jpg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        kinds = ", ".join(f"{k} {v}" for k, v in entry["errors"].items() if v)
        legend = ", ".join(f"{k}={v}" for k, v in names.items())
        figures.append(f"<figure>{_img_tag(jpg.tobytes(), entry['image'], 'image/jpeg')}<figcaption>"
                       f"{_e(Path(entry['image']).name)}: {entry['missed']} missed, {entry['false_positives']} "
                       f"false positives ({_e(kinds or 'none')}); classes {_e(legend)}</figcaption></figure>")
    return ('<p class="note">green: ground truth, red: predictions at or above the confidence threshold</p>'
            f'<div class="gallery">{"".join(figures)}</div>')


def _bucket_table(buckets: dict[str, Any], names: dict[str, str]) -> str:
    headers = ["bucket", "objects", "AP50-95", "AP50", "recall@0.5", *[f"AP50 {n}" for n in names.values()]]
    rows = []
    for b, v in buckets.items():
        per = [_num(v["per_class"].get(str(c), {}).get("AP50")) for c in names]
        rows.append([_e(b), _num(v["gt"]), _num(v["AP"]), _num(v["AP50"]), _num(v["recall"]), *per])
    return _table(headers, rows)


def _evaluation_body(r: dict[str, Any]) -> str:
    h = r["headline"]
    parts = [f"<h1>Detection report: {_e(Path(str(r['model'])).name)} on {_e(r['split'])}</h1>",
             '<div class="cards">' + "".join(f'<div class="card">{_e(k)}<b>{_num(h.get(k))}</b></div>'
                                             for k in ("mAP50", "mAP50-95", "precision", "recall")) + "</div>",
             _table(None, [[_e(k), _e(v)] for k, v in (
                 ("model", r["model"]), ("data", r["data"]), ("split", r["split"]), ("images", r["images"]),
                 ("defect-free images", r["defect_free_images"]), ("instances", r["instances"]),
                 ("seed", (r.get("training") or {}).get("seed")),
                 ("versions", ", ".join(f"{k} {v}" for k, v in r["versions"].items())))], left=2)]
    parts.append("<h2>Per class</h2>")
    rows = [[_e(c["name"]), _num(c["instances"]), _num(c["images"]), _num(c["precision"]), _num(c["recall"]),
             _num(c["AP50"]), _num(c["AP50-95"])] for c in r["per_class"]]
    parts.append(_table(["class", "instances", "images", "P", "R", "AP50", "AP50-95"], rows))
    if r["classes_absent"]:
        parts.append(f'<p class="note">Absent from this split (n/a, not the mean that Ultralytics\' '
                     f'<code>maps</code> would fill in): {_e(", ".join(r["classes_absent"]))}</p>')
    coco = r["coco"]["metrics"]
    if coco:
        parts.append("<h2>COCO metrics (faster-coco-eval)</h2>")
        parts.append(_table(["metric", "COCO", "Ultralytics"], [
            ["AP (50-95)", _num(coco.get("AP")), _num(h.get("mAP50-95"))], ["AP50", _num(coco.get("AP50")),
                                                                          _num(h.get("mAP50"))],
            ["AP75", _num(coco.get("AP75")), ""], ["AR@100", _num(coco.get("AR100")), ""],
            ["APs / APm / APl", f'{_num(coco.get("APs"))} / {_num(coco.get("APm"))} / {_num(coco.get("APl"))}', ""]]))
        parts.append(f'<p class="note">{_e(r["coco"]["note"])} APs/m/l use COCO\'s '
                     "absolute areas (32² and 96² pixels) of the original images; the relative buckets below are "
                     "the defect-aware alternative.</p>")
    names = r["class_names"]
    sb = r["size_buckets"]
    if sb.get("by_relative_area"):
        parts.append("<h2>Defect-aware size buckets</h2><p>By box area relative to the image:</p>")
        parts.append(_bucket_table(sb["by_relative_area"], names))
        parts.append("<p>By elongation (long side / short side; &gt; 5 is scratch- or weld-like):</p>")
        parts.append(_bucket_table(sb["by_elongation"], names))
    err = r["errors"]
    parts.append(f"<h2>Error analysis (TIDE-style, confidence &ge; {_num(err['conf_threshold'], 2)})</h2>")
    parts.append(_table(["kind", "count"], [[_e(k), _num(v)] for k, v in err["counts"].items()]))
    parts.append('<p class="note">classification: right box, wrong class; localization: right class, '
                 "0.1 &le; IoU &lt; 0.5; both: wrong class and poor box; duplicate: a second detection of a "
                 "found object; background: IoU &lt; 0.1 with every object (separately on defect-free "
                 "images); missed: objects without a true-positive detection.</p>")
    if r.get("confusion_matrix"):
        cm = r["confusion_matrix"]
        labels = [*names.values(), "background"]
        rows = [[_e(labels[i]), *[_num(int(v)) for v in row]] for i, row in enumerate(cm)]
        parts.append("<h3>Confusion matrix (rows: predicted, columns: true)</h3><p class=\"note\">Ultralytics' "
                     "matrix, counted at its own confidence and IoU thresholds: the background column counts "
                     "low-confidence detections too.</p>")
        parts.append(_table(["predicted \\ true", *labels], rows))
    plots = r.get("plots") or {}
    if plots:
        parts.append("<h3>Curves</h3>" + "".join(_file_img(plots.get(k), k) for k in ("PR", "F1")))
    parts.append("<h2>Worst images</h2>" + _gallery(r))
    t = r.get("training")
    if t:
        parts.append("<h2>Training</h2>" + _training_plot(t))
        counts = t["alert_counts"]
        parts.append(f"<p>Gradient alerts: {_e(', '.join(f'{k} {v}' for k, v in counts.items()))}</p>")
        if t["alerts"]:
            parts.append(_table(["step", "kind", "layer", "message"], [
                [_num(a["step"]), _e(a["kind"]), _e(f"{a['layer']} {a['module']}"), _e(a["message"])]
                for a in t["alerts"][:50]], left=4))
        parts.append(_file_img(t.get("heatmap"), "gradient heatmap"))
    if r.get("plugin_config"):
        parts.append("<h2>gradkit configuration</h2><pre>" + _e(json.dumps(r["plugin_config"], indent=2)) + "</pre>")
    return "\n".join(parts)


def _comparison_body(r: dict[str, Any]) -> str:
    runs = r["runs"]
    parts = ["<h1>Run comparison</h1>",
             _table(["run", "model", "data", "split"], [[_e(x["label"]), _e(x["model"]), _e(x["data"]),
                                                         _e(x["split"])] for x in runs], left=4),
             "<h2>Headline</h2>"]
    rows = []
    for metric, row in r["headline"].items():
        cells = [_num(v) for v in row["values"]]
        deltas = [_num(d) if d is None else f'<span class="{"good" if d > 0 else "bad" if d < 0 else ""}">'
                  f"{d:+.3f}</span>" for d in row["delta_vs_first"]]
        rows.append([_e(metric), *cells, *deltas[1:], _e(row["best"])])
    labels = [x["label"] for x in runs]
    parts.append(_table(["metric", *labels, *[f"Δ {x}" for x in labels[1:]], "best"], rows))
    parts.append("<h2>Per class AP50-95</h2>")
    rows = []
    for name, row in r["per_class"].items():
        rows.append([_e(name), *[_num(v) for v in row["values"]], _e(row["best"])])
    parts.append(_table(["class", *labels, "best"], rows))
    return "\n".join(parts)


def render_html(report: dict[str, Any]) -> str:
    """One self-contained page: inline CSS, images as data URIs, no scripts, no external fetch."""
    body = _comparison_body(report) if report.get("kind") == "comparison" else _evaluation_body(report)
    title = "gradkit comparison" if report.get("kind") == "comparison" else "gradkit report"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def render_markdown(report: dict[str, Any]) -> str:
    """A Markdown summary for pull requests and wikis."""
    lines: list[str] = []
    if report.get("kind") == "comparison":
        labels = [x["label"] for x in report["runs"]]
        lines += ["# Run comparison", "", "| metric | " + " | ".join(map(_md_text, labels)) + " | best |",
                  "|---" * (len(labels) + 2) + "|"]
        for metric, row in report["headline"].items():
            lines.append(f"| {metric} | " + " | ".join(_md_num(v) for v in row["values"])
                         + f" | {_md_text(row['best'])} |")
        lines += ["", "| class AP50-95 | " + " | ".join(map(_md_text, labels)) + " | best |",
                  "|---" * (len(labels) + 2) + "|"]
        for name, row in report["per_class"].items():
            lines.append(f"| {_md_text(name)} | " + " | ".join(_md_num(v) for v in row["values"])
                         + f" | {_md_text(row['best'])} |")
        return "\n".join(lines) + "\n"
    h = report["headline"]
    lines += [f"# Detection report: {_md_text(Path(str(report['model'])).name)} on {_md_text(report['split'])}", "",
              f"**mAP50 {_md_num(h['mAP50'])}**, mAP50-95 {_md_num(h['mAP50-95'])}, precision "
              f"{_md_num(h['precision'])}, recall {_md_num(h['recall'])} — {report['images']} images, "
              f"{report['instances']} instances, {report['defect_free_images']} defect-free images.", "",
              "| class | instances | images | P | R | AP50 | AP50-95 |", "|---|---|---|---|---|---|---|"]
    for c in report["per_class"]:
        lines.append(f"| {_md_text(c['name'])} | {c['instances']} | {c['images']} | {_md_num(c['precision'])} | "
                     f"{_md_num(c['recall'])} | {_md_num(c['AP50'])} | {_md_num(c['AP50-95'])} |")
    coco = report["coco"]["metrics"]
    if coco:
        lines += ["", "COCO (faster-coco-eval): " + ", ".join(f"{k} {_md_num(v)}" for k, v in coco.items())]
    area = report["size_buckets"].get("by_relative_area") or {}
    if area:
        lines += ["", "| relative area | objects | AP50-95 | AP50 | recall@0.5 |", "|---|---|---|---|---|"]
        lines += [f"| {b} | {v['gt']} | {_md_num(v['AP'])} | {_md_num(v['AP50'])} | {_md_num(v['recall'])} |"
                  for b, v in area.items()]
    lines += ["", "Errors: " + ", ".join(f"{k} {v}" for k, v in report["errors"]["counts"].items())]
    t = report.get("training")
    if t:
        lines += ["", "Gradient alerts: " + ", ".join(f"{k} {v}" for k, v in t["alert_counts"].items())]
    return "\n".join(lines) + "\n"
