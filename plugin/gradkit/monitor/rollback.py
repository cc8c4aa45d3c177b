"""Rollback of a diverging run to an in-memory snapshot: the snapshot, the trigger, the lr factor.

Pure PyTorch: modules, an optimizer and small state dicts go in; nothing here knows a trainer.

* :class:`StateSnapshot` copies the tensors of some modules and of an optimizer's state into
  buffers allocated once (host or device) and writes them back in place, bit for bit.
* :class:`SnapshotPair` keeps the last *known-good* state: a candidate is captured every K
  optimizer steps and becomes known-good once K more steps ran without a divergence, so a
  rollback returns K to 2K steps back, never to a state taken just before the fault surfaced.
* :func:`divergence_reason` is the trigger, :class:`DivergenceWatch` the history it needs.
* :func:`fitness_collapse_reason` is the epoch-level trigger: a validation far below the best one.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gradkit.monitor.alerts import WEIGHT_GROWTH, Alert

__all__ = ["MIN_LOSS_SCALE", "DivergenceWatch", "RollbackAlert", "SnapshotPair", "StateSnapshot", "divergence_reason",
           "fitness_collapse_reason", "scaled_lr", "scaler_state_for_restore"]

#: Under AMP, non-finite gradients at a loss scale above this are the GradScaler's overflow handling: it
#: skips the step and halves the scale, and CUDA's starts at 2**16 and may overflow many steps in a row
#: (6 for yolo26n on an H200, benchmarks/amp_check.py). At 1 the gradient itself is non-finite or beyond
#: float16's range, which no scale fixes (DeepSpeed's ``min_loss_scale`` is 1 for the same reason).
MIN_LOSS_SCALE = 1.0
#: Healthy steps of history the spike test needs before it may fire (a median of fewer is noise).
MIN_SPIKE_HISTORY = 10
#: Below this best fitness (mAP50-95) a model has hardly learnt and a few lucky boxes make its best:
#: fitness rollbacks wait for it. Above it a drop to the threshold counts even where the run would have
#: recovered alone (the grid's unclipped SGD fine-tune went 0.021 -> 0.000 -> 0.044: one rollback).
MIN_BEST_FITNESS = 0.01


@dataclass
class RollbackAlert(Alert):
    """A rollback, as written to ``gradient_alerts.jsonl`` (kind ``rollback``)."""

    from_step: int
    to_step: int
    lr_factor: float
    reason: str


class StateSnapshot:
    """Copies of modules' state dicts, an optimizer's per-parameter state and a small ``extra`` dict.

    Args:
        device: Where the copies live: ``None`` keeps each tensor on its own device (fast, costs
            accelerator memory), ``"cpu"`` copies to host memory.
    """

    def __init__(self, device: str | torch.device | None = "cpu"):
        self.device = None if device is None else torch.device(device)
        self.step: int | None = None
        self._modules: dict[str, list[torch.Tensor]] = {}
        self._optim: list[dict[str, Any]] = []
        self.extra: dict[str, Any] = {}

    def _copy(self, t: torch.Tensor) -> torch.Tensor:
        dst = t.device if self.device is None else self.device
        out = torch.empty_like(t, device=dst)
        if dst.type == "cpu" and t.device.type == "cuda":
            out = out.pin_memory()
        return out.copy_(t.detach())

    def _copy_into(self, held: Any, value: Any) -> Any:
        """A copy of one optimizer state value, into the earlier capture's buffer when it fits."""
        if not isinstance(value, torch.Tensor):
            return copy.deepcopy(value)
        if isinstance(held, tuple) and held[0].shape == value.shape and held[0].dtype == value.dtype:
            held[0].copy_(value.detach())
            return held[0], value.device
        return self._copy(value), value.device

    def _capture_tensors(self, key: str, live: list[torch.Tensor]) -> None:
        held = self._modules.get(key)
        if held is not None and [(h.shape, h.dtype) for h in held] == [(t.shape, t.dtype) for t in live]:
            torch._foreach_copy_(held, [t.detach() for t in live])
        else:
            self._modules[key] = [self._copy(t) for t in live]

    def capture(self, step: int, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer,
                extra: dict[str, Any] | None = None) -> None:
        """Copy the current state; buffers of an earlier capture with the same shapes are reused."""
        for key, module in modules.items():
            self._capture_tensors(key, list(module.state_dict().values()))
        params = _optimizer_params(optimizer)
        held = self._optim if len(self._optim) == len(params) else [None] * len(params)
        self._optim = [None if optimizer.state.get(p) is None else
                       {k: self._copy_into(old.get(k) if old else None, v) for k, v in optimizer.state[p].items()}
                       for p, old in zip(params, held, strict=True)]
        self.extra = copy.deepcopy(extra or {})
        self.step = step

    def restore(self, modules: dict[str, torch.nn.Module], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Write the copies back in place (parameters keep their identity) and return ``extra``."""
        if self.step is None:
            raise RuntimeError("no state captured yet")
        for key, module in modules.items():
            torch._foreach_copy_([t for t in module.state_dict().values()], self._modules[key])
        params = _optimizer_params(optimizer)
        if len(params) != len(self._optim):
            raise RuntimeError(f"optimizer has {len(params)} parameters, the snapshot {len(self._optim)}")
        for p, saved in zip(params, self._optim, strict=True):
            if saved is None:
                optimizer.state.pop(p, None)
                continue
            live = optimizer.state[p]
            for k in set(live) - set(saved):
                del live[k]
            for k, v in saved.items():
                cur = live.get(k)
                if not isinstance(v, tuple):
                    live[k] = copy.deepcopy(v)
                elif isinstance(cur, torch.Tensor) and cur.shape == v[0].shape and cur.dtype == v[0].dtype:
                    cur.copy_(v[0])
                else:
                    live[k] = v[0].to(v[1], copy=True)
        return copy.deepcopy(self.extra)

    @property
    def nbytes(self) -> int:
        """Bytes held by the tensor copies."""
        tensors = [t for held in self._modules.values() for t in held]
        tensors += [v[0] for s in self._optim if s for v in s.values() if isinstance(v, tuple)]
        return sum(t.numel() * t.element_size() for t in tensors)


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


class SnapshotPair:
    """The last known-good state, from K to 2K optimizer steps ago.

    Call :meth:`after_step` after every optimizer step that did not diverge; it captures a
    candidate every ``every`` steps and promotes the previous candidate to known-good (the steps
    in between ran without a divergence). :meth:`good` is what a rollback restores: the known-good
    snapshot, or the candidate while no snapshot has been confirmed yet.
    """

    def __init__(self, every: int, device: str | torch.device | None = "cpu"):
        self.every = every
        self._confirmed = StateSnapshot(device)
        self._candidate = StateSnapshot(device)
        self._since = 0

    def after_step(self, step: int, capture) -> None:
        """``capture(snapshot)`` fills a :class:`StateSnapshot` with the current state."""
        self._since += 1
        if self._candidate.step is not None and self._since < self.every:
            return
        if self._candidate.step is not None:  # survived `every` steps: it is known-good now
            self._confirmed, self._candidate = self._candidate, self._confirmed
        capture(self._candidate)
        self._candidate.step = step
        self._since = 0

    def good(self) -> StateSnapshot | None:
        for snap in (self._confirmed, self._candidate):
            if snap.step is not None:
                return snap
        return None

    def clear(self) -> None:
        """Forget both states (they came from a run that has since been found diverged)."""
        self._confirmed.step = self._candidate.step = None
        self._since = 0

    def after_rollback(self) -> None:
        """The candidate came from the lead-up to the divergence: drop it; capture anew next step."""
        if self._confirmed.step is None:
            self._confirmed, self._candidate = self._candidate, self._confirmed
        self._candidate.step = None
        self._since = 0

    @property
    def nbytes(self) -> int:
        return self._confirmed.nbytes + self._candidate.nbytes


def divergence_reason(*, consecutive_nonfinite: int, nonfinite_patience: int, total_norm: float,
                      norm_median: float | None, norm_spike: float, loss: float | None,
                      loss_median: float | None, loss_spike: float, alerts: Iterable[Alert] = ()) -> str | None:
    """Why this step counts as divergence, or None.

    * non-finite gradients on ``nonfinite_patience`` consecutive steps (skipping did not help);
    * an exploding total norm (``norm_spike`` x its recent median) together with a loss spike
      (``loss_spike`` x its recent median): either alone is common in healthy YOLO training;
    * a ``diverging`` diagnosis (``gradkit.monitor.divergence``) of the total-norm arms. The weight-growth
      arm only warns: unclipped runs can set it off in their first steps without diverging (every
      unclipped yolo26n run on the design data did), and an unclipped SGD run at the default lr0 spent
      all 3 rollbacks on it by step 10 (README, "Early warning of divergence").
    """
    if consecutive_nonfinite >= nonfinite_patience:
        return f"non-finite gradients on {consecutive_nonfinite} consecutive steps"
    if (norm_median is not None and loss_median is not None and loss is not None and math.isfinite(total_norm)
            and total_norm > norm_spike * norm_median and (not math.isfinite(loss) or loss > loss_spike * loss_median)):
        return (f"total norm {total_norm:.4g} > {norm_spike:g}x its median {norm_median:.4g} with loss "
                f"{loss:.4g} > {loss_spike:g}x its median {loss_median:.4g}")
    # after the spike test, whose reason says more when both hold
    diverging = [a for a in alerts if a.kind == "diverging" and a.arm != WEIGHT_GROWTH]
    if diverging:
        return f"diverging diagnosis ({diverging[0].arm or 'total norm'})"
    return None


def fitness_collapse_reason(fitness: float, best: float | None, drop: float) -> str | None:
    """Why this validation counts as divergence, or None: its fitness is below ``drop`` x the best so far.

    A collapse shows in validation while the steps look calm: in the stability grid a too-high lr
    took a fine-tune from mAP50-95 0.13 to 0.00-0.04 with no norm or loss spike, where healthy runs
    dipped at most to 0.38x their best between epochs. Nothing fires before the best reaches
    :data:`MIN_BEST_FITNESS`.
    """
    if best is None or best < MIN_BEST_FITNESS:
        return None
    if not math.isfinite(fitness):
        return f"validation fitness is {fitness}"
    if fitness < drop * best:
        return f"validation fitness {fitness:.4g} < {drop:g}x the best {best:.4g}"
    return None


class DivergenceWatch:
    """Recent healthy total norms and losses, for :func:`divergence_reason`'s spike test."""

    def __init__(self, history: int):
        self.norms: deque[float] = deque(maxlen=history)
        self.losses: deque[float] = deque(maxlen=history)

    def medians(self) -> tuple[float | None, float | None]:
        if len(self.norms) < MIN_SPIKE_HISTORY:
            return None, None
        return float(np.median(self.norms)), float(np.median(self.losses))

    def observe(self, total_norm: float, loss: float | None) -> None:
        """Record a healthy step (finite norm and loss)."""
        if loss is not None and math.isfinite(total_norm) and math.isfinite(loss):
            self.norms.append(total_norm)
            self.losses.append(loss)

    def clear(self) -> None:
        self.norms.clear()
        self.losses.clear()


@contextmanager
def scaled_lr(optimizer: torch.optim.Optimizer, factor: float) -> Iterator[None]:
    """Multiply every group's lr by ``factor`` for one ``optimizer.step``; the exact values return after.

    The trainer's own schedule keeps writing ``lr`` and never sees the factor.
    """
    if factor == 1.0:
        yield
        return
    saved = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = g["lr"] * factor
    try:
        yield
    finally:
        for g, lr in zip(optimizer.param_groups, saved, strict=True):
            g["lr"] = lr


def scaler_state_for_restore(saved: dict[str, Any], current_scale: float) -> dict[str, Any]:
    """A GradScaler state to restore: the lower of the saved and the current loss scale, unless the
    current one is down to MIN_LOSS_SCALE.

    Overflows since the snapshot lowered the scale, and putting the old, higher one back would
    overflow again on the next step. A scale at or below MIN_LOSS_SCALE was driven there by the
    non-finite gradients of the fault being rolled back, not by the scaler's calibration: keeping it
    would leave float16 gradients to underflow for thousands of steps, so the snapshot's comes back.
    """
    current = float(current_scale)
    restored = float(saved["scale"]) if current <= MIN_LOSS_SCALE else min(float(saved["scale"]), current)
    return {**saved, "scale": restored}
