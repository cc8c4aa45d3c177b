"""Pascal VOC and COCO JSON -> YOLO layout with ``data.yaml``, optional stratified split.

Ultralytics' own ``convert_coco`` assumes COCO's 91 category ids (or ids 1..N), writes labels only
and makes no split, so the COCO path here is a small converter of its own. VOC boxes are read as
1-based, inclusive pixel indices (the VOC devkit's convention: a box from pixel 1 to 10 covers 10
pixels), i.e. the continuous box [xmin - 1, xmax]. Ultralytics' ``VOC.yaml`` recipe instead shifts
the centre by a whole pixel and takes ``xmax - xmin`` as the width, so its boxes sit half a pixel
up-left of ours and are one pixel narrower; ours cover exactly the annotated pixels.
"""

from __future__ import annotations

import json
import random
import shutil
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

__all__ = ["IMAGE_SUFFIXES", "ConversionReport", "ImageRecord", "convert_coco", "convert_voc", "write_yolo"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class ImageRecord:
    """One image and its boxes as (class name, x0, y0, x1, y1) in pixels."""

    path: Path
    width: int
    height: int
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)


@dataclass
class ConversionReport:
    """What a conversion did, for the user to read."""

    images: int = 0
    boxes: int = 0
    issues: list[str] = field(default_factory=list)
    skipped_difficult: int = 0
    truncated: int = 0
    clipped: int = 0
    degenerate: int = 0
    size_mismatch: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.images} images, {self.boxes} boxes, classes: {', '.join(self.names)}",
                 "splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
                 f"clipped to the image: {self.clipped}; degenerate (dropped): {self.degenerate}; "
                 f"size mismatches: {self.size_mismatch}; truncated kept: {self.truncated}; "
                 f"difficult skipped: {self.skipped_difficult}"]
        return "\n".join(lines + [f"  {m}" for m in self.issues])


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _find_image(xml_path: Path, filename: str | None, by_stem: dict[str, Path]) -> Path | None:
    if filename:
        for folder in (xml_path.parent, xml_path.parent.parent / "JPEGImages", xml_path.parent.parent / "images",
                       xml_path.parent.parent / "IMAGES"):
            if (folder / filename).is_file():
                return folder / filename
        if Path(filename).stem in by_stem:
            return by_stem[Path(filename).stem]
    return by_stem.get(xml_path.stem)


def _clip_box(rec: ImageRecord, name, x0, y0, x1, y1, report: ConversionReport, where: str):
    cx0, cy0 = min(max(x0, 0.0), rec.width), min(max(y0, 0.0), rec.height)
    cx1, cy1 = min(max(x1, 0.0), rec.width), min(max(y1, 0.0), rec.height)
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        report.clipped += 1
        report.issues.append(f"{where}: box {name} ({x0:g},{y0:g},{x1:g},{y1:g}) clipped to the "
                             f"{rec.width}x{rec.height} image")
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        report.degenerate += 1
        report.issues.append(f"{where}: degenerate box {name} ({x0:g},{y0:g},{x1:g},{y1:g}) dropped")
        return None
    return (name, cx0, cy0, cx1, cy1)


def read_voc(src: Path, difficult: str, report: ConversionReport) -> list[ImageRecord]:
    """Parse every ``*.xml`` below ``src``; images are looked up next to it or by stem."""
    by_stem = {p.stem: p for p in src.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}
    records = []
    for xml_path in tqdm(sorted(src.rglob("*.xml")), desc="read VOC", unit="xml"):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as exc:
            report.issues.append(f"{xml_path}: not valid XML ({exc}); skipped")
            continue
        img_path = _find_image(xml_path, root.findtext("filename"), by_stem)
        if img_path is None:
            report.issues.append(f"{xml_path}: image {root.findtext('filename')!r} not found; skipped")
            continue
        w, h = _image_size(img_path)
        xw, xh = int(float(root.findtext("size/width") or 0)), int(float(root.findtext("size/height") or 0))
        if (xw, xh) != (w, h) and (xw or xh):
            report.size_mismatch += 1
            report.issues.append(f"{xml_path}: annotation says {xw}x{xh}, image is {w}x{h}; using the image size")
        rec = ImageRecord(img_path, w, h)
        for i, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"{xml_path}: object {i}"
            if (obj.findtext("difficult") or "0").strip() == "1" and difficult == "skip":
                report.skipped_difficult += 1
                continue
            report.truncated += (obj.findtext("truncated") or "0").strip() == "1"
            bb = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                report.issues.append(f"{where}: missing or non-numeric bndbox; skipped")
                continue
            # 1-based inclusive pixel indices -> continuous 0-based edges (see the module docstring)
            box = _clip_box(rec, name, x0 - 1, y0 - 1, x1, y1, report, where)
            if box:
                rec.boxes.append(box)
        records.append(rec)
    return records


