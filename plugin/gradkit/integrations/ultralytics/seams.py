"""Compatibility checks for every third-party internal gradkit patches or reads.

gradkit has to reach past public APIs in four places: it replaces ``BaseTrainer.optimizer_step``
(no event fires between backward and the optimizer step), it swaps the ``Albumentations`` stage of
the training dataset's transform list (that stage swallows construction errors), it wraps the
detection validator's ``update_metrics`` and reads its private ``_prepare_batch`` / ``_prepare_pred``
and its metrics, and it overrides faster-coco-eval's ``COCOeval_faster.computeIoU`` to share IoUs
between evaluations. The version bounds in pyproject and :mod:`.version` keep out releases nobody
tested; these checks catch what a bound cannot: a patch release or a user's subclass that changed
the shape a patch relies on. Each check raises :class:`SeamError` naming what changed, where the
patch is installed, before it is installed - never a silent fall-back to stock behaviour.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import textwrap
from typing import Any

__all__ = [
    "OPTIMIZER_STEP_FINGERPRINTS",
    "SeamError",
    "albumentations_stage_index",
    "check_coco_iou_override",
    "check_optimizer_step",
    "check_seams",
    "check_validator",
    "check_validator_results",
    "code_fingerprint",
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
