"""The only module that touches Ultralytics internals.

Everything version-sensitive lives here: the callback events we use, the replacement of
``BaseTrainer.optimizer_step`` (Ultralytics fires no event between backward and the optimizer step
and hard-codes ``clip_grad_norm_(max_norm=10)``), the run directory layout and the checkpoint
side-car. :func:`check_ultralytics_version` fails loudly outside the tested range, so an upgrade
breaks here and nowhere else.

The replacement step keeps Ultralytics' order exactly: one ``scaler.unscale_`` -> (measure, clip)
-> ``scaler.step`` -> ``scaler.update`` -> ``optimizer.zero_grad`` -> ``ema.update``. Gradients
are already all-reduced by DDP at this point, so every rank takes the same decisions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradkit.augment.copy_paste import paste_defects
from gradkit.clip import Clipper, layer_of, make_clipper
from gradkit.config import GradkitConfig, load_config
from gradkit.monitor import AlertDetector, GradientLog, LayerStats, plot_heatmap
from gradkit.report.data import EvalData

__all__ = [
    "SUPPORTED_ULTRALYTICS",
    "GradkitCallback",
    "attach",
    "check_ultralytics_version",
    "DatasetError",
    "check_before_training",
    "collect_validation",
    "install_augmentation",
    "validate_for_report",
]

#: The Ultralytics versions this module was written against and tested with.
SUPPORTED_ULTRALYTICS = ((8, 4, 190), (8, 5, 0))  # [min, max)
STATE_SUFFIX = ".gradkit.pt"


def check_ultralytics_version(version: str | None = None) -> str:
    """Raise if the installed Ultralytics is outside the tested range; return its version."""
    if version is None:
        import ultralytics

        version = ultralytics.__version__
    try:
        parts = tuple(int(p) for p in version.split("+")[0].split(".")[:3])
    except ValueError as exc:
        raise RuntimeError(f"cannot parse the Ultralytics version {version!r}") from exc
    lo, hi = SUPPORTED_ULTRALYTICS
    if not lo <= parts < hi:
        raise RuntimeError(
            f"yolo-gradkit supports ultralytics>={'.'.join(map(str, lo))},<{'.'.join(map(str, hi))}, "
            f"found {version}: gradkit replaces BaseTrainer.optimizer_step and must be re-checked "
            "against a new trainer before use"
        )
    return version


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


def _layer_labels(model: torch.nn.Module) -> dict[str, str]:
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
        if self.cfg.data.check and not getattr(trainer.args, "resume", False):
            check_before_training(trainer.args.data)

    def on_pretrain_routine_end(self, trainer) -> None:
        """Set up after the optimizer, scaler and EMA exist (every rank), then take over the step."""
        self._reset()
        model = _unwrap(trainer.model)
        self.save_dir = Path(trainer.save_dir)
        self.stats = LayerStats(model.named_parameters(), layer_of, _layer_labels(model))
        self.clipper = make_clipper(self.cfg.clip.mode, **self.cfg.clip.params())
        self.detector = AlertDetector(self.stats.labels, self.cfg.monitor.alerts)
        resuming = bool(getattr(trainer, "resume", False))
        if resuming:
            self._load_resume_state(trainer)
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
    def _load_resume_state(self, trainer) -> None:
        ckpt = Path(str(trainer.args.resume if isinstance(trainer.args.resume, str) else trainer.last))
        path = ckpt.with_name(ckpt.stem + STATE_SUFFIX)
        if not path.exists():
            _logger().warning(f"gradkit: resuming without {path}; clipping history and step count start afresh")
            return
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.load_state_dict(state)

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
            stats = self.stats.measure(result, weight if weight is not None else self.stats.weight_norms())

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


def check_before_training(data: str) -> None:
    """Run the fast part of ``gradkit check`` (labels and pairing, no image decoding); raise on errors."""
    from ultralytics.data.utils import check_det_dataset

    from gradkit.data.check import check_dataset

    if not data or not str(data).endswith((".yaml", ".yml")):
        return  # not a YOLO dataset YAML (classification folders, hub names): nothing to check here
    resolved = check_det_dataset(str(data), autodownload=False)  # resolves the YAML as Ultralytics does
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
    plugin = GradkitCallback(resolved)
    for event, fn in plugin.events().items():
        model.add_callback(event, fn)
    model.gradkit = plugin  # so users and tests can reach the run state after training
    return resolved


# ---------------------------------------------------------------------- evaluation data for reports
def collect_validation(validator) -> EvalData:
    """Copy what a report needs out of a finished ``DetectionValidator`` (call at ``on_val_end``).

    Uses the validator's own metrics (never re-computed), its ``jdict`` predictions (requires
    ``save_json=True``) and its dataset's labels as ground truth.
    """
    from gradkit.report.coco import Box

    dataset = validator.dataloader.dataset
    metrics = validator.metrics
    box = metrics.box
    images, files, sizes, gts = [], {}, {}, []
    by_name: dict[str, int] = {}
    from PIL import Image

    for i, lab in enumerate(dataset.labels):
        if "shape" in lab:  # rectangular validation pops it
            h, w = (int(v) for v in lab["shape"])
        else:
            with Image.open(lab["im_file"]) as im:  # reads the header only
                w, h = im.size
        images.append(i)
        files[i] = lab["im_file"]
        sizes[i] = (w, h)
        by_name[Path(lab["im_file"]).name] = i
        for c, (x, y, bw, bh) in zip(lab["cls"].reshape(-1).tolist(), lab["bboxes"].tolist(), strict=True):
            gts.append(Box(i, int(c), x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2))
    inv_map = {v: k for k, v in enumerate(validator.class_map)}
    preds = []
    for d in validator.jdict or []:
        i = by_name[d["file_name"]]
        w, h = sizes[i]
        x, y, bw, bh = d["bbox"]
        preds.append(Box(i, inv_map[d["category_id"]], x / w, y / h, (x + bw) / w, (y + bh) / h, float(d["score"])))
    per_class = {}
    for k, c in enumerate(box.ap_class_index):
        p, r, ap50, ap = box.class_result(k)
        per_class[int(c)] = {"precision": float(p), "recall": float(r), "AP50": float(ap50), "AP50-95": float(ap)}
    nt_class = metrics.nt_per_class if metrics.nt_per_class is not None else np.zeros(len(validator.names))
    nt_image = metrics.nt_per_image if metrics.nt_per_image is not None else np.zeros(len(validator.names))
    cm = getattr(validator, "confusion_matrix", None)
    save_dir = Path(validator.save_dir)
    plots = {name: str(save_dir / f"Box{name}_curve.png") for name in ("PR", "F1", "P", "R")
             if (save_dir / f"Box{name}_curve.png").exists()}
    if (save_dir / "confusion_matrix_normalized.png").exists():
        plots["confusion"] = str(save_dir / "confusion_matrix_normalized.png")
    return EvalData(
        names={int(k): str(v) for k, v in validator.names.items()},
        split=str(validator.args.split),
        data=str(validator.args.data),
        model=str(validator.args.model),
        images=images,
        files=files,
        sizes=sizes,
        gts=gts,
        preds=preds,
        headline={"precision": float(box.mp), "recall": float(box.mr), "mAP50": float(box.map50),
                  "mAP50-95": float(box.map)},
        per_class=per_class,
        instances={i: int(n) for i, n in enumerate(nt_class)},
        image_counts={i: int(n) for i, n in enumerate(nt_image)},
        confusion_matrix=cm.matrix.tolist() if cm is not None and cm.matrix.sum() > 0 else None,
        plots=plots,
        extra={"speed_ms": {k: float(v) for k, v in validator.speed.items()}},
    )


def validate_for_report(weights: str | Path, data: str, split: str, save_dir: Path, **val_args) -> EvalData:
    """Run Ultralytics validation of ``weights`` with what a report needs, and collect it."""
    from ultralytics import YOLO

    captured: dict[str, EvalData] = {}
    model = YOLO(str(weights))
    model.add_callback("on_val_end", lambda v: captured.__setitem__("data", collect_validation(v)))
    model.val(data=data, split=split, save_json=True, plots=True, project=str(save_dir.parent),
              name=save_dir.name, exist_ok=True, **val_args)
    return captured["data"]


# ---------------------------------------------------------------------- augmentation in the dataset pipeline
class AlbumentationsStage:
    """Replaces Ultralytics' ``Albumentations`` stage: gradkit's validated pipeline with box filtering.

    Unlike the stock stage, a sample whose boxes were all removed by a crop becomes a clean
    background sample (transformed image, no labels) instead of keeping stale labels.
    """

    def __init__(self, aug_cfg):
        from gradkit.augment.pipeline import build_compose

        self.compose = build_compose(aug_cfg)

    def __call__(self, labels: dict) -> dict:
        if self.compose is None:
            return labels
        import torch as _torch

        if self.compose.seed != _torch.initial_seed():  # each dataloader worker its own stream
            self.compose.set_random_seed(_torch.initial_seed())
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        if len(inst.segments):
            raise ValueError("gradkit augmentation handles box labels only; this dataset has segments")
        inst.convert_bbox("xywh")
        inst.normalize(w, h)
        boxes = np.clip(inst.bboxes, 0.0, 1.0) if len(inst.bboxes) else np.zeros((0, 4), np.float32)
        out = self.compose(image=img, bboxes=boxes, class_labels=labels["cls"].reshape(-1))
        new_boxes = np.array(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels["img"] = out["image"]
        labels["cls"] = np.array(out["class_labels"], dtype=np.float32).reshape(-1, 1)
        labels["instances"] = Instances(new_boxes, segments=inst.segments[:0], bbox_format="xywh", normalized=True)
        return labels


class CopyPasteStage:
    """Ultralytics labels-dict adapter of :func:`gradkit.augment.paste_defects`."""

    def __init__(self, dataset, cp_cfg):
        import random

        from gradkit.augment.copy_paste import DefectBank

        self.p, self.cfg = cp_cfg.p, cp_cfg
        self.imgsz = dataset.imgsz
        boxes, classes = [], []
        for lab in dataset.labels:
            b = np.asarray(lab["bboxes"], dtype=np.float32).reshape(-1, 4)
            boxes.append(np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1))
            classes.append(np.asarray(lab["cls"]).reshape(-1))
        files = [lab["im_file"] for lab in dataset.labels]
        self.files = files
        self.bank = DefectBank(boxes, classes, self._load, len(dataset.data["names"]), cp_cfg.class_weights,
                               cp_cfg.rare_first)
        self.rng = random  # Ultralytics seeds Python's RNG per worker

    def _load(self, i: int) -> np.ndarray:
        import cv2

        img = cv2.imread(self.files[i])
        if img is None:
            raise FileNotFoundError(f"copy-paste source image not readable: {self.files[i]}")
        return img

    def __call__(self, labels: dict) -> dict:
        if self.p <= 0 or self.rng.random() >= self.p:
            return labels
        from ultralytics.utils.instance import Instances

        img = labels["img"]
        h, w = img.shape[:2]
        inst = labels["instances"]
        inst.convert_bbox("xyxy")
        inst.denormalize(w, h)
        src_scale = self.imgsz / max(labels.get("ori_shape", (self.imgsz, self.imgsz)))
        new_img, boxes, cls = paste_defects(img, inst.bboxes, labels["cls"].reshape(-1), self.bank, self.rng,
                                            self.cfg.max_per_image, self.cfg.margin, scale=src_scale)
        labels["img"] = new_img
        labels["cls"] = cls.astype(np.float32).reshape(-1, 1)
        labels["instances"] = Instances(boxes, segments=inst.segments[:0], bbox_format="xyxy", normalized=False)
        return labels


def _apply_hyp(hyp, overrides: dict[str, float]):
    """A copy of the dataset hyp with the config's values, where the user did not set the key."""
    from copy import copy

    from ultralytics.cfg import DEFAULT_CFG_DICT

    hyp = copy(hyp)
    for k, v in overrides.items():
        if getattr(hyp, k, None) == DEFAULT_CFG_DICT.get(k):
            setattr(hyp, k, v)
    return hyp


