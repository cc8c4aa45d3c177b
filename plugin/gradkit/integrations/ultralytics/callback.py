"""The plugin inside an Ultralytics training run: callbacks, the replacement optimizer step, attach."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gradkit.augment.affine_boxes import REPORTED_DROP_RATE, drop_rate, zoom_range
from gradkit.augment.checks import check_augment_config
from gradkit.clip import Clipper, layer_of, make_clipper
from gradkit.config import ConfigError, GradkitConfig, load_config, saved_config
from gradkit.integrations.ultralytics.assign import (
    CandidateTally,
    install_box_loss_per_object,
    install_defect_cell_assignment,
    install_nwd_overlap,
)
from gradkit.integrations.ultralytics.augment import install_augmentation, resolve_auto_augment, trained_hyps
from gradkit.integrations.ultralytics.layout import LayoutChoice, choose_training_layout
from gradkit.integrations.ultralytics.monitor_glue import NoiseScaleTracker, inactive_rules_message, too_few_steps
from gradkit.integrations.ultralytics.rollback import RollbackGuard
from gradkit.integrations.ultralytics.seams import (
    chain_optimizer_step_override,
    check_seams,
    checkpoint_train_args,
    finished_checkpoint,
    follow_nan_recovery,
    optimizer_step_override,
    period_checkpoint,
    publish_epoch_metrics,
    replace_model_tune,
    replace_optimizer_step,
    resume_overrides,
    ultralytics_box_filter_thresholds,
    unrestricted_ema,
    weigh_classification_loss,
    without_task_aligned_assigner,
)
from gradkit.integrations.ultralytics.size import FinalSize, final_size_clash
from gradkit.integrations.ultralytics.sliced import (
    ReportSource,
    TiledValidation,
    check_report_tiles,
    report_source,
)
from gradkit.integrations.ultralytics.taught import TeachingWatch
from gradkit.integrations.ultralytics.validation import label_image_hw, validate_for_report
from gradkit.integrations.ultralytics.version import STATE_SUFFIX, check_ultralytics_version
from gradkit.monitor import AlertDetector, GradientLog, LayerStats, plot_heatmap, truncate_records
from gradkit.monitor.alerts import AlertThresholds, inactive_rules
from gradkit.monitor.noise import NoiseScale
from gradkit.monitor.rollback import MIN_LOSS_SCALE, scaled_lr
from gradkit.report.build import GALLERY_DIR, SUMMARY_FILE, results_digest
from gradkit.report.inspection import VALIDATION_CONF
from gradkit.report.render import REPORT_VAL_DIR

__all__ = ["DatasetError", "GradkitCallback", "PluginError", "attach", "check_before_training", "layer_labels",
           "load_state", "resume", "state_path"]


def _rank() -> int:
    return int(os.getenv("RANK", -1))


def optimizer_used(optimizer) -> dict[str, Any] | None:
    """The optimizer that ran and its starting learning rates: with ``optimizer=auto`` Ultralytics chooses both
    after args.yaml is written (which keeps "auto" and the ignored ``lr0``)."""
    if optimizer is None:
        return None
    lrs = {float(g.get("initial_lr", g.get("lr"))) for g in optimizer.param_groups}
    return {"name": type(optimizer).__name__, "lrs": sorted(round(lr, 8) for lr in lrs)}


def _is_main() -> bool:
    return _rank() in {-1, 0}


def _class_names(trainer) -> dict:
    """The run's classes, index -> name, as Ultralytics read them from the data YAML (empty without a dataset)."""
    data = getattr(trainer, "data", None)
    return dict(data.get("names") or {}) if isinstance(data, dict) else {}


def class_loss_weight_vector(weights: dict[str, float], names: dict[int, str], data: str = "the data") -> list[float]:
    """``assign.class_loss_weights`` (class name -> weight) as one weight per class in the order of the data's class
    indices (``names``, index -> name, as Ultralytics reads them), 1 where a class is not named; a name the data
    does not have stops the run, naming the data's classes."""
    ordered = [names[i] for i in sorted(names)]
    unknown = [n for n in weights if n not in ordered]
    if unknown:
        raise PluginError(f"gradkit: assign.class_loss_weights names {', '.join(map(repr, unknown))}, which {data} "
                          f"does not have; its classes: {', '.join(map(repr, ordered))}")
    return [float(weights.get(n, 1.0)) for n in ordered]


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


def weight_growth_watched(optimizer) -> bool:
    """Whether the ``diverging`` weight-growth arm watches a run of this optimizer: where it was measured
    (README, "Early warning of divergence"). SGD, whose step follows the gradient, and Ultralytics' MuSGD
    (``optimizer=auto`` for long runs): their healthy runs grew at most 1.01x in 10 steps, and their provoked
    ones grew as they diverged. Not Adam's family or RMSprop, whose step is set by the lr: healthy AdamW runs
    grew 1.55-2.01x (``gradkit.monitor.alerts.AlertDetector``)."""
    try:
        from ultralytics.optim.muon import MuSGD

        watched: tuple[type, ...] = (torch.optim.SGD, MuSGD)
    except ImportError:  # an Ultralytics without MuSGD: SGD only
        watched = (torch.optim.SGD,)
    return isinstance(optimizer, watched)


