"""``gradkit check``: every image and label of a YOLO dataset, with findings per file and line.

Ultralytics warns about bad labels and drops them at train time; here they are listed before
training, with a summary of the statistics that decide augmentation and image size. ``fix`` writes
a cleaned copy and never touches the original.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import shutil
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from gradkit.data.convert import IMAGE_SUFFIXES
from gradkit.data.orientation import headers_of_any_size, read_upright
from gradkit.data.splits import ListedLine, SplitImages, is_listed, list_split_images, resolve_split
from gradkit.data.yaml_file import read_yaml

__all__ = ["CheckResult", "Finding", "FixChange", "check_dataset", "fix_dataset", "fix_output"]

SPLITS = ("train", "val", "test")


@dataclass
class Finding:
    """One problem: ``severity`` is ``error`` (training would drop or misread it) or ``warning``."""

    severity: str
    kind: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity.upper():7} {self.kind:18} {where}: {self.message}"


@dataclass
class CheckResult:
    findings: list[Finding] = field(default_factory=list)
    images: dict[str, int] = field(default_factory=dict)
    instances: dict[str, Counter] = field(default_factory=dict)
    background: dict[str, int] = field(default_factory=dict)
    rel_areas: list[float] = field(default_factory=list)
    aspects: list[float] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def summary(self) -> str:
        lines = []
        for s in self.images:
            n = self.images[s]
            per = ", ".join(f"{self.names.get(c, c)} {k}" for c, k in sorted(self.instances[s].items()))
            lines.append(f"{s}: {n} images, {sum(self.instances[s].values())} instances ({per or 'none'}), "
                         f"defect-free {self.background[s]} ({100 * self.background[s] / max(n, 1):.0f}%)")
        if self.rel_areas:
            a = np.array(self.rel_areas)
            q = np.percentile(a, [5, 50, 95])
            buckets = [(a < 1e-3).mean(), ((a >= 1e-3) & (a < 1e-2)).mean(), ((a >= 1e-2) & (a < 0.1)).mean(),
                       (a >= 0.1).mean()]
            lines.append("box area / image area: p5 {:.2g}, median {:.2g}, p95 {:.2g}; <0.1%: {:.0%}, 0.1-1%: {:.0%}, "
                         "1-10%: {:.0%}, >10%: {:.0%}".format(*q, *buckets))
            asp = np.array(self.aspects)
            lines.append(f"aspect ratio (long/short): median {np.median(asp):.1f}, "
                         f"elongated (>5): {(asp > 5).mean():.0%}")
            if (a < 1e-3).mean() > 0.2:
                lines.append("hint: many boxes are below 0.1% of the image: gradkit plan says whether to train at a "
                             "larger imgsz or tile the images (gradkit tile)")
        lines.append(f"{len(self.errors)} error(s), {len(self.findings) - len(self.errors)} warning(s)")
        return "\n".join(lines)


def read_dataset_yaml(data_yaml: Path) -> dict:
    """A dataset YAML as a mapping, or ValueError naming the file and what is wrong with it."""
    if data_yaml.is_dir():
        raise ValueError(f"{data_yaml}: a folder; give the dataset's YAML file (data=DIR/data.yaml)")
    try:
        data = read_yaml(data_yaml)
    except FileNotFoundError:
        raise ValueError(f"{data_yaml}: no such file") from None
    if not isinstance(data, dict) or (data.get("names") is None and "nc" not in data):
        raise ValueError(f"{data_yaml}: not a YOLO dataset YAML (no 'names', nor 'nc')")
    if data.get("names") is None:  # as Ultralytics names them (data/utils.py: check_det_dataset)
        nc = _int_like(data["nc"])
        if nc is None or nc < 0:
            raise ValueError(f"{data_yaml}: nc: takes a whole number of classes, got {data['nc']!r}")
        data = {**data, "names": [f"class_{i}" for i in range(nc)]}
    if not isinstance(data["names"], list | dict):
        raise ValueError(f"{data_yaml}: names: takes a list or a mapping id -> name, got {data['names']!r}")
    if data.get("path") is not None and not isinstance(data["path"], str):
        raise ValueError(f"{data_yaml}: path: takes a folder, got {data['path']!r}")
    for key in SPLITS:
        if data.get(key) is not None and not isinstance(data[key], str | list):
            raise ValueError(f"{data_yaml}: {key}: takes a folder or list-file path, or a list of them, "
                             f"got {data[key]!r}")
    return data


def _int_like(value: Any) -> int | None:
    """``nc`` as Ultralytics reads it: 4, 4.0 and "4" are 4; anything else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _yaml_findings(data_yaml: Path, data: dict, names: dict[int, str]) -> list[Finding]:
    """What Ultralytics would refuse in the YAML itself: a missing train/val key (with the key that
    looks like a typo of it), nc that disagrees with names, class ids with gaps; and classes gradkit's
    reports could not tell apart (no name, a shared name)."""
    import difflib

    found = []
    for key in ("train", "val"):
        if key in data and data[key] is not None and not data[key]:
            continue  # an empty value: resolve_split names it
        if not data.get(key) and not (key == "val" and data.get("validation")):  # Ultralytics renames validation
            typo = difflib.get_close_matches(key, [k for k in data if isinstance(k, str)], n=1)
            hint = f"; is '{typo[0]}' meant to be '{key}'?" if typo else ""
            found.append(Finding("error", "dataset YAML", str(data_yaml), None,
                                 f"no '{key}' key: Ultralytics needs train and val{hint}"))
    if "nc" in data and _int_like(data["nc"]) != len(names):
        found.append(Finding("error", "dataset YAML", str(data_yaml), None,
                             f"nc: {data['nc']} but {len(names)} name(s) in names:"))
    if sorted(names) != list(range(len(names))):
        found.append(Finding("error", "dataset YAML", str(data_yaml), None,
                             f"names: class ids must be 0, 1, ... {len(names) - 1}; got {sorted(names)}"))
    return found + _name_findings(data_yaml, names)


