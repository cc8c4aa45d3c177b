"""Defect-inspection augmentation: validated Albumentations pipelines, presets, box-only copy-paste."""

import os

# Albumentations asks PyPI for its newest version when first imported unless this is set; every module that
# imports it is in this package, so setting it here keeps training off the network (Ultralytics sets it before
# its own import, which comes after ours). A user's own value stands.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


from gradkit.augment.copy_paste import DefectBank, paste_defects
from gradkit.augment.pipeline import (
    PRESETS,
    AugmentError,
    bbox_params,
    build_compose,
    build_runner,
    build_transforms,
)
from gradkit.augment.runner import AugmentRunner

__all__ = ["PRESETS", "AugmentError", "AugmentRunner", "DefectBank", "bbox_params", "build_compose", "build_runner",
           "build_transforms", "paste_defects"]
