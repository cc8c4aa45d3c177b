"""Every patch gradkit makes to third-party internals, each next to the check that guards it.

gradkit has to reach past public APIs: it replaces ``BaseTrainer.optimizer_step`` (no event fires
between backward and the optimizer step), follows ``BaseTrainer._handle_nan_recovery``, adds its
epoch columns to ``trainer.lr``, swaps the ``Albumentations`` stage of the training dataset's
transform list (that stage swallows construction errors), wraps the detection validator's
``update_metrics`` and calls its private ``_prepare_batch`` / ``_prepare_pred``, replaces
``check_det_dataset`` (it runs a data file's ``download:`` code), appends to Ultralytics' global
``default_callbacks`` and rewrites ``sys.argv`` for ``gradkit train``, and overrides faster-coco-eval's
``COCOeval_faster.computeIoU`` to share IoUs between evaluations. This module is the only one that
does any of it (``tests/test_seam_confinement.py`` enforces that); the rest of the package calls
the small functions below and keeps its own logic.

The version bounds in pyproject and :mod:`.version` keep out releases nobody tested; these checks
catch what a bound cannot: a patch release or a user's subclass that changed the shape a patch
relies on. Each check raises :class:`SeamError` naming what changed, where the patch is installed,
before it is installed - never a silent fall-back to stock behaviour.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import json
import sys
import textwrap
from collections.abc import Callable, Sequence
from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "IMAGE_STAT_KEYS",
    "OPTIMIZER_STEP_FINGERPRINTS",
    "SeamError",
    "albumentations_stage_index",
    "average_precision",
    "batch_pixels_and_boxes",
    "chain_optimizer_step_override",
    "check_coco_iou_override",
    "check_mirrored_dataset_code",
    "check_optimizer_step",
    "check_recorded_statistics",
    "check_seams",
    "check_validator",
    "check_validator_results",
    "code_fingerprint",
    "dataset_augmentation",
    "edit_albumentations_stage",
    "follow_nan_recovery",
    "hand_over_to_yolo",
    "image_placement",
    "install_dataset_transforms",
    "json_predictions",
    "keep_defect_cells",
    "latest_image_stats",
    "optimizer_step_override",
    "override_coco_iou",
    "period_checkpoint",
    "prediction_recorder",
    "publish_epoch_metrics",
    "read_like_dataset",
    "record_assignments",
    "register_default_callbacks",
    "replace_affine_box_filter",
    "replace_check_det_dataset",
    "replace_model_tune",
    "replace_optimizer_step",
    "replace_predictions",
    "restrict_candidates_to_cells",
    "scaled_predictions",
    "seed_stock_albumentations",
    "set_prediction_recorder",
    "set_tile_geometry",
    "stock_check_det_dataset",
    "tile_canvas",
    "tile_geometry",
    "track_run",
    "ultralytics_box_filter_thresholds",
    "unregister_default_callbacks",
    "unrestricted_ema",
    "warmup_iterations",
    "weigh_classification_loss",
    "wrap_update_metrics",
    "yolo_argument_error",
]

#: ``code_fingerprint(BaseTrainer.optimizer_step)`` of the Ultralytics releases gradkit's replacement
#: step (``GradkitCallback.optimizer_step``) was compared against line by line: 8.4.190.
OPTIMIZER_STEP_FINGERPRINTS = frozenset({"f75a05eca0ace226"})

#: Validator methods the prediction recorder calls, with the parameters it passes.
VALIDATOR_METHODS = {"update_metrics": ("preds", "batch"), "_prepare_batch": ("si", "batch"),
                     "_prepare_pred": ("pred",), "scale_preds": ("predn", "pbatch")}
#: Validator attributes the report reads after validation (``validation._collect``).
VALIDATOR_RESULTS = ("metrics.box.ap_class_index", "metrics.box.class_result", "metrics.box.mp", "metrics.box.mr",
                     "metrics.box.map50", "metrics.box.map", "metrics.nt_per_class", "metrics.nt_per_image",
                     "dataloader.dataset.labels", "names", "args.split", "args.data", "args.model", "speed",
                     "save_dir")


class SeamError(RuntimeError):
    """An installed third-party library no longer has the shape a gradkit patch relies on."""


def code_fingerprint(fn: Any) -> str:
    """Hash of a function's arguments and body, ignoring its name, docstring, comments and formatting."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    func = tree.body[0]
    body = func.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        func.body = body[1:]
    code = ast.dump(func.args, annotate_fields=False) + "".join(ast.dump(n, annotate_fields=False) for n in func.body)
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def _ultralytics_version() -> str:
    import ultralytics

    return ultralytics.__version__


def _definer(cls: type, name: str) -> type:
    return next((c for c in cls.__mro__ if name in vars(c)), cls)


def check_optimizer_step(trainer_cls: type | None = None) -> None:
    """Raise unless ``trainer_cls.optimizer_step`` is the code gradkit's replacement step mirrors.

    A trainer subclass that overrides the step (or an Ultralytics release that changed it) would
    have its own logic silently replaced by gradkit's; this names the class that defines it.
    """
    from ultralytics.engine.trainer import BaseTrainer

    cls = trainer_cls or BaseTrainer
    step = getattr(cls, "optimizer_step", None)
    if step is None:
        raise SeamError(f"{cls.__module__}.{cls.__qualname__} has no optimizer_step: gradkit replaces Ultralytics' "
                        "BaseTrainer.optimizer_step and cannot attach to this trainer")
    found = code_fingerprint(step)
    if found not in OPTIMIZER_STEP_FINGERPRINTS:
        owner = _definer(cls, "optimizer_step")
        raise SeamError(
            f"{owner.__module__}.{owner.__qualname__}.optimizer_step is not the step gradkit was written against "
            f"(code fingerprint {found}, expected one of {sorted(OPTIMIZER_STEP_FINGERPRINTS)}; "
            f"ultralytics {_ultralytics_version()}). gradkit replaces it with GradkitCallback.optimizer_step "
            "(gradkit/integrations/ultralytics/callback.py): compare the two, port the change, then add the new "
            "fingerprint to seams.OPTIMIZER_STEP_FINGERPRINTS"
        )


def albumentations_stage_index(compose: Any, dataset: Any, own_stage: type | None = None) -> int | None:
    """Position of Ultralytics' ``Albumentations`` stage (or gradkit's replacement) in a training pipeline.

    Returns None for a pipeline built without augmentation (``dataset.augment`` false: validation
    style), where there is nothing to replace. Raises when an augmenting pipeline lacks the stage,
    so a requested augmentation can never be dropped in favour of the stock pipeline.
    """
    from ultralytics.data.augment import Albumentations

    stages = getattr(compose, "transforms", None)
    where = f"{type(dataset).__name__}.build_transforms (ultralytics {_ultralytics_version()})"
    if not isinstance(stages, list):
        raise SeamError(f"{where} returned {type(compose).__name__} without a `transforms` list: gradkit cannot "
                        "install its augmentation stage, and will not train with the stock pipeline instead")
    kinds = (Albumentations, own_stage) if own_stage is not None else (Albumentations,)
    idx = next((i for i, t in enumerate(stages) if isinstance(t, kinds)), None)
    if idx is None and getattr(dataset, "augment", True):
        names = ", ".join(type(t).__name__ for t in stages)
        raise SeamError(f"no ultralytics.data.augment.Albumentations stage in the training transforms of {where}: "
                        f"[{names}]. gradkit's augmentation (augment.preset / transforms / copy_paste) replaces or "
                        "precedes that stage; training stops rather than running the stock pipeline")
    return idx


def _missing_parameters(fn: Any, expected: tuple[str, ...]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return []  # a builtin or C method without a signature: nothing to compare
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()):
        return []
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return [] if len(positional) >= len(expected) else list(expected[len(positional):])


def check_validator(validator: Any) -> None:
    """Raise unless the validator has the methods (and arities) the prediction recorder calls."""
    cls = type(validator)
    for name, params in VALIDATOR_METHODS.items():
        fn = getattr(validator, name, None)
        if not callable(fn):
            raise SeamError(f"{cls.__module__}.{cls.__qualname__} has no method {name} "
                            f"(ultralytics {_ultralytics_version()}): gradkit's report records predictions through "
                            f"{', '.join(VALIDATOR_METHODS)}")
        missing = _missing_parameters(fn, params)
        if missing:
            raise SeamError(f"{cls.__qualname__}.{name}{inspect.signature(fn)} no longer takes ({', '.join(params)}) "
                            f"as gradkit's prediction recorder calls it (ultralytics {_ultralytics_version()})")


def check_validator_results(validator: Any) -> None:
    """Raise unless a finished validator has every attribute the report reads, naming the first missing one."""
    for dotted in VALIDATOR_RESULTS:
        node = validator
        for i, part in enumerate(dotted.split(".")):
            if not hasattr(node, part):
                have = ".".join(dotted.split(".")[:i]) or type(validator).__qualname__
                raise SeamError(f"{type(validator).__qualname__}: {have} has no attribute {part!r} "
                                f"(gradkit's report reads validator.{dotted}; ultralytics {_ultralytics_version()})")
            node = getattr(node, part)


@functools.cache
def _coco_iou_shape(cls: type) -> str | None:
    fn = getattr(cls, "computeIoU", None)
    if fn is None:
        return f"{cls.__module__}.{cls.__qualname__} has no computeIoU"
    params = list(inspect.signature(fn).parameters)
    if params != ["self", "imgId", "catId"]:
        return f"{cls.__qualname__}.computeIoU{inspect.signature(fn)} is no longer (self, imgId, catId)"
    evaluate = _definer(cls, "evaluate")
    if "computeIoU" not in inspect.getsource(evaluate.evaluate):
        return f"{evaluate.__qualname__}.evaluate no longer calls computeIoU (an override would be ignored)"
    return None


def check_coco_iou_override(cls: type | None = None) -> None:
    """Raise unless faster-coco-eval's evaluator still computes IoUs through an overridable
    ``computeIoU(imgId, catId)``, which the report overrides to share IoUs between evaluations."""
    if cls is None:
        from faster_coco_eval import COCOeval_faster as cls
    problem = _coco_iou_shape(cls)
    if problem:
        import faster_coco_eval

        raise SeamError(f"faster-coco-eval {getattr(faster_coco_eval, '__version__', '?')}: {problem}; gradkit's "
                        "report (report/coco.py CocoEvaluation) overrides it")


def check_seams() -> None:
    """Every class-level check, at ``attach`` time: fail before training, not in the middle of it."""
    from ultralytics.models.yolo.detect import DetectionValidator

    check_optimizer_step()
    import ultralytics.data.augment as augment

    if not isinstance(getattr(augment, "Albumentations", None), type):
        raise SeamError(f"ultralytics {_ultralytics_version()} has no ultralytics.data.augment.Albumentations "
                        "stage for gradkit's augmentation to replace")
    for name, params in VALIDATOR_METHODS.items():
        fn = getattr(DetectionValidator, name, None)
        if not callable(fn) or _missing_parameters(fn, ("self", *params)):
            raise SeamError(f"DetectionValidator.{name} is missing or no longer takes ({', '.join(params)}) "
                            f"(ultralytics {_ultralytics_version()}); gradkit's report records predictions through it")
    check_coco_iou_override()
    from ultralytics.engine.trainer import BaseTrainer

    for problem in (_nan_recovery_shape(BaseTrainer), _epoch_metrics_shape(BaseTrainer),
                    _period_checkpoint_shape(BaseTrainer)):
        if problem:
            raise SeamError(f"{problem} (ultralytics {_ultralytics_version()})")
    warmup = getattr(BaseTrainer, "_get_warmup_iterations", None)
    if not callable(warmup) or _missing_parameters(warmup, ("self", "num_batches")):
        raise SeamError(f"BaseTrainer._get_warmup_iterations(num_batches) is gone (ultralytics "
                        f"{_ultralytics_version()}); gradkit plans the run's optimizer steps with it")
    import ultralytics.engine.trainer as trainer_module

    _check_det_dataset_shape(trainer_module)
    resume_may_change()


