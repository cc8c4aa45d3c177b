"""The photo-background evaluation set: boxes from masks, seeded determinism, thin strokes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")

from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.synth_photo import PhotoSpec, generate_photo_dataset, render_photo_image
from mask_boxes import assert_tight_mask_boxes

SPEC = PhotoSpec(images=40, imgsz=128, seed=5)


def test_boxes_are_the_tight_boxes_of_the_masks():
    checked = sum(assert_tight_mask_boxes(*render_photo_image(SPEC, i)[1:], SPEC.imgsz, SPEC.imgsz)
                  for i in range(SPEC.images))
    assert checked >= 30


def test_seeded_determinism():
    a, la, _ = render_photo_image(SPEC, 7)
    b, lb, _ = render_photo_image(SPEC, 7)
    c, _, _ = render_photo_image(PhotoSpec(images=40, imgsz=128, seed=6), 7)
    assert np.array_equal(a, b) and la == lb
    assert not np.array_equal(a, c)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()   # gray in three channels


def test_distractors_are_unlabelled_and_defect_free_images_exist():
    spec = PhotoSpec(images=30, imgsz=96, seed=1, empty_frac=0.5, distractors=1.0)
    labels = [render_photo_image(spec, i)[1] for i in range(spec.images)]
    assert 5 <= sum(not lab for lab in labels) <= 25


def test_scratches_are_thin_and_written_files_match(tmp_path):
    spec = PhotoSpec(images=60, imgsz=256, seed=2, distractors=0.0, empty_frac=0.0)
    data = generate_photo_dataset(tmp_path / "photo", spec)
    again = generate_photo_dataset(tmp_path / "photo2", spec)
    first = sorted((tmp_path / "photo" / "images").rglob("*.png"))
    assert [p.read_bytes() for p in first] == [(tmp_path / "photo2" / p.relative_to(tmp_path / "photo")).read_bytes()
                                               for p in first]
    assert again.name == "data.yaml"
    fp = fingerprint_dataset(data)
    cls, stroke = np.asarray(fp.box_cls), np.asarray(fp.box_stroke)
    scratch = stroke[(cls == 0) & np.isfinite(stroke)]
    assert len(scratch) >= 10, len(scratch)
    assert np.median(scratch) <= 3.0                    # drawn 1-2 px wide (+ anti-aliasing)
    fill = np.asarray(fp.box_fill)
    assert np.nanmedian(fill[cls == 0]) < np.nanmedian(fill[cls == 2])   # a scratch's box is mostly background
