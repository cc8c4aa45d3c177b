"""The augmentation preview sheet: tile borders, per-class colours with a legend, labels inside their tile, a
title naming the pipeline."""

from __future__ import annotations

import numpy as np

from gradkit.config import load_config
from gradkit.integrations.ultralytics.augment import (
    CLASS_COLOURS,
    PREVIEW_GAP_PX,
    PREVIEW_TILE_PX,
    compose_preview,
    describe_augmentation,
)

NAMES = {0: "scratch", 1: "crack", 2: "pit"}


def _near(img, bgr, tol=30):
    return np.abs(img.astype(int) - np.array(bgr)).sum(-1) < tol


def _sheet():
    tiles = [np.full((64, 64, 3), 90, np.uint8) for _ in range(4)]
    boxes = [[(0, 0.0, 0.0, 0.5, 0.3)],            # at the top-left corner: its label must stay inside
             [(1, 0.6, 0.6, 1.0, 1.0)],            # at the bottom-right corner
             [(2, 0.2, 0.2, 0.4, 0.4), (0, 0.5, 0.5, 0.7, 0.7)], []]
    return compose_preview(tiles, boxes, NAMES, "gradkit augment: preset defect"), boxes


def test_tiles_are_upscaled_and_separated_by_white_gaps():
    sheet, _ = _sheet()
    grid_w = 2 * PREVIEW_TILE_PX + 3 * PREVIEW_GAP_PX
    assert sheet.shape[1] == grid_w
    header = int(np.flatnonzero(~np.all(sheet[:, PREVIEW_GAP_PX + 100] == 255, axis=-1))[0])  # first non-white
    gap_col = PREVIEW_GAP_PX + PREVIEW_TILE_PX + PREVIEW_GAP_PX // 2
    assert np.all(sheet[header:header + 2 * PREVIEW_TILE_PX, gap_col] == 255)  # the gap between the columns
    assert not np.all(sheet[:header] == 255)  # the title band holds text


def test_each_class_has_its_colour_and_labels_stay_inside_their_tile():
    sheet, boxes = _sheet()
    g, t = PREVIEW_GAP_PX, PREVIEW_TILE_PX
    # locate the grid: the first row with a tile pixel (grey 90) below the title
    top = int(np.flatnonzero(np.any(np.all(sheet[:, :, :] == 90, axis=-1), axis=1))[0])
    tiles = {(r, c): sheet[top + r * (t + g):top + r * (t + g) + t, g + c * (t + g):g + c * (t + g) + t]
             for r in range(2) for c in range(2)}
    for (r, c), tile_boxes in zip(tiles, boxes, strict=True):
        for cls, *_ in tile_boxes:
            assert _near(tiles[(r, c)], CLASS_COLOURS[cls]).sum() > 100, (r, c, cls)
    # the top-left box's label is drawn inside tile 0 (below the tile's top edge), not in the title or gap
    above = sheet[top - g:top, g:g + t]
    assert not _near(above, CLASS_COLOURS[0]).any()
    legend = sheet[top + 2 * t + 2 * g:]
    for cls in NAMES:
        assert _near(legend, CLASS_COLOURS[cls]).sum() > 100  # a swatch per class


def test_the_title_names_the_active_augmentation():
    cfg = load_config(None, {"augment.preset": "defect", "augment.copy_paste.p": 0.5,
                             "augment.ultralytics": {"hsv_s": 0.0}}).augment
    text = describe_augmentation(cfg)
    assert "preset defect" in text and "copy-paste p=0.5" in text and "hsv_s=0" in text
    assert "preset defect in place of Ultralytics' Albumentations stage" in text
    listed = load_config(None, {"augment.transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5}]}).augment
    assert "transforms HorizontalFlip in place of Ultralytics' Albumentations stage" in describe_augmentation(listed)
    assert describe_augmentation(load_config(None, {}).augment).startswith("Ultralytics' stock")


def test_a_box_s_outline_and_label_leave_the_thin_defect_inside_it_visible():
    """The preview's point is to show whether a 1 px scratch survived the pipeline; its box was outlined 2 px wide
    on the box's edge and labelled over its top row, covering the line it framed. The outline and the label now
    lie outside the box: the outline in the gap where the box meets the tile's edge (mosaic crops make that
    common), the label below the box where there is no room above it. Oracle: every pixel inside each box is the
    tile's own (at the preview's size: no upscaling)."""
    tile = np.full((256, 256, 3), 128, np.uint8)
    tile[100, 40:200] = 0                            # a horizontal 1 px line
    tile[30:200, 220] = 0                            # a vertical one
    tile[2, 100:200] = 0                             # one near the tile's top: no room for a label above
    tile[0:256, 0] = 0                               # one along the tile's left edge
    boxes = [[(0, 40 / 256, 100 / 256, 200 / 256, 101 / 256), (1, 220 / 256, 30 / 256, 221 / 256, 200 / 256),
              (2, 100 / 256, 2 / 256, 200 / 256, 3 / 256), (0, 0.0, 0.0, 1 / 256, 1.0)]]
    sheet = compose_preview([tile], boxes, NAMES, "gradkit augment: preset defect")
    g = PREVIEW_GAP_PX
    border = np.all(sheet[:, g:g + 256] == 60, axis=2).sum(1) > 200  # the tile's dark outline (boxes cross it)
    top = int(np.flatnonzero(border)[0]) + 1
    drawn = sheet[top:top + 256, g:g + 256]
    for _, x0, y0, x1, y1 in boxes[0]:
        inside = (slice(round(y0 * 256), round(y1 * 256)), slice(round(x0 * 256), round(x1 * 256)))
        assert np.array_equal(drawn[inside], tile[inside]), (x0, y0)
    assert _near(drawn[98:100, 40:200], CLASS_COLOURS[0]).all()     # the outline, just outside
    assert _near(sheet[top:top + 256, g - 2:g], CLASS_COLOURS[0]).all()  # at the tile's edge: in the gap
    assert _near(drawn[5:30, 100:130], CLASS_COLOURS[2]).any()      # the top box's label, below it
    assert _near(drawn[0:20, 3:30], CLASS_COLOURS[0]).any()         # the tall box's label, beside it


def test_a_box_reaching_past_its_tile_is_outlined_on_its_own_tile_and_labels_fit_whole():
    """A box partly outside [0, 1] drew its outline over the neighbouring tile (rings were drawn on the sheet, not
    clamped). And a label placed where it just fits lost its last row and column (its size was counted one pixel
    short). Oracle: the first tile's pixels, untouched by the second tile's box; the label box inside the tile."""
    from gradkit.report.render import draw_label, label_size

    tiles = [np.full((256, 256, 3), 128, np.uint8) for _ in range(2)]
    plain = compose_preview(tiles, [[], []], NAMES, "t")
    sheet = compose_preview(tiles, [[], [(0, -0.3, 0.2, 0.5, 0.6)]], NAMES, "t")
    g = PREVIEW_GAP_PX
    assert np.array_equal(sheet[:, :g + 256], plain[:, :g + 256])  # the first tile and the gap before it
    probe = np.zeros((40, 80, 3), np.uint8)
    draw_label(probe, "crack", 10, 30, (255, 255, 255))
    ys, xs = np.nonzero(probe.any(axis=2))
    assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == label_size("crack")
