"""Bringing datasets in: VOC/COCO conversion and a dataset checker."""

from gradkit.data.check import CheckResult, Finding, FixChange, check_dataset, fix_dataset, fix_output
from gradkit.data.convert import ConversionReport, convert_coco, convert_voc

__all__ = ["CheckResult", "ConversionReport", "Finding", "FixChange", "check_dataset", "convert_coco",
           "convert_voc", "fix_dataset", "fix_output"]
