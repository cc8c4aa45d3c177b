"""Evaluation reports: one self-contained HTML plus JSON and Markdown."""

from gradkit.report.build import build_report, write_report
from gradkit.report.compare import compare_reports
from gradkit.report.data import EvalData

__all__ = ["EvalData", "build_report", "compare_reports", "write_report"]
