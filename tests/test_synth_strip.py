"""The fifth evaluation set (defects along a material's grain): boxes from masks, seeded determinism,
the image changed only under the masks, the files as rendered, and the property the set exists for,
scratches lying along the image's own grain with boxes a few pixels thin."""

from __future__ import annotations

import numpy as np
import pytest

import gradkit.synth_strip as strip
from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.synth_strip import StripSpec, generate_strip_dataset, render_strip_image
from mask_boxes import assert_changes_only_near_masks, assert_tight_mask_boxes, assert_written_as_rendered

SPEC = StripSpec(images=40, width=200, height=120, seed=5)


def test_boxes_are_the_tight_boxes_of_the_masks():
    checked = 0
    for i in range(SPEC.images):
        img, labels, masks = render_strip_image(SPEC, i)
        assert img.shape == (SPEC.height, SPEC.width, 3) and img.dtype == np.uint8
        checked += assert_tight_mask_boxes(labels, masks, SPEC.width, SPEC.height)
    assert checked >= 30


def test_seeded_determinism_and_gray_in_three_channels():
    a, la, _ = render_strip_image(SPEC, 7)
    b, lb, _ = render_strip_image(SPEC, 7)
    c, _, _ = render_strip_image(StripSpec(images=40, width=200, height=120, seed=6), 7)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2])


def test_every_class_and_defect_free_images_occur():
    spec = StripSpec(images=60, width=160, height=96, seed=1, empty_frac=0.3)
    labels = [render_strip_image(spec, i)[1] for i in range(spec.images)]
    assert 8 <= sum(not lab for lab in labels) <= 30
    assert {c for lab in labels for c, *_ in lab} == {0, 1, 2, 3}


def test_the_image_changes_only_where_a_returned_mask_says(monkeypatch):
    # oracle: the same image with every defect's drawing undone (the same random numbers drawn, the
    # result thrown away); the two may differ only where a kept defect's mask is (plus the camera's blur)
    spec = StripSpec(images=16, width=160, height=96, seed=4, empty_frac=0.0)
    rendered = [render_strip_image(spec, i) for i in range(spec.images)]
    draw = strip._apply
    monkeypatch.setattr(strip, "_apply", lambda rng, img, cls: (img, draw(rng, img, cls)[1]))
    assert_changes_only_near_masks(rendered, [render_strip_image(spec, i) for i in range(spec.images)])


def _grain(img: np.ndarray) -> str | None:
    """The grain from the pixels alone: an image varies less along its grain than across it. A weave,
    threads along both axes, has none (its two directions vary within 2%; the others differ 1.3x or more)."""
    g = img[..., 0].astype(float)
    down, right = np.abs(np.diff(g, axis=0)).mean(), np.abs(np.diff(g, axis=1)).mean()
    if max(down / right, right / down) < 1.15:
        return None
    return "vertical" if down < right else "horizontal"


def test_scratches_lie_along_the_grain_in_boxes_a_few_pixels_thin():
    spec = StripSpec(images=120, width=400, height=240, seed=2, empty_frac=0.0)
    grains, grained, along, boxes = [], 0, 0, []
    for i in range(spec.images):
        img, labels, _ = render_strip_image(spec, i)
        grains.append(_grain(img))
        for c, _x, _y, w, h in labels:
            if c != 0:
                continue
            w_px, h_px = w * spec.width, h * spec.height
            boxes.append((min(w_px, h_px), max(w_px, h_px)))
            if grains[-1] is not None:
                grained += 1
                along += (h_px > w_px) == (grains[-1] == "vertical")
    assert grains.count("vertical") >= 20 and grains.count("horizontal") >= 20 and grains.count(None) >= 20
    assert len(boxes) >= 40 and grained >= 30
    assert along == grained                     # on a grained surface every scratch follows the grain
    short, long = np.array(boxes).T
    assert (long >= 8 * short).all()            # on a weave too, a scratch lies along an axis
    assert short.max() <= 4 and (short <= 3).mean() >= 0.9  # 0.7-2 px wide, drifting at most 1 px


def test_written_files_match_the_rendering(tmp_path):
    spec = StripSpec(images=30, width=200, height=120, seed=2, empty_frac=0.0)
    data = generate_strip_dataset(tmp_path / "s", spec)
    assert_written_as_rendered(data.parent, *render_strip_image(spec, 0)[:2])
    fp = fingerprint_dataset(data)
    assert set(fp.widths) == {200} and set(fp.heights) == {120} and fp.gray == fp.decoded


@pytest.mark.parametrize(("kwargs", "word"), [({"width": 32}, "width"), ({"images": 2}, "images"),
                                              ({"empty_frac": 1.0}, "empty_frac"), ({"max_defects": 0}, "max_defects"),
                                              ({"splits": (0.7, 0.2, 0.2)}, "splits")])
def test_bad_specs_are_refused_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        StripSpec(**kwargs)
