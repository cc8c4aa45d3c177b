"""benchmarks/line_fragments.py: detections covering a line piece by piece, measured against hand-made cases."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from line_fragments import fragment_stats, placement_stats


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


def test_a_thick_box_off_centre_is_measured_in_line_thicknesses_and_tightened_about_its_own_centre():
    line = np.array([0.0, 10.0, 100.0, 12.0])  # 100 x 2, centre y 11
    dets = np.array([[0, 9, 100, 15], [0, 50, 100, 52]], float)  # 6 thick, centre y 12; the second elsewhere
    iou, thick, offset, tight = placement_stats(line, dets)
    assert iou == pytest.approx(200 / 600)
    assert thick == pytest.approx(3.0) and offset == pytest.approx(0.5)  # 1 px below: half a thickness
    assert tight == pytest.approx(100 / 300)  # tightened to y 11-13: overlaps the line's 11-12 only


def test_a_vertical_line_is_measured_across_x_and_a_centred_box_tightens_to_iou_one():
    line = np.array([30.0, 0.0, 32.0, 80.0])  # 2 x 80, centre x 31
    dets = np.array([[29, 0, 33, 20], [28, 0, 34, 80]], float)  # IoU 40 / 200 and 160 / 480: the second is best
    iou, thick, offset, tight = placement_stats(line, dets)
    assert iou == pytest.approx(1 / 3) and thick == pytest.approx(3.0) and offset == pytest.approx(0.0)
    assert tight == pytest.approx(1.0)
    assert placement_stats(line, np.array([[60.0, 0, 70, 80]])) is None  # nothing on the line
    assert placement_stats(line, np.zeros((0, 4))) is None