@functools.cache
def resume_may_change() -> frozenset[str]:
    """The arguments a resume may change: ``BaseTrainer.check_resume``'s ``allowed`` set (a user's ``batch=``,
    ``patience=``, ...) and ``data`` (it takes a new ``data=`` too). Every other argument that differs in a resumed
    run's args.yaml from the run's start Ultralytics rewrote itself (``model``, ``resume``, and ``optimizer=auto``'s
    choice). Read from the method's source, so an upgrade that changes the set changes this."""
    from ultralytics.engine.trainer import BaseTrainer

    tree = ast.parse(textwrap.dedent(inspect.getsource(BaseTrainer.check_resume)))
    for node in ast.walk(tree):
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["allowed"]
                and isinstance(node.value, ast.Set)
                and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.value.elts)):
            return frozenset({"data", *(e.value for e in node.value.elts)})
    raise SeamError(f"BaseTrainer.check_resume no longer lists the arguments a resume may change in a set named "
                    f"`allowed` (ultralytics {_ultralytics_version()}): gradkit's record of a resumed run cannot tell "
                    "them from the ones Ultralytics rewrites")


def resume_overrides(now: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """What the user changed on resume: the arguments a resume may change (:func:`resume_may_change`) whose value in
    the resumed trainer (``now``) is not the checkpoint's (``saved``, its ``train_args``). The others that differ
    from the run's start Ultralytics rewrote itself: an auto batch, ``optimizer=auto``'s choice, ``model``."""
    def plain(value: Any) -> Any:
        return json.loads(json.dumps(value, default=str))

    return {k: plain(now[k]) for k in sorted(resume_may_change()) if k in now and plain(now[k]) != plain(saved.get(k))}


# ====================================================================================== the patches
# Each function below installs one patch (or reads one private name) right after its check. Callers
# keep their own logic and pass it in; nothing outside this module touches these names.

# ------------------------------------------------------------------ trainer: the optimizer step
#: Set on the classes :func:`chain_optimizer_step_override` makes, so they are not taken for a user's override.
_STEP_CLASS_MARK = "_gradkit_step_class"
_STEP_CLASSES: dict[type, type] = {}


def optimizer_step_override(trainer_cls: type) -> type | None:
    """The user class that overrides ``optimizer_step``, or None when the step is Ultralytics' own.

    Checks first (:func:`check_optimizer_step`) that Ultralytics' own step is the code gradkit's mirrors.
    """
    check_optimizer_step()
    for cls in trainer_cls.__mro__:
        if "optimizer_step" in vars(cls) and not getattr(cls, _STEP_CLASS_MARK, False):
            return None if cls.__module__.startswith("ultralytics.") else cls
    return None


def replace_optimizer_step(trainer: Any, step: Callable[[], None]) -> None:
    """``trainer.optimizer_step()`` runs ``step`` (the instance attribute shadows the class's method).

    Guarded by :func:`check_optimizer_step`: the base step must be the code gradkit's step mirrors.
    """
    check_optimizer_step()
    trainer.optimizer_step = step


def _with_gradkit_step(trainer_cls: type) -> type:
    """``trainer_cls`` with gradkit's step just above ``BaseTrainer`` in the MRO.

    The user's ``super().optimizer_step()`` then reaches gradkit's step instead of Ultralytics'.
    """
    if getattr(trainer_cls, _STEP_CLASS_MARK, False):
        return trainer_cls
    if trainer_cls not in _STEP_CLASSES:
        from ultralytics.engine.trainer import BaseTrainer

        class GradkitStep(BaseTrainer):
            _gradkit_step_class = True

            def optimizer_step(self):
                self._gradkit_step()

        _STEP_CLASSES[trainer_cls] = type(trainer_cls.__name__, (trainer_cls, GradkitStep),
                                          {_STEP_CLASS_MARK: True, "__module__": trainer_cls.__module__})
    return _STEP_CLASSES[trainer_cls]


def chain_optimizer_step_override(trainer: Any, step: Callable[[], None]) -> Callable[[], None]:
    """Put ``step`` where a user override's ``super().optimizer_step()`` lands; return the override, bound.

    The trainer's class becomes a subclass of itself with gradkit's step just above ``BaseTrainer``
    (one such class per trainer class), so the user's code runs unchanged around gradkit's step.
    """
    check_optimizer_step()
    trainer._gradkit_step = step
    trainer.__class__ = _with_gradkit_step(type(trainer))
    user_step = type(trainer).optimizer_step
    return lambda: user_step(trainer)


def warmup_iterations(trainer: Any, num_batches: int) -> int:
    """``BaseTrainer._get_warmup_iterations``: the iterations over which Ultralytics ramps accumulate and lr.

    0 for a trainer-shaped object without it (no warmup); :func:`check_seams` checks Ultralytics' own.
    """
    fn = getattr(trainer, "_get_warmup_iterations", None)
    return fn(num_batches) if fn is not None else 0


# ------------------------------------------------------------------ trainer: NaN recovery
def _trainer_loop(trainer_cls: type) -> Any:
    from ultralytics.engine.trainer import BaseTrainer

    return getattr(trainer_cls, "_do_train", None) or BaseTrainer._do_train


@functools.cache
def _nan_recovery_shape(trainer_cls: type) -> str | None:
    handle = getattr(trainer_cls, "_handle_nan_recovery", None)
    if not callable(handle):
        return f"{trainer_cls.__qualname__} has no _handle_nan_recovery"
    if _missing_parameters(handle, ("self", "epoch")):
        return f"{trainer_cls.__qualname__}._handle_nan_recovery{inspect.signature(handle)} no longer takes (epoch)"
    if "self._handle_nan_recovery(" not in inspect.getsource(_trainer_loop(trainer_cls)):
        return "the training loop (_do_train) no longer calls self._handle_nan_recovery(epoch)"
    return None


def follow_nan_recovery(trainer: Any, after_recovery: Callable[[], None]) -> None:
    """Call ``after_recovery()`` each time ``BaseTrainer._handle_nan_recovery`` has reloaded ``last.pt``.

    Ultralytics rolls model, optimizer and EMA back and repeats the epoch; the caller reloads its
    own state with them. Checked: the method exists, takes ``epoch``, and the loop still calls it.
    """
    problem = _nan_recovery_shape(type(trainer))
    if problem:
        raise SeamError(f"{problem} (ultralytics {_ultralytics_version()}): gradkit reloads its step counter and "
                        "clip and alert history when Ultralytics' NaN recovery reloads last.pt")
    handle = trainer._handle_nan_recovery

    def handle_nan_recovery(epoch):
        recovered = handle(epoch)
        if recovered:
            after_recovery()
        return recovered

    trainer._handle_nan_recovery = handle_nan_recovery


# ------------------------------------------------------------------ trainer: the epoch's logged values
def _is_self_lr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "lr" and isinstance(node.value, ast.Name) \
        and node.value.id == "self"


@functools.cache
def _epoch_metrics_shape(trainer_cls: type) -> str | None:
    """None when the loop sets ``self.lr``, then fires ``on_train_epoch_end``, then logs ``**self.lr``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(_trainer_loop(trainer_cls))))
    sets, fires, logs = [], [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(_is_self_lr(t) for t in node.targets):
            sets.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run_callbacks" \
                and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "on_train_epoch_end":
            fires.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is None and _is_self_lr(v) for k, v in zip(node.keys, node.values,
                                                                                            strict=True)):
            logs.append(node.lineno)
    fire = fires[0] if len(fires) == 1 else None
    if fire is None or not any(s < fire for s in sets) or not any(u > fire for u in logs):
        return ("the training loop (_do_train) no longer sets trainer.lr, fires on_train_epoch_end, then logs "
                "**trainer.lr (results.csv, TensorBoard), in that order")
    return None


#: How ``BaseTrainer.save_model`` names the checkpoint it keeps every ``save_period`` epochs (8.4.190).
PERIOD_CHECKPOINT_CODE = ("(self.save_period > 0) and (self.epoch % self.save_period == 0)",
                          'self.wdir / f"epoch{self.epoch}.pt"')


@functools.cache
def _period_checkpoint_shape(trainer_cls: type) -> str | None:
    """None when ``save_model`` still keeps ``epoch{N}.pt`` on the condition :func:`period_checkpoint` mirrors."""
    code = inspect.getsource(trainer_cls.save_model)
    if all(part in code for part in PERIOD_CHECKPOINT_CODE):
        return None
    return ("BaseTrainer.save_model no longer saves wdir/epoch{N}.pt every save_period epochs as gradkit mirrors it "
            "(its plugin state is saved beside each such checkpoint)")


def period_checkpoint(trainer: Any) -> Path | None:
    """The ``epoch{N}.pt`` Ultralytics' ``save_model`` wrote beside last.pt this epoch (``save_period``), else None:
    a resume may start from it, so the plugin's state belongs beside it too. ``BaseTrainer.save_model``'s naming
    is checked at attach (:func:`check_seams`); a subclass's own ``save_model`` may save otherwise, so the file
    must be there."""
    if trainer.save_period <= 0 or trainer.epoch % trainer.save_period:
        return None
    path = Path(trainer.wdir) / f"epoch{trainer.epoch}.pt"
    return path if path.is_file() else None


def publish_epoch_metrics(trainer: Any, values: dict[str, float]) -> None:
    """Add ``values`` to the epoch's logged columns (call at ``on_train_epoch_end``).

    At that point ``trainer.lr`` is the dict Ultralytics passes, after the callbacks, to results.csv,
    TensorBoard and its other loggers; checked against the loop's code, once per trainer class.
    """
    problem = _epoch_metrics_shape(type(trainer))
    if problem is None and not isinstance(getattr(trainer, "lr", None), dict):
        problem = f"trainer.lr is {type(getattr(trainer, 'lr', None)).__name__}, not a dict"
    if problem:
        raise SeamError(f"{problem} (ultralytics {_ultralytics_version()}): gradkit's grad/* epoch columns reach "
                        "the loggers through it")
    trainer.lr.update(values)


# ------------------------------------------------------------------ the model
def replace_model_tune(model: Any, replacement: Callable[..., Any]) -> None:
    """``model.tune(...)`` calls ``replacement``. No check: if a release drops ``tune``, there is nothing to refuse."""
    model.tune = replacement


# ------------------------------------------------------------------ the training dataset's transforms
#: Set on a dataset by :func:`install_dataset_transforms`: what it installed (the caller's tag).
_DATASET_MARK = "_gradkit_augment"


def dataset_augmentation(dataset: Any) -> Any:
    """The tag :func:`install_dataset_transforms` installed on ``dataset`` with, None before."""
    return getattr(dataset, _DATASET_MARK, None)


def install_dataset_transforms(dataset: Any, build: Callable[[Callable[[Any], Any], Any], Any], hyp: Any,
                               tag: Any) -> None:
    """Make every (re)build of the dataset's transforms ``build(stock_build_transforms, hyp)``; rebuild them now.

    Ultralytics rebuilds them through ``dataset.build_transforms`` at ``close_mosaic``; ``build`` edits
    the stock pipeline with :func:`edit_albumentations_stage`, whose check stops training when the
    stage it replaces is gone.
    """
    stock = dataset.build_transforms

    def build_transforms(hyp=None):
        return build(stock, hyp)

    dataset.build_transforms = build_transforms
    dataset.transforms = build_transforms(copy(hyp))
    setattr(dataset, _DATASET_MARK, tag)


#: Set on a trainer by :func:`watch_mosaic_closing`: whether Ultralytics has closed mosaic in this run.
_MOSAIC_CLOSED = "_gradkit_mosaic_closed"
#: What :func:`resize_training_images` reads and changes on the training dataset.
_RESIZED_DATASET_PARTS = ("imgsz", "ni", "ims", "im_hw0", "im_hw", "buffer", "cache", "build_transforms",
                          "close_mosaic", "check_cache_ram", "cache_images")


def watch_mosaic_closing(trainer: Any) -> None:
    """Mark the trainer when Ultralytics closes mosaic (``BaseTrainer._close_dataloader_mosaic``), so a rebuild of
    the training transforms after it builds them closed too (idempotent)."""
    close = getattr(trainer, "_close_dataloader_mosaic", None)
    if not callable(close):
        raise SeamError(f"ultralytics {_ultralytics_version()}: {type(trainer).__name__} has no "
                        "_close_dataloader_mosaic; gradkit's size.final_scale rebuilds the training transforms as "
                        "Ultralytics last built them and cannot tell whether mosaic is closed")
    if hasattr(trainer, _MOSAIC_CLOSED):
        return
    setattr(trainer, _MOSAIC_CLOSED, False)

    def closing() -> None:
        close()
        setattr(trainer, _MOSAIC_CLOSED, True)

    trainer._close_dataloader_mosaic = closing


def training_images_size(trainer: Any) -> int:
    """The size the training dataset reads images at now."""
    return int(trainer.train_loader.dataset.imgsz)


def resize_training_images(trainer: Any, imgsz: int) -> None:
    """Read the training images at ``imgsz`` from the next batch on.

    The dataset's size is changed, the images it holds at the old size dropped (cached in RAM again where
    they were, if Ultralytics' memory check passes at the new size), its transforms rebuilt through
    ``build_transforms`` (mosaic closed where :func:`watch_mosaic_closing` saw Ultralytics close it) and the loader's
    iterator reset, as Ultralytics' own ``close_mosaic`` does. ``trainer.args`` is not changed: validation keeps
    its size.
    """
    loader = trainer.train_loader
    dataset = loader.dataset
    missing = [f"{type(dataset).__name__}.{n}" for n in _RESIZED_DATASET_PARTS if not hasattr(dataset, n)]
    if not callable(getattr(loader, "reset", None)):
        missing.append(f"{type(loader).__name__}.reset")
    if not hasattr(trainer, _MOSAIC_CLOSED):
        missing.append("gradkit's watch of mosaic closing (watch_mosaic_closing first)")
    if missing:
        raise SeamError(f"ultralytics {_ultralytics_version()}: no {', '.join(missing)}; gradkit's "
                        "size.final_scale cannot change the size training images are read at")
    loader.reset()  # first: the old iterator's workers let go of their copies of a RAM cache before it is refilled
    dataset.imgsz = imgsz
    dataset.ims, dataset.im_hw0, dataset.im_hw = [None] * dataset.ni, [None] * dataset.ni, [None] * dataset.ni
    dataset.buffer = []
    if dataset.cache == "ram" and dataset.check_cache_ram():  # as BaseDataset.__init__ decides it
        dataset.cache_images()
    hyp = copy(trainer.args)
    if getattr(trainer, _MOSAIC_CLOSED):
        dataset.close_mosaic(hyp)
    else:
        dataset.transforms = dataset.build_transforms(hyp)


def seed_stock_albumentations(dataset: Any, seed: int) -> None:
    """Seed Ultralytics' own ``Albumentations`` stage of a dataset, where it runs: its ``A.Compose`` draws
    from a private generator that global seeds do not reach (Albumentations 2). A stage whose Compose
    lacks ``set_random_seed`` is a changed dependency, and raises rather than leaving a sample unseeded."""
    from ultralytics.data.augment import Albumentations

    for stage in getattr(getattr(dataset, "transforms", None), "transforms", None) or []:
        compose = getattr(stage, "transform", None) if isinstance(stage, Albumentations) else None
        if compose is None:
            continue  # not the stock stage, or albumentations is not installed and the stage is a no-op
        if not callable(getattr(compose, "set_random_seed", None)):
            raise SeamError(f"ultralytics {_ultralytics_version()}: its Albumentations stage holds a "
                            f"{type(compose).__name__} without set_random_seed; gradkit cannot seed it")
        compose.set_random_seed(seed)


def edit_albumentations_stage(compose: Any, dataset: Any, own_stage: type, replace_with: Any = None,
                              insert_before: Any = None) -> Any:
    """Replace the ``Albumentations`` stage of a training pipeline and/or insert a stage before it.

    Checked by :func:`albumentations_stage_index` (raises when an augmenting pipeline lacks it); a
    validation-style pipeline (``dataset.augment`` false) is returned unchanged.
    """
    idx = albumentations_stage_index(compose, dataset, own_stage)
    if idx is None:
        return compose
    stages = compose.transforms
    if replace_with is not None:
        stages[idx] = replace_with
    if insert_before is not None:
        stages.insert(idx, insert_before)
    return compose


#: Probe results per warp class (None: the filter can be replaced as :func:`replace_affine_box_filter` does).
_AFFINE_PROBES: dict[type, str | None] = {}
#: The probe: one box sticking out of a 64 px image, through a warp that moves nothing.
_PROBE_BOX, _PROBE_CLIPPED = [40.0, 10.0, 90.0, 20.0], [40.0, 10.0, 64.0, 20.0]


def _filter_affine_boxes(stage: Any, keep: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Make one warp keep the boxes ``keep(warped, clipped)`` keeps: its own ``apply_bboxes`` is followed to
    learn each box after the warp and before clipping; ``box_candidates`` then gets the clipped boxes."""
    stock_apply_bboxes = getattr(stage, "_gradkit_stock_apply_bboxes", stage.apply_bboxes)
    last: list[np.ndarray] = []

    def apply_bboxes(bboxes, M):
        out = stock_apply_bboxes(bboxes, M)
        last[:] = [np.array(out, dtype=float)]  # a copy: the warp clips its boxes in place afterwards
        return out

    def box_candidates(box1=None, box2=None, **_thresholds):  # whatever Ultralytics passes besides the boxes
        warped = last.pop() if last else None
        if warped is None or warped.T.shape != np.shape(box2):
            raise SeamError(f"{type(stage).__name__}.box_candidates was called without its own apply_bboxes "
                            "before it (ultralytics changed the warp): gradkit cannot tell how much of each box is "
                            "in view")
        return keep(warped.T, np.asarray(box2))

    stage._gradkit_stock_apply_bboxes = stock_apply_bboxes
    stage.apply_bboxes, stage.box_candidates = apply_bboxes, box_candidates


def _probe_affine_filter(warp_cls: type) -> str | None:
    """What keeps gradkit's filter from working in this warp class, or None: a real warp of one box that sticks
    out of the image, checked to hand gradkit's filter the box warped and the box clipped."""
    import random

    from ultralytics.utils.instance import Instances

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    states = random.getstate(), np.random.get_state()
    try:
        probe = warp_cls(degrees=0.0, translate=0.0, scale=0.0, shear=0.0, perspective=0.0, size=(64, 64))
        _filter_affine_boxes(probe, lambda warped, clipped: seen.append((warped, clipped)) or np.ones(1, bool))
        probe({"img": np.zeros((64, 64, 3), np.uint8), "cls": np.zeros((1, 1), np.float32),
               "instances": Instances(np.array([_PROBE_BOX], np.float32), bbox_format="xyxy", normalized=False)})
    except (AttributeError, IndexError, KeyError, SeamError, TypeError, ValueError) as exc:  # what a change raises
        return f"{warp_cls.__name__} could not warp a probe box with gradkit's filter ({type(exc).__name__}: {exc})"
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
    if not seen:
        return f"{warp_cls.__name__}.apply_instances no longer calls box_candidates"
    warped, clipped = (np.asarray(b, float).T.reshape(-1) for b in seen[0])
    if not (np.allclose(warped, _PROBE_BOX, atol=1e-3) and np.allclose(clipped, _PROBE_CLIPPED, atol=1e-3)):
        return (f"{warp_cls.__name__} handed box_candidates {clipped.round(2).tolist()} after apply_bboxes gave "
                f"{warped.round(2).tolist()}; expected the clipped box {_PROBE_CLIPPED} after {_PROBE_BOX}")
    return None


def _affine_stages(node: Any, seen: set[int]) -> list[Any]:
    """Every ``RandomPerspective`` in a pipeline, also inside the pre-transforms of the mosaic, MixUp,
    CutMix and CopyPaste stages (they share the main one, or hold their own)."""
    from ultralytics.data.augment import RandomPerspective

    if node is None or id(node) in seen:
        return []
    seen.add(id(node))
    if isinstance(node, RandomPerspective):
        return [node]
    found = []
    for child in (*(getattr(node, "transforms", None) or []), getattr(node, "pre_transform", None)):
        if child is not None and not isinstance(child, str | bytes | dict):
            found += _affine_stages(child, seen)
    return found


def replace_affine_box_filter(compose: Any, dataset: Any, keep: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Any:
    """Make every affine warp of a training pipeline keep the boxes ``keep(warped, clipped)`` keeps.

    Ultralytics' ``RandomPerspective.box_candidates`` drops boxes with a side of 2 px or less or an aspect
    ratio of 100 or more: long thin defects. The replacement is set on the pipeline's own instances, so
    validation and other datasets keep the stock filter. Checked before it is set, by a real warp of a probe
    box per warp class (:func:`_probe_affine_filter`), and that an augmenting pipeline holds a warp at all; a
    validation-style pipeline (``dataset.augment`` false) is returned unchanged.
    """
    if not getattr(dataset, "augment", True):
        return compose
    stages = _affine_stages(compose, set())
    problems = ["no RandomPerspective in the training transforms"] if not stages else []
    for warp_cls in {type(stage) for stage in stages}:
        if warp_cls not in _AFFINE_PROBES:
            _AFFINE_PROBES[warp_cls] = _probe_affine_filter(warp_cls)
        problems += [_AFFINE_PROBES[warp_cls]] if _AFFINE_PROBES[warp_cls] else []
    if problems:
        raise SeamError(f"{'; '.join(problems)} (ultralytics {_ultralytics_version()}, {type(dataset).__name__}."
                        "build_transforms): gradkit keeps thin boxes through that warp's filter and will not "
                        "train with the stock filter, which drops them")
    for stage in stages:
        _filter_affine_boxes(stage, keep)
    return compose


def ultralytics_box_filter_thresholds() -> tuple[float, float] | None:
    """(smallest side in px, largest aspect ratio) of Ultralytics' own warp filter, read from the defaults of
    ``RandomPerspective.box_candidates``; None when it no longer has them."""
    from ultralytics.data.augment import RandomPerspective

    try:
        params = inspect.signature(RandomPerspective.box_candidates).parameters
        return float(params["wh_thr"].default), float(params["ar_thr"].default)
    except (KeyError, TypeError, ValueError):
        return None


# ------------------------------------------------------------------ the validator
#: Set on a validator by :func:`set_prediction_recorder`.
_RECORDER_MARK = "_gradkit_recorder"


def wrap_update_metrics(validator: Any, after: Callable[[Any, Any], None]) -> None:
    """``validator.update_metrics(preds, batch)`` runs Ultralytics' own, then ``after(preds, batch)``.

    Checked by :func:`check_validator`: the methods the recorder calls, with their arities.
    """
    check_validator(validator)
    original = validator.update_metrics

    def update_metrics(preds, batch):
        original(preds, batch)
        after(preds, batch)

    validator.update_metrics = update_metrics


#: The per-image statistics a detection validator's ``metrics.stats`` gathers (one list entry per image, from
#: ``update_metrics``) and ``ap_per_class`` computes AP from; ``get_stats`` clears them.
IMAGE_STAT_KEYS = ("tp", "conf", "pred_cls", "target_cls")


def latest_image_stats(validator: Any, images: int) -> list[dict[str, np.ndarray]]:
    """Copies of the statistics ``update_metrics`` just appended for its last ``images`` images: per image, each
    prediction's hits at the ten IoU thresholds (``tp``), its confidence and class, and the labels' classes."""
    stats = getattr(getattr(validator, "metrics", None), "stats", None)
    if (not isinstance(stats, dict) or any(not isinstance(stats.get(k), list) for k in IMAGE_STAT_KEYS)
            or any(len(stats[k]) < images for k in IMAGE_STAT_KEYS)):
        raise SeamError(f"{type(validator).__qualname__}.metrics.stats is no longer a dict of per-image lists "
                        f"{', '.join(IMAGE_STAT_KEYS)} (ultralytics {_ultralytics_version()}): gradkit's report "
                        "resamples the images from them")
    return [{k: np.array(stats[k][i]) for k in IMAGE_STAT_KEYS} for i in range(-images, 0)]


def check_recorded_statistics(image_stats: Sequence[dict[str, np.ndarray]], map50: float, map50_95: float) -> None:
    """Raise unless the per-image statistics, scored together by :func:`average_precision`, give the validator's
    own mAP50 and mAP50-95: what the report resamples is then what the validator scored, image by image."""
    whole = [np.concatenate([s[k] for s in image_stats]) for k in IMAGE_STAT_KEYS]
    if not len(whole[3]):  # no label: the validator's mAP is its 0 by default
        return
    _, ap = average_precision(*whole)
    if abs(float(ap[:, 0].mean()) - map50) > 1e-9 or abs(float(ap.mean()) - map50_95) > 1e-9:
        raise SeamError(f"the per-image statistics recorded from the validator score mAP50 {ap[:, 0].mean():.6f}, "
                        f"mAP50-95 {ap.mean():.6f}; the validator reported {map50:.6f}, {map50_95:.6f} (ultralytics "
                        f"{_ultralytics_version()}): its metrics.stats no longer hold one entry per image")


def average_precision(tp: np.ndarray, conf: np.ndarray, pred_cls: np.ndarray, target_cls: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(classes, AP of each at the IoU thresholds ``tp`` holds: shape (classes, 10) for 0.5:0.95, (classes, 1) for
    IoU 0.5 alone): Ultralytics' ``ap_per_class``, the validator's own computation, for the classes ``target_cls``
    holds."""
    from ultralytics.utils.metrics import ap_per_class

    out = ap_per_class(tp, conf, pred_cls, target_cls)
    classes, ap = (np.asarray(out[6]), np.asarray(out[5])) if len(out) == 12 else (None, None)
    if classes is None or ap.shape != (len(classes), tp.shape[1] if tp.ndim == 2 else 10):
        raise SeamError(f"ultralytics.utils.metrics.ap_per_class no longer returns (tp, fp, p, r, f1, ap, classes, "
                        f"...) as gradkit's report reads it (ultralytics {_ultralytics_version()})")
    return classes.astype(int), ap


#: What a detection validator's ``postprocess`` gives ``update_metrics`` for each image.
PREDICTION_KEYS = ("bboxes", "conf", "cls")


def replace_predictions(validator: Any, replace: Callable[[Any, Any], Any]) -> None:
    """``validator.update_metrics(preds, batch)`` scores ``replace(preds, batch)`` instead of the model's own
    predictions, and whatever wrapped ``update_metrics`` before (the report's recorder) sees them too.

    Checked by :func:`check_validator` (the methods and arities) and, at the first batch, that each
    prediction is the dict of :data:`PREDICTION_KEYS` the replacement must imitate.
    """
    check_validator(validator)
    check_mirrored_dataset_code()
    if not callable(getattr(validator, "postprocess", None)) or _missing_parameters(validator.postprocess, ("preds",)):
        raise SeamError(f"{type(validator).__qualname__}.postprocess(preds) is gone (ultralytics "
                        f"{_ultralytics_version()}): gradkit's tiled validation runs each tile through it")
    original = validator.update_metrics

    def update_metrics(preds, batch):
        if preds and not (isinstance(preds[0], dict) and set(PREDICTION_KEYS) <= preds[0].keys()):
            found = sorted(preds[0]) if isinstance(preds[0], dict) else type(preds[0]).__name__
            raise SeamError(f"{type(validator).__qualname__}.postprocess gives {found} per image, not a dict with "
                            f"{', '.join(PREDICTION_KEYS)} (ultralytics {_ultralytics_version()}): gradkit's tiled "
                            "validation replaces those predictions with its own")
        original(replace(preds, batch), batch)

    validator.update_metrics = update_metrics


def read_like_dataset(validator: Any, path: str) -> Any:
    """The image at ``path`` as the validator's dataset reads it (Ultralytics' ``imread`` with the dataset's
    ``cv2_flag``: colour, grey or unchanged by ``channels``), before any resize."""
    from ultralytics.utils.patches import imread

    flag = getattr(validator.dataloader.dataset, "cv2_flag", None)
    if flag is None:
        raise SeamError(f"{type(validator.dataloader.dataset).__qualname__} has no cv2_flag (ultralytics "
                        f"{_ultralytics_version()}): gradkit's tiled validation reads each image as the dataset does")
    return imread(path, flags=flag)


def image_placement(validator: Any, si: int, batch: Any) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """Image ``si`` of a validation batch: its file, the letterbox's (gain_x, gain_y) and (pad_x, pad_y), which
    map its pixels into the batch's (``x * gain_x + pad_x``; Ultralytics' ``scale_boxes`` undoes it).

    Uses the private ``_prepare_batch`` that :func:`check_validator` checked.
    """
    pbatch = validator._prepare_batch(si, batch)
    missing = [k for k in ("ratio_pad", "im_file") if k not in pbatch]
    if missing:
        raise SeamError(f"{type(validator).__qualname__}._prepare_batch no longer gives {', '.join(missing)} "
                        f"(ultralytics {_ultralytics_version()}): gradkit's tiled validation places its detections "
                        "in each batch's letterbox with them")
    (gain_y, gain_x), (pad_x, pad_y) = pbatch["ratio_pad"]
    return str(pbatch["im_file"]), (float(gain_x), float(gain_y)), (float(pad_x), float(pad_y))


#: ``code_fingerprint`` of the Ultralytics code whose arithmetic :func:`tile_canvas` mirrors (8.4.190): how a
#: validation dataset resizes an image (``load_image``, rect mode) and the batch shape it pads it to
#: (``set_rectangle``), both of ``ultralytics.data.base.BaseDataset``.
MIRRORED_DATASET_FINGERPRINTS = {"load_image": "00f60f73c37113da", "set_rectangle": "5a17c7745c7473f3"}


def check_mirrored_dataset_code() -> None:
    """Raise unless the dataset code :func:`tile_canvas` mirrors is the code it was written against."""
    from ultralytics.data.base import BaseDataset

    for name, expected in MIRRORED_DATASET_FINGERPRINTS.items():
        fn = getattr(BaseDataset, name, None)
        found = code_fingerprint(fn) if callable(fn) else "missing"
        if found != expected:
            raise SeamError(f"ultralytics.data.base.BaseDataset.{name} is not the code gradkit's tiled validation "
                            f"mirrors (code fingerprint {found}, expected {expected}; ultralytics "
                            f"{_ultralytics_version()}): compare it with seams.tile_canvas, port the change, then "
                            "update seams.MIRRORED_DATASET_FINGERPRINTS")


def tile_canvas(validator: Any, crop: Any, size: int) -> tuple[Any, float, int, int]:
    """``crop`` as the validator's dataset would give an image of it at ``imgsz=size``: resized to ``size`` on
    its long side (``load_image``, rect mode), then placed by ``LetterBox(scaleup=False)`` on the batch shape
    of an image of its aspect (``set_rectangle``: aspect x size / stride + pad, rounded up, x stride; a
    square of ``size`` without ``rect``). Returns (canvas, resize ratio, left padding, top padding).
    Checked by :func:`check_mirrored_dataset_code` and that the dataset has ``rect``, ``pad`` and ``stride``."""
    import math

    import cv2
    import numpy as np
    from ultralytics.data.augment import LetterBox

    dataset = validator.dataloader.dataset
    missing = [a for a in ("rect", "pad", "stride") if not hasattr(dataset, a)]
    if missing:
        raise SeamError(f"{type(dataset).__qualname__} has no {', '.join(missing)} (ultralytics "
                        f"{_ultralytics_version()}): gradkit's tiled validation places each tile as the dataset "
                        "places an image of the tile's size")
    h0, w0 = crop.shape[:2]
    r = size / max(h0, w0)
    if r != 1:
        crop = cv2.resize(crop, (min(math.ceil(w0 * r), size), min(math.ceil(h0 * r), size)),
                          interpolation=cv2.INTER_LINEAR)
    h, w = crop.shape[:2]
    shape = (size, size)
    if dataset.rect:
        ar = h / w
        aspect = np.array([ar, 1.0] if ar < 1 else [1.0, 1 / ar] if ar > 1 else [1.0, 1.0])
        cells = np.ceil(aspect * size / dataset.stride + dataset.pad).astype(int)
        shape = tuple(int(v) for v in cells * dataset.stride)
    letterbox = LetterBox(new_shape=shape, scaleup=False)
    labels = {"img": crop}
    params = letterbox.get_params(labels)
    return letterbox.apply_image(labels, params)["img"], r, int(params["left"]), int(params["top"])


def scaled_predictions(validator: Any, si: int, pred: Any, batch: Any) -> tuple[Any, Any]:
    """(prepared batch, predictions in original-image pixels) of image ``si``, as ``pred_to_json`` computes them.

    Uses the private ``_prepare_batch`` / ``_prepare_pred`` that :func:`wrap_update_metrics` checked.
    """
    pbatch = validator._prepare_batch(si, batch)
    return pbatch, validator.scale_preds(validator._prepare_pred(pred), pbatch)


#: Set on a validator by :func:`set_tile_geometry`.
_TILES_MARK = "_gradkit_tiles"


def set_tile_geometry(validator: Any, geometry: dict[str, int]) -> None:
    """Mark ``validator`` as scoring through tiles of this geometry (read by :func:`tile_geometry`). On the
    validator, not on the callback: Ultralytics deep-copies registered default callbacks into each model."""
    setattr(validator, _TILES_MARK, dict(geometry))


def tile_geometry(validator: Any) -> dict[str, int] | None:
    """What :func:`set_tile_geometry` put on ``validator``, None for a validation of whole images."""
    return getattr(validator, _TILES_MARK, None)


def set_prediction_recorder(validator: Any, recorder: Any) -> None:
    setattr(validator, _RECORDER_MARK, recorder)


def prediction_recorder(validator: Any) -> Any:
    """The recorder :func:`set_prediction_recorder` put on ``validator``, None without one."""
    return getattr(validator, _RECORDER_MARK, None)


def json_predictions(validator: Any) -> list[dict[str, Any]]:
    """The validator's COCO-json predictions (``jdict``, filled with ``save_json=True``)."""
    if not hasattr(validator, "jdict"):
        raise SeamError(f"{type(validator).__qualname__} has no jdict (ultralytics {_ultralytics_version()}): "
                        "gradkit's report reads the COCO-json predictions from it when it did not record them")
    return validator.jdict or []


# ------------------------------------------------------------------ check_det_dataset
_DATASET_FUNCTION = "check_det_dataset"
#: Ultralytics' own functions that gradkit replaced, by name (kept across repeated installs).
_STOCK: dict[str, Callable[..., Any]] = {}


def stock_check_det_dataset() -> Callable[..., Any]:
    """Ultralytics' own ``check_det_dataset`` (downloads), also after :func:`replace_check_det_dataset`."""
    import ultralytics.data.utils as data_utils

    return _STOCK.get(_DATASET_FUNCTION) or getattr(data_utils, _DATASET_FUNCTION)


def _check_det_dataset_shape(trainer_module: Any) -> None:
    stock = stock_check_det_dataset()
    missing = [p for p in ("autodownload", "split") if p not in inspect.signature(stock).parameters]
    where = f"(ultralytics {_ultralytics_version()}); gradkit replaces it so no data file's download: code runs"
    if missing:
        raise SeamError(f"ultralytics.data.utils.check_det_dataset{inspect.signature(stock)} no longer takes "
                        f"{', '.join(missing)} {where}")
    if not hasattr(trainer_module, _DATASET_FUNCTION):
        raise SeamError(f"{trainer_module.__name__} no longer imports check_det_dataset by name {where}")


def replace_check_det_dataset(plain: Callable[..., Any], for_trainer: Callable[..., Any]) -> None:
    """Replace ``check_det_dataset`` everywhere Ultralytics looks it up: ``for_trainer`` in the trainer's
    module, ``plain`` elsewhere (later ``from ... import check_det_dataset`` get ``plain``)."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_module

    _check_det_dataset_shape(trainer_module)
    original = _STOCK.setdefault(_DATASET_FUNCTION, getattr(data_utils, _DATASET_FUNCTION))
    setattr(data_utils, _DATASET_FUNCTION, plain)
    for name, module in list(sys.modules.items()):
        if name.startswith("ultralytics.") and getattr(module, _DATASET_FUNCTION, None) is original:
            setattr(module, _DATASET_FUNCTION, for_trainer if name == trainer_module.__name__ else plain)
    setattr(trainer_module, _DATASET_FUNCTION, for_trainer)


_CACHE_LOADER = "load_dataset_cache_file"
_CACHE_WRITER = "save_dataset_cache_file"


def replace_label_cache_io(load: Callable[[Path], dict], save: Callable[[str, Path, dict, str], None]) -> None:
    """Replace ``load_dataset_cache_file`` (which unpickles a dataset's ``labels/*.cache`` with
    ``allow_pickle=True``) and ``save_dataset_cache_file`` (which writes that file beside the user's labels,
    replacing one already there) in ``ultralytics.data.utils`` and in every Ultralytics module that imported
    them by name; the datasets' label loading must be among them, or the guard would not guard."""
    import ultralytics.data.dataset as dataset_module
    import ultralytics.data.utils as data_utils

    for name, replacement in ((_CACHE_LOADER, load), (_CACHE_WRITER, save)):
        _replace_everywhere(dataset_module, data_utils, name, replacement)


def _replace_everywhere(dataset_module: Any, data_utils: Any, name: str, replacement: Callable[..., Any]) -> None:
    why = "gradkit replaces it so that no label cache is unpickled or written into a dataset"
    if not hasattr(dataset_module, name):
        raise SeamError(f"ultralytics.data.dataset no longer imports {name} by name (ultralytics "
                        f"{_ultralytics_version()}); {why}")
    original = _STOCK.setdefault(name, getattr(data_utils, name))
    for module_name, module in [("ultralytics.data.utils", data_utils), *sys.modules.items()]:
        if module_name.startswith("ultralytics.") and getattr(module, name, None) in (original, replacement):
            setattr(module, name, replacement)
    if getattr(dataset_module, name) is not replacement:
        raise SeamError(f"ultralytics.data.dataset.{name} is neither Ultralytics' own nor gradkit's "
                        f"(another plugin replaced it?); {why}")


_IMAGE_CACHES = "npy_files"
#: Where BaseDataset names, reads and writes its per-image ``.npy`` caches; the redirect must reach them all.
_IMAGE_CACHE_USERS = ("__init__", "load_image", "cache_images_to_disk")
#: The one place ``ultralytics.data.base`` may build a ``.npy`` path: the assignment the property intercepts.
_IMAGE_CACHE_NAMING = 'self.npy_files = [Path(f).with_suffix(".npy") for f in self.im_files]'
#: gradkit's mapping of an image file to its cache (set by redirect_image_caches).
_image_cache_redirect: dict[str, Callable[[Path], Path]] = {}


def redirect_image_caches(redirect: Callable[[Path], Path]) -> None:
    """Route ``BaseDataset``'s per-image ``.npy`` caches (stock: beside each image, read in every cache mode,
    overwritten when of another shape, deleted when unreadable, written with ``cache=disk``) through
    ``redirect(image file)``: ``npy_files`` becomes a property whose setter replaces the paths Ultralytics
    assigns. The list is kept in the instance's own ``npy_files`` slot, so a dataset unpickled in a process
    without gradkit (a spawned dataloader worker) still reads the redirected paths."""
    import ultralytics.data.base as base_module
    from ultralytics.data.base import BaseDataset

    _check_image_cache_shape(base_module, BaseDataset)
    _image_cache_redirect["image"] = redirect
    if not isinstance(BaseDataset.__dict__.get(_IMAGE_CACHES), property):
        BaseDataset.npy_files = property(_redirected_caches, _redirect_caches)


def _check_image_cache_shape(base_module: Any, dataset_class: Any) -> None:
    source = _source(base_module)
    if source.count('.with_suffix(".npy")') != 1 or _IMAGE_CACHE_NAMING not in source:
        raise SeamError(f"ultralytics {_ultralytics_version()}: ultralytics.data.base no longer names its image "
                        f"caches only by `{_IMAGE_CACHE_NAMING}`; gradkit moves them out of the dataset")
    for method in _IMAGE_CACHE_USERS:
        if f"self.{_IMAGE_CACHES}" not in _source(getattr(dataset_class, method, None)):
            raise SeamError(f"ultralytics {_ultralytics_version()}: BaseDataset.{method} no longer uses "
                            f"self.{_IMAGE_CACHES}; gradkit moves the image caches it names out of the dataset")


def _source(obj: Any) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def _redirected_caches(dataset: Any) -> list[Path]:
    try:
        return dataset.__dict__[_IMAGE_CACHES]
    except KeyError:
        raise AttributeError(_IMAGE_CACHES) from None


def _redirect_caches(dataset: Any, files: list[Path]) -> None:
    """The paths come from ``im_files``, one per image (the assignment the seam checked); the image's own path,
    extension included, is what gradkit keys its cache on."""
    images = dataset.im_files
    if len(files) != len(images):
        raise SeamError(f"ultralytics {_ultralytics_version()}: BaseDataset assigned {len(files)} image caches "
                        f"for {len(images)} images; gradkit moves the image caches out of the dataset")
    dataset.__dict__[_IMAGE_CACHES] = [_image_cache_redirect["image"](Path(f)) for f in images]


# ------------------------------------------------------------------ the yolo command line
#: What :func:`register_default_callbacks` added, for :func:`unregister_default_callbacks`.
_REGISTERED: list[tuple[str, Callable[[Any], None]]] = []


def register_default_callbacks(callbacks: dict[str, Callable[[Any], None]], first: bool = False) -> None:
    """Append to Ultralytics' global ``default_callbacks``, which every model the ``yolo`` entrypoint
    builds copies: ``gradkit train`` / ``gradkit val`` have no other way to reach that model. ``first``: ahead of
    every callback already there (one that records what a later one's refusal must know)."""
    from ultralytics.utils.callbacks import base

    unknown = [e for e in callbacks if not isinstance(base.default_callbacks.get(e), list)]
    if unknown:
        raise SeamError(f"ultralytics {_ultralytics_version()}: default_callbacks has no event "
                        f"{', '.join(unknown)}, which gradkit's command line registers")
    for event, fn in callbacks.items():
        base.default_callbacks[event].insert(0 if first else len(base.default_callbacks[event]), fn)
        _REGISTERED.append((event, fn))


def unregister_default_callbacks() -> None:
    """Take out what :func:`register_default_callbacks` added, once the command is done: in a process that goes on
    (``gradkit.cli.main`` called from Python), later models must not carry this command's plugin."""
    from ultralytics.utils.callbacks import base

    while _REGISTERED:
        event, fn = _REGISTERED.pop()
        fns = base.default_callbacks.get(event)
        if isinstance(fns, list) and any(f is fn for f in fns):
            del fns[next(i for i, f in enumerate(fns) if f is fn)]


def track_run() -> dict[str, Any]:
    """A dict the next training fills, for the Ctrl-C message: ``last`` and ``best`` (where the weights go),
    ``data``, ``classes``, ``folder`` (the run folder), ``started`` (the plugin, registered before this is called, has
    set up and taken the folder over), ``saved``
    (this run saved last.pt, or resumes from it: a used folder's old one does not count) and ``finished`` (the
    epoch loop has ended: Ultralytics' final validation then strips last.pt of what a resume needs). A plain dict
    filled by functions in ``default_callbacks``: Ultralytics deep-copies callable objects per model, not functions."""
    run: dict[str, Any] = {}
    register_default_callbacks({
        # a resumed run's last.pt is its own from the start
        "on_pretrain_routine_start": lambda trainer: run.update(
            last=trainer.last, best=trainer.best, data=str(trainer.args.data),
            classes=getattr(trainer.args, "classes", None), saved=bool(getattr(trainer.args, "resume", False))),
        "on_model_save": lambda trainer: run.update(saved=True),
        # trainer.stop is set before this event of the epoch after which the loop ends
        "on_fit_epoch_end": lambda trainer: run.update(finished=bool(trainer.stop)),
    })
    # after the plugin's (registered before this is called): its set-up, which ends by replacing a used folder's
    # records, is done
    register_default_callbacks({"on_pretrain_routine_end": lambda trainer: run.update(started=True)})
    # ahead of the plugin's callbacks: before its checks, which may refuse the run, the folder the trainer has just
    # written into and what it wrote there (as it was built, then as it set up)
    register_default_callbacks({
        "on_pretrain_routine_start": lambda trainer: run.update(_written_by(trainer, "args.yaml")),
        "on_pretrain_routine_end": lambda trainer: _add_written(run, _written_by(trainer, *_DRAWN_IN_SET_UP))},
        first=True)
    return run


def _written_by(trainer: Any, *names: str) -> dict[str, Any]:
    """The trainer's run folder (resolved) and the bytes of the files ``names`` it has written there by now (a plot
    it was not asked for is not written)."""
    folder = Path(trainer.save_dir)
    wanted = [n for n in names if n != "labels.jpg" or getattr(trainer.args, "plots", False)]
    try:
        written = {n: (folder / n).read_bytes() for n in wanted if n == "args.yaml" or (folder / n).is_file()}
    except OSError:
        written = None  # unreadable: nothing will be put back
    return {"folder": str(folder.resolve()), "written": written}


def _add_written(run: dict[str, Any], later: dict[str, Any]) -> None:
    if run.get("folder") != later["folder"] or run.get("written") is None or later["written"] is None:
        run["written"] = None  # not the folder first written, or unreadable: nothing will be put back
    else:
        run["written"].update(later["written"])


#: What Ultralytics' trainer writes into its run folder as it sets up (``_setup_train``, with ``plots``), after
#: args.yaml as it was built (and an empty weights/).
_DRAWN_IN_SET_UP = ("labels.jpg",)
#: What a run refused before its set-up ended (before the epoch loop; gradkit replaces a used folder's records last
#: in its set-up) must put back.
_WRITTEN_BEFORE_TRAINING = ("args.yaml", *_DRAWN_IN_SET_UP)


def run_folder_before(argv: Sequence[str]) -> dict[str, Any] | None:
    """Where a ``train`` of ``argv`` will write, as Ultralytics' ``get_save_dir`` chooses it, and what that folder
    holds now of what the trainer writes before its first epoch: for :func:`restore_run_folder`. None for a resume
    (the checkpoint names its folder) and where Ultralytics' choice cannot be worked out."""
    from types import SimpleNamespace

    from ultralytics.cfg import get_save_dir

    given = yolo_given_args(argv)
    if given.get("resume"):
        return None
    named = given.get("save_dir") or given.get("project")  # else Ultralytics' runs folder, named by the task
    task = given.get("task") or ("detect" if named else _model_task(given.get("model")))
    args = SimpleNamespace(save_dir=given.get("save_dir"), project=given.get("project"), name=given.get("name"),
                           task=task, mode="train", exist_ok=bool(given.get("exist_ok")))
    try:
        folder = get_save_dir(args)
    except (OSError, TypeError, ValueError):
        return None
    there = next(p for p in (folder, *folder.parents) if p.exists())
    try:
        files = {n: (folder / n).read_bytes() if (folder / n).is_file() else None for n in _WRITTEN_BEFORE_TRAINING}
    except OSError:  # unreadable: nothing could be put back, so nothing is touched (the trainer says what is wrong)
        return None
    return {"folder": str(folder), "there": str(there.resolve()), "weights_there": (folder / "weights").exists(),
            "files": files}


def _model_task(model: Any) -> str:
    """The task Ultralytics takes from ``model`` when none is given (it names the default runs folder): a model YAML's
    head, a checkpoint's training arguments, else the file's name (``-seg``, ``-pose``...: a checkpoint Ultralytics
    will fetch or find in its weights folder); detect where none says (Ultralytics' own default). A guess: nothing
    is fetched, and a wrong one only means a refused run's folder is not put back."""
    import logging

    from ultralytics.nn.tasks import guess_model_task, yaml_model_load

    if not isinstance(model, str) or "://" in model:
        return "detect"
    ultralytics_log = logging.getLogger("ultralytics")
    quiet, ultralytics_log.disabled = ultralytics_log.disabled, True  # its "unable to guess" warning is for its run
    try:
        if model.endswith((".yaml", ".yml")):
            task = guess_model_task(yaml_model_load(model))
        else:
            args = (_checkpoint_dict(model) or {}).get("train_args")
            task = args.get("task") if isinstance(args, dict) else guess_model_task(Path(model).name)
    except Exception:  # a guess: Ultralytics names a bad model file itself when its run reads it
        task = None
    finally:
        ultralytics_log.disabled = quiet
    return task if isinstance(task, str) and task else "detect"


def restore_run_folder(before: dict[str, Any] | None, run: dict[str, Any]) -> bool:
    """After a run refused (or interrupted) before its epoch loop began: the run folder as :func:`run_folder_before`
    found it.
    The files the trainer wrote are put back or removed, each by name and only while they hold what the trainer
    wrote (another process may have written since); the folders it made are removed only while empty (so nothing
    else can go with them), up to the one that was there before. Only where the trainer wrote into the folder
    ``before`` describes; False where nothing was done or something is left."""
    if before is None or run.get("started") or run.get("saved") or run.get("folder") != before["folder"]:
        return False  # once begun, a used folder's records are replaced: a run stopped later keeps its own
    folder, written = Path(before["folder"]), run.get("written")
    made = ([folder / "weights"] if not before["weights_there"] else []) + \
        [p for p in (folder, *folder.parents) if p.is_relative_to(before["there"]) and str(p) != before["there"]]
    try:
        if written is None or any((folder / n).read_bytes() != b for n, b in written.items()):
            return False
        for name in written:
            if (content := before["files"][name]) is None:
                (folder / name).unlink(missing_ok=True)
            else:
                (folder / name).write_bytes(content)
        for path in made:
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # fails if anything lies in it
    except OSError:  # something appeared, or a permission: what is left stays, and the refusal is what is said
        return False
    return True


def _checkpoint_dict(path: str | None) -> dict[str, Any] | None:
    """An Ultralytics checkpoint's dictionary, loaded as Ultralytics loads it; None for anything else (an empty or
    cut file, another object): Ultralytics' own loading names that when the run reaches it."""
    import pickle

    from ultralytics.nn.tasks import torch_safe_load

    if not path or not str(path).endswith(".pt") or not Path(path).is_file():
        return None
    try:
        ckpt, _ = torch_safe_load(str(path))
    # a file cut short or of another kind: TypeError is Ultralytics' "not a loadable checkpoint", AttributeError a
    # pickled object that is not a checkpoint
    # ImportError: a module the checkpoint names is not installed (Ultralytics does not install it offline)
    except (OSError, RuntimeError, ValueError, EOFError, TypeError, AttributeError, ImportError,
            pickle.UnpicklingError):
        return None
    return ckpt if isinstance(ckpt, dict) else None


def finished_checkpoint(path: str | None) -> dict[str, Any] | None:
    """The training arguments of ``path`` where it is a checkpoint Ultralytics will not resume, or None. Its final
    validation strips ``last.pt``: epoch -1, no optimizer; ``Model.train(resume=True)`` then warns and starts a new
    training with every default (``coco8.yaml``), a path given as ``resume=`` stops with an assertion."""
    ckpt = _checkpoint_dict(path)
    epoch = None if ckpt is None else ckpt.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or "optimizer" not in ckpt:
        return None
    if epoch >= 0 and ckpt["optimizer"] is not None:
        return None
    args = ckpt.get("train_args")
    return args if isinstance(args, dict) else {}


def checkpoint_train_args(path: str | None) -> dict[str, Any] | None:
    """The arguments a checkpoint was saved with (``train_args``, with Ultralytics' own rewrites: ``optimizer=auto``'s
    choice, an auto batch), or None."""
    ckpt = _checkpoint_dict(path)
    args = None if ckpt is None else ckpt.get("train_args")
    return args if isinstance(args, dict) else None


def yolo_given_args(argv: Sequence[str]) -> dict[str, Any]:
    """The arguments the ``yolo`` entrypoint makes of ``argv``, by its own parsing (``merge_equals_args``: spaces
    around '='; leading dashes and a trailing comma dropped; values through ``parse_key_value_pair``; a bare switch
    such as ``resume`` True), with the keys
    of the YAML file ``cfg=`` names merged as it merges them (the arguments before it win, those after it too). The
    file is found as ``check_yaml`` finds it (a path, or a name in Ultralytics' own cfg folder), never downloaded.
    What the entrypoint would refuse is left out here: it refuses it, naming it."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, merge_equals_args, parse_key_value_pair

    try:
        merged = merge_equals_args(list(argv))
    except SyntaxError:
        return {}
    given: dict[str, Any] = {}
    for a in merged:
        a = a.removeprefix("--").removesuffix(",")
        if "=" not in a:
            if isinstance(DEFAULT_CFG_DICT.get(a), bool):  # a bare switch is True: 'yolo train resume'
                given[a] = True
            continue
        try:
            k, v = parse_key_value_pair(a)
        except (NameError, SyntaxError, ValueError, AssertionError):
            continue
        if k == "cfg" and v is not None:
            given = {**_yolo_cfg_file(str(v)), **given}
        else:
            given[k] = v
    return given


def yolo_merged_args(argv: Sequence[str]) -> list[str]:
    """``argv`` as the entrypoint reads it, one ``key=value`` (or bare word) per item: ``key = value`` merged, the
    leading dashes and a trailing comma dropped (``--degrees=0,`` is ``degrees=0``); as typed where it cannot merge."""
    from ultralytics.cfg import merge_equals_args

    try:
        merged = merge_equals_args(list(argv))
    except SyntaxError:
        merged = list(argv)
    return [a.removeprefix("--").removesuffix(",") for a in merged]


def _yolo_cfg_file(name: str) -> dict[str, Any]:
    """The keys of the YAML file a ``cfg=`` names, found as the entrypoint finds it but never downloaded; {} where it
    cannot be read (the entrypoint then says why)."""
    import yaml
    from ultralytics.utils.checks import check_file

    try:
        path = check_file(name, (".yaml", ".yml"), download=False, hard=False)
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f)
    except (AssertionError, OSError, TypeError, ValueError, yaml.YAMLError):
        return {}
    return {str(k): v for k, v in loaded.items() if k != "cfg"} if isinstance(loaded, dict) else {}


def hand_over_to_yolo(argv: list[str]) -> None:
    """Run Ultralytics' ``yolo`` entrypoint on ``argv`` (the arguments after the program name).

    The entrypoint takes no arguments: it reads ``ultralytics.cfg.ARGV``, which is ``sys.argv`` itself,
    so ``sys.argv`` is rewritten in place; checked that it still is that very list.
    """
    import ultralytics.cfg as yolo_cfg

    if yolo_cfg.ARGV is not sys.argv:
        raise SeamError(f"ultralytics.cfg.ARGV is no longer sys.argv (ultralytics {_ultralytics_version()}): the "
                        "gradkit command hands its arguments to the yolo entrypoint through sys.argv")
    sys.argv[1:] = argv
    yolo_cfg.entrypoint()


#: Ultralytics' functions that refuse an argument's value by raising (module file, function -> what it raises):
#: ``check_cfg`` its types and ranges, ``check_imgsz`` an image size that is no number, ``build_optimizer`` an
#: optimizer name it lacks, ``select_device`` a device this machine lacks. The same exceptions raised elsewhere are
#: bugs and keep their traceback.
ARGUMENT_CHECKS = {("__init__.py", "check_cfg"): (TypeError, ValueError),
                   ("checks.py", "check_imgsz"): (TypeError, ValueError),
                   ("trainer.py", "build_optimizer"): (NotImplementedError,),
                   ("torch_utils.py", "select_device"): (ValueError,)}


def yolo_argument_error(exc: BaseException) -> str | None:
    """The one line for an argument the ``yolo`` entrypoint does not know (a typo, an unquoted path with a
    space) or refuses by its value, or None. Ultralytics raises the first as a SyntaxError from ``ultralytics/cfg``
    after printing its usage, the second from one of :data:`ARGUMENT_CHECKS`; anything else is a bug and keeps
    its traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return None
    code = tb.tb_frame.f_code
    lines = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, SyntaxError) and Path(code.co_filename).parent.name == "cfg" and \
            "is not a valid YOLO argument" in str(exc):
        return (f"gradkit: {lines} (gradkit train --help lists gradkit's keys, 'yolo cfg' Ultralytics'; quote a "
                "path that holds spaces)")
    refused = ARGUMENT_CHECKS.get((Path(code.co_filename).name, code.co_name))
    if refused and isinstance(exc, refused) and "ultralytics" in Path(code.co_filename).parts:
        return f"gradkit: {lines[:300]} ('yolo cfg' lists Ultralytics' arguments and their defaults)"
    return None


# ------------------------------------------------------------------ faster-coco-eval
def override_coco_iou(ious: dict[tuple[Any, Any], Any]) -> type:
    """A ``COCOeval_faster`` whose ``computeIoU(imgId, catId)`` is computed once into ``ious`` and read back
    from it after, so evaluations of the same boxes (other area ranges) share it.

    Checked by :func:`check_coco_iou_override`: the signature, and ``evaluate`` still calling it.
    """
    from faster_coco_eval import COCOeval_faster

    check_coco_iou_override(COCOeval_faster)

    class SharedIoU(COCOeval_faster):
        def computeIoU(self, imgId, catId):  # pycocotools' method
            key = (imgId, catId)
            if key not in ious:
                ious[key] = super().computeIoU(imgId, catId)
            return ious[key]

    return SharedIoU


# ------------------------------------------------------------------ the detection loss: the assigner's candidates
#: Set on a loss branch whose assigner :func:`restrict_candidates_to_cells` restricted.
_CELLS_MARK = "_gradkit_cells"
#: The keys of Ultralytics' training batch the defect cells are measured from.
BATCH_KEYS = ("img", "batch_idx", "bboxes")


def batch_pixels_and_boxes(batch: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(images HxWxC on 0-255, each label's image index, normalised xyxy boxes) of a training batch, as numpy.

    Ultralytics' ``preprocess_batch`` hands the loss images divided by 255 and boxes as normalised xywh, in
    the order the loss pads them per image."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise SeamError(f"the training batch has no {', '.join(missing)} (ultralytics {_ultralytics_version()}); "
                        "assign.defect_cells measures the defect cells from img, batch_idx and bboxes")
    img, xywh = batch["img"].detach(), batch["bboxes"].detach().float()
    if xywh.ndim != 2 or xywh.shape[-1] != 4:
        raise SeamError(f"the batch's bboxes are {tuple(xywh.shape)}, not (labels, 4) axis-aligned xywh "
                        f"(ultralytics {_ultralytics_version()})")
    if img.numel() and float(img.max()) > 1.0 + 1e-3:
        raise SeamError(f"training images reach the loss at up to {float(img.max()):.1f}, not in [0, 1]: "
                        f"Ultralytics' preprocess_batch changed (ultralytics {_ultralytics_version()})")
    pixels = (img.float().clamp(0, 1) * 255).permute(0, 2, 3, 1).cpu().numpy()
    xywh = xywh.cpu().numpy()
    xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    return pixels, batch["batch_idx"].view(-1).long().cpu().numpy(), xyxy


def training_criterion(trainer: Any) -> Any:
    """The training model's loss, built here when Ultralytics has not built it yet (it builds it lazily, at the
    first loss)."""
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    if getattr(model, "criterion", None) is None:
        model.criterion = model.init_criterion()
    return model.criterion


def without_task_aligned_assigner(trainer: Any) -> str | None:
    """Why the training model's loss is not Ultralytics' anchor-based detection loss (``v8DetectionLoss``, each
    branch of yolo26's ``E2ELoss``), whose task-aligned assigner ``monitor.taught`` and the ``assign`` options
    work on; None when it is. RT-DETR, also a detector, matches queries to boxes; YOLOE picks its loss at its
    first batch (text or visual prompts), so building it earlier would pick for it."""
    from ultralytics.nn.tasks import YOLOEModel
    from ultralytics.utils.loss import v8DetectionLoss

    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    if isinstance(model, YOLOEModel):
        return f"{type(model).__name__} chooses its loss at its first batch"
    criterion = training_criterion(trainer)
    if isinstance(getattr(criterion, "one2many", criterion), v8DetectionLoss):
        return None
    return f"its loss ({type(criterion).__name__}) has no task-aligned assigner"


def _detection_branches(criterion: Any) -> list[Any]:
    """The detection losses inside Ultralytics' criterion: yolo26's ``E2ELoss`` holds two (one-to-many and
    one-to-one), each with its own assigner and box loss; a single-branch head's criterion is its own."""
    return [getattr(criterion, n) for n in ("one2many", "one2one") if hasattr(criterion, n)] or [criterion]


def _loss_branches(criterion: Any) -> list[Any]:
    """The detection losses inside Ultralytics' criterion (``E2ELoss``: one-to-many and one-to-one), each checked
    to hold ``loss(preds, batch)``, ``stride`` and a task-aligned ``assigner`` whose ``select_candidates_in_gts``
    takes ``(xy_centers, gt_bboxes, mask_gt)``."""
    branches = _detection_branches(criterion)
    for branch in branches:
        name = type(branch).__qualname__
        assigner = getattr(branch, "assigner", None)
        select = getattr(assigner, "select_candidates_in_gts", None)
        if not callable(getattr(branch, "loss", None)) or not hasattr(branch, "stride") or not callable(select):
            raise SeamError(f"{name} has no loss(preds, batch), stride and assigner.select_candidates_in_gts "
                            f"(ultralytics {_ultralytics_version()}); gradkit's assign options change that loss")
        params = list(inspect.signature(select).parameters)
        if params[:3] != ["xy_centers", "gt_bboxes", "mask_gt"]:
            raise SeamError(f"{type(assigner).__qualname__}.select_candidates_in_gts{inspect.signature(select)} no "
                            f"longer takes (xy_centers, gt_bboxes, mask_gt) (ultralytics {_ultralytics_version()}); "
                            "assign.defect_cells restricts its candidates")
    return branches


def keep_defect_cells(candidates: Any, cells: Any) -> Any:
    """Of each box's candidate anchors (images, boxes, anchors), those whose cell holds the defect (``cells``,
    images x boxes-so-far x anchors); a box with none of them keeps all its candidates."""
    b, n, a = candidates.shape
    if cells.shape[0] != b or cells.shape[2] != a:
        raise SeamError(f"the assigner's candidates are {tuple(candidates.shape)} (images, boxes, anchors), the "
                        f"defect cells {tuple(cells.shape)}: Ultralytics' anchor layout changed (ultralytics "
                        f"{_ultralytics_version()})")
    fitted = candidates.new_zeros((b, n, a))
    fitted[:, :min(n, cells.shape[1])] = cells[:, :n].to(candidates.device)
    picked = candidates & fitted
    return picked.where(picked.any(-1, keepdim=True), candidates)


def _cells_for_call(held: dict[str, Any], images: int) -> Any:
    """The cells of the images this call of the assigner sees: all of them, or, when the assigner retries one
    image at a time after a CUDA out-of-memory error (``TaskAlignedAssigner.forward``: images in order, one
    ``select_candidates_in_gts`` call each), the next image's."""
    cells = held["cells"]
    if images == cells.shape[0]:
        return cells
    if images != 1:
        raise SeamError(f"the assigner saw {images} images of a batch of {cells.shape[0]} (ultralytics "
                        f"{_ultralytics_version()}); assign.defect_cells expects the batch or one image at a time")
    held["retried"] = i = held.get("retried", -1) + 1
    return cells[i:i + 1]


def restrict_candidates_to_cells(trainer: Any, cells_of_batch: Callable[[dict, list[int]], Any],
                                 tally: Callable[[Any, Any], None] | None = None) -> None:
    """Make the training model's assigner keep only the candidate anchors ``cells_of_batch(batch, strides)``
    marks (a bool images x boxes x anchors tensor, boxes in the order of the batch's labels), every branch of
    its detection loss. ``tally(candidates, kept)`` sees each restriction. The EMA copy the trainer
    validates with is made before this and keeps the stock assigner; :func:`unrestricted_ema` keeps it so."""
    for branch in _loss_branches(training_criterion(trainer)):
        if getattr(branch, _CELLS_MARK, False):
            continue
        held: dict[str, Any] = {}
        stock_loss, stock_select = branch.loss, branch.assigner.select_candidates_in_gts
        strides = [int(s) for s in branch.stride]

        def loss(preds, batch, _stock=stock_loss, _held=held, _strides=strides):
            _held["cells"] = cells_of_batch(batch, _strides)
            try:
                return _stock(preds, batch)
            finally:
                _held.clear()

        def select(xy_centers, gt_bboxes, mask_gt, *args, _stock=stock_select, _held=held, **kwargs):
            candidates = _stock(xy_centers, gt_bboxes, mask_gt, *args, **kwargs)
            if "cells" not in _held:  # the assigner called directly, not from this branch's loss: no batch pixels
                return candidates
            kept = keep_defect_cells(candidates, _cells_for_call(_held, candidates.shape[0]))
            if tally is not None:
                tally(candidates & mask_gt.bool(), kept & mask_gt.bool())
            return kept

        branch.loss = loss
        branch.assigner.select_candidates_in_gts = select
        setattr(branch, _CELLS_MARK, True)


def unrestricted_ema(trainer: Any) -> None:
    """Drop the criterion of the trainer's EMA model when it is a copy of a patched one (restricted, recording,
    rescored or reweighed), so that validation builds a stock one. Ultralytics' NaN recovery rebuilds the EMA as
    a deep copy of the (patched) training model (``BaseTrainer._load_checkpoint_state``)."""
    ema = getattr(getattr(trainer, "ema", None), "ema", None)
    criterion = getattr(ema, "criterion", None)
    if criterion is None:
        return
    branches = _detection_branches(criterion)
    if any(getattr(b, _CELLS_MARK, False) or getattr(b, _BOX_WEIGHT_MARK, False)
           or getattr(getattr(b, "assigner", None), _RECORD_MARK, False)
           or getattr(getattr(b, "assigner", None), _OVERLAP_MARK, False) for b in branches):
        ema.criterion = None


_BOX_WEIGHT_MARK = "_gradkit_box_weights"
#: The leading parameters of Ultralytics' ``BboxLoss.forward``; the box-loss weights are ``target_scores.sum(-1)``.
BOX_LOSS_PARAMETERS = ("pred_dist", "pred_bboxes", "anchor_points", "target_bboxes", "target_scores",
                       "target_scores_sum", "fg_mask")


def _box_loss_forward(branch: Any) -> Callable[..., Any]:
    """The branch's box loss ``forward``, checked to take :data:`BOX_LOSS_PARAMETERS` first."""
    forward = getattr(getattr(branch, "bbox_loss", None), "forward", None)
    params = tuple(inspect.signature(forward).parameters)[:len(BOX_LOSS_PARAMETERS)] if callable(forward) else ()
    if params != BOX_LOSS_PARAMETERS:
        raise SeamError(f"{type(branch).__qualname__}.bbox_loss.forward takes ({', '.join(params)}), not "
                        f"({', '.join(BOX_LOSS_PARAMETERS)}) (ultralytics {_ultralytics_version()}); "
                        "assign.box_loss_per_object reweighs its positives")
    return forward


def weigh_classification_loss(trainer: Any, weights: list[float]) -> None:
    """Multiply each class's column of the training loss's classification BCE (positives and negatives alike) by
    its weight, one per class in the data's order, through Ultralytics' own per-class weights (what ``cls_pw`` sets
    from class frequencies): each detection loss multiplies its (images, anchors, classes) BCE by its
    ``class_weights``, taken from ``model.class_weights`` when the loss is built. Set on each branch of the training
    loss, on the model and on the EMA copy Ultralytics validates with (made before this; every rank's, and its loss
    rebuilt), so that the validation loss weighs alike. Not for a distillation run (the caller refuses it: there
    Ultralytics weighs the student's loss, inside a wrapper)."""
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    device = getattr(trainer, "device", None) or next(model.parameters()).device
    vector = torch.tensor(weights, dtype=torch.float32, device=device)
    for branch in _detection_branches(training_criterion(trainer)):
        name = type(branch).__qualname__
        if not hasattr(branch, "class_weights") or not _multiplies_by_class_weights(type(branch)):
            raise SeamError(f"{name} does not multiply its classification loss by class_weights (ultralytics "
                            f"{_ultralytics_version()}); assign.class_loss_weights sets Ultralytics' per-class "
                            "weights there")
        if getattr(branch, "nc", len(weights)) != len(weights):
            raise SeamError(f"{name} scores {branch.nc} classes, assign.class_loss_weights gave {len(weights)} "
                            f"weights (ultralytics {_ultralytics_version()})")
        branch.class_weights = vector.view(1, 1, -1)
    model.class_weights = vector
    ema = getattr(getattr(trainer, "ema", None), "ema", None)
    if ema is not None:
        ema.class_weights = vector.clone()
        if getattr(ema, "criterion", None) is not None:
            ema.criterion = None  # built before the weights: Ultralytics rebuilds it at the next validation


def _multiplies_by_class_weights(loss_cls: type) -> bool:
    """Whether one of the methods ``loss_cls`` has (its own or inherited, as resolved) multiplies something by
    ``self.class_weights`` (``bce_loss *= self.class_weights`` in 8.4.190), read from their source."""
    def is_weights(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "class_weights" \
            and isinstance(node.value, ast.Name) and node.value.id == "self"

    for _, method in inspect.getmembers(loss_cls, inspect.isfunction):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(method)))
        except (OSError, TypeError):  # defined without source
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult) and is_weights(node.value):
                return True
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult) \
                    and (is_weights(node.left) or is_weights(node.right)):
                return True
    return False


