"""The training-stage runner: same result as one Compose, independent draws, exact grayscale fast path."""

from __future__ import annotations

import copy
import random

import albumentations as A
import cv2
import numpy as np
import pytest

from gradkit.augment import AugmentRunner, bbox_params, build_compose, build_transforms
from gradkit.augment.runner import CHANNEL_AGNOSTIC, gray_plane
from gradkit.config import AugmentConfig, load_config

BOXES = np.array([[0.5, 0.5, 0.2, 0.1], [0.3, 0.3, 0.05, 0.4], [0.7, 0.8, 0.5, 0.02]], np.float32)
LABELS = np.array([0.0, 1.0, 2.0])
BBOX = bbox_params(AugmentConfig())


def _gray_image(seed: int = 0, n: int = 96) -> np.ndarray:
    g = cv2.GaussianBlur(np.random.default_rng(seed).integers(0, 255, (n, n), dtype=np.uint8), (5, 5), 0)
    cv2.line(g, (10, 70), (80, 72), 30, 2)
    return cv2.merge([g, g, g])


def _forced(entries):
    return [A.from_dict({"transform": {**e, "p": 1.0}}) for e in entries]


PRESET = build_transforms(load_config(None, {"augment.preset": "defect-sensor"}))  # every preset transform
SPATIAL = [A.HorizontalFlip(p=0.5), A.Affine(rotate=(-5, 5), scale=(0.9, 1.1), p=0.7),
           A.RandomCrop(80, 80, p=0.5)]


@pytest.mark.parametrize("seed", range(5))
def test_split_runner_equals_one_compose_with_shared_generators(seed):
    """Oracle: one A.Compose over the whole list, same shared generators, called the same way."""
    transforms = SPATIAL + PRESET
    img = _gray_image(seed)
    img[..., 2] = 255 - img[..., 2]  # colour: the fast path must not be taken
    runner = AugmentRunner(transforms, BBOX, seed=seed)
    reference = A.Compose(copy.deepcopy(transforms), bbox_params=BBOX)  # own objects: generators are per object
    reference.set_random_state(np.random.default_rng(seed), random.Random(seed))
    for _ in range(6):
        got = runner(image=img, bboxes=BOXES, class_labels=LABELS)
        ref = reference(image=img, bboxes=BOXES, class_labels=LABELS, force_apply=True)
        assert np.array_equal(got["image"], ref["image"])
        np.testing.assert_array_equal(got["bboxes"], ref["bboxes"])
        np.testing.assert_array_equal(got["class_labels"], ref["class_labels"])


@pytest.mark.parametrize("make", [
    lambda seed: AugmentRunner([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.GaussNoise(p=0.5)], BBOX,
                               seed=seed),
    lambda seed: build_compose(AugmentConfig(transforms=[
        {"__class_fullname__": "HorizontalFlip", "p": 0.5}, {"__class_fullname__": "VerticalFlip", "p": 0.5},
        {"__class_fullname__": "GaussNoise", "p": 0.5}]), seed=seed),
], ids=["runner", "build_compose"])
def test_seeded_transforms_fire_independently(make):
    """Planted-fault oracle: ``A.Compose(seed=s)`` gives every transform the same stream, so two
    transforms with p=0.5 fire together every time (joint rate 0.5). Independent: 0.25."""
    img = np.zeros((16, 16, 3), np.uint8)
    img[2:6, 1:4] = 200  # asymmetric, so flips are visible
    n, joint = 1200, 0
    pipeline = make(3)
    for _ in range(n):
        out = pipeline(image=img, bboxes=BOXES[:1], class_labels=LABELS[:1])["image"]
        h = out[:, ::-1][2:6, 1:4].mean() > 150 or out[::-1, ::-1][2:6, 1:4].mean() > 150
        v = out[::-1][2:6, 1:4].mean() > 150 or out[::-1, ::-1][2:6, 1:4].mean() > 150
        joint += bool(h and v)
    assert abs(joint / n - 0.25) < 0.05, joint / n
    correlated = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)], seed=3)
    both = sum(np.array_equal(correlated(image=img)["image"], img[::-1, ::-1]) for _ in range(400))
    assert both / 400 > 0.4  # the fault is real in the installed Albumentations (else this test proves nothing)


_ARGS = {"RandomCrop": {"height": 64, "width": 64}, "CenterCrop": {"height": 64, "width": 64},
         "Crop": {"x_max": 70, "y_max": 60}, "RandomResizedCrop": {"size": (64, 64)},
         "Resize": {"height": 64, "width": 80}, "RandomSizedBBoxSafeCrop": {"height": 64, "width": 64},
         "AtLeastOneBBoxRandomCrop": {"height": 64, "width": 64}, "PadIfNeeded": {"min_height": 128, "min_width": 112},
         "LongestMaxSize": {"max_size": 64}, "SmallestMaxSize": {"max_size": 64}, "GaussNoise": {"per_channel": False}}