def _name_findings(data_yaml: Path, names: dict[int, str]) -> list[Finding]:
    """Classes without a name, or sharing one: reports, thresholds and the plan name classes by their names,
    and Ultralytics would train two classes that no report can tell apart."""
    found, ids_of = [], {}
    for i, name in sorted(names.items()):
        if name is None or not str(name).strip():
            found.append(Finding("error", "dataset YAML", str(data_yaml), None, f"names: class {i} has no name"))
        else:
            ids_of.setdefault(str(name).strip(), []).append(i)
    for name, ids in ids_of.items():
        if len(ids) > 1:
            found.append(Finding("error", "dataset YAML", str(data_yaml), None, f"names: '{name}' is the name of "
                                 f"classes {', '.join(map(str, ids[:-1]))} and {ids[-1]}; give each class its own"))
    return found


def _dataset_root(data_yaml: Path, data: dict) -> tuple[Path, str | None]:
    """The dataset root, and a warning when a relative ``path:`` is found only beside the YAML.

    Ultralytics (``check_det_dataset``) reads a relative ``path:`` from the working folder when it is there,
    else from its ``datasets_dir`` (which this pure data code does not know), never beside the YAML.
    """
    if not data.get("path"):
        return data_yaml.parent, None
    root = Path(data["path"])
    if root.is_absolute():
        return root, None
    if root.exists():
        return root.resolve(), None  # as Ultralytics: from the working folder
    beside = (data_yaml.parent / root).resolve()
    if not beside.exists():  # where Ultralytics looks first; the split errors name it
        return Path.cwd() / root, (f"path: {data['path']} is relative and is neither in the working folder "
                                   f"({Path.cwd() / root}) nor beside the YAML; Ultralytics then looks in its "
                                   "datasets_dir, which this check does not read. Write path: as an absolute path")
    return beside, (f"path: {data['path']} is relative: Ultralytics reads it from the working folder "
                    f"({Path.cwd() / root}: not there) or else its datasets_dir, not beside the YAML where this "
                    f"check found it ({beside}); training from here fails unless datasets_dir holds it. Write "
                    "path: as an absolute path, or run from the folder it is relative to")


def _read_splits(data_yaml: Path) -> tuple[dict[str, list[Path]], dict[int, str]]:
    """Each split's places (folders and list files, :mod:`gradkit.data.splits`) and the class names."""
    data = read_dataset_yaml(data_yaml)
    root, _ = _dataset_root(data_yaml, data)
    names = data["names"]
    try:
        names = dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}
    except (TypeError, ValueError):
        raise ValueError(f"{data_yaml}: names: the keys of a mapping are class ids (0, 1, ...)") from None
    if "val" not in data and "validation" in data:  # Ultralytics renames the key (data/utils.py)
        data = {**data, "val": data["validation"]}
    return {s: resolve_split(data[s], root, s, data_yaml) for s in SPLITS if data.get(s) is not None}, names


def _label_path(img: Path) -> Path:
    parts = list(img.parts)
    i = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if i is None:
        return img.with_suffix(".txt")
    parts[i] = "labels"
    return Path(*parts).with_suffix(".txt")


#: Ultralytics drops images smaller than this in either dimension (``data/utils.py:check_image``).
MIN_IMAGE_SIDE = 10


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_header(data: bytes) -> tuple[str | None, tuple[int, int], int]:
    """(error or None, (width, height), bit depth) of a PNG: every chunk's CRC up to IEND, as PIL's
    verify (which Ultralytics runs) checks them, without PIL's per-chunk reads or any decompression."""
    view = memoryview(data)
    size, depth = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")), data[24]
    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        end = pos + 12 + length
        if end > len(data):
            break
        if zlib.crc32(view[pos + 4:end - 4]) != int.from_bytes(data[end - 4:end], "big"):
            return f"PNG chunk {bytes(data[pos + 4:pos + 8])!r} damaged (checksum mismatch)", size, depth
        if data[pos + 4:pos + 8] == b"IEND":
            return None, size, depth
        pos = end
    return "PNG cut short (no IEND chunk)", size, depth


#: PIL modes of 8 bits per channel, which Ultralytics reads as they are; any other (16-bit "I;16", 32-bit "I",
#: float "F") needs its pixels read to tell what training would make of it. A TIFF's mode does not tell its depth
#: (PIL opens 16 bits per channel RGB as "RGB"): its pixels are always read.
EIGHT_BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB",
                             "HSV"})


def _image_header(path: Path) -> tuple[tuple[str, str] | None, bool]:
    """Header-level integrity, without decoding pixels: ((finding kind, message) or None, whether it is deeper
    than 8 bits).

    PNG: every chunk's checksum up to IEND (a file cut short has no IEND). JPEG: the end-of-image
    marker that Ultralytics itself tests (it re-encodes such a file in place, or drops it when it
    cannot). Other formats have no cheap test and are decoded.
    """
    from PIL import Image

    skip = "; training would skip it"
    try:
        data = path.read_bytes()
        if data.startswith(_PNG_SIGNATURE) and len(data) >= 33:
            error, size, depth = _png_header(data)
            if error:
                return ("unreadable image", error + skip), False
            mode, fmt, bits = "I;16" if depth == 16 else "L", "PNG", None
        else:
            with headers_of_any_size(), Image.open(io.BytesIO(data)) as im:  # the size is judged below
                fmt, size, mode = im.format, im.size, im.mode
                bits = im.tag_v2.get(258) if fmt == "TIFF" else None  # BitsPerSample, per channel
            if fmt != "JPEG" and not _too_many_pixels(size):  # decoded to find damage, where PIL would decode it
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
    except ImportError:  # Ultralytics' Image.open falls back to the optional pi_heif for unknown files
        return ("unreadable image", "not an image format PIL recognises" + skip), False
    except Image.UnidentifiedImageError:  # its message names an in-memory buffer, not the file
        return ("unreadable image", "not an image format PIL recognises" + skip), False
    except Exception as exc:  # a damaged file raises whatever its decoder meets (struct.error, ZeroDivision...)
        return ("unreadable image", f"{exc}{skip}"), False
    if fmt == "JPEG" and not data.endswith(b"\xff\xd9"):
        return ("unreadable image", "JPEG not ending with its end-of-image marker (cut short, or bytes written "
                                    "after it): training would re-encode it in place or skip it"), False
    if min(size) < MIN_IMAGE_SIDE:
        return ("unreadable image", f"{size[0]}x{size[1]} pixels: training skips images under {MIN_IMAGE_SIDE} px"
                ), False
    too_many = _too_many_pixels(size)
    if too_many:  # its pixels will not be read: the header alone says its depth (a TIFF's in its BitsPerSample)
        wide = isinstance(bits, tuple | list) and any(isinstance(b, int) and b > 8 for b in bits)
        return too_many, mode not in EIGHT_BIT_MODES or wide
    return None, mode not in EIGHT_BIT_MODES or fmt == "TIFF"


