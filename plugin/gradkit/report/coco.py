"""COCO-standard metrics from faster-coco-eval, plus defect-aware buckets with the same machinery.

Boxes are evaluated in *normalised* coordinates (each image mapped to a 1000 x 1000 canvas). An
axis-aligned rescaling leaves every IoU unchanged, and makes ``area`` relative to the image, so the
COCO area ranges become relative-size buckets that mean the same on a 200 px NEU-DET crop and on a
3000 px PCB scan. The elongation buckets reuse the same code by putting the aspect ratio in ``area``.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from gradkit.data.fingerprint import ELONGATED

__all__ = ["ALL_OBJECTS", "AREA_BUCKETS", "ELONGATION_BUCKETS", "Box", "Boxes", "CocoEvaluation", "box_columns",
           "bucket_metrics", "coco_metrics"]

CANVAS = 1000.0
#: Relative box area (box area / image area) buckets.
AREA_BUCKETS: dict[str, tuple[float, float]] = {
    "<0.1%": (0.0, 0.001), "0.1-1%": (0.001, 0.01), "1-10%": (0.01, 0.1), ">10%": (0.1, 1.0 + 1e-9),
}
#: Aspect-ratio (long side / short side) buckets; > ELONGATED (5) is scratch/weld-like. There is no compact bucket:
#: it would need an evaluation over nearly every image (a third of the report's cost), while the
#: elongated one only needs the images that hold an elongated box; the area table's ``all`` row is
#: the reference to read it against.
ELONGATION_BUCKETS: dict[str, tuple[float, float]] = {
    # COCO's ranges include both ends: the next float above ELONGATED makes it "> 5", as the fingerprint counts
    f"elongated (>{ELONGATED:g})": (float(np.nextafter(ELONGATED, np.inf)), float(np.inf))}
#: The row of every area bucket table that holds all objects (COCO's "all" area range).
ALL_OBJECTS = "all"


class Box(NamedTuple):
    """One box in normalised xyxy coordinates in [0, 1]; ``score`` is None for ground truth."""

    image: int
    cls: int
    x0: float
    y0: float
    x1: float
    y1: float
    score: float | None = None


_FIELDS = ("image", "cls", "x0", "y0", "x1", "y1", "score")


class Boxes:
    """Many boxes as numpy columns (the form the analyses compute on); iterates as :class:`Box`.

    A validation yields ~10^5 predictions: one Python object each is most of a report's cost.
    ``score`` is NaN for ground truth.
    """

    def __init__(self, image, cls, x0, y0, x1, y1, score=None):
        self.image = np.asarray(image, np.int64).reshape(-1)
        self.cls = np.asarray(cls, np.int64).reshape(-1)
        self.x0, self.y0, self.x1, self.y1 = (np.asarray(v, np.float64).reshape(-1) for v in (x0, y0, x1, y1))
        self.score = (np.full(len(self.image), np.nan) if score is None
                      else np.asarray(score, np.float64).reshape(-1))
        if len({len(getattr(self, f)) for f in _FIELDS}) != 1:
            raise ValueError(f"Boxes: columns differ in length: { {f: len(getattr(self, f)) for f in _FIELDS} }")

    @classmethod
    def from_boxes(cls, boxes: Sequence[Box]) -> Boxes:
        if isinstance(boxes, Boxes):
            return boxes
        cols = [[b[k] for b in boxes] for k in range(6)]
        return cls(*cols, [np.nan if b.score is None else b.score for b in boxes])

    def __len__(self) -> int:
        return len(self.image)

    def __iter__(self):
        rows = zip(*(getattr(self, f).tolist() for f in _FIELDS), strict=True)
        return (Box(i, c, x0, y0, x1, y1, None if s != s else s) for i, c, x0, y0, x1, y1, s in rows)

    def __getitem__(self, index) -> Boxes:
        """A subset (boolean mask or index array)."""
        return Boxes(*(getattr(self, f)[index] for f in _FIELDS))

    @property
    def columns(self) -> dict[str, np.ndarray]:
        return {f: getattr(self, f) for f in _FIELDS}


def box_columns(boxes: Sequence[Box] | Boxes) -> dict[str, np.ndarray]:
    """Boxes as columns: the per-box Python work happens once, in numpy."""
    return Boxes.from_boxes(boxes).columns


def _annotations(col: dict[str, np.ndarray], scored: bool) -> list[dict]:
    """COCO annotation dicts on the canvas, ids from 1 (faster-coco-eval reads id 0 as unmatched)."""
    x, y = col["x0"] * CANVAS, col["y0"] * CANVAS
    w, h = (col["x1"] - col["x0"]) * CANVAS, (col["y1"] - col["y0"]) * CANVAS
    # area from the same expression the buckets count with, so a box on a bucket bound lands alike in both
    area = _relative_area(col) * CANVAS**2
    rows = zip(range(1, len(x) + 1), col["image"].tolist(), col["cls"].tolist(), x.tolist(), y.tolist(), w.tolist(),
               h.tolist(), area.tolist(), col["score"].tolist(), strict=True)
    if scored:
        return [{"id": i, "image_id": im, "category_id": c, "bbox": [bx, by, bw, bh], "area": a, "iscrowd": 0,
                 "score": sc} for i, im, c, bx, by, bw, bh, a, sc in rows]
    return [{"id": i, "image_id": im, "category_id": c, "bbox": [bx, by, bw, bh], "area": a, "iscrowd": 0}
            for i, im, c, bx, by, bw, bh, a, _ in rows]


class CocoEvaluation:
    """The ground truth and detections as faster-coco-eval objects, built once and evaluated with
    different area ranges (and, for elongation, a different quantity in ``area``)."""

    def __init__(self, gts: Sequence[Box] | Boxes, preds: Sequence[Box] | Boxes, images: Sequence[int],
                 classes: Sequence[int]):
        from faster_coco_eval import COCO

        self.classes = list(classes)
        self.columns = {"gt": box_columns(gts), "dt": box_columns(preds)}
        imgs = [{"id": i, "width": CANVAS, "height": CANVAS} for i in images]
        cats = [{"id": c, "name": str(c)} for c in classes]
        self.gt, self.dt = COCO(), COCO()
        self.gt.dataset = {"images": imgs, "categories": cats, "annotations": _annotations(self.columns["gt"], False)}
        self.dt.dataset = {"images": imgs, "categories": cats, "annotations": _annotations(self.columns["dt"], True)}
        self.gt.createIndex()
        self.dt.createIndex()
        self._cache: dict[tuple, object] = {}
        self._ious: dict[tuple[int, int], object] = {}  # IoUs do not depend on `area`: shared by all evaluations
        self.area_kind = "relative"  # what `area` holds: relative area x CANVAS^2

    def set_area(self, values: dict[str, np.ndarray], kind: str) -> None:
        """Put ``values["gt"][i]`` / ``values["dt"][i]`` into annotation ``i``'s ``area`` (what COCO's area
        ranges filter on); ``kind`` names the quantity."""
        self._cache.clear()
        self.area_kind = kind
        for key, coco in (("gt", self.gt), ("dt", self.dt)):
            for ann, v in zip(coco.dataset["annotations"], values[key].tolist(), strict=True):
                ann["area"] = v

    def use_relative_area(self) -> None:
        """Put the relative area x CANVAS^2 back into ``area`` (what it holds when built)."""
        if self.area_kind != "relative":
            self.set_area({key: _relative_area(col) * CANVAS**2 for key, col in self.columns.items()}, "relative")

    def evaluate(self, area_rng: list[list[float]] | None = None, images: Sequence[int] | None = None):
        """Evaluate on all images or only ``images`` (cached per area ranges and images until
        :meth:`set_area` changes the areas)."""
        key = (tuple(map(tuple, area_rng)) if area_rng is not None else None,
               tuple(images) if images is not None else None)
        if key not in self._cache:
            self._cache[key] = self._evaluate(area_rng, images)
        return self._cache[key]

    def _evaluate(self, area_rng: list[list[float]] | None, images: Sequence[int] | None = None):
        from gradkit.integrations.ultralytics.seams import override_coco_iou

        evaluator = override_coco_iou(self._ious)  # checks that evaluate() still calls the override
        ev = evaluator(self.gt, self.dt, iouType="bbox", print_function=lambda *a, **k: None)
        if area_rng is not None:
            ev.params.areaRng = area_rng
            ev.params.areaRngLbl = [f"r{i}" for i in range(len(area_rng))]
        ev.params.catIds = self.classes
        if images is not None:
            ev.params.imgIds = list(images)
        ev.params.maxDets = [100]  # only AP/AR@100 are read: the 1 and 10 caps would cost a third more
        with contextlib.redirect_stdout(io.StringIO()):
            ev.evaluate()
            ev.accumulate()
        return ev


def _ap(ev, area_index: int = 0, iou: float | None = None, k: int | None = None) -> float:
    """Mean precision over IoU thresholds (or one), recall points and classes (or class index k),
    -1 entries (no ground truth) excluded."""
    p = ev.eval["precision"]  # [T, R, K, A, M]
    if iou is not None:
        p = p[np.isclose(ev.params.iouThrs, iou)]
    p = p[:, :, :, area_index, -1] if k is None else p[:, :, k, area_index, -1]
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else float("nan")


def _ar(ev, area_index: int = 0, iou: float | None = None, k: int | None = None) -> float:
    r = ev.eval["recall"]  # [T, K, A, M]
    if iou is not None:
        r = r[np.isclose(ev.params.iouThrs, iou)]
    r = r[:, :, area_index, -1] if k is None else r[:, k, area_index, -1]
    valid = r[r > -1]
    return float(valid.mean()) if valid.size else float("nan")


#: COCO's own area ranges (all, small, medium, large), in pixels².
_COCO_RANGES = [[0.0, 1e10], [0.0, 32.0**2], [32.0**2, 96.0**2], [96.0**2, 1e10]]
_BUCKET_RANGES = [[lo * CANVAS**2, hi * CANVAS**2] for lo, hi in AREA_BUCKETS.values()]


def _area_ranges(sizes: dict[int, tuple[int, int]] | None) -> list[list[float]] | None:
    """COCO's pixel ranges then the relative-area buckets, in the evaluation's units (relative area x
    CANVAS^2): one evaluation serves both when all images share one size, as a pixel area is then the
    relative area times W x H. None for mixed sizes; without sizes, COCO's ranges apply to the canvas."""
    shapes = set(sizes.values()) if sizes else {(CANVAS, CANVAS)}
    if len(shapes) != 1:
        return None
    (w, h), = shapes
    return [[lo * CANVAS**2 / (w * h), hi * CANVAS**2 / (w * h)] for lo, hi in _COCO_RANGES] + _BUCKET_RANGES