def weigh_box_loss_with(trainer: Any, reweigh: Callable[[Any, Any, Any, int], Any]) -> None:
    """Make every branch of the training model's detection loss weigh its box loss (CIoU and L1/DFL) by
    ``reweigh(weights, owner, fg_mask, objects)`` of the assigner's weights (``target_scores.sum(-1)``), ``owner``
    the assigner's ``target_gt_idx`` and ``objects`` the padded number of boxes per image; the class loss keeps the
    assigner's targets. Only the assignment made inside the branch's own loss is used, never one left by a direct
    call of the assigner. The EMA copy the trainer validates with is made before this and keeps the stock loss
    (:func:`unrestricted_ema`)."""
    criterion = training_criterion(trainer)
    for branch in _detection_branches(criterion):
        if getattr(branch, _BOX_WEIGHT_MARK, False):
            continue
        box_forward, assign = _box_loss_forward(branch), _assigner_forward(branch, "assign.box_loss_per_object")
        stock_loss, held, name = branch.loss, {}, type(branch).__qualname__

        def loss(preds, batch, _stock=stock_loss, _held=held):
            _held.clear()
            _held["in_loss"] = True
            try:
                return _stock(preds, batch)
            finally:
                _held.clear()

        @functools.wraps(assign)  # keeps the signature that monitor.taught's recorder checks
        def assigned(*args, _assign=assign, _held=held, **kwargs):
            out = _assign(*args, **kwargs)
            if _held.get("in_loss"):
                gt_bboxes = dict(zip(ASSIGNER_PARAMETERS, args, strict=False)).get("gt_bboxes", kwargs.get("gt_bboxes"))
                _check_assigner_outputs(out, gt_bboxes, "assign.box_loss_per_object reweighs by its target_gt_idx")
                _held.update(owner=out[4], objects=gt_bboxes.shape[1])
            return out

        @functools.wraps(box_forward)
        def box_loss(pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores, target_scores_sum,
                     fg_mask, *args, _stock=box_forward, _held=held, _name=name, **kwargs):
            owner = _held.pop("owner", None)
            if owner is None or owner.shape != fg_mask.shape:
                raise SeamError(f"{_name}'s box loss ran without its own assignment just before it "
                                f"(ultralytics {_ultralytics_version()}); assign.box_loss_per_object reweighs by it")
            weights = target_scores.sum(-1)
            reweighed = reweigh(weights, owner, fg_mask.bool(), _held.pop("objects"))
            factor = torch.where(weights > 0, reweighed / weights.clamp_min(torch.finfo(weights.dtype).tiny), 0.0)
            return _stock(pred_dist, pred_bboxes, anchor_points, target_bboxes, target_scores * factor.unsqueeze(-1),
                          target_scores_sum, fg_mask, *args, **kwargs)

        branch.loss = loss
        branch.assigner.forward = assigned
        branch.bbox_loss.forward = box_loss
        setattr(branch, _BOX_WEIGHT_MARK, True)


