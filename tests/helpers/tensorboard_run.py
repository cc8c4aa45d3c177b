"""A tiny gradkit training with Ultralytics' TensorBoard logger on (tests/test_tensorboard.py).

Ultralytics disables its TensorBoard callback inside pytest, so the test runs this in a child
process: ``python tensorboard_run.py DATA_YAML PROJECT_DIR`` with YOLO_CONFIG_DIR set.
"""

from __future__ import annotations

import sys

from ultralytics import YOLO
from ultralytics.utils import SETTINGS

import gradkit

SETTINGS.update(tensorboard=True)
model = YOLO("yolo26n.yaml")
gradkit.attach(model, "default", {"report.enabled": False, "monitor.plot": False})
model.train(data=sys.argv[1], project=sys.argv[2], name="run", exist_ok=True, epochs=2, imgsz=64, batch=4, nbs=4,
            workers=0, plots=False, verbose=False, val=False, device="cpu", seed=0, warmup_epochs=0)
