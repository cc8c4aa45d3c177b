"""The schema of ``report.json``: ``gradkit report`` validates a file against it before rendering.

A report.json is user input when rebuilt (it can be edited, or come from elsewhere): every value the
renderer uses has a type here, so a string where a count belongs is refused with the key's path.
Keys the renderer does not use are kept (``extra="allow"``) for newer or older writers.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gradkit.report.intervals import INTERVAL_LEVEL

__all__ = ["REPORT_SCHEMA_VERSION", "ReportSchemaError", "validate_report"]

#: 2: inspection, run, gallery rows with found/tp flags and copies; 3: size buckets with an "all" row,
#: elongation as the elongated bucket only; 4: training.train_args holds every args.yaml key (3: eight),
#: training.optimizer_used, inspection per-class parts/shipped_parts, curve paths relative to the report;
#: 5: errors.by_class (why each class's objects were missed), training.augment_preset (what auto chose);
#: 6: tiles (whole images scored through tiles: their size and overlap); 7: box_fit (how close each class's
#: boxes come, at any confidence); 8: training.untaught (the classes monitor.taught warned of); 9: inspection
#: per-class set_aside and min_precision (a class too rarely right at its best threshold never fires), the
#: comparison's set_aside; 10: the floor holds the precision's lower bound (inspection.precision_confidence;
#: set_aside's tp, boxes and precision_lower), and a class fires at its best trusted threshold (untrusted_max_f1);
#: 11: images_skipped (the split's images the validation did not read), data_class_names (the data's class
#: names where they are not the model's) and classes_left_out (the classes a run's classes= left out); 12:
#: training.as_run (the image size and batch the run trained at, where args.yaml keeps what was typed); 13:
#: training.epochs_left_out (results.csv's rows of a try a resume from an earlier checkpoint abandoned), and a
#: size bucket's recall is the share of its objects found (pooled over the classes; 12: COCO's mean over them), and
#: training.resumed (each resume's first epoch and checkpoint; train_args then as the run started), tiled_copy_of
#: (gradkit tile's record where the data is its copy: the parts counted are tiles); 14: trained_with (a val
#: report's record of how its model was trained, from the model's run folder); 15: intervals (mAP50's and mAP50-95's
#: over resamples of the images, each draw's values and the images' digest, for paired comparisons) and each
#: class's AP50_interval; validated_with (the validation's own arguments); a comparison's paired rows.
REPORT_SCHEMA_VERSION = 15

#: Writers store NaN and infinity as null (``build._clean``): a non-finite number was put there by hand.
Num = Annotated[float, Field(allow_inf_nan=False)] | None
#: Precision, recall, AP and the inspection rates: shares of something.
Share = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None
Count = Annotated[int, Field(ge=0)]
#: A confidence threshold (1 for a class that never fires), an IoU: a share too, never unset.
Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


def _ordered_pair(value: list[float] | None, what: str) -> list[float] | None:
    if value is not None and (len(value) != 2 or value[0] > value[1]):
        raise ValueError(f"{what} {value!r:.60} is not [low, high] with low <= high")
    return value


#: An interval of a share: [low, high].
ShareInterval = list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None


class PerClass(_Open):
    name: str
    instances: int | None = None
    images: int | None = None
    precision: Share = None
    recall: Share = None
    AP50: Share = None
    AP50_95: Share = Field(None, alias="AP50-95")
    AP50_interval: ShareInterval = None

    @field_validator("AP50_interval")
    @classmethod
    def _interval(cls, value):
        return _ordered_pair(value, "AP50_interval")


#: One draw's value of a share: None where the draw did not hold the class.
DrawnShares = list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None]


class Draws(_Open):
    """Each draw's mAP50, mAP50-95 and per-class AP50 (by class name), for paired comparisons."""

    mAP50: DrawnShares
    mAP50_95: DrawnShares | None = Field(None, alias="mAP50-95")  # none where only IoU 0.5 was scored
    AP50: dict[str, DrawnShares] = {}


