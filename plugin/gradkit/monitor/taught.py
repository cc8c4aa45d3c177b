"""Which classes a task-aligned assigner teaches, per epoch (TOOD, Feng et al. 2021; Ultralytics' assigner).

A task-aligned assigner gives each ground-truth box's positive anchors a class target scaled so that the
best-aligned positive gets the highest IoU any of that box's positives' predicted boxes has with it. That
best target is what the class score of the object is taught towards, and it weighs the box loss at those
anchors. A class whose boxes get a best target near 0, epoch after epoch, while other classes' rise, is not
being taught: its predicted boxes do not overlap its objects, the class score is pulled towards 0 and the box
loss that would fix the boxes weighs about 0, so the loop that teaches a class never starts. README
("What the assigner teaches each class") measured it: each class taught a median of 0.000-0.006 after
training was never detected (AP50 0).

Everything here is torch on the device the assigner ran on, with no host transfer per step: the tally is
read once an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

__all__ = ["BINS", "SIDE_BINS", "ClassEpoch", "TeachingTally", "UntaughtRule", "best_targets"]

#: Best targets lie in [0, 1]; an epoch's are counted in this many equal bins (medians to 0.01).
BINS = 100
#: Box short sides in pixels at the training size, counted in 1 px bins; wider ones in the last.
SIDE_BINS = 64


def best_targets(target_scores: torch.Tensor, fg_mask: torch.Tensor, target_gt_idx: torch.Tensor,
                 gt_labels: torch.Tensor, mask_gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image and ground-truth box (images x boxes): the highest target any of the box's positive anchors
    got for the box's class, and the number of those positives; 0 and 0 for a box without positives.

    ``target_scores`` images x anchors x classes; ``fg_mask`` and ``target_gt_idx`` images x anchors (which
    box a positive anchor was assigned to); ``gt_labels`` and ``mask_gt`` images x boxes x 1."""
    b, n = mask_gt.shape[:2]
    if n == 0:  # a batch without boxes
        return target_scores.new_zeros(b, 0, dtype=torch.float), target_gt_idx.new_zeros(b, 0, dtype=torch.long)
    owner = target_gt_idx.long().clamp(0, max(n - 1, 0))
    labels = gt_labels.view(b, n).long().clamp(0, target_scores.shape[-1] - 1)
    anchor_class = labels.gather(1, owner)  # the class of the box each anchor is assigned to
    fg = fg_mask.bool()
    target = target_scores.gather(2, anchor_class.unsqueeze(-1)).squeeze(-1).float() * fg
    best = target.new_zeros(b, n).scatter_reduce(1, owner, target, "amax", include_self=True)
    positives = owner.new_zeros(b, n).scatter_add(1, owner, fg.long())
    real = mask_gt.view(b, n).bool()
    return best * real, positives * real


@dataclass(frozen=True)
class ClassEpoch:
    """One class over one epoch: boxes seen, the share given any positive, the median best target and the
    median short side (pixels at the training size)."""

    boxes: int
    with_positive: float
    median_target: float
    median_short_side: float


