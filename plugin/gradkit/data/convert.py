"""Pascal VOC and COCO JSON -> YOLO layout with ``data.yaml``, optional stratified split.

Ultralytics' own ``convert_coco`` assumes COCO's 91 category ids (or ids 1..N), writes labels only
and makes no split, so the COCO path here is a small converter of its own. VOC boxes are read as
1-based, inclusive pixel indices (the VOC devkit's convention: a box from pixel 1 to 10 covers 10
pixels), i.e. the continuous box [xmin - 1, xmax]. Ultralytics' ``VOC.yaml`` recipe instead shifts
the centre by a whole pixel and takes ``xmax - xmin`` as the width, so its boxes sit half a pixel
up-left of ours and are one pixel narrower; ours cover exactly the annotated pixels.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import shutil
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import yaml
from tqdm import tqdm

from gradkit.data.orientation import upright_size
from gradkit.data.output import OutputFolder

__all__ = ["IMAGE_SUFFIXES", "ConversionReport", "ImageRecord", "UnusableImage", "convert_coco", "convert_voc",
           "image_size", "write_yolo"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
VOC_DEFAULT_SPLIT = (0.8, 0.1, 0.1)  # train, val, test fractions when split= is not given
COCO_DEFAULT_SPLIT = (0.8, 0.2)
SPLIT_NAMES = ("train", "val", "test")
MAX_PRINTED_ISSUES = 40  # the summary shows this many; the rest are in ISSUES_FILE
ISSUES_FILE = "conversion-issues.txt"


@dataclass
class ImageRecord:
    """One image and its boxes as (class name, x0, y0, x1, y1) in pixels."""

    path: Path
    width: int
    height: int
    boxes: list[tuple[str, float, float, float, float]] = field(default_factory=list)
    #: boxes of the image that could not be converted (each listed): the image is left out, not written without
    #: them (it would teach their defects as background)
    lost: int = 0
    #: COCO crowd regions (iscrowd=1) on the image: a group of objects not boxed one by one, no box YOLO can learn;
    #: the image is left out for the same reason
    crowd: int = 0


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
    issues_file: Path | None = None
    #: the annotation format read: VOC's per-object flags (truncated, difficult) are counted only for VOC
    source: Literal["voc", "coco"] = "voc"

    def summary(self) -> str:
        """Counts of what is on disk, then the first ``MAX_PRINTED_ISSUES`` issues."""
        flags = (f"truncated kept: {self.truncated}; difficult skipped: {self.skipped_difficult}; "
                 if self.source == "voc" else "")
        lines = [f"{self.images} images, {self.boxes} boxes, classes: {', '.join(self.names)}",
                 "splits: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()),
                 f"clipped to the image: {self.clipped}; degenerate (dropped): {self.degenerate}; "
                 f"size mismatches: {self.size_mismatch}; {flags}issues: {len(self.issues)}"]
        lines += [f"  {m}" for m in self.issues[:MAX_PRINTED_ISSUES]]
        hidden = len(self.issues) - MAX_PRINTED_ISSUES
        if hidden > 0:
            lines.append(f"  ... {hidden} more issue(s) not shown; all {len(self.issues)} are listed in "
                         f"{self.issues_file}")
        return "\n".join(lines)


class UnusableImage(ValueError):
    """An image file the converters leave out, with the reason."""


def _os_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if path.is_symlink() and not path.exists():
        return f"dangling symbolic link to {os.readlink(path)}"
    if exc.errno == errno.ENOENT:
        return "file not found"
    return exc.strerror or str(exc)


def image_size(path: Path) -> tuple[int, int]:
    """Width and height as shown (after the EXIF orientation), from the file header; pixels are never
    decoded, so memory stays bounded.

    Raises ``UnusableImage`` for a link loop, a dangling link, a non-image, or more pixels than PIL's
    ``Image.MAX_IMAGE_PIXELS`` (decoding such a file takes gigabytes).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # judged below, with the size
            with Image.open(path) as im:
                width, height = upright_size(im)  # as annotators and Ultralytics see it
    except Image.DecompressionBombError as exc:
        raise UnusableImage(f"decompression bomb: {exc}") from None
    except (UnidentifiedImageError, ImportError):  # ImportError: Ultralytics' patched open, reaching for pi-heif
        raise UnusableImage("not an image file PIL can identify") from None
    except OSError as exc:
        raise UnusableImage(_os_problem(path, exc)) from None
    except (SyntaxError, ValueError) as exc:  # PIL's parsers raise these for malformed headers
        raise UnusableImage(f"malformed image header ({exc})") from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise UnusableImage(f"{width}x{height} = {width * height / 1e6:.0f} million pixels exceeds the limit of "
                            f"{limit / 1e6:.0f} million pixels (PIL's Image.MAX_IMAGE_PIXELS); not decoded")
    return width, height


