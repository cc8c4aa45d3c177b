"""Dataset fingerprint: the measurements ``gradkit plan`` decides from (in the spirit of nnU-Net).

Pure data code: reads a YOLO ``data.yaml``, its training images and labels, and measures image
sizes, channels and bit depth, box sizes (relative to the image, and in pixels at any ``imgsz``),
elongation, an estimate of each defect's stroke width, how much each defect stands out from the
texture around it (``gradkit.data.standout``), class balance and the defect-free share.

Pixel sizes at an ``imgsz`` follow Ultralytics' letterbox: the long image side is scaled to
``imgsz``, so a box of relative width ``w`` on a ``W x H`` image is ``w * W * imgsz / max(W, H)``
pixels wide in training.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradkit.data.check import (
    CheckResult,
    _check_labels,
    _label_path,
    _line_findings,
    _read_splits,
    read_dataset_yaml,
    shared_places,
)
from gradkit.data.orientation import read_upright
from gradkit.data.splits import UNREAD, SplitImages, list_split_images
from gradkit.data.standout import STANDS_OUT, defect_share, screening_crop

__all__ = ["THIN_MAX_FILL", "THIN_WIDTH_PX", "Fingerprint", "fingerprint_dataset", "stroke_width"]

#: A defect whose stroke is at most this many pixels wide (at the native resolution) counts as thin:
#: the 1-2 px scratches and cracks of issue 13, with a pixel of anti-aliasing.
THIN_WIDTH_PX = 3.0
#: ... and fills less than this share of its box (a disc fills 0.79, a diagonal line < 0.1): the width
#: estimate cannot tell a stroke from the inside of a soft blob, the fill can.
THIN_MAX_FILL = 0.2
#: Long over short box side above which a box counts as elongated (the report's elongation bucket).
ELONGATED = 5.0
#: Pixels of surroundings each box's stand-out measure samples the texture from (copy-paste's default margin).
STANDOUT_RING_PX = 4
#: Images decoded for the per-image measurements (sizes of the others come from the same sample).
MAX_DECODED = 400


@dataclass
class Fingerprint:
    """Measurements of one split. Per-box arrays share one order.

    Attributes:
        data: The ``data.yaml`` measured.
        split: The split measured (``train``).
        class_names: Class names by id.
        images: Images in the split; ``decoded``: how many of them were read for pixel statistics.
        widths, heights: Pixel size of each decoded image.
        channels: Decoded images per channel count (1, 3, 4); ``gray``: decoded images whose colour
            channels are identical (or that have one channel).
        bit_depth: Decoded images per bit depth (8, 16).
        defect_free: Images without any box.
        box_cls, box_w, box_h: Class and relative size of each box (fractions of the image side).
        box_image: Index of each box's image in the split.
        box_img_w, box_img_h: Pixel size of the box's image (NaN when it was not decoded).
        box_stroke: Estimated stroke width of each box's defect in native pixels (NaN: not measured).
        box_fill: Share of each box the defect covers (NaN: not measured).
        box_standout: Share of what stands out in each box that is the defect rather than the texture
            around it (``gradkit.data.standout.defect_share``; NaN: not measured).
        label_errors: Label lines ``gradkit check`` reports as errors (they are left out here).
        unread_images: Images the split names that are not measured: listed but missing, or in a format
            gradkit does not read (``gradkit check`` lists them).
        val_images: Images the ``val`` split names as Ultralytics reads them (counted, not read: every
            format it reads, repeats included): what it validates on after every epoch, which a time
            budget pays for too; 0 without a ``val`` (or ``validation``) key or when the split was given
            as ``split_places``. (A run with ``split=test`` validates on ``test`` instead.)
        val_absent: The ``val`` split's folders and list files that do not exist (Ultralytics refuses to train).
        val_named: Whether the YAML names a ``val`` (or ``validation``) split, without which Ultralytics does not
            train; None where the YAML's splits were not read (given as ``split_places``).
        val_is_train: Whether the ``val`` split reads a folder or list file this split reads too.
    """

    data: str
    split: str
    class_names: dict[int, str]
    images: int = 0
    decoded: int = 0
    widths: list[int] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)
    channels: Counter = field(default_factory=Counter)
    gray: int = 0
    bit_depth: Counter = field(default_factory=Counter)
    defect_free: int = 0
    box_cls: list[int] = field(default_factory=list)
    box_image: list[int] = field(default_factory=list)
    box_w: list[float] = field(default_factory=list)
    box_h: list[float] = field(default_factory=list)
    box_img_w: list[float] = field(default_factory=list)
    box_img_h: list[float] = field(default_factory=list)
    box_stroke: list[float] = field(default_factory=list)
    box_fill: list[float] = field(default_factory=list)
    box_standout: list[float] = field(default_factory=list)
    label_errors: int = 0
    unread_images: int = 0
    val_images: int = 0
    val_absent: list[str] = field(default_factory=list)
    val_named: bool | None = None
    val_is_train: bool = False
    #: the data YAML's ``channels`` (Ultralytics builds the model's first layer for them; 3 where it names none)
    input_channels: int = 3

    # ------------------------------------------------------------------ derived measures
    @property
    def defect_free_share(self) -> float:
        return self.defect_free / max(self.images, 1)

    @property
    def gray_share(self) -> float:
        return self.gray / max(self.decoded, 1)

    @property
    def max_side(self) -> int:
        """Largest native image side (0 when nothing was decoded)."""
        return max(max(self.widths, default=0), max(self.heights, default=0))

    @property
    def long_sides(self) -> list[int]:
        """Each decoded image's long side, native pixels."""
        return [max(w, h) for w, h in zip(self.widths, self.heights, strict=True)]

    @property
    def typical_side(self) -> int:
        """The median image's long side (the lower of the two middle ones of an even count, so always an image's;
        0 when nothing was decoded): the native size of a set whose images vary, which a few large ones do not
        move."""
        sides = sorted(self.long_sides)
        return sides[(len(sides) - 1) // 2] if sides else 0

    @property
    def class_counts(self) -> dict[str, int]:
        counts = Counter(self.box_cls)
        return {name: counts.get(c, 0) for c, name in self.class_names.items()}

    @property
    def class_images(self) -> dict[str, int]:
        """Images holding each class (an image with three pits counts once)."""
        held = Counter(c for c, _ in set(zip(self.box_cls, self.box_image, strict=True)))
        return {name: held.get(c, 0) for c, name in self.class_names.items()}

    @property
    def imbalance(self) -> float:
        """Most frequent over least frequent class (inf when a class has no instance)."""
        counts = list(self.class_counts.values())
        if not counts or max(counts) == 0:
            return 1.0
        return max(counts) / min(counts) if min(counts) else float("inf")

    def box_pixels(self, imgsz: int) -> tuple[np.ndarray, np.ndarray]:
        """Width and height in pixels of every box of a decoded image after the letterbox to ``imgsz``."""
        iw, ih = np.asarray(self.box_img_w, float), np.asarray(self.box_img_h, float)
        scale = imgsz / np.maximum(iw, ih)
        return np.asarray(self.box_w) * iw * scale, np.asarray(self.box_h) * ih * scale

    def elongation(self) -> np.ndarray:
        """Long over short side of every box, in native pixels (relative sides when not decoded)."""
        w = np.asarray(self.box_w) * np.nan_to_num(np.asarray(self.box_img_w, float), nan=1.0)
        h = np.asarray(self.box_h) * np.nan_to_num(np.asarray(self.box_img_h, float), nan=1.0)
        return np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-9)

    def thin_mask(self) -> np.ndarray:
        """Boxes whose stroke is at most ``THIN_WIDTH_PX`` native pixels wide and that are either
        mostly background (fill below ``THIN_MAX_FILL``: a diagonal line) or elongated (long/short
        side above ``ELONGATED``: a line along an axis fills its own thin box). Unmeasured: not thin."""
        stroke = np.nan_to_num(np.asarray(self.box_stroke, float), nan=np.inf)
        fill = np.nan_to_num(np.asarray(self.box_fill, float), nan=1.0)
        return (stroke <= THIN_WIDTH_PX) & ((fill < THIN_MAX_FILL) | (self.elongation() > ELONGATED))

    def stroke_pixels(self, imgsz: int) -> np.ndarray:
        """Stroke width of every box in pixels after the letterbox to ``imgsz`` (NaN: not measured)."""
        iw, ih = np.asarray(self.box_img_w, float), np.asarray(self.box_img_h, float)
        return np.asarray(self.box_stroke, float) * imgsz / np.maximum(iw, ih)

    @property
    def thin_share(self) -> float:
        """Share of thin boxes among those with a stroke measure (none when the image was not decoded or
        nothing in the box stands out from the noise of the ring around it: such a box counts on
        neither side); 0 when no box was measured."""
        measured = np.isfinite(np.asarray(self.box_stroke, float))
        return float(self.thin_mask()[measured].mean()) if measured.any() else 0.0

    def thin_share_per_class(self) -> dict[str, float]:
        """Share of each class's measured boxes that are thin (classes without measured boxes left out)."""
        cls, thin = np.asarray(self.box_cls), self.thin_mask()
        measured = ~np.isnan(np.asarray(self.box_stroke, float))
        return {name: round(float(thin[(cls == c) & measured].mean()), 3) for c, name in self.class_names.items()
                if ((cls == c) & measured).any()}

    @property
    def standout_share(self) -> float:
        """Share of the measured boxes whose defect stands out from its surroundings (defect share at
        least ``STANDS_OUT``); NaN when no box was measured."""
        share = np.asarray(self.box_standout, float)
        share = share[~np.isnan(share)]
        return float((share >= STANDS_OUT).mean()) if share.size else float("nan")

    def thin_classes(self, min_share: float = 0.5) -> list[str]:
        """Classes of which at least ``min_share`` of the measured boxes are thin."""
        return [name for name, share in self.thin_share_per_class().items() if share >= min_share]

    def summary(self) -> dict:
        """Plain numbers for YAML and printing."""
        el = self.elongation()
        stroke = np.asarray(self.box_stroke, float)
        stroke = stroke[~np.isnan(stroke)]

        def q(a):
            return [round(float(v), 4) for v in np.percentile(a, [10, 50, 90])] if len(a) else None

        return {
            "data": self.data, "split": self.split, "images": self.images, "decoded": self.decoded,
            "image_size": {"median_wh": [int(np.median(self.widths)), int(np.median(self.heights))]
                           if self.widths else None, "typical_side": self.typical_side,
                           "max_side": self.max_side},
            "channels": dict(sorted(self.channels.items())), "gray_share": round(self.gray_share, 3),
            "bit_depth": dict(sorted(self.bit_depth.items())),
            "defect_free_share": round(self.defect_free_share, 3),
            "instances": len(self.box_cls), "class_counts": self.class_counts,
            "box_rel_side_p10_50_90": {"short": q(np.minimum(self.box_w, self.box_h)),
                                       "long": q(np.maximum(self.box_w, self.box_h))},
            "elongation_p10_50_90": q(el), "stroke_px_p10_50_90": q(stroke),
            "thin_share": round(self.thin_share, 3),
            "thin_share_per_class": self.thin_share_per_class(),
            "thin_classes": self.thin_classes(),
            "standout_share": None if np.isnan(self.standout_share) else round(self.standout_share, 3),
            "label_errors": self.label_errors,
            "unread_images": self.unread_images, "val_images": self.val_images,
        }


