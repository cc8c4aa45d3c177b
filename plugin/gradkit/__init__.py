"""yolo-gradkit: visible and controllable backpropagation for the Ultralytics YOLO trainer.

``gradkit.attach(model, cfg)`` activates the plugin on an ``ultralytics.YOLO`` model. The
clipping (:mod:`gradkit.clip`) and monitoring (:mod:`gradkit.monitor`) cores are plain PyTorch.
"""

from gradkit.config import ConfigError, GradkitConfig, load_config

__version__ = "0.1.0"

__all__ = ["ConfigError", "GradkitConfig", "__version__", "attach", "load_config"]


def attach(model, cfg=None, overrides=None) -> GradkitConfig:
    """Register gradkit's callbacks on an ``ultralytics.YOLO`` model; see
    :func:`gradkit.integrations.ultralytics.attach`."""
    from gradkit.integrations.ultralytics import attach as _attach

    return _attach(model, cfg, overrides)
