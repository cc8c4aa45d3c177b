"""A tiled copy of a dataset: each image cut into overlapping tiles at its own resolution (pure data code).

Why: a defect of a few pixels on a large camera image is lost when Ultralytics letterboxes the image
down to ``imgsz`` (a 1 px line keeps 35% of its contrast at 0.5x: README, "Why thin defects fail").
Training on tiles of ``imgsz`` pixels keeps every pixel; ``gradkit plan`` names this command when the
defects need a larger size than it trains at and the images are larger than that, or when the images
are at least ``TILE_FROM`` times the size it chooses.

Geometry: along each side, tiles of ``size`` pixels are evenly spaced from the first pixel to the last,
neighbours overlapping by at least ``overlap`` pixels. Every box whose sides are at most ``overlap``
then lies whole in at least one tile (``tile_starts``). The default overlap is the longest box side of
the dataset, at most half a tile. An image no larger than ``size`` is one tile, the whole image.

Labels: a box cut by a tile's edge is kept in that tile, clipped to it, when at least
``min_visibility`` of the most any tile holds of it lies inside; else it is dropped there. For a box
whole in some tile that is a share of the box itself, and the dropped part lies whole in a neighbour.
A box whole in no tile (longer than the overlap or the tile) is kept as its largest parts, so it is
not left unlabelled on every tile that shows it; the summary counts such boxes, because for a long
diagonal line many of those parts hold only background. A clipped box is exact for a defect that
fills its box (a pit, a stain) and may be loose for a thin diagonal line: a box label does not say
where inside it the line runs; for a box whole in some tile, at the default ``min_visibility``, it
still holds part of a straight line (``MIN_VISIBILITY``). Tiles are written as PNG with the pixels
Ultralytics reads from the source: upright (the EXIF orientation applied) and 8 bits (a 16-bit image's
high byte, as its reader keeps), with ``tiles.csv`` mapping each tile to its source image and place.
The dataset is never written into; what the check before training calls an error stops the command
before anything is written.
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from gradkit.data.check import (
    POLYGON_OVER_FIELDS,
    CheckResult,
    _check_labels,
    _fix_sources,
    _label_path,
    _read_splits,
    beside_dataset,
    label_lines,
    read_dataset_yaml,
)
from gradkit.data.orientation import read_upright
from gradkit.data.splits import list_split_images

__all__ = ["MAX_OVERLAP_SHARE", "MIN_VISIBILITY", "SIZE_STEP", "TILE_RECORD", "TileSummary", "auto_overlap",
           "check_tile_args", "tile_dataset", "tile_output", "tile_starts", "tiled_copy_of"]

#: Share of a cut box's area that must lie in a tile for the tile to keep it (clipped). Half: the kept part
#: then spans at least half the box each way, so it cannot miss either diagonal, and a straight line's
#: clipped box always holds part of the line (below half, a corner the line never crosses can be kept as a
#: box of background). A box mostly outside the tile is dropped there and lies whole in a neighbour.
MIN_VISIBILITY = 0.5
#: The overlap never exceeds this share of a tile: beyond it tiles repeat most of each other's pixels.
MAX_OVERLAP_SHARE = 0.5
#: Tiles are a multiple of this: Ultralytics rounds ``imgsz`` up to its largest stride, which would enlarge
#: every tile by a little and lose the native scale the tiles are for.
SIZE_STEP = 32
#: A share of a box at least this is the whole box (float slack of the pixel arithmetic).
WHOLE = 1 - 1e-9
#: A part that a tile's edge cuts to less than this many pixels (and to less than its box) is dropped: it
#: shows next to nothing of the defect, and the thinnest would write as a zero-size box. A box that is
#: itself under a pixel across (a 1 px line's box can compute to 0.9999 px) is kept where not cut.
MIN_PART_PX = 1.0
TILES_CSV = "tiles.csv"


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """The first pixel of each tile along a side of ``length`` pixels: evenly spaced, the last tile ending at
    the last pixel, consecutive starts at most ``size - overlap`` apart (so a span of at most ``overlap``
    pixels lies whole in one tile). One tile, at 0, when the side fits."""
    if length <= size:
        return [0]
    step = size - overlap
    n = math.ceil((length - overlap) / step)
    return [k * (length - size) // (n - 1) for k in range(n)]


def auto_overlap(longest_side: float, size: int) -> int:
    """``overlap=auto``: the longest box side (pixels), so every box lies whole in some tile, at most
    ``MAX_OVERLAP_SHARE`` of a tile."""
    # to a thousandth of a pixel: a side read back from float32 labels (121 px as 121.00001) is not a pixel more
    return min(math.ceil(round(longest_side, 3)), int(size * MAX_OVERLAP_SHARE))


#: The key ``tile_dataset`` writes into the copy's data.yaml: where the tiles came from and how they were cut.
TILE_RECORD = "gradkit_tile"


def tiled_copy_of(data_yaml: str | Path) -> dict | None:
    """The record (``source`` data.yaml, ``size``, ``overlap``) of a copy ``tile_dataset`` wrote, None for any
    other dataset YAML. The file is read back, so untrusted: ``ValueError`` naming it and the key when the
    record is not what ``tile_dataset`` writes."""
    path = Path(data_yaml)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None  # not a file gradkit can read as YAML: not one tile_dataset wrote
    record = doc.get(TILE_RECORD) if isinstance(doc, dict) else None
    if record is None:
        return None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: {TILE_RECORD} is not a mapping (gradkit tile writes source, size and overlap)")
    for key, kind in (("source", str), ("size", int), ("overlap", int)):
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise ValueError(f"{path}: {TILE_RECORD}.{key} is {record.get(key)!r}, not the {kind.__name__} gradkit "
                             "tile writes")
    if record["size"] < 1 or record["overlap"] < 0:
        raise ValueError(f"{path}: {TILE_RECORD} says size {record['size']}, overlap {record['overlap']}: gradkit tile "
                         "writes a positive size and an overlap of 0 or more")
    return {"source": record["source"], "size": record["size"], "overlap": record["overlap"]}


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 'es' if noun.endswith('x') else 's'}"


@dataclass
class TileSummary:
    """What ``tile_dataset`` wrote, per split (``counts``): ``images`` read, ``unlabelled`` (no label file:
    defect-free), ``small`` (smaller than a tile: one tile, the whole image), ``tiles`` written, ``empty`` (defect-free,
    written) and ``empty_left_out`` (``keep_empty``); of the source boxes, ``boxes``, ``whole`` (whole in
    at least one tile) and ``never_whole`` (kept as parts; their images in ``never_whole_images``); of the
    box copies in tiles, ``copies`` (label lines written), ``clipped`` (of them) and ``dropped`` (cut-off
    parts, and boxes repeated within a tile, not written)."""

    size: int
    overlap: int
    min_visibility: float
    counts: dict[str, Counter] = field(default_factory=dict)
    never_whole_images: list[Path] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"tiles of {self.size} px, neighbours overlapping by at least {self.overlap} px; a cut box is kept in "
               f"a tile when at least {self.min_visibility:g} of it (of the most a tile can hold of it) lies inside"]
        if self.min_visibility < MIN_VISIBILITY:
            out.append(f"note: min_visibility below {MIN_VISIBILITY:g} can keep a cut line's box where only "
                       "background lies (README, Large images)")
        out += [self._split_line(split, c) for split, c in self.counts.items()]
        if self.never_whole_images:
            shown = ", ".join(map(str, self.never_whole_images[:3]))
            more = f" and {len(self.never_whole_images) - 3} more" if len(self.never_whole_images) > 3 else ""
            out.append(f"warning: boxes whole in no tile, kept as their largest parts (a long diagonal line's parts "
                       f"may hold only background), in {shown}{more}: raise overlap= (at most "
                       f"{int(self.size * MAX_OVERLAP_SHARE)}) or size= until none is left")
        out += [f"left out: {why}" for why in self.left_out]
        return out

    def _split_line(self, split: str, c: Counter) -> str:
        line = (f"{split}: {_n(c['images'], 'image')} -> {_n(c['tiles'], 'tile')} ({c['empty']} defect-free"
                + (f"; {c['empty_left_out']} more left out by keep_empty" if c["empty_left_out"] else "")
                + f"); {_n(c['boxes'], 'box')}: {c['whole']} whole in at least one tile")
        if c["never_whole"]:
            line += f", {c['never_whole']} in none"
        line += f"; at tile edges {c['clipped']} clipped copies kept, {c['dropped']} cut-off parts dropped"
        if c["unlabelled"]:
            line += f"; {_n(c['unlabelled'], 'image')} without a label file (defect-free)"
        if c["small"]:
            line += (f"; {_n(c['small'], 'image')} smaller than a tile, each one whole tile (training at "
                     f"imgsz={self.size} enlarges " + ("it)" if c["small"] == 1 else "them)"))
        return line


def check_tile_args(size: object, overlap: object, min_visibility: object, keep_empty: object) -> None:
    """``ValueError`` naming the first bad value (run before the output folder or the dataset is read)."""
    if not isinstance(size, int) or isinstance(size, bool) or size < SIZE_STEP or size % SIZE_STEP:
        below = size // SIZE_STEP * SIZE_STEP if isinstance(size, int) and not isinstance(size, bool) else 0
        near = f" ({below} or {below + SIZE_STEP})" if below >= SIZE_STEP else f" ({SIZE_STEP} or more)"
        raise ValueError(f"size={size!r}: takes a whole number of pixels, a multiple of {SIZE_STEP}{near}: "
                         "Ultralytics rounds imgsz up to one and would enlarge the tiles")
    cap = int(size * MAX_OVERLAP_SHARE)
    if overlap is not None and (not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= cap):
        raise ValueError(f"overlap={overlap!r}: takes auto or 0 to {cap} px ({MAX_OVERLAP_SHARE:g} of size={size})")
    for key, value in (("min_visibility", min_visibility), ("keep_empty", keep_empty)):
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            raise ValueError(f"{key}={value!r}: takes a share from 0 to 1")


def tile_output(data_yaml: str | Path, out: str | Path | None, size: int, overwrite: bool = False) -> Path:
    """Where ``tile_dataset`` writes (default ``<dataset root>-tiles<size>``); ``OutputRefused`` if ``out``
    is on, in or around the dataset, or not empty without ``overwrite``."""
    from gradkit.data.output import OutputFolder

    data_yaml = Path(data_yaml)
    splits, _ = _read_splits(data_yaml)
    sources = _fix_sources(data_yaml, splits)
    if out is None:
        out = beside_dataset(data_yaml, sources, f"-tiles{size}")
    return OutputFolder.precheck(out, sources, overwrite, "tile")


def _boxes(img: Path, nc: int, split: str) -> list[tuple[int, list[float]]] | None:
    """The image's boxes (class, normalised xywh), None without a label file; ``ValueError`` naming the file
    and line of a label error or a polygon (the tiles' labels are boxes: a polygon would lose its shape)."""
    lab = _label_path(img)
    if not lab.exists():
        return None
    polygon = next((n for n, _, parts in label_lines(lab, errors="replace") if len(parts) > POLYGON_OVER_FIELDS),
                   None)
    if polygon is not None:
        raise ValueError(f"{lab}:{polygon}: a polygon; tile writes box labels and would lose its shape "
                         "(tile a dataset of box labels)")
    res = CheckResult()
    boxes = _check_labels(lab, nc, split, res)
    if res.errors:
        first = res.errors[0]
        raise ValueError(f"{first.path}:{first.line}: {first.kind}: {first.message} (gradkit check data=... lists "
                         "every label error; gradkit check --fix writes a repaired copy to tile)")
    return boxes


def _pixel_boxes(boxes: list[tuple[int, list[float]]], w: int, h: int) -> list[tuple[int, np.ndarray]]:
    return [(c, np.array([(x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h]))
            for c, (x, y, bw, bh) in boxes]


def _visible(box: np.ndarray, x0: int, y0: int, tw: int, th: int) -> tuple[float, np.ndarray]:
    """The share of ``box`` (x0, y0, x1, y1 pixels) inside the tile, and its part there."""
    part = np.array([max(box[0], x0), max(box[1], y0), min(box[2], x0 + tw), min(box[3], y0 + th)])
    if part[2] <= part[0] or part[3] <= part[1]:
        return 0.0, part
    return float((part[2] - part[0]) * (part[3] - part[1]) / ((box[2] - box[0]) * (box[3] - box[1]))), part


def _tile_labels(boxes: list[tuple[int, np.ndarray]], best: list[float], x0: int, y0: int, tw: int, th: int,
                 min_visibility: float, counts: Counter) -> list[str]:
    """YOLO label lines of one tile at (x0, y0) of tw x th pixels, each once. A cut box is kept (clipped) when
    its share inside is at least ``min_visibility`` of ``best``, the most any tile holds of it (1 for a box
    whole in some tile; less for one longer than the overlap, which is then kept as its largest parts)."""
    lines: list[str] = []
    for (c, box), most in zip(boxes, best, strict=True):
        share, (cx0, cy0, cx1, cy1) = _visible(box, x0, y0, tw, th)
        if share == 0:
            continue
        sliver = (cx1 - cx0 < min(MIN_PART_PX, box[2] - box[0]) - 1e-6
                  or cy1 - cy0 < min(MIN_PART_PX, box[3] - box[1]) - 1e-6)
        if share < WHOLE and (share < min_visibility * most - 1e-9 or sliver):
            counts["dropped"] += 1
            continue
        line = (f"{c} {((cx0 + cx1) / 2 - x0) / tw:.6f} {((cy0 + cy1) / 2 - y0) / th:.6f} "
                f"{(cx1 - cx0) / tw:.6f} {(cy1 - cy0) / th:.6f}")
        if line in lines:  # two boxes cut to the same part: Ultralytics would count one, the check an error
            counts["dropped"] += 1
            continue
        counts["clipped"] += share < WHOLE
        counts["copies"] += 1
        lines.append(line)
    return lines


@dataclass
class _Tile:
    """One tile to write: its source image, place and size, its label lines and file stem."""

    split: str
    source: Path
    x: int
    y: int
    width: int
    height: int
    labels: list[str]
    name: str

    def rel(self, sub: str) -> str:
        """Its path in the copy: ``images`` (PNG) or ``labels`` (text)."""
        return f"{sub}/{self.split}/{self.name}{'.png' if sub == 'images' else '.txt'}"


_Source = tuple[Path, int, int, list | None]  # (image, upright width, height, boxes in pixels or None)


def _split_sources(split: str, places: list[Path], nc: int, left_out: list[str]) -> list[_Source]:
    """A split's images, from headers and labels (16-bit pixels decoded, as the check before training does);
    ``ValueError`` for what that check calls an error, before anything is written. What the copy leaves out
    or holds once (unread formats, lines Ultralytics skips, repeats) goes to ``left_out``."""
    from PIL import Image

    from gradkit.data.check import TOO_MANY_PIXELS, _check_image_fast, _line_findings
    from gradkit.data.orientation import headers_of_any_size, upright_size

    listed = list_split_images(places)
    if listed.absent:
        raise ValueError(f"{split}: {', '.join(map(str, listed.absent))} does not exist (gradkit check data=... "
                         "says what each split holds)")
    stop = next((f for f in _line_findings(split, listed.lines) if f.severity == "error"), None)
    if stop is not None:
        raise ValueError(f"{stop.path}:{stop.line}: {stop.message}")
    if not listed.images:
        raise ValueError(f"{split}: no images in {', '.join(map(str, places))} (gradkit check data=... says why)")
    left_out += [f"{img}: a {img.suffix} image (gradkit does not read the format)" for img in listed.unchecked]
    left_out += [f"{ln.place}{f':{ln.line}' if ln.line else ''}: {ln.text!r} "
                 + ("is not an image path (Ultralytics skips it too)" if ln.why == "skipped" else
                    "given again: tiled once, where Ultralytics trains on it once per listing")
                 for ln in listed.lines if ln.why in ("skipped", "repeated", "place repeated")]
    found = []
    for img in listed.images:
        res = CheckResult()
        _check_image_fast(img, res)
        errors = [f for f in res.errors if f.kind != TOO_MANY_PIXELS]  # what tiling is for: OpenCV decodes it
        if errors:
            first = errors[0]
            hint = (" (gradkit check --fix stretches each image once, where tiles would each be stretched apart)"
                    if first.kind == "bit depth" else "")
            raise ValueError(f"{img}: {first.kind}: {first.message}{hint}")
        with headers_of_any_size(), Image.open(img) as im:
            w, h = upright_size(im)
        boxes = _boxes(img, nc, split)
        found.append((img, w, h, None if boxes is None else _pixel_boxes(boxes, w, h)))
    if all(boxes is None for *_, boxes in found):
        raise ValueError(f"{split}: none of its {len(found)} images has a label file (beside images/ in labels/, "
                         "one IMAGE_STEM.txt each; gradkit check data=... says the same)")
    return found


def _plan_image(split: str, source: _Source, stem: str, size: int, overlap: int, min_visibility: float,
                keep_empty, counts: Counter) -> tuple[list[_Tile], bool]:
    """The tiles of one image, and whether a box lies whole in none of them; ``keep_empty()`` says whether to
    keep a defect-free tile."""
    img, w, h, boxes = source
    boxes = boxes or []
    counts["images"] += 1
    counts["unlabelled"] += source[3] is None
    counts["small"] += max(w, h) < size
    tw, th = min(size, w), min(size, h)
    places = [(x0, y0) for y0 in tile_starts(h, size, overlap) for x0 in tile_starts(w, size, overlap)]
    best = [max(_visible(b, x0, y0, tw, th)[0] for x0, y0 in places) for _, b in boxes]
    counts["boxes"] += len(boxes)
    counts["whole"] += sum(most >= WHOLE for most in best)
    counts["never_whole"] += sum(most < WHOLE for most in best)
    tiles = []
    for x0, y0 in places:
        tile_counts: Counter = Counter()
        lines = _tile_labels(boxes, best, x0, y0, tw, th, min_visibility, tile_counts)
        if not lines and not keep_empty():
            counts["empty_left_out"] += 1
            continue
        counts.update(tile_counts)
        counts["tiles"] += 1
        counts["empty"] += not lines
        tiles.append(_Tile(split, img, x0, y0, tw, th, lines, f"{stem}_x{x0}_y{y0}"))
    return tiles, any(most < WHOLE for most in best)


def _plan_tiles(sources: dict[str, list[_Source]], size: int, overlap: int, min_visibility: float,
                keep_empty: float, seed: int, summary: TileSummary) -> list[_Tile]:
    """Every tile to write, with its labels; counts go to ``summary``. ``ValueError`` when a split would be
    left without a tile."""
    rng = random.Random(seed)
    tiles = []
    for split, images in sources.items():
        counts = summary.counts.setdefault(split, Counter())
        used: set[str] = set()
        keep = (lambda: rng.random() < keep_empty) if split == "train" else (lambda: True)
        for source in images:
            stem, k = source[0].stem, 1
            while stem in used:  # same-named images from different folders or list lines
                k += 1
                stem = f"{source[0].stem}-{k}"
            used.add(stem)
            kept, cut = _plan_image(split, source, stem, size, overlap, min_visibility, keep, counts)
            tiles += kept
            if cut:
                summary.never_whole_images.append(source[0])
        if not counts["tiles"]:
            raise ValueError(f"{split}: keep_empty={keep_empty:g} leaves no tile (none of its tiles holds a defect)")
    return tiles


def _write_tiles(folder, tiles: list[_Tile]) -> None:
    """Each tile's pixels (as Ultralytics reads the source: upright, 8 bits) and labels; each image decoded
    once (its tiles are consecutive)."""
    import cv2

    pixels, decoded = None, None
    for t in tiles:
        if decoded != t.source:
            pixels, decoded = read_upright(t.source), t.source
            if pixels is None:
                raise ValueError(f"{t.source}: unreadable image (gradkit check data=... names every one)")
            if pixels.dtype == np.uint16:  # what Ultralytics' reader keeps of 16 bits: the high byte
                pixels = (pixels >> 8).astype(np.uint8)
            if pixels.shape[0] < t.y + t.height or pixels.shape[1] < t.x + t.width:
                raise ValueError(f"{t.source}: its pixels ({pixels.shape[1]} x {pixels.shape[0]}) are smaller than its "
                                 "header says (gradkit check data=... reads every image)")
        cv2.imwrite(str(folder.path(t.rel("images"))), pixels[t.y:t.y + t.height, t.x:t.x + t.width])
        folder.path(t.rel("labels")).write_text("".join(f"{ln}\n" for ln in t.labels), encoding="utf-8")


#: Keys of the source's data.yaml that say how Ultralytics reads its images (``channels: 1``: gray, a first layer of
#: one channel): the tiles hold the same pixels, so the copy says the same.
READ_AS_KEYS = ("channels",)


def _read_as(data_yaml: Path) -> dict:
    """The source YAML's READ_AS_KEYS it sets."""
    doc = read_dataset_yaml(data_yaml)
    return {k: doc[k] for k in READ_AS_KEYS if k in doc}


def tile_dataset(data_yaml: str | Path, size: int, out: str | Path | None = None, overlap: int | None = None,
                 min_visibility: float = MIN_VISIBILITY, keep_empty: float = 1.0, seed: int = 0,
                 overwrite: bool = False) -> tuple[Path, TileSummary]:
    """Write a tiled copy of the dataset (every split) and its ``data.yaml``; returns that YAML and what was
    written. ``overlap`` None: the longest box side, at most half a tile. ``keep_empty``: the share of the
    training split's defect-free tiles kept (seeded; the other splits keep all, so validation still
    counts false alarms on good surface)."""
    from gradkit.data.output import OutputFolder

    check_tile_args(size, overlap, min_visibility, keep_empty)
    data_yaml = Path(data_yaml)
    splits, names = _read_splits(data_yaml)
    out = tile_output(data_yaml, out, size, overwrite)
    left_out: list[str] = []
    sources = {split: _split_sources(split, places, len(names), left_out) for split, places in splits.items()}
    if overlap is None:
        longest = max((max(b[2] - b[0], b[3] - b[1]) for images in sources.values() for *_, boxes in images
                       for _, b in boxes or []), default=0.0)
        overlap = auto_overlap(longest, size)
    summary = TileSummary(size, overlap, min_visibility)
    summary.left_out = left_out
    tiles = _plan_tiles(sources, size, overlap, min_visibility, keep_empty, seed, summary)
    folder = OutputFolder(out, _fix_sources(data_yaml, splits), overwrite, "tile",
                          [p for images in sources.values() for img, *_ in images for p in (img, _label_path(img))])
    folder.plan([t.rel(sub) for t in tiles for sub in ("images", "labels")] + ["data.yaml", TILES_CSV])
    _write_tiles(folder, tiles)
    doc = {"path": str(folder.root), **{split: f"images/{split}" for split in splits}, "names": names,
           **_read_as(data_yaml), TILE_RECORD: {"source": str(data_yaml.resolve()), "size": size, "overlap": overlap,
                            "min_visibility": min_visibility, "keep_empty": keep_empty, "seed": seed}}
    folder.path("data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    with folder.path(TILES_CSV).open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([("tile", "source", "x", "y", "width", "height"),
                                 *((t.rel("images"), t.source, t.x, t.y, t.width, t.height) for t in tiles)])
    return folder.root / "data.yaml", summary
