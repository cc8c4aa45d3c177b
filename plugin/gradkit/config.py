"""The plugin configuration: a pydantic schema, YAML loading, dotted overrides and readable errors.

The configuration never travels through Ultralytics' ``trainer.args`` (its CLI rejects unknown keys
and DDP workers rebuild the trainer from args); it lives on the plugin's callback object.
"""

from __future__ import annotations

import copy
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "CLIP_MODE_PARAMS",
    "AlertsConfig",
    "AssignConfig",
    "AugmentConfig",
    "ClipConfig",
    "ConfigError",
    "DataConfig",
    "GradkitConfig",
    "MonitorConfig",
    "ReportConfig",
    "RollbackConfig",
    "TaughtConfig",
    "apply_overrides",
    "did_you_mean",
    "load_config",
    "preset_path",
]

PRESET_DIR = Path(__file__).resolve().parent / "presets"


class ConfigError(ValueError):
    """A plugin configuration problem, raised before any training starts."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info) -> Any:
        """pydantic reads true/false as 1/0 where a number is asked for: YAML's ``yes`` or ``off`` (``conf=yes``)
        would become a setting nobody typed."""
        flag = _a_bool_in(value)
        if flag is not None and _asks_for_numbers(cls.model_fields[info.field_name].annotation):
            raise ValueError(f"takes numbers, not {str(flag).lower()} (YAML reads yes, no, on and off as true and "
                             "false)")
        return value


def _a_bool_in(value: Any) -> bool | None:
    """The first true/false in ``value`` (itself, or inside its lists, tuples and mappings), else None."""
    if isinstance(value, bool):
        return value
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return next((found for v in inner if (found := _a_bool_in(v)) is not None), None)


def _asks_for_numbers(annotation: Any) -> bool:
    """A field's type holds numbers (int or float, alone, optional or inside a list, tuple or mapping) and no bool."""
    kinds = set()
    pending = [annotation]
    while pending:
        kind = pending.pop()
        inner = typing.get_args(kind)
        kinds.add(kind) if not inner else pending.extend(inner)
    return bool not in kinds and bool(kinds & {int, float})


class AlertsConfig(_Section):
    """Thresholds of the gradient diagnoses, chosen from measured healthy runs (README, "Diagnoses").

    A layer's norm is judged relative to the other layers at the same step (from the second
    optimizer step) and against its own recent history (after ``warmup_steps``).
    """

    enabled: bool = Field(True, description="diagnose exploding, vanishing, dead and non-finite gradients")
    warmup_steps: int = Field(20, ge=1, description="optimizer steps of history a layer needs before the "
                              "absolute history-based alerts (exploding, vanishing) may fire")
    history: int = Field(100, ge=3, description="optimizer steps kept per layer for the robust statistics")
    exploding_factor: float = Field(300.0, gt=1, description="exploding when a layer's norm relative to the "
                                    "other layers rises this factor above its usual relative level, or a norm "
                                    "exceeds the median of its history by this factor (and 6 robust deviations); "
                                    "a layer's alert starts only while its norm is above the same-step median layer's")
    vanishing_factor: float = Field(1e-4, gt=0, lt=1, description="vanishing when a layer's norm relative to the "
                                    "other layers, or a norm against the median of its history, falls this "
                                    "factor below its usual level")
    vanishing_ratio: float = Field(1e-9, gt=0, description="vanishing when grad norm / weight norm is "
                                   "below this, whatever the history")
    vanishing_patience: int = Field(3, ge=1, description="consecutive steps before a vanishing alert")
    dead_patience: int = Field(3, ge=1, description="consecutive steps of exactly zero gradient before a "
                               "dead alert")
    diverging_window: int = Field(8, ge=2, description="optimizer steps whose median total norm is the level "
                                  "the diverging warning follows")
    diverging_rise: float = Field(10.0, gt=1, description="diverging when that level rises this factor above "
                                  "the lowest it has been in the run")
    diverging_spike: float = Field(30.0, gt=1, description="diverging also when one step's total norm is this "
                                   "factor above the median of the diverging_window steps before it")
    diverging_growth: float = Field(2.0, gt=1, description="diverging also when a layer's weight norm grows this "
                                    "factor within diverging_growth_steps optimizer steps (its updates are a large "
                                    "fraction of its weights); SGD and MuSGD runs; a warning, never a rollback trigger")
    diverging_growth_steps: int = Field(10, ge=1, description="the weight growth is against the newest weight "
                                        "measurement at least this many optimizer steps older (early in a run: the "
                                        "first one)")