def _escapes(name: str) -> bool:
    """True for an absolute path or one that climbs out with ``..``."""
    return os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == ".."


_IMAGE_FOLDERS = ("JPEGImages", "images", "IMAGES")


def _image_candidates(xml_path: Path, src: Path, filename: str) -> list[Path]:
    """Next to the XML, in an image folder beside it, or in the image folder that mirrors ``Annotations/..``."""
    folders = [xml_path.parent] + [xml_path.parent.parent / f for f in _IMAGE_FOLDERS]
    try:
        parts = xml_path.parent.relative_to(src).parts
    except ValueError:
        parts = ()
    for i, part in enumerate(parts):
        if part.lower() == "annotations":
            folders += [src.joinpath(*parts[:i], f, *parts[i + 1:]) for f in _IMAGE_FOLDERS]
    return [folder / filename for folder in folders]


def _nfc(name: str) -> str:
    """``name`` in Unicode's composed form: macOS stores "ö" decomposed, annotation tools write it composed."""
    return unicodedata.normalize("NFC", name)


class UnicodeTwins:
    """Files below a folder by their composed (NFC) relative path, indexed on the first miss only: a name
    stored in the other Unicode form is found in one pass over the folder, however many names miss."""

    def __init__(self, folder: Path):
        self.folder, self._index = folder, None

    def find(self, name: str) -> Path | None:
        """The one file whose relative path equals ``name`` up to Unicode form; None if none (or several)."""
        if self._index is None:
            self._index = defaultdict(list)
            for p in self.folder.rglob("*"):
                self._index[_nfc(p.relative_to(self.folder).as_posix())].append(p)
        twins = self._index.get(_nfc(PurePosixPath(name).as_posix()), [])
        return twins[0] if len(twins) == 1 else None


def _find_image(xml_path: Path, src: Path, filename: str | None, by_stem: dict[str, list[Path]]) -> Path:
    """The image an XML annotates; ``UnusableImage`` says why there is none to use."""
    if filename and _escapes(filename):
        raise UnusableImage(f"<filename> {filename!r} points outside src={src}; refused, not read")
    if filename:
        for candidate in _image_candidates(xml_path, src, filename):
            if os.path.lexists(candidate):
                return candidate
    folders = {c.parent for c in _image_candidates(xml_path, src, "_")}
    for stem in dict.fromkeys(s for s in (Path(filename).stem if filename else "", xml_path.stem) if s):
        found = by_stem.get(_nfc(stem), [])
        for group in ([p for p in found if p.parent in folders], found):  # the XML's own folders first
            if len(group) == 1:
                return group[0]
        if found:
            raise UnusableImage(f"image {filename!r} not found next to the XML, and {len(found)} images below "
                                f"src= are named {stem}.*: ambiguous; put the image next to its XML")
    raise UnusableImage(f"image {filename!r} not found")


