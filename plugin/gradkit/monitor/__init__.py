"""Gradient monitoring core: per-layer statistics, diagnoses and their records (no trainer code)."""

from gradkit.monitor.alerts import Alert, AlertDetector
from gradkit.monitor.records import GradientLog, plot_heatmap, truncate_records
from gradkit.monitor.stats import LayerStats, StepStats

__all__ = ["Alert", "AlertDetector", "GradientLog", "LayerStats", "StepStats", "plot_heatmap",
           "truncate_records"]