#: The finding of an image over the pixels PIL opens (gradkit tile reads such images; the other commands stop).
TOO_MANY_PIXELS = "too many pixels"


def _too_many_pixels(size: tuple[int, int]) -> tuple[str, str] | None:
    """Over twice PIL's ``Image.MAX_IMAGE_PIXELS`` PIL refuses to open an image, and Ultralytics' verification
    drops it with its labels ("decompression bomb"); below that PIL only warns."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if not limit or size[0] * size[1] <= 2 * limit:
        return None
    return (TOO_MANY_PIXELS, f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.1f} million pixels, over twice PIL's "
            f"Image.MAX_IMAGE_PIXELS ({2 * limit / 1e6:.1f} million): training would skip it as a decompression "
            "bomb; cut it into tiles with gradkit tile data=... size=640")


def _check_image_fast(path: Path, res: CheckResult) -> None:
    """The check before training: header-level integrity; pixels are read for images deeper than 8 bits only."""
    error, deep = _image_header(path)
    if error:
        res.findings.append(Finding("error", error[0], str(path), None, error[1]))
        if error[0] == TOO_MANY_PIXELS and deep:  # its pixels cannot be read here to say more: its header's depth
            res.findings.append(Finding("error", "bit depth", str(path), None, "deeper than 8 bits by its header, and "
                                        "too large to be read to see its range: convert it to 8 bits (with the "
                                        "camera's fixed range) before tiling it"))
    elif deep:
        _check_image(path, res)


def _check_image(path: Path, res: CheckResult) -> None:
    import cv2
    from PIL import Image

    error, _ = _image_header(path)
    if error:
        res.findings.append(Finding("error", error[0], str(path), None, error[1]))
        return
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully: catches truncated files that a header read misses
    except (OSError, SyntaxError, ValueError) as exc:
        res.findings.append(Finding("error", "unreadable image", str(path), None, f"{exc}; training would skip it"))
        return
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        res.findings.append(Finding("error", "unreadable image", str(path), None, "OpenCV cannot decode it"))
        return
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 3, 4):
        res.findings.append(Finding("error", "channels", str(path), None, f"{channels} channels: unsupported"))
    elif channels == 4:
        res.findings.append(Finding("warning", "channels", str(path), None, "4 channels: alpha is dropped"))
    if img.dtype == np.uint16:
        top = int(img.max())
        msg = f"16-bit (max value {top}): Ultralytics reads it as 8-bit by dividing by 256"
        if top < 4096:
            res.findings.append(Finding("error", "bit depth", str(path), None,
                                        msg + f", so this image spans only 0-{top // 256}: nearly black. "
                                        "'gradkit check --fix' rescales it to the full 8-bit range"))
        else:
            res.findings.append(Finding("warning", "bit depth", str(path), None, msg + _grey_levels_kept(img)))
    elif img.dtype not in (np.uint8, np.uint16):
        res.findings.append(Finding("error", "bit depth", str(path), None, f"pixel type {img.dtype}: unsupported"))


#: Fewer 8-bit grey levels than this left of a 16-bit image (a quarter of the range) and the warning says what to do:
#: a defect a few raw values from its texture then falls in the same level as it.
FEW_GREY_LEVELS = 64


def _grey_levels_kept(img: np.ndarray) -> str:
    """How many of the 256 levels a 16-bit image keeps once divided by 256 (in any colour channel; alpha is dropped),
    and where they are few in an image that is not one flat value, what to do."""
    shown = img[..., :3] if img.ndim == 3 else img
    kept = len(np.unique(shown >> 8))
    said = f", which keeps {kept} of 256 grey levels (values {int(shown.min())}-{int(shown.max())})"
    if kept >= FEW_GREY_LEVELS or shown.min() == shown.max():
        return said
    return (said + ": detail finer than 256 raw values is lost. Export 8-bit images through a window that holds "
            "the defects (the same window for every image, so brightness still compares)")


def label_values(parts: list[str]) -> tuple[int, float, float, float, float] | tuple[str, str]:
    """(class, x, y, w, h) of a 5-field label line, or (kind, why) where they are not numbers, not finite
    (NaN passes every comparison after this) or the class is not a whole number (Ultralytics reads "1.0"
    as class 1)."""
    try:
        c, x, y, w, h = (float(v) for v in parts)
    except ValueError:
        return "non-numeric", "not numbers"
    if not all(math.isfinite(v) for v in (c, x, y, w, h)):
        return "non-finite", "a value is not finite"
    if not c.is_integer():
        return "class id", f"class {parts[0]} is not a whole number"
    return int(c), x, y, w, h


#: Ultralytics reads a label file holding any line longer than this as polygons (class x1 y1 x2 y2 ...).
POLYGON_OVER_FIELDS = 6


def polygon_box(parts: list[str]) -> tuple[list[str] | None, str]:
    """The fields ``class x y w h`` Ultralytics makes of a polygon line (the box around its points), or None
    and why it cannot read the line."""
    coords = parts[1:]
    if len(coords) % 2:
        return None, f"{len(parts)} fields: a polygon is a class and x y pairs"
    try:
        xs, ys = [float(v) for v in coords[0::2]], [float(v) for v in coords[1::2]]
    except ValueError:
        return None, "polygon coordinates are not numbers"
    if not all(math.isfinite(v) for v in xs + ys):
        return None, "a polygon coordinate is not finite"
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return [parts[0], *(f"{v:.6f}" for v in ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0))], ""


def label_lines(path: Path, errors: str = "strict") -> list[tuple[int, str, list[str]]]:
    """(line number, text, fields) of each non-blank line, read as Ultralytics reads it (UTF-8, a byte-order
    mark allowed). Raises UnicodeDecodeError unless ``errors="replace"``."""
    text = path.read_text(encoding="utf-8-sig", errors=errors)
    return [(n, raw.strip(), raw.split()) for n, raw in enumerate(text.splitlines(), start=1) if raw.strip()]


def _box_fields(parts: list[str], polygons: bool) -> tuple[list[str] | None, str]:
    """The five box fields of a line in a file that holds polygons (``polygons``) or boxes, or None and why."""
    if len(parts) > POLYGON_OVER_FIELDS:
        return polygon_box(parts)
    if len(parts) == 5 and polygons:
        return None, ("a box line in a file of polygon lines: Ultralytics skips the whole image (it reads "
                      "every line as a polygon); --fix keeps both as boxes")
    if len(parts) != 5:
        return None, f"{len(parts)} fields, expected 5 (class x y w h)"
    return parts, ""


def _check_labels(path: Path, nc: int, split: str, res: CheckResult) -> list[tuple[int, list[float]]]:
    good = []
    seen = set()
    try:
        lines = label_lines(path)
    except UnicodeDecodeError as exc:
        res.findings.append(Finding("error", "encoding", str(path), None,
                                    f"not UTF-8 text ({exc.reason} at byte {exc.start}); Ultralytics cannot read it"))
        return good
    polygons = any(len(parts) > POLYGON_OVER_FIELDS for _, _, parts in lines)
    for n, line, parts in lines:
        where = str(path)
        fields, why = _box_fields(parts, polygons)
        if fields is None:
            res.findings.append(Finding("error", "label format", where, n, why))
            continue
        values = label_values(fields)
        if len(values) == 2:
            res.findings.append(Finding("error", values[0], where, n, f"{line!r}: {values[1]}"))
            continue
        c, x, y, w, h = values
        if not 0 <= c < nc:
            res.findings.append(Finding("error", "class id", where, n, f"class {c} but nc={nc}"))
            continue
        if w <= 0 or h <= 0:
            kind = "negative box" if min(w, h) < 0 else "zero-size box"  # reversed: a defect is there all the same
            res.findings.append(Finding("error", kind, where, n, f"w={w:g} h={h:g}"))
            continue
        if min(x - w / 2, y - h / 2) < -1e-6 or max(x + w / 2, y + h / 2) > 1 + 1e-6 or not (
                0 <= x <= 1 and 0 <= y <= 1):
            res.findings.append(Finding("error", "out of bounds", where, n, f"{line!r} leaves [0, 1]"))
            continue
        key = (c, round(x, 6), round(y, 6), round(w, 6), round(h, 6))
        if fields is not parts:  # Ultralytics keeps distinct polygons that share a box; only repeats are dropped
            key = (c, *(round(float(v), 6) for v in parts[1:]))
        if key in seen:
            res.findings.append(Finding("error", "duplicate box", where, n, "same class and box (or polygon) as "
                                        "an earlier line"))
            continue
        seen.add(key)
        good.append((c, [x, y, w, h]))
    return good


def _no_errors_since(res: CheckResult, start: int) -> bool:
    """No error among the findings added since ``start`` (an image and its label lines)."""
    return not any(f.severity == "error" for f in res.findings[start:])


def _no_labels_at_all(res: CheckResult, start: int, split: str, n: int, label_dir: Path) -> None:
    """One error instead of a warning per image: a split without a single label file is a wrong
    layout (Ultralytics stops with "No labels found"), not a set of background images."""
    res.findings[start:] = [f for f in res.findings[start:] if f.kind != "missing labels"]
    where = f"{label_dir} does not exist" if not label_dir.exists() else f"{label_dir} holds none of them"
    res.findings.append(Finding("error", "no labels", str(label_dir), None,
                                f"none of the {n} {split} images has a label file ({where}); labels must lie "
                                "in a labels/ folder beside images/, one IMAGE_STEM.txt per image"))


_NO_DOWNLOAD = " (the YAML's download: script is not run: gradkit never runs code from a data file)"


def _has_download(data_yaml: Path) -> bool:
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    return isinstance(data, dict) and bool(data.get("download"))


def _kind_of_place(path: Path) -> str:
    """What a place that is not there was meant to be: list files end in .txt by convention."""
    return "list file" if path.suffix.lower() == ".txt" else "folder"


#: Up to this many entries of one kind from one list file (or folder) are findings one by one; more are one
#: finding that counts them and names their lines, so a list written without ./ is not a page of errors.
ONE_BY_ONE = 3

#: Per kind of :class:`~gradkit.data.splits.ListedLine`: severity, finding kind, what one entry says, what
#: several say. Placeholders: text (the line, or a folder's image), ranges (the lines), n, split, first.
_LINE_FINDINGS = {
    "skipped": ("warning", "list file", "{text!r} does not end in an image suffix (spaces count): Ultralytics "
                "skips the line", "{n} lines ({ranges}) do not end in an image suffix (spaces count), e.g. "
                "{text!r}: Ultralytics skips them"),
    "missing": ("error", "missing image", "{text}: no such image (Ultralytics drops it)",
                "{n} lines ({ranges}) name no existing image, e.g. {text}: Ultralytics drops them"),
    "beside": ("error", "missing image", "{text}: no such image (Ultralytics drops it); it is beside the list "
               "file: write ./{text} (Ultralytics reads a line without ./ from the working folder)",
               "{n} lines ({ranges}) name images found only beside the list file, e.g. {text}: write them with a "
               "leading ./ (./{text}); Ultralytics reads a line without ./ from the working folder and drops them"),
    "repeated": ("warning", "listed twice", "{text}: in the {split} split already ({first}): Ultralytics trains on "
                 "it once more per epoch for each repeat", "{n} {entries} the {split} split holds "
                 "already, e.g. {text} ({first}): Ultralytics trains on each once more per epoch for each repeat"),
    "place repeated": ("warning", "listed twice", "given again in the {split} split (as {first}): Ultralytics reads "
                       "each of its images once more per epoch", ""),
}


def _line_ranges(lines: list[int]) -> str:
    """Line numbers as ranges: 1, 2, 3, 5 -> ``1-3, 5``."""
    runs: list[list[int]] = []
    for n in sorted(set(lines)):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def _line_findings(split: str, lines: list[ListedLine]) -> list[Finding]:
    """One finding per entry, or one per place and kind when there are more than :data:`ONE_BY_ONE`
    (a folder's repeated images: the count and an example). Errors first: they are what stops training."""
    groups: dict[tuple[Path, str], list[ListedLine]] = {}
    for ln in lines:
        groups.setdefault((ln.place, ln.why), []).append(ln)
    found = []
    for (place, why), group in groups.items():
        severity, kind, one, many = _LINE_FINDINGS[why]
        numbers = [g.line for g in group if g.line is not None]
        entries = f"lines ({_line_ranges(numbers)}) name images" if numbers else "images of this folder are ones"
        for ln in group if len(group) <= ONE_BY_ONE or not many else group[:1]:
            text = one if len(group) <= ONE_BY_ONE or not many else many
            found.append(Finding(severity, kind, str(place), ln.line, text.format(
                text=ln.text, n=len(group), ranges=_line_ranges(numbers), entries=entries, split=split,
                first=ln.first_seen)))
    return sorted(found, key=lambda f: f.severity != "error")


def missing_place(split: str, place: Path, severity: str, why: str = "") -> Finding:
    """A split's folder or list file that does not exist (``why``: what follows from it)."""
    return Finding(severity, "missing split", str(place), None, f"{split} {_kind_of_place(place)} does not exist{why}")


def _listing_findings(split: str, listed: SplitImages, download: bool) -> list[Finding]:
    """What a split's places and list files give no image for: each is a finding, never a silent drop."""
    found = [missing_place(split, p, "error", _NO_DOWNLOAD * download) for p in listed.absent]
    found += _line_findings(split, listed.lines)
    found += [Finding("warning", "unchecked image", str(img), None, f"a {img.suffix} image: Ultralytics trains on it, "
                      f"gradkit reads only {', '.join(IMAGE_SUFFIXES)} and did not check it or its labels")
              for img in listed.unchecked]
    found += [Finding("error", "unreadable image", str(link), None, f"a link to {os.readlink(link)}, which does not "
                      "exist (an unmounted share?): training would skip it and its labels")
              for link in listed.dangling]
    return found


def check_dataset(data_yaml: str | Path, images: bool = True,
                  split_places: dict[str, list[Path]] | None = None) -> CheckResult:
    """Check a dataset. ``images=False`` is the fast part run before training: labels, pairing and a
    header-level image check (unreadable, truncated, too small; pixels decoded for 16-bit images only)
    instead of a full decode, duplicate search and bit-depth check of every image. ``split_places``: each
    split's folders and list files as Ultralytics resolved them (its ``datasets_dir`` is not known here);
    else as read here."""
    data_yaml = Path(data_yaml)
    splits, names = _read_splits(data_yaml)
    res = CheckResult(names=names)
    data = read_dataset_yaml(data_yaml)
    res.findings += _yaml_findings(data_yaml, data, names)
    _, beside_only = _dataset_root(data_yaml, data)
    if split_places is not None:
        splits, beside_only = split_places, None
    if beside_only:
        res.findings.append(Finding("warning", "dataset YAML", str(data_yaml), None, beside_only))
    res.findings += shared_split_findings(splits, "error" if images else "warning")
    hashes: dict[str, tuple[str, Path]] = {}
    sharing: dict[tuple[str, str], list[Path]] = {}  # the folders a split shares with an earlier one: said once
    for split, other, place in shared_places(splits):
        sharing.setdefault((split, other), []).append(place)
    download = _has_download(data_yaml)
    for split, places in splits.items():
        listed = list_split_images(places)
        res.findings += _listing_findings(split, listed, download)
        if len(listed.absent) == len(places):
            continue
        if not listed.images and not listed.unchecked:  # Ultralytics stops: "No images found"
            res.findings.append(Finding("error", "no images", ", ".join(map(str, places)), None,
                                        f"the {split} split holds no image ({', '.join(IMAGE_SUFFIXES)}, ...)"))
        imgs = listed.images
        res.images[split], res.instances[split], res.background[split] = len(imgs), Counter(), 0
        first_finding, labelled = len(res.findings), 0
        for img in tqdm(imgs, desc=f"check {split}", unit="img", disable=len(imgs) < 200):
            image_findings = len(res.findings)
            if not images:
                _check_image_fast(img, res)
            else:
                _check_image(img, res)
                digest = hashlib.md5(img.read_bytes()).hexdigest()
                leak = _leak(hashes.get(digest), split, img, sharing)
                if leak:
                    res.findings.append(Finding("error", "leakage", str(img), None, leak))
                hashes.setdefault(digest, (split, img.resolve()))
            lab = _label_path(img)
            if not lab.exists():
                res.findings.append(Finding("warning", "missing labels", str(lab), None,
                                            "no label file: the image counts as defect-free background"))
                res.background[split] += _no_errors_since(res, image_findings)
                continue
            labelled += 1
            good = _check_labels(lab, len(names), split, res)
            res.background[split] += not good and _no_errors_since(res, image_findings)  # unreadable: not defect-free
            for c, (_, _, w, h) in good:
                res.instances[split][c] += 1
                res.rel_areas.append(w * h)
                res.aspects.append(max(w, h) / max(min(w, h), 1e-9))
        if imgs and not labelled:
            folder = next((d for d in places if d.is_dir()), imgs[0].parent)  # a list file's: its first image's
            _no_labels_at_all(res, first_finding, split, len(imgs), _label_path(folder / "x.png").parent)
        elif split == "train" and imgs and not res.instances[split] and not listed.unchecked:
            _no_defects(res, first_finding, places, len(imgs))
        _orphan_findings(places, imgs + listed.unchecked + listed.dangling, res)
    _unboxed_classes(res, str(data_yaml))
    return res


def _unboxed_classes(res: CheckResult, where: str) -> None:
    """A class the YAML names that no split holds an instance of, where others are there: training learns nothing
    of it and the reports call it absent (a converter left its only boxes out, an id no label uses)."""
    boxed = set().union(*res.instances.values()) if res.instances else set()
    unboxed = [name for c, name in sorted(res.names.items()) if c not in boxed]
    if boxed and unboxed:
        res.findings.append(Finding("warning", "class without instances", where, None,
                                    f"{', '.join(map(str, unboxed))}: no instance in any split; training learns "
                                    "nothing of it and the reports score it as absent"))


def _leak(first: tuple[str, Path] | None, split: str, image: Path,
          sharing: dict[tuple[str, str], list[Path]]) -> str | None:
    """Why ``image`` of ``split`` leaks, given the split and file its bytes were ``first`` seen in: a copy, or
    the file itself reached by two splits (a symlink, a list file naming another split's image); None where it
    does not, or where ``image`` (as the split lists it) lies in a place the two splits both read (``sharing``: that
    is one "shared split" finding; a shared list file: any of the split's images)."""
    if first is None or first[0] == split:
        return None
    if first[1] != image.resolve():
        return f"identical to {first[1]} in the {first[0]} split"
    if any(p.is_file() or image.is_relative_to(p) for p in sharing.get((split, first[0]), [])):
        return None
    return f"the same file as {first[1]}, which the {first[0]} split reads (a link or a list file reaches it)"


def shared_places(splits: dict[str, list[Path]]) -> list[tuple[str, str, Path]]:
    """(split, an earlier split, place) for each folder or list file a split reads that an earlier one reads too
    (however the YAML spells it)."""
    first: dict[Path, str] = {}
    shared = []
    for split, places in splits.items():
        for place in places:
            other = first.setdefault(place.resolve(), split)
            if other != split:
                shared.append((split, other, place))
    return shared


def shared_split_findings(splits: dict[str, list[Path]], severity: str) -> list[Finding]:
    """One finding per split reading another's images: its scores would measure memorisation, not detection.
    Training on it is allowed (a warning before training); the full check calls it the leakage it is."""
    return [Finding(severity, "shared split", str(place), None,
                    f"the {split} split reads {place}, which the {other} split reads too: scores on those images "
                    f"measure memorisation; give {split} images of its own")
            for split, other, place in shared_places(splits)]


def _no_defects(res: CheckResult, start: int, places: list[Path], images: int) -> None:
    """A training split without one labelled box: nothing to learn. Not said where an error in a label file since
    ``start`` already says why (its lines were unusable); images in formats gradkit does not read, whose labels it
    does not read either, are left to the caller."""
    if any(f.severity == "error" and Path(f.path).suffix == ".txt" for f in res.findings[start:]):
        return
    res.findings.append(Finding("error", "no defects", ", ".join(map(str, places)), None,
                                f"the train split holds no labelled defect: its {images} images are all background "
                                "(empty label files or none), and a detector learns its classes from labelled "
                                "examples; label some"))


def _orphan_findings(places: list[Path], imgs: list[Path], res: CheckResult) -> None:
    """Label files of a split's image folders without an image (a list file names only what it uses, so its
    neighbours are not judged)."""
    stems = {p.stem for p in imgs}
    for d in places:
        label_dir = _label_path(d / "x.png").parent
        if not d.is_dir() or not label_dir.is_dir():
            continue
        for lab in sorted(label_dir.rglob("*.txt")):
            if lab.stem not in stems:
                res.findings.append(Finding("warning", "orphan labels", str(lab), None, "no image for this file"))


@dataclass
class FixChange:
    """One thing ``fix_dataset`` changed in the copy: ``action`` is clipped, dropped, left out,
    rescaled or added; ``path`` and ``line`` name the original file and line."""

    path: str
    line: int | None
    action: str
    detail: str
    #: A dropped line that described a defect the image shows (not a duplicate, nor a box with no area or
    #: wholly off the image): its image cannot stay in the copy (``_lost_defect``).
    lost_defect: bool = False

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.action}: {self.detail}"


