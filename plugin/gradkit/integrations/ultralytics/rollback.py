"""``monitor.on_divergence: rollback`` inside an Ultralytics run: what a snapshot holds, when to restore.

A snapshot holds the live model's state dict (weights and BatchNorm statistics), the EMA model's
and its update count, the optimizer's per-parameter state (momentum, Adam moments; the param
groups' lr and momentum are the trainer's schedule and stay as they are), the GradScaler (whose
scale a rollback never raises) and the plugin's own clip and alert state. It lives in memory only;
``resume=True`` carries the rollback count and the lr factors, and the first snapshot after a resume
is taken at its first step.

Two triggers: a diverging *step* (after every optimizer step) returns to the last known-good
snapshot of K to 2K steps ago; a collapsed *validation* (``fitness_drop``, at the end of an epoch)
returns to the best validated state, which for a fine-tune can be its starting weights.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from gradkit.config import ConfigError, RollbackConfig
from gradkit.monitor.rollback import (
    DivergenceWatch,
    RollbackAlert,
    SnapshotPair,
    StateSnapshot,
    divergence_reason,
    fitness_collapse_reason,
    scaler_state_for_restore,
)

__all__ = ["RollbackGuard"]


def _logger():
    from ultralytics.utils import LOGGER

    return LOGGER


def _modules(trainer) -> dict[str, torch.nn.Module]:
    from ultralytics.utils.torch_utils import unwrap_model

    modules = {"model": unwrap_model(trainer.model)}
    if trainer.ema is not None:
        modules["ema"] = trainer.ema.ema
    return modules


def _loss(trainer) -> float | None:
    """The step's training loss, averaged over DDP ranks so that every rank decides alike."""
    loss = getattr(trainer, "loss", None)
    if loss is None:
        return None
    value = loss.detach().float().sum()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value)
        value = value / torch.distributed.get_world_size()
    return float(value)


@contextmanager
def _rng_kept() -> Iterator[None]:
    """Put Python's, NumPy's and torch's (CPU and CUDA) random states back as they were."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _is_main() -> bool:
    from gradkit.integrations.ultralytics.callback import _is_main as is_main  # one definition of rank 0

    return is_main()


def _from_main(value: Any) -> Any:
    """Rank 0's value on every rank: Ultralytics' validator returns metrics on rank 0 only, and every
    rank must restore, scale the lr and stop alike."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, 0)
    return box[0]


def _started_from_weights(trainer) -> bool:
    """A fine-tune: the model came from a checkpoint (``YOLO("x.pt")`` or ``pretrained=x.pt``)."""
    return any(str(v).endswith(".pt") for v in (trainer.args.model, trainer.args.pretrained))


