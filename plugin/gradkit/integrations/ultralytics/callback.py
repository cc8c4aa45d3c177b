"""The plugin inside an Ultralytics training run: callbacks, the replacement optimizer step, attach."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradkit.clip import Clipper, layer_of, make_clipper
from gradkit.config import GradkitConfig, load_config
from gradkit.integrations.ultralytics.augment import install_augmentation
from gradkit.integrations.ultralytics.validation import validate_for_report
from gradkit.integrations.ultralytics.version import STATE_SUFFIX, check_ultralytics_version
from gradkit.monitor import AlertDetector, GradientLog, LayerStats, plot_heatmap

__all__ = ["DatasetError", "GradkitCallback", "attach", "check_before_training", "layer_labels"]


def _rank() -> int:
    return int(os.getenv("RANK", -1))


def _is_main() -> bool:
    return _rank() in {-1, 0}


def _logger():
    from ultralytics.utils import LOGGER

    return LOGGER


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from ultralytics.utils.torch_utils import unwrap_model

    return unwrap_model(model)


def layer_labels(model: torch.nn.Module) -> dict[str, str]:
    layers = getattr(model, "model", None)
    if isinstance(layers, torch.nn.Sequential | torch.nn.ModuleList):
        return {str(i): f"{i} {type(m).__name__}" for i, m in enumerate(layers)}
    return {}


class GradkitCallback:
    """The plugin inside one Ultralytics run. Its bound methods are the callbacks.

    Holding all run state on one picklable object keeps it intact through Ultralytics' callback
    copies and its DDP (cloudpickle) path. It never writes into ``trainer.args``.
    """

    def __init__(self, cfg: GradkitConfig):
        self.cfg = cfg
        self._reset()

    # ------------------------------------------------------------------ registration
    def events(self) -> dict[str, Any]:
        """Ultralytics event -> callback."""
        return {
            "on_pretrain_routine_start": self.on_pretrain_routine_start,
            "on_pretrain_routine_end": self.on_pretrain_routine_end,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_model_save": self.on_model_save,
            "on_train_end": self.on_train_end,
        }

    def _reset(self) -> None:
        self.step = 0
        self.consecutive_nonfinite = 0
        self.clipper: Clipper | None = None
        self.stats: LayerStats | None = None
        self.detector: AlertDetector | None = None
        self.log: GradientLog | None = None
        self.alert_count = 0
        self._epoch_totals: list[float] = []
        self._epoch_clipped = 0
        self._epoch_skipped = 0
        self._epoch_alerts = 0
        self.save_dir: Path | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Only the configuration travels (DDP pickles callbacks before training starts).
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cfg = state["cfg"]
        self._reset()

    # ------------------------------------------------------------------ state for resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "alert_count": self.alert_count,
            "clip": self.clipper.state_dict() if self.clipper else None,
            "alerts": self.detector.state_dict() if self.detector else None,
            "config": self.cfg.model_dump(mode="json"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.consecutive_nonfinite = int(state["consecutive_nonfinite"])
        self.alert_count = int(state.get("alert_count", 0))
        if self.clipper and state.get("clip"):
            self.clipper.load_state_dict(state["clip"])
        if self.detector and state.get("alerts"):
            self.detector.load_state_dict(state["alerts"])

    # ------------------------------------------------------------------ events
    def on_pretrain_routine_start(self, trainer) -> None:
        """Before Ultralytics reads the dataset (rank 0): the fast dataset check."""
        from gradkit.integrations.ultralytics.datasets import install_dataset_guard, resolve_dataset

        dcfg, data = self.cfg.data, str(trainer.args.data)
        install_dataset_guard(dcfg.allow_download)  # this run's choice, before get_dataset
        splits = (self.cfg.report.split,) if self.cfg.report.enabled else ()  # the report's split, found now
        if dcfg.check and not getattr(trainer.args, "resume", False):
            check_before_training(data, splits)
        elif not dcfg.allow_download and data.endswith((".yaml", ".yml")):
            resolve_dataset(data, required=("train", *splits))

    def on_pretrain_routine_end(self, trainer) -> None:
        """Set up after the optimizer, scaler and EMA exist (every rank), then take over the step."""
        self._reset()
        model = _unwrap(trainer.model)
        self.save_dir = Path(trainer.save_dir)
        resuming = bool(getattr(trainer, "resume", False))
        state = self._resume_state(trainer) if resuming else None
        if state and state.get("config") and state["config"] != self.cfg.model_dump(mode="json"):
            # like Ultralytics' own args on resume: the run continues with the configuration it started with
            _logger().warning("gradkit: resuming with the checkpoint's gradkit configuration (augmentation, "
                              "clipping and monitoring as the run started); start a new run to change it")
            self.cfg = GradkitConfig.model_validate(state["config"])
        self.stats = LayerStats(model.named_parameters(), layer_of, layer_labels(model))
        self.clipper = make_clipper(self.cfg.clip.mode, **self.cfg.clip.params())
        self.detector = AlertDetector(self.stats.labels, self.cfg.monitor.alerts)
        if state:
            self.load_state_dict(state)
        if _is_main():
            (self.save_dir / "gradkit.yaml").write_text(self.cfg.to_yaml())
            if self.cfg.monitor.enabled:
                self.log = GradientLog(self.save_dir, append=resuming, flush_every=self.cfg.monitor.flush_every)
            _logger().info(
                f"gradkit: clip={self.cfg.clip.mode} {self.cfg.clip.params() or ''} monitor="
                f"{'every ' + str(self.cfg.monitor.every) + ' step(s)' if self.cfg.monitor.enabled else 'off'} "
                f"on_nonfinite={self.cfg.monitor.on_nonfinite}, {self.stats.num_layers} layers"
            )
        trainer.optimizer_step = lambda: self.optimizer_step(trainer)
        self._install_augmentation(trainer)

    def _install_augmentation(self, trainer) -> None:
        if self.cfg.augment.active:
            install_augmentation(trainer.train_loader.dataset, self.cfg.augment, trainer.args)

    def on_train_epoch_start(self, trainer) -> None:
        self._install_augmentation(trainer)  # no-op unless an OOM retry rebuilt the dataset
        self._epoch_totals, self._epoch_clipped, self._epoch_skipped, self._epoch_alerts = [], 0, 0, 0

    def on_train_epoch_end(self, trainer) -> None:
        """Flush the records and put the epoch summary where Ultralytics' loggers look.

        ``trainer.lr`` is the dict that Ultralytics passes to ``results.csv`` and to TensorBoard and
        the other loggers at this point, so extra keys reach all of them.
        """
        if self.log:
            self.log.flush()
        n = max(len(self._epoch_totals), 1)
        finite = [t for t in self._epoch_totals if np.isfinite(t)]
        trainer.lr.update({
            "grad/total_norm": float(np.median(finite)) if finite else float("nan"),
            "grad/clip_rate": self._epoch_clipped / n,
            "grad/skipped": float(self._epoch_skipped),
            "grad/alerts": float(self._epoch_alerts),
        })

    def on_model_save(self, trainer) -> None:
        """Save the plugin state beside ``last.pt`` so ``resume=True`` continues it exactly."""
        torch.save(self.state_dict(), Path(trainer.last).with_name(Path(trainer.last).stem + STATE_SUFFIX))

    def on_train_end(self, trainer) -> None:
        if self.log:
            self.log.flush()
            if self.cfg.monitor.plot:
                plot_heatmap(self.save_dir)
        if _is_main():
            summary = {
                "metrics": {k: float(v) for k, v in (trainer.metrics or {}).items()},
                "optimizer_steps": self.step,
                "alerts": self.alert_count,
                "clip_mode": self.cfg.clip.mode,
            }
            (self.save_dir / "gradkit_summary.json").write_text(json.dumps(summary, indent=2))
            if self.cfg.report.enabled:
                self._write_report(trainer)
        _logger().info(f"gradkit: {self.step} optimizer steps, {self.alert_count} gradient alert(s); "
                       f"records in {self.save_dir}")

    def _write_report(self, trainer) -> None:
        from gradkit.report import build_report, write_report

        rcfg = self.cfg.report
        weights = trainer.best if Path(trainer.best).exists() else trainer.last
        ev = validate_for_report(weights, str(trainer.args.data), rcfg.split, self.save_dir / "report_val",
                                 imgsz=trainer.args.imgsz, batch=trainer.args.batch, device=trainer.args.device,
                                 conf=0.001, verbose=False)
        ev.conf_threshold = rcfg.conf
        report = build_report(ev, run_dir=self.save_dir, plugin_config=self.cfg.model_dump(mode="json"),
                              gallery_size=rcfg.gallery)
        paths = write_report(report, self.save_dir)
        _logger().info(f"gradkit: report {paths['html']}")

    # ------------------------------------------------------------------ resume
    def _resume_state(self, trainer) -> dict[str, Any] | None:
        ckpt = Path(str(trainer.args.resume if isinstance(trainer.args.resume, str) else trainer.last))
        path = ckpt.with_name(ckpt.stem + STATE_SUFFIX)
        if not path.exists():
            _logger().warning(f"gradkit: resuming without {path}; clipping history and step count start afresh")
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    # ------------------------------------------------------------------ the optimizer step
    def optimizer_step(self, trainer) -> None:
        """Ultralytics' optimizer step with gradkit's measurement, clipping and non-finite policy."""
        mcfg = self.cfg.monitor
        scaler, optimizer = trainer.scaler, trainer.optimizer
        scaler.unscale_(optimizer)
        self.step += 1
        epoch = trainer.epoch + 1
        monitored = mcfg.enabled and self.step % mcfg.every == 0

        weight = self.stats.weight_norms() if monitored else None
        before = self.stats.snapshot() if monitored else None
        result = self.clipper(self.stats.named)
        totals = torch.stack([result.total_norm, result.total_norm_clipped, result.clip_coef]).float().cpu()
        total, total_clipped, coef = (float(v) for v in totals)
        finite = bool(np.isfinite(total))
        self.consecutive_nonfinite = 0 if finite else self.consecutive_nonfinite + 1
        skip = not finite and mcfg.on_nonfinite in {"skip", "stop"}

        stats = None
        if monitored or not finite:
            stats = self.stats.measure(result, weight if weight is not None else self.stats.weight_norms(), finite)

        if skip:
            scaler.update()  # lowers the AMP scale after an overflow; no-op when the scaler is disabled
            optimizer.zero_grad()
        else:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            if trainer.ema:
                trainer.ema.update(trainer.model)

        update_ratio = None
        if monitored and not skip:
            update_ratio = self.stats.update_norms(before) / weight.clamp(min=1e-12)

        self._epoch_totals.append(total)
        self._epoch_clipped += int(finite and coef < 1 - 1e-6)
        self._epoch_skipped += int(skip)
        if stats is not None:
            self._diagnose(trainer, epoch, stats)
            if self.log and monitored:
                self.log.add_layers(epoch, self.step, self.stats.labels, stats.grad_norm,
                                    stats.grad_norm_clipped, stats.weight_norm, stats.nonfinite,
                                    update_ratio if update_ratio is not None
                                    else torch.zeros(self.stats.num_layers))
        if self.log and monitored:
            self.log.add_step(epoch, self.step, total, total_clipped, coef, skip)
            self.log.maybe_flush()
        if not finite:
            self._nonfinite_policy(trainer)

    def _diagnose(self, trainer, epoch: int, stats) -> None:
        amp_overflow = trainer.scaler.is_enabled() and not stats.finite and self.consecutive_nonfinite < 2
        if amp_overflow:
            return  # GradScaler's own overflow handling; a real NaN persists past the scale reduction
        loss = getattr(trainer, "loss", None)
        loss_finite = True if stats.finite or loss is None else bool(torch.isfinite(loss).all())
        alerts = self.detector.update(epoch, self.step, stats.grad_norm, stats.weight_norm, stats.total_norm,
                                      stats.nonfinite, loss_finite)
        if not alerts:
            return
        self.alert_count += len(alerts)
        self._epoch_alerts += len(alerts)
        if _is_main():
            for a in alerts:
                _logger().warning(f"gradkit {a.kind}: {a.message}")
            if self.log:
                self.log.add_alerts(alerts)

    def _nonfinite_policy(self, trainer) -> None:
        policy = self.cfg.monitor.on_nonfinite
        limit = self.cfg.monitor.max_consecutive_nonfinite
        if policy == "stop" or (policy == "skip" and self.consecutive_nonfinite >= limit):
            why = ("monitor.on_nonfinite=stop" if policy == "stop"
                   else f"{self.consecutive_nonfinite} consecutive non-finite steps "
                        f"(monitor.max_consecutive_nonfinite={limit})")
            _logger().error(
                f"gradkit: stopping training at optimizer step {self.step}: {why}. The skipped updates "
                "left the weights finite; last.pt is written at the end of this epoch. See "
                "gradient_alerts.jsonl for the layer where it started."
            )
            trainer.stop = True


class DatasetError(RuntimeError):
    """The dataset check found errors before training."""


def check_before_training(data: str, splits: tuple[str, ...] = ()) -> None:
    """Run the fast part of ``gradkit check`` (labels, pairing, unreadable and truncated images); raise on
    errors. ``splits``: further splits that must exist (the end-of-training report's)."""
    from gradkit.data.check import check_dataset
    from gradkit.integrations.ultralytics.datasets import resolve_dataset

    if not data or not str(data).endswith((".yaml", ".yml")):
        return  # not a YOLO dataset YAML (classification folders, hub names): nothing to check here
    resolved = resolve_dataset(str(data), required=("train", *splits))  # as Ultralytics, never downloading
    yaml_file = Path(resolved.get("yaml_file") or data)
    result = check_dataset(yaml_file, images=False)
    if result.errors:
        listing = "\n".join(str(f) for f in result.errors[:50])
        more = f"\n... and {len(result.errors) - 50} more" if len(result.errors) > 50 else ""
        raise DatasetError(f"gradkit: {len(result.errors)} dataset error(s) in {yaml_file}; Ultralytics would drop "
                           f"these silently. Fix them ('gradkit check data={data} --fix') or set "
                           f"gradkit.data.check=false to accept the dropping:\n{listing}{more}")


def attach(model, cfg: str | Path | dict | GradkitConfig | None = None,
           overrides: dict[str, Any] | None = None) -> GradkitConfig:
    """Activate gradkit on an ``ultralytics.YOLO`` model; ``model.train(...)`` then runs with it.

    Args:
        model: An ``ultralytics.YOLO`` (or any object with ``add_callback``).
        cfg: Config path, preset name, dict or :class:`GradkitConfig` (default preset if None).
        overrides: Dotted keys on top of ``cfg``, e.g. ``{"clip.mode": "agc"}``.

    Returns:
        The resolved, validated configuration.
    """
    check_ultralytics_version()
    resolved = load_config(cfg, overrides)
    from gradkit.integrations.ultralytics.datasets import install_dataset_guard

    install_dataset_guard(resolved.data.allow_download)
    plugin = GradkitCallback(resolved)
    for event, fn in plugin.events().items():
        model.add_callback(event, fn)
    model.gradkit = plugin  # so users and tests can reach the run state after training
    return resolved


