"""Reports from real Ultralytics validation: the numbers are the validator's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import train_tiny

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    model, run = train_tiny(tiny_data, tmp, epochs=3)
    return model, run


def test_training_report_numbers_equal_the_validator(trained, tiny_data):
    from ultralytics import YOLO

    _, run = trained
    report = json.loads((run / "report.json").read_text())
    metrics = YOLO(str(run / "weights" / "best.pt")).val(data=str(tiny_data), split="val", imgsz=64, batch=4,
                                                         conf=0.001, plots=False, verbose=False, device="cpu")
    box = metrics.box
    h = report["headline"]
    assert h["mAP50"] == pytest.approx(box.map50, abs=1e-6)
    assert h["mAP50-95"] == pytest.approx(box.map, abs=1e-6)
    assert h["precision"] == pytest.approx(box.mp, abs=1e-6)
    assert h["recall"] == pytest.approx(box.mr, abs=1e-6)
    present = {int(c) for c in box.ap_class_index}
    for row in report["per_class"]:
        c = row["class"]
        if c in present:
            k = list(box.ap_class_index).index(c)
            assert row["AP50-95"] == pytest.approx(box.class_result(k)[3], abs=1e-6)
        else:
            assert row["AP50-95"] is None  # n/a, not the mean Ultralytics' maps fills in
        assert row["instances"] == int(metrics.nt_per_class[c])
    assert report["training"]["alert_counts"] == {"exploding": 0, "vanishing": 0, "dead": 0, "nonfinite": 0}
    assert report["images"] == len(list((tiny_data.parent / "images" / "val").glob("*.png")))
    page = (run / "report.html").read_text()
    assert "data:image/png;base64" in page and "https://" not in page and "http://" not in page
    assert set(report) >= {"headline", "per_class", "coco", "size_buckets", "errors", "training", "versions"}


def test_gradkit_val_writes_report_and_report_command_rebuilds_and_compares(trained, tiny_data, tmp_path):
    _, run = trained
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run([GRADKIT, "val", f"model={run / 'weights' / 'best.pt'}", f"data={tiny_data}", "split=test",
                           "imgsz=64", "batch=4", "device=cpu", f"project={tmp_path}", "name=v"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    val_report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert val_report["split"] == "test" and (tmp_path / "v" / "report.html").exists()

    (run / "report.html").unlink()
    proc = subprocess.run([GRADKIT, "report", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "report.html").exists()

    proc = subprocess.run([GRADKIT, "report", str(run), str(tmp_path / "v"), f"out={tmp_path / 'cmp'}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmp_ = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert cmp_["kind"] == "comparison" and [r["label"] for r in cmp_["runs"]] == [run.name, "v"]

    proc = subprocess.run([GRADKIT, "report", str(tmp_path / "nothing")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "report.json not found" in proc.stderr
