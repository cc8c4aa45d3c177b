"""How well a predicted box matches a ground-truth box when the box is a few pixels across.

Ultralytics' task-aligned assigner ranks a box's candidate anchors by ``score^0.5 * CIoU^6`` and scales the
class targets of its positives by the best CIoU among them. A 6 px pit whose nearest prediction lies 6 px
away overlaps it at an IoU of 0 (a target of 0), and a 2 px-high scratch boxed one pixel too low keeps an IoU
of 0.33 (0.001 in the ranking's IoU^6): a pixel or two decides whether a tiny or thin box is taught at all, and
what is taught 0 is never detected (README, "What the assigner teaches each class").

The normalized Gaussian Wasserstein distance (NWD; Wang, Xu, Yang, Yu 2021, "A Normalized Gaussian
Wasserstein Distance for Tiny Object Detection", arXiv:2110.13389) models each box as a 2-D Gaussian with
its centre as mean and half its sides as standard deviations; the 2-Wasserstein distance between two such
Gaussians is the Euclidean distance between ``(cx, cy, w/2, h/2)`` of the two boxes, and
``exp(-distance / C)`` turns it into a similarity in (0, 1] that falls off smoothly with a pixel offset
whatever the box's size, and is not 0 for boxes that do not overlap. It is not scale-invariant: with ``C``
a few pixels, a large box is scored more harshly by it than by IoU. :func:`ciou_or_nwd` therefore takes the
larger of the two, so that large boxes keep their CIoU and small ones get NWD.

Pure PyTorch: boxes are ``(..., 4)`` tensors, ``x1, y1, x2, y2`` in pixels.
"""

from __future__ import annotations

import torch

__all__ = ["ciou_or_nwd", "wasserstein_similarity"]


def wasserstein_similarity(boxes_a: torch.Tensor, boxes_b: torch.Tensor, scale: float) -> torch.Tensor:
    """NWD of paired xyxy boxes: ``exp(-W2 / scale)``, ``W2`` the distance between their Gaussians (pixels)."""
    if scale <= 0:
        raise ValueError(f"NWD scale must be positive pixels, got {scale}")
    centre_a, centre_b = (boxes_a[..., :2] + boxes_a[..., 2:]) / 2, (boxes_b[..., :2] + boxes_b[..., 2:]) / 2
    half_a, half_b = (boxes_a[..., 2:] - boxes_a[..., :2]) / 2, (boxes_b[..., 2:] - boxes_b[..., :2]) / 2
    squared = (centre_a - centre_b).square().sum(-1) + (half_a - half_b).square().sum(-1)
    return torch.exp(-squared.sqrt() / scale)


def ciou_or_nwd(ciou: torch.Tensor, gt_boxes: torch.Tensor, pred_boxes: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """The larger of ``ciou`` (the assigner's own overlap of each pair) and their NWD at ``scale`` pixels."""
    nwd = wasserstein_similarity(gt_boxes, pred_boxes, scale).to(ciou.dtype)
    return torch.maximum(ciou, nwd.reshape(ciou.shape))
