"""``assign.defect_cells``: the assigner's positives for a box come from the cells that hold its defect;
``assign.nwd``: it scores predictions against tiny and thin boxes by their Wasserstein similarity.

Ultralytics' task-aligned assigner takes every anchor whose centre lies in a box as a candidate. A thin or
diagonal line's box is mostly texture, so most of those cells never see the defect
(``benchmarks/assigner_cells.py``). With this option each box keeps the candidates whose feature cell holds
a pixel standing out from the texture around the box (:mod:`gradkit.data.defect_cells`, estimated from the
batch's own pixels after augmentation); a box where no cell does keeps them all. With ``assign.nwd`` the
assigner's overlap of a prediction and a box is the larger of its CIoU and their NWD
(:mod:`gradkit.box_similarity`). With ``assign.box_loss_per_object`` the box loss weighs every object's best
anchor the same (:mod:`gradkit.box_weights`). The patches themselves are in :mod:`.seams`.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch

from gradkit.box_similarity import ciou_or_nwd
from gradkit.box_weights import per_object_weights
from gradkit.data.defect_cells import anchor_count, defect_cells
from gradkit.integrations.ultralytics.seams import (
    batch_pixels_and_boxes,
    restrict_candidates_to_cells,
    score_overlaps_with,
    weigh_box_loss_with,
)

__all__ = ["CandidateTally", "cells_of_batch", "install_box_loss_per_object", "install_defect_cell_assignment",
           "install_nwd_overlap"]


def cells_of_batch(batch: dict[str, Any], strides: list[int]) -> torch.Tensor:
    """(images, boxes, anchors) bool: the cells holding each labelled box's standing-out pixels, boxes in the
    order of the batch's labels per image (as the loss pads them). The pixels are measured on the CPU: on a
    GPU each step copies its batch to the host."""
    pixels, owner, xyxy = batch_pixels_and_boxes(batch)
    counts = np.bincount(owner, minlength=len(pixels))
    h, w = pixels.shape[1:3]
    cells = np.zeros((len(pixels), int(counts.max(initial=0)), anchor_count((h, w), strides)), bool)
    for i, image in enumerate(pixels):
        boxes = [tuple(b) for b in xyxy[owner == i]]
        if boxes:
            cells[i, :len(boxes)] = defect_cells(image, boxes, strides)
    return torch.from_numpy(cells).to(batch["img"].device)


class CandidateTally:
    """What the restriction did over a run: boxes seen, boxes restricted, candidate cells before and after."""

    def __init__(self) -> None:
        self.boxes = self.restricted = self.before = self.after = 0

    def __call__(self, candidates: torch.Tensor, kept: torch.Tensor) -> None:
        before, after = candidates.sum(-1), kept.sum(-1)  # per box; padded boxes have none
        real = before > 0
        self.boxes += int(real.sum())
        self.restricted += int((after < before).sum())
        self.before += int(before.sum())
        self.after += int(after.sum())

    def as_dict(self) -> dict[str, int]:
        return {"boxes": self.boxes, "restricted": self.restricted, "candidates_before": self.before,
                "candidates_after": self.after}

    def summary(self) -> str:
        if not self.boxes:
            return "assign.defect_cells: no boxes were assigned"
        return (f"assign.defect_cells: {self.restricted / self.boxes:.0%} of {self.boxes} box assignments "
                f"restricted; {self.after / max(self.before, 1):.0%} of all their candidate anchors kept")


def install_defect_cell_assignment(trainer: Any) -> CandidateTally:
    """Restrict the training model's assigner (every loss branch) to the defect cells; returns the tally."""
    tally = CandidateTally()
    last: dict[str, Any] = {}

    def cells_once(batch: dict[str, Any], strides: list[int]) -> torch.Tensor:
        # yolo26's two loss branches see the same batch: measure its pixels once (about 1 ms per box on a CPU).
        # A weak reference: a freed batch's tensor cannot be mistaken for the next one's at the same address.
        seen = last.get("img")
        if seen is None or seen() is not batch["img"] or last.get("strides") != strides:
            last.update(img=weakref.ref(batch["img"]), strides=strides, cells=cells_of_batch(batch, strides))
        return last["cells"]

    restrict_candidates_to_cells(trainer, cells_once, tally)
    return tally


def install_nwd_overlap(trainer: Any, scale: float | None) -> float:
    """Score the training model's assignments (every loss branch) by the larger of CIoU and NWD at ``scale``
    pixels (unset: the finest stride); returns the scale used."""
    return score_overlaps_with(trainer, ciou_or_nwd, scale)


def install_box_loss_per_object(trainer: Any) -> None:
    """Weigh the training model's box loss (every loss branch) per object: each object's best anchor the same."""
    weigh_box_loss_with(trainer, per_object_weights)
