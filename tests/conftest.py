"""Shared fixtures: offline Ultralytics, tiny generated datasets."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

from pathlib import Path

import pytest

from gradkit.synth import SynthSpec, generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """24 images of 64 px: enough for the real trainer to run a few optimizer steps."""
    return generate_dataset(tmp_path_factory.mktemp("tiny") / "ds", SynthSpec(images=24, imgsz=64, seed=3),
                            progress=False)


@pytest.fixture(autouse=True)
def _ultralytics_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")


def read_csv(path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


TINY_TRAIN = dict(epochs=2, imgsz=64, batch=4, nbs=4, workers=0, plots=False, verbose=False, val=False,
                  device="cpu", seed=0, warmup_epochs=0)


def train_tiny(data: Path, tmp_path: Path, cfg=None, overrides=None, callbacks=(), **train_kw):
    """Train yolo26n.yaml on tiny data with gradkit attached; return (model, run_dir)."""
    from ultralytics import YOLO

    import gradkit

    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, cfg if cfg is not None else "default", overrides)
    for event, fn in callbacks:
        model.add_callback(event, fn)
    kw = {**TINY_TRAIN, **train_kw}
    model.train(data=str(data), project=str(tmp_path), name="run", exist_ok=True, **kw)
    return model, Path(model.trainer.save_dir)