def _clip_box(rec: ImageRecord, name, box: tuple[float, ...], report: ConversionReport, where: str, quoted: str):
    """Clip corners ``box`` to the image; messages quote the annotation as the file wrote it (``quoted``)."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:  # NaN would survive the clip below
        report.degenerate += 1
        rec.lost += 1  # a defect is there, where is unknown
        report.issues.append(f"{where}: box {name} {quoted} has a non-finite, reversed or zero-size extent; dropped")
        return None
    cx0, cy0 = min(max(x0, 0.0), rec.width), min(max(y0, 0.0), rec.height)
    cx1, cy1 = min(max(x1, 0.0), rec.width), min(max(y1, 0.0), rec.height)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        report.degenerate += 1
        report.issues.append(f"{where}: degenerate box {name} {quoted} (nothing left inside the "
                             f"{rec.width}x{rec.height} image) dropped")
        return None
    if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        report.clipped += 1
        report.issues.append(f"{where}: box {name} {quoted} clipped to the {rec.width}x{rec.height} image")
    return (name, cx0, cy0, cx1, cy1)


def _voc_record(xml_path: Path, src: Path, by_stem: dict[str, list[Path]], report: ConversionReport,
                annotated: dict[Path, Path]):
    """The XML's root and its image record (sized from the header), or None with the reason in ``report``;
    ``annotated`` maps each image an XML named so far to that XML."""
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        report.issues.append(f"{xml_path}: not valid XML ({exc}); skipped")
        return None, None
    except OSError as exc:
        report.issues.append(f"{xml_path}: {_os_problem(xml_path, exc)}; skipped")
        return None, None
    try:
        img_path = _find_image(xml_path, src, root.findtext("filename"), by_stem)
    except UnusableImage as exc:
        report.issues.append(f"{xml_path}: {exc}; skipped")
        return None, None
    first = annotated.setdefault(Path(os.path.abspath(img_path)), xml_path)
    if first != xml_path:  # a copied XML not edited: each copy of the image would teach the other's boxes away
        raise ValueError(f"{img_path} is annotated by both {first} and {xml_path}: fix the <filename> of the "
                         "wrong one, or remove it")
    try:
        w, h = image_size(img_path)
    except UnusableImage as exc:
        report.issues.append(f"{xml_path}: image {img_path}: {exc}; skipped")
        return None, None
    said = [(root.findtext(f"size/{k}") or "").strip() for k in ("width", "height")]
    try:
        xw, xh = (int(float(v or 0)) for v in said)
    except (ValueError, OverflowError):  # "inf" is a float, and no int
        report.size_mismatch += 1
        report.issues.append(f"{xml_path}: annotation's size {'x'.join(said)} is not two numbers; using the image "
                             f"size {w}x{h}")
        return root, ImageRecord(img_path, w, h)
    if (xw, xh) != (w, h) and (xw or xh):
        report.size_mismatch += 1
        report.issues.append(f"{xml_path}: annotation says {xw}x{xh}, image is {w}x{h}; using the image size")
    return root, ImageRecord(img_path, w, h)


def read_voc(src: Path, difficult: str, report: ConversionReport) -> list[ImageRecord]:
    """Parse every ``*.xml`` below ``src``; images are looked up next to it, in the mirrored image
    folder, or by stem when exactly one image has it."""
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            by_stem[_nfc(p.stem)].append(p)
    records, annotated = [], {}
    for xml_path in tqdm(sorted(src.rglob("*.xml")), desc="read VOC", unit="xml"):
        root, rec = _voc_record(xml_path, src, by_stem, report, annotated)
        if rec is None:
            continue
        for i, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            where = f"{xml_path}: object {i}"
            if not name:  # an empty class name would become a class of its own
                report.issues.append(f"{where}: no <name>; skipped")
                rec.lost += 1
                continue
            if (obj.findtext("difficult") or "0").strip() == "1" and difficult == "skip":
                report.skipped_difficult += 1
                continue
            report.truncated += (obj.findtext("truncated") or "0").strip() == "1"
            raw = [(obj.findtext(f"bndbox/{k}") or "").strip() for k in ("xmin", "ymin", "xmax", "ymax")]
            try:
                x0, y0, x1, y1 = (float(v) for v in raw)
            except ValueError:
                report.issues.append(f"{where}: missing or non-numeric bndbox; skipped")
                rec.lost += 1
                continue
            # 1-based inclusive pixel indices -> continuous 0-based edges (see the module docstring)
            box = _clip_box(rec, name, (x0 - 1, y0 - 1, x1, y1), report, where, f"({', '.join(raw)})")
            if box:
                rec.boxes.append(box)
        records.append(rec)
    for image in (p for group in by_stem.values() for p in group):
        if Path(os.path.abspath(image)) not in annotated:  # VOC marks a defect-free image by an XML without objects
            report.issues.append(f"{image}: no XML names this image; not converted (a defect-free image needs an "
                                 "XML without <object>)")
    return records


def _load_coco(ann_file: Path) -> dict:
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{ann_file}: annotation file not found") from None
    except OSError as exc:
        raise ValueError(f"{ann_file}: cannot read it ({_os_problem(ann_file, exc)})") from None
    except ValueError as exc:
        raise ValueError(f"{ann_file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{ann_file}: not a COCO detection file (no 'images' list)")
    return data


def _coco_names(data: dict, ann_file: Path) -> dict[int, str]:
    try:
        categories = sorted(data.get("categories", []), key=lambda c: c["id"])
        names = {c["id"]: str(c["name"]) for c in categories}
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{ann_file}: 'categories' entries need an 'id' and a 'name' ({exc!r})") from None
    if len(names) < len(categories):  # a second entry would silently take the first one's annotations
        ids = [c["id"] for c in categories]
        twice = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{ann_file}: category id {twice} appears more than once "
                         f"({', '.join(repr(str(c['name'])) for c in categories if c['id'] == twice)})")
    first: dict[str, Any] = {}
    for i, name in names.items():  # records carry names: two ids of one name would become one class
        if first.setdefault(name, i) != i:
            raise ValueError(f"{ann_file}: categories {first[name]} and {i} are both named {name!r}: their boxes "
                             "would become one class; rename one")
    return names


def _is_id(value: Any) -> bool:
    """A COCO id: a number (or text, which some tools write); a list or a mapping there is a broken file."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _coco_image(im, ann_file: Path, images: Path, report: ConversionReport,
                twins: UnicodeTwins) -> ImageRecord | None:
    name = im.get("file_name") if isinstance(im, dict) else None
    if not isinstance(name, str) or not _is_id(im.get("id")):
        report.issues.append(f"{ann_file}: image entry {im!r:.80} has no 'id' (a number or text) or 'file_name'; "
                             "skipped")
        return None
    if _escapes(name):
        report.issues.append(f"{ann_file}: image {im['id']}: file_name {name!r} points outside images={images}; "
                             "refused, not read")
        return None
    path = images / name
    if not os.path.lexists(path):
        path = twins.find(name)
    if path is None:
        report.issues.append(f"{ann_file}: image {name!r} not found in {images}; skipped")
        return None
    try:
        w, h = image_size(path)
    except UnusableImage as exc:
        report.issues.append(f"{ann_file}: image {path}: {exc}; skipped")
        return None
    if (im.get("width"), im.get("height")) not in ((w, h), (None, None)):  # a tuple: a list there is no key
        report.size_mismatch += 1
        report.issues.append(f"{ann_file}: image {name} is {w}x{h}, annotation says "
                             f"{im.get('width')}x{im.get('height')}; using the image size")
    return ImageRecord(path, w, h)


