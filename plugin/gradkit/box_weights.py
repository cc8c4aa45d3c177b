"""How much each positive anchor weighs in the box loss, per object rather than per alignment.

Ultralytics' detection loss weighs each positive anchor's box loss (CIoU and the L1 or DFL term) by the
class target the task-aligned assigner gives it (TOOD, Feng et al. 2021, arXiv:2108.07755): the anchor's
alignment ``score^0.5 * CIoU^6`` (CIoU clamped at 0) relative to the best of its object's anchors, times the
best CIoU any of them reaches. An object the model already boxes well therefore teaches its box several times
as hard as one it boxes badly: on the strip set the scratches, boxed about three times too thick, were taught
median best targets of about 0.2 (0.15-0.26 over the last 30 epochs of three runs) against about 0.7
(0.59-0.79) for its stains (README, "Is it the weights the assigner gives them?"). The objects whose boxes most
need the loss get the least of it.

:func:`per_object_weights` divides each object's weights by its best anchor's, so that every object's best
anchor weighs 1 and its other positives keep their share relative to it, then scales all of them so that
their total is the assigner's: the box loss as a whole weighs what it did, shared out per object instead of
per fit. The class targets are not touched. An object whose positives all weigh 0 (no prediction overlaps it
yet) stays at 0: this evens out objects boxed badly, not objects not boxed at all (``assign.nwd`` reaches
those).

Pure PyTorch, no host synchronisation: ``(images, anchors)`` tensors as Ultralytics' assigner returns them.
"""

from __future__ import annotations

import torch

__all__ = ["per_object_weights"]


def per_object_weights(weights: torch.Tensor, owner: torch.Tensor, positive: torch.Tensor,
                       objects: int) -> torch.Tensor:
    """The box-loss ``weights`` of the ``positive`` anchors (all three ``(images, anchors)``), each divided by
    the largest weight among the positives of the same object (``owner``: the object's index in its image,
    below ``objects``), then all scaled to the positives' original total; 0 at the other anchors. Where no
    positive weighs anything, the positives' weights as they were."""
    if not weights.shape == owner.shape == positive.shape or weights.ndim != 2:
        raise ValueError(f"weights {tuple(weights.shape)}, owner {tuple(owner.shape)} and positive "
                         f"{tuple(positive.shape)} must be the same (images, anchors) shape")
    zero = torch.zeros((), dtype=weights.dtype, device=weights.device)
    kept = weights.where(positive.bool(), zero)
    owner = owner.long().where(positive.bool(), torch.zeros((), dtype=torch.long, device=owner.device))
    best = kept.new_zeros(kept.shape[0], max(int(objects), 1)).scatter_reduce(1, owner, kept, reduce="amax")
    of_own = best.gather(1, owner)
    tiny = torch.finfo(kept.dtype).tiny
    shared = torch.where(of_own > 0, kept / of_own.clamp_min(tiny), zero)
    total, new_total = kept.sum(), shared.sum()
    return torch.where(new_total > 0, shared * (total / new_total.clamp_min(tiny)), kept)
