"""``benchmarks/class_outlook.py``: per-class fingerprint measures on a hand-made set with known answers,
and the held-out AP50 joined from planted ``results.json`` files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import class_outlook as co  # a benchmark script, found through the path above

SIZE = 128


def _grain() -> np.ndarray:
    x = np.arange(SIZE)
    return np.tile(128 + 40 * np.sin(2 * np.pi * x / 6), (SIZE, 1)).round().astype(np.uint8)


def _label(cls: int, x0: int, y0: int, x1: int, y1: int) -> str:
    return f"{cls} {(x0 + x1) / 2 / SIZE:.6f} {(y0 + y1) / 2 / SIZE:.6f} {(x1 - x0) / SIZE:.6f} {(y1 - y0) / SIZE:.6f}"


def _dataset(root: Path) -> Path:
    """Class 0 (scratch): a 1 px dark diagonal line on plain gray: thin, stands out. Class 1 (pit): a
    filled 12 px dark square on plain gray: not thin, stands out. Class 2 (ghost): a box on even grain that
    holds nothing but the grain: does not stand out. Class 3 (mixed): a dark square on plain gray in the
    first kind of image, grain alone in the second: half of its boxes stand out."""
    (root / "train" / "images").mkdir(parents=True)
    (root / "train" / "labels").mkdir(parents=True)
    for i in range(3):
        plain = np.full((SIZE, SIZE), 150, np.uint8)
        cv2.line(plain, (20, 20 + i), (80, 80 + i), 40, 1)
        plain[96:108, 96:108] = 30
        plain[20:30, 100:110] = 20
        cv2.imwrite(str(root / "train" / "images" / f"p{i}.png"), plain)
        (root / "train" / "labels" / f"p{i}.txt").write_text(
            _label(0, 20, 20 + i, 81, 81 + i) + "\n" + _label(1, 96, 96, 108, 108) + "\n"
            + _label(3, 100, 20, 110, 30) + "\n")
        cv2.imwrite(str(root / "train" / "images" / f"g{i}.png"), _grain())
        (root / "train" / "labels" / f"g{i}.txt").write_text(_label(2, 40, 40, 72, 72) + "\n"
                                                             + _label(3, 90, 90, 110, 110) + "\n")
    data = root / "data.yaml"
    data.write_text(f"path: {root}\ntrain: train/images\nval: train/images\nnames: [scratch, pit, ghost, mixed]\n")
    return data


def test_each_class_measured_as_drawn(tmp_path):
    rows = co.class_measures(_dataset(tmp_path))
    assert {n: r["boxes"] for n, r in rows.items()} == {"scratch": 3, "pit": 3, "ghost": 3, "mixed": 6}
    assert rows["scratch"]["thin"] == 1.0 and rows["scratch"]["stands_out"] == 1.0
    assert 0.5 <= rows["scratch"]["stroke_px"] <= 1.2                # a 1 px line, in native pixels
    assert rows["pit"]["thin"] == 0.0 and rows["pit"]["stands_out"] == 1.0
    assert rows["ghost"]["stands_out"] == 0.0                         # grain alone: measured, not standing out
    assert rows["mixed"]["stands_out"] == 0.5                         # a share of boxes, not of images


def _results(path: Path, set_name: str, runs: dict[str, list[dict]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": {}, "sets": {set_name: {"plan": {}, "runs": runs}}}), encoding="utf-8")


def test_ap50_joined_over_files_and_only_for_the_named_recipes(tmp_path):
    _results(tmp_path / "a" / "results.json", "photo",
             {"plan@time": [{"AP50": {"crack": 0.1, "pit": 0.0}}], "stock": [{"AP50": {"crack": 0.9}}]})
    _results(tmp_path / "b" / "results.json", "photo", {"plan-deep@time": [{"AP50": {"crack": 0.3}}]})
    _results(tmp_path / "c" / "results.json", "weld", {"plan@time": [{"AP50": {"crack": 0.7}}]})
    found = co.held_out_ap50([str(tmp_path / "*" / "results.json")], ["plan@time", "plan-deep@time"])
    assert sorted(found[("photo", "crack")]) == [0.1, 0.3]         # stock's 0.9 is not one of them
    assert found[("photo", "pit")] == [0.0]
    assert found[("weld", "crack")] == [0.7]                         # kept apart by set
    assert np.mean(found[("photo", "crack")]) == pytest.approx(0.2)
