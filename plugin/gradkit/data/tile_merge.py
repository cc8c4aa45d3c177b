"""Predictions made on the tiles of a whole image, merged into the image's own (pure data code).

A model trained on ``gradkit tile``'s copy sees defects at their native pixel size; on a whole part it
must look at the same tiles (``tile_windows``: the geometry ``gradkit tile`` cut the training images
with) and the tiles' detections must become one list for the part. Three things differ from stacking
them:

- A defect in the overlap of two tiles is found twice. Same class and IoU >= ``SAME_IOU``: one is kept.
  Detections of one tile are never compared with each other: the model's own NMS (or its NMS-free head)
  already decided between them, and one tile alone gives exactly what the model gives on that crop.
- A defect cut by a tile's edge is found there as a part, and whole in the tile that holds it (``gradkit
  tile``'s overlap makes every defect up to the overlap whole in some tile). A detection touching an inner
  edge of its tile (within ``EDGE_PX``; the image's own border is not a cut) is a *part*: parts rank
  after whole detections, and a part lying mostly (``PART_INSIDE``) inside a kept detection of its class
  is that detection's piece and is dropped.
- A defect longer than the overlap may be whole in no tile: its parts remain. Two parts of one class
  from two tiles that describe the same piece where the tiles overlap (clipped to the pixels both tiles
  see, IoU >= ``SAME_IOU``) are joined into the box around both, with the higher score. Looking only where
  both tiles see the same pixels keeps a stray low-score box that merely touches a part from growing it.

Boxes are pixel ``x0, y0, x1, y1`` of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradkit.data.tile import tile_starts

__all__ = ["EDGE_PX", "PART_INSIDE", "SAME_IOU", "TileDetections", "merge_tile_detections", "tile_windows"]

#: A detection this close (pixels) to an inner edge of its tile is taken for a part cut by that edge:
#: a model marks a cut defect up to the edge, give or take its box regression's error of a pixel or two.
EDGE_PX = 2.0
#: Two detections of one class overlapping at least this much (IoU) are one defect: Ultralytics' own
#: matching threshold for a true positive at mAP50.
SAME_IOU = 0.5
#: A part with at least this share of its area inside a kept detection of its class is a piece of it.
PART_INSIDE = 0.5


def tile_windows(width: int, height: int, size: int, overlap: int) -> np.ndarray:
    """The tiles of a ``width`` x ``height`` image, as pixel ``x0, y0, x1, y1`` rows, in the order and at the
    places ``gradkit tile`` cuts them (an image no larger than ``size`` is one tile, the whole image)."""
    tw, th = min(size, width), min(size, height)
    return np.array([(x, y, x + tw, y + th) for y in tile_starts(height, size, overlap)
                     for x in tile_starts(width, size, overlap)], np.float64).reshape(-1, 4)


@dataclass
class TileDetections:
    """Detections of a whole image: pixel boxes (n x 4), scores (n), classes (n) and, before a merge, the
    row of ``tile_windows`` each came from (n)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    tiles: np.ndarray

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        self.classes = np.asarray(self.classes, np.int64).reshape(-1)
        self.tiles = np.asarray(self.tiles, np.int64).reshape(-1)
        n = len(self.boxes)
        if not len(self.scores) == len(self.classes) == len(self.tiles) == n:
            raise ValueError(f"{n} boxes but {len(self.scores)} scores, {len(self.classes)} classes and "
                             f"{len(self.tiles)} tile indices")

    def __len__(self) -> int:
        return len(self.boxes)

    def take(self, index: np.ndarray) -> TileDetections:
        return TileDetections(self.boxes[index], self.scores[index], self.classes[index], self.tiles[index])