_RECORD_MARK = "_gradkit_recorded"
#: The leading parameters of ``TaskAlignedAssigner.forward``.
ASSIGNER_PARAMETERS = ("pd_scores", "pd_bboxes", "anc_points", "gt_labels", "gt_bboxes", "mask_gt")


def _assigner_forward(branch: Any, used_by: str) -> Callable[..., Any]:
    """The branch's assigner ``forward``, checked to take :data:`ASSIGNER_PARAMETERS` first."""
    assigner = getattr(branch, "assigner", None)
    forward = getattr(assigner, "forward", None)
    if not callable(forward):
        raise SeamError(f"{type(branch).__qualname__} has no assigner.forward (ultralytics {_ultralytics_version()}); "
                        f"{used_by} reads what it assigns")
    params = tuple(inspect.signature(forward).parameters)[:len(ASSIGNER_PARAMETERS)]
    if params != ASSIGNER_PARAMETERS:
        raise SeamError(f"{type(assigner).__qualname__}.forward{inspect.signature(forward)} no longer takes "
                        f"({', '.join(ASSIGNER_PARAMETERS)}) (ultralytics {_ultralytics_version()}); {used_by} reads "
                        "what it assigns")
    return forward


#: What ``TaskAlignedAssigner.forward`` returns, in order; the recorder reads the last three.
ASSIGNER_OUTPUTS = ("target_labels", "target_bboxes", "target_scores", "fg_mask", "target_gt_idx")


