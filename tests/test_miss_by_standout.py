"""``benchmarks/miss_by_standout.py``: each held-out defect's standout, its outcome under planted
predictions, and the found shares, on a hand-made set."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import miss_by_standout as mbs  # a benchmark script, found through the path above

CENTRE = "0 0.5 0.5 0.1667 0.1667"    # a 16 px box at the centre of a 96 px image
CORNER = "1 0.2 0.2 0.1667 0.1667"    # a 16 px box near the top-left corner


def _texture() -> np.ndarray:
    x = np.arange(96)
    return np.tile(128 + 40 * np.sin(2 * np.pi * x / 6), (96, 1)).round().astype(np.uint8)  # even grain


def _write(root: Path, split: str, name: str, img: np.ndarray, rows: list[str]) -> None:
    (root / split / "images").mkdir(parents=True, exist_ok=True)   # the Roboflow layout: SPLIT/images
    (root / split / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / split / "images" / f"{name}.png"), img)
    (root / split / "labels" / f"{name}.txt").write_text("".join(r + "\n" for r in rows))


def _dataset(root: Path) -> Path:
    clear = _texture()
    clear[40:56, 40:56] = 10                  # a dark square on the grain under CENTRE: stands out
    mixed = _texture()                        # CENTRE holds grain alone: it stands out no more than its ring
    mixed[11:27, 11:27] = 250                 # a bright square under CORNER: stands out
    _write(root, "valid", "a", clear, [CENTRE])
    _write(root, "test", "b", mixed, [CENTRE, CORNER])
    _write(root, "train", "c", clear, [CENTRE])  # not held out: never read
    _write(root, "test", "d", _texture(), [])    # defect-free: no objects
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: train/images\nval: valid/images\ntest: test/images\n"
                    "names: [scratch, crack]\n")
    return data


def test_standout_per_held_out_defect(tmp_path):
    names, objects = mbs.held_out_objects(_dataset(tmp_path))
    assert names == {0: "scratch", 1: "crack"}
    by_name = {img.name: (labels, standout) for img, labels, standout in objects}
    assert {n: [c for c, _ in lab] for n, (lab, _) in by_name.items()} == {"a.png": [0], "b.png": [0, 1], "d.png": []}
    a, b = by_name["a.png"][1], by_name["b.png"][1]
    assert a[0] > 0.9 and b[0] < 0.5 and b[1] > 0.9   # each box is judged by its own pixels


def test_planted_predictions_give_each_defect_its_outcome():
    labels = [(0, (0.5, 0.5, 0.2, 0.2)), (1, (0.2, 0.2, 0.1, 0.1)),
              (1, (0.8, 0.8, 0.1, 0.1)), (0, (0.2, 0.8, 0.1, 0.1))]
    preds = [[0.4, 0.4, 0.6, 0.6],              # on the first defect, its class: found
             [0.2, 0.2, 0.3, 0.3],              # a corner of the second (IoU 0.14), its class: mislocalised
             [0.75, 0.75, 0.85, 0.85],          # on the third, the wrong class: confused
             [0.15, 0.75, 0.25, 0.85]]          # on the fourth, its class, but below the confidence: unseen
    kinds = mbs.match_outcomes(labels, preds, [0, 1, 0, 0], [0.9, 0.8, 0.7, 0.1], conf=0.25)
    assert kinds == ["found", "mislocalised", "confused", "unseen"]


def test_found_shares_split_by_standout(tmp_path):
    names, objects = mbs.held_out_objects(_dataset(tmp_path))
    planted = {"a.png": ["found"], "b.png": ["unseen", "mislocalised"], "d.png": []}  # in label order
    kinds = [k for img, _, _ in objects for k in planted[img.name]]
    rows = {line.split(" | ")[0].strip("| "): line for line in mbs.table(names, objects, {"m": kinds}).splitlines()[2:]}
    assert "| 2 (1, 0) | 1.00 / 0.00 (0 mislocalised, 0 confused, 1 unseen) |" in rows["scratch"]
    assert "| 1 (1, 0) | 0.00 / - (1 mislocalised, 0 confused, 0 unseen) |" in rows["crack"]


def test_a_bad_label_line_stops_it_naming_the_file(tmp_path):
    data = _dataset(tmp_path)
    (tmp_path / "test" / "labels" / "b.txt").write_text("0 0.5 0.5 0.1667\n")   # a box with 3 numbers
    try:
        mbs.held_out_objects(data)
    except SystemExit as exc:
        assert "b.txt" in str(exc)
    else:
        raise AssertionError("a malformed label line was dropped silently")
