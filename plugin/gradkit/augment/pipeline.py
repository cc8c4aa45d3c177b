"""Albumentations pipelines from configuration: presets, user transforms, validation, box safety.

Transforms are written in Albumentations' own serialization format (``A.to_dict`` / ``A.save``:
``__class_fullname__`` plus parameters) — no mini-language. Every entry is constructed when the
configuration loads, so a typo or a bad parameter fails before training with the entry named,
instead of Ultralytics' wrapper silently disabling the whole stage.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Any

import yaml

__all__ = ["AUTO_CHOICES", "PRESETS", "SENSOR_LEFT_OUT", "AugmentError", "accepted_parameters", "bbox_params",
           "build_compose", "build_runner", "build_transforms", "load_transform_list", "validate_transform_list"]


class AugmentError(ValueError):
    """A transform that cannot be built or serialised."""


#: Photometric and geometric transforms of the ``defect`` preset, in Albumentations' format.
#: Defects have no canonical orientation: D4 draws one of the 8 symmetries of the square.
_DEFECT: list[dict[str, Any]] = [
    {"__class_fullname__": "D4", "p": 1.0},
    # (small rotations come from Ultralytics' own warp, `degrees: 4` in defect.yaml: it runs on
    # every sample anyway, while a Rotate here costs a second warp and Albumentations' box geometry)
    # illumination: exposure, contrast, gamma, uneven lighting, local contrast
    # (the preset's config turns Ultralytics' hsv_v off: on gray images its value gain is this
    # brightness change, at the cost of a full HSV round trip of the colour image)
    {"__class_fullname__": "RandomBrightnessContrast", "brightness_limit": [-0.25, 0.25],
     "contrast_limit": [-0.25, 0.25], "p": 0.8},
    {"__class_fullname__": "RandomGamma", "gamma_limit": [80, 120], "p": 0.3},
    # (probabilities of the costly ones kept low: see benchmarks/augment_throughput.py)
    {"__class_fullname__": "Illumination", "mode": "gaussian", "intensity_range": [0.01, 0.15], "p": 0.2},
    {"__class_fullname__": "CLAHE", "clip_limit": [1.0, 3.0], "p": 0.05},
    # sensor read noise (noise keeps a 1 px line; blur and JPEG do not: SENSOR_LEFT_OUT)
    {"__class_fullname__": "GaussNoise", "std_range": [0.01, 0.05], "per_channel": False, "p": 0.2},
]
#: Why defocus and JPEG are not in ``defect`` (README, "Why thin defects fail"; benchmarks/defect_quality.py).
SENSOR_LEFT_OUT = ("blur and JPEG (defect-sensor) are left out: a 3x3 blur leaves 42% of a 1 px line's contrast, "
                   "JPEG q60 71%, and with them the preset reached 0.80x stock's mAP50-95 on the design set, "
                   "without them 1.03x (3 seeds, 30 epochs)")
#: Defocus (a Gaussian blur is a cheap stand-in) and JPEG artefacts of encoders: ``defect-sensor``
#: adds them for cameras that defocus or compress, where a detector must stay robust to that.
_SENSOR: list[dict[str, Any]] = [
    {"__class_fullname__": "GaussianBlur", "blur_limit": [3, 7], "p": 0.15},
    {"__class_fullname__": "ImageCompression", "quality_range": [60, 95], "p": 0.2},
]
#: The built-in transform lists (``augment.preset``).
PRESETS: dict[str, list[dict[str, Any]]] = {"none": [], "defect": _DEFECT, "defect-sensor": _DEFECT + _SENSOR}
#: ``augment.preset: auto`` names one of these once the training data is known
#: (:func:`gradkit.plan.resolve_auto_preset`); the last is the largest, the one a configuration check builds.
AUTO_CHOICES = ("none", "defect")


def _registry() -> dict[str, Any]:
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY

    return SERIALIZABLE_REGISTRY


def _construct(entry: dict[str, Any], where: str):
    import albumentations as A

    if not isinstance(entry, dict) or "__class_fullname__" not in entry:
        raise AugmentError(f"{where}: each transform is a mapping with '__class_fullname__' (Albumentations' "
                           f"serialization format), got {entry!r}")
    name = str(entry["__class_fullname__"])
    short = name.rsplit(".", 1)[-1]
    registry = _registry()
    if name not in registry and short not in registry:
        close = difflib.get_close_matches(short, list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AugmentError(f"{where}: unknown Albumentations transform {name!r}{hint}")
    _check_parameters(registry.get(name) or registry[short], entry, where)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no 'p' in serialized data": p defaults as documented
        try:
            transform = A.from_dict({"transform": entry})
        except (ValueError, TypeError, KeyError) as exc:
            raise AugmentError(f"{where}: {short} cannot be built: {' '.join(str(exc).split())}") from None
    try:
        again = A.from_dict({"transform": A.to_dict(transform)["transform"]})
    except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
        raise AugmentError(f"{where}: {short} does not survive serialisation (needed for resume and DDP): "
                           f"{exc}") from None
    if type(again) is not type(transform):
        raise AugmentError(f"{where}: {short} does not round-trip through A.to_dict/A.from_dict")
    return transform


def accepted_parameters(cls) -> set[str] | None:
    """Names a transform class accepts in its serialized form; None when it takes any (``**kwargs``).

    The constructor's parameters plus what ``A.to_dict`` writes for a default instance (a few
    transforms serialise names their signature does not list, and read them back).
    """
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    names = {p.name for p in params if p.kind is not p.VAR_POSITIONAL} - {"self"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            names |= set(cls().to_dict()["transform"])
    except Exception:  # a transform without defaults: its signature is the whole answer
        pass
    return names | {"__class_fullname__"}


def _check_parameters(cls, entry: dict[str, Any], where: str) -> None:
    """Refuse a parameter the transform does not accept (Albumentations only warns and uses the default)."""
    accepted = accepted_parameters(cls)
    if accepted is None:
        return
    for key in entry:
        if key not in accepted:
            close = difflib.get_close_matches(str(key), sorted(accepted - {"__class_fullname__"}), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise AugmentError(f"{where}: {cls.__name__} has no parameter {key!r}{hint} (accepted: "
                               f"{', '.join(sorted(accepted - {'__class_fullname__'}))})")
    for j, child in enumerate(entry.get("transforms") or []):  # OneOf, SomeOf, Sequential...
        if isinstance(child, dict) and "__class_fullname__" in child:
            registry = _registry()
            name = str(child["__class_fullname__"])
            child_cls = registry.get(name) or registry.get(name.rsplit(".", 1)[-1])
            if child_cls is not None:
                _check_parameters(child_cls, child, f"{where}.transforms[{j}]")


def load_transform_list(source: list[dict[str, Any]] | str | Path) -> list[dict[str, Any]]:
    """A transform list from the config itself or from a YAML file (a list, or what ``A.save`` writes)."""
    if isinstance(source, list):
        return source
    path = Path(source)
    if not path.is_file():
        raise AugmentError(f"augment.transforms: file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AugmentError(f"augment.transforms: {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict) and "transform" in data:  # A.save(..., data_format="yaml")
        data = data["transform"]
    if isinstance(data, dict) and "transforms" in data:  # a serialized Compose
        data = data["transforms"]
    if not isinstance(data, list):
        raise AugmentError(f"augment.transforms: {path} must hold a list of transforms or an A.save file")
    return data


def validate_transform_list(entries: list[dict[str, Any]], where: str = "augment.transforms") -> list:
    """Construct every entry; raise :class:`AugmentError` naming the first bad one."""
    return [_construct(e, f"{where}[{i}]") for i, e in enumerate(entries)]


def build_transforms(cfg) -> list:
    """The exact Albumentations transforms training uses for ``cfg`` (preset first, then the user's).
    ``augment.preset: auto`` depends on the data: resolve it first (:func:`gradkit.plan.resolve_auto_preset`).

    Args:
        cfg: What :func:`gradkit.attach` accepts (a config file, a preset name, a dict as loaded
            from YAML, a :class:`gradkit.config.GradkitConfig`, or None for the default preset) or
            an ``augment`` section.
    """
    aug = _augment_section(cfg)
    if aug.preset == "auto":
        raise AugmentError("augment.preset=auto depends on the training data: resolve it first "
                           "(gradkit.plan.resolve_auto_preset, which training does when it starts)")
    out = validate_transform_list(PRESETS[aug.preset], f"augment.preset={aug.preset}")
    if aug.transforms:
        out += validate_transform_list(load_transform_list(aug.transforms))
    return out


def _augment_section(cfg):
    from gradkit.config import AugmentConfig, GradkitConfig, load_config

    if isinstance(cfg, AugmentConfig):
        return cfg
    if isinstance(cfg, GradkitConfig):
        return cfg.augment
    return load_config(cfg).augment


def bbox_params(aug):
    """Box handling of the pipeline: YOLO boxes, filtering that keeps thin and tiny defects."""
    import albumentations as A

    b = aug.bbox
    return A.BboxParams(format="yolo", label_fields=["class_labels"], min_visibility=b.min_visibility,
                        min_area=b.min_area, min_width=b.min_width, min_height=b.min_height, clip=True,
                        filter_invalid_bboxes=True, check_each_transform=False)


def build_compose(cfg, seed: int | None = None):
    """``A.Compose`` of :func:`build_transforms` with the box parameters; None when there is nothing.

    A seed goes into one generator shared by all transforms, not into ``Compose(seed=...)``, which
    gives every transform the same stream and so makes their ``p`` draws fire together.
    """
    import random

    import albumentations as A
    import numpy as np

    aug = getattr(cfg, "augment", cfg)
    transforms = build_transforms(aug)
    if not transforms:
        return None
    compose = A.Compose(transforms, bbox_params=bbox_params(aug))
    if seed is not None:
        compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    return compose


def build_runner(cfg, seed: int | None = None):
    """The :class:`~gradkit.augment.runner.AugmentRunner` training uses for ``cfg``; None when there is nothing."""
    from gradkit.augment.runner import AugmentRunner

    aug = getattr(cfg, "augment", cfg)
    transforms = build_transforms(aug)
    return AugmentRunner(transforms, bbox_params(aug), seed) if transforms else None
