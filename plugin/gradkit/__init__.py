"""yolo-gradkit: visible and controllable backpropagation for the Ultralytics YOLO trainer.

``gradkit.attach(model, cfg)`` activates the plugin on an ``ultralytics.YOLO`` model. The
clipping (:mod:`gradkit.clip`) and monitoring (:mod:`gradkit.monitor`) cores are plain PyTorch.
"""

from gradkit.config import ConfigError, GradkitConfig, load_config

__version__ = "0.1.0"

__all__ = ["ConfigError", "GradkitConfig", "__version__", "attach", "load_config", "resume"]


def attach(model, cfg=None, overrides=None) -> GradkitConfig:
    """Register gradkit's callbacks on an ``ultralytics.YOLO`` model (replacing a plugin attached
    before); ``overrides`` is a dict or a list like ``["clip.mode=agc"]``. See
    :func:`gradkit.integrations.ultralytics.attach`."""
    from gradkit.integrations.ultralytics import attach as _attach

    return _attach(model, cfg, overrides)


def resume(checkpoint, **train_args):
    """Resume a gradkit run from ``RUN/weights/last.pt`` with its own plugin configuration and state;
    see :func:`gradkit.integrations.ultralytics.resume`."""
    from gradkit.integrations.ultralytics.callback import resume as _resume

    return _resume(checkpoint, **train_args)