class RollbackConfig(_Section):
    """In-memory rollback of a diverging run (``monitor.on_divergence: rollback``)."""

    every: int = Field(20, ge=1, description="K: optimizer steps between snapshots; a rollback returns to a state "
                       "K to 2K steps old that K steps trained on from without divergence")
    lr_factor: float = Field(0.5, gt=0, lt=1, description="learning-rate multiplier after each rollback; after a "
                             "step rollback it holds for the rest of the epoch and is lifted after an epoch without "
                             "rollback, after a fitness rollback for the rest of the run")
    max_attempts: int = Field(3, ge=1, description="rollbacks allowed in a run; at the next divergence training stops")
    nonfinite_patience: int = Field(3, ge=1, description="consecutive non-finite (skipped) steps that count as "
                                    "divergence")
    norm_spike: float = Field(10.0, gt=1, description="divergence when the total norm exceeds its recent median "
                              "by this factor together with a loss spike")
    loss_spike: float = Field(3.0, gt=1, description="the loss spike that must come with it: loss above its "
                              "recent median by this factor")
    history: int = Field(50, ge=10, description="healthy optimizer steps of norm and loss history for the medians")
    fitness_drop: float | None = Field(0.2, gt=0, lt=1, description="a validation whose fitness (mAP50-95) falls "
                                       "below this share of the best so far counts as divergence: the best validated "
                                       "state is restored; null: off")
    validate_start: bool = Field(True, description="when fine-tuning from a .pt with fitness_drop set, keep the "
                                 "starting weights and validate them with the first epoch, so the best state can be "
                                 "the start")
    device: Literal["cpu", "same"] = Field("cpu", description="where snapshots live: cpu (host memory) or same "
                                           "(the training device)")


class TaughtConfig(_Section):
    """Per epoch, what Ultralytics' assigner teaches each class; a warning when a class is not taught (detection).

    ``gradkit.monitor.taught``; README, "Diagnoses" and "What the assigner teaches each class"."""

    enabled: bool = Field(True, description="record each class's median best assigner target per epoch (results.csv "
                          "columns taught/CLASS) and warn when a class is not being taught")
    below: float = Field(0.05, gt=0, lt=1, description="a class is untaught in an epoch when its median best "
                         "target is below this (classes never detected measured 0.000-0.006; a weakly detected "
                         "one 0.053)")
    reference: float = Field(0.3, gt=0, le=1, description="and only while another class's median reached this (the "
                             "model is learning, just not that class)")
    patience: int = Field(2, ge=1, description="untaught epochs in a row before the warning")
    min_boxes: int = Field(20, ge=1, description="boxes of a class an epoch needs before it is judged")

    @model_validator(mode="after")
    def _below_under_reference(self) -> TaughtConfig:
        if self.below >= self.reference:
            raise ValueError(f"below ({self.below}) must be under reference ({self.reference})")
        return self


class MonitorConfig(_Section):
    """Per-layer gradient statistics at optimizer steps."""

    enabled: bool = Field(True, description="measure per-layer gradients and write the gradient records")
    every: int = Field(1, ge=1, description="measure every N-th optimizer step (and every non-finite one); the "
                       "alerts' warmup_steps, history and diverging_window then count measured steps, N optimizer "
                       "steps each")
    update_every: int = Field(10, ge=1, description="measure weight norms and the update/weight ratio every "
                              "N-th measured step (weights move slowly; the ratio copies the weights), and weight "
                              "norms also at each of the first N measured steps (where a too-high lr shows first)")
    on_nonfinite: Literal["skip", "stop", "warn"] = Field(
        "skip", description="skip: drop the update (weights, EMA, optimizer state unchanged); "
        "stop: drop it and end training; warn: apply it anyway (unlike stock Ultralytics, whose NaN clip "
        "coefficient spreads NaN to every gradient, only the non-finite layers' gradients are non-finite)")
    max_consecutive_nonfinite: int = Field(10, ge=1, description="end training after this many "
                                           "consecutive skipped steps")
    flush_every: int = Field(50, ge=1, description="write buffered rows to the CSV files every N steps")
    plot: bool = Field(True, description="write gradients.png at the end of training")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    taught: TaughtConfig = Field(default_factory=TaughtConfig)
    on_divergence: Literal["stop", "rollback"] = Field(
        "stop", description="stop: as on_nonfinite (skip, then stop after max_consecutive_nonfinite); rollback: "
        "restore the last known-good state, lower the lr, go on (monitor.rollback)")
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)

    @model_validator(mode="after")
    def _rollback_before_stop(self) -> MonitorConfig:
        if self.on_divergence == "rollback" and self.rollback.nonfinite_patience >= self.max_consecutive_nonfinite:
            raise ValueError(f"rollback.nonfinite_patience ({self.rollback.nonfinite_patience}) must be below "
                             f"max_consecutive_nonfinite ({self.max_consecutive_nonfinite}), or training stops "
                             "before it can roll back")
        if self.on_divergence == "rollback" and self.on_nonfinite != "skip":
            raise ValueError(f"on_divergence=rollback needs on_nonfinite=skip (got {self.on_nonfinite!r})")
        return self