def _relative_area(col: dict[str, np.ndarray]) -> np.ndarray:
    return np.maximum(col["x1"] - col["x0"], 0.0) * np.maximum(col["y1"] - col["y0"], 0.0)


def _elongation(col: dict[str, np.ndarray], wh: np.ndarray) -> np.ndarray:
    """Aspect ratio in pixels (the image's own proportions, not the unit square's)."""
    w, h = (col["x1"] - col["x0"]) * wh[:, 0], (col["y1"] - col["y0"]) * wh[:, 1]
    return np.maximum(w, h) / np.maximum(np.minimum(w, h), 1e-9)


def coco_metrics(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], classes: Sequence[int],
                 evaluation: CocoEvaluation | None = None, sizes: dict[int, tuple[int, int]] | None = None
                 ) -> dict[str, float]:
    """AP, AP50, AP75, AR@100 and APs/m/l, as pycocotools computes them on the original pixels.

    Args:
        sizes: Image id -> (width, height) in pixels, for APs/m/l. Without it they use COCO's bounds on
            the 1000 x 1000 canvas the boxes are evaluated on.

    Classes without ground truth are excluded from the means (COCO's -1), not counted as zero.
    """
    evaluation = evaluation or CocoEvaluation(gts, preds, images, classes)
    ranges = _area_ranges(sizes)
    if ranges is None:  # mixed image sizes: pixel areas are another quantity, another evaluation
        wh = np.array([sizes[i] for i in images], np.float64).reshape(-1, 2)
        index_of = {img: k for k, img in enumerate(images)}
        evaluation.set_area({key: _relative_area(col) * np.prod(wh[[index_of[i] for i in col["image"].tolist()]], 1)
                             for key, col in evaluation.columns.items()}, "pixels")
        ranges = _COCO_RANGES
    else:
        evaluation.use_relative_area()  # e.g. the elongation buckets ran first
    ev = evaluation.evaluate(ranges)
    return {"AP": _ap(ev), "AP50": _ap(ev, iou=0.5), "AP75": _ap(ev, iou=0.75), "AR100": _ar(ev),
            "APs": _ap(ev, 1), "APm": _ap(ev, 2), "APl": _ap(ev, 3)}