@pytest.mark.parametrize("transform", [t for t in PRESET if type(t).__name__ != "CLAHE"] + [
    getattr(A, name)(**_ARGS.get(name, {}), p=1) for name in sorted(CHANNEL_AGNOSTIC - {"CLAHE"})],
    ids=lambda t: type(t).__name__)
def test_grayscale_fast_path_is_exact(transform):
    """Oracle: the same runner on all three channels (fast path off)."""
    transform = A.from_dict({"transform": {**A.to_dict(transform)["transform"], "p": 1.0}})
    img = _gray_image(1)
    fast = AugmentRunner([transform], BBOX, seed=5)
    full = AugmentRunner([copy.deepcopy(transform)], BBOX, seed=5, grayscale_fast_path=False)
    assert fast.grayscale_fast_path
    a = fast(image=img, bboxes=BOXES, class_labels=LABELS)
    b = full(image=img, bboxes=BOXES, class_labels=LABELS)
    assert a["image"].shape == b["image"].shape and a["image"].dtype == np.uint8
    assert np.array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["bboxes"], b["bboxes"])


def test_grayscale_clahe_differs_only_by_the_lab_round_trip():
    img = _gray_image(2)
    clahe = _forced([{"__class_fullname__": "CLAHE", "clip_limit": [2.0, 2.0]}])
    a = AugmentRunner(clahe, BBOX, seed=0)(image=img, bboxes=BOXES, class_labels=LABELS)["image"]
    b = AugmentRunner(copy.deepcopy(clahe), BBOX, seed=0, grayscale_fast_path=False)(image=img, bboxes=BOXES,
                                                                      class_labels=LABELS)["image"]
    assert gray_plane(a) is not None  # equalised gray stays gray ...
    assert gray_plane(b) is None  # ... the LAB round trip tints it
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 5


def test_fast_path_only_for_gray_images_and_channel_agnostic_lists():
    img = _gray_image(3)
    assert np.array_equal(gray_plane(img), img[..., 0])
    colour = img.copy()
    colour[50, 50, 1] ^= 1  # one pixel differs: not gray
    assert gray_plane(colour) is None
    assert gray_plane(img[..., :1]) is None
    assert not AugmentRunner([A.GaussNoise(per_channel=True, p=1)], BBOX).grayscale_fast_path  # noise per channel
    hue = AugmentRunner([A.D4(p=1), A.HueSaturationValue(p=1)], BBOX, seed=0)
    assert "HueSaturationValue" not in CHANNEL_AGNOSTIC and not hue.grayscale_fast_path
    out = hue(image=img, bboxes=BOXES, class_labels=LABELS)["image"]
    assert out.shape == img.shape


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("config", ["default", "defect"])
def test_lossless_spatial_head_skips_compose_with_the_same_result(seed, config):
    """Oracle: the box-aware Compose the direct path replaces, same generators, on boxes that need
    clipping, a degenerate one and ones below the config's size filters."""
    bbox = bbox_params(load_config(config).augment)
    transforms = [A.D4(p=1.0), A.HorizontalFlip(p=0.5), A.Transpose(p=0.5), A.RandomRotate90(p=0.5),
                  A.VerticalFlip(p=0.5), A.GaussNoise(p=0.5)]
    boxes = np.array([[0.5, 0.5, 0.2, 0.1], [0.02, 0.98, 0.1, 0.1],  # sticks out: clipped
                      [0.3, 0.3, 0.0, 0.2],  # degenerate: dropped
                      [0.6, 0.2, 0.015, 0.015],  # ~2 px: under defect.yaml's min_area 4 px²
                      [0.7, 0.8, 0.5, 0.012]], np.float32)  # thin scratch, ~1 px
    labels = np.arange(len(boxes), dtype=float)
    direct = AugmentRunner(transforms, bbox, seed=seed)
    via_compose = AugmentRunner(copy.deepcopy(transforms), bbox, seed=seed)
    via_compose.direct_spatial = False
    assert direct.direct_spatial
    rng = np.random.default_rng(seed)
    for _ in range(12):
        img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
        a = direct(image=img, bboxes=boxes, class_labels=labels)
        b = via_compose(image=img, bboxes=boxes, class_labels=labels)
        assert np.array_equal(a["image"], b["image"])
        np.testing.assert_allclose(np.asarray(a["bboxes"]).reshape(-1, 4), np.asarray(b["bboxes"]).reshape(-1, 4),
                                   atol=1e-6)
        np.testing.assert_array_equal(np.asarray(a["class_labels"], float), np.asarray(b["class_labels"], float))
        assert 2 not in np.asarray(a["class_labels"]) and 4 in np.asarray(a["class_labels"])
    empty = (direct(image=img, bboxes=np.zeros((0, 4)), class_labels=np.zeros(0)),
             via_compose(image=img, bboxes=np.zeros((0, 4)), class_labels=np.zeros(0)))
    assert np.array_equal(empty[0]["image"], empty[1]["image"])
    assert len(empty[0]["bboxes"]) == len(empty[0]["class_labels"]) == len(empty[1]["bboxes"]) == 0
    assert not AugmentRunner([A.Affine(p=1), *transforms], bbox).direct_spatial  # may cut boxes: Compose
