"""The only package that touches Ultralytics internals.

Everything version-sensitive lives here: the callback events gradkit uses, the replacement of
``BaseTrainer.optimizer_step`` (Ultralytics fires no event between backward and the optimizer step
and hard-codes ``clip_grad_norm_(max_norm=10)``), the dataset pipeline stages, the validator's
internals read for reports, and the checkpoint side-car. Importing it checks the installed
Ultralytics version and fails loudly outside the tested range, so an upgrade breaks here and
nowhere else.

The replacement step keeps Ultralytics' order exactly: one ``scaler.unscale_`` -> (measure, clip)
-> ``scaler.step`` -> ``scaler.update`` -> ``optimizer.zero_grad`` -> ``ema.update``. Gradients
are already all-reduced by DDP at this point, so every rank takes the same decisions.
"""

from gradkit.integrations.ultralytics.version import SUPPORTED_ULTRALYTICS, check_ultralytics_version

check_ultralytics_version()

from gradkit.integrations.ultralytics.augment import (  # noqa: E402
    AlbumentationsStage,
    CopyPasteStage,
    install_augmentation,
    preview_augmentation,
)
from gradkit.integrations.ultralytics.callback import (  # noqa: E402
    DatasetError,
    GradkitCallback,
    PluginError,
    attach,
    check_before_training,
    layer_labels,
    resume,
)
from gradkit.integrations.ultralytics.datasets import (  # noqa: E402
    install_dataset_guard,
    model_config_exists,
    resolve_dataset,
)
from gradkit.integrations.ultralytics.sliced import TiledValidation, predict_tiles  # noqa: E402
from gradkit.integrations.ultralytics.validation import (  # noqa: E402
    PredictionRecorder,
    collect_validation,
    record_predictions,
    validate_for_report,
)

install_dataset_guard()  # no entry point that imports gradkit's integration ever runs a YAML's download:

__all__ = [
    "SUPPORTED_ULTRALYTICS",
    "AlbumentationsStage",
    "CopyPasteStage",
    "DatasetError",
    "GradkitCallback",
    "PluginError",
    "PredictionRecorder",
    "TiledValidation",
    "attach",
    "check_before_training",
    "check_ultralytics_version",
    "collect_validation",
    "install_augmentation",
    "install_dataset_guard",
    "layer_labels",
    "model_config_exists",
    "predict_tiles",
    "preview_augmentation",
    "record_predictions",
    "resolve_dataset",
    "resume",
    "validate_for_report",
]