FIX_CHANGES_FILE = "fix-changes.txt"
MAX_PRINTED_CHANGES = 40  # ``gradkit check --fix`` prints this many; all are in FIX_CHANGES_FILE
_EDGE_TOLERANCE = 1e-6  # as the out-of-bounds test of _check_labels: closer to the edge is left alone


#: Why a box of zero width or height is dropped (followed by its sides): it describes nothing the image shows.
NO_AREA = "no area"


def _usable_box(fields: list[str], nc: int) -> tuple[tuple[int, float, float, float, float] | None, str]:
    """(class, x, y, w, h) of five box fields, or None and why ``--fix`` cannot keep them."""
    values = label_values(fields)
    if len(values) == 2:
        return None, values[1]
    c, _, _, w, h = values
    if not 0 <= c < nc:
        return None, f"class {c} but nc={nc}"
    if w < 0 or h < 0:  # reversed corners: a defect is marked, where is unknown (its image cannot stay)
        return None, f"negative width or height (w={w:g} h={h:g})"
    if w == 0 or h == 0:
        return None, f"{NO_AREA} (w={w:g} h={h:g})"
    return values, ""


#: Why a box wholly off its image is dropped: it describes nothing the image shows.
OUTSIDE_IMAGE = "entirely outside the image"


def _repair_line(line: str, nc: int) -> tuple[str | None, str]:
    """The line to keep (the user's own text when nothing is wrong) or None, and why it changed; a polygon
    becomes the box Ultralytics would make of it."""
    parts = line.split()
    fields, why = _box_fields(parts, polygons=False)
    if fields is None:
        return None, why
    if fields is not parts:
        fixed, clip_why = _repair_line(" ".join(fields), nc)
        return fixed, "polygon -> the box around it" + (f"; {clip_why}" if clip_why else "") if fixed else clip_why
    values, why = _usable_box(parts, nc)
    if values is None:
        return None, why
    c, x, y, w, h = values
    corners = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    if min(corners) >= -_EDGE_TOLERANCE and max(corners) <= 1 + _EDGE_TOLERANCE:
        return line, ""
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in corners)
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return None, OUTSIDE_IMAGE
    return f"{c} {(x0 + x1) / 2:.6f} {(y0 + y1) / 2:.6f} {x1 - x0:.6f} {y1 - y0:.6f}", "stuck out of the image"


