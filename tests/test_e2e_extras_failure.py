"""A failing end-of-training extra (report, heatmap) never loses a finished run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import read_csv, train_tiny

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_failed_report_and_heatmap_keep_the_run_and_say_how_to_rebuild(tiny_data, tmp_path, monkeypatch):
    from ultralytics.utils import LOGGER

    import gradkit.integrations.ultralytics.callback as callback

    def broken_plot(save_dir):  # a planted fault in the heatmap
        raise OSError("disk full")

    monkeypatch.setattr(callback, "plot_heatmap", broken_plot)
    records = _Records()
    LOGGER.addHandler(records)
    try:
        # a split the dataset does not have: Ultralytics' own validation fails inside the report
        model, run = train_tiny(tiny_data, tmp_path, overrides={"report.split": "nosuchsplit", "report.conf": 0.3,
                                                                 "report.gallery": 2}, epochs=1, heatmap=True)
    finally:
        LOGGER.removeHandler(records)
    assert model.gradkit.extras_failed == ["gradients.png", "the report"]
    assert (run / "weights" / "last.pt").exists() and (run / "weights" / "best.pt").exists()
    assert len(read_csv(run / "results.csv")) == 1
    assert (run / "gradkit_summary.json").exists()  # what comes after a failed extra still ran
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
    heat, report = (m for m in records.messages if "gradkit: " in m)
    assert "gradients.png failed (OSError: disk full)" in heat and "plot_heatmap('" + str(run) + "')" in heat
    assert "the report failed" in report
    assert f"rebuild it with: gradkit val model={run / 'weights' / 'best.pt'} data={tiny_data}" in report
    assert "split=nosuchsplit gradkit.report.gallery=2 gradkit.report.conf=0.3" in report  # the same operating point


def test_cli_train_exits_1_when_an_extra_failed_and_keeps_the_run(tiny_data, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "plugin"), "YOLO_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "gradkit.cli", "train", "model=yolo26n.yaml", f"data={tiny_data}", "epochs=1",
           "imgsz=64", "batch=4", "workers=0", "plots=False", "val=False", "device=cpu", f"project={tmp_path}",
           "name=run", "gradkit.report.split=nosuchsplit", "gradkit.monitor.plot=false"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "training finished, but the report failed" in proc.stderr
    assert "rebuild it with: gradkit val model=" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "weights" / "last.pt").exists()
    assert len(read_csv(tmp_path / "run" / "results.csv")) == 1
