"""gradkit tile: tiles cut at native resolution, their boxes checked against boxes from masks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset
from gradkit.data.output import OutputRefused
from gradkit.data.tile import tile_dataset, tile_starts


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The tight box (x0, y0, x1, y1, exclusive ends) of a mask's pixels; None if it has none."""
    ys, xs = np.nonzero(mask)
    return None if not len(xs) else (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def _yolo_line(c: int, box, w: int, h: int) -> str:
    x0, y0, x1, y1 = box
    return f"{c} {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}"


def _drawn(root: Path, split: str, name: str, w: int, h: int, shapes: list, seed: int, depth=np.uint8,
           gray: bool = False) -> list[tuple[int, np.ndarray]]:
    """A noisy image with each shape drawn into its own mask; labels are the masks' tight boxes. Returns
    (class, mask) per shape. Shapes: ("rect", c, x0, y0, x1, y1) filled, ("line", c, x0, y0, x1, y1) 1 px."""
    rng = np.random.default_rng(seed)
    top = 255 if depth == np.uint8 else 65535
    img = rng.integers(0, top // 2, (h, w) if gray else (h, w, 3)).astype(depth)
    objects, lines = [], []
    for kind, c, *xy in shapes:
        mask = np.zeros((h, w), np.uint8)
        if kind == "rect":
            mask[xy[1]:xy[3], xy[0]:xy[2]] = 1
        else:
            cv2.line(mask, tuple(xy[:2]), tuple(xy[2:]), 1, 1)
        img[mask.astype(bool)] = top
        objects.append((c, mask))
        lines.append(_yolo_line(c, _mask_box(mask), w, h))
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{name}.png"), img)
    (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return objects


def _yaml(root: Path, splits=("train", "val")) -> Path:
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), **{s: f"images/{s}" for s in splits},
                                                    "names": {0: "scratch", 1: "pit"}}))
    return root / "data.yaml"


def _tiles(out: Path) -> list[dict]:
    with (out / "tiles.csv").open() as f:
        return list(csv.DictReader(f))


def _labels(path: Path) -> list[tuple[int, np.ndarray]]:
    rows = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [(int(r[0]), np.array([float(v) for v in r[1:]])) for r in rows]


@pytest.mark.parametrize(("length", "size", "overlap"), [(100, 128, 0), (300, 128, 40), (1000, 256, 100),
                                                         (257, 256, 1), (640, 128, 64), (129, 128, 0)])
def test_tiles_cover_the_side_and_hold_every_short_span_whole(length, size, overlap):
    starts = tile_starts(length, size, overlap)
    assert starts[0] == 0 and starts[-1] + min(size, length) == length
    for a in range(0, length - overlap + 1):  # every span of `overlap` pixels lies inside one tile
        assert any(s <= a and a + overlap <= s + size for s in starts), (a, starts)