def _repair_polygon(line: str, nc: int) -> tuple[str | None, str]:
    """A polygon line of a file of polygons, kept a polygon (Ultralytics reads it; distinct polygons sharing a
    box stay distinct): points outside the image clipped into it, what cannot be read dropped."""
    parts = line.split()
    fields, why = polygon_box(parts)
    if fields is None:
        return None, why
    values, why = _usable_box(fields, nc)
    if values is None:
        return None, why
    c = values[0]
    coords = [float(v) for v in parts[1:]]
    if all(-_EDGE_TOLERANCE <= v <= 1 + _EDGE_TOLERANCE for v in coords):
        return line, ""
    clipped = [min(max(v, 0.0), 1.0) for v in coords]
    if max(clipped[0::2]) - min(clipped[0::2]) <= 0 or max(clipped[1::2]) - min(clipped[1::2]) <= 0:
        return None, OUTSIDE_IMAGE
    return f"{c} " + " ".join(f"{v:.6f}" for v in clipped), "stuck out of the image"


def _repair_labels(path: Path, nc: int) -> tuple[list[str], list[FixChange]]:
    """Label lines for the copy: boxes sticking out clipped, what cannot be repaired dropped; each change listed.
    A file of polygons stays one; in a file mixing them with boxes (which Ultralytics skips), polygons become
    their boxes."""
    kept, changes, seen = [], [], {}
    lines = label_lines(path, errors="replace")  # undecodable bytes make a line unreadable: dropped
    polygons_only = any(len(p) > POLYGON_OVER_FIELDS for _, _, p in lines) and not any(len(p) == 5 for _, _, p in lines)
    for n, line, parts in lines:
        repair = _repair_polygon if polygons_only and len(parts) > POLYGON_OVER_FIELDS else _repair_line
        fixed, why = repair(line, nc)
        if fixed is None:
            shows_nothing = why == OUTSIDE_IMAGE or why.startswith(NO_AREA)
            changes.append(FixChange(str(path), n, "dropped", f"{line!r}: {why}", lost_defect=not shows_nothing))
            continue
        key = tuple(round(float(v), 6) for v in fixed.split())
        if key in seen:
            changes.append(FixChange(str(path), n, "dropped", f"{line!r}: duplicate of line {seen[key]}"))
            continue
        seen[key] = n
        if fixed != line:
            action = "converted" if why.startswith("polygon") else "clipped"
            changes.append(FixChange(str(path), n, action, f"{line!r} -> {fixed!r}: {why}"))
        kept.append(fixed)
    return kept, changes


