"""The sixth evaluation set (weld radiographs): the distance-field rasteriser against areas known in closed
form, boxes from masks, seeded determinism, the image changed only under the masks, the files as rendered,
and the property the set is drawn with: cracks, pores and slag inside the weld bead, found from the pixels."""

from __future__ import annotations

import numpy as np
import pytest

import gradkit.synth_weld as weld
from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.synth_weld import WeldSpec, generate_weld_dataset, render_weld_image
from mask_boxes import assert_changes_only_near_masks, assert_tight_mask_boxes, assert_written_as_rendered

SPEC = WeldSpec(images=40, width=192, height=128, seed=5)


def test_an_axis_aligned_line_covers_exactly_its_rows():
    # a 1 px line through the middle of row 10 covers row 10 fully and nothing else; a 2 px line on the
    # border between rows 9 and 10 covers both fully (pixel i spans [i, i + 1))
    one = weld._polyline_coverage(20, 40, np.array([[5.0, 10.5], [35.0, 10.5]]), np.array([1.0]))
    two = weld._polyline_coverage(20, 40, np.array([[5.0, 10.0], [35.0, 10.0]]), np.array([2.0]))
    np.testing.assert_array_equal(one[:, 20], np.eye(20)[10])
    np.testing.assert_array_equal(two[:, 20], np.eye(20)[9] + np.eye(20)[10])


@pytest.mark.parametrize(("angle", "width"), [(0.3, 1.0), (0.7, 0.6), (1.2, 1.8)])
def test_a_diagonal_line_covers_its_area(angle, width):
    # area of a segment of length L and width w with round caps: L w + pi w^2 / 4 (a line at exactly 45
    # degrees samples its cross-section at one phase all along, and is off by up to 9%: not one of these)
    length = 40.0
    a = np.array([30.3, 29.8])
    b = a + length * np.array([np.cos(angle), np.sin(angle)])
    cover = weld._polyline_coverage(80, 80, np.stack([a, b]), np.array([width]))
    assert cover.sum() == pytest.approx(length * width + np.pi * width**2 / 4, rel=0.03)


def test_a_pore_is_deepest_at_its_centre_and_has_a_spheres_volume():
    # the mean of sqrt(1 - r^2 / R^2) over a disc of radius R is 2/3
    depth = weld._pore_depth(20, 20, np.array([10.0, 10.0]), 3.0)
    assert depth.sum() == pytest.approx(2 / 3 * np.pi * 9, rel=0.03)
    ys, xs = np.mgrid[0:20, 0:20] + 0.5
    beyond = np.hypot(xs - 10, ys - 10) > 3.0 + 0.75      # no pixel's 4 x 4 points reach the sphere
    assert depth.max() == depth[9:11, 9:11].max() and (depth[beyond] == 0).all() and (depth[~beyond] > 0).any()


@pytest.mark.parametrize("spec", [SPEC, WeldSpec(images=40, width=64, height=64, seed=3, max_defects=5),
                                  WeldSpec(images=40, width=64, height=200, seed=3, max_defects=5)],
                         ids=["3:2", "smallest", "portrait"])
def test_boxes_are_the_tight_boxes_of_the_masks(spec):
    checked = 0
    for i in range(spec.images):
        img, labels, masks = render_weld_image(spec, i)
        assert img.shape == (spec.height, spec.width, 3) and img.dtype == np.uint8
        checked += assert_tight_mask_boxes(labels, masks, spec.width, spec.height)
    assert checked >= 30


def test_pores_and_scratches_have_the_documented_sizes():
    # pores 2-7 px across; a scratch's ink (its mask's sum) over its chord (the box's diagonal, within 1% of
    # an arc this shallow) is its width, 0.6-1.8 px
    spec = WeldSpec(images=80, seed=7, empty_frac=0.0)
    pores, widths = [], []
    for i in range(spec.images):
        _, labels, masks = render_weld_image(spec, i)
        for (c, _x, _y, w, h), mask in zip(labels, masks, strict=True):
            w_px, h_px = w * spec.width, h * spec.height
            if c == 2:
                pores.append(max(w_px, h_px))
            elif c == 0:
                widths.append(mask.sum() / np.hypot(w_px, h_px))
    assert len(pores) >= 20 and len(widths) >= 20
    assert min(pores) >= 1 and max(pores) <= 7
    assert min(widths) >= 0.5 and max(widths) <= 1.9 and np.ptp(widths) > 0.6


