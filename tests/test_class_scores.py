"""``benchmarks/class_scores.py``: where each box of a class lies, on hand-made boxes with known IoUs, and the
summary of a hand-made ranking (no training)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import class_scores as cs  # a benchmark script, found through the path above

NAMES = {0: "scratch", 1: "crack"}
GT_CLS = np.array([0, 1])
GT_XYXY = np.array([[0.1, 0.1, 0.3, 0.3], [0.6, 0.6, 0.8, 0.8]])  # a scratch and a crack, 0.2 a side


def test_each_box_is_placed_by_its_iou_with_the_defects():
    def place(box, cls=0):
        return cs.outcome(np.array(box), cls, GT_CLS, GT_XYXY, NAMES)

    assert place([0.1, 0.1, 0.3, 0.3]) == "right"                        # the scratch's own box
    assert place([0.1, 0.1, 0.3, 0.2]) == "right"                        # half of it: IoU 0.5
    assert place([0.1, 0.1, 0.3, 0.18]) == "near"                        # IoU 0.4
    assert place([0.1, 0.1, 0.3, 0.11]) == "background"                  # IoU 0.05
    assert place([0.6, 0.6, 0.8, 0.8]) == "on a crack"                   # a scratch box on the crack
    assert place([0.6, 0.6, 0.8, 0.8], cls=1) == "right"
    assert place([0.4, 0.4, 0.5, 0.5]) == "background"
    assert cs.outcome(np.array([0.1, 0.1, 0.3, 0.3]), 0, np.zeros(0, int), np.zeros((0, 4)), NAMES) == \
        "defect-free image"


def test_the_summary_ranks_by_score():
    scored = [(0.9, "background"), (0.1, "right"), (0.5, "on a crack"), (0.3, "right"), (0.05, "near")]
    lines = cs.summary(scored, n_objects=2)
    assert lines == ["  5 boxes, highest score 0.900",
                     "  top 2 (scores 0.900 to 0.500): background 1, on a crack 1",
                     "  top 8 (scores 0.900 to 0.050): right 2, background 1, on a crack 1, near 1",
                     "  ranks of the first right boxes: [3, 4] (of 2 right)"]
    assert cs.summary([], 3) == ["  no box at confidence 0.001"]
