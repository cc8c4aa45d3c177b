"""``monitor.on_divergence: rollback`` inside an Ultralytics run: what a snapshot holds, when to restore.

A snapshot holds the live model's state dict (weights and BatchNorm statistics), the EMA model's
and its update count, the optimizer's per-parameter state (momentum, Adam moments; the param
groups' lr and momentum are the trainer's schedule and stay as they are), the GradScaler (whose
scale a rollback never raises) and the plugin's own clip and alert state. It lives in memory only;
``resume=True`` carries the rollback count and the lr factor, and the first snapshot after a resume
is taken at its first step.
"""

from __future__ import annotations

from typing import Any

import torch

from gradkit.config import RollbackConfig
from gradkit.monitor.rollback import (
    DivergenceWatch,
    RollbackAlert,
    SnapshotPair,
    divergence_reason,
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


class RollbackGuard:
    """Snapshots every K steps; on divergence restores the last known-good one and lowers the lr."""

    def __init__(self, cfg: RollbackConfig):
        self.cfg = cfg
        self.snapshots = SnapshotPair(cfg.every, "cpu" if cfg.device == "cpu" else None)
        self.watch = DivergenceWatch(cfg.history)
        self.attempts = 0
        self.lr_factor = 1.0
        self.epoch_rollbacks = 0

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"attempts": self.attempts, "lr_factor": self.lr_factor, "epoch_rollbacks": self.epoch_rollbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.attempts = int(state["attempts"])
        self.lr_factor = float(state["lr_factor"])
        self.epoch_rollbacks = int(state["epoch_rollbacks"])

    # ------------------------------------------------------------------ epochs
    def epoch_start(self) -> None:
        self.epoch_rollbacks = 0

    def epoch_end(self) -> dict[str, float]:
        """The epoch's columns for results.csv; an epoch without rollback lifts the lr factor."""
        columns = {"grad/rollbacks": float(self.epoch_rollbacks), "grad/lr_factor": self.lr_factor}
        if self.epoch_rollbacks == 0:
            self.lr_factor = 1.0
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

    def after_step(self, trainer, plugin, total_norm: float, finite: bool, alert_kinds: list[str]) -> None:
        """After every optimizer step: roll back on divergence, else observe and maybe snapshot."""
        loss = _loss(trainer)
        norm_median, loss_median = self.watch.medians()
        reason = divergence_reason(consecutive_nonfinite=plugin.consecutive_nonfinite,
                                   nonfinite_patience=self.cfg.nonfinite_patience, total_norm=total_norm,
                                   norm_median=norm_median, norm_spike=self.cfg.norm_spike, loss=loss,
                                   loss_median=loss_median, loss_spike=self.cfg.loss_spike, alert_kinds=alert_kinds)
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
        self.lr_factor *= self.cfg.lr_factor
        self._report(plugin, alert(f"rollback {self.attempts}/{self.cfg.max_attempts} at step {plugin.step} "
                                   f"({reason}): {dropped}, lr x{self.lr_factor:g} for the rest of the epoch"))

    @staticmethod
    def _stop(trainer, plugin, reason: str, why: str) -> None:
        _logger().error(f"gradkit: stopping training at optimizer step {plugin.step}: the run diverged ({reason}) and "
                        f"{why}; see gradient_alerts.jsonl.")
        plugin.request_stop(trainer)

    @staticmethod
    def _report(plugin, alert: RollbackAlert) -> None:
        plugin.alert_count += 1
        plugin._epoch_alerts += 1
        _logger().warning(f"gradkit rollback: {alert.message}")
        if plugin.log:
            plugin.log.add_alerts([alert])
