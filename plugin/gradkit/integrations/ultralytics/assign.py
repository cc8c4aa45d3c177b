"""``assign.defect_cells``: the assigner's positives for a box come from the cells that hold its defect.

Ultralytics' task-aligned assigner takes every anchor whose centre lies in a box as a candidate. A thin or
diagonal line's box is mostly texture, so most of those cells never see the defect
(``benchmarks/assigner_cells.py``). With this option each box keeps the candidates whose feature cell holds
a pixel standing out from the texture around the box (:mod:`gradkit.data.defect_cells`, estimated from the
batch's own pixels after augmentation); a box where no cell does keeps them all. The patch itself is in
:mod:`.seams`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gradkit.data.defect_cells import anchor_count, defect_cells
from gradkit.integrations.ultralytics.seams import SeamError, restrict_candidates_to_cells

__all__ = ["CandidateTally", "cells_of_batch", "install_defect_cell_assignment"]


def cells_of_batch(batch: dict[str, Any], strides: list[int]) -> torch.Tensor:
    """(images, boxes, anchors) bool: the cells holding each labelled box's standing-out pixels, boxes in the
    order of the batch's labels per image (as the loss pads them). Images arrive in [0, 1] (Ultralytics'
    ``preprocess_batch`` divides by 255); a batch outside it means that step changed."""
    img = batch["img"].detach()
    if img.numel() and float(img.max()) > 1.0 + 1e-3:
        raise SeamError(f"training images reach the loss at up to {float(img.max()):.1f}, not in [0, 1]: "
                        "Ultralytics' preprocess_batch changed; assign.defect_cells measures pixels on 0-255")
    pixels = (img.float().clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()
    owner = batch["batch_idx"].view(-1).long().cpu().numpy()
    xywh = batch["bboxes"].detach().float().cpu().numpy().reshape(-1, 4)
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    counts = np.bincount(owner, minlength=len(pixels))
    h, w = pixels.shape[1:3]
    cells = np.zeros((len(pixels), int(counts.max(initial=0)), anchor_count((h, w), strides)), bool)
    for i, image in enumerate(pixels):
        boxes = [tuple(b) for b in xyxy[owner == i]]
        if boxes:
            cells[i, :len(boxes)] = defect_cells(image, boxes, strides)
    return torch.from_numpy(cells).to(img.device)


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
                f"restricted; they kept {self.after / max(self.before, 1):.0%} of all candidate anchors")


def install_defect_cell_assignment(trainer: Any) -> CandidateTally:
    """Restrict the training model's assigner (every loss branch) to the defect cells; returns the tally."""
    tally = CandidateTally()
    last: dict[str, Any] = {}

    def cells_once(batch: dict[str, Any], strides: list[int]) -> torch.Tensor:
        # yolo26's two loss branches see the same batch: measure its pixels once (about 1 ms per box on a CPU).
        # Holding the image tensor keeps its id from being reused by the next batch's.
        if last.get("img") is not batch["img"] or last.get("strides") != strides:
            last.update(img=batch["img"], strides=strides, cells=cells_of_batch(batch, strides))
        return last["cells"]

    restrict_candidates_to_cells(trainer, cells_once, tally)
    return tally