class Intervals(_Open):
    """The percentile intervals of the headline APs over ``resamples`` draws of the images."""

    mAP50: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None  # None: a class of few images
    mAP50_95: list[Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]] | None = Field(None, alias="mAP50-95")
    resamples: Annotated[int, Field(ge=1)]  # the config keeps new runs to 0 or MIN_RESAMPLES and more
    level: float
    seed: int
    images_digest: str | None = None
    draws: Draws | None = None

    @field_validator("mAP50", "mAP50_95")
    @classmethod
    def _interval(cls, value, info):
        return _ordered_pair(value, info.field_name)

    @field_validator("level")
    @classmethod
    def _the_level_the_pages_say(cls, value: float) -> float:
        if value != INTERVAL_LEVEL:
            raise ValueError(f"level {value!r}: the report's intervals are {INTERVAL_LEVEL:.0%} ones")
        return value

    @model_validator(mode="after")
    def _a_value_per_draw(self):
        if self.draws is not None and not self.images_digest:
            raise ValueError("draws without images_digest: a comparison could not tell which images they drew")
        if self.draws is not None:
            for key, values in (("mAP50", self.draws.mAP50), ("mAP50-95", self.draws.mAP50_95),
                                *((f"AP50.{c}", v) for c, v in self.draws.AP50.items())):
                if values is not None and len(values) != self.resamples:
                    raise ValueError(f"draws.{key} holds {len(values)} values, not one per draw ({self.resamples})")
        return self


class Bucket(_Open):
    gt: Count
    AP: Share = None
    AP50: Share = None
    recall: Share = None
    per_class: dict[str, dict[str, Num]] = {}


class Coco(_Open):
    metrics: dict[str, Num] = {}
    note: str = ""


#: How far outside the image a gallery box's corners may lie, in shares of its side.
CORNER_SLACK = 0.02


class GalleryEntry(_Open):
    image: str
    copy_: str | None = Field(None, alias="copy")  # the image, copied into the run directory
    missed: Count
    false_positives: Count
    tp: Count
    errors: dict[str, Count]
    gt: list[list[Finite]]
    pred: list[list[Finite]]

    @model_validator(mode="after")
    def _boxes_in_the_image(self):
        """``gt``: [class, x0, y0, x1, y1, found]; ``pred``: [class, score, x0, y0, x1, y1, right] (schema 1: without
        the flag); the score in [0, 1], the corners shares of the image, as the gallery draws them, give or take
        :data:`CORNER_SLACK` (Ultralytics keeps label centres up to 0.01 outside, and reports before gradkit
        clipped the corners kept them)."""
        for key, rows, widths, corners in (("gt", self.gt, (5, 6), slice(1, 5)), ("pred", self.pred, (6, 7),
                                                                                   slice(2, 6))):
            for i, row in enumerate(rows):
                inside = all(-CORNER_SLACK <= v <= 1 + CORNER_SLACK for v in row[corners])
                if len(row) not in widths or row[0] < 0 or not inside or (key == "pred" and not 0 <= row[1] <= 1):
                    raise ValueError(f"{key}.{i}: {row!r:.60} is not [class, {'score, ' if key == 'pred' else ''}"
                                     f"x0, y0, x1, y1, flag] with the score in [0, 1] and the corners in the image")
        return self


class MissCauses(_Open):
    objects: Count
    found: Count
    mislocalised: Count
    confused: Count
    unseen: Count
    confused_with: dict[str, Count] = {}

    @model_validator(mode="after")
    def _outcomes_add_up(self):
        if self.found + self.mislocalised + self.confused + self.unseen != self.objects:
            raise ValueError(f"found + mislocalised + confused + unseen is not objects ({self.objects})")
        if sum(self.confused_with.values()) != self.confused:
            raise ValueError(f"confused_with does not add up to confused ({self.confused})")
        return self


class BoxFit(_Open):
    objects: Count
    reached: dict[str, Count]
    near_misses: Count
    across: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    along: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _counts_fit(self):
        from gradkit.report.box_fit import FIT_IOUS, iou_key

        keys = [iou_key(t) for t in FIT_IOUS]
        if sorted(self.reached) != sorted(keys):
            raise ValueError(f"reached must have the keys {', '.join(keys)}")
        counts = [self.reached[k] for k in keys]
        if any(a < b for a, b in zip([self.objects, *counts], counts, strict=False)):
            raise ValueError(f"reached must not grow with the IoU nor exceed objects ({self.objects})")
        if self.near_misses != counts[0] - counts[-1]:
            raise ValueError(f"near_misses must be reached[{keys[0]}] - reached[{keys[-1]}]")
        if (self.across is None or self.along is None) != (self.near_misses == 0):
            raise ValueError("across and along are set exactly when there are near misses")
        return self