def _check_assigner_outputs(out: Any, gt_bboxes: Any, used_by: str) -> None:
    """``used_by``: which option reads the outputs and what of them, named in the error."""
    if not isinstance(out, tuple) or len(out) != len(ASSIGNER_OUTPUTS):
        raise SeamError(f"the assigner returned {type(out).__name__} of {len(out) if isinstance(out, tuple) else 1}, "
                        f"not ({', '.join(ASSIGNER_OUTPUTS)}) (ultralytics {_ultralytics_version()}); {used_by}")
    _, _, scores, fg, owner = out
    b = gt_bboxes.shape[0]
    if scores.ndim != 3 or fg.shape != scores.shape[:2] or owner.shape != scores.shape[:2] or scores.shape[0] != b:
        raise SeamError(f"the assigner's target_scores {tuple(scores.shape)}, fg_mask {tuple(fg.shape)} and "
                        f"target_gt_idx {tuple(owner.shape)} are not (images, anchors, classes) and (images, anchors) "
                        f"for {b} images (ultralytics {_ultralytics_version()}); {used_by}")


def record_assignments(trainer: Any, record: Callable[..., None]) -> None:
    """Call ``record(target_scores, fg_mask, target_gt_idx, gt_labels, gt_bboxes, mask_gt)`` after each training
    assignment of the first branch of the training model's detection loss (yolo26's one-to-many, which teaches
    the most anchors; the loss itself for a single-branch head). Assignments made with gradients off (the
    validator's inference mode; the assigner itself runs under ``no_grad`` inside) are not recorded."""
    criterion = training_criterion(trainer)
    branch = getattr(criterion, "one2many", criterion)
    forward = _assigner_forward(branch, "monitor.taught")
    assigner = branch.assigner
    if getattr(assigner, _RECORD_MARK, False):
        return

    def recording(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, *args, **kwargs):
        out = forward(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, *args, **kwargs)
        if torch.is_grad_enabled():
            _check_assigner_outputs(out, gt_bboxes, "monitor.taught reads target_scores, fg_mask and target_gt_idx")
            record(out[2], out[3], out[4], gt_labels, gt_bboxes, mask_gt)
        return out

    assigner.forward = recording
    setattr(assigner, _RECORD_MARK, True)


