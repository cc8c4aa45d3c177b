"""The third evaluation set (colour, 5:4, third renderer): boxes from masks on non-square images,
seeded determinism, colour, files as rendered, thin strokes measured by the fingerprint."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("skimage")

from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.synth_surface import SurfaceSpec, generate_surface_dataset, render_surface_image
from mask_boxes import assert_changes_only_near_masks, assert_tight_mask_boxes, assert_written_as_rendered

SPEC = SurfaceSpec(images=40, width=200, height=160, seed=5)


def test_boxes_are_the_tight_boxes_of_the_masks_on_non_square_images():
    checked = 0
    for i in range(SPEC.images):
        img, labels, masks = render_surface_image(SPEC, i)
        assert img.shape == (SPEC.height, SPEC.width, 3) and img.dtype == np.uint8
        checked += assert_tight_mask_boxes(labels, masks, SPEC.width, SPEC.height)
    assert checked >= 30


def test_seeded_determinism_and_colour():
    a, la, _ = render_surface_image(SPEC, 7)
    b, lb, _ = render_surface_image(SPEC, 7)
    c, _, _ = render_surface_image(SurfaceSpec(images=40, width=200, height=160, seed=6), 7)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    spread = [np.ptp(render_surface_image(SPEC, i)[0].astype(int), axis=2).mean() for i in range(12)]
    assert sum(s > 5 for s in spread) >= 6             # most images are in colour, not gray in three channels


def test_every_class_and_defect_free_images_occur():
    spec = SurfaceSpec(images=60, width=160, height=128, seed=1, empty_frac=0.3)
    labels = [render_surface_image(spec, i)[1] for i in range(spec.images)]
    assert 8 <= sum(not lab for lab in labels) <= 30
    assert {c for lab in labels for c, *_ in lab} == {0, 1, 2, 3}


def test_a_defect_changes_the_pixels_under_its_mask():
    # inside its mask a defect moves the colour away from the texture just around it (a ring outside
    # the mask's faint fringe); faint ones on busy textures may not, so most, not all, must
    spec = SurfaceSpec(images=30, width=160, height=128, seed=3, empty_frac=0.0, max_defects=1)
    moved = 0
    for i in range(spec.images):
        img, _labels, masks = render_surface_image(spec, i)
        for mask in masks:
            inside = mask > 0.5
            ring = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) & ~(mask > 0.05)
            if inside.sum() < 3 or ring.sum() < 3:
                continue
            diff = np.abs(img[inside].astype(float).mean(0) - img[ring].astype(float).mean(0)).max()
            moved += diff > 2
    assert moved >= 15


def test_the_image_changes_only_where_a_returned_mask_says(monkeypatch):
    # oracle: the same image with every defect's drawing undone (the same random numbers drawn, the
    # result thrown away); the two may differ only where a kept defect's mask is (plus the camera's
    # blur), so a defect that was discarded, or drawn outside its mask, shows up here
    import gradkit.synth_surface as surface

    spec = SurfaceSpec(images=16, width=160, height=128, seed=4, empty_frac=0.0)
    rendered = [render_surface_image(spec, i) for i in range(spec.images)]
    draw = surface._apply
    monkeypatch.setattr(surface, "_apply", lambda rng, img, cls, h, w: (img, draw(rng, img, cls, h, w)[1]))
    assert_changes_only_near_masks(rendered, [render_surface_image(spec, i) for i in range(spec.images)])


def test_written_files_match_the_rendering_and_scratches_are_thin(tmp_path):
    spec = SurfaceSpec(images=60, width=320, height=256, seed=2, empty_frac=0.0)
    data = generate_surface_dataset(tmp_path / "s", spec)
    assert_written_as_rendered(data.parent, *render_surface_image(spec, 0)[:2])
    fp = fingerprint_dataset(data)
    assert set(fp.widths) == {320} and set(fp.heights) == {256} and fp.gray < fp.decoded / 2
    cls, stroke = np.asarray(fp.box_cls), np.asarray(fp.box_stroke)
    scratch = stroke[(cls == 0) & np.isfinite(stroke)]
    assert len(scratch) >= 8, len(scratch)
    assert np.median(scratch) <= 3.0                    # drawn 0.8-2.2 px wide with a soft profile


@pytest.mark.parametrize(("kwargs", "word"), [({"width": 32}, "width"), ({"images": 2}, "images"),
                                              ({"empty_frac": 1.0}, "empty_frac"), ({"max_defects": 0}, "max_defects"),
                                              ({"splits": (0.7, 0.2, 0.2)}, "splits")])
def test_bad_specs_are_refused_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SurfaceSpec(**kwargs)