def stroke_width(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, float]:
    """Estimate the stroke width (pixels) and the fill (share of the box) of the defect in ``box``.

    Width: the defect's fine structure is the residual of a 9x9 median filter (which erases strokes
    up to 3 px wide at any angle and keeps the background texture's coarse shape); a pixel belongs to the stroke
    when its residual exceeds half the box's 99th-percentile residual (a full-width-at-half-maximum
    threshold: anti-aliased edges count half) and three robust noise deviations of the ring. Width = stroke
    pixels / length, the length taken as the box diagonal: exact for a straight line from corner to
    corner and for one along an elongated box. Fill: the same count against the median of a 2-pixel
    ring around the box instead of the filtered image, over the box area; a blob fills its box
    (a disc: 0.79), a diagonal line does not (< 0.1).
    """
    import cv2

    x0, y0, x1, y1 = box
    h, w = gray.shape
    r0, r1, c0, c1 = max(y0 - 4, 0), min(y1 + 4, h), max(x0 - 4, 0), min(x1 + 4, w)
    outer = np.ascontiguousarray(gray[r0:r1, c0:c1]).astype(np.float32)
    inner = np.zeros(outer.shape, bool)
    inner[y0 - r0:y1 - r0, x0 - c0:x1 - c0] = True
    ring = np.zeros(outer.shape, bool)
    ring[max(y0 - r0 - 2, 0):y1 - r0 + 2, max(x0 - c0 - 2, 0):x1 - c0 + 2] = True
    ring &= ~inner
    if not ring.any() or not inner.any():
        return float("nan"), float("nan")
    background = cv2.medianBlur(np.clip(outer, 0, 255).astype(np.uint8), 9).astype(np.float32)
    residual = np.abs(outer - background)
    level = float(np.median(outer[ring]))
    deviation = np.abs(outer - level)
    # noise scales from the ring: robust deviations of the residual and of the raw level
    width = _count(residual[inner], 1.4826 * float(np.median(residual[ring]))) / float(np.hypot(x1 - x0, y1 - y0))
    fill = _count(deviation[inner], 1.4826 * float(np.median(deviation[ring]))) / float(inner.sum())
    return width, fill


