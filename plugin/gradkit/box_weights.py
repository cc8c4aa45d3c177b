"""How much each positive anchor weighs in the box loss, per object rather than per alignment.

Ultralytics' detection loss weighs each positive anchor's box loss (CIoU and the L1 or DFL term) by the
class target the task-aligned assigner gives it (TOOD, Feng et al. 2021, arXiv:2108.07755): the anchor's
alignment ``score^0.5 * IoU^6`` relative to the best of its object's anchors, times the best IoU any of them
reaches. An object the model already boxes well (IoU 0.9) therefore teaches its box several times as hard as
one it boxes badly: the strip set's 3 px scratches, boxed about three times too thick (IoU about 0.3), were
taught targets of 0.15-0.2 against 0.7 for its stains (README, "Why thin defects fail"). The objects whose
boxes most need the loss get the least of it.

:func:`per_object_weights` divides each object's weights by its best anchor's, so that every object's best
anchor weighs 1 and its other positives keep their share relative to it, then scales all of them so that
their total is the assigner's: the box loss as a whole weighs what it did, shared out per object instead of
per fit. The class targets are not touched.

Pure PyTorch: ``(images, anchors)`` tensors as Ultralytics' assigner returns them.
"""

from __future__ import annotations

import torch

__all__ = ["per_object_weights"]


def per_object_weights(weights: torch.Tensor, owner: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The box-loss ``weights`` of the ``positive`` anchors (both ``(images, anchors)``), each divided by the
    largest weight among the positives of the same object (``owner``: the object's index in its image), then
    all scaled to the original total; 0 elsewhere. An object whose positives all weigh 0 keeps 0, and with no
    weight anywhere the weights come back unchanged."""
    kept = weights.where(positive, torch.zeros((), dtype=weights.dtype, device=weights.device))
    owner = owner.long().where(positive, torch.zeros((), dtype=torch.long, device=owner.device))
    objects = int(owner.max().item()) + 1 if owner.numel() else 1
    best = kept.new_zeros(kept.shape[0], objects).scatter_reduce(1, owner, kept, reduce="amax")
    of_own = best.gather(1, owner)
    shared = torch.where(of_own > 0, kept / of_own.clamp_min(torch.finfo(kept.dtype).tiny), torch.zeros_like(kept))
    total, new_total = kept.sum(), shared.sum()
    return shared * (total / new_total) if new_total > 0 else kept