def _unique(labels: dict[str, Path], label: str) -> str:
    """``label``, or with the first free `` #2``, `` #3``... when another place has it (same-named folders)."""
    k, unique = 1, label
    while unique in labels:
        k += 1
        unique = f"{label} #{k}"
    return unique


def _protected_places(split: str, places: list[Path]) -> dict[str, Path]:
    """A split's image and label folders, by label; for a list file, the file and the folders of the images
    it lists or names beside it without ./ (with their label folders), wherever they lie."""
    found: dict[str, Path] = {}
    for k, place in enumerate(places):
        tag = f" {k + 1}" if len(places) > 1 else ""
        if place.is_file():
            found[f"{split} list file{tag}"] = place
            listed = list_split_images([place])
            beside = [place.parent / ln.text for ln in listed.lines if ln.why == "beside"]  # the fix points there
            for d in sorted({img.parent for img in listed.images + listed.unchecked + beside}):
                # the path follows the label in every message; the folder's name keeps labels apart
                of = f"{d.name}/ of the images {place.name} lists"
                found[_unique(found, f"{split} folder {of}")] = d
                found[_unique(found, f"{split} label folder for {of}")] = _label_path(d / "x.png").parent
        else:
            found[f"{split} split folder{tag}"] = place
            found[f"{split} label folder{tag}"] = _label_path(place / "x.png").parent
    return found