#: Parameters each clip mode accepts; any other parameter set explicitly is an error.
CLIP_MODE_PARAMS: dict[str, tuple[str, ...]] = {
    "stock": (),
    "none": (),
    "norm": ("max_norm", "norm_type"),
    "value": ("clip_value",),
    "agc": ("clip_factor", "eps", "exclude"),
    "autoclip": ("percentile", "history"),
    "layer_norm": ("max_norm", "norm_type"),
    "zclip": ("alpha", "z_thresh", "warmup_steps", "eps", "clip_factor", "max_norm"),
}


class ClipConfig(_Section):
    """Gradient clipping that replaces Ultralytics' fixed ``clip_grad_norm_(max_norm=10)``."""

    mode: Literal["stock", "none", "norm", "value", "agc", "autoclip", "layer_norm", "zclip"] = Field(
        "stock", description="stock: global L2 norm at 10 as Ultralytics; none; norm; value; agc "
        "(Brock et al. 2021); autoclip (Seetharaman et al. 2020); layer_norm: norm per layer; zclip "
        "(Kumar et al. 2025)")
    # Unset parameters take the policy's default from gradkit.clip.POLICY_DEFAULTS (their one definition;
    # `gradkit config-doc` shows them in the default column).
    max_norm: float | None = Field(None, gt=0, description="norm, layer_norm: largest allowed norm; "
                                   "zclip: absolute cap on top of the adaptive bound (unset: none)")
    norm_type: float | None = Field(None, gt=0, description="norm, layer_norm: p of the p-norm the bound applies "
                                    "to (inf allowed); the norms recorded (gradients.csv, alerts, noise scale) are "
                                    "L2 norms whatever p")
    clip_value: float | None = Field(None, gt=0, description="value: largest absolute gradient element")
    clip_factor: float | None = Field(None, gt=0, description="agc: lambda of Brock et al. 2021; "
                                      "zclip: multiplier of the adaptive bound")
    eps: float | None = Field(None, gt=0, description="agc: floor of the weight norm; zclip: added to "
                              "the standard deviation of the z-score")
    exclude: list[str] | None = Field(None, description="agc: regexes of parameter names left unclipped "
                                      "(default: the Detect head's final prediction convolutions)")
    percentile: float | None = Field(None, gt=0, le=100, description="autoclip: percentile of the norm "
                                     "history used as the clip threshold")
    history: int | None = Field(None, ge=1, description="autoclip: most recent total norms kept "
                                "(unset: the whole run)")
    alpha: float | None = Field(None, gt=0, lt=1, description="zclip: EMA smoothing of the norm's mean and "
                                "variance")
    z_thresh: float | None = Field(None, gt=0, description="zclip: z-score above which a norm is clipped")
    warmup_steps: int | None = Field(None, ge=1, description="zclip: optimizer steps collected before the "
                                     "statistics start and clipping begins")

    @model_validator(mode="after")
    def _params_belong_to_mode(self) -> ClipConfig:
        allowed = CLIP_MODE_PARAMS[self.mode]
        stray = sorted(k for k in self.model_fields_set - {"mode"} if k not in allowed
                       and getattr(self, k) is not None)
        if stray:
            raise ValueError(
                f"{', '.join(stray)} is not a parameter of clip mode {self.mode!r}; "
                f"its parameters are: {', '.join(allowed) or '(none)'}"
            )
        return self

    def params(self) -> dict[str, Any]:
        """The mode's parameters that were set, for :func:`gradkit.clip.make_clipper`."""
        return {k: getattr(self, k) for k in CLIP_MODE_PARAMS[self.mode] if getattr(self, k) is not None}


