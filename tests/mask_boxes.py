"""Shared oracles for the generated evaluation sets: each label is the tight box of its defect's mask, and
the image changes only near the masks, and the files written are what was rendered."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from gradkit.synth import CLASS_NAMES

# A mask pixel above this coverage belongs to the defect's box: the generators' documented rule, kept
# here as its own number on purpose, so that the oracle does not read it from the code it checks.
LEVEL = 0.25


def assert_tight_mask_boxes(labels: list[tuple], masks: list[np.ndarray], width: int, height: int) -> int:
    """Each YOLO label (class, xc, yc, w, h) is the tight box of its mask above ``LEVEL``, and no two
    masks share a pixel above it; returns the number of boxes checked."""
    assert len(labels) == len(masks)
    for (c, x, y, w, h), mask in zip(labels, masks, strict=True):
        assert mask.shape == (height, width)
        ys, xs = np.nonzero(mask > LEVEL)
        expected = [xs.min() / width, ys.min() / height, (xs.max() + 1) / width, (ys.max() + 1) / height]
        np.testing.assert_allclose([x - w / 2, y - h / 2, x + w / 2, y + h / 2], expected, atol=1e-9)
        assert 0 <= c < len(CLASS_NAMES)
    for a in range(len(masks)):
        for b in range(a + 1, len(masks)):
            assert not ((masks[a] > LEVEL) & (masks[b] > LEVEL)).any()
    return len(labels)


def assert_changes_only_near_masks(rendered: list[tuple], bare: list[tuple]) -> None:
    """Each rendered (image, labels, masks) differs from the same render with its defects undone
    (``bare``: the same random numbers drawn, nothing applied) only within 2 px of a kept mask, and at
    least 80% of the defects change their own mask's core by more than 3 grey levels."""
    assert sum(len(r[2]) for r in rendered) > 0, "no defect rendered: nothing to check"
    changed = 0
    for i, ((img, labels, masks), (bare_img, bare_labels, _)) in enumerate(zip(rendered, bare, strict=True)):
        assert bare_labels == labels
        diff = np.abs(img.astype(int) - bare_img.astype(int)).max(2)
        allowed = cv2.dilate((np.sum(masks, axis=0) > 0.01).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert diff[~allowed].max(initial=0) <= 1, i
        changed += sum(diff[m > 0.5].max(initial=0) > 3 for m in masks)
    assert changed >= 0.8 * sum(len(r[2]) for r in rendered)


def assert_written_as_rendered(root: Path, img: np.ndarray, labels: list[tuple]) -> None:
    """The first training image and its label file under ``root`` are ``img`` and ``labels``, and the
    dataset YAML names the four classes and has no ``download:``."""
    import yaml

    cfg = yaml.safe_load((root / "data.yaml").read_text())
    assert cfg["names"] == {0: "scratch", 1: "crack", 2: "pit", 3: "stain"} and "download" not in cfg
    assert np.array_equal(cv2.imread(str(root / "images" / "train" / "000000.png")), img)
    rows = (root / "labels" / "train" / "000000.txt").read_text().split("\n")[:-1]
    np.testing.assert_allclose([[float(v) for v in r.split()] for r in rows], labels, atol=1e-6)