def _fix_sources(data_yaml: Path, splits: dict[str, list[Path]]) -> dict[str, Path]:
    """Everything ``--fix`` reads: the YAML, the dataset root (a relative ``path:`` both beside the YAML and
    below the working directory, as Ultralytics reads it), each split's image and label folders (and list
    files)."""
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    root = Path(data.get("path") or data_yaml.parent)
    roots = ({"dataset root": root} if root.is_absolute() else
             {"dataset root (path: beside the YAML)": data_yaml.parent / root,
              "dataset root (path: below the working folder)": Path.cwd() / root})
    sources = {"dataset YAML": data_yaml}
    sources |= {label: r for label, r in roots.items() if r.exists()}
    for split, places in splits.items():
        sources |= _protected_places(split, places)
    return sources


def dataset_places(data_yaml: str | Path) -> dict[str, Path]:
    """Every place that holds the dataset: the YAML, the dataset root (``path:``; the YAML's folder
    without it), each split's image and label folders (a list file's: the file and the folders of the
    images it lists). Nothing gradkit writes may land on or inside one of them."""
    data_yaml = Path(data_yaml)
    splits, _ = _read_splits(data_yaml)
    return _fix_sources(data_yaml, splits)


def dataset_place_of(path: Path, data_yaml: str | Path) -> tuple[str, Path] | None:
    """(label, place) of the :func:`dataset_places` entry ``path`` is or lies inside; None if none."""
    path = Path(path).resolve()
    for label, place in dataset_places(data_yaml).items():
        place = place.resolve()
        if path == place or path.is_relative_to(place):
            return label, place
    return None


def beside_dataset(data_yaml: Path, sources: dict[str, Path], suffix: str) -> Path:
    """The default output of a command that writes a copy: beside the dataset root (the YAML's folder without
    ``path:``), named after it with ``suffix``."""
    root = next((p for k, p in sources.items() if k.startswith("dataset root")), data_yaml.parent).resolve()
    return root.parent / f"{root.name}{suffix}"


