"""The model's memory layout while it trains on a CPU (``speed.memory_format``).

Ultralytics trains channels-last (NHWC) on CUDA only and leaves a CPU run in NCHW, on the grounds that
it brings nothing there. On this project's CPU a yolo26n training step was 1.23-1.29x faster in NHWC
(``benchmarks/memory_format.py``), computing the same function, though PyTorch's channels-last batch norm for
the CPU rounds further from float64 than NCHW's. Machines differ, so ``fastest`` times a few steps of a copy of the
run's own model in each layout, at its batch and size, and keeps the faster. The timing runs at
``on_train_start``, after Ultralytics' clock has started, so a ``time=`` budget pays for it. A resumed ``fastest`` run
trains in the layout its state file says it chose, without timing again (on whatever machine resumes it), so one
run trains in one layout.

A run of several processes stays NCHW (Ultralytics 8.4.190 trains on a CPU in one process; the guard is for a
trainer that does not). Converting the live model keeps its parameters (the
optimizer's references stay valid) and changes only their strides; Ultralytics saves checkpoints in NCHW
whatever the layout (``BaseTrainer.save_model``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from gradkit.integrations.ultralytics.throughput import fake_batch, least_disturbed, timed_training_step

__all__ = ["LayoutChoice", "choose_training_layout", "to_channels_last"]

#: Steps timed per layout after one untimed warm-up each, interleaved so drift hits both.
TIMED_ROUNDS = 2


@dataclass(frozen=True)
class LayoutChoice:
    """What ``speed.memory_format`` did: the layout trained in, and the seconds per step behind a ``fastest``."""

    channels_last: bool
    contiguous_s: float | None = None
    channels_last_s: float | None = None
    #: True where a resumed ``fastest`` run kept the layout it chose before, without timing again.
    kept: bool = False

    def describe(self, mode: str, imgsz: int, batch: int) -> str:
        layout = "channels-last (NHWC)" if self.channels_last else "contiguous (NCHW)"
        if self.kept:
            return (f"gradkit: speed.memory_format {mode}: training {layout}, the layout this run chose before it was "
                    "resumed (not timed again)")
        if self.contiguous_s is None:
            return f"gradkit: speed.memory_format {mode}: training {layout}"
        return (f"gradkit: speed.memory_format {mode}: a training step of {batch} images at {imgsz} px took "
                f"{self.contiguous_s:.2f} s NCHW and {self.channels_last_s:.2f} s NHWC (NCHW / NHWC "
                f"{self.contiguous_s / self.channels_last_s:.2f}); training {layout}")

    def as_record(self) -> dict:
        """What ``gradkit_summary.json`` keeps of the choice (plain values)."""
        return {"channels_last": self.channels_last, "contiguous_s": self.contiguous_s,
                "channels_last_s": self.channels_last_s, "kept": self.kept}


def to_channels_last(trainer) -> None:
    """Convert the training model and its EMA copy to NHWC in place."""
    for module in (trainer.model, getattr(getattr(trainer, "ema", None), "ema", None)):
        if module is not None:
            module.to(memory_format=torch.channels_last)


def _fastest_seconds(trainer) -> tuple[float, float]:
    """Seconds per training step NCHW and NHWC, each the fastest of ``TIMED_ROUNDS`` after a warm-up, timed
    interleaved on two copies of the trainer's model (its own weights and BN statistics are not touched) on the
    same random images at the run's batch and size."""
    model = getattr(trainer.model, "module", trainer.model)
    data = fake_batch(trainer.batch_size, int(trainer.args.imgsz), max(int(trainer.data["nc"]), 1),
                      torch.Generator().manual_seed(0))
    steps = [timed_training_step(copy.deepcopy(model), dict(data), channels_last) for channels_last in (False, True)]
    contiguous_s, channels_last_s = least_disturbed(steps, TIMED_ROUNDS)
    return contiguous_s, channels_last_s


def choose_training_layout(trainer, mode: str, earlier_channels_last: bool | None = None) -> LayoutChoice | None:
    """Apply ``speed.memory_format`` to a single-process CPU run; None where it does not apply (CUDA: Ultralytics
    decides; several processes: DDP has laid out its gradient buckets, and each rank would time on its own).
    ``earlier_channels_last``: the layout a resumed ``fastest`` run chose before (True: NHWC; None: time now)."""
    if mode == "contiguous" or trainer.device.type != "cpu" or getattr(trainer, "world_size", 1) > 1:
        return None
    if mode == "channels_last":
        to_channels_last(trainer)
        return LayoutChoice(channels_last=True)
    if earlier_channels_last is not None:
        if earlier_channels_last:
            to_channels_last(trainer)
        return LayoutChoice(channels_last=earlier_channels_last, kept=True)
    contiguous_s, channels_last_s = _fastest_seconds(trainer)
    choice = LayoutChoice(channels_last_s < contiguous_s, contiguous_s, channels_last_s)
    if choice.channels_last:
        to_channels_last(trainer)
    return choice
