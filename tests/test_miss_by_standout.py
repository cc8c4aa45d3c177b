"""``benchmarks/miss_by_standout.py``: each held-out defect's standout and the found shares, on a hand-made set."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import miss_by_standout as mbs  # a benchmark script, found through the path above


def _write(root: Path, split: str, name: str, img: np.ndarray, rows: list[str]) -> None:
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{name}.png"), img)
    (root / "labels" / split / f"{name}.txt").write_text("".join(r + "\n" for r in rows))


def test_standout_per_held_out_defect_and_the_found_shares(tmp_path):
    x = np.arange(96)
    texture = np.tile(128 + 40 * np.sin(2 * np.pi * x / 6), (96, 1)).round().astype(np.uint8)  # even grain
    clear = texture.copy()
    clear[40:56, 40:56] = 10                 # a dark square on the grain: stands out
    faint = texture.copy()                   # a box around grain alone: nothing in it stands out
    box = "0 0.5 0.5 0.1667 0.1667"
    _write(tmp_path, "val", "a", clear, [box])
    _write(tmp_path, "test", "b", faint, [box, "1 0.2 0.2 0.1667 0.1667"])
    _write(tmp_path, "train", "c", clear, [box])  # not held out: never read
    _write(tmp_path, "test", "d", texture, [])    # defect-free: no objects
    data = tmp_path / "data.yaml"
    data.write_text(f"path: {tmp_path}\ntrain: images/train\nval: images/val\ntest: images/test\n"
                    "names: {0: scratch, 1: crack}\n")

    objects = mbs.held_out_objects(data)
    by_name = {img.name: (labels, standout) for img, labels, standout in objects}
    assert {n: [c for c, _ in lab] for n, (lab, _) in by_name.items()} == {"a.png": [0], "b.png": [0, 1], "d.png": []}
    assert by_name["a.png"][1][0] > 0.9 and by_name["b.png"][1][0] < 0.5  # the square stands out; grain does not

    # outcomes in the objects' order: a's scratch found, b's scratch unseen, b's crack mislocalised
    planted = {"a.png": ["found"], "b.png": ["unseen", "mislocalised"], "d.png": []}
    kinds = [k for img, _, _ in objects for k in planted[img.name]]
    text = mbs.table({0: "scratch", 1: "crack"}, objects, {"m": kinds})
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert "| 2 (1) | 1.00 / 0.00 (0 mislocalised, 0 confused, 1 unseen) |" in rows["scratch"]
    assert "| 1 (0) | - / 0.00 (1 mislocalised, 0 confused, 0 unseen) |" in rows["crack"]