def test_tile_boxes_are_the_boxes_of_the_masks_cut_by_the_tile(tmp_path):
    """Filled rectangles: a tile's clipped box is exactly the box of the mask's pixels inside the tile. A thin
    diagonal line: the clipped box holds the line's visible pixels (and may be looser; README says so)."""
    root = tmp_path / "ds"
    objects = _drawn(root, "train", "big", 300, 200, [("rect", 1, 10, 10, 40, 30), ("rect", 1, 100, 90, 160, 130),
                                                      ("line", 0, 150, 20, 230, 100), ("rect", 1, 270, 170, 298, 199)],
                     seed=0)
    _drawn(root, "val", "small", 96, 80, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "tiles", min_visibility=0.0)
    out = data.parent
    assert summary.overlap == 64  # the longest box side (the line's 81 px), capped at half a tile
    starts = [(x, y) for y in tile_starts(200, 128, 64) for x in tile_starts(300, 128, 64)]
    whole = [any(x <= b[0] and y <= b[1] and b[2] <= x + 128 and b[3] <= y + 128 for x, y in starts)
             for b in (_mask_box(m) for _, m in objects)]
    assert (summary.counts["train"]["whole"], summary.counts["train"]["never_whole"]) == (sum(whole), 4 - sum(whole))
    src = cv2.imread(str(root / "images/train/big.png"), cv2.IMREAD_UNCHANGED)
    kept = 0
    for row in _tiles(out):
        if row["source"].endswith("small.png"):
            continue
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        assert np.array_equal(cv2.imread(str(out / row["tile"]), cv2.IMREAD_UNCHANGED), src[y:y + h, x:x + w])
        got = _labels(out / "labels" / "train" / (Path(row["tile"]).stem + ".txt"))
        pixel = [(c, np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]))
                 for c, (cx, cy, bw, bh) in got]
        expected = [(c, _mask_box(m[y:y + h, x:x + w])) for c, m in objects]
        expected = [(c, np.array(b, float)) for c, b in expected if b is not None]
        rects = sorted(tuple(np.round(b, 3)) for c, b in pixel if c == 1)
        assert rects == sorted(tuple(b) for c, b in expected if c == 1), row["tile"]  # filled: exact
        lines = [b for c, b in pixel if c == 0]  # min_visibility 0 keeps even a corner the line misses
        for eb in (b for c, b in expected if c == 0):  # the line: its visible pixels lie in its clipped box
            assert len(lines) == 1 and (lines[0][:2] <= eb[:2] + 1e-3).all() and (lines[0][2:] >= eb[2:] - 1e-3).all()
        kept += len(got)
    assert kept == summary.counts["train"]["copies"] > summary.counts["train"]["clipped"]
    small = next(r for r in _tiles(out) if r["source"].endswith("small.png"))
    assert (int(small["width"]), int(small["height"])) == (96, 80)  # an image that fits is one tile, as it is
    assert np.array_equal(cv2.imread(str(out / small["tile"]), cv2.IMREAD_UNCHANGED),
                          cv2.imread(str(root / "images/val/small.png"), cv2.IMREAD_UNCHANGED))


def test_a_cut_line_box_kept_at_the_default_visibility_holds_part_of_the_line(tmp_path):
    """A box at least half inside a tile has both sides at least half the box's, so it cannot miss either
    diagonal: a straight line's clipped box never lies on background alone (lower min_visibility can)."""
    rng = np.random.default_rng(7)
    root = tmp_path / "ds"
    objects = []
    for i in range(12):
        shapes = []
        for _ in range(8):
            x0, y0 = int(rng.integers(0, 300)), int(rng.integers(60, 300))
            dx, dy = int(rng.integers(20, 60)), int(rng.integers(20, 60)) * int(rng.choice([-1, 1]))
            shapes.append(("line", 0, x0, y0, x0 + dx, y0 + dy))  # falling or rising
        objects.append(_drawn(root, "train", f"l{i}", 380, 380, shapes, seed=i))
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    masks = {f"l{i}": sum(m for _, m in objs) for i, objs in enumerate(objects)}
    for share in (0.0, None):
        data, summary = tile_dataset(_yaml(root), size=96, out=tmp_path / f"t{share}", overlap=20,
                                     **({} if share is None else {"min_visibility": share}))
        assert summary.counts["train"]["clipped"] > 20  # the case is exercised
        on_background = 0
        for row in _tiles(data.parent):
            src = Path(row["source"]).stem
            if src not in masks:
                continue
            x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
            for _, (cx, cy, bw, bh) in _labels(data.parent / "labels" / "train" / (Path(row["tile"]).stem + ".txt")):
                x0, y0 = round((cx - bw / 2) * w) + x, round((cy - bh / 2) * h) + y
                x1, y1 = round((cx + bw / 2) * w) + x, round((cy + bh / 2) * h) + y
                on_background += not masks[src][y0:y1, x0:x1].any()
        assert (on_background > 0) if share == 0.0 else (on_background == 0), (share, on_background)


def test_every_box_lies_whole_in_a_tile_with_the_default_overlap(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "ds"
    shapes = []
    for _ in range(12):
        x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 420))
        shapes.append(("rect", 1, x0, y0, x0 + int(rng.integers(3, 70)), y0 + int(rng.integers(3, 50))))
    _drawn(root, "train", "a", 640, 480, shapes, seed=4)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=160, out=tmp_path / "tiles", min_visibility=1.0)
    assert summary.counts["train"]["whole"] >= len(shapes) and summary.counts["train"]["clipped"] == 0
    found = set()
    for row in _tiles(data.parent):
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        lab = data.parent / "labels" / "train" / (Path(row["tile"]).stem + ".txt")
        if lab.exists():
            for _, (cx, cy, bw, bh) in _labels(lab):
                found.add((round((cx - bw / 2) * w + x), round((cy - bh / 2) * h + y),
                           round((cx + bw / 2) * w + x), round((cy + bh / 2) * h + y)))
    assert {tuple(s[2:]) for s in shapes} <= found  # each rectangle whole, back in the source image