def _area(b: np.ndarray) -> np.ndarray:
    return np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of one box ``a`` (4) with each row of ``b`` (n x 4)."""
    w = np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0])
    h = np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1])
    return np.clip(w, 0, None) * np.clip(h, 0, None)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    inter = _intersection(a, b)
    union = _area(a) + _area(b) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def cut_by_inner_edge(det: TileDetections, windows: np.ndarray, width: int, height: int,
                      edge_px: float = EDGE_PX) -> np.ndarray:
    """Whether each detection touches an edge of its tile that lies inside the image (a cut)."""
    w = windows[det.tiles]
    b = det.boxes
    return (((w[:, 0] > 0) & (b[:, 0] - w[:, 0] <= edge_px)) | ((w[:, 1] > 0) & (b[:, 1] - w[:, 1] <= edge_px))
            | ((w[:, 2] < width) & (w[:, 2] - b[:, 2] <= edge_px))
            | ((w[:, 3] < height) & (w[:, 3] - b[:, 3] <= edge_px)))


def _suppress(det: TileDetections, part: np.ndarray) -> np.ndarray:
    """Indices kept by the greedy pass, class by class: whole detections first, each by descending score. A
    whole detection is dropped when a kept whole one of its class from another tile has IoU >= SAME_IOU
    with it; a part, when one of them does or holds PART_INSIDE of it. Parts never drop parts: two parts
    are pieces of one defect or copies of one piece, and joining them (``_join_parts``) is right for both.
    Detections of one tile are left as the model gave them (its own NMS, or none for an NMS-free head,
    already decided between them)."""
    kept: list[int] = []
    for c in np.unique(det.classes):
        members = np.flatnonzero(det.classes == c)
        order = members[np.lexsort((-det.scores[members], part[members]))]  # last key first: whole before parts
        boxes, tiles, n = np.empty((len(order), 4)), np.empty(len(order), np.int64), 0  # the kept whole ones
        for i in order:
            box = det.boxes[i]
            others = boxes[:n][tiles[:n] != det.tiles[i]]
            if len(others):
                if (_iou(box, others) >= SAME_IOU).any():
                    continue
                area = _area(box)
                if part[i] and area > 0 and (_intersection(box, others) / area >= PART_INSIDE).any():
                    continue
            kept.append(int(i))
            if not part[i]:
                boxes[n], tiles[n], n = box, det.tiles[i], n + 1
    return np.array(kept, np.int64)


def _same_piece(det: TileDetections, windows: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    """Which of the parts ``others`` (of other tiles) show the same piece as part ``i`` where the two tiles
    see the same pixels: both clipped to that shared region, IoU >= SAME_IOU."""
    wi, wo = windows[det.tiles[i]], windows[det.tiles[others]]
    both = np.concatenate([np.maximum(wi[:2], wo[:, :2]), np.minimum(wi[2:], wo[:, 2:])], 1)
    mine = np.concatenate([np.maximum(det.boxes[i, :2], both[:, :2]), np.minimum(det.boxes[i, 2:], both[:, 2:])], 1)
    theirs = np.concatenate([np.maximum(det.boxes[others, :2], both[:, :2]),
                             np.minimum(det.boxes[others, 2:], both[:, 2:])], 1)
    w = np.minimum(mine[:, 2], theirs[:, 2]) - np.maximum(mine[:, 0], theirs[:, 0])
    h = np.minimum(mine[:, 3], theirs[:, 3]) - np.maximum(mine[:, 1], theirs[:, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = _area(mine) + _area(theirs) - inter
    seen = (_area(mine) > 0) & (_area(theirs) > 0) & (_area(both) > 0)
    return seen & (inter >= SAME_IOU * np.where(union > 0, union, np.inf))


def _join_parts(det: TileDetections, parts: list[int], windows: np.ndarray) -> list[list[int]]:
    """Groups of parts (indices into ``det``) that are one defect seen by several tiles."""
    root = {i: i for i in parts}

    def find(i: int) -> int:
        while root[i] != i:
            i = root[i]
        return i

    idx = np.array(parts, np.int64)
    for a, i in enumerate(parts):
        rest = idx[a + 1:]
        near = rest[(det.classes[rest] == det.classes[i]) & (det.tiles[rest] != det.tiles[i])
                    & (_intersection(det.boxes[i], det.boxes[rest]) > 0)]
        for j in near[_same_piece(det, windows, i, near)] if len(near) else ():
            root[find(int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in parts:
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def merge_tile_detections(det: TileDetections, windows: np.ndarray, width: int, height: int,
                          max_det: int | None = None) -> TileDetections:
    """One list of detections for the whole image (see the module's docstring); ``tiles`` of the result is
    the tile of the highest-scoring detection each came from. At most ``max_det``, by score."""
    if not len(det):
        return det
    part = cut_by_inner_edge(det, windows, width, height)
    kept = _suppress(det, part)
    whole = [int(i) for i in kept if not part[i]]
    groups = [[int(i)] for i in whole] + _join_parts(det, [int(i) for i in kept if part[i]], windows)
    boxes, scores, classes, tiles = [], [], [], []
    for g in groups:
        best = g[int(np.argmax(det.scores[g]))]
        boxes.append(np.concatenate([det.boxes[g, :2].min(0), det.boxes[g, 2:].max(0)]))
        scores.append(det.scores[best])
        classes.append(det.classes[best])
        tiles.append(det.tiles[best])
    merged = TileDetections(np.array(boxes), scores, classes, tiles)
    order = np.argsort(-merged.scores, kind="stable")
    return merged.take(order[:max_det] if max_det is not None else order)
