"""``monitor.taught``: what the task-aligned assigner teaches each class, per epoch, and a warning when a
class is not being taught (:mod:`gradkit.monitor.taught`; the assigner is wrapped in :mod:`.seams`)."""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from gradkit.config import TaughtConfig
from gradkit.integrations.ultralytics.seams import record_assignments
from gradkit.monitor.taught import ClassEpoch, TeachingTally, UntaughtRule, best_targets

__all__ = ["MAX_COLUMNS", "TeachingWatch", "column_names"]

#: Classes up to which each gets a results.csv column; more would bury the loss columns (the figures are
#: in gradkit_summary.json either way).
MAX_COLUMNS = 20


def column_names(names: dict[int, str]) -> dict[int, str]:
    """Class index -> its results.csv column: ``taught/NAME``, NAME kept to letters, digits, ``-`` and ``_``
    (results.csv is comma-separated) and suffixed with the index where two would coincide."""
    safe = {c: re.sub(r"[^0-9A-Za-z_-]+", "_", str(n)).strip("_") or str(c) for c, n in names.items()}
    taken = list(safe.values())
    return {c: f"taught/{s}" if taken.count(s) == 1 else f"taught/{s}_{c}" for c, s in safe.items()}


class TeachingWatch:
    """Records the training assignments of one run and judges each epoch."""

    def __init__(self, cfg: TaughtConfig, names: dict[int, str], overlap: str = "ciou",
                 box_loss_per_object: bool = False) -> None:
        self.names = {int(c): str(n) for c, n in names.items()}
        self.box_loss_per_object = box_loss_per_object  # this run's assign.box_loss_per_object: its box loss holds
        self.overlap = overlap  # what the targets measure: Ultralytics' CIoU, or "ciou_or_nwd" with assign.nwd
        self.columns = column_names(self.names) if len(self.names) <= MAX_COLUMNS else {}
        self.tally = TeachingTally()
        self.rule = UntaughtRule.of(cfg)
        self.epochs: list[dict[str, Any]] = []  # per judged epoch: {"epoch", "classes": {name: figures}}
        self.untaught: list[dict[str, Any]] = []  # each warning: {"epoch", "class", ...figures}
        self.taught_again: list[dict[str, Any]] = []  # each warned class taught again, as above

    def install(self, trainer: Any) -> None:
        record_assignments(trainer, self.record)

    def record(self, target_scores: torch.Tensor, fg_mask: torch.Tensor, target_gt_idx: torch.Tensor,
               gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor) -> None:
        best, positives = best_targets(target_scores, fg_mask, target_gt_idx, gt_labels, mask_gt)
        short_side = (gt_bboxes[..., 2:4] - gt_bboxes[..., 0:2]).amin(-1)  # xyxy, pixels at the training size
        self.tally.add(gt_labels, best, positives, short_side, mask_gt, target_scores.shape[-1])

    def epoch_end(self, epoch: int) -> tuple[dict[str, float], list[str], list[str]]:
        """This epoch's results.csv columns (each class's median best target; NaN without boxes), the warnings
        to log (classes not being taught) and the notes (a warned class taught again)."""
        figures = self.tally.epoch_end()
        if figures:
            self.epochs.append({"epoch": epoch, "classes": {self._name(c): vars(e) for c, e in figures.items()}})
        columns = {col: figures[c].median_target if c in figures else math.nan for c, col in self.columns.items()}
        untaught, recovered = self.rule.judge(figures, epoch)
        for c in untaught:
            self.untaught.append({"epoch": epoch, "class": self._name(c), **vars(figures[c])})
        for c in recovered:
            self.taught_again.append({"epoch": epoch, "class": self._name(c), **vars(figures[c])})
        notes = [f"gradkit: class {self._name(c)!r} is being taught again (epoch {epoch + 1}): median best assigner "
                 f"target {figures[c].median_target:.2f}" for c in recovered]
        return columns, [self.message(c, figures, epoch) for c in untaught], notes

    def _name(self, c: int) -> str:
        return self.names.get(c, str(c))

    def message(self, c: int, figures: dict[int, ClassEpoch], epoch: int) -> str:
        e = figures[c]
        taught = sorted(((f.median_target, self._name(k)) for k, f in figures.items()
                         if k != c and f.boxes >= self.rule.min_boxes), reverse=True)[:3]
        others = ", ".join(f"{n} {t:.2f}" for t, n in taught)
        start = self.rule.streak_start(c)
        first = (epoch if start is None else start) + 1
        return (f"gradkit: class {self._name(c)!r} is not being taught (epochs {first}-{epoch + 1}): median best "
                f"assigner target {e.median_target:.2f} over {e.boxes} boxes, against {others}. Its predicted boxes "
                f"barely overlap its objects, so its score is taught towards 0{self._box_loss()}: "
                "while this lasts, expect AP 0 for it. Its boxes' median short side is "
                f"{e.median_short_side:.0f} px at the training size; a larger imgsz is the first thing to try "
                "(README: What the assigner teaches each class)")

    def _box_loss(self) -> str:
        return (" (its box loss still counts: assign.box_loss_per_object is on)" if self.box_loss_per_object else
                " and its box loss weighs about 0 (assign.box_loss_per_object keeps it)")

    def final_warning(self) -> str | None:
        """At the end of training: the warned classes not taught again since."""
        still = [self._name(c) for c in self.rule.reported]
        return (f"gradkit: not taught when training ended (monitor.taught): {', '.join(still)}; their AP will be "
                "about 0") if still else None

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run, or one Ultralytics' NaN recovery rolled back, continues from: the rule's streaks and
        the epochs judged so far."""
        return {"names": sorted(self.names.items()), "rule": self.rule.state_dict(), "epochs": self.epochs,
                "untaught": self.untaught, "taught_again": self.taught_again}

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict`'s output, read back from a file (untrusted): a malformed one raises
        ValueError naming what is wrong, and nothing is changed. The tally of an unfinished epoch is dropped."""
        if not isinstance(state, dict):
            raise ValueError(f"monitor.taught state is {type(state).__name__}, not a mapping")
        names = state.get("names", sorted(self.names.items()))
        if not isinstance(names, list) or dict(_pairs(names)) != self.names:
            raise ValueError(f"monitor.taught state is for the classes {names!r}, this run's are "
                             f"{sorted(self.names.items())!r}")
        lists = {k: state.get(k, []) for k in ("epochs", "untaught", "taught_again")}
        needed = {"epochs": ("classes", dict), "untaught": ("class", str), "taught_again": ("class", str)}
        for key, entries in lists.items():
            field, kind = needed[key]
            if not isinstance(entries, list) or not all(isinstance(e, dict) and _count(e.get("epoch"))
                                                        and isinstance(e.get(field), kind) for e in entries):
                raise ValueError(f"monitor.taught state {key!r} is not a list of entries with an epoch and a "
                                 f"{field!r}")
        rule = UntaughtRule.of(self.rule)
        rule.load_state_dict(state.get("rule", {}))
        if any(c not in self.names for c in rule.classes()):
            raise ValueError(f"monitor.taught rule state names classes this run does not have: {rule.classes()}")
        self.rule, self.tally = rule, TeachingTally()
        self.epochs, self.untaught, self.taught_again = lists["epochs"], lists["untaught"], lists["taught_again"]

    def summary(self) -> dict[str, Any]:
        return {"rule": self.rule.thresholds(), "overlap": self.overlap, "epochs": self.epochs,
                "untaught": self.untaught, "taught_again": self.taught_again}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _pairs(value: list) -> list[tuple[Any, Any]]:
    if not all(isinstance(p, list | tuple) and len(p) == 2 and _count(p[0]) and isinstance(p[1], str)
               for p in value):
        raise ValueError(f"monitor.taught state 'names' is not a list of [index, name] pairs: {value!r}")
    return [tuple(p) for p in value]
