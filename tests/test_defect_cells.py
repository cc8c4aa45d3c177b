"""``assign.defect_cells``: the cells of a box that hold its defect, against lines drawn by hand, and the real
Ultralytics assigner restricted to them."""

from __future__ import annotations

import json
import math
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


def _cells_of_pixels(ys, xs, side: int, width: int | None = None) -> set[int]:
    """Oracle: the anchor indices (levels in STRIDES order, row-major) whose cell holds one of the pixels."""
    out, offset, width = set(), 0, width or side
    for s in STRIDES:
        cols = width // s
        out |= {offset + (y // s) * cols + x // s for y, x in zip(ys, xs, strict=True)}
        offset += (side // s) * cols
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


def test_on_white_grain_cells_are_picked_at_the_rate_its_tail_predicts():
    """No defect, only white grain of std 20: a pixel is picked beyond 2.25 robust spreads (spread: 1.4826 MAD
    + 2 = 22 levels), i.e. 2.475 sigma, with probability p; an 8 x 8 cell holds one with 1 - (1 - p)^64, about
    3 in 5. Grain outliers are what a faint defect cannot be told from: such a box keeps most of its cells."""
    p = math.erfc(2.25 * 22 / 20 / math.sqrt(2))
    expected = 1 - (1 - p) ** 64
    shares = []
    for seed in range(20):
        grain = _plain(noise=0.0) + np.random.default_rng(seed).normal(0, 20, (64, 64))[..., None]
        shares.append(defect_cells(grain, [(8 / 64, 8 / 64, 56 / 64, 56 / 64)], [8])[0].sum() / 36)
    assert 0.55 < expected < 0.6
    assert abs(np.mean(shares) - expected) < 0.06, (np.mean(shares), expected)


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


H, W = 64, 96  # not square: rows and columns cannot be swapped unseen


def _model():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    model.args = get_cfg()
    return model.train()


def _batch(images: list[np.ndarray], labels: list[tuple[int, tuple[int, int, int, int]]]) -> dict:
    """Images HxWx3 on 0-255 and (image, pixel xyxy box) labels, as Ultralytics hands them to the loss."""
    boxes = [((x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H) for _, (x0, y0, x1, y1) in labels]
    return {"img": torch.from_numpy(np.stack(images) / 255).permute(0, 3, 1, 2).float(),
            "batch_idx": torch.tensor([float(i) for i, _ in labels]), "cls": torch.zeros(len(labels), 1),
            "bboxes": torch.tensor(boxes, dtype=torch.float32)}


def _expected(box: tuple[int, int, int, int], ys, xs) -> set[int]:
    """Oracle: the anchors whose centre lies inside the box (sides floored to 16 px, as the assigner floors
    them) and whose cell holds one of the defect's drawn pixels; all those candidates when none does."""
    x0, y0, x1, y1 = box
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 16), max(y1 - y0, 16)
    centres = [((c + 0.5) * s, (r + 0.5) * s) for s in STRIDES for r in range(H // s) for c in range(W // s)]
    inside = {i for i, (x, y) in enumerate(centres) if abs(x - cx) < w / 2 and abs(y - cy) < h / 2}
    return (inside & _cells_of_pixels(ys, xs, H, W)) or inside


def _scene():
    """Image 0: a diagonal line; image 1: a horizontal 1 px line and a small blob."""
    rng = np.random.default_rng(3)  # noise of 1 level: a pixel beyond 2.25 spreads (6.7 levels) is a defect's
    first, second = (np.repeat((128 + rng.normal(0, 1, (H, W)))[..., None], 3, axis=2) for _ in range(2))
    diag = (np.arange(8, 48), np.arange(20, 60))
    first[diag] = 88.0
    line = (np.full(60, 40), np.arange(10, 70))
    second[line] = 60.0
    blob = tuple(a.ravel() for a in np.mgrid[10:16, 76:82])
    second[blob] = 40.0
    labels = [(0, (20, 8, 60, 48)), (1, (10, 40, 70, 41)), (1, (76, 10, 82, 16))]
    return [first, second], labels, [diag, line, blob]


def _restricted(model):
    from gradkit.integrations.ultralytics.assign import cells_of_batch
    from gradkit.integrations.ultralytics.seams import restrict_candidates_to_cells

    seen: list = []
    restrict_candidates_to_cells(SimpleNamespace(model=model), cells_of_batch, lambda c, k: seen.append(k))
    return seen


def test_the_real_assigner_keeps_the_candidates_holding_each_defect():
    """yolo26n's criterion, two 64 x 96 images with one and two boxes: in both loss branches each box's
    candidates are exactly the anchors inside it whose cell holds its drawn pixels."""
    model = _model()
    seen = _restricted(model)
    images, labels, drawn = _scene()
    model.loss(_batch(images, labels))
    assert len(seen) == 2  # one-to-many, one-to-one
    slots = [(0, 0), (1, 0), (1, 1)]  # (image, box within the image), as the loss pads them
    for kept in seen:
        for (i, j), (_, box), (ys, xs) in zip(slots, labels, drawn, strict=True):
            assert set(torch.nonzero(kept[i, j]).flatten().tolist()) == _expected(box, ys, xs), (i, j)
    diag, line = (_expected(labels[k][1], *drawn[k]) for k in (0, 1))
    # the oracle counted by hand, per stride 8 / 16 / 32: the diagonal crosses 10 stride-8 cells, 8 of them
    # with their centre inside the box; the 1 px line's box, floored to 16 px high, has two rows of centres
    assert len(diag) == 8 + 4 + 1 and len(line) == 8 + 3 + 2


def test_the_assigners_one_image_retry_gets_each_images_cells():
    """After a CUDA out-of-memory error Ultralytics' assigner retries one image at a time: each image must
    get its own cells, as the batched call does."""
    model = _model()
    seen = _restricted(model)
    images, labels, _ = _scene()
    batch = _batch(images, labels)
    model.loss(batch)
    batched = seen[0]
    for branch in (model.criterion.one2many, model.criterion.one2one):
        stock = branch.assigner._forward

        def out_of_memory_on_batches(pd_scores, *args, _stock=stock, **kwargs):
            if pd_scores.shape[0] > 1:
                raise RuntimeError("CUDA out of memory (planted)")
            return _stock(pd_scores, *args, **kwargs)

        branch.assigner._forward = out_of_memory_on_batches
    seen.clear()
    model.loss(batch)
    assert [k.shape[:2] for k in seen[:2]] == [(1, 1), (1, 2)]  # image 0 then image 1, one-to-many first
    assert torch.equal(seen[0][0, 0], batched[0, 0])
    assert torch.equal(seen[1][0], batched[1])


def test_each_batch_is_measured_anew():
    """The cells are cached across the two loss branches of one batch, not across batches: a second batch with
    the same box over a filled blob is not restricted with the first batch's diagonal."""
    from gradkit.integrations.ultralytics.assign import install_defect_cell_assignment

    model = _model()
    tally = install_defect_cell_assignment(SimpleNamespace(model=model))
    images, labels, _ = _scene()
    model.loss(_batch(images[:1], labels[:1]))
    restricted = tally.as_dict()
    filled = images[0].copy()
    filled[8:48, 20:60] = 88.0
    model.loss(_batch([filled], labels[:1]))
    after = tally.as_dict()
    assert restricted["restricted"] == 2 and after["restricted"] == 2  # the filled box keeps every candidate
    assert after["candidates_after"] - restricted["candidates_after"] == restricted["candidates_before"]


def test_validation_after_a_nan_recovery_uses_a_stock_loss():
    """Ultralytics' NaN recovery deep-copies the (restricted) training model into a new EMA: its loss is dropped,
    so validation builds a stock one; the training model keeps its restriction, a stock EMA loss is left alone."""
    from copy import deepcopy

    from gradkit.integrations.ultralytics.seams import unrestricted_ema

    model = _model()
    _restricted(model)
    trainer = SimpleNamespace(model=model, ema=SimpleNamespace(ema=deepcopy(model)))
    unrestricted_ema(trainer)
    assert trainer.ema.ema.criterion is None and model.criterion is not None
    stock = _model()
    stock.criterion = stock.init_criterion()
    trainer.ema.ema = stock
    unrestricted_ema(trainer)
    assert stock.criterion is not None


@pytest.mark.e2e
def test_a_real_training_run_restricts_its_boxes(tiny_data, tmp_path):
    _, run = train_tiny(tiny_data, tmp_path, overrides={"assign.defect_cells": True, "report.enabled": False},
                        epochs=1)
    tally = json.loads((run / "gradkit_summary.json").read_text())["assign_defect_cells"]
    assert tally["boxes"] > 0 and 0 < tally["restricted"] <= tally["boxes"]
    assert 0 < tally["candidates_after"] < tally["candidates_before"]