class Errors(_Open):
    conf_threshold: Num = None
    operating_point: str | None = None
    counts: dict[str, Count]
    by_class: dict[str, MissCauses] = {}
    worst_images: list[GalleryEntry]

    @model_validator(mode="after")
    def _classes_add_up_to_the_totals(self):
        for total, part in (("tp", "found"), ("missed", None)):
            if not self.by_class or total not in self.counts:
                continue
            summed = sum(r.found if part else r.objects - r.found for r in self.by_class.values())
            if summed != self.counts[total]:
                raise ValueError(f"by_class adds up to {summed} {total}, counts say {self.counts[total]}")
        return self


class UntrustedPoint(_Open):
    """A class's max-F1 point that let through too few right boxes, so its threshold is not used (``tp`` right of
    ``boxes``, and the lower bound of that precision, from schema 10 on)."""
    threshold: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    f1: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    precision: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    parts_rejected: Count
    tp: Count | None = None
    boxes: Count | None = None
    precision_lower: Share = None

    @model_validator(mode="after")
    def _counts_give_the_precision(self):
        # writers keep 7 significant digits (build._clean)
        if (self.tp is None) != (self.boxes is None) or (self.tp is not None and (
                self.tp > self.boxes or abs(self.precision - self.tp / max(self.boxes, 1)) > 1e-6)):
            raise ValueError(f"set_aside: precision {self.precision} is not tp {self.tp} of boxes {self.boxes}")
        return self


class InspectionClass(_Open):
    name: str
    threshold: Fraction
    objects: Count
    tp: Count
    fp: Count
    fn: Count
    precision: Share = None
    recall: Share = None
    f1: Share = None
    parts: Count = 0
    shipped_parts: Count = 0
    set_aside: UntrustedPoint | None = None
    #: schema 10: the max-F1 point a trusted threshold replaced, for a class that still fires
    untrusted_max_f1: UntrustedPoint | None = None

    @model_validator(mode="after")
    def _shipped_within_parts(self):
        if self.shipped_parts > self.parts:
            raise ValueError(f"shipped_parts {self.shipped_parts} exceeds parts {self.parts}")
        return self

    @model_validator(mode="after")
    def _set_aside_never_fires(self):
        from gradkit.report.inspection import NEVER_FIRES

        if self.set_aside and (self.threshold < NEVER_FIRES or self.tp or self.fp):
            raise ValueError(f"set_aside: {self.name} was set aside but fires (threshold {self.threshold}, "
                             f"tp {self.tp}, fp {self.fp})")
        fires = self.threshold < NEVER_FIRES or bool(self.tp or self.fp)  # a real score of 1.0 fires at 1.0
        if self.untrusted_max_f1 and (self.set_aside or not fires
                                      or self.untrusted_max_f1.f1 + 1e-6 < (self.f1 or 0.0)):
            raise ValueError(f"untrusted_max_f1: {self.name} fires at no trusted threshold (threshold "
                             f"{self.threshold}, set aside: {self.set_aside is not None}), or above its max F1")
        for key, a in (("set_aside", self.set_aside), ("untrusted_max_f1", self.untrusted_max_f1)):
            if a and a.tp is not None and (a.parts_rejected > a.boxes or a.tp > self.objects
                                           or abs(a.f1 - 2 * a.tp / (a.boxes + self.objects)) > 1e-6):
                raise ValueError(f"{key}: {self.name}'s f1 {a.f1} is not 2 x {a.tp} right / ({a.boxes} boxes + "
                                 f"{self.objects} objects), or its {a.parts_rejected} parts exceed its boxes")
        return self


class MissedBySize(_Open):
    relative_area: str
    objects: Count
    missed: Count
    class_: str = Field(alias="class")