def test_min_visibility_decides_which_cut_boxes_a_tile_keeps(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 256, 128, [("rect", 1, 100, 40, 140, 60)], seed=0)  # 40 px wide
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    counts = {}
    for overlap, share in ((64, 0.0), (64, 0.5), (64, 1.0), (0, 1.0)):
        _, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / f"t{overlap}-{share}", overlap=overlap,
                                  min_visibility=share)
        c = summary.counts["train"]
        counts[overlap, share] = (c["whole"], c["never_whole"], c["clipped"], c["dropped"])
    # overlap 64: tiles at 0, 64, 128; the box is whole in the middle one, 70% in the first, 30% in the last
    assert counts[64, 0.0] == (1, 0, 2, 0)
    assert counts[64, 0.5] == (1, 0, 1, 1)
    assert counts[64, 1.0] == (1, 0, 0, 2)
    # overlap 0: tiles at 0 and 128, whole in neither: its largest part (70%) is kept whatever min_visibility
    assert counts[0, 1.0] == (0, 1, 1, 1)


def test_a_box_larger_than_a_tile_is_kept_as_its_parts_not_lost(tmp_path):
    root = tmp_path / "ds"
    stain = _drawn(root, "train", "a", 640, 160, [("rect", 1, 20, 20, 620, 140)], seed=0)[0][1]  # no tile holds it
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "t")
    c = summary.counts["train"]
    assert (c["boxes"], c["whole"], c["never_whole"]) == (1, 0, 1)
    for row in _tiles(data.parent):
        if "a_" not in row["tile"]:
            continue
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        got = _labels(data.parent / "labels/train" / (Path(row["tile"]).stem + ".txt"))
        seen = _mask_box(stain[y:y + h, x:x + w])
        if seen is not None and (seen[2] - seen[0]) * (seen[3] - seen[1]) >= 0.5 * 108 * 120:  # most of a tile
            assert len(got) == 1, row["tile"]  # the stain's pixels are labelled where they lie, as their box
            cx, cy, bw, bh = got[0][1]
            assert np.allclose([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h], seen)
    assert any("whole in no tile" in line and "a.png" in line for line in summary.lines())