class BboxFilterConfig(_Section):
    """Which boxes survive a spatial transform; the defaults keep long thin and tiny defects.

    With gradkit's augmentation on, Ultralytics' own warp keeps a box while ``min_visibility`` of it is in
    view (``gradkit.augment.affine_boxes``)."""

    min_visibility: float = Field(0.1, ge=0, le=1, description="drop a box when less than this share of its "
                                  "area stays in the image (a scratch cut to 10% of its length is kept)")
    # The sizes default to 0 (only empty boxes go): Ultralytics' zoom (0.5-1.5x) shrinks a 1 px scratch's box
    # below a pixel before gradkit's transforms run, and the scratch still shows (tests/test_affine_boxes.py)
    min_area: float = Field(0.0, ge=0, description="after gradkit's transforms, drop boxes smaller than this many "
                            "pixels (0: only empty ones)")
    min_width: float = Field(0.0, ge=0, description="drop boxes narrower than this many pixels (0: only empty ones)")
    min_height: float = Field(0.0, ge=0, description="drop boxes lower than this many pixels (0: only empty ones)")


class CopyPasteConfig(_Section):
    """Defect copy-paste for box-only labels."""

    p: float = Field(0.0, ge=0, le=1, description="probability of pasting into a training sample (0: off)")
    max_per_image: int = Field(3, ge=1, le=50, description="most defects pasted into one sample")
    class_weights: list[float] | None = Field(None, description="relative frequency of pasted classes "
                                              "(one per class); unset: as in the data, or rare_first")
    rare_first: bool = Field(False, description="paste classes with probability 1/frequency to fight imbalance")
    margin: int = Field(4, ge=1, le=64, description="pixels of source background blended away around a crop (at "
                        "least 1: the defect is measured against that ring)")
    min_defect_share: float = Field(0.5, ge=0, le=1, description="paste a defect only if it carries at least this "
                                    "share of what the blend transfers (the rest is its background's texture; "
                                    "0: paste every defect)")
    contrast: tuple[float, float] = Field((1.0, 1.0), description="range of the share of its contrast a pasted "
                                          "defect keeps, drawn per paste ([0.3, 1]: faint copies of the defects "
                                          "that stand out too); [1, 1]: as in its source")
    d4: bool = Field(False, description="turn or mirror each pasted defect by one of the square's eight "
                     "symmetries (the image itself keeps its own heading)")

    @field_validator("contrast")
    @classmethod
    def _contrast_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        lo, hi = value
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"contrast takes [low, high] with 0 < low <= high <= 1, got {list(value)}")
        return value

    def idle(self) -> list[str]:
        """The settings made to other than their defaults that do nothing because ``p`` is 0: said in the log, not
        refused (``p: 0`` is how a run switches copy-paste off for a comparison); a setting wrong in itself, or
        ``class_weights`` of another length than the data's classes, is still refused."""
        if self.p > 0:
            return []
        default = CopyPasteConfig()
        return sorted(k for k in type(self).model_fields if k != "p" and getattr(self, k) != getattr(default, k))

    @model_validator(mode="after")
    def _one_weighting(self) -> CopyPasteConfig:
        if self.class_weights is not None and self.rare_first:
            raise ValueError("set either class_weights or rare_first, not both")
        if self.class_weights is not None and (min(self.class_weights, default=0) < 0 or sum(self.class_weights) <= 0):
            raise ValueError(f"class_weights must be non-negative with a positive sum, got {self.class_weights}")
        return self


#: Ultralytics augmentation hyper-parameters a gradkit config may set (the dataset hyp, not trainer args).
ULTRALYTICS_AUGMENT_KEYS = ("hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective",
                            "flipud", "fliplr")
#: Those Ultralytics' check_cfg keeps between 0 and 1 (its CFG_FRACTION_KEYS; gradkit sets them past that check).
ULTRALYTICS_AUGMENT_FRACTIONS = ("hsv_h", "hsv_s", "hsv_v", "translate", "perspective", "flipud", "fliplr")