def read_coco(ann_file: Path, images: Path, report: ConversionReport) -> tuple[list[ImageRecord], list[str]]:
    """Parse a COCO detection JSON (any category ids); returns records and names in category-id order."""
    data = _load_coco(ann_file)
    names = _coco_names(data, ann_file)
    by_id, listed, twins = {}, set(), UnicodeTwins(images)
    by_file: dict[Path, Any] = {}
    for im in data["images"]:
        if isinstance(im, dict) and _is_id(im.get("id")):
            if im["id"] in listed:  # whose annotations would they be?
                raise ValueError(f"{ann_file}: image id {im['id']} appears more than once")
            listed.add(im["id"])
        rec = _coco_image(im, ann_file, images, report, twins)
        if rec is not None:
            first = by_file.setdefault(Path(os.path.abspath(rec.path)), im["id"])
            if first != im["id"]:  # written twice, each copy teaching the other's boxes as background
                raise ValueError(f"{ann_file}: {im['file_name']} is listed by image ids {first} and {im['id']}: "
                                 "one entry per image")
            by_id[im["id"]] = rec
    crowd_regions = 0
    for a in tqdm(data.get("annotations", []), desc="read COCO", unit="ann"):
        try:
            if not (_is_id(a["image_id"]) and _is_id(a["category_id"])):
                raise TypeError("an id that is neither a number nor text")
            rec, category, crowd = by_id.get(a["image_id"]), a["category_id"], a.get("iscrowd")
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (KeyError, TypeError, ValueError):
            report.issues.append(f"{ann_file}: annotation {a!r:.80} lacks image_id, category_id or a 4-number "
                                 "bbox; skipped")
            image_id = a.get("image_id") if isinstance(a, dict) else None
            if _is_id(image_id) and image_id in by_id:
                by_id[image_id].lost += 1
            continue
        if crowd:
            crowd_regions += 1
            if rec is not None:
                rec.crowd += 1
            continue
        if rec is None:
            if a["image_id"] not in listed:  # an image skipped above has its reason listed already
                report.issues.append(f"{ann_file}: annotation {a.get('id')} refers to image_id {a['image_id']}, "
                                     "which no image entry has; skipped")
            continue
        if category not in names:
            report.issues.append(f"{ann_file}: annotation {a.get('id')} has unknown category {category}")
            rec.lost += 1
            continue
        box = _clip_box(rec, names[category], (x, y, x + bw, y + bh), report, f"{ann_file}: annotation {a.get('id')}",
                        f"bbox {a['bbox']}")
        if box:
            rec.boxes.append(box)
    if crowd_regions:
        report.issues.append(f"{ann_file}: {crowd_regions} crowd region(s) (iscrowd=1): they mark a group, not one "
                             "object; their images are left out (below)")
    return list(by_id.values()), list(names.values())