def bucket_metrics(gts: Sequence[Box], preds: Sequence[Box], images: Sequence[int], classes: Sequence[int],
                   sizes: dict[int, tuple[int, int]], by: str = "area", evaluation: CocoEvaluation | None = None
                   ) -> dict[str, dict]:
    """AP50-95, AP50 and recall (at IoU 0.5, up to 100 detections) per bucket, overall and per class.

    Args:
        sizes: Image id -> (width, height) in pixels, for the elongation of boxes.
        by: ``area`` (relative area buckets, after an ``all`` row) or ``elongation``.
        evaluation: Reuse the COCO objects (and IoUs) of an earlier call, in any order: each call
            puts the quantity it buckets by into the ``area`` fields first.

    Returns:
        ``{bucket: {"gt": n, "AP": .., "AP50": .., "recall": .., "per_class": {cls: {...}}}}``;
        NaN where a bucket holds no ground truth.
    """
    evaluation = evaluation or CocoEvaluation(gts, preds, images, classes)
    gt_col = evaluation.columns["gt"]
    if by == "area":
        values = _relative_area(gt_col)
        evaluation.use_relative_area()
        # the same ranges as coco_metrics' when they fit one evaluation: its result is reused
        ranges = _area_ranges(sizes) or _area_ranges(None)
        buckets = {ALL_OBJECTS: (0.0, np.inf), **AREA_BUCKETS}
        index = [0, *range(len(_COCO_RANGES), len(ranges))]  # COCO's "all", then the relative buckets
        ev = evaluation.evaluate(ranges)
    else:
        wh = np.array([sizes[i] for i in images], np.float64).reshape(-1, 2)
        index_of = {img: k for k, img in enumerate(images)}
        measured = {key: _elongation(col, wh[[index_of[i] for i in col["image"].tolist()]].reshape(-1, 2))
                    for key, col in evaluation.columns.items()}
        evaluation.set_area(measured, "elongation")
        values, buckets, index = measured["gt"], ELONGATION_BUCKETS, list(range(len(ELONGATION_BUCKETS)))
        (lo, hi), = buckets.values()
        # Exact on a subset: in an image without an elongated box every ground truth lies outside the
        # range (ignored) and every detection either matches an ignored one or lies outside (ignored),
        # so such images add nothing to the bucket's AP or recall.
        holding = sorted({img for key, col in evaluation.columns.items()
                          for img in col["image"][(measured[key] >= lo) & (measured[key] < hi)].tolist()})
        ev = evaluation.evaluate([[lo, hi]], holding) if holding else None
    cls = gt_col["cls"]
    out: dict[str, dict] = {}
    for a, (name, (lo, hi)) in zip(index, buckets.items(), strict=True):
        inside = (values >= lo) & (values < hi)
        out[name] = _bucket_row(ev, a, inside, cls, classes)
    return out


