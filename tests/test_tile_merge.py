"""Merging detections made on tiles: a perfect detector on each tile must give back the image's own boxes."""

from __future__ import annotations

import numpy as np
import pytest

from gradkit.data.tile import tile_dataset
from gradkit.data.tile_merge import EDGE_PX, TileDetections, cut_by_inner_edge, merge_tile_detections, tile_windows
from test_tile import _drawn, _tiles, _yaml


def _perfect_tile_detector(gts: list[tuple[int, np.ndarray]], windows: np.ndarray, rng) -> TileDetections:
    """What a detector that never errs reports on each tile: every box's part inside the tile (clipped),
    at a random score."""
    boxes, classes, tiles = [], [], []
    for t, (x0, y0, x1, y1) in enumerate(windows):
        for c, b in gts:
            part = np.array([max(b[0], x0), max(b[1], y0), min(b[2], x1), min(b[3], y1)])
            if part[2] > part[0] and part[3] > part[1]:
                boxes.append(part)
                classes.append(c)
                tiles.append(t)
    return TileDetections(np.array(boxes), rng.uniform(0.3, 1.0, len(boxes)), classes, tiles)


def _random_boxes(rng, w: int, h: int, n: int, longest: int, classes: int = 3) -> list[tuple[int, np.ndarray]]:
    """``n`` boxes of sides 3..``longest`` px that do not touch each other (one defect each)."""
    out: list[tuple[int, np.ndarray]] = []
    while len(out) < n:
        bw, bh = rng.integers(3, longest + 1, 2)
        x0, y0 = rng.integers(0, w - bw + 1), rng.integers(0, h - bh + 1)
        box = np.array([x0, y0, x0 + bw, y0 + bh], np.float64)
        if all(box[2] + 1 < o[0] or o[2] + 1 < box[0] or box[3] + 1 < o[1] or o[3] + 1 < box[1] for _, o in out):
            out.append((int(rng.integers(classes)), box))
    return out


def _as_set(det: TileDetections) -> list[tuple]:
    return sorted((int(c), *np.round(b, 6)) for c, b in zip(det.classes, det.boxes, strict=True))


def test_windows_are_the_tiles_gradkit_tile_writes(tmp_path):
    root = tmp_path / "data"
    _drawn(root, "train", "a", 700, 300, [("rect", 1, 10, 10, 90, 60)], seed=0)
    _drawn(root, "val", "b", 200, 150, [("rect", 1, 10, 10, 50, 40)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=256, out=tmp_path / "tiles")
    written = {(r["source"], int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])) for r in _tiles(data.parent)}
    expected = set()
    for split, name, w, h in (("train", "a", 700, 300), ("val", "b", 200, 150)):
        for x0, y0, x1, y1 in tile_windows(w, h, 256, summary.overlap):
            expected.add((str(root / "images" / split / f"{name}.png"), x0, y0, x1 - x0, y1 - y0))
    assert written == expected and len(expected) > 3


@pytest.mark.parametrize(("w", "h", "size", "overlap", "seed"), [(700, 500, 256, 100, 0), (1024, 768, 320, 160, 1),
                                                                 (600, 256, 256, 64, 2), (900, 900, 128, 64, 3)])
def test_a_perfect_tile_detector_gives_back_every_box_once(w, h, size, overlap, seed):
    """Boxes up to the overlap lie whole in some tile: their cut parts and their copies in overlaps go."""
    rng = np.random.default_rng(seed)
    gts = _random_boxes(rng, w, h, 25, overlap)
    windows = tile_windows(w, h, size, overlap)
    det = _perfect_tile_detector(gts, windows, rng)
    assert len(det) > len(gts)  # parts and copies were there to remove
    merged = merge_tile_detections(det, windows, w, h)
    assert _as_set(merged) == _as_set(TileDetections([b for _, b in gts], np.ones(len(gts)), [c for c, _ in gts],
                                                     np.zeros(len(gts))))


@pytest.mark.parametrize(("w", "h", "size", "overlap", "seed"), [(700, 500, 256, 64, 0), (1024, 768, 320, 96, 1),
                                                                 (900, 900, 256, 100, 2), (440, 440, 256, 72, 3)])
def test_a_perfect_tile_detector_gives_back_boxes_up_to_a_tile_long(w, h, size, overlap, seed):
    """Boxes between the overlap and a whole tile: some whole in a tile, some in none, cut into two or three
    parts; each comes back whole, once."""
    rng = np.random.default_rng(seed)
    gts = _random_boxes(rng, w, h, 12, size)
    windows = tile_windows(w, h, size, overlap)
    merged = merge_tile_detections(_perfect_tile_detector(gts, windows, rng), windows, w, h)
    assert _as_set(merged) == _as_set(TileDetections([b for _, b in gts], np.ones(len(gts)), [c for c, _ in gts],
                                                     np.zeros(len(gts))))


