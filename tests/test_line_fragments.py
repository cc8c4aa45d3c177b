"""benchmarks/line_fragments.py: detections covering a line piece by piece, measured against hand-made cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from line_fragments import fragment_stats


def test_two_fragments_of_a_horizontal_line_cover_nine_tenths_and_their_join_is_twice_as_thick():
    line = np.array([0.0, 10.0, 100.0, 12.0])  # 100 x 2
    dets = np.array([[0, 9, 40, 13], [50, 9, 100, 13], [0, 50, 100, 52]], float)  # the third lies elsewhere
    n, cover, iou = fragment_stats(line, dets)
    assert n == 2
    assert cover == pytest.approx(0.9)  # 0-40 and 50-100 of 100 px
    assert iou == pytest.approx(200 / 400)  # joined 100 x 4 around the 100 x 2 line


def test_a_vertical_line_is_measured_along_y_and_a_perfect_box_scores_one():
    line = np.array([30.0, 0.0, 32.0, 80.0])
    n, cover, iou = fragment_stats(line, np.array([[30, 0, 32, 80]], float))
    assert (n, cover, iou) == (1, 1.0, pytest.approx(1.0))
    n, cover, _ = fragment_stats(line, np.array([[29, 20, 33, 40]], float))
    assert n == 1 and cover == pytest.approx(0.25)  # 20 of 80 px along y, whatever its width across


def test_no_detection_on_the_line_gives_zeros():
    assert fragment_stats(np.array([0.0, 0, 50, 1]), np.zeros((0, 4))) == (0, 0.0, 0.0)
    assert fragment_stats(np.array([0.0, 0, 50, 1]), np.array([[60.0, 0, 90, 1]])) == (0, 0.0, 0.0)