class Inspection(_Open):
    operating_point: str
    thresholds: dict[str, Fraction]
    match_iou: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    images: Count
    defective_images: Count
    defect_free_images: Count
    escaped_images: Count
    escape_rate: Share
    defective_images_without_true_positive: Count
    false_rejected_images: Count
    false_reject_rate: Share
    false_positives: Count
    fp_per_image: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None
    per_class: list[InspectionClass]
    missed_by_class_and_size: list[MissedBySize] = []
    min_precision: Share = None
    #: a one-sided confidence: a normal quantile exists for it, and below one half the bound exceeds the estimate
    precision_confidence: Annotated[float, Field(ge=0.5, lt=1, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _untrusted_below_the_floor(self):
        for c in self.per_class:
            for key, a in (("set_aside", c.set_aside), ("untrusted_max_f1", c.untrusted_max_f1)):
                if a and (self._bound(a) >= self._floor() or a.parts_rejected > self.images):
                    raise ValueError(f"{key}: {c.name}'s precision {a.precision} (at {self.precision_confidence} "
                                     f"confidence: {self._bound(a)}) is not below min_precision {self.min_precision},"
                                     f" or its {a.parts_rejected} parts exceed {self.images} images")
                if a and a.precision_lower is not None and abs(a.precision_lower - self._bound(a)) > 1e-6:
                    raise ValueError(f"{key}: {c.name}'s precision_lower {a.precision_lower} is not the bound of "
                                     f"{a.tp} right of {a.boxes} at {self.precision_confidence}: {self._bound(a)}")
        return self

    @model_validator(mode="after")
    def _fires_where_trusted(self):
        """Schema 10: a class firing at a max-F1 operating point does so at a threshold its boxes clear the floor at."""
        from gradkit.report.inspection import precision_lower_bound

        if self.precision_confidence is None or self.min_precision is None:
            return self
        for c in self.per_class:
            if c.tp + c.fp and precision_lower_bound(
                    c.tp, c.tp + c.fp, self.precision_confidence) < self.min_precision:
                raise ValueError(f"per_class: {c.name} fires at {c.threshold} with {c.tp} right of {c.tp + c.fp} "
                                 f"boxes, which does not clear min_precision {self.min_precision}")
        return self

    def _floor(self) -> float:
        return -1.0 if self.min_precision is None else self.min_precision

    def _bound(self, a: UntrustedPoint) -> float:
        """What the floor held: the precision's lower bound recomputed from its counts (schema 10), the precision
        itself before (schema 9, or without a confidence)."""
        from gradkit.report.inspection import precision_lower_bound

        if a.tp is None or self.precision_confidence is None:
            return a.precision
        return precision_lower_bound(a.tp, a.boxes, self.precision_confidence)


class Alert(_Open):
    step: int
    kind: str
    layer: str | int | None = None
    module: str | None = None
    message: str = ""


class NoiseScale(_Open):
    value: Num = None
    steps: int = 0
    images_per_step: int = 0
    reading: str = ""


class OptimizerUsed(_Open):
    name: str
    lrs: list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]


class AugmentPreset(_Open):
    configured: str
    used: str
    reason: str


class UntaughtClass(_Open):
    """A ``monitor.taught`` warning: the class, the epoch (0-based) it was given, and that epoch's figures."""

    name: str
    epoch: Count
    boxes: Count
    median_target: Share
    median_short_side: Num = None


class AsRun(_Open):
    """The image size and batch a run trained at (``batch=-1`` chose its batch; an imgsz list became one side), and
    the augmentation hyps gradkit's config set (args.yaml keeps Ultralytics' values)."""

    imgsz: Annotated[int, Field(ge=1)] | None = None
    batch: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _hyps_are_numbers(self):
        bad = {k: v for k, v in (self.model_extra or {}).items()
               if not (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))}
        if bad:
            raise ValueError(f"as_run: {bad} are not augmentation hyps (finite numbers)")
        return self


class Resume(_Open):
    """Where a run was resumed: the first epoch the resumed run trained (1-based), the checkpoint, and the arguments
    the user changed there."""

    epoch: Annotated[int, Field(ge=1)]
    checkpoint: str
    changed: dict[str, Any] = {}


class Training(_Open):
    run_dir: str
    epochs: list[int]
    epochs_left_out: list[int] = []
    resumed: list[Resume] = []
    curves: dict[str, list[Num]]
    alerts: list[Alert] = []
    alert_counts: dict[str, int] = {}
    heatmap: str | None = None
    seed: int | None = None
    train_args: dict[str, Any] = {}
    inactive_rules: dict[str, int] = {}
    inactive_rules_message: str = ""
    untaught: list[UntaughtClass] = []
    noise_scale: NoiseScale | None = None
    optimizer_used: OptimizerUsed | None = None
    as_run: AsRun | None = None
    augment_preset: AugmentPreset | None = None


class TrainedWith(_Open):
    """A val report's record of how its model was trained, from the model's run folder."""
    run_dir: str
    train_args: dict[str, Any] = {}
    plugin_config: dict[str, Any] | None = None
    as_run: AsRun | None = None
    augment_preset: AugmentPreset | None = None
    #: why the folder's gradkit records were not taken as this run's (a plain run reused the folder)
    earlier_gradkit_run: Annotated[str, Field(max_length=2000)] | None = None


class Tiles(_Open):
    size: Annotated[int, Field(ge=1)]
    overlap: Count