def test_a_long_diagonal_line_whole_in_no_tile_is_named_by_the_summary(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "diag", 640, 640, [("line", 0, 20, 20, 610, 610)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    _, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "t")
    assert summary.counts["train"]["never_whole"] == 1 and summary.never_whole_images[0].name == "diag.png"
    assert any("may hold only background" in line and "diag.png" in line for line in summary.lines())


def test_keep_empty_thins_the_training_tiles_without_a_defect_and_only_them(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 640, 640, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 640, 640, [("rect", 1, 10, 10, 40, 40)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "t", overlap=0, keep_empty=0.0)
    assert summary.counts["train"]["tiles"] == 1 and summary.counts["train"]["empty_left_out"] == 24
    assert summary.counts["val"]["tiles"] == 25 and summary.counts["val"]["empty"] == 24
    res = check_dataset(data)
    assert res.errors == [] and res.images == {"train": 1, "val": 25}
    assert sum(res.instances["val"].values()) == 1


def test_sixteen_bit_and_gray_images_give_the_pixels_ultralytics_reads(tmp_path):
    """A 16-bit image's tiles hold what Ultralytics' reader makes of it (8 bits); kept 16-bit, its dark tiles
    would each fail the check before training (bit depth), though the whole image passes."""
    from ultralytics.utils.patches import imread

    root = tmp_path / "ds"
    _drawn(root, "train", "deep", 200, 150, [("rect", 1, 10, 10, 40, 40)], seed=0, depth=np.uint16, gray=True)
    _drawn(root, "train", "gray", 200, 150, [("rect", 1, 10, 10, 40, 40)], seed=2, gray=True)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, _ = tile_dataset(_yaml(root), size=128, out=tmp_path / "t")
    compared = 0
    for row in _tiles(data.parent):
        if Path(row["source"]).stem in ("deep", "gray"):
            x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
            tile = imread(str(data.parent / row["tile"]))
            assert np.array_equal(tile, imread(row["source"])[y:y + h, x:x + w]), row["tile"]
            compared += 1
    assert compared == 8 and check_dataset(data).errors == []


def test_an_exif_turned_photo_is_tiled_upright_as_ultralytics_reads_it(tmp_path):
    from PIL import Image
    from ultralytics.utils.patches import imread

    root = tmp_path / "ds"
    (root / "images/train").mkdir(parents=True)
    (root / "labels/train").mkdir(parents=True)
    stored = np.random.default_rng(0).integers(0, 255, (100, 180, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: upright it is 100 wide, 180 high
    Image.fromarray(stored).save(root / "images/train/p.jpg", exif=exif, quality=95)
    (root / "labels/train/p.txt").write_text("1 0.5 0.5 0.2 0.1\n")
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, _ = tile_dataset(_yaml(root), size=128, out=tmp_path / "t")
    upright = imread(str(root / "images/train/p.jpg"))  # Ultralytics' reader: the oracle
    assert upright.shape[:2] == (180, 100)
    compared = 0
    for row in _tiles(data.parent):
        if row["source"].endswith("p.jpg"):
            x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
            assert np.array_equal(cv2.imread(str(data.parent / row["tile"])), upright[y:y + h, x:x + w])
            compared += 1
    assert compared == 2  # 100 x 180 upright: two tiles of 100 x 128


def test_bad_input_is_one_line_before_anything_is_written(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    with pytest.raises(OutputRefused, match="inside the"):
        tile_dataset(data, size=128, out=root / "images" / "tiles")
    lab = root / "labels/train/a.txt"
    for text, needle in (("7 0.5 0.5 0.1 0.1\n", r"a.txt:1: class id"),
                         ("0 0.1 0.1 0.2 0.1 0.3 0.3 0.1 0.3\n", r"a.txt:1: a polygon")):
        lab.write_text(text)
        with pytest.raises(ValueError, match=needle):
            tile_dataset(data, size=128, out=tmp_path / "t")
        assert not (tmp_path / "t").exists()
    lab.write_text("1 0.5 0.5 0.1 0.1\n")
    for kwargs, needle in (({"overlap": 100}, "overlap=100: takes auto or 0 to 64 px"),
                           ({"size": 500}, r"size=500: .* a multiple of 32 \(480 or 512\)"),
                           ({"keep_empty": 2}, "keep_empty=2: takes a share"),
                           ({"min_visibility": -1}, "min_visibility=-1: takes a share")):
        with pytest.raises(ValueError, match=needle):
            tile_dataset(data, **{"size": 128, "out": root / "images" / "x", **kwargs})  # before the out= refusal
    (root / "images/val/b.png").unlink()
    with pytest.raises(ValueError, match="val: no images in"):
        tile_dataset(data, size=128, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()
    run = subprocess.run([sys.executable, "-m", "gradkit.cli", "tile", f"data={data}", "size=128",
                          f"out={root / 'labels'}"], capture_output=True, text=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr and "tile refused" in run.stderr, run.stderr


def test_the_cli_writes_a_dataset_ultralytics_reads(tmp_path):
    from ultralytics.data.utils import check_det_dataset

    root = tmp_path / "ds"
    _drawn(root, "train", "a", 300, 200, [("rect", 1, 10, 10, 40, 40), ("line", 0, 150, 20, 230, 100)], seed=0)
    _drawn(root, "val", "b", 300, 200, [("rect", 1, 200, 150, 240, 190)], seed=1)
    data = _yaml(root)
    run = subprocess.run([sys.executable, "-m", "gradkit.cli", "tile", f"data={data}", "size=128",
                          f"out={tmp_path / 'tiles'}"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "tiles of 128 px, neighbours overlapping by at least 64 px" in run.stdout
    # 300 x 200 px: tiles start at x 0, 57, 114, 172 and y 0, 36, 72; the line's box (150-231, 20-101) fits one
    assert "train: 1 image -> 12 tiles" in run.stdout and "2 boxes: 2 whole in at least one tile;" in run.stdout
    assert f"gradkit plan data={tmp_path / 'tiles' / 'data.yaml'}" in run.stdout
    assert (f"gradkit val model=RUN/weights/best.pt data={data} imgsz=128 gradkit.report.tile_size=128 "
            "gradkit.report.tile_overlap=64") in run.stdout
    info = check_det_dataset(str(tmp_path / "tiles" / "data.yaml"))
    assert info["names"] == {0: "scratch", 1: "pit"} and Path(info["train"]).is_dir()
    assert check_dataset(tmp_path / "tiles" / "data.yaml").errors == []


def test_the_plan_of_large_images_names_the_tile_command_and_the_tiles_need_no_more(tmp_path):
    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.plan import make_plan

    root = tmp_path / "ds"
    for i in range(4):
        _drawn(root, "train", f"a{i}", 1400, 1000, [("rect", 1, 100 + 200 * i, 300, 130 + 200 * i, 330),
                                                   ("rect", 1, 900, 100 + 150 * i, 940, 125 + 150 * i)], seed=i)
    _drawn(root, "val", "b", 1400, 1000, [("rect", 1, 500, 500, 530, 530)], seed=9)
    data = _yaml(root)
    warning = next(w for w in make_plan(fingerprint_dataset(data)).warnings if "gradkit tile" in w)
    size = int(warning.split("size=")[1].split(",")[0])
    assert size == 640 and f"data={data}" in warning
    tiled, _ = tile_dataset(data, size=size, out=tmp_path / "tiles")
    plan = make_plan(fingerprint_dataset(tiled))
    assert plan.train["imgsz"] == size and not [w for w in plan.warnings if "til" in w], plan.warnings


def test_output_piped_into_head_ends_without_a_traceback(tmp_path):
    root = tmp_path / "ds"
    for i in range(3):
        _drawn(root, "train", f"a{i}", 400, 300, [("rect", 1, 10, 10, 40, 40)], seed=i)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    for i in range(300):  # a long list of findings
        (root / "labels/train" / f"orphan{i}.txt").write_text("")
    run = subprocess.run(f"{sys.executable} -m gradkit.cli check data={data} | head -1", shell=True,
                         capture_output=True, text=True)
    assert run.stdout.count("\n") == 1 and "Traceback" not in run.stderr and "BrokenPipe" not in run.stderr, run.stderr


def test_what_would_make_a_wrong_copy_is_refused_before_writing(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    monkeypatch.chdir(tmp_path)
    (root / "train.txt").write_text("./images/train/a.png\n./images/train/gone.png\n")
    listed = root / "listed.yaml"
    listed.write_text(data.read_text().replace("train: images/train", "train: train.txt"))
    cases = [(listed, {}, r"train.txt:2: ./images/train/gone.png: no such image")]
    (root / "labels/train/a.txt").write_text("")  # a defect-free training split, all of it thinned away
    cases.append((data, {"keep_empty": 0.0}, "train: keep_empty=0 leaves no tile"))
    for yaml_file, kwargs, needle in cases:
        with pytest.raises(ValueError, match=needle):
            tile_dataset(yaml_file, size=128, out=tmp_path / "t", **kwargs)
        assert not (tmp_path / "t").exists()
    import shutil

    shutil.rmtree(root / "labels/train")
    with pytest.raises(ValueError, match="train: none of its 1 images has a label file"):
        tile_dataset(data, size=128, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_parts_cut_to_the_same_box_or_to_a_sliver_are_written_once_or_not_at_all(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 256, 128, [("rect", 1, 90, 40, 170, 60), ("rect", 1, 90, 40, 180, 60)], seed=0)
    (root / "labels/train/a.txt").write_text(  # and a box that ends a hair past the tile edge
        (root / "labels/train/a.txt").read_text() + f"0 {(100 + 128.00003) / 2 / 256} 0.8 {(28.00003) / 256} 0.1\n")
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "t", overlap=0, min_visibility=0.0)
    res = check_dataset(data)
    assert res.errors == [], res.errors  # no duplicate box, no zero-size box
    first = _labels(data.parent / "labels/train/a_x0_y0.txt")
    assert sorted(c for c, _ in first) == [0, 1]  # the two stains' parts there are one box; the thin box kept
    assert summary.counts["train"]["dropped"] == 2  # the repeat, and the thin box's 3e-5 px sliver


def test_same_named_images_of_a_list_split_keep_apart_and_keep_empty_is_seeded(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    for folder in ("x", "y"):
        _drawn(root / folder, "train", "a", 512, 512, [("rect", 1, 10, 10, 40, 40)], seed=ord(folder))
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    (root / "train.txt").write_text("./x/images/train/a.png\n./y/images/train/a.png\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "train.txt", "val": "images/val",
                                                    "names": {0: "scratch", 1: "pit"}}))
    runs = {}
    for name, seed in (("s0", 0), ("s0-again", 0), ("s1", 1)):
        data, summary = tile_dataset(root / "data.yaml", size=128, out=tmp_path / name, overlap=0, keep_empty=0.5,
                                     seed=seed)
        runs[name] = (data.parent / "tiles.csv").read_text()
    sources = {r["tile"].split("_x")[0]: Path(r["source"]).parent.parent.parent.name for r in _tiles(data.parent)}
    assert sources == {"images/train/a": "x", "images/train/a-2": "y", "images/val/b": "ds"}
    assert runs["s0"] == runs["s0-again"] != runs["s1"]  # the thinning is seeded
    c = summary.counts["train"]
    assert c["empty"] + c["empty_left_out"] == 30 and 5 <= c["empty"] <= 25  # 2 x 16 tiles, one defect each


def test_overwrite_never_replaces_a_file_no_gradkit_run_listed(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    out = tmp_path / "t"
    tile_dataset(data, size=128, out=out)
    manifest = out / ".gradkit-manifest.json"
    import json

    listed = json.loads(manifest.read_text())
    listed["files"].remove("tiles.csv")  # as if a run that does not write tiles.csv had written the folder
    manifest.write_text(json.dumps(listed))
    (out / "tiles.csv").write_text("my notes\n")
    with pytest.raises(OutputRefused, match=r"tiles\.csv, which no previous gradkit run wrote"):
        tile_dataset(data, size=128, out=out, overwrite=True)
    assert (out / "tiles.csv").read_text() == "my notes\n"



def test_a_one_pixel_line_is_labelled_on_every_tile_that_shows_enough_of_it(tmp_path):
    """A 1 px line's box computes to a hair under a pixel across: that is its size, not a sliver a tile cut."""
    root = tmp_path / "ds"
    lines = _drawn(root, "train", "a", 640, 200, [("rect", 0, 20, 50, 620, 51), ("rect", 0, 100, 150, 160, 151)],
                   seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, summary = tile_dataset(_yaml(root), size=128, out=tmp_path / "t")
    for row in _tiles(data.parent):
        if "a_" not in row["tile"]:
            continue
        x, y, w, h = (int(row[k]) for k in ("x", "y", "width", "height"))
        got = _labels(data.parent / "labels/train" / (Path(row["tile"]).stem + ".txt"))
        for _, mask in lines:
            seen = _mask_box(mask[y:y + h, x:x + w])
            total = _mask_box(mask)
            if seen is not None and (seen[2] - seen[0]) >= 0.5 * min(total[2] - total[0], 128):
                assert any(abs((cy - bh / 2) * h - seen[1]) < 1e-3 for _, (_, cy, _, bh) in got), row["tile"]
    assert summary.counts["train"]["copies"] >= 6


def test_lines_a_list_split_skips_or_repeats_are_named_in_the_summary(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    (root / "train.txt").write_text("./images/train/a.png\nnotes about the split\n./images/train/a.png\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "train.txt", "val": "images/val",
                                                    "names": {0: "scratch", 1: "pit"}}))
    _, summary = tile_dataset(root / "data.yaml", size=128, out=tmp_path / "t")
    left = "\n".join(summary.lines())
    assert "train.txt:2: 'notes about the split' is not an image path" in left
    assert "train.txt:3: './images/train/a.png' given again: tiled once" in left


def test_the_default_output_lies_beside_the_dataset_root_never_in_it(tmp_path):
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data, _ = tile_dataset(_yaml(root), size=128)
    assert data == tmp_path / "ds-tiles128" / "data.yaml" and data.is_file()


def test_a_tiled_copy_is_known_by_its_record_and_a_crafted_record_is_refused(tmp_path):
    from gradkit.data.tile import tiled_copy_of

    root = tmp_path / "ds"
    _drawn(root, "train", "a", 300, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 300, 200, [("rect", 1, 200, 150, 240, 190)], seed=1)
    data = _yaml(root)
    tiled, summary = tile_dataset(data, size=128, out=tmp_path / "tiles")
    assert tiled_copy_of(tiled) == {"source": str(data.resolve()), "size": 128, "overlap": summary.overlap}
    assert tiled_copy_of(data) is None and tiled_copy_of(tmp_path / "absent.yaml") is None
    doc = yaml.safe_load(tiled.read_text())
    doc["gradkit_tile"]["overlap"] = "40; rm -rf /"
    tiled.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match=r"gradkit_tile.overlap is '40; rm -rf /', not the int gradkit tile writes"):
        tiled_copy_of(tiled)
    for size, overlap in ((0, 10), (128, -1)):  # ints, but no tiling (a report would record what it cannot rebuild)
        doc["gradkit_tile"].update(size=size, overlap=overlap)
        tiled.write_text(yaml.safe_dump(doc))
        with pytest.raises(ValueError, match=f"size {size}, overlap {overlap}"):
            tiled_copy_of(tiled)


def test_an_image_over_pil_s_pixel_limit_is_named_by_the_check_and_tiled_by_tile(tmp_path, monkeypatch):
    """Line-scan images can pass twice PIL's Image.MAX_IMAGE_PIXELS (179 Mpx by default), over which Ultralytics
    drops the image and its labels as a "decompression bomb". The check before training read only the PNG header
    and said nothing, the full check and tile stopped with a traceback. Now the check names it and points to
    tile, and tile (reading only its header through PIL, its pixels through OpenCV) cuts it. The limit is lowered
    here so that a 200x200 image is over it. Oracle: the masks' boxes cut by the tiles, as in the tests above."""
    from PIL import Image

    root = tmp_path / "ds"
    objects = _drawn(root, "train", "scan", 200, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40 000 px is over twice it
    for images in (False, True):
        said = [f for f in check_dataset(data, images=images).errors if "scan.png" in f.path]
        assert len(said) == 1 and "decompression bomb" in said[0].message and "gradkit tile" in said[0].message, \
            [str(f) for f in check_dataset(data, images=images).findings]
    out = tile_dataset(data, size=128, out=tmp_path / "t")[0].parent
    rows = [r for r in _tiles(out) if r["source"].endswith("scan.png")]
    assert len(rows) == 4  # 200 px in tiles of 128: two starts per side
    src = cv2.imread(str(root / "images/train/scan.png"), cv2.IMREAD_UNCHANGED)
    first = next(r for r in rows if (int(r["x"]), int(r["y"])) == (0, 0))
    assert np.array_equal(cv2.imread(str(out / first["tile"]), cv2.IMREAD_UNCHANGED), src[:128, :128])
    (c, (cx, cy, bw, bh)), = _labels(out / "labels" / "train" / (Path(first["tile"]).stem + ".txt"))
    box = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2]) * 128
    assert c == 1 and tuple(np.round(box, 3)) == tuple(float(v) for v in _mask_box(objects[0][1]))


def test_a_sixteen_bit_image_over_pil_s_pixel_limit_is_not_tiled_unstretched(tmp_path, monkeypatch):
    """Over the limit the pixel-count finding stood alone and tile set it aside: a 16-bit line-scan image was cut
    into 16-bit tiles, each later stretched on its own. Its depth, read from the header, is named too, and tile
    refuses it as it refuses any 16-bit image."""
    from PIL import Image

    root = tmp_path / "ds"
    _drawn(root, "train", "scan", 120, 120, [("rect", 1, 10, 10, 40, 40)], seed=0, depth=np.uint16, gray=True)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1)
    data = _yaml(root)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)
    kinds = sorted(f.kind for f in check_dataset(data, images=False).errors if "scan" in f.path)
    assert kinds == ["bit depth", "too many pixels"], kinds
    with pytest.raises(ValueError, match="bit depth"):
        tile_dataset(data, size=64, out=tmp_path / "t")
    assert not (tmp_path / "t").exists()
    for depth, kinds in ((np.uint8, ["too many pixels"]), (np.uint16, ["bit depth", "too many pixels"])):
        tif = root / "images" / "train" / "scan.tif"  # a TIFF's depth from its BitsPerSample tag
        assert cv2.imwrite(str(tif), np.full((120, 120), 7, depth))
        (root / "images" / "train" / "scan.png").unlink(missing_ok=True)
        found = sorted(f.kind for f in check_dataset(data, images=False).errors if "scan" in f.path)
        assert found == kinds, (depth, found)


def test_scoring_a_tiled_copy_through_tiles_again_is_refused_naming_the_source(tmp_path, gradkit_here):
    """``gradkit val data=COPY gradkit.report.tile_size=N`` cut the copy's tiles into tiles and reported them as
    parts ("6 of 34 defective parts would ship" where the source has 5), after one console line. Refused before
    the validation, with the data= that scores whole parts."""
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 300, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 300, 200, [("rect", 1, 200, 150, 240, 190)], seed=1)
    data = _yaml(root)
    tiled, _ = tile_dataset(data, size=128, out=tmp_path / "tiles")
    r = gradkit_here("val", "model=yolo26n.yaml", f"data={tiled}", "gradkit.report.tile_size=128", cwd=tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "gradkit tile's copy" in lines[0] and f"data={data.resolve()}" in lines[0]


def test_a_report_on_a_tiled_copy_says_its_parts_are_tiles(tmp_path):
    """A plain validation on gradkit tile's copy (or a run trained on it, without report.tile_size) reports each
    tile as a part in the escape and false-reject rates: the report says so and names the data that scores parts."""
    from gradkit.report import build_report
    from gradkit.report.render import warnings
    from report_cases import hand_made_evaluation

    root = tmp_path / "ds"
    _drawn(root, "train", "a", 300, 200, [("rect", 1, 10, 10, 40, 40)], seed=0)
    _drawn(root, "val", "b", 300, 200, [("rect", 1, 200, 150, 240, 190)], seed=1)
    data = _yaml(root)
    tiled, _ = tile_dataset(data, size=128, out=tmp_path / "tiles")
    ev = hand_made_evaluation(tmp_path / "img")
    assert not [w for w in warnings(build_report(ev)) if "tile's copy" in w]
    ev.data = str(tiled)
    report = build_report(ev)
    assert report["tiled_copy_of"]["source"] == str(data.resolve())
    (said,) = [w for w in warnings(report) if "tile's copy" in w]
    assert "tiles" in said and f"data={data.resolve()}" in said and "report.tile_size=128" in said


def test_a_one_channel_dataset_stays_one_channel_in_its_tiled_copy(tmp_path):
    """Reported (session 62 review): the tiled copy's data.yaml dropped the source's ``channels: 1``, so Ultralytics
    read the gray tiles as three channels and built a three-channel first layer: a model trained on the tiles did not
    take the data it was meant for. A YAML without the key keeps Ultralytics' default (none written)."""
    root = tmp_path / "ds"
    _drawn(root, "train", "a", 200, 150, [("rect", 1, 10, 10, 40, 40)], seed=0, gray=True)
    _drawn(root, "val", "b", 64, 64, [("rect", 1, 5, 5, 20, 30)], seed=1, gray=True)
    doc = yaml.safe_load(_yaml(root).read_text())
    (root / "data.yaml").write_text(yaml.safe_dump({**doc, "channels": 1}))
    data, _ = tile_dataset(root / "data.yaml", size=128, out=tmp_path / "t")
    assert yaml.safe_load(data.read_text())["channels"] == 1
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    data, _ = tile_dataset(root / "data.yaml", size=128, out=tmp_path / "t3")
    assert "channels" not in yaml.safe_load(data.read_text())