def _stratified_split(records: list[ImageRecord], ratios: tuple[float, ...], seed: int,
                      left_out: str = "") -> list[str]:
    """Split by the rarest class of each image (background images as their own stratum), seeded.

    Every split with a share gets at least one image (taken from the largest split's most common
    stratum), so validation never falls back on training images. ``left_out``: which images the conversion left out
    and why (:func:`_whole`), for the refusal when too few are left.
    """
    splits = SPLIT_NAMES[: len(ratios)]
    wanted = [s for s, r in zip(splits, ratios, strict=True) if r > 0]
    if "val" not in wanted:
        raise ValueError(f"split={','.join(f'{r:g}' for r in ratios)} gives val no share: training would validate "
                         "on its own images")
    if len(records) < len(wanted):
        fewer = " (or ask for fewer splits, e.g. split=0.8,0.2)" if len(wanted) > 2 else ""
        raise ValueError(f"{len(records)} image(s) cannot fill the splits {', '.join(wanted)}: each needs one"
                         + (f"; {left_out}" if left_out else "") + f"; give more whole images{fewer}")
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
    stratum_size = {i: len(idx) for idx in strata.values() for i in idx}
    for split in wanted:
        if split not in out:
            donor = max(wanted, key=lambda s: (out.count(s), -wanted.index(s)))
            moved = max((i for i, s in enumerate(out) if s == donor), key=lambda i: (stratum_size[i], -i))
            out[moved] = split
    return out


def _output_names(records: list[ImageRecord], report: ConversionReport) -> list[PurePosixPath]:
    """Paths below ``images/<split>/``: relative to the images' common folder, so ``cam1/0000.jpg`` and
    ``cam2/0000.jpg`` stay apart; a name whose label would collide gets a ``_2`` suffix, reported.

    Image-folder names (``images``, ``JPEGImages``) are left out of the kept folders: Ultralytics finds
    a label by replacing the last ``/images/`` of the image path, which must be ours."""
    common = Path(os.path.commonpath([os.path.abspath(r.path.parent) for r in records]))
    taken: dict[tuple[PurePosixPath, str], Path] = {}
    names = []
    for rec in records:
        rel = PurePosixPath(Path(os.path.abspath(rec.path)).relative_to(common).as_posix())
        rel = PurePosixPath(*(p for p in rel.parent.parts if p.lower() not in {"images", "jpegimages"}), rel.name)
        new, n = rel, 1
        while (new.parent, new.stem) in taken:
            n += 1
            new = rel.with_name(f"{rel.stem}_{n}{rel.suffix}")
        if new != rel:
            report.issues.append(f"{rec.path}: its label would collide with {taken[(rel.parent, rel.stem)]}'s; "
                                 f"written as {new}")
        taken[(new.parent, new.stem)] = rec.path
        names.append(new)
    return names


