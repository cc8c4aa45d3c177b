"""Variants of Ultralytics' own model YAMLs: the installed architecture with one documented change.

Ultralytics ships no scale below ``n``; a thinner network (``benchmarks/defect_quality.py``,
``plan-budget-narrow@time``) is its ``n`` row of ``scales`` with a smaller width multiple. Each variant
is read from the installed YAML, checked for the shape the change relies on (``scales`` rows of
``[depth, width, max_channels]``, YOLO26's ``reg_max``) and raises :class:`SeamError` naming what
changed instead of writing a model nobody measured.

``VARIANTS`` names the variants ``gradkit plan`` may choose (``yolo26n-half.yaml``). Ultralytics does not know
those names: ``gradkit train`` and ``gradkit demo`` write the variant's YAML (:func:`resolved_model`) into
``models/`` of gradkit's cache folder (``GRADKIT_CACHE_DIR``) and hand Ultralytics its path; the timer of
``gradkit plan budget=`` builds it from :func:`variant_config`. A file of that name in the working directory
is the user's own and wins.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from gradkit.integrations.ultralytics.seams import SeamError
from gradkit.plan import MODEL, MODEL_HALF

__all__ = ["VARIANTS", "VariantNotWritten", "installed_model", "narrow_model", "resolved_model", "users_own_variant",
           "variant_config", "with_box_bins", "write_model_yaml"]

#: Model names gradkit knows beyond Ultralytics' own: name -> (Ultralytics' YAML, share of its scale's width kept).
#: The name keeps the scale letter, so Ultralytics picks the one scale row without guessing.
VARIANTS: dict[str, tuple[str, float]] = {MODEL_HALF: (MODEL, 0.5)}


class VariantNotWritten(Exception):
    """A variant's YAML could not be written into gradkit's cache folder: the message says which and what to set."""


def installed_model(model: str) -> tuple[dict, str]:
    """(the installed Ultralytics' own YAML of ``model``, e.g. ``yolo26n.yaml``, without the keys its loader
    adds; the scale letter its name picks, "" when it names none)."""
    from ultralytics.nn.tasks import yaml_model_load

    cfg = yaml_model_load(model)
    return {k: v for k, v in cfg.items() if k not in ("yaml_file", "scale")}, cfg.get("scale") or ""


def _scale_row(cfg: dict, scale: str, model: str) -> tuple[float, float, int]:
    """The ``[depth, width, max_channels]`` row of ``scale``, or a SeamError saying what the YAML holds instead."""
    row = (cfg.get("scales") or {}).get(scale)
    if not (isinstance(row, list | tuple) and len(row) == 3 and all(isinstance(v, int | float) for v in row)):
        raise SeamError(f"{model}: expected a scales row '{scale}: [depth, width, max_channels]' in Ultralytics' "
                        f"YAML, found {row!r} (scales: {sorted(cfg.get('scales') or {})}); the thinner network "
                        "is written from that row")
    return row[0], row[1], row[2]


def narrow_model(model: str, width_share: float) -> dict:
    """``model`` (a YAML name with its scale letter) with that scale's width multiple times ``width_share``;
    depth, the channel cap and the layers unchanged. The result holds that one scale row, whatever its name says,
    and names it (``scale``), so that Ultralytics builds it from a dict without guessing."""
    if not 0 < width_share <= 1:
        raise ValueError(f"width_share={width_share!r}: a share of the scale's width, in (0, 1]")
    cfg, scale = installed_model(model)
    depth, width, max_channels = _scale_row(cfg, scale, model)
    return {**cfg, "scales": {scale: [depth, width * width_share, max_channels]}, "scale": scale}


def variant_config(model: str) -> dict | None:
    """The configuration of the variant ``model`` names (:data:`VARIANTS`), None for any other name or path (the
    plan's timer times gradkit's variant, whatever file of that name is in the working directory)."""
    if model not in VARIANTS:
        return None
    base, width_share = VARIANTS[model]
    return narrow_model(base, width_share)


def resolved_model(model: str) -> str:
    """``model``, or for a variant name the path of its YAML, written now (:func:`variant_config`), unless a file of
    that name is in the working directory: the user's own, which wins; a folder that cannot be written is a one-line
    error naming it."""
    user_file = users_own_variant(model)
    if user_file is not None:  # it wins, and a run that meant ours must not miss that
        print(f"gradkit: {user_file}", file=sys.stderr)
        return model
    cfg = variant_config(model)
    if cfg is None:
        return model
    folder = variant_path(model).parent
    try:
        return str(write_model_yaml(cfg, folder / model))
    except OSError as exc:
        raise VariantNotWritten(f"cannot write the YAML of model={model} into {folder} ({exc.strerror or exc}); "
                                "set GRADKIT_CACHE_DIR to a writable folder") from None


def variant_path(model: str) -> Path:
    """Where :func:`resolved_model` writes the YAML of the variant ``model`` (gradkit's cache folder)."""
    from gradkit.integrations.ultralytics.datasets import cache_dir

    return cache_dir() / "models" / model


def is_gradkit_variant(model_arg: object, variant: str) -> bool:
    """Whether a run's ``model=`` is gradkit's own YAML of ``variant`` (not a user's file of that name)."""
    return isinstance(model_arg, str | Path) and Path(model_arg).resolve() == variant_path(variant).resolve()


def missing_model_config(model: object) -> str | None:
    """What is wrong with a ``model=`` yaml that is neither a file, one of Ultralytics' configurations nor a gradkit
    variant; None for any other value."""
    from gradkit.integrations.ultralytics.datasets import model_config_exists

    if (isinstance(model, str) and model.lower().endswith((".yaml", ".yml")) and variant_config(model) is None
            and not model_config_exists(model)):
        return (f"model config {model} not found: neither a file nor one of Ultralytics' model configurations "
                "(e.g. model=yolo26n.yaml); check model=")
    return None


def users_own_variant(model: str) -> str | None:
    """Where a file in the working directory bears a variant's name: what it means (it, not gradkit's variant, is
    what Ultralytics builds); None otherwise."""
    if model not in VARIANTS or not Path(model).is_file():
        return None
    return (f"model={model} is your file {Path(model).resolve()}, not gradkit's variant of {VARIANTS[model][0]} "
            "(move or rename it to train gradkit's)")


def with_box_bins(model: str, bins: int) -> dict:
    """``model`` (a YOLO26 YAML name) with ``reg_max`` ``bins`` (a DFL box head), the rest as installed."""
    cfg, _ = installed_model(model)
    if cfg.get("reg_max") != 1:
        raise SeamError(f"{model}: reg_max is {cfg.get('reg_max')!r}, not YOLO26's 1; the box-bin variant "
                        "changes only that key")
    return {**cfg, "reg_max": bins}


def write_model_yaml(cfg: dict, target: str | Path) -> Path:
    """Write ``cfg`` as a model YAML at ``target``; its name should keep the scale letter (``yolo26n-...``) so
    that Ultralytics picks the scale without a warning."""
    import yaml

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # written beside it, then renamed over it: a run building the model meanwhile never reads half a file
    handle, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as f:
            f.write(yaml.safe_dump(cfg, sort_keys=False))
        Path(part).replace(target)
    finally:  # a write that failed (a full disk) leaves no part behind either
        Path(part).unlink(missing_ok=True)
    return target