class GradkitCallback:
    """The plugin inside one Ultralytics run. Its bound methods are the callbacks.

    Holding all run state on one picklable object keeps it intact through Ultralytics' callback
    copies and its DDP (cloudpickle) path. It never writes into ``trainer.args``.
    """

    def __init__(self, cfg: GradkitConfig):
        self.cfg = cfg
        self.report_source: ReportSource | None = None  # whole images the report scores through tiles
        self._reset()

    # ------------------------------------------------------------------ registration
    def events(self) -> dict[str, Any]:
        """Ultralytics event -> callback."""
        return {
            "on_pretrain_routine_start": self.on_pretrain_routine_start,
            "on_pretrain_routine_end": self.on_pretrain_routine_end,
            "on_train_start": self.on_train_start,
            "on_train_epoch_start": self.on_train_epoch_start,
            "on_train_batch_end": self.on_train_batch_end,
            "on_train_epoch_end": self.on_train_epoch_end,
            "on_model_save": self.on_model_save,
            "on_fit_epoch_end": self.on_fit_epoch_end,
            "on_train_end": self.on_train_end,
        }

    def _reset(self) -> None:
        self.step = 0
        self.epoch = -1  # the last finished epoch (Ultralytics' 0-based index), saved with the state
        self.consecutive_nonfinite = 0
        # whether the micro-batches accumulated since the last optimizer step all had a finite loss
        self._accumulated_loss_finite: torch.Tensor | None = None
        self._stepped_this_batch = False
        self.stop_requested = False
        self.clipper: Clipper | None = None
        self.stats: LayerStats | None = None
        self.detector: AlertDetector | None = None
        self.log: GradientLog | None = None
        self.guard: RollbackGuard | None = None
        self.alert_count = 0
        self._epoch_totals: list[float] = []
        self._epoch_clipped = 0
        self._epoch_skipped = 0
        self._epoch_alerts = 0
        self.carried_alerts = 0  # alerts raised after an epoch's results.csv row: they go in the next one
        self.save_dir: Path | None = None
        self._epoch_trained = False  # on_train_epoch_end ran and on_fit_epoch_end has not yet
        self.extras_failed: list[str] = []  # end-of-training extras that failed (the run itself is complete)
        self.augment = self.cfg.augment  # augment.preset: auto resolved against this run's training split
        self.augment_choice: dict[str, str] | None = None
        self.layout: LayoutChoice | None = None  # what speed.memory_format did (None: nothing, or not yet)
        self._earlier_channels_last: bool | None = None  # a resumed fastest run's earlier layout (True: NHWC)
        self.assign_tally: CandidateTally | None = None  # what assign.defect_cells restricted
        self.nwd_scale: float | None = None  # assign.nwd's constant in pixels, once installed
        self.teaching: TeachingWatch | None = None  # monitor.taught: what the assigner teaches each class
        self.final_size: FinalSize | None = None  # size.final_scale, once set up
        self._final_size_epoch: int | None = None  # the epoch a resumed run's state file says it switched at
        self._taught_state: Any = None  # its state read from a resumed run's state file, until the watch exists
        self.args_at_start: dict[str, Any] | None = None  # args.yaml as Ultralytics wrote it at the run's start
        self.resumes: list[dict[str, Any]] = []  # each resume: its first epoch, the checkpoint, what the user changed
        self._reset_monitor_extras()

    def __getstate__(self) -> dict[str, Any]:
        # Only the configuration travels (DDP pickles callbacks before training starts).
        return {"cfg": self.cfg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cfg = state["cfg"]
        self._reset()

    # ------------------------------------------------------------------ state for resume
    def state_dict(self) -> dict[str, Any]:
        """Plain tensors, lists, numbers and strings only: the file loads with ``weights_only=True``."""
        return _plain({
            "epoch": self.epoch,
            "step": self.step,
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "alert_count": self.alert_count,
            "clip": self.clipper.state_dict() if self.clipper else None,
            "alerts": self.detector.state_dict() if self.detector else None,
            "rollback": self.guard.state_dict() if self.guard else None,
            "config": self.cfg.model_dump(mode="json"),
            "augment_choice": self.augment_choice,
            "channels_last": None if self.layout is None else self.layout.channels_last,
            "taught": self.teaching.state_dict() if self.teaching else None,
            "noise_scale": self.noise.run.state_dict(),
            "args_at_start": self.args_at_start,
            "resumes": self.resumes,
            "final_size_epoch": self.final_size.epoch if self.final_size else None,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", -1))
        self.consecutive_nonfinite = int(state["consecutive_nonfinite"])
        self.alert_count = int(state.get("alert_count", 0))
        choice = state.get("augment_choice")  # untrusted: resolve_auto_augment reuses only a known list
        self.augment_choice = {str(k): str(v) for k, v in choice.items()} if isinstance(choice, dict) else None
        layout = state.get("channels_last")  # untrusted: a layout is kept only when the file says true or false
        self._earlier_channels_last = layout if isinstance(layout, bool) else None
        if self.clipper and state.get("clip"):
            try:
                self.clipper.load_state_dict(state["clip"])
            except ValueError as exc:  # untrusted: refused whole, so the clipper keeps its fresh state
                _logger().warning(f"gradkit: {exc}; the clipping history starts afresh")
        if self.detector and state.get("alerts"):
            try:
                self.detector.load_state_dict(state["alerts"])
            except ValueError as exc:  # the state file is untrusted input (the detector says what is wrong)
                _logger().warning(f"gradkit: {exc}; the diagnoses' history starts afresh")
                self.detector = AlertDetector(self.detector.layers, self.detector.cfg, self.detector.weight_growth)
        if self.guard and state.get("rollback"):
            try:
                self.guard.load_state_dict(state["rollback"])
            except ConfigError as exc:  # the state file is untrusted input
                _logger().warning(f"gradkit: {exc}; rollback counts and lr factors start afresh")
        self._load_noise_scale(state.get("noise_scale"))
        started = state.get("args_at_start")  # untrusted: a mapping of names, else unknown (an older state file)
        self.args_at_start = started if _named(started) else None
        switched = state.get("final_size_epoch")  # untrusted: an epoch index, else none
        self._final_size_epoch = switched if isinstance(switched, int) and not isinstance(switched, bool) \
            and switched >= 0 else None
        resumes = state.get("resumes")
        self.resumes = [r for r in resumes if _resume_entry(r)] if isinstance(resumes, list) else []
        self._taught_state = state.get("taught")  # the watch is made at on_train_start, after a resume's load
        if self.teaching is not None:  # NaN recovery: the epoch it throws away was judged already
            self._restore_teaching()

    def _load_noise_scale(self, state: Any) -> None:
        """The run's noise-scale sums so far; a state file without them (older) starts them at the resume."""
        run = NoiseScale()
        if state is not None:
            try:
                run.load_state_dict(state)
            except ValueError as exc:  # the state file is untrusted input
                _logger().warning(f"gradkit: {exc}; the run's noise scale counts the steps from here")
        self.noise.continue_from(run, self.step)

    def _restore_teaching(self) -> None:
        """Give the watch the saved state; without one (a new run, a state file from before the watch) or with a
        malformed one it starts afresh, so a NaN recovery never keeps the epoch it threw away."""
        state, self._taught_state = self._taught_state, None
        try:
            self.teaching.load_state_dict({} if state is None else state)
        except ValueError as exc:  # the state file is untrusted input
            self.teaching.load_state_dict({})
            if _is_main():
                _logger().warning(f"gradkit: {exc}; monitor.taught's epochs and streaks start afresh")

    # ------------------------------------------------------------------ events
    def on_pretrain_routine_start(self, trainer) -> None:
        """Before Ultralytics reads the dataset (rank 0): the options that need a detector, the fast dataset check."""
        from gradkit.integrations.ultralytics.datasets import install_dataset_guard, resolve_dataset

        task = getattr(trainer.args, "task", "detect")
        if self.cfg.assign.defect_cells and task != "detect":
            raise PluginError(f"gradkit: assign.defect_cells restricts a detector's assigner to axis-aligned boxes' "
                              f"cells; this run's task is {task!r} (set assign.defect_cells: false)")
        if self.cfg.assign.box_loss_per_object and task != "detect":
            raise PluginError(f"gradkit: assign.box_loss_per_object reweighs a detector's box loss on axis-aligned "
                              f"boxes; this run's task is {task!r} (set assign.box_loss_per_object: false)")
        if self.cfg.assign.nwd and task != "detect":
            raise PluginError(f"gradkit: assign.nwd rescores a detector's assigner on axis-aligned boxes; this run's "
                              f"task is {task!r}, whose assigner scores masks, keypoints or rotated boxes "
                              f"(set assign.nwd: false)")
        if self.cfg.assign.class_loss_weights is not None:
            self._check_class_loss_weights(trainer, task)
        if self.prior_due(trainer):
            self._check_prior(trainer, task)  # before the dataset is cached and the dataloaders built
        clash = final_size_clash(trainer.args, trainer.device.type) if self.cfg.size.final_scale != 1 else None
        if clash:  # before an automatic batch is chosen
            raise PluginError(f"gradkit: size.final_scale {self.cfg.size.final_scale:g} reads the training images "
                              f"at a larger size late in the run; {clash}, or leave size.final_scale at 1)")
        dcfg, data = self.cfg.data, str(trainer.args.data)
        self._arguments_record(trainer)
        install_dataset_guard(dcfg.allow_download)  # this run's choice, before get_dataset
        self.report_source = report_source(data, self.cfg.report)
        own_split = self.cfg.report.enabled and self.report_source is None
        splits = (self.cfg.report.split,) if own_split else ()  # the report's split, found now
        if dcfg.check and not getattr(trainer.args, "resume", False):
            check_before_training(data, splits)
        elif not dcfg.allow_download and data.endswith((".yaml", ".yml")):
            resolve_dataset(data, required=("train", *splits))
        if self.report_source is not None and not dcfg.allow_download:
            resolve_dataset(self.report_source.data, required=(self.cfg.report.split,))
        self._check_copy_paste(data)

    def _check_class_loss_weights(self, trainer, task: str) -> None:
        """``assign.class_loss_weights``: a detector's loss, not also Ultralytics' frequency weights (``cls_pw``), and
        every name one of the data's classes, found before training."""
        from gradkit.integrations.ultralytics.datasets import resolve_dataset

        if task != "detect":
            raise PluginError(f"gradkit: assign.class_loss_weights weighs a detector's classification loss; this "
                              f"run's task is {task!r} (leave assign.class_loss_weights out)")
        if getattr(trainer.args, "distill_model", None):
            raise PluginError("gradkit: assign.class_loss_weights is not supported with distill_model= (Ultralytics "
                              "weighs the student's loss inside the distillation wrapper; leave one of them out)")
        cls_pw = float(getattr(trainer.args, "cls_pw", 0.0) or 0.0)
        if cls_pw:
            raise PluginError(f"gradkit: assign.class_loss_weights and Ultralytics' cls_pw {cls_pw:g} both set the "
                              "classification loss's per-class weights; set one of them")
        data = str(trainer.args.data)
        if not data.endswith((".yaml", ".yml")):  # a dataset Ultralytics names itself: checked at train start
            return
        try:
            names = resolve_dataset(data)["names"]
        except DatasetError:
            if self.cfg.data.allow_download:  # a split still to download: the names are checked at train start
                return
            raise
        class_loss_weight_vector(self.cfg.assign.class_loss_weights, names, data)

    def _check_copy_paste(self, data: str) -> None:
        """Copy-paste settings that do nothing (``p: 0``) said; one copy-paste weight per class of the data, found
        before training (the defect bank, built with the dataloader, found it with a traceback, and not at all with
        ``p: 0``)."""
        from gradkit.integrations.ultralytics.datasets import resolve_dataset

        idle = self.cfg.augment.copy_paste.idle()
        if idle and _is_main():
            _logger().warning(f"gradkit: augment.copy_paste.p is 0, so copy-paste is off and its "
                              f"{', '.join(idle)} setting(s) do nothing")
        weights = self.cfg.augment.copy_paste.class_weights
        if weights is None or self.cfg.data.allow_download:  # a dataset still to download: the bank says it later
            return
        nc = len(resolve_dataset(data)["names"])
        if len(weights) != nc:
            raise ConfigError(f"augment.copy_paste.class_weights has {len(weights)} values, data {data} names {nc} "
                              "classes: one weight per class, in the order of its names")

    def on_pretrain_routine_end(self, trainer) -> None:
        """Set up after the optimizer, scaler and EMA exist (every rank): every check that may refuse the run, the
        step taken over, the augmentation installed, and last the run folder taken over (rank 0)."""
        self._reset()
        model = _unwrap(trainer.model)
        self.save_dir = Path(trainer.save_dir)
        resuming = bool(getattr(trainer, "resume", False))
        if self.prior_due(trainer):
            self._load_prior(trainer, model)
        state = self._resume_state(trainer) if resuming else None
        saved, source = (state.get("config"), "the checkpoint's") if state else (None, "")
        ckpt = self._resume_checkpoint(trainer) if resuming else None
        if ckpt is not None and state is None:  # none, or one that does not validate: the folder's record, if any
            saved, source = self._run_folder_config(ckpt), f"{self.save_dir / 'gradkit.yaml'}'s"
        if saved and saved.model_dump(mode="json") != self.cfg.model_dump(mode="json"):  # JSON: tuples == lists
            # like Ultralytics' own args on resume: the run continues with the configuration it started with
            _logger().warning(f"gradkit: resuming with {source} gradkit configuration (augmentation, clipping and "
                              "monitoring as the run started); start a new run to change it")
            self.cfg = saved
        self.stats = LayerStats(model.named_parameters(), layer_of, layer_labels(model))
        self.clipper = make_clipper(self.cfg.clip.mode, **self.cfg.clip.params())
        self.detector = AlertDetector(self.stats.labels, AlertThresholds.of(self.cfg.monitor.alerts),
                                      weight_growth=weight_growth_watched(trainer.optimizer))
        if self.cfg.monitor.on_divergence == "rollback":
            self.guard = RollbackGuard(self.cfg.monitor.rollback)
        if state:
            self.load_state_dict(state)
            if self._state_not_of_checkpoint(state, trainer.start_epoch - 1, ckpt.name):
                self.step = self._steps_in_checkpoint(trainer)  # its epochs' records are kept: not trained again
                self.noise.continue_from(self.noise.run, self.step)
        elif resuming:
            self.step = self._steps_in_checkpoint(trainer)
            self.noise.continue_from(NoiseScale(), self.step)
        if resuming:
            self.resumes.append({"epoch": int(trainer.start_epoch) + 1, "checkpoint": ckpt.name,
                                 "changed": getattr(self, "_resume_changed", {})})
        else:
            self.args_at_start = getattr(self, "_args_yaml", None)
        # every refusal before the folder is taken over: a refused run leaves a used folder's records as they were
        self._refuse_unchangeable_assigner(trainer)
        self._set_up_final_size(trainer)
        self._take_over_optimizer_step(trainer)
        self._follow_nan_recovery(trainer)
        self.augment = self._resolved_augment(trainer)
        self._install_augmentation(trainer)
        if _is_main():
            if not self.augment.active:
                _warn_labels_ultralytics_drops(trainer)
            self._take_over_run_folder(resuming, ckpt)

    def _take_over_run_folder(self, resuming: bool, ckpt: Path | None) -> None:
        """Replace an earlier run's records in the run folder (a resume keeps its own), write this run's
        gradkit.yaml and open the gradient log. Last in the set-up: after it nothing refuses the run."""
        if not resuming:
            _remove_previous_outputs(self.save_dir)
        else:
            _unmark_summary(self.save_dir)
        written = self.save_dir / "gradkit.yaml.tmp"  # replaced whole: another rank may be reading it
        written.write_text(self.cfg.to_yaml(), encoding="utf-8")
        written.replace(self.save_dir / "gradkit.yaml")
        if resuming and self.cfg.monitor.enabled:
            self._drop_records_after(self.step, f"resuming from {ckpt.name}")
        if self.cfg.monitor.enabled:
            self.log = GradientLog(self.save_dir, append=resuming, flush_every=self.cfg.monitor.flush_every)
        _logger().info(
            f"gradkit: clip={self.cfg.clip.mode} {self.cfg.clip.params() or ''} monitor="
            f"{'every ' + str(self.cfg.monitor.every) + ' step(s)' if self.cfg.monitor.enabled else 'off'} "
            f"on_nonfinite={self.cfg.monitor.on_nonfinite}, {self.stats.num_layers} layers"
        )

    def _refuse_unchangeable_assigner(self, trainer) -> None:
        """The ``assign`` options change Ultralytics' task-aligned assigner and its loss: refused for a detector
        without them (RT-DETR, YOLOE)."""
        chosen = [k for k in ("defect_cells", "nwd", "box_loss_per_object") if getattr(self.cfg.assign, k)]
        if self.cfg.assign.class_loss_weights is not None:
            chosen.append("class_loss_weights")
            self._refuse_prompted_classes(trainer)
        missing = without_task_aligned_assigner(trainer) if chosen else None
        if missing:
            undo = ("leave assign.class_loss_weights out" if chosen[0] == "class_loss_weights"
                    else f"set assign.{chosen[0]}: false")
            raise PluginError(f"gradkit: assign.{chosen[0]} changes Ultralytics' task-aligned assigner or the loss "
                              f"around it; this detector: {missing} ({undo})")

    def _set_up_final_size(self, trainer) -> None:
        """``size.final_scale``: the switch set up (the settings it cannot work with were refused at the start)."""
        if self.cfg.size.final_scale == 1:
            return
        self.final_size = FinalSize(self.cfg.size, trainer, self._final_size_epoch)

    @staticmethod
    def _refuse_prompted_classes(trainer) -> None:
        """``assign.class_loss_weights`` weighs the data's class indices: not a YOLO-World model, whose class outputs
        are each batch's text prompts (Ultralytics turns its own ``cls_pw`` off there for that reason)."""
        from ultralytics.nn.tasks import WorldModel

        model = _unwrap(trainer.model)
        if isinstance(model, WorldModel):
            raise PluginError(f"gradkit: assign.class_loss_weights weighs the data's classes by index; this "
                              f"{type(model).__name__}'s class outputs are each batch's prompts (leave "
                              "assign.class_loss_weights out)")

    def prior_due(self, trainer) -> bool:
        """Whether this run starts from ``init.prior``: not when it resumes (its checkpoint holds its own weights)."""
        resuming = bool(getattr(trainer, "resume", False)) or bool(getattr(trainer.args, "resume", False))
        return self.cfg.init.prior != "none" and not resuming

    def _check_prior(self, trainer, task: object) -> None:
        """The run's arguments against ``init.prior`` (the model's tensors are checked once Ultralytics builds it,
        in setup_model, before the first step: :meth:`_load_prior`)."""
        from gradkit.integrations.ultralytics.datasets import resolve_dataset
        from gradkit.integrations.ultralytics.prior import check_start

        args = trainer.args
        channels = 3 if self.cfg.data.allow_download else resolve_dataset(str(args.data)).get("channels", 3)
        check_start(self.cfg.init.prior, getattr(args, "model", None), getattr(args, "pretrained", None), task,
                    channels)

    def _load_prior(self, trainer, model: torch.nn.Module) -> None:
        from gradkit.integrations.ultralytics.prior import load_prior

        init = self.cfg.init
        ema = getattr(trainer, "ema", None)
        names = _class_names(trainer)
        class_names = [str(names[i]) for i in sorted(names)] if init.classes == "by_name" else None
        loaded = load_prior(model, None if ema is None else ema.ema, init.prior, getattr(trainer.args, "model", None),
                            class_names)
        if not _is_main():
            return
        kept = [str(n) for n in names.values() if str(n) not in loaded.classes]
        outputs = ("; the class outputs from Ultralytics' initialisation" if not loaded.classes else
                   f"; the class outputs of {', '.join(loaded.classes)} from the prior's (init.classes: by_name)"
                   + (f", of {', '.join(kept)} from Ultralytics' initialisation" if kept else ""))
        _logger().info(f"gradkit: init.prior={init.prior}: {loaded.tensors} tensors from gradkit's defect prior"
                       f"{outputs}")
        if class_names is not None and not loaded.classes:
            _logger().warning(f"gradkit: init.classes: by_name: none of this data's classes ({', '.join(kept)}) is "
                              f"named as a class of the prior ({', '.join(loaded.prior_names)})")

    def _take_over_optimizer_step(self, trainer) -> None:
        """Run gradkit's step in place of ``BaseTrainer.optimizer_step``, keeping a user's override.

        A trainer subclass whose ``optimizer_step`` calls ``super().optimizer_step()`` keeps its own
        code; gradkit's step runs where that call lands. One that replaces the step entirely would
        bypass gradkit's measurement and clipping (or be bypassed by it): refuse before training.
        """
        owner = optimizer_step_override(type(trainer))  # checks the base step gradkit mirrors
        if owner is None:
            replace_optimizer_step(trainer, lambda: self.optimizer_step(trainer))
            return
        if not _calls_super_optimizer_step(owner.optimizer_step):
            raise PluginError(_bypass_message(owner))
        user_step = chain_optimizer_step_override(trainer, lambda: self.optimizer_step(trainer))

        def checked_step() -> None:  # an override may call super() only on some paths
            before = self.step
            user_step()
            if self.step == before:
                raise PluginError(_bypass_message(owner))

        replace_optimizer_step(trainer, checked_step)

    def _resolved_augment(self, trainer):
        """``augment.preset: auto`` measured on the training split the trainer reads (every rank: the
        fingerprint is seeded, so all choose alike); any other preset as configured."""
        data = getattr(trainer, "data", None)  # BaseTrainer.get_dataset()'s dict: the paths Ultralytics resolved
        resolved, self.augment_choice = resolve_auto_augment(self.cfg.augment, data if isinstance(data, dict) else {},
                                                             str(trainer.args.data), kept=self.augment_choice)
        if self.augment_choice and _is_main():
            _logger().info(f"gradkit: augment.preset auto -> {resolved.preset}: {self.augment_choice['reason']}")
        return resolved

    def _install_augmentation(self, trainer) -> None:
        if self.augment.active:
            install_augmentation(trainer.train_loader.dataset, self.augment, trainer.args)

    def on_train_epoch_start(self, trainer) -> None:
        self._install_augmentation(trainer)  # no-op unless an OOM retry rebuilt the dataset
        if self.final_size and self.final_size.due(trainer):
            self.final_size.switch(trainer)
            if _is_main():
                _logger().info(self.final_size.describe(int(trainer.epochs)))
        if getattr(trainer, "loss", None) is None:  # first epoch, or an OOM retry that dropped the gradients
            self._accumulated_loss_finite = None
        self._epoch_totals, self._epoch_clipped, self._epoch_skipped = [], 0, 0
        self._epoch_alerts, self.carried_alerts = self.carried_alerts, 0
        if self.guard:
            self.guard.epoch_start()

    def on_train_epoch_end(self, trainer) -> None:
        """Flush the records and put the epoch summary where Ultralytics' loggers look.

        :func:`~gradkit.integrations.ultralytics.seams.publish_epoch_metrics` adds the keys to what
        Ultralytics passes to ``results.csv``, TensorBoard and the other loggers after this event.
        """
        if self.log:
            self.log.flush()
        n = max(len(self._epoch_totals), 1)
        finite = [t for t in self._epoch_totals if np.isfinite(t)]
        publish_epoch_metrics(trainer, {
            "grad/total_norm": float(np.median(finite)) if finite else float("nan"),
            "grad/clip_rate": self._epoch_clipped / n,
            "grad/skipped": float(self._epoch_skipped),
            "grad/alerts": float(self._epoch_alerts),
            "grad/noise_scale": self.noise.epoch_value(),
        })
        if self.guard:
            publish_epoch_metrics(trainer, self.guard.epoch_end())
        if self.teaching:
            columns, warnings, notes = self.teaching.epoch_end(trainer.epoch)
            publish_epoch_metrics(trainer, columns)
            for warning in warnings if _is_main() else ():
                _logger().warning(warning)
            for note in notes if _is_main() else ():
                _logger().info(note)
        self._epoch_trained = True

    def on_fit_epoch_end(self, trainer) -> None:
        """After the epoch's validation and save. Ultralytics fires this event once more after
        training, for the final evaluation of best.pt; no epoch was trained before that one."""
        if self.guard and self._epoch_trained:
            self.guard.after_validation(trainer, self)
        self._epoch_trained = False

    def on_model_save(self, trainer) -> None:
        """Save the plugin state beside ``last.pt`` (and beside the ``epoch{N}.pt`` of ``save_period``) so that a
        resume from either continues it exactly."""
        self.epoch = trainer.epoch
        state = self.state_dict()
        for ckpt in (trainer.last, period_checkpoint(trainer)):
            if ckpt is not None:
                path = state_path(ckpt)
                tmp = path.with_name(path.name + ".tmp")
                torch.save(state, tmp)
                tmp.replace(path)  # a crash while saving leaves the previous state whole

    def on_train_end(self, trainer) -> None:
        if self.log:
            self.log.flush()
            if self.cfg.monitor.plot:
                self._extra("gradients.png", lambda: plot_heatmap(self.save_dir), "python -c \"from gradkit.monitor "
                            f"import plot_heatmap; plot_heatmap('{self.save_dir}')\"")
        if _is_main():
            summary = {
                "metrics": {k: float(v) for k, v in (trainer.metrics or {}).items()},
                "optimizer_steps": self.step,
                "alerts": self.alert_count,
                "clip_mode": self.cfg.clip.mode,
                "optimizer": optimizer_used(trainer.optimizer),
                # what trained, where args.yaml keeps what was typed (batch=-1: auto batch; an imgsz list)
                "as_run": {"imgsz": getattr(trainer.args, "imgsz", None),
                           "batch": getattr(trainer, "batch_size", None),
                           **trained_hyps(trainer.args, self.cfg.augment.ultralytics)},  # args.yaml keeps yolo's
                "augment_preset": self.augment_choice,
                "memory_format": {"configured": self.cfg.speed.memory_format,
                                  "applied": None if self.layout is None else self.layout.as_record()},
                "assign_defect_cells": self.assign_tally.as_dict() if self.assign_tally else None,
                "assign_nwd_scale": self.nwd_scale,
                "final_size": self.final_size.as_record() if self.final_size else None,
                "taught": self.teaching.summary() if self.teaching else None,
                "resumed": self._resumed_record(),
                # what marks this summary (and gradkit.yaml) as the records of the run whose epochs results.csv holds
                "results_sha256": results_digest(self.save_dir),
                **self._monitor_summary(trainer),
            }
            (self.save_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
            if self.cfg.report.enabled:
                self._extra("the report", lambda: self._write_report(trainer),
                            report_command(trainer.best, trainer.last, trainer.args.data, self.cfg.report,
                                           getattr(trainer.args, "classes", None)))
        if self.assign_tally and _is_main():
            _logger().info(f"gradkit: {self.assign_tally.summary()}")
        if self.teaching and self.teaching.final_warning() and _is_main():
            _logger().warning(self.teaching.final_warning())
        _logger().info(f"gradkit: {self.step} optimizer steps, {self.alert_count} gradient alert(s); "
                       f"records in {self.save_dir}")

    def _extra(self, what: str, build, rebuild: str) -> None:
        """Run an end-of-training extra. Its failure is logged with the command that redoes it and
        recorded in ``extras_failed`` (``gradkit train`` exits 1), never raised: the weights and
        results.csv are already written, and raising here would skip Ultralytics' own clean-up."""
        try:
            build()
        except Exception as exc:
            self.extras_failed.append(what)
            _logger().error(f"gradkit: {what} failed ({type(exc).__name__}: {exc}). The run itself is complete "
                            f"(weights and results.csv in {self.save_dir}); rebuild it with: {rebuild}")

    # ------------------------------------------------------------------ rule coverage and noise scale
    def _arguments_record(self, trainer) -> None:
        """Before Ultralytics resolves any argument (rank 0): a new run's args.yaml as Ultralytics just wrote it (what
        was typed; it rewrites the file on resume with the checkpoint's resolved arguments), or a resume's changes."""
        self._args_yaml, self._resume_changed = None, {}
        if getattr(trainer.args, "resume", False):
            saved = checkpoint_train_args(self._resume_checkpoint(trainer))
            now = json.loads(json.dumps(vars(trainer.args), default=str))
            self._resume_changed = {} if saved is None else resume_overrides(now, saved)
            return
        try:
            written = yaml.safe_load((Path(trainer.save_dir) / "args.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):  # not written (another rank), or unreadable: no record
            return
        self._args_yaml = json.loads(json.dumps(written, default=str)) if _named(written) else None

    def _resumed_record(self) -> dict[str, Any] | None:
        """Where the run was resumed and what the user changed each time, and its arguments: as it started but for
        those changes (None without a record of its start: a state file of an older release); None for a run
        never resumed."""
        if not self.resumes:
            return None
        started = None
        if self.args_at_start is not None:
            started = dict(self.args_at_start)
            for r in self.resumes:
                started.update(r["changed"])
        return {"at": self.resumes, "train_args": started}

    def _reset_monitor_extras(self) -> None:
        self.noise = NoiseScaleTracker()
        self._last_weight: torch.Tensor | None = None
        self.inactive_rules_message = ""

    def on_train_start(self, trainer) -> None:
        """Before the first step: train the model in the memory layout ``speed.memory_format`` asks for; patch the
        assigner as the ``assign`` options ask (restrict it to the defect cells, score it with NWD, weigh the box
        loss per object), watch what it teaches (``monitor.taught``);
        with rollback, validate a fine-tune's starting weights (a state to return to); say once which diagnoses
        this run has too few optimizer steps for."""
        mode = self.cfg.speed.memory_format
        earlier = self._earlier_channels_last if getattr(trainer, "resume", False) else None
        layout = self.layout = choose_training_layout(trainer, mode, earlier)
        if _is_main() and layout is not None:
            _logger().info(layout.describe(mode, trainer.args.imgsz, trainer.batch_size))
        elif _is_main() and mode != "contiguous":
            _logger().info(f"gradkit: speed.memory_format {mode} applies to a CPU run in one process; this run "
                           f"({trainer.device.type}) keeps Ultralytics' layout")
        if self.cfg.assign.defect_cells:
            self.assign_tally = install_defect_cell_assignment(trainer)
        if self.cfg.assign.nwd:
            self.nwd_scale = install_nwd_overlap(trainer, self.cfg.assign.nwd_scale)
            if _is_main():
                _logger().info(f"gradkit: assign.nwd: the assigner scores predictions by the larger of CIoU and "
                               f"NWD, a prediction {self.nwd_scale:g} px off scoring 0.37")
        if self.cfg.assign.class_loss_weights is not None:
            self._weigh_classes(trainer)
        if self.cfg.assign.box_loss_per_object:
            install_box_loss_per_object(trainer)
            if _is_main():
                _logger().info("gradkit: assign.box_loss_per_object: every object's best-aligned anchor weighs the "
                               "same in the box loss")
        self._watch_teaching(trainer)
        if self.guard and not getattr(trainer, "resume", False):
            self.guard.before_training(trainer, self)
        if not (self.cfg.monitor.enabled and self.cfg.monitor.alerts.enabled):
            return
        _, self.inactive_rules_message = inactive_rules_message(trainer, self.cfg.monitor.alerts, self.step)
        if self.inactive_rules_message and _is_main():
            _logger().warning(self.inactive_rules_message)

    def _weigh_classes(self, trainer) -> None:
        """``assign.class_loss_weights``: each named class's column of the classification loss times its weight."""
        weights = class_loss_weight_vector(self.cfg.assign.class_loss_weights, _class_names(trainer),
                                           str(trainer.args.data))
        weigh_classification_loss(trainer, weights)
        if _is_main():
            named = ", ".join(f"{n} {w:g}" for n, w in self.cfg.assign.class_loss_weights.items())
            _logger().info(f"gradkit: assign.class_loss_weights: the classification loss weighs {named} (the "
                           "other classes 1)")

    def _watch_teaching(self, trainer) -> None:
        """``monitor.taught``: record the assigner's targets per class (detection runs; the other tasks' assigners
        take other arguments)."""
        taught = self.cfg.monitor.taught
        if not (self.cfg.monitor.enabled and taught.enabled):
            return
        task = getattr(trainer.args, "task", "detect")
        if task != "detect":
            if _is_main():
                _logger().info(f"gradkit: monitor.taught watches detection runs only; this run's task is {task!r}")
            return
        missing = without_task_aligned_assigner(trainer)
        if missing:
            if _is_main():
                _logger().info(f"gradkit: monitor.taught watches a task-aligned assigner; this detector: {missing}")
            return
        self.teaching = TeachingWatch(taught, _class_names(trainer), "ciou_or_nwd" if self.cfg.assign.nwd else "ciou",
                                      self.cfg.assign.box_loss_per_object)
        self.teaching.install(trainer)
        self._restore_teaching()

    def request_stop(self, trainer) -> None:
        """End training after this batch. Set again at the batch's end, because with ``time=``
        Ultralytics re-assigns ``trainer.stop`` from the clock right after the optimizer step."""
        self.stop_requested = trainer.stop = True

    def on_train_batch_end(self, trainer) -> None:
        if self._stepped_this_batch:
            self._stepped_this_batch = False
        elif getattr(trainer, "loss", None) is not None:  # a micro-batch accumulated into the next step
            finite = torch.isfinite(trainer.loss.detach()).all()  # a tensor: no host transfer here
            self._accumulated_loss_finite = finite if self._accumulated_loss_finite is None \
                else self._accumulated_loss_finite & finite
        if self.stop_requested:
            trainer.stop = True
        if self.cfg.monitor.enabled:
            self.noise.on_batch_end(trainer, self.step, self._epoch_totals[-1] if self._epoch_totals else float("nan"))

    def _weight_norms(self, fresh: bool) -> torch.Tensor:
        """Per-layer weight norms: measured when ``fresh`` (or never yet), else the latest measurement."""
        if fresh or self._last_weight is None:
            self._last_weight = self.stats.weight_norms()
        return self._last_weight

    def _update_ratio_due(self) -> bool:
        """The first measured step and every ``update_every``-th measured step after it."""
        return (self.step // self.cfg.monitor.every - 1) % self.cfg.monitor.update_every == 0

    def _weight_norms_due(self) -> bool:
        """As the update ratio, and also at each of the first ``update_every`` measured steps: a
        too-high lr grows the weights within the first steps (the ``diverging`` weight-growth arm)."""
        return self.step // self.cfg.monitor.every <= self.cfg.monitor.update_every or self._update_ratio_due()

    def _monitor_summary(self, trainer) -> dict[str, Any]:
        """``gradkit_summary.json`` keys of the monitor: the rules the run had too few optimizer steps
        for (rule -> steps it needs) with the start-of-training explanation, and the noise scale."""
        alerts = self.cfg.monitor.alerts
        needs = inactive_rules(self.step, alerts) if self.cfg.monitor.enabled and alerts.enabled else {}
        images = trainer.batch_size * max(round(trainer.args.nbs / max(trainer.batch_size, 1)), 1)
        message = (self.inactive_rules_message or too_few_steps(f"{self.step} optimizer step(s) made", needs)
                   if needs else "")  # with time= nothing was planned at the start
        return {"inactive_rules": needs, "inactive_rules_message": message, "noise_scale": self.noise.summary(
            images, max(int(getattr(trainer, "world_size", 1) or 1), 1))}

    def _write_report(self, trainer) -> None:
        from gradkit.report import build_report, write_report

        rcfg = self.cfg.report
        weights = trainer.best if Path(trainer.best).exists() else trainer.last
        source = self.report_source
        data = str(trainer.args.data) if source is None else source.data
        overlap = rcfg.tile_overlap if source is None or rcfg.tile_overlap is not None else source.overlap
        tiles = None if rcfg.tile_size is None else TiledValidation(rcfg.tile_size, overlap)
        ev = validate_for_report(weights, data, rcfg.split, self.save_dir / REPORT_VAL_DIR,
                                 tiles=tiles, imgsz=trainer.args.imgsz, batch=trainer.args.batch,
                                 device=trainer.args.device, conf=VALIDATION_CONF, verbose=False,
                                 classes=getattr(trainer.args, "classes", None))  # scored on what it trained on
        ev.conf_threshold = rcfg.conf
        report = build_report(ev, run_dir=self.save_dir, plugin_config=self.cfg.model_dump(mode="json"),
                              gallery_size=rcfg.gallery, resamples=rcfg.resamples)
        paths = write_report(report, self.save_dir)
        _logger().info(f"gradkit: report {paths['html']}")

    # ------------------------------------------------------------------ resume
    @staticmethod
    def _resume_checkpoint(trainer) -> Path:
        return Path(str(trainer.args.resume if isinstance(trainer.args.resume, str) else trainer.last))

    def _resume_state(self, trainer) -> dict[str, Any] | None:
        path = state_path(self._resume_checkpoint(trainer))
        if not path.exists():
            _logger().warning(f"gradkit: resuming without {path}; clipping history starts afresh")
            return None
        try:
            state = load_state(path)
            if state.get("config"):
                state["config"] = saved_config(state["config"], str(path))
        except ConfigError as exc:
            # a configuration is at hand (the run folder's gradkit.yaml, else the attached one): go on with it rather
            # than stop a long run for its state file
            _logger().warning(f"gradkit: {exc}; clipping history starts afresh")
            return None
        return state

    def _run_folder_config(self, ckpt: Path) -> GradkitConfig | None:
        """Without a usable state file, the configuration the run started with: its folder's gradkit.yaml, unless it
        was written after ``ckpt`` (then another run used the folder since). Untrusted: one that does not validate is
        named, and the attached configuration goes on, as where there is none."""
        path = self.save_dir / "gradkit.yaml"
        if not path.is_file():
            _logger().warning(f"gradkit: no {path} either; resuming with the attached configuration (gradkit train: "
                              "its gradkit=, else the default preset)")
            return None
        try:
            if ckpt.is_file() and path.stat().st_mtime > ckpt.stat().st_mtime:
                _logger().warning(f"gradkit: {path} was written after {ckpt.name} (another run used the folder "
                                  "since); resuming with the attached configuration")
                return None
            return saved_config(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
        except (ConfigError, yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            _logger().warning(f"gradkit: {str(exc).splitlines()[0]}; resuming with the attached configuration")
            return None

    def _steps_in_checkpoint(self, trainer) -> int:
        """Without a usable plugin state, step numbers go on from the optimizer steps the checkpoint counts (its
        EMA's updates), so the records appended after the resume do not repeat the ones before it."""
        steps = int(trainer.ema.updates) if trainer.ema is not None else 0
        _logger().info(f"gradkit: step numbers continue from {steps}, the optimizer steps "
                       f"{self._resume_checkpoint(trainer).name} counts (its EMA updates: a step skipped as "
                       "non-finite is not among them)")
        return steps

    @staticmethod
    def _state_not_of_checkpoint(state: dict[str, Any], ckpt_epoch: int, ckpt_name: str) -> bool:
        """Say when the plugin state is of another epoch than the checkpoint (the run stopped between Ultralytics'
        save and the plugin's): the checkpoint's epochs are not trained again, so the step count goes on from the
        checkpoint's, and only the histories are of the state's epoch."""
        saved = int(state.get("epoch", ckpt_epoch))
        if saved != ckpt_epoch:
            _logger().warning(
                f"gradkit: the plugin state is from epoch {saved + 1} but {ckpt_name} from epoch {ckpt_epoch + 1} "
                f"(the run stopped between the two saves): step numbers go on from {ckpt_name}'s, but the clip, "
                f"alert and noise-scale histories from epoch {saved + 1}, so they differ from an uninterrupted run")
        return saved != ckpt_epoch

    def _drop_records_after(self, step: int, why: str) -> None:
        """Remove records of the steps the run is about to do again, so every step appears once."""
        dropped = truncate_records(self.save_dir, step)
        if any(dropped.values()):
            counts = ", ".join(f"{n} {name}" for name, n in dropped.items() if n)
            _logger().info(f"gradkit: {why}: dropped the records after optimizer step {step} ({counts} rows); "
                           "those steps are done again")

    def _follow_nan_recovery(self, trainer) -> None:
        """Reload the plugin state when Ultralytics' NaN recovery reloads ``last.pt`` mid-run.

        Ultralytics rolls model, optimizer and EMA back to ``last.pt`` and repeats the epoch; without
        this the step counter, clip history and alert history would run on from the discarded epoch.
        """
        follow_nan_recovery(trainer, lambda: self._reload_after_nan_recovery(trainer))

    def _reload_after_nan_recovery(self, trainer) -> None:
        self._accumulated_loss_finite = None  # Ultralytics drops the corrupted pass's gradients too
        if (self.assign_tally is not None or self.teaching is not None or self.nwd_scale is not None
                or self.cfg.assign.box_loss_per_object):
            unrestricted_ema(trainer)  # the recovery's new EMA copied the patched loss: validate with stock's
        path = state_path(trainer.last)
        if not path.exists():
            _logger().warning(f"gradkit: Ultralytics reloaded {trainer.last} after a non-finite loss, but {path} is "
                              f"missing: gradkit's step counter ({self.step}), clip history and alert history keep "
                              "the discarded epoch")
            return
        before = self.step
        self.load_state_dict(load_state(path))
        _logger().warning(f"gradkit: Ultralytics reloaded {trainer.last} after a non-finite loss; gradkit's step "
                          f"counter, clip history and alert history were reloaded with it (optimizer step "
                          f"{before} -> {self.step})")
        if self.log:
            self.log.flush()
            self._drop_records_after(self.step, "NaN recovery")

    # ------------------------------------------------------------------ the optimizer step
    def optimizer_step(self, trainer) -> None:
        """Ultralytics' optimizer step with gradkit's measurement, clipping and non-finite policy."""
        mcfg = self.cfg.monitor
        scaler, optimizer = trainer.scaler, trainer.optimizer
        scaler.unscale_(optimizer)
        self.step += 1
        self._stepped_this_batch = True
        epoch = trainer.epoch + 1
        monitored = mcfg.enabled and self.step % mcfg.every == 0

        # weights move slowly: their norms and the update ratio every update_every-th measured step (the
        # norms also at each of the first ones, see _weight_norms_due)
        fresh_weights = monitored and self._weight_norms_due()
        weight = self._weight_norms(fresh_weights)
        before = self.stats.snapshot() if monitored and self._update_ratio_due() else None
        result = self.clipper(self.stats.named)
        totals = torch.stack([result.total_norm, result.total_norm_clipped, result.clip_coef]).float().cpu()
        total, total_clipped, coef = (float(v) for v in totals)
        finite = bool(np.isfinite(total))
        loss_finite = None if finite else self._step_loss_finite(trainer)  # None: a finite step needs no answer
        # the GradScaler's own overflow handling (see MIN_LOSS_SCALE); the scale is read before update() lowers it
        overflow = bool(loss_finite) and scaler.is_enabled() and scaler.get_scale() > MIN_LOSS_SCALE
        self._accumulated_loss_finite = None
        self.consecutive_nonfinite = 0 if finite or overflow else self.consecutive_nonfinite + 1
        skip = not finite and mcfg.on_nonfinite in {"skip", "stop"}

        stats = None
        if monitored or not finite:
            stats = self.stats.measure(result, weight, finite)

        if skip:
            scaler.update()  # lowers the AMP scale after an overflow; no-op when the scaler is disabled
            optimizer.zero_grad()
        else:
            with scaled_lr(optimizer, self.guard.lr_factor if self.guard else 1.0):
                scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            if trainer.ema:
                trainer.ema.update(trainer.model)

        update_ratio = None
        if before is not None and not skip:
            update_ratio = self.stats.update_norms(before) / weight.clamp(min=1e-12)

        self._epoch_totals.append(total)
        self._epoch_clipped += int(finite and coef < 1 - 1e-6)
        self._epoch_skipped += int(skip)
        alerts = []
        if stats is not None:
            alerts = [] if overflow else self._diagnose(trainer, epoch, stats, loss_finite, fresh_weights)
            if self.log and monitored:
                self.log.add_layers(epoch, self.step, self.stats.labels, stats.grad_norm, stats.grad_norm_clipped,
                                    stats.weight_norm if fresh_weights else np.full_like(stats.weight_norm, np.nan),
                                    stats.nonfinite,
                                    update_ratio if update_ratio is not None
                                    else torch.full((self.stats.num_layers,), float("nan"), device=weight.device))
        if self.log and monitored:
            self.log.add_step(epoch, self.step, total, total_clipped, coef, skip)
            self.log.maybe_flush()
        if self.guard:
            self.guard.after_step(trainer, self, total, finite, alerts)
        if not finite and not overflow:
            self._nonfinite_policy(trainer)

    def _step_loss_finite(self, trainer) -> bool:
        """Whether the loss of every micro-batch of this optimizer step was finite (before the loss scale),
        on every DDP rank. Called only on a non-finite step, which all ranks see alike (all-reduced
        gradients), so the collective runs on all of them."""
        loss = getattr(trainer, "loss", None)
        ok = torch.ones((), dtype=torch.bool, device=getattr(trainer, "device", "cpu")) if loss is None \
            else torch.isfinite(loss.detach()).all()
        if self._accumulated_loss_finite is not None:
            ok = ok & self._accumulated_loss_finite.to(ok.device)
        return all_ranks_true(ok)

    def _diagnose(self, trainer, epoch: int, stats, loss_finite: bool | None, weights_fresh: bool) -> list:
        loss_finite = True if loss_finite is None else loss_finite
        alerts = self.detector.update(epoch, self.step, stats.grad_norm, stats.weight_norm, stats.total_norm,
                                      stats.nonfinite, loss_finite, weights_fresh=weights_fresh)
        if not alerts:
            return []
        self.alert_count += len(alerts)
        self._epoch_alerts += len(alerts)
        if _is_main():
            for a in alerts:
                _logger().warning(f"gradkit {a.kind}: {a.message}")
            if self.log:
                self.log.add_alerts(alerts)
        return alerts

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
            self.request_stop(trainer)


def all_ranks_true(flag: torch.Tensor) -> bool:
    """``flag`` here and on every other DDP rank (a MIN all-reduce), as one host value."""
    value = flag.to(torch.float32).reshape(())
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return bool(value.item())


class PluginError(RuntimeError):
    """gradkit cannot run as asked with this model or trainer: raised before training, or at the first step that
    shows it (a trainer's own step that skips gradkit's)."""


def _bypass_message(owner: type) -> str:
    return (f"gradkit: {owner.__name__}.optimizer_step replaces Ultralytics' optimizer step without calling "
            "super().optimizer_step(), so gradkit's clipping and gradient records would be bypassed. Call "
            "super().optimizer_step() in your override where the step should happen (gradkit's unscale, clip, "
            "step and EMA update run there), or move your code to a callback")


def _calls_super_optimizer_step(fn) -> bool:
    import inspect

    code = getattr(inspect.unwrap(fn), "__code__", None)
    return code is not None and "super" in code.co_names and "optimizer_step" in code.co_names


def state_path(checkpoint: str | Path) -> Path:
    """The plugin state file beside an Ultralytics checkpoint (``last.pt`` -> ``last.gradkit.pt``)."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.stem + STATE_SUFFIX)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a plugin state file without unpickling arbitrary objects.

    Raises:
        ConfigError: the file holds anything but tensors, lists, numbers and strings, or is not a mapping.
    """
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"{path} holds objects other than tensors, lists, numbers and strings (a state file of an "
                          "older gradkit, or not gradkit's); it is not unpickled") from None
    if not isinstance(state, dict):
        raise ConfigError(f"{path} holds a {type(state).__name__}, not gradkit's state (a mapping)")
    return state


def _named(value: Any) -> bool:
    """A mapping of argument names (read back from a file: untrusted)."""
    return isinstance(value, dict) and all(isinstance(k, str) for k in value)


def _resume_entry(value: Any) -> bool:
    """One resume as the state file records it: its first epoch (1-based), the checkpoint, the changed arguments."""
    return (isinstance(value, dict) and isinstance(value.get("epoch"), int) and not isinstance(value["epoch"], bool)
            and value["epoch"] >= 1 and isinstance(value.get("checkpoint"), str) and _named(value.get("changed")))


def _plain(value: Any) -> Any:
    """Numpy arrays -> tensors, numpy scalars -> numbers, deques and tuples -> lists, recursively."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__iter__") and not isinstance(value, str | bytes | torch.Tensor):
        return [_plain(v) for v in value]
    return value


class DatasetError(RuntimeError):
    """The dataset check found errors before training."""


#: Warnings of the check before training that it prints (the per-image ones, such as background images without a
#: label file, are a convention, not a mistake: ``gradkit check`` lists them).
SAID_BEFORE_TRAINING = frozenset({"shared split"})


def _not_read(places: dict[str, list[Path]], read: dict[str, list[Path]]) -> list:
    """A warning for each folder or list file of a split this run reads neither for training nor for its report
    (``test``, usually) that does not exist: it stops nothing (``gradkit check`` and ``gradkit val`` check it)."""
    from gradkit.data.check import missing_place

    return [missing_place(split, p, "warning", ": training does not read it")
            for split, ps in places.items() if split not in read for p in ps if not p.exists()]


def check_before_training(data: str, splits: tuple[str, ...] = ()) -> None:
    """Run the fast part of ``gradkit check`` (labels, pairing, unreadable and truncated images, a train split
    without a labelled defect) on the splits the run reads: train, val and ``splits`` (the end-of-training
    report's, which must exist); raise on errors. Another split's missing folder is a warning, printed with
    the warnings in SAID_BEFORE_TRAINING."""
    from gradkit.data.check import check_dataset
    from gradkit.data.splits import is_listed
    from gradkit.integrations.ultralytics.datasets import resolve_dataset

    if not data or not str(data).endswith((".yaml", ".yml")):
        return  # not a YOLO dataset YAML (classification folders, hub names): nothing to check here
    resolved = resolve_dataset(str(data), required=("train", *splits))  # as Ultralytics, never downloading
    yaml_file = Path(resolved.get("yaml_file") or data)
    places = {s: [Path(p) for p in (v if isinstance(v, list) else [v])]
              for s in ("train", "val", "test") if isinstance(v := resolved.get(s), str | list) and v}
    read = {s: p for s, p in places.items() if s in ("train", "val", *splits)}
    try:
        result = check_dataset(yaml_file, images=False, split_places=read)  # the places training will read
    except ValueError as exc:
        raise DatasetError(f"gradkit: {exc}") from None
    for finding in [f for f in result.findings if f.kind in SAID_BEFORE_TRAINING] + _not_read(places, read):
        _logger().warning(f"gradkit: {finding}")
    if result.errors and all(f.kind == "no defects" for f in result.errors):
        raise DatasetError(f"gradkit: {result.errors[0].message} ({yaml_file}); or set gradkit.data.check=false to "
                           "train anyway")
    if result.errors:
        listing = "\n".join(str(f) for f in result.errors[:50])
        more = f"\n... and {len(result.errors) - 50} more" if len(result.errors) > 50 else ""
        listed = any(is_listed(p) for p in places.values())  # check --fix copies folders only
        fix = ("the files and lines below" if listed else f"them ('gradkit check data={shlex.quote(str(data))} --fix')")
        raise DatasetError(f"gradkit: {len(result.errors)} dataset error(s) in {yaml_file}; Ultralytics would train on "
                           f"without them (dropped lines and images) or misread them (16-bit images darkened), "
                           f"without stopping. Fix {fix} or set gradkit.data.check=false to accept that:"
                           f"\n{listing}{more}")


def attach(model, cfg: str | Path | dict | GradkitConfig | None = None,
           overrides: dict[str, Any] | list[str] | None = None) -> GradkitConfig:
    """Activate gradkit on an ``ultralytics.YOLO`` model; ``model.train(...)`` then runs with it.

    Attaching again replaces the plugin attached before (one plugin per model).

    Args:
        model: An ``ultralytics.YOLO`` (or any object with ``add_callback``).
        cfg: Config path, preset name, dict or :class:`GradkitConfig` (default preset if None).
        overrides: Dotted keys on top of ``cfg``, e.g. ``{"clip.mode": "agc"}``, or the CLI's form
            as a list, ``["clip.mode=agc"]``.

    Returns:
        The resolved, validated configuration.
    """
    check_ultralytics_version()
    check_seams()
    resolved = load_config(cfg, _overrides_dict(overrides), _typed(overrides))
    check_augment_config(resolved, cfg, _overrides_dict(overrides))  # Albumentations builds them: not in gradkit.config
    check_report_tiles(resolved.report.tile_size, resolved.report.tile_overlap)  # gradkit tile's rules
    from gradkit.integrations.ultralytics.datasets import install_dataset_guard

    install_dataset_guard(resolved.data.allow_download)
    if _detach(model):
        _logger().info("gradkit: attach() replaces the gradkit plugin attached to this model before")
    plugin = GradkitCallback(resolved)
    for event, fn in plugin.events().items():
        model.add_callback(event, fn)
    epoch_end = getattr(model, "callbacks", {}).get("on_train_epoch_end", [])
    if plugin.on_train_epoch_end in epoch_end:
        # first in line, so every user callback of the event sees the grad/* keys whatever the order of registration
        epoch_end.insert(0, epoch_end.pop(epoch_end.index(plugin.on_train_epoch_end)))
    model.gradkit = plugin  # so users and tests can reach the run state after training
    replace_model_tune(model, _refuse_tune)
    return resolved


def _overrides_dict(overrides: dict[str, Any] | list[str] | tuple[str, ...] | None) -> dict[str, Any] | None:
    """Overrides as a dict; a list of ``KEY=VALUE`` strings is read as the CLI reads ``gradkit.KEY=VALUE``."""
    if overrides is None or isinstance(overrides, dict):
        return overrides
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"gradkit overrides are a dict or a list of 'SECTION.KEY=VALUE' strings, got {overrides!r}")
    from gradkit.cli import split_plugin_args

    bad = [o for o in overrides if "=" not in o or o.startswith("gradkit=")]
    if bad:
        raise ConfigError(f"gradkit override {bad[0]!r}: write SECTION.KEY=VALUE, e.g. 'clip.mode=agc'")
    _, parsed, _ = split_plugin_args([o if o.startswith("gradkit.") else f"gradkit.{o}" for o in overrides])
    return parsed


def _typed(overrides: dict[str, Any] | list[str] | tuple[str, ...] | None) -> dict[str, str] | None:
    """A list of ``KEY=VALUE`` strings' values as typed, for messages (``yes``, which YAML reads as true)."""
    if overrides is None or isinstance(overrides, dict):
        return None
    from gradkit.cli import typed_overrides

    return typed_overrides([o if o.startswith("gradkit.") else f"gradkit.{o}" for o in overrides])


def _detach(model) -> bool:
    """Remove every gradkit callback from the model; True when there was one."""
    found = False
    for fns in getattr(model, "callbacks", {}).values():
        ours = [fn for fn in fns if isinstance(getattr(fn, "__self__", None), GradkitCallback)]
        for fn in ours:
            fns.remove(fn)
        found |= bool(ours)
    return found


def _refuse_tune(*args, **kwargs):
    raise PluginError(
        "gradkit: model.tune() is not supported with gradkit attached: Ultralytics runs every tuning trial as a "
        "separate 'yolo train' process, which never sees this model's callbacks, so the trials would train "
        "without the plugin (stock clipping, no records). Tune on a model without gradkit.attach(), then train "
        "the chosen hyper-parameters with the plugin")


def resume(checkpoint: str | Path, **train_args: Any):
    """Resume a gradkit run from its ``last.pt`` with the run's own plugin configuration and state.

    Args:
        checkpoint: ``RUN/weights/last.pt`` of a run trained with gradkit.
        **train_args: Extra arguments for ``model.train`` that Ultralytics lets a resume change
            (e.g. ``device``, ``workers``).

    Returns:
        The ``ultralytics.YOLO`` model after training (``model.gradkit`` holds the run state).
    """
    from ultralytics import YOLO

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise ConfigError(f"gradkit.resume: checkpoint not found: {checkpoint}")
    side = state_path(checkpoint)
    if not side.is_file():
        raise ConfigError(f"gradkit.resume: {side} not found, so {checkpoint} was not saved by a gradkit run; "
                          "resume it with YOLO(...).train(resume=True) after gradkit.attach(model, CONFIG)")
    config = load_state(side).get("config")
    if not config:
        raise ConfigError(f"gradkit.resume: {side} holds no plugin configuration")
    config = saved_config(config, str(side))
    if finished_checkpoint(str(checkpoint)) is not None:
        raise ConfigError(f"gradkit.resume: {checkpoint} is the checkpoint of a run that finished (Ultralytics' "
                          "final validation strips what a resume needs): nothing to resume; train on from its "
                          "weights with a new run (model=..., without resume)")
    model = YOLO(str(checkpoint))
    attach(model, config)
    model.train(resume=str(checkpoint), **train_args)
    return model


def report_command(best: str | Path, last: str | Path, data: str, report, classes=None) -> str:
    """The ``gradkit val`` command that writes a run's report as its end of training would have: its best weights
    (its last where none were kept), its split and report settings, its ``classes=``."""
    weights = best if Path(best).exists() else last
    parts = [f"gradkit val model={shlex.quote(str(weights))}", f"data={shlex.quote(str(data))}",
             f"split={shlex.quote(report.split)}", f"gradkit.report.gallery={report.gallery}"]
    if report.conf is not None:
        parts.append(f"gradkit.report.conf={report.conf}")
    if classes is not None:
        parts.append(f"classes={json.dumps(classes, separators=(',', ':'))}")
    return " ".join(parts)


#: What gradkit writes into a run folder besides gradkit.yaml and its plugin states, weights/last.gradkit.pt and
#: (save_period) weights/epochN.gradkit.pt (README, "Outputs"): a new run in a folder a gradkit run used
#: (``exist_ok=True``) removes a previous run's, so that none stands beside the new run's weights as its own.
RUN_OUTPUTS = ("gradients.csv", "gradient_steps.csv", "gradient_alerts.jsonl", "gradients.png",
               SUMMARY_FILE, "report.html", "report.json", "report.md", REPORT_VAL_DIR, GALLERY_DIR)


def _unmark_summary(save_dir: Path) -> None:
    """A resumed run writes rows into results.csv before its end writes its own summary: the summary there, naming
    the results.csv it was written beside, would make this run's records read as an earlier run's
    (``gradkit.report.build.earlier_run_summary``), so its mark is taken out (a file that cannot be read is left)."""
    path = save_dir / SUMMARY_FILE
    try:
        summary, results = json.loads(path.read_text(encoding="utf-8")), results_digest(save_dir)
    except (OSError, ValueError, RecursionError):
        return
    # an earlier run's summary (another results.csv) keeps its mark: this run's records are not that run's
    if isinstance(summary, dict) and summary.get("results_sha256") == results:
        summary.pop("results_sha256")
        written = path.with_name(path.name + ".tmp")
        written.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        written.replace(path)


def _remove_previous_outputs(save_dir: Path) -> None:
    """Remove what a previous gradkit run left in ``save_dir`` (RUN_OUTPUTS and its plugin state), saying which:
    only where its gradkit.yaml shows that a gradkit run used the folder, and only what lies in the folder itself
    (a link, or anything reached through one, is left as it is)."""
    if not (save_dir / "gradkit.yaml").is_file():
        return
    root = save_dir.resolve()
    periodic = [f"weights/{p.name}" for p in sorted((save_dir / "weights").glob(state_path(Path("epoch*.pt")).name))]
    names = [*RUN_OUTPUTS, state_path(Path("weights") / "last.pt").as_posix(), *periodic]
    found = [save_dir / n for n in names if (save_dir / n).exists() and (save_dir / n).resolve() == root / n]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    if found:
        _logger().info(f"gradkit: {save_dir} held a previous run's gradkit outputs; removed "
                       f"{', '.join(p.relative_to(save_dir).as_posix() for p in found)} (this run writes its own)")


def _warn_labels_ultralytics_drops(trainer) -> None:
    """One warning line when Ultralytics' warp will drop some training labels for their shape alone in at least
    one sample in 20 (gradkit's augmentation, when on, keeps them: ``gradkit.augment.affine_boxes``).

    A trainer driven without Ultralytics' data set-up (a custom loop, no ``train_loader``) has no labels to count.
    """
    loader = getattr(trainer, "train_loader", None)
    if loader is None:
        return
    dataset, args = loader.dataset, trainer.args
    thresholds = ultralytics_box_filter_thresholds()
    if not getattr(dataset, "augment", False) or thresholds is None:
        return
    wh, cls = [], []
    for lab in getattr(dataset, "labels", []):
        h0, w0 = label_image_hw(lab)  # rect=True pops the shape
        boxes = np.asarray(lab["bboxes"], dtype=float).reshape(-1, 4)
        wh.append(boxes[:, 2:] * np.array([w0, h0]) * (dataset.imgsz / max(h0, w0)))  # the long side to imgsz
        cls.append(np.asarray(lab["cls"]).reshape(-1))
    if not wh:
        return
    wh, cls = np.concatenate(wh), np.concatenate(cls).astype(int)
    zooms = zoom_range(args.scale)
    rate = drop_rate(wh, zooms, *thresholds)
    named = rate >= REPORTED_DROP_RATE
    if not named.any():
        return
    names = _class_names(trainer)
    per_class = ", ".join(f"{names.get(c, c)} {n}" for c, n in enumerate(np.bincount(cls[named])) if n)
    _logger().warning(
        f"gradkit: Ultralytics' warp (zoom {zooms[0]:g}-{zooms[1]:g}x, sides above {thresholds[0]:g} px, aspect "
        f"ratio below {thresholds[1]:g}) drops {int(named.sum())} of {len(wh)} training boxes at imgsz "
        f"{dataset.imgsz} ({per_class}) in {rate[named].mean():.0%} of their samples on average, while the defect "
        "stays in the image, teaching it as background; gradkit's augmentation keeps them (gradkit=defect, or "
        "any augment.preset, transforms, bbox or ultralytics setting, or copy_paste.p > 0; README, \"Why thin "
        "defects fail\")")