def test_seeded_determinism_and_gray_in_three_channels():
    a, la, _ = render_weld_image(SPEC, 7)
    b, lb, _ = render_weld_image(SPEC, 7)
    c, _, _ = render_weld_image(WeldSpec(images=40, width=192, height=128, seed=6), 7)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])


def test_every_class_and_defect_free_images_occur():
    spec = WeldSpec(images=60, width=160, height=96, seed=1, empty_frac=0.3)
    labels = [render_weld_image(spec, i)[1] for i in range(spec.images)]
    assert 8 <= sum(not lab for lab in labels) <= 30
    assert {c for lab in labels for c, *_ in lab} == {0, 1, 2, 3}


def test_the_image_changes_only_where_a_returned_mask_says(monkeypatch):
    # oracle: the same image with every defect's drawing undone (the same random numbers drawn, the
    # result thrown away); the two may differ only where a kept defect's mask is (plus the exposure's blur)
    spec = WeldSpec(images=16, width=192, height=128, seed=4, empty_frac=0.0)
    rendered = [render_weld_image(spec, i) for i in range(spec.images)]
    draw = weld._apply
    monkeypatch.setattr(weld, "_apply", lambda rng, img, cls, at: (img, draw(rng, img, cls, at)[1]))
    assert_changes_only_near_masks(rendered, [render_weld_image(spec, i) for i in range(spec.images)])


def _bead(img: np.ndarray) -> tuple[str, int, int]:
    """The weld from the pixels alone: the axis whose profile across varies most, and the span of
    rows (or columns) lighter than halfway between the profile's median and its maximum."""
    g = img[..., 0].astype(float)
    rows, cols = np.median(g, axis=1), np.median(g, axis=0)
    axis, profile = ("horizontal", rows) if np.ptp(rows) > np.ptp(cols) else ("vertical", cols)
    inside = np.nonzero(profile > (np.median(profile) + profile.max()) / 2)[0]
    return axis, int(inside.min()), int(inside.max()) + 1


def test_cracks_pores_and_slag_lie_in_the_weld_bead_found_from_the_pixels():
    spec = WeldSpec(images=60, width=384, height=256, seed=2, empty_frac=0.0)
    axes, inside, in_weld = [], 0, 0
    for i in range(spec.images):
        img, labels, _ = render_weld_image(spec, i)
        axis, lo, hi = _bead(img)
        axes.append(axis)
        for c, x, y, _w, _h in labels:
            if c == 0:          # scratches are on the film, anywhere
                continue
            centre = y * spec.height if axis == "horizontal" else x * spec.width
            in_weld += 1
            inside += lo - 3 <= centre <= hi + 3
    assert axes.count("horizontal") >= 15 and axes.count("vertical") >= 15
    assert in_weld >= 60 and inside >= 0.95 * in_weld


def test_written_files_match_the_rendering(tmp_path):
    spec = WeldSpec(images=30, width=192, height=128, seed=2, empty_frac=0.0)
    data = generate_weld_dataset(tmp_path / "w", spec)
    assert_written_as_rendered(data.parent, *render_weld_image(spec, 0)[:2])
    fp = fingerprint_dataset(data)
    assert set(fp.widths) == {192} and set(fp.heights) == {128} and fp.gray == fp.decoded


@pytest.mark.parametrize(("kwargs", "word"), [({"width": 32}, "width"), ({"images": 2}, "images"),
                                              ({"empty_frac": 1.0}, "empty_frac"), ({"max_defects": 0}, "max_defects"),
                                              ({"splits": (0.7, 0.2, 0.2)}, "splits")])
def test_bad_specs_are_refused_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        WeldSpec(**kwargs)