def _warn_missing_classes(records: list[ImageRecord], splits: list[str], names: list[str],
                          report: ConversionReport) -> None:
    boxed = {b[0] for r in records for b in r.boxes}
    nowhere = [n for n in names if n not in boxed]
    if nowhere:  # no split= can fix that: nothing to train on, nothing to score
        report.issues.append(f"{', '.join(nowhere)} has no box in any image written (its boxes were left out "
                             "with their images above, or the annotations name it without boxing it): training "
                             "learns nothing of it and the reports score it as absent")
    for split in SPLIT_NAMES:
        members = [r for r, s in zip(records, splits, strict=True) if s == split]
        if not members:
            continue
        missing = [n for n in names if n not in {b[0] for r in members for b in r.boxes} and n in boxed]
        if missing:
            report.issues.append(f"{split} split has no instance of {', '.join(missing)}: its {len(members)} "
                                 "image(s) are too few to hold every class (more images of those classes or "
                                 "another split= fixes it)")


def _yolo_lines(rec: ImageRecord, index: dict[str, int]) -> list[str]:
    return [f"{index[name]} {(x0 + x1) / 2 / rec.width:.6f} {(y0 + y1) / 2 / rec.height:.6f} "
            f"{(x1 - x0) / rec.width:.6f} {(y1 - y0) / rec.height:.6f}" for name, x0, y0, x1, y1 in rec.boxes]


def write_yolo(records: list[ImageRecord], names: list[str], out: OutputFolder, splits: list[str],
               report: ConversionReport) -> Path:
    """Copy images into ``splits`` (one per record), write YOLO labels (6 decimals), ``data.yaml`` and
    the full issue list; returns the YAML's path. Counts in ``report`` are of what was written."""
    index = {n: i for i, n in enumerate(names)}
    folded: dict[str, str] = {}
    for name in names:  # annotators' spelling: two classes, or one class typed two ways?
        first = folded.setdefault(name.casefold(), name)
        if first != name:
            report.issues.append(f"classes {first!r} and {name!r} differ only in case: written as two classes "
                                 "(if they are one, correct the annotations' spelling and convert again)")
    rels = _output_names(records, report)
    images = [PurePosixPath("images", s, rel) for s, rel in zip(splits, rels, strict=True)]
    labels = [PurePosixPath("labels", s, rel).with_suffix(".txt") for s, rel in zip(splits, rels, strict=True)]
    out.plan([*images, *labels, "data.yaml", ISSUES_FILE])
    written = []
    for rec, split, image, label in tqdm(list(zip(records, splits, images, labels, strict=True)),
                                         desc="write YOLO", unit="img"):
        try:
            shutil.copyfile(rec.path, out.path(image))
        except OSError as exc:
            report.issues.append(f"{rec.path}: cannot copy ({_os_problem(rec.path, exc)}); skipped")
            continue
        lines = list(dict.fromkeys(_yolo_lines(rec, index)))  # the same box given twice is one box
        if len(lines) < len(rec.boxes):
            report.issues.append(f"{rec.path}: {len(rec.boxes) - len(lines)} box(es) given twice (the same class and "
                                 "place); written once")
        out.path(label).write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
        report.boxes += len(lines)
        written.append((rec, split))
    report.images = len(written)
    report.names = list(names)
    report.splits = {s: n for s in SPLIT_NAMES if (n := sum(w[1] == s for w in written))}
    _warn_missing_classes([w[0] for w in written], [w[1] for w in written], names, report)
    data = {"path": str(out.root), **{s: f"images/{s}" for s in report.splits}, "names": dict(enumerate(names))}
    out.path("data.yaml").write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    report.issues_file = out.path(ISSUES_FILE)
    report.issues_file.write_text("".join(f"{m}\n" for m in report.issues), encoding="utf-8")
    return out.root / "data.yaml"