class AugmentConfig(_Section):
    """Albumentations pipeline (preset + transforms), box filtering, copy-paste, Ultralytics hyp."""

    preset: Literal["none", "defect", "defect-sensor", "auto"] = Field(
        "none", description="built-in transform list placed before `transforms` (none: Ultralytics' stock "
        "Albumentations stage; defect: D4, illumination, noise; defect-sensor: defect plus blur and JPEG, "
        "which erase 1 px lines; auto: defect, or none when most defects are as faint as their texture, "
        "measured on the training split when training starts, by gradkit plan's rule)")
    transforms: list[Any] | str | None = Field(
        None, description="extra transforms in Albumentations' serialization format (A.to_dict), or a YAML file")
    bbox: BboxFilterConfig = Field(default_factory=BboxFilterConfig)
    copy_paste: CopyPasteConfig = Field(default_factory=CopyPasteConfig)
    ultralytics: dict[str, float] = Field(default_factory=dict, description="Ultralytics augmentation "
                                          f"hyper-parameters ({', '.join(ULTRALYTICS_AUGMENT_KEYS)}); a value "
                                          "given to `gradkit train` on the command line wins; from Python, one "
                                          "given to `model.train()` wins unless it equals Ultralytics' default (a "
                                          "default passed cannot be told from none)")

    @field_validator("ultralytics")
    @classmethod
    def _known_hyp(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(ULTRALYTICS_AUGMENT_KEYS))
        if unknown:
            raise ValueError(f"unknown Ultralytics augmentation key(s) {unknown}; allowed: "
                             f"{', '.join(ULTRALYTICS_AUGMENT_KEYS)}")
        bad = {k: v for k, v in value.items() if v < 0 or (k in ULTRALYTICS_AUGMENT_FRACTIONS and v > 1)}
        if bad:
            raise ValueError(f"out of range ({', '.join(ULTRALYTICS_AUGMENT_FRACTIONS)} are in [0, 1], as Ultralytics "
                             f"keeps them; the others >= 0): {bad}")
        return value

    @property
    def active(self) -> bool:
        """Whether gradkit's augmentation (and its box filter on Ultralytics' warps) replaces Ultralytics' own."""
        return (self.preset != "none" or bool(self.transforms) or self.copy_paste.p > 0 or bool(self.ultralytics)
                or self.bbox != BboxFilterConfig())


#: Fewest resamples an interval of the report is read from (``report.resamples``, gradkit.report.intervals).
MIN_RESAMPLES = 100


class ReportConfig(_Section):
    """Evaluation report (report.html, report.json, report.md) written at the end of training."""

    enabled: bool = Field(True, description="validate best.pt at the end of training and write the report "
                          "into the run directory")
    split: str = Field("val", min_length=1, description="dataset split the end-of-training report evaluates")
    conf: float | None = Field(None, ge=0, le=1, description="the operating point: one confidence threshold for "
                               "every class (inspection KPIs, error analysis, gallery); unset: per class, the "
                               "confidence that maximises F1 on the evaluated split")
    gallery: int = Field(6, ge=0, le=50, description="number of worst images drawn in the report")
    resamples: int = Field(200, ge=0, le=10000, description="resamples of the evaluated images (drawn with "
                           "replacement) behind the 95% intervals of mAP and of each class's AP50: how far the AP "
                           f"would move on another draw of images like these; 0: no intervals, else at least "
                           f"{MIN_RESAMPLES}")

    @field_validator("resamples")
    @classmethod
    def _enough_draws(cls, value: int) -> int:
        if 0 < value < MIN_RESAMPLES:
            raise ValueError(f"0 (no intervals) or at least {MIN_RESAMPLES} (the 2.5th and 97.5th percentiles of "
                             "fewer draws rest on a handful of values)")
        return value
    tile_size: int | None = Field(None, description="score whole images through tiles of this many pixels, for a "
                                  "model trained on `gradkit tile`'s copy: each image is cut as `gradkit tile` cuts "
                                  "it and the tiles' detections are merged; a multiple of 32; unset: the whole "
                                  "image at imgsz")
    tile_overlap: int | None = Field(None, ge=0, description="overlap of those tiles in pixels, at most half a tile; "
                                     "unset: for a run on `gradkit tile`'s copy the overlap it was cut with, "
                                     "otherwise its `auto` rule on the evaluated split (the longest box side, at "
                                     "most half a tile)")


class DataConfig(_Section):
    """Dataset checks before training."""

    check: bool = Field(True, description="run the fast part of `gradkit check` (labels, pairing, unreadable "
                        "and truncated images, a train split without a labelled defect) on the splits the run reads "
                        "(train, val, the report's) before training and stop on errors; a missing folder of another "
                        "split (`test:`) and a split reading another's images are warnings; false accepts "
                        "Ultralytics' silent dropping")
    allow_download: bool = Field(False, description="let Ultralytics run a dataset YAML's `download:` when a "
                                 "split is missing. RISK: that value is executed as Python or as a shell "
                                 "command, so a shared data file can run any code; set true only for YAMLs "
                                 "you trust")