def read_coco(ann_file: Path, images: Path, report: ConversionReport) -> tuple[list[ImageRecord], list[str]]:
    """Parse a COCO detection JSON (any category ids); returns records and names in category-id order."""
    data = json.loads(ann_file.read_text())
    cats = sorted(data.get("categories", []), key=lambda c: c["id"])
    names = {c["id"]: str(c["name"]) for c in cats}
    by_id = {}
    for im in data.get("images", []):
        path = images / im["file_name"]
        if not path.is_file():
            report.issues.append(f"{ann_file}: image {im['file_name']!r} not found in {images}; skipped")
            continue
        w, h = _image_size(path)
        if (im.get("width"), im.get("height")) not in {(w, h), (None, None)}:
            report.size_mismatch += 1
            report.issues.append(f"{ann_file}: image {im['file_name']} is {w}x{h}, annotation says "
                                 f"{im.get('width')}x{im.get('height')}; using the image size")
        by_id[im["id"]] = ImageRecord(path, w, h)
    for a in tqdm(data.get("annotations", []), desc="read COCO", unit="ann"):
        rec = by_id.get(a["image_id"])
        if rec is None:
            continue
        if a["category_id"] not in names:
            report.issues.append(f"{ann_file}: annotation {a.get('id')} has unknown category {a['category_id']}")
            continue
        if a.get("iscrowd"):
            continue
        x, y, bw, bh = (float(v) for v in a["bbox"])
        box = _clip_box(rec, names[a["category_id"]], x, y, x + bw, y + bh, report, f"{ann_file}: annotation "
                        f"{a.get('id')}")
        if box:
            rec.boxes.append(box)
    return list(by_id.values()), [names[c["id"]] for c in cats]


def _stratified_split(records: list[ImageRecord], ratios: tuple[float, ...], seed: int) -> list[str]:
    """Split by the rarest class of each image (background images as their own stratum), seeded."""
    splits = ("train", "val", "test")[: len(ratios)]
    freq = Counter(b[0] for r in records for b in r.boxes)
    strata: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        key = min((b[0] for b in r.boxes), key=lambda n: (freq[n], n)) if r.boxes else ""
        strata[key].append(i)
    out = ["train"] * len(records)
    rng = random.Random(seed)
    for key in sorted(strata):
        idx = strata[key]
        rng.shuffle(idx)
        bounds, acc = [], 0.0
        for r in ratios:
            acc += r
            bounds.append(round(acc * len(idx)))
        start = 0
        for split, end in zip(splits, bounds, strict=True):
            for i in idx[start:end]:
                out[i] = split
            start = end
    return out


def write_yolo(records: list[ImageRecord], names: list[str], out: Path, ratios: tuple[float, ...] | None,
               seed: int, report: ConversionReport) -> Path:
    """Copy images, write YOLO labels (6 decimals) and ``data.yaml``; returns its path."""
    index = {n: i for i, n in enumerate(names)}
    splits = _stratified_split(records, ratios, seed) if ratios else ["train"] * len(records)
    out = out.resolve()
    for rec, split in tqdm(list(zip(records, splits, strict=True)), desc="write YOLO", unit="img"):
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        dst = out / "images" / split / rec.path.name
        shutil.copy2(rec.path, dst)
        lines = []
        for name, x0, y0, x1, y1 in rec.boxes:
            lines.append(f"{index[name]} {(x0 + x1) / 2 / rec.width:.6f} {(y0 + y1) / 2 / rec.height:.6f} "
                         f"{(x1 - x0) / rec.width:.6f} {(y1 - y0) / rec.height:.6f}")
        (out / "labels" / split / (rec.path.stem + ".txt")).write_text("".join(f"{x}\n" for x in lines))
        report.boxes += len(lines)
    report.images = len(records)
    report.names = list(names)
    report.splits = dict(Counter(splits))
    data = {"path": str(out), "train": "images/train", "names": dict(enumerate(names))}
    for s in ("val", "test"):
        if s in report.splits:
            data[s] = f"images/{s}"
    if "val" not in data:
        data["val"] = "images/train"  # Ultralytics needs a val split; without a ratio it validates on train
    (out / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return out / "data.yaml"


def _names(records: list[ImageRecord], classes: list[str] | None) -> list[str]:
    found = sorted({b[0] for r in records for b in r.boxes})
    if classes is None:
        return found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"classes {unknown} occur in the annotations but not in classes={classes}")
    return list(classes)


def convert_voc(src: str | Path, out: str | Path, split: tuple[float, ...] | None = None, seed: int = 0,
                difficult: str = "keep", classes: list[str] | None = None) -> tuple[Path, ConversionReport]:
    """Pascal VOC XML (+ JPEG/PNG/BMP) -> YOLO. Class names sorted alphabetically unless given."""
    if difficult not in {"keep", "skip"}:
        raise ValueError(f"difficult must be 'keep' or 'skip', got {difficult!r}")
    report = ConversionReport()
    records = read_voc(Path(src), difficult, report)
    if not records:
        raise ValueError(f"no VOC annotations (*.xml) with images found below {src}")
    return write_yolo(records, _names(records, classes), Path(out), split, seed, report), report


def convert_coco(src: str | Path, images: str | Path, out: str | Path, split: tuple[float, ...] | None = None,
                 seed: int = 0) -> tuple[Path, ConversionReport]:
    """COCO detection JSON -> YOLO, class names in category-id order."""
    report = ConversionReport()
    records, names = read_coco(Path(src), Path(images), report)
    if not records:
        raise ValueError(f"no images of {src} found in {images}")
    return write_yolo(records, names, Path(out), split, seed, report), report