class RollbackGuard:
    """Snapshots every K steps and at every best validation; on divergence restores one and lowers the lr.

    The lr factor has two parts: ``epoch_factor`` (step rollbacks; a one-off bad stretch, lifted
    after an epoch without rollback) and ``run_factor`` (fitness rollbacks: a whole epoch at this
    lr made the model worse, so it stays lower for the rest of the run).
    """

    def __init__(self, cfg: RollbackConfig):
        self.cfg = cfg
        device = "cpu" if cfg.device == "cpu" else None
        self.snapshots = SnapshotPair(cfg.every, device)
        self.best = StateSnapshot(device)
        self.start = StateSnapshot(device)  # a fine-tune's starting weights until the first validation
        self.best_fitness: float | None = None
        self.best_epoch: int | None = None  # 0: the starting weights
        self.best_metrics: dict[str, Any] = {}  # its validation's metrics, as in trainer.metrics
        self.watch = DivergenceWatch(cfg.history)
        self.attempts = 0
        self.epoch_factor = 1.0
        self.run_factor = 1.0
        self.epoch_rollbacks = 0  # step rollbacks of this epoch
        self.fitness_rollbacks = 0  # after the last validation: results.csv was already written, next row

    @property
    def lr_factor(self) -> float:
        return self.epoch_factor * self.run_factor

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "epoch_factor": self.epoch_factor, "run_factor": self.run_factor,
                "epoch_rollbacks": self.epoch_rollbacks, "fitness_rollbacks": self.fitness_rollbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises ConfigError, naming the value, for a state no run of this guard can have written."""
        try:
            counts = [int(state["attempts"]), int(state["epoch_rollbacks"]), int(state.get("fitness_rollbacks", 0))]
            # state files of gradkit before the fitness trigger hold one "lr_factor": the epoch factor
            factors = [float(state.get("epoch_factor", state.get("lr_factor", 1.0))),
                       float(state.get("run_factor", 1.0))]
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"rollback state {state!r:.200} is unreadable ({exc})") from None
        if min(counts) < 0 or not all(0 < f <= 1 for f in factors):
            raise ConfigError(f"rollback state out of range: counts {counts} must be >= 0, lr factors {factors} "
                              "in (0, 1]")
        self.attempts, self.epoch_rollbacks, self.fitness_rollbacks = counts
        self.epoch_factor, self.run_factor = factors

    # ------------------------------------------------------------------ epochs
    def epoch_start(self) -> None:
        self.epoch_rollbacks = 0

    def epoch_end(self) -> dict[str, float]:
        """The epoch's columns for results.csv; an epoch without rollback lifts the epoch factor."""
        columns = {"grad/rollbacks": float(self.epoch_rollbacks + self.fitness_rollbacks),
                   "grad/lr_factor": self.lr_factor}
        if self.epoch_rollbacks == 0:
            self.epoch_factor = 1.0
        self.fitness_rollbacks = 0
        return columns

    # ------------------------------------------------------------------ steps
    def _capture(self, trainer, plugin, snapshot) -> None:
        scaler = trainer.scaler
        extra = {"ema_updates": trainer.ema.updates if trainer.ema is not None else None,
                 "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                 "clip": plugin.clipper.state_dict(), "alerts": plugin.detector.state_dict()}
        snapshot.capture(plugin.step, _modules(trainer), trainer.optimizer, extra)

    def _restore(self, trainer, plugin, snapshot) -> None:
        extra = snapshot.restore(_modules(trainer), trainer.optimizer)
        if trainer.ema is not None:
            trainer.ema.updates = extra["ema_updates"]
        if extra["scaler"] is not None:
            trainer.scaler.load_state_dict(scaler_state_for_restore(extra["scaler"], trainer.scaler.get_scale()))
        plugin.clipper.load_state_dict(extra["clip"])
        plugin.detector.load_state_dict(extra["alerts"])

    def after_step(self, trainer, plugin, total_norm: float, finite: bool, alerts: list) -> None:
        """After every optimizer step: roll back on divergence, else observe and maybe snapshot."""
        loss = _loss(trainer)
        norm_median, loss_median = self.watch.medians()
        reason = divergence_reason(consecutive_nonfinite=plugin.consecutive_nonfinite,
                                   nonfinite_patience=self.cfg.nonfinite_patience, total_norm=total_norm,
                                   norm_median=norm_median, norm_spike=self.cfg.norm_spike, loss=loss,
                                   loss_median=loss_median, loss_spike=self.cfg.loss_spike, alerts=alerts)
        if reason is None:
            if finite:
                self.watch.observe(total_norm, loss)
            self.snapshots.after_step(plugin.step, lambda snap: self._capture(trainer, plugin, snap))
            return
        good = self.snapshots.good()
        if good is None:
            self._stop(trainer, plugin, reason, "no known-good state was captured yet; last.pt, written now, "
                       "holds the diverged state")
            return
        self._restore(trainer, plugin, good)
        self.snapshots.after_rollback()
        self.epoch_rollbacks += 1
        plugin.consecutive_nonfinite = 0
        threshold = float(self.cfg.norm_spike * norm_median) if norm_median is not None else 0.0
        dropped = f"restored the state of step {good.step}, dropped the updates of steps {good.step + 1}-{plugin.step}"

        def alert(message: str) -> RollbackAlert:
            return RollbackAlert("rollback", trainer.epoch + 1, plugin.step, "total", "model", float(total_norm),
                                 threshold, message, plugin.step, good.step, self.lr_factor, reason)

        if self.attempts >= self.cfg.max_attempts:  # the diverged weights are worth nothing: stop on good ones
            self._report(plugin, alert(f"divergence at step {plugin.step} after the {self.cfg.max_attempts} "
                                       f"rollback(s) allowed ({reason}): {dropped} and stopped training"))
            self._stop(trainer, plugin, reason, f"the {self.cfg.max_attempts} rollback(s) allowed (monitor.rollback."
                       f"max_attempts) are used up; last.pt, written now, holds the state of step {good.step}")
            return
        self.attempts += 1
        self.epoch_factor *= self.cfg.lr_factor
        self._report(plugin, alert(f"rollback {self.attempts}/{self.cfg.max_attempts} at step {plugin.step} "
                                   f"({reason}): {dropped}, lr x{self.lr_factor:g} for the rest of the epoch"))

    # ------------------------------------------------------------------ validations
    def before_training(self, trainer, plugin) -> None:
        """A fine-tune's starting weights are a state to return to (``validate_start``): keep them, to be
        validated with the first epoch (Ultralytics' validator needs a trained batch's loss items)."""
        if self.cfg.fitness_drop is not None and self.cfg.validate_start and _started_from_weights(trainer):
            self._capture(trainer, plugin, self.start)

    def _validate_start(self, trainer, plugin) -> None:
        """Validate the kept starting weights in place of the current ones (on every rank: the validator's
        collectives), then put the current ones back; the start becomes the best state when it validates
        finite. The loss scale, the random generators and the plots are left as they were."""
        scaler = trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None  # _restore keeps the lower
        self._capture(trainer, plugin, self.best)  # the current state, in the still unused best buffers
        self._restore(trainer, plugin, self.start)
        plots, trainer.validator.args.plots = trainer.validator.args.plots, False
        try:
            with _rng_kept():  # measured: without it, a guarded run's weights differ from an unguarded one's
                metrics = dict(trainer.validator(trainer) or {})  # {} on ranks > 0
        finally:
            trainer.validator.args.plots = plots
        self._restore(trainer, plugin, self.best)
        if scaler is not None:
            trainer.scaler.load_state_dict(scaler)
        fitness = _from_main(float(metrics.pop("fitness", float("nan"))))
        _logger().info(f"gradkit rollback: the starting weights validate at fitness {fitness:.4g}")
        if math.isfinite(fitness):
            self.best, self.start = self.start, self.best
            self.best_fitness, self.best_epoch, self.best_metrics = fitness, 0, metrics
        self.start = StateSnapshot(self.best.device)  # frees the copy that is not the best state

    def _keep_if_best(self, trainer, plugin, fitness: float) -> None:
        if math.isfinite(fitness) and (self.best_fitness is None or fitness > self.best_fitness):
            self._capture(trainer, plugin, self.best)
            self.best_fitness, self.best_epoch = fitness, trainer.epoch + 1
            self.best_metrics = dict(trainer.metrics or {})  # None on ranks > 0

    def after_validation(self, trainer, plugin) -> None:
        """After an epoch's validation: keep the best state, or return to it when the fitness collapsed."""
        if self.cfg.fitness_drop is None:
            return
        fitness = _from_main(None if trainer.fitness is None else float(trainer.fitness))
        if fitness is None:
            return
        if self.start.step is not None:
            self._validate_start(trainer, plugin)
        reason = fitness_collapse_reason(fitness, self.best_fitness, self.cfg.fitness_drop)
        if reason is None:
            self._keep_if_best(trainer, plugin, fitness)
        else:
            self._return_to_best(trainer, plugin, fitness, reason)

    def _return_to_best(self, trainer, plugin, fitness: float, reason: str) -> None:
        self._restore(trainer, plugin, self.best)
        self.snapshots.clear()  # taken in the epochs that led to the collapse
        self.watch.clear()
        self.fitness_rollbacks += 1
        where = "the starting weights" if self.best_epoch == 0 else f"the state after epoch {self.best_epoch}"
        restored = f"restored {where} (step {self.best.step}, fitness {self.best_fitness:.4g})"
        epoch = trainer.epoch + 1
        if plugin.stop_requested:  # a step trigger already stopped training in this epoch
            message = f"collapse after epoch {epoch} ({reason}), training stopping: {restored}"
        elif self.attempts >= self.cfg.max_attempts:
            message = (f"collapse after epoch {epoch} after the {self.cfg.max_attempts} rollback(s) allowed "
                       f"({reason}): {restored} and stopped training")
            _logger().error(f"gradkit: stopping training after epoch {epoch}: {reason}, and the "
                            f"{self.cfg.max_attempts} rollback(s) allowed are used up; last.pt holds {where}")
            plugin.request_stop(trainer)
        else:
            self.attempts += 1
            self.run_factor *= self.cfg.lr_factor
            message = (f"rollback {self.attempts}/{self.cfg.max_attempts} after epoch {epoch} ({reason}): "
                       f"{restored}, lr x{self.lr_factor:g} for the rest of the run")
        self._report(plugin, RollbackAlert("rollback", epoch, plugin.step, "total", "model", fitness,
                                           self.cfg.fitness_drop * float(self.best_fitness), message, plugin.step,
                                           self.best.step, self.lr_factor, reason), next_row=True)
        self._write_restored(trainer, plugin)

    def _write_restored(self, trainer, plugin) -> None:
        """The trainer describes the restored state from now on (its fitness and metrics: the next epochs
        and the final evaluation compare against them), and last.pt, already written for the collapsed
        epoch, is written again; so is best.pt when the restored state beats Ultralytics' best."""
        trainer.fitness, trainer.metrics = self.best_fitness, dict(self.best_metrics)
        if trainer.best_fitness is None or self.best_fitness > trainer.best_fitness:
            trainer.best_fitness = self.best_fitness  # a fine-tune's start, which Ultralytics never validates
        final_epoch = trainer.epoch + 1 >= trainer.epochs
        if _is_main() and (trainer.args.save or final_epoch) and trainer.save_model():  # Ultralytics' condition
            trainer.run_callbacks("on_model_save")  # gradkit's state file, and integrations that upload

    @staticmethod
    def _stop(trainer, plugin, reason: str, why: str) -> None:
        _logger().error(f"gradkit: stopping training at optimizer step {plugin.step}: the run diverged ({reason}) and "
                        f"{why}; see gradient_alerts.jsonl.")
        plugin.request_stop(trainer)

    @staticmethod
    def _report(plugin, alert: RollbackAlert, next_row: bool = False) -> None:
        """Count, log and record an alert; ``next_row``: after this epoch's results.csv row was written."""
        plugin.alert_count += 1
        if next_row:
            plugin.carried_alerts += 1
        else:
            plugin._epoch_alerts += 1
        _logger().warning(f"gradkit rollback: {alert.message}")
        if plugin.log:
            plugin.log.add_alerts([alert])
