"""Monitor pieces that need Ultralytics' loop: the optimizer-step schedule and the noise-scale pairs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gradkit.config import AlertsConfig
from gradkit.integrations.ultralytics.seams import warmup_iterations
from gradkit.monitor.alerts import inactive_rules
from gradkit.monitor.noise import NoiseScale, critical_batch_reading

__all__ = ["NoiseScaleTracker", "inactive_rules_message", "planned_optimizer_steps"]


def planned_optimizer_steps(nb: int, epochs: int, start_epoch: int, accumulate: int, warmup_iters: int) -> int:
    """Optimizer steps Ultralytics' loop will make (``BaseTrainer._do_train``: accumulate ramps from 1
    to its nominal value over the warmup iterations, a step when ``ni - last_opt_step >= accumulate``)."""
    steps, last = 0, -1
    for ni in range(start_epoch * nb, epochs * nb):
        acc = accumulate
        if warmup_iters and ni <= warmup_iters:
            acc = max(1, int(np.interp(ni, [0, warmup_iters], [1, accumulate]).round()))
        if ni - last >= acc:
            steps, last = steps + 1, ni
    return steps


def _trainer_plan(trainer) -> tuple[int, int]:
    """(planned optimizer steps, nominal accumulate) of a trainer at ``on_train_start``."""
    nb = len(trainer.train_loader)
    acc = max(round(trainer.args.nbs / max(trainer.batch_size, 1)), 1)
    acc = min(acc, nb * trainer.epochs)  # as BaseTrainer._setup_train without time= (a time= run is not planned)
    warm = warmup_iterations(trainer, nb)
    return planned_optimizer_steps(nb, trainer.epochs, trainer.start_epoch, acc, warm), acc


def inactive_rules_message(trainer, cfg: AlertsConfig, steps_done: int = 0) -> tuple[dict[str, int], str]:
    """Rules that cannot fire in this run's planned optimizer steps (plus ``steps_done`` before a
    resume), and a one-line explanation; none for a ``time=`` run, whose epochs the clock sets later."""
    if trainer.args.time:  # the clock sets the epochs after the first one: nothing is planned yet
        return {}, ""
    steps, acc = _trainer_plan(trainer)
    rules = inactive_rules(steps + steps_done, cfg)
    if not rules:
        return {}, ""
    nb = len(trainer.train_loader)
    why = (f"nbs={trainer.args.nbs} accumulates {acc} batches of {trainer.batch_size} per step"
           if acc > 1 else "one step per batch")
    return rules, too_few_steps(f"{steps} optimizer step(s) planned ({nb} batches x "
                                f"{trainer.epochs - trainer.start_epoch} epoch(s), {why})", rules)


def too_few_steps(steps: str, rules: dict[str, int]) -> str:
    """The notice for ``rules`` (rule -> optimizer steps it needs) that ``steps`` (what the run plans or made)
    cannot fire in."""
    listing = "; ".join(f"{rule} needs {need}" for rule, need in rules.items())
    return (f"gradkit: {steps}: too few for {listing}. Non-finite detection works from step 1; lower nbs or train "
            "longer for the others")


class NoiseScaleTracker:
    """Pairs the gradient after the first micro-batch of each accumulation window with the full
    step's gradient (``on_train_batch_end`` only; no change to the optimizer step).

    The squared norm of the first micro-batch is kept on the device and read back once per epoch.
    Ultralytics' loss is a per-image mean times the batch size, so a window's gradient is a sum over
    its images: dividing by the image count gives the mean gradient the estimator needs. Without
    accumulation (one batch per step) there is no second batch size and no estimate (NaN).
    """

    def __init__(self):
        self.run = NoiseScale()
        self._pairs: list[tuple[torch.Tensor, int, float, int]] = []  # (small sum sq, b, big sum sq, B)
        self._small: torch.Tensor | None = None
        self._window_images = 0
        self._seen_step = 0
        self._epoch = -1
        self._batch_in_epoch = 0
        self._stepped = [0, 0]  # windows that ended in an optimizer step, and their images

    def continue_from(self, run: NoiseScale, step: int) -> None:
        """Go on from a checkpoint's sums and optimizer step count (a resume, a NaN recovery's reload): pairs not
        yet summed belong to steps the reload threw away, and the next batch opens a window of a new epoch."""
        self.run = run
        self._pairs.clear()
        self._small, self._window_images, self._seen_step = None, 0, step
        self._epoch, self._batch_in_epoch = -1, 0
        self._stepped = [0, 0]

    def _images(self, trainer) -> int:
        """Images in the batch just finished (the last batch of an epoch may be short)."""
        loader = trainer.train_loader
        bs = loader.batch_size or trainer.batch_size
        nb = len(loader)
        if self._batch_in_epoch == nb and not getattr(loader, "drop_last", False):
            sampler = getattr(loader, "sampler", None)  # under DDP a DistributedSampler: this rank's share
            images = len(sampler) if hasattr(sampler, "__len__") else len(loader.dataset)
            return images - (nb - 1) * bs
        return bs

    def on_batch_end(self, trainer, step: int, last_total_norm: float) -> None:
        if trainer.epoch != self._epoch:
            self._epoch, self._batch_in_epoch = trainer.epoch, 0
        self._batch_in_epoch += 1
        images = self._images(trainer)
        first = self._window_images == 0
        self._window_images += images
        if step != self._seen_step:  # this batch ended an accumulation window with an optimizer step
            self._stepped[0] += 1
            self._stepped[1] += self._window_images
            if self._small is not None and math.isfinite(last_total_norm):
                # DDP all-reduces every micro-batch's gradient (Ultralytics scales the loss by the world size):
                # it sums the images of every rank
                ranks = max(1, int(getattr(trainer, "world_size", 1) or 1))
                self._pairs.append((self._small, self._small_images * ranks, last_total_norm**2,
                                    self._window_images * ranks))
            self._seen_step, self._window_images, self._small = step, 0, None
        elif first:
            self._small, self._small_images = self._grad_sq(trainer), images

    @staticmethod
    def _grad_sq(trainer) -> torch.Tensor | None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        if not grads:
            return None
        sq = torch.stack(torch._foreach_norm(grads)).float().square().sum()
        scale = trainer.scaler.get_scale() if trainer.scaler.is_enabled() else 1.0
        return sq / scale**2

    def epoch_value(self) -> float:
        """``B_simple`` over this epoch's windows (one host transfer); adds them to the run total."""
        epoch = NoiseScale()
        if self._pairs:
            smalls = torch.stack([p[0] for p in self._pairs]).cpu().tolist()
            for small, (_, b, big, big_b) in zip(smalls, self._pairs, strict=True):
                for acc in (epoch, self.run):
                    acc.add(small / b**2, b, big / big_b**2, big_b)
            self._pairs.clear()
        return epoch.value()

    def summary(self, images_per_step: int, ranks: int = 1) -> dict[str, Any]:
        """The run's estimate, read against the images an optimizer step took: their mean over the steps since the
        run's last start or resume (a short epoch's last window, an accumulation capped by a small dataset) times
        the ``ranks`` that each took as many, else the nominal ``images_per_step``."""
        windows, images = self._stepped
        if windows:
            images_per_step = round(ranks * images / windows)
        value = self.run.value()
        return {"value": value if math.isfinite(value) else None, "steps": self.run.steps,
                "images_per_step": images_per_step,
                "reading": critical_batch_reading(value, images_per_step, self.run.steps)}