def _histogram_median(counts: torch.Tensor, width: float) -> float:
    """The median of values counted in bins of ``width`` starting at 0 (the middle of the median's bin)."""
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    k = int(torch.searchsorted(counts.cumsum(0), torch.tensor((total + 1) // 2)))
    return (k + 0.5) * width


class TeachingTally:
    """Per class, over the current epoch: a histogram of the boxes' best targets and of their short sides,
    and how many boxes got a positive. ``add`` works on the assigner's device without a host transfer;
    ``epoch_end`` reads and clears it."""

    def __init__(self) -> None:
        self._targets: torch.Tensor | None = None  # classes x BINS
        self._sides: torch.Tensor | None = None  # classes x SIDE_BINS
        self._with_positive: torch.Tensor | None = None  # classes

    def add(self, labels: torch.Tensor, best: torch.Tensor, positives: torch.Tensor, short_side: torch.Tensor,
            real: torch.Tensor, classes: int) -> None:
        """One assignment: per image and box its class, best target, positives, short side (px) and whether it
        is a real box (the rest is padding)."""
        if self._targets is None or self._targets.shape[0] < classes:
            self._grow(classes, best.device)
        best = best.float().view(-1)
        # A non-finite target means non-finite predictions, and gradkit (on_nonfinite: skip) skips the optimizer
        # step they are part of: this call's boxes are left out together (a device-side flag: no host transfer).
        # The other micro-batches of an accumulated step, and other ranks' batches, are judged by their own calls.
        finite = torch.isfinite(best).all()
        weight = (real.view(-1).bool() & finite).long()
        cls = labels.long().view(-1).clamp(0, classes - 1)
        t_bin = (best.nan_to_num(0.0).clamp(0, 1) * BINS).long().clamp(max=BINS - 1)
        s_bin = short_side.float().view(-1).clamp(0, SIDE_BINS - 1).long()
        self._targets.view(-1).scatter_add_(0, cls * BINS + t_bin, weight)
        self._sides.view(-1).scatter_add_(0, cls * SIDE_BINS + s_bin, weight)
        self._with_positive.scatter_add_(0, cls, weight * (positives.view(-1) > 0).long())

    def _grow(self, classes: int, device: torch.device) -> None:
        old = self._targets
        self._targets = torch.zeros(classes, BINS, dtype=torch.long, device=device)
        self._sides = torch.zeros(classes, SIDE_BINS, dtype=torch.long, device=device)
        self._with_positive = torch.zeros(classes, dtype=torch.long, device=device)
        if old is not None:  # never in practice: a run's class count is fixed
            raise ValueError(f"the assigner's class count changed from {old.shape[0]} to {classes} within a run")

    def epoch_end(self) -> dict[int, ClassEpoch]:
        """Class index -> this epoch's figures, for every class with at least one box; then start afresh."""
        if self._targets is None:
            return {}
        # copies: on a CPU run .cpu() is the tally itself, which is cleared next
        targets, sides, positive = (t.to("cpu", copy=True) for t in (self._targets, self._sides, self._with_positive))
        self._targets.zero_(), self._sides.zero_(), self._with_positive.zero_()
        out = {}
        for c in range(targets.shape[0]):
            boxes = int(targets[c].sum())
            if boxes:
                out[c] = ClassEpoch(boxes, int(positive[c]) / boxes, _histogram_median(targets[c], 1 / BINS),
                                    _histogram_median(sides[c], 1.0))
        return out


@dataclass
class UntaughtRule:
    """A class is *untaught* in an epoch when it had at least ``min_boxes`` boxes and its median best target
    is below ``below`` while another class's reached ``reference`` (the model is learning, just not this
    class). It is reported after ``patience`` such epochs in a row, and again only after ``patience`` epochs in a
    row at or above ``below`` (taught again). (The thresholds' defaults
    and meaning: ``monitor.taught`` in the configuration reference, defined once in ``gradkit.config``.)"""

    below: float
    reference: float
    patience: int
    min_boxes: int

    @classmethod
    def of(cls, source: Any) -> UntaughtRule:
        """Copy the thresholds from any object that has them (e.g. the configuration section)."""
        return cls(**{f.name: getattr(source, f.name) for f in fields(cls)})

    def thresholds(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def __post_init__(self) -> None:
        self._low: dict[int, int] = {}  # epochs in a row untaught
        self._low_since: dict[int, int] = {}  # the epoch the class's current untaught streak began
        self._taught: dict[int, int] = {}  # epochs in a row at or above ``below``
        self._reported: set[int] = set()

    @property
    def reported(self) -> list[int]:
        """The classes reported and not taught again since."""
        return sorted(self._reported)

    def state_dict(self) -> dict[str, Any]:
        """The streaks and the reported classes (plain lists of ``[class, value]``)."""
        return {"low": sorted(self._low.items()), "low_since": sorted(self._low_since.items()),
                "taught": sorted(self._taught.items()), "reported": sorted(self._reported)}

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`'s output, read back from a file: anything but non-negative integers where
        they belong raises ValueError naming the key, and nothing is changed."""
        if not isinstance(state, dict):
            raise ValueError(f"monitor.taught rule state is {type(state).__name__}, not a mapping")
        counts = {k: _int_pairs(state.get(k, []), k) for k in ("low", "low_since", "taught")}
        reported = state.get("reported", [])
        if not isinstance(reported, list) or not all(_count(c) for c in reported):
            raise ValueError(f"monitor.taught rule state 'reported' is not a list of class indices: {reported!r}")
        self._low, self._low_since, self._taught = counts["low"], counts["low_since"], counts["taught"]
        self._reported = set(reported)

    def classes(self) -> list[int]:
        """Every class the rule holds a state for."""
        return sorted(set(self._low) | set(self._low_since) | set(self._taught) | self._reported)

    def streak_start(self, c: int) -> int | None:
        """The epoch (as given to :meth:`judge`) class ``c``'s current untaught streak began; None outside one."""
        return self._low_since.get(c) if self._low.get(c) else None

    def judge(self, epoch: dict[int, ClassEpoch], at: int) -> tuple[list[int], list[int]]:
        """(classes untaught for ``patience`` epochs in a row as of epoch ``at``, reported classes taught again: at or
        above ``below`` for ``patience`` epochs in a row, so that a median hovering at the threshold is not reported
        back and forth). A class without enough boxes this epoch keeps its state: its streak may span that epoch."""
        best = max((e.median_target for e in epoch.values() if e.boxes >= self.min_boxes), default=0.0)
        report, recovered = [], []
        for c, e in epoch.items():
            if e.boxes < self.min_boxes:
                continue
            taught = e.median_target >= self.below
            low = not taught and best >= self.reference
            if low and not self._low.get(c):
                self._low_since[c] = at
            self._low[c] = self._low.get(c, 0) + 1 if low else 0
            self._taught[c] = self._taught.get(c, 0) + 1 if taught else 0
            if c in self._reported and self._taught[c] >= self.patience:
                self._reported.discard(c)
                recovered.append(c)
            elif c not in self._reported and self._low[c] >= self.patience:
                self._reported.add(c)
                report.append(c)
        return report, recovered


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _int_pairs(value: Any, key: str) -> dict[int, int]:
    if not isinstance(value, list) or not all(isinstance(p, list | tuple) and len(p) == 2 and all(map(_count, p))
                                              for p in value):
        raise ValueError(f"monitor.taught rule state {key!r} is not a list of [class, count] pairs: {value!r}")
    return {int(c): int(n) for c, n in value}