def _whole(records: list[ImageRecord], report: ConversionReport, src: Path) -> tuple[list[ImageRecord], str]:
    """The records all of whose boxes were converted; each other one is named, as ``check --fix`` leaves out an
    image with a line it cannot repair. None left: refused. Also, in a few words, which were left out and why (for a
    later refusal when too few are left)."""
    for rec in records:
        if rec.lost:
            report.issues.append(f"{rec.path}: left out: {rec.lost} of its boxes could not be converted (listed "
                                 "above); written without them, the image would teach their defects as background")
        elif rec.crowd:
            report.issues.append(f"{rec.path}: left out: it holds {rec.crowd} crowd region(s) (a group of objects "
                                 "not boxed one by one); written without them, the image would teach the group as "
                                 "background")
    whole = [r for r in records if not r.lost and not r.crowd]
    if records and not whole:
        raise ValueError(f"no image of {src} has every box convertible: each has a box without a class, with a "
                         "non-numeric, non-finite, reversed or zero-size extent, of an unknown category, or a crowd "
                         "region (iscrowd=1)")
    lost = [r.path for r in records if r.lost]
    crowd = [r.path for r in records if r.crowd and not r.lost]
    reasons = [f"{len(paths)} for {why} ({_some(paths)})" for paths, why in
               ((crowd, "their crowd regions, iscrowd=1"), (lost, "boxes that could not be converted")) if paths]
    return whole, f"left out: {'; '.join(reasons)}" if reasons else ""


def _some(paths: list[Path], shown: int = 3) -> str:
    """The first ``shown`` of ``paths``, and how many more."""
    more = len(paths) - shown
    return ", ".join(map(str, paths[:shown])) + (f" and {more} more" if more > 0 else "")


def _names(records: list[ImageRecord], classes: list[str] | None) -> list[str]:
    found = sorted({b[0] for r in records for b in r.boxes})
    if classes is None:
        return found
    twice = next((c for i, c in enumerate(classes) if c in classes[:i]), None)
    if twice is not None:
        raise ValueError(f"classes={classes} names {twice!r} twice: its boxes would go to one of the two")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise ValueError(f"classes {unknown} occur in the annotations but not in classes={classes}")
    return list(classes)


def convert_voc(src: str | Path, out: str | Path, split: tuple[float, ...] = VOC_DEFAULT_SPLIT, seed: int = 0,
                difficult: str = "keep", classes: list[str] | None = None,
                overwrite: bool = False) -> tuple[Path, ConversionReport]:
    """Pascal VOC XML (+ JPEG/PNG/BMP) -> YOLO. Class names sorted alphabetically unless given.

    ``out`` must not touch ``src`` and must be empty, unless ``overwrite`` (which first removes what
    a previous conversion wrote there, listed in its manifest)."""
    if difficult not in {"keep", "skip"}:
        raise ValueError(f"difficult must be 'keep' or 'skip', got {difficult!r}")
    src = Path(src)
    if not src.is_dir():  # the source first: a missing input is the mistake to name, not where out= lies
        raise ValueError(f"src={src} is not a folder")
    sources = {"source folder src=": src}
    OutputFolder.precheck(out, sources, overwrite, "convert voc")
    report = ConversionReport()
    records, left_out = _whole(read_voc(src, difficult, report), report, src)
    if not records:
        raise ValueError(f"no VOC annotations (*.xml) with usable images found below {src}")
    names, splits = _names(records, classes), _stratified_split(records, split, seed, left_out)
    folder = OutputFolder(out, sources, overwrite, "convert voc", [r.path for r in records])
    return write_yolo(records, names, folder, splits, report), report


def convert_coco(src: str | Path, images: str | Path, out: str | Path,
                 split: tuple[float, ...] = COCO_DEFAULT_SPLIT, seed: int = 0,
                 overwrite: bool = False) -> tuple[Path, ConversionReport]:
    """COCO detection JSON -> YOLO, class names in category-id order; ``out`` as in ``convert_voc``."""
    src, images = Path(src), Path(images)
    if not src.is_file():  # the sources first: a missing input is the mistake to name, not where out= lies
        raise ValueError(f"{src}: annotation file not found (src=)")
    if not images.is_dir():
        raise ValueError(f"{images}: image folder not found (images=)")
    sources = {"annotation file src=": src, "image folder images=": images}
    OutputFolder.precheck(out, sources, overwrite, "convert coco")
    report = ConversionReport(source="coco")
    records, names = read_coco(src, images, report)
    records, left_out = _whole(records, report, src)
    if not records:
        raise ValueError(f"no images of {src} found in {images}")
    splits = _stratified_split(records, split, seed, left_out)
    folder = OutputFolder(out, sources, overwrite, "convert coco", [r.path for r in records])
    return write_yolo(records, names, folder, splits, report), report