class AssignConfig(_Section):
    """How Ultralytics' assigner picks and scores a box's positives, its loss weighs them (README, "Thin defects")."""

    defect_cells: bool = Field(False, description="experimental: of a box's candidate anchors keep those whose "
                               "feature cell holds pixels standing out from the texture around the box (a thin "
                               "line's box is mostly background); a box with no such cell keeps them all")
    nwd: bool = Field(False, description="experimental: the assigner scores each prediction against a box by the "
                      "larger of CIoU and the normalized Wasserstein distance (NWD, Wang et al. 2021), so a tiny "
                      "or thin box that no prediction overlaps yet still gets a class target and box-loss weight")
    nwd_scale: float | None = Field(None, gt=0, description="NWD's constant in pixels at the training size: a "
                                    "prediction this far off (centre and half-sides together) scores exp(-1) = "
                                    "0.37; unset: the detector's finest stride")
    box_loss_per_object: bool = Field(False, description="in the box loss every object's "
                                      "best-aligned anchor weighs the same (its other positives in proportion, the "
                                      "total as before), where Ultralytics weighs each by how well it is already "
                                      "boxed, so badly boxed objects (thin lines) learn their boxes slowest; "
                                      "gradkit plan turns it on")
    class_loss_weights: dict[str, float] | None = Field(None, description="experimental: class name -> weight of "
                                                        "that class's column of the classification loss (its "
                                                        "positives and negatives alike; classes not named 1), "
                                                        "through Ultralytics' own per-class weights, which its "
                                                        "cls_pw sets from class frequencies instead (and scales "
                                                        "to mean 1; these are not, so the logged cls_loss is not "
                                                        "comparable with a run without them)")

    @field_validator("class_loss_weights", mode="before")
    @classmethod
    def _classes_by_name(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if not value:
                raise ValueError("names no class; name at least one (scratch: 2), or leave the key out")
            indices = [k for k in value if not isinstance(k, str)]
            if indices:
                raise ValueError(f"names classes by their names (scratch: 2), not by index ({indices[0]!r})")
        return value

    @field_validator("class_loss_weights")
    @classmethod
    def _positive_weights_of_named_classes(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for name, weight in (value or {}).items():
            if not name.strip():
                raise ValueError(f"a class name is empty ({name!r}); name the data's classes")
            if not (math.isfinite(weight) and weight > 0):
                raise ValueError(f"{name}: {weight:g} is not a positive number (1 leaves the class as it is)")
        return value

    @model_validator(mode="after")
    def _scale_needs_nwd(self) -> AssignConfig:
        if self.nwd_scale is not None and not self.nwd:
            raise ValueError(f"nwd_scale {self.nwd_scale:g} is set but nwd is false: set nwd: true, or leave "
                             "nwd_scale out")
        return self


class SpeedConfig(_Section):
    """How a CPU trains (README, "Channels-last on the CPU"); on CUDA Ultralytics chooses the layout itself."""

    memory_format: Literal["contiguous", "channels_last", "fastest"] = Field(
        "contiguous", description="the model's memory layout while it trains on a CPU in one process: contiguous "
        "(NCHW, Ultralytics' choice there), channels_last (NHWC: 1.2-1.3x faster steps here, coarser rounding), or "
        "fastest: time a few training steps in each when training starts (on Ultralytics' clock) and keep the "
        "faster; gradkit plan leaves it at contiguous")


class SizeConfig(_Section):
    """The size training images are read at, late in the run (README, "A larger size for the last epochs")."""

    final_scale: float = Field(1.0, ge=1.0, le=3.0, description="experimental: from the epoch that starts the "
                               "run's last final_share on, read training images at this multiple of imgsz "
                               "(rounded to Ultralytics' grid, the model's largest stride and at least 32), the "
                               "earlier epochs' cheaper steps bought at the start; 1 keeps imgsz throughout. "
                               "Validation (each epoch's, best.pt's choice, the report's) and the saved weights' "
                               "imgsz stay imgsz: validate at the final size with imgsz= (the log names it). Not "
                               "with rect=True, multi_scale or an automatic batch on CUDA (refused)")
    final_share: float = Field(0.25, gt=0.0, lt=1.0, description="the share of the run trained at final_scale: "
                               "from the epoch Ultralytics' epoch count makes due (under time=, which re-estimates "
                               "that count each epoch from the mean epoch time, about this share of the time, in "
                               "fewer epochs)")


class InitConfig(_Section):
    """Where training starts (README, "Or a network that has already learnt defects?")."""

    prior: Literal["none", "defect"] = Field(
        "none", description="none: Ultralytics' own initialisation (or the .pt given as model=); defect: gradkit's "
        "defect prior, yolo26n-half.yaml trained on gradkit synth's defects (benchmarks/defect_prior.py), loaded "
        "into every layer but the class outputs before the first step; needs model=yolo26n-half.yaml, a "
        "detection run and data of three channels or one (channels: 1: the prior's first layer is loaded summed "
        "over its three input channels)")
    classes: Literal["fresh", "by_name"] = Field(
        "fresh", description="with a prior, where the class outputs start: fresh: Ultralytics' initialisation for "
        "every class; by_name: the prior's rows for the classes the data names as the prior does (case and "
        "surrounding spaces ignored; two classes of one name both take its row), Ultralytics' for the others")

    @model_validator(mode="after")
    def _classes_need_a_prior(self) -> InitConfig:
        if self.classes == "by_name" and self.prior == "none":
            raise ValueError("classes=by_name takes class outputs from a prior: set prior (e.g. defect) or "
                             "classes=fresh")
        return self


class GradkitConfig(_Section):
    """The whole plugin configuration (the file given with ``gradkit=``)."""

    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    clip: ClipConfig = Field(default_factory=ClipConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    assign: AssignConfig = Field(default_factory=AssignConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    init: InitConfig = Field(default_factory=InitConfig)
    size: SizeConfig = Field(default_factory=SizeConfig)

    @field_validator("monitor", "clip", "augment", "report", "data", "assign", "speed", "init", "size",
                     mode="before")
    @classmethod
    def _none_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    def with_given_hyps(self, given: dict[str, Any]) -> tuple[GradkitConfig, dict[str, tuple[float, float]]]:
        """This configuration with each ``augment.ultralytics`` hyp that was also given to yolo (``given``: the
        arguments as yolo parsed them) set to the given number, and what that changed (key -> (configured, given)).
        The dataset's side can only compare a hyp with Ultralytics' default, which a given ``degrees=0.0`` equals:
        here what was given is known, so it trains, and the run's record says it. A value that is no number is left
        for Ultralytics to refuse."""
        hyp = self.augment.ultralytics
        won = {k: float(v) for k, v in given.items()
               if k in hyp and isinstance(v, int | float) and not isinstance(v, bool)}
        if not won:
            return self, {}
        try:  # the run's gradkit.yaml must read back: Ultralytics takes degrees=-5, gradkit's range does not
            augment = AugmentConfig.model_validate({**self.augment.model_dump(), "ultralytics": {**hyp, **won}})
        except ValidationError as exc:
            given_text = ", ".join(f"{k}={v:g}" for k, v in won.items())
            raise ConfigError(f"{given_text} given to yolo replace augment.ultralytics of the gradkit config, whose "
                              f"range refuses it: {exc.errors()[0]['msg']}") from None
        return self.model_copy(update={"augment": augment}), {k: (hyp[k], v) for k, v in won.items() if v != hyp[k]}

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (what is written to ``gradkit.yaml`` in the run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# --------------------------------------------------------------------------- loading
def preset_path(name: str) -> Path:
    """Path of a bundled preset (``default``, ``defect``...)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown gradkit preset {name!r}; presets: {', '.join(known)}")
    return path


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = GradkitConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def did_you_mean(word: str, choices, suffix: str = "") -> str:
    """`` (did you mean 'KEY'?)`` for the one choice closest to a mistyped ``word``, or nothing (``suffix``: how
    the choice is typed, e.g. ``=``)."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1)
    return f" (did you mean '{close[0]}{suffix}'?)" if close else ""


def _error_lines(err: ValidationError, given: dict[str, Any] | None = None, prefix: str = "") -> list[str]:
    """One line per bad key; a key in ``given`` (typed on a command line) shown as typed, ``prefix`` first."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            lines.append(f"{prefix}{key}: unknown key{did_you_mean(loc[-1], allowed)}; allowed keys here: "
                         f"{', '.join(allowed)}")
        elif given is not None and key in given:
            lines.append(f"{prefix}{key}={given[key]}: {e['msg'].removeprefix('Value error, ')}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            shown = e.get("input")
            got = "" if isinstance(shown, dict) else f" (got {shown!r})"
            lines.append(f"{prefix}{key}: {msg}{got}")
    return lines


def _format_errors(err: ValidationError, source: str, one_line: bool = False,
                   typed: dict[str, str] | None = None) -> str:
    lines = _error_lines(err, typed)
    if one_line:
        return f"invalid gradkit config from {source}: " + " | ".join(lines)
    return f"invalid gradkit config from {source}:\n" + "\n".join("  " + line for line in lines)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"gradkit config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"gradkit config {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"gradkit config {path} must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge dotted overrides (``{"clip.mode": "agc"}``) into a nested config dict.

    Setting ``clip.mode`` starts the clip section afresh, so parameters of the file's clip mode do
    not leak into the new mode; other ``clip.*`` overrides given alongside still apply.
    """
    merged = copy.deepcopy(data)
    if "clip.mode" in overrides and merged.get("clip", {}).get("mode") != overrides["clip.mode"]:
        merged["clip"] = {}
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(f"gradkit override key {dotted!r} has an empty part")
        node = merged
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"gradkit override {dotted!r}: {'.'.join(parts[: i + 1])} is a value, not a section"
                )
            node = child
        node[parts[-1]] = value
    return merged


def load_config(
    source: str | Path | dict[str, Any] | GradkitConfig | None = None,
    overrides: dict[str, Any] | None = None,
    typed: dict[str, str] | None = None,
) -> GradkitConfig:
    """Build a validated configuration.

    Args:
        source: A YAML path, a preset name (``default``, ``defect``), a dict, a config object, or
            None for the ``default`` preset.
        overrides: Dotted keys applied on top, e.g. ``{"clip.mode": "agc"}``.
        typed: The overrides as typed on a command line (``{"report.conf": "yes"}``, which YAML reads as
            true): messages show these.

    Raises:
        ConfigError: naming the file, each bad key, the bad value and the allowed values.
    """
    if isinstance(source, GradkitConfig):
        data, origin = source.model_dump(), "a GradkitConfig object"  # every field: changes made after construction too
    elif isinstance(source, dict):
        data, origin = source, "a dict"
    else:
        name = "default" if source is None else str(source)
        looks_like_path = name.endswith((".yaml", ".yml")) or "/" in name or Path(name).exists()
        path = Path(name) if looks_like_path else preset_path(name)
        data, origin = _files_beside(_read_yaml(path), path), str(path)
    shown = {k: typed[k] if typed and k in typed else repr(v) for k, v in (overrides or {}).items()}
    if overrides:
        data = apply_overrides(data, overrides)
        origin += " with overrides " + ", ".join(f"{k}={v}" for k, v in shown.items())
    try:
        return GradkitConfig.model_validate(data)
    except ValidationError as exc:
        if source is None:  # the defaults under the caller's own keys: each bad one named as given, on one line
            raise ConfigError("invalid gradkit setting: " + " | ".join(
                _error_lines(exc, {k: typed.get(k, v) for k, v in overrides.items()} if typed else overrides or {},
                             prefix="gradkit."))) from None
        raise ConfigError(_format_errors(exc, origin, typed=typed) + _plan_hint(data, source)) from None


def _files_beside(data: Any, path: Path) -> Any:
    """A configuration file's relative ``augment.transforms`` file read beside it (as a YAML file names the files
    it includes), where it is there; elsewhere it stays as written (found from the working folder, as before)."""
    augment = data.get("augment") if isinstance(data, dict) else None
    named = augment.get("transforms") if isinstance(augment, dict) else None
    if isinstance(named, str) and not Path(named).is_absolute() and (path.parent / named).is_file():
        return {**data, "augment": {**augment, "transforms": str((path.parent / named).absolute())}}
    return data


def saved_config(value: Any, source: str) -> GradkitConfig:
    """A configuration gradkit wrote into a file it reads back (a state file's ``config``): untrusted, so anything
    but a mapping that validates is a one-line ConfigError naming ``source`` and each bad key. Never a preset name
    or a path: those would load something the file does not hold."""
    if not isinstance(value, dict):
        raise ConfigError(f"invalid gradkit config from {source}: a {type(value).__name__}, not a mapping of sections")
    try:
        return GradkitConfig.model_validate(value)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source, one_line=True)) from None


def _plan_hint(data: Any, source: Any) -> str:
    """A plan written by ``gradkit plan`` passed as ``gradkit=``: name the configuration it refers to."""
    if not (isinstance(data, dict) and {"command", "fingerprint"} <= set(data)):
        return ""
    gradkit = data.get("gradkit")
    beside = Path(str(source)).with_name(Path(str(source)).stem + ".gradkit.yaml")
    return (f"\n  {source} is a plan from gradkit plan, not a gradkit configuration: pass the configuration it "
            f"refers to, gradkit={gradkit if isinstance(gradkit, str) else beside}")
