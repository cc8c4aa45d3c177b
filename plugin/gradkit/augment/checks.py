"""Building a configuration's transforms once, where the configuration is used, to fail before training.

``gradkit.config`` imports only pydantic and yaml, so it cannot construct Albumentations transforms;
:func:`check_augment_config` does, and is called by ``attach``, by ``gradkit train`` before it hands
over to Ultralytics, and by ``gradkit augment``.
"""

from __future__ import annotations

import os
from typing import Any

from gradkit.augment.pipeline import AUTO_CHOICES, AugmentError, build_transforms
from gradkit.config import ConfigError

__all__ = ["check_augment_config"]


def check_augment_config(cfg: Any, source: Any = None, overrides: dict[str, Any] | None = None) -> None:
    """Construct every configured transform; raise :class:`ConfigError` naming the source and the entry.

    Args:
        cfg: A :class:`gradkit.config.GradkitConfig` (or its ``augment`` section).
        source: What the configuration was loaded from (file, preset name...), for the message.
        overrides: The dotted overrides applied on top, for the message.
    """
    aug = getattr(cfg, "augment", cfg)
    if aug.preset == "auto":  # resolved when training starts: check the largest list it can choose
        aug = aug.model_copy(update={"preset": AUTO_CHOICES[-1]})
    try:
        build_transforms(aug)
    except AugmentError as exc:
        origin = ("the default preset" if source is None else str(source) if isinstance(source, str | os.PathLike)
                  else f"a {type(source).__name__}")
        if overrides:
            origin += " with overrides " + ", ".join(f"{k}={v!r}" for k, v in overrides.items())
        raise ConfigError(f"invalid gradkit config from {origin}:\n  {exc}") from None