#: On an assigner whose overlap gradkit replaced: (its own ``iou_calculation``, the NWD scale in use).
_OVERLAP_MARK = "_gradkit_overlap"


def _probe_overlap(assigner: Any, expected: Callable[[Any, Any], Any], scale: float) -> None:
    """Check that the assigner's ``pair_overlaps`` scores pairs with its (replaced) ``iou_calculation``: two
    boxes of the same size, at most half of ``scale``, one ``scale`` apart overlap at CIoU 0, so the pair's score
    must be ``expected`` of them, exp(-1) whatever the scale."""
    side = min(4.0, scale / 2)
    gt = torch.tensor([[[0.0, 0.0, side, side]]])
    pd = gt + torch.tensor([scale, 0.0, scale, 0.0])
    index = torch.zeros(1, dtype=torch.long)
    try:
        got = assigner.pair_overlaps((index, index, index), gt, pd)
    except TypeError as exc:
        raise SeamError(f"{type(assigner).__qualname__}.pair_overlaps(indices, gt_bboxes, pd_bboxes) failed: {exc} "
                        f"(ultralytics {_ultralytics_version()}); assign.nwd replaces the overlap it scores") from None
    want = expected(gt[0], pd[0]).reshape(-1)
    if got.shape != want.shape or not torch.allclose(got.float(), want.float(), atol=1e-5):
        raise SeamError(f"{type(assigner).__qualname__}.pair_overlaps no longer scores pairs with iou_calculation "
                        f"(ultralytics {_ultralytics_version()}): got {got.tolist()} for two boxes {scale:g} px "
                        f"apart, expected {want.tolist()}; assign.nwd replaces that overlap")


