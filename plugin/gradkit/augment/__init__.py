"""Defect-inspection augmentation: validated Albumentations pipelines, presets, box-only copy-paste."""

from gradkit.augment.copy_paste import DefectBank, paste_defects
from gradkit.augment.pipeline import PRESETS, AugmentError, bbox_params, build_compose, build_transforms

__all__ = ["PRESETS", "AugmentError", "DefectBank", "bbox_params", "build_compose", "build_transforms",
           "paste_defects"]