def test_a_defect_just_longer_than_the_overlap_is_joined_not_cut_short():
    """Tiles at x 0 and 184 overlap in 184..256: a defect over 150..290 is two parts that overlap each other by
    more than half (IoU 0.51); the second part must not be taken for a copy of the first."""
    windows = tile_windows(440, 256, 256, 64)
    det = TileDetections([[150, 100, 256, 110], [184, 100, 290, 110]], [0.9, 0.6], [0, 0], [0, 1])
    assert _as_set(merge_tile_detections(det, windows, 440, 256)) == [(0, 150, 100, 290, 110)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parts_of_a_box_longer_than_the_overlap_are_joined_into_it(seed):
    """A box whole in no tile leaves only parts; the parts seen alike where tiles overlap make the box."""
    rng = np.random.default_rng(seed)
    w, h, size, overlap = 1000, 700, 256, 64
    gts = [(0, np.array([30.0, 40.0, 600.0, 90.0])),     # a long scratch across three tiles
           (0, np.array([100.0, 300.0, 160.0, 680.0])),  # a tall one, same class, elsewhere
           (2, np.array([700.0, 100.0, 980.0, 650.0]))]  # a large stain over four or more tiles
    windows = tile_windows(w, h, size, overlap)
    merged = merge_tile_detections(_perfect_tile_detector(gts, windows, rng), windows, w, h)
    assert _as_set(merged) == _as_set(TileDetections([b for _, b in gts], [1, 1, 1], [c for c, _ in gts], [0, 0, 0]))


def test_a_stray_box_touching_a_part_does_not_grow_it():
    windows = tile_windows(440, 256, 256, 64)  # tiles at x 0 and 184
    assert windows[:, 0].tolist() == [0, 184]
    long_box = np.array([100.0, 50.0, 400.0, 60.0])
    det = TileDetections([[100, 50, 256, 60], [184, 50, 400, 60],  # the line's two parts, alike in 184..256
                          [200, 58, 256, 200]],                    # a stray box reaching into the overlap
                         [0.9, 0.8, 0.05], [0, 0, 0], [0, 1, 0])
    merged = merge_tile_detections(det, windows, 440, 256)
    assert _as_set(merged) == sorted([(0, *long_box), (0, 200.0, 58.0, 256.0, 200.0)])
    assert merged.scores[0] == 0.9


def test_copies_in_an_overlap_keep_the_best_score_and_classes_stay_apart():
    windows = tile_windows(500, 256, 256, 64)
    det = TileDetections([[250, 100, 252, 140], [250, 100, 252, 140], [250, 100, 252, 140]],
                         [0.4, 0.7, 0.6], [1, 1, 0], [0, 1, 1])
    merged = merge_tile_detections(det, windows, 500, 256)
    assert sorted(zip(merged.classes.tolist(), merged.scores.tolist(), strict=True)) == [(0, 0.6), (1, 0.7)]


def test_the_image_border_is_not_a_cut():
    windows = tile_windows(440, 300, 256, 64)
    assert windows.tolist() == [[0, 0, 256, 256], [184, 0, 440, 256], [0, 44, 256, 300], [184, 44, 440, 300]]
    det = TileDetections([[0, 0, 30, 30], [410, 270, 440, 300], [230, 10, 255, 40], [184, 280, 220, 300],
                          [200, 280, 240, 300]], [0.5] * 5, [0] * 5, [0, 3, 0, 3, 3])
    assert cut_by_inner_edge(det, windows, 440, 300).tolist() == [False, False, True, True, False]
    near = TileDetections([[10, 10, 256 - EDGE_PX - 0.5, 40]], [0.5], [0], [0])
    assert cut_by_inner_edge(near, windows, 440, 300).tolist() == [False]


def test_at_most_max_det_by_score_and_empty_stays_empty():
    windows = tile_windows(256, 256, 256, 0)
    det = TileDetections([[10 * k, 0, 10 * k + 5, 5] for k in range(6)], [0.1, 0.9, 0.3, 0.8, 0.2, 0.5],
                         [0] * 6, [0] * 6)
    merged = merge_tile_detections(det, windows, 256, 256, max_det=3)
    assert merged.scores.tolist() == [0.9, 0.8, 0.5]
    assert len(merge_tile_detections(det.take(np.array([], np.int64)), windows, 256, 256)) == 0


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        TileDetections(np.zeros((2, 4)), [0.5], [0, 0], [0, 0])


def test_detections_of_one_tile_are_left_as_the_model_gave_them():
    """Only copies from other tiles are removed: a tile's own overlapping detections (the model's NMS kept
    both) stay, so one tile alone is exactly the model's output."""
    windows = tile_windows(440, 256, 256, 64)
    det = TileDetections([[10, 10, 50, 50], [12, 10, 50, 52], [190, 10, 230, 40], [190, 10, 230, 40]],
                         [0.9, 0.8, 0.7, 0.6], [0, 0, 1, 1], [0, 0, 0, 1])
    merged = merge_tile_detections(det, windows, 440, 256)
    assert _as_set(merged) == sorted([(0, 10, 10, 50, 50), (0, 12, 10, 50, 52), (1, 190, 10, 230, 40)])
    assert sorted(merged.scores.tolist()) == [0.7, 0.8, 0.9]