def _anchor_loss_assigners(criterion: Any) -> list[Any]:
    """The task-aligned assigner of each branch of the detection loss (yolo26: one-to-many and one-to-one)."""
    branches = _detection_branches(criterion)
    assigners = [getattr(b, "assigner", None) for b in branches]
    if any(a is None for a in assigners):
        raise SeamError(f"{type(criterion).__qualname__}'s branches have no assigner (ultralytics "
                        f"{_ultralytics_version()}); assign.nwd replaces the overlap it scores")
    return assigners


def score_overlaps_with(trainer: Any, overlap: Callable[[Any, Any, Any, float], Any],
                        scale: float | None = None) -> float:
    """Make every branch of the training model's detection loss score a prediction against a box by
    ``overlap(ciou, gt_bboxes, pd_bboxes, scale)`` (boxes xyxy in pixels at the training size) instead of its
    assigner's CIoU. ``scale`` defaults to the assigner's finest stride; returned. Installing again (with this
    or another scale) wraps the assigner's own overlap again, never the wrapper. The EMA copy the trainer
    validates with is made before this and keeps the stock assigner (:func:`unrestricted_ema`)."""
    assigners = _anchor_loss_assigners(training_criterion(trainer))
    if scale is None:
        scale = float(min(float(s) for s in assigners[0].stride))
    for assigner in assigners:
        marked = getattr(assigner, _OVERLAP_MARK, None)
        stock = marked[0] if marked else getattr(assigner, "iou_calculation", None)
        params = list(inspect.signature(stock).parameters) if callable(stock) else []
        if params[:2] != ["gt_bboxes", "pd_bboxes"]:
            raise SeamError(f"{type(assigner).__qualname__} has no iou_calculation(gt_bboxes, pd_bboxes) (ultralytics "
                            f"{_ultralytics_version()}); assign.nwd replaces the overlap it scores")

        def scored(gt_bboxes, pd_bboxes, *args, _stock=stock, **kwargs):
            return overlap(_stock(gt_bboxes, pd_bboxes, *args, **kwargs), gt_bboxes, pd_bboxes, scale)

        assigner.iou_calculation = scored
        _probe_overlap(assigner, scored, scale)
        setattr(assigner, _OVERLAP_MARK, (stock, scale))
    return scale
