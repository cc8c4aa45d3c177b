"""``assign.defect_cells``: the cells of a box that hold its defect, against lines drawn by hand, and the real
Ultralytics assigner restricted to them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import train_tiny
from gradkit.data.defect_cells import anchor_count, defect_cells

STRIDES = [8, 16, 32]


def _plain(side: int = 64, level: float = 128.0, noise: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.repeat((level + rng.normal(0, noise, (side, side)))[..., None], 3, axis=2)


def _cells_of_pixels(ys, xs, side: int) -> set[int]:
    """Oracle: the anchor indices (levels in STRIDES order, row-major) whose cell holds one of the pixels."""
    out, offset = set(), 0
    for s in STRIDES:
        cols = side // s
        out |= {offset + (y // s) * cols + x // s for y, x in zip(ys, xs, strict=True)}
        offset += (side // s) ** 2
    return out


def test_a_diagonal_line_holds_only_the_cells_it_crosses():
    img = _plain()
    ys = xs = np.arange(8, 56)  # a 1 px diagonal, 40 grey levels darker than the surface
    img[ys, xs] = 88.0
    box = (8 / 64, 8 / 64, 56 / 64, 56 / 64)
    cells = defect_cells(img, [box], STRIDES)
    assert cells.shape == (1, anchor_count((64, 64), STRIDES)) == (1, 64 + 16 + 4)
    assert set(np.flatnonzero(cells[0])) == _cells_of_pixels(ys, xs, 64)
    assert cells[0, :64].sum() == 6  # of the 36 stride-8 cells inside the box, the diagonal ones (1,1)..(6,6)


def test_a_filled_blob_holds_every_cell_of_its_box():
    img = _plain()
    img[16:40, 24:48] = 60.0
    cells = defect_cells(img, [(24 / 64, 16 / 64, 48 / 64, 40 / 64)], STRIDES)
    ys, xs = np.mgrid[16:40, 24:48]
    assert set(np.flatnonzero(cells[0])) == _cells_of_pixels(ys.ravel(), xs.ravel(), 64)


def test_a_line_as_faint_as_white_grain_cannot_be_told_apart_and_keeps_most_cells():
    """On white grain of std 20, a line 10 levels dark: an 8 x 8 cell of grain holds a pixel beyond 2.25 spreads
    about 4 times in 5, so most cells of the box are kept, as without the option; it does not pretend."""
    rng = np.random.default_rng(1)
    faint = _plain(noise=0.0) + rng.normal(0, 20, (64, 64))[..., None]
    ys = xs = np.arange(8, 56)
    faint[ys, xs] -= 10.0
    kept = defect_cells(faint, [(8 / 64, 8 / 64, 56 / 64, 56 / 64)], [8])[0].sum()
    assert 36 / 2 < kept <= 36


def test_keep_defect_cells_keeps_the_intersection_or_everything():
    from gradkit.integrations.ultralytics.seams import SeamError, keep_defect_cells

    candidates = torch.tensor([[[1, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 0]]], dtype=torch.bool)
    cells = torch.tensor([[[0, 1, 0, 1], [1, 0, 0, 1]]], dtype=torch.bool)  # no cells known for the third box
    kept = keep_defect_cells(candidates, cells)
    assert kept.tolist() == [[[False, True, False, False],   # the candidate that holds the defect
                              [False, True, True, False],    # none of its candidates does: all kept
                              [True, False, False, False]]]  # padded past the known boxes: all kept
    with pytest.raises(SeamError, match="anchor layout"):
        keep_defect_cells(candidates, cells[..., :3])


def test_the_real_assigner_keeps_the_candidates_on_the_line():
    """A yolo26n criterion of Ultralytics, one image with a diagonal line: the one-to-many branch's candidates
    for the line's box shrink from every anchor inside the box to the anchors whose cell the line crosses."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from gradkit.integrations.ultralytics.assign import install_defect_cell_assignment

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=1, verbose=False)
    model.args = get_cfg()
    model.train()
    side = 64
    img = _plain(side)
    ys = xs = np.arange(8, 56)
    img[ys, xs] = 88.0
    batch = {"img": torch.from_numpy(img / 255).permute(2, 0, 1)[None].float(),
             "batch_idx": torch.zeros(1), "cls": torch.zeros(1, 1),
             "bboxes": torch.tensor([[0.5, 0.5, 0.75, 0.75]])}
    tally = install_defect_cell_assignment(SimpleNamespace(model=model))
    model.loss(batch)
    centres = [((c + 0.5) * s, (r + 0.5) * s) for s in STRIDES for r in range(side // s) for c in range(side // s)]
    inside = {i for i, (x, y) in enumerate(centres) if 8 < x < 56 and 8 < y < 56}
    on_line = inside & _cells_of_pixels(ys, xs, side)
    # both branches (one-to-many, one-to-one) assign the same box once each
    assert tally.as_dict() == {"boxes": 2, "restricted": 2, "candidates_before": 2 * len(inside),
                               "candidates_after": 2 * len(on_line)}
    assert len(on_line) < len(inside) / 2


def test_refused_before_training_outside_detection():
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    plugin = GradkitCallback(load_config("default", {"assign.defect_cells": True}))
    with pytest.raises(PluginError, match="task is 'obb'"):
        plugin.on_pretrain_routine_start(SimpleNamespace(args=SimpleNamespace(task="obb", data="data.yaml")))


@pytest.mark.e2e
def test_a_real_training_run_restricts_its_boxes(tiny_data, tmp_path):
    _, run = train_tiny(tiny_data, tmp_path, overrides={"assign.defect_cells": True, "report.enabled": False},
                        epochs=1)
    tally = json.loads((run / "gradkit_summary.json").read_text())["assign_defect_cells"]
    assert tally["boxes"] > 0 and 0 < tally["restricted"] <= tally["boxes"]
    assert 0 < tally["candidates_after"] < tally["candidates_before"]