class TiledCopy(_Open):
    """``gradkit tile``'s record in the data YAML, where the data is its copy."""

    source: str
    size: Annotated[int, Field(ge=1)]
    overlap: Count


class EvaluationReport(_Open):
    schema_version: Annotated[int, Field(ge=1, le=REPORT_SCHEMA_VERSION)]
    kind: Literal["evaluation"]
    model: str
    run: str | None = None
    data: str
    split: str
    images: Count
    images_skipped: Count | None = None
    defect_free_images: Count
    instances: Count
    class_names: dict[str, str]
    data_class_names: dict[str, str] | None = None
    versions: dict[str, str]
    plugin_config: dict[str, Any] | None = None
    headline: dict[str, Share]
    intervals: Intervals | None = None
    per_class: list[PerClass]
    classes_absent: list[str]
    classes_left_out: list[str] | None = None
    coco: Coco
    size_buckets: dict[str, dict[str, Bucket]]
    inspection: Inspection | None = None
    errors: Errors
    box_fit: dict[str, BoxFit] = {}
    confusion_matrix: list[list[Annotated[float, Field(ge=0, allow_inf_nan=False)]]] | None = None
    plots: dict[str, str] = {}
    speed_ms: dict[str, Num] | None = None
    tiles: Tiles | None = None
    trained_with: TrainedWith | None = None
    validated_with: dict[str, Any] | None = None  # the validation's own arguments (imgsz, conf, iou, ...)
    tiled_copy_of: TiledCopy | None = None
    training: Training | None = None

    @model_validator(mode="after")
    def _box_fit_agrees_with_the_misses(self):
        """Any detection counts in box_fit, only those at the operating point in the miss table: an object found
        there reached IoU 0.5, and one mislocalised there reached 0.1."""
        from gradkit.report.box_fit import FIT_IOUS, iou_key

        for name, fit in self.box_fit.items():
            miss = self.errors.by_class.get(name)
            if miss is None:
                continue
            if fit.objects != miss.objects:
                raise ValueError(f"box_fit.{name}.objects ({fit.objects}) is not errors.by_class.{name}.objects "
                                 f"({miss.objects})")
            if fit.reached[iou_key(FIT_IOUS[-1])] < miss.found or fit.reached[iou_key(FIT_IOUS[0])] < (
                    miss.found + miss.mislocalised):
                raise ValueError(f"box_fit.{name}.reached is below what errors.by_class.{name} found")
        return self


class ComparisonRun(_Open):
    label: str
    model: str
    data: str
    split: str
    thresholds: dict[str, Fraction] | None = None
    set_aside: list[str] = []


class ComparisonRow(_Open):
    values: list[Num]
    best: str
    delta_vs_first: list[Num] | None = None


#: A difference of two shares: in [-1, 1].
Difference = Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)]


class PairedRow(_Open):
    score: str
    delta: Difference
    interval: list[Difference]
    told_apart: bool

    @model_validator(mode="after")
    def _agrees(self):
        _ordered_pair(self.interval, "interval")
        if self.told_apart != (not self.interval[0] <= 0 <= self.interval[1]):
            raise ValueError(f"told_apart is {self.told_apart} for the interval {self.interval}")
        return self


class Paired(_Open):
    label: str
    against: str
    rows: list[PairedRow]
    why: str | None = None  # why the two were not compared draw by draw
    not_compared: list[str] = []  # scores both hold without a paired interval (a class of too few images)


class ComparisonReport(_Open):
    schema_version: Annotated[int, Field(ge=1, le=REPORT_SCHEMA_VERSION)]
    kind: Literal["comparison"]
    runs: list[ComparisonRun]
    headline: dict[str, ComparisonRow]
    coco: dict[str, ComparisonRow] = {}
    inspection: dict[str, ComparisonRow] = {}
    per_class: dict[str, ComparisonRow]
    paired: list[Paired] = []


class ReportSchemaError(ValueError):
    """report.json does not match the schema; the message is one line naming the key."""


def validate_report(data: Any, source: str = "report.json") -> dict[str, Any]:
    """``data`` checked against the schema of its ``kind``; raises :class:`ReportSchemaError`."""
    if not isinstance(data, dict):
        raise ReportSchemaError(f"{source}: expected a JSON object, got {type(data).__name__}")
    model = ComparisonReport if data.get("kind") == "comparison" else EvaluationReport
    try:
        model.model_validate(data, strict=True)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        got = repr(err.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise ReportSchemaError(f"{source}: key '{key}': {err['msg']}, got {got}{more}") from None
    return data