def install_augmentation(dataset, aug_cfg, hyp) -> None:
    """Make the dataset build gradkit's stages on every (re)build of its transforms.

    Ultralytics rebuilds transforms at ``close_mosaic`` and rebuilds the whole dataset after an OOM
    retry; patching ``build_transforms`` on the instance covers the first, calling this again on
    the new dataset (idempotent) covers the second.
    """
    from copy import copy

    from ultralytics.data.augment import Albumentations

    if getattr(dataset, "_gradkit_augment", None) is aug_cfg:
        return
    original = dataset.build_transforms
    stage = AlbumentationsStage(aug_cfg)
    paste = CopyPasteStage(dataset, aug_cfg.copy_paste) if aug_cfg.copy_paste.p > 0 else None
    replace_stock = aug_cfg.preset != "none" or bool(aug_cfg.transforms)

    def build_transforms(hyp=None):
        compose = original(_apply_hyp(hyp, aug_cfg.ultralytics) if hyp is not None else hyp)
        stages = compose.transforms
        idx = next((i for i, t in enumerate(stages) if isinstance(t, Albumentations | AlbumentationsStage)), None)
        if idx is None:  # validation-style pipeline (augment=False): nothing to do
            return compose
        if replace_stock:
            stages[idx] = stage
        if paste is not None:
            stages.insert(idx, paste)
        return compose

    dataset.build_transforms = build_transforms
    dataset.transforms = build_transforms(copy(hyp))
    dataset._gradkit_augment = aug_cfg


