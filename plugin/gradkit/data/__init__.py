"""Bringing datasets in: VOC/COCO conversion and a dataset checker."""

from gradkit.data.check import CheckResult, Finding, check_dataset, fix_dataset
from gradkit.data.convert import ConversionReport, convert_coco, convert_voc

__all__ = ["CheckResult", "ConversionReport", "Finding", "check_dataset", "convert_coco", "convert_voc",
           "fix_dataset"]