def _bucket_row(ev, a: int, inside: np.ndarray, cls: np.ndarray, classes: Sequence[int]) -> dict:
    """One bucket's numbers from area range ``a`` of ``ev`` (None: no image holds the bucket)."""
    def metrics(k: int | None) -> dict[str, float]:
        if ev is None:
            return {"AP": float("nan"), "AP50": float("nan"), "recall": float("nan")}
        return {"AP": _ap(ev, a, k=k), "AP50": _ap(ev, a, 0.5, k), "recall": _ar(ev, a, 0.5, k)}

    row = {"gt": int(inside.sum()), **metrics(None), "per_class": {}}
    for k, c in enumerate(classes):
        row["per_class"][c] = {"gt": int((inside & (cls == c)).sum()), **metrics(k)}
    row["recall"] = _found_share(row["per_class"].values())
    return row


def _found_share(per_class) -> float:
    """The share of the objects found, pooled over the classes (each class's recall times its objects): what a
    reader takes "recall" for. COCO's recall is the mean over the classes, where one class of one missed object
    weighs as much as one of a hundred found ones."""
    counted = [(c["recall"], c["gt"]) for c in per_class if c["gt"] and not math.isnan(c["recall"])]
    objects = sum(n for _, n in counted)
    return sum(r * n for r, n in counted) / objects if objects else float("nan")