def _count(values: np.ndarray, noise: float) -> float:
    """Pixels above half the 99th percentile and above three noise deviations (NaN: nothing stands out)."""
    peak = float(np.percentile(values, 99))
    if not peak > 3 * noise or peak == 0:
        return float("nan")
    return float((values > max(0.5 * peak, 3 * noise)).sum())


def _xyxy(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    return x - w / 2, y - h / 2, x + w / 2, y + h / 2


def _standout(gray: np.ndarray, k: int, boxes: list[tuple[float, float, float, float]]) -> float:
    """``defect_share`` of box ``k`` (normalised xywh) on its gray image, the image's other boxes masked."""
    others = [_xyxy(b) for i, b in enumerate(boxes) if i != k]
    patch, inner, masked = screening_crop(gray[..., None], _xyxy(boxes[k]), others, STANDOUT_RING_PX)
    return defect_share(patch, inner, STANDOUT_RING_PX, masked, unmeasurable=float("nan"))  # not "clear"


def _image_stats(path: Path) -> tuple[np.ndarray, int, int, bool] | None:
    """Gray image (8-bit scale), channel count, bit depth and whether the colour channels are equal."""
    import cv2

    img = read_upright(path)  # labels describe the EXIF-upright image
    if img is None:
        return None
    depth = 16 if img.dtype == np.uint16 else 8
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels == 1:
        gray, equal = img if img.ndim == 2 else img[..., 0], True
    else:
        colour = img[..., :3]
        equal = bool((colour == colour[..., :1]).all())
        gray = colour[..., 0] if equal else cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    if depth == 16:
        gray = gray.astype(np.float32) / 256.0
    return gray, channels, depth, equal


def _why_none(split: str, listed: SplitImages) -> str:
    """What the check says first about the list lines of a split that gave no image, or nothing."""
    why = [f for f in _line_findings(split, listed.lines) if f.kind != "listed twice"]
    if not why:
        return ""
    more = f" ({len(why) - 1} more finding(s): gradkit check data=... names them)" if len(why) > 1 else ""
    return f": {why[0].path}:{why[0].line}: {why[0].message}{more}"


def _input_channels(data_yaml: Path) -> int:
    """The YAML's ``channels`` where it is a count, else Ultralytics' 3."""
    channels = read_dataset_yaml(data_yaml).get("channels", 3)
    return channels if isinstance(channels, int) and not isinstance(channels, bool) and channels > 0 else 3


def fingerprint_dataset(data_yaml: str | Path, split: str = "train", max_decoded: int = MAX_DECODED,
                        seed: int = 0, split_places: str | Path | list[str | Path] | None = None,
                        names: dict[int, str] | None = None) -> Fingerprint:
    """Measure one split of a YOLO dataset.

    At most ``max_decoded`` images (a seeded random sample when there are more) are read for the
    pixel statistics; labels are read for every image. ``split_places`` and ``names``: the split's image
    folder or list file (or a list of them, :mod:`gradkit.data.splits`) and the class names as the trainer
    resolved them; given both, the YAML is not read again.

    Raises:
        ValueError: the YAML is not a dataset, or the split is missing or empty.
    """
    data_yaml = Path(data_yaml)
    if data_yaml.is_dir():
        raise ValueError(f"{data_yaml}: a folder; give the dataset's YAML file (data=DIR/data.yaml)")
    if not data_yaml.is_file():
        raise ValueError(f"{data_yaml}: no such file")
    given = None if split_places is None else [Path(p) for p in
                                               (split_places if isinstance(split_places, list) else [split_places])]
    yaml_read = given is None or names is None
    if not yaml_read:
        splits = {split: given}
    else:
        splits, read_names = _read_splits(data_yaml)
        names = read_names if names is None else names
        if given is not None:
            splits[split] = given
    if split not in splits:
        raise ValueError(f"{data_yaml}: split {split!r} is missing (no key {split}:)")
    listed = list_split_images(splits[split])
    where = ", ".join(map(str, splits[split]))
    if listed.absent:
        raise ValueError(f"{data_yaml}: split {split!r}: {', '.join(map(str, listed.absent))} does not exist")
    imgs = listed.images
    if not imgs:
        raise ValueError(f"{data_yaml}: no images in {where}{_why_none(split, listed)}")
    fp = Fingerprint(data=str(data_yaml), split=split, class_names=names, images=len(imgs),
                     unread_images=len(listed.unchecked) + sum(ln.why in UNREAD for ln in listed.lines),
                     input_channels=_input_channels(data_yaml))
    rng = np.random.default_rng(seed)
    decode = set(rng.choice(len(imgs), size=min(max_decoded, len(imgs)), replace=False).tolist())
    scratch = CheckResult()
    for i, img in enumerate(imgs):
        lab = _label_path(img)
        boxes = _check_labels(lab, len(names), split, scratch) if lab.exists() else []
        fp.defect_free += not boxes
        stats = _image_stats(img) if i in decode else None
        if stats is not None:
            gray, channels, depth, equal = stats
            fp.decoded += 1
            fp.widths.append(gray.shape[1])
            fp.heights.append(gray.shape[0])
            fp.channels[channels] += 1
            fp.bit_depth[depth] += 1
            fp.gray += equal
        for k, (c, (x, y, w, h)) in enumerate(boxes):
            fp.box_cls.append(c)
            fp.box_image.append(i)
            fp.box_w.append(w)
            fp.box_h.append(h)
            if stats is None:
                fp.box_img_w.append(float("nan"))
                fp.box_img_h.append(float("nan"))
                fp.box_stroke.append(float("nan"))
                fp.box_fill.append(float("nan"))
                fp.box_standout.append(float("nan"))
                continue
            ih, iw = gray.shape
            fp.box_img_w.append(float(iw))
            fp.box_img_h.append(float(ih))
            px = (round((x - w / 2) * iw), round((y - h / 2) * ih), round((x + w / 2) * iw), round((y + h / 2) * ih))
            width, fill = stroke_width(gray, px)
            fp.box_stroke.append(width)
            fp.box_fill.append(fill)
            fp.box_standout.append(_standout(gray, k, [b for _, b in boxes]))
    fp.label_errors = len(scratch.errors)
    if yaml_read:
        fp.val_named = "val" in splits
        fp.val_is_train = split != "val" and bool(shared_places({split: splits[split], "val": splits.get("val", [])}))
    if "val" in splits:  # given the trainer's split alone, the YAML's val is not read: nothing counted
        val = list_split_images(splits["val"])
        fp.val_images = len(val.images) + len(val.unchecked) + val.extra_reads
        fp.val_absent = [str(p) for p in val.absent]
    return fp
