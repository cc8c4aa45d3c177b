"""Shared oracle for the generated evaluation sets: each label is the tight box of its defect's mask."""

from __future__ import annotations

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
