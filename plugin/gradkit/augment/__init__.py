"""Defect-inspection augmentation: validated Albumentations pipelines, presets, box-only copy-paste."""

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