def preview_augmentation(data_yaml: str, cfg: GradkitConfig, n: int = 16, out: str | Path = "preview.jpg",
                         imgsz: int = 640, seed: int = 0) -> Path:
    """A grid of ``n`` training samples with boxes, from exactly the pipeline training builds."""
    import math
    import random

    import cv2
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    check_ultralytics_version()
    data = check_det_dataset(data_yaml)
    args = get_cfg(overrides={"imgsz": imgsz, "data": data_yaml, "mode": "train", "seed": seed})
    dataset = build_yolo_dataset(args, data["train"], 16, data, mode="train")
    if cfg.augment.active:
        install_augmentation(dataset, cfg.augment, args)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tiles = []
    names = data["names"]
    for i in random.sample(range(len(dataset)), min(n, len(dataset))):
        item = dataset[i]
        img = np.ascontiguousarray(item["img"].numpy().transpose(1, 2, 0)[..., ::-1])  # RGB CHW -> BGR HWC
        h, w = img.shape[:2]
        for c, (x, y, bw, bh) in zip(item["cls"].reshape(-1).tolist(), item["bboxes"].tolist(), strict=True):
            p0 = (round((x - bw / 2) * w), round((y - bh / 2) * h))
            p1 = (round((x + bw / 2) * w), round((y + bh / 2) * h))
            cv2.rectangle(img, p0, p1, (0, 0, 255), 1)
            cv2.putText(img, str(names[int(c)]), (p0[0], max(8, p0[1] - 2)), cv2.FONT_HERSHEY_PLAIN, 0.8,
                        (0, 0, 255), 1)
        tiles.append(img)
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    th, tw = tiles[0].shape[:2]
    grid = np.full((rows * th, cols * tw, 3), 114, np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        grid[r * th:(r + 1) * th, c * tw:c * tw + t.shape[1]] = t[:th, :tw]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)
    return out