def fix_output(data_yaml: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Where ``fix_dataset`` would write (default: ``<dataset root>-fixed``); ``ValueError`` if refused:
    ``out`` resolves to, contains or lies inside the dataset or a split folder, or is not empty
    without ``overwrite``."""
    data_yaml = Path(data_yaml)
    splits, _ = _read_splits(data_yaml)
    for split, places in splits.items():
        if is_listed(places):
            raise ValueError(f"{data_yaml}: {split}: {'a list' if len(places) > 1 else 'a list file'}; check --fix "
                             "writes its copy from one image folder per split (check and train read the list)")
    if shared := shared_places(splits):
        split, other, place = shared[0]
        raise ValueError(f"{data_yaml}: {split}: reads {place}, which the {other} split reads too; check --fix writes "
                         f"each image into one split, so {split} would lose them: give {split} images of its own "
                         "first")
    sources = _fix_sources(data_yaml, splits)
    if out is None:
        out = beside_dataset(data_yaml, sources, "-fixed")
    from gradkit.data.output import OutputFolder

    return OutputFolder.precheck(out, sources, overwrite, "check --fix")


def _rescale_16bit(src: Path, dst: Path) -> str:
    import cv2

    raw = read_upright(src).astype(np.float32)  # the copy carries no EXIF: its pixels must be upright
    lo, hi = np.percentile(raw, [0.1, 99.9])
    cv2.imwrite(str(dst), np.clip((raw - lo) / max(hi - lo, 1) * 255, 0, 255).astype(np.uint8))
    return f"16-bit values {lo:.0f}-{hi:.0f} stretched to 0-255"


def _fix_plan(splits: dict[str, list[Path]], left_out: dict[str, str],
              low16: set[str]) -> list[tuple[Path, Path, Path]]:
    """(source image, image in the copy, label in the copy) for each image kept; folders below a split kept.
    One folder per split (``fix_output`` refuses the rest)."""
    plan, taken = [], {}
    for split, (d,) in splits.items():
        for img in list_split_images([d]).images:
            if str(img) not in left_out:
                rel = Path(split, img.relative_to(d))
                rel_img = rel.with_suffix(".png") if str(img) in low16 else rel
                first = taken.setdefault(rel_img, img)
                if first != img:  # a stretched a.tif becomes a.png: one of the two would be lost
                    raise ValueError(f"{img} would be written to the copy as images/{rel_img.as_posix()}, which "
                                     f"{first} takes: rename one of them first")
                plan.append((img, Path("images", rel_img), Path("labels", rel).with_suffix(".txt")))
    return plan


def _repaired_labels(splits: dict[str, list[Path]], left_out: dict[str, str],
                     nc: int) -> dict[str, tuple[list[str], list[FixChange]]]:
    """:func:`_repair_labels` of every image not left out that has a label file, by the image's path."""
    repaired = {}
    for (folder,) in splits.values():
        for img in list_split_images([folder]).images:
            if str(img) not in left_out and (lab := _label_path(img)).exists():
                repaired[str(img)] = _repair_labels(lab, nc)
    return repaired


def _lost_defect(lab_changes: list[FixChange]) -> str | None:
    """Why an image must leave the copy when a line describing one of its defects was dropped (``lost_defect``):
    kept with the rest of its labels, it would teach that defect as background. Ultralytics' own verification
    leaves an image with such a line (a class out of range, values it cannot read) out of training too."""
    lost = next((c for c in lab_changes if c.lost_defect), None)
    if lost is None:
        return None
    return (f"line {lost.line} of {Path(lost.path).name} cannot be repaired ({lost.detail}): without it the image "
            "shows a defect its labels do not describe, which would be taught as background")


def _fixed_yaml(data_yaml: Path, out: Path, splits: dict[str, list[Path]], names: dict[int, str],
                changes: list[FixChange]) -> str:
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8")) or {}
    if data.pop("download", None) is not None:
        changes.append(FixChange(str(data_yaml), None, "dropped", "download: key (gradkit never runs code from a "
                                                                   "data file)"))
    return yaml.safe_dump({**data, "path": str(out), "names": names, **{s: f"images/{s}" for s in splits}},
                          sort_keys=False, allow_unicode=True)


def fix_dataset(data_yaml: str | Path, out: str | Path | None = None, overwrite: bool = False,
                checked: CheckResult | None = None) -> tuple[Path, list[FixChange]]:
    """Write a cleaned copy and list every change: boxes sticking out clipped, unrepairable label lines
    and duplicates dropped, images with errors (unreadable, cross-split duplicate, ...) left out, low
    16-bit images rescaled to 8 bits. The original is never written (see ``fix_output``); ``checked``
    reuses a ``check_dataset`` result. Returns the new ``data.yaml`` and the changes."""
    from gradkit.data.output import OutputFolder

    data_yaml = Path(data_yaml)
    splits, names = _read_splits(data_yaml)
    out = fix_output(data_yaml, out, overwrite)
    res = checked or check_dataset(data_yaml)
    errors = [f for f in res.errors if Path(f.path).suffix.lower() in IMAGE_SUFFIXES]
    rescalable = {f.path for f in errors if f.kind == "bit depth" and "16-bit" in f.message}
    left_out = {f.path: f"{f.kind}: {f.message}" for f in errors
                if not (f.kind == "bit depth" and f.path in rescalable)}
    low16 = rescalable - set(left_out)
    changes = [FixChange(p, None, "left out", why) for p, why in left_out.items()]
    changes += [FixChange(f.path, None, "left out", "label file without an image")
                for f in res.findings if f.kind == "orphan labels"]
    changes += [FixChange(f.path, None, "left out", f"{Path(f.path).suffix} image: gradkit does not read the format, "
                          "so the copy has neither it nor its labels") for f in res.findings
                if f.kind == "unchecked image"]
    repaired = _repaired_labels(splits, left_out, len(names))
    lost = {img: why for img, (_, lab_changes) in repaired.items() if (why := _lost_defect(lab_changes))}
    changes += [FixChange(img, None, "left out", why) for img, why in lost.items()]
    left_out.update(lost)
    plan = _fix_plan(splits, left_out, low16)
    folder = OutputFolder(out, _fix_sources(data_yaml, splits), overwrite, "check --fix",
                          [p for img, _, _ in plan for p in (img, _label_path(img))])
    folder.plan([*(a for _, a, _ in plan), *(b for _, _, b in plan), "data.yaml", FIX_CHANGES_FILE])
    for img, rel_img, rel_label in tqdm(plan, desc="fix", unit="img", disable=len(plan) < 200):
        if str(img) in low16:
            why = _rescale_16bit(img, folder.path(rel_img.as_posix()))
            changes.append(FixChange(str(img), None, "rescaled", f"{why}; written as {rel_img}"))
        else:
            shutil.copyfile(img, folder.path(rel_img.as_posix()))
        if str(img) in repaired:
            kept, lab_changes = repaired[str(img)]
            changes += lab_changes
        else:
            kept = []
            changes.append(FixChange(str(_label_path(img)), None, "added",
                                     "no label file: written empty (defect-free background)"))
        folder.path(rel_label.as_posix()).write_text("".join(f"{x}\n" for x in kept), encoding="utf-8")
    folder.path("data.yaml").write_text(_fixed_yaml(data_yaml, folder.root, splits, names, changes), encoding="utf-8")
    folder.path(FIX_CHANGES_FILE).write_text("".join(f"{c}\n" for c in changes), encoding="utf-8")
    return folder.root / "data.yaml", changes
