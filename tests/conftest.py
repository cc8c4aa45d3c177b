"""Shared fixtures: offline Ultralytics, tiny generated datasets."""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")  # what `gradkit train` sets; in-process runs would set it midway

from pathlib import Path

import numpy as np
import pytest
import torch

from gradkit.synth import SynthSpec, generate_dataset


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """24 images of 64 px: enough for the real trainer to run a few optimizer steps."""
    return generate_dataset(tmp_path_factory.mktemp("tiny") / "ds", SynthSpec(images=24, imgsz=64, seed=3),
                            progress=False)


@pytest.fixture(autouse=True)
def _ultralytics_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    # Ultralytics' image caches go to gradkit's cache folder, not into the user's home, during tests
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "gradkit-cache"))


@pytest.fixture
def gradkit_here(capsys, monkeypatch):
    """Run the ``gradkit`` command in this process, as ``gradkit ARGS`` would run in ``cwd``: a
    CompletedProcess with the exit status, stdout and stderr the console script would give (a SystemExit
    as Python reports it, an uncaught exception as a traceback on stderr). A subprocess pays ~3 s of imports
    per call; tests that check the console script itself (``test_e2e_cli*``) still start one."""
    import subprocess
    import sys
    import traceback

    from gradkit.cli import main

    def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        import logging

        capsys.readouterr()
        with monkeypatch.context() as patch:
            if cwd is not None:
                patch.chdir(cwd)
            for handler in logging.getLogger("ultralytics").handlers:  # bound to the stdout of its import: in a
                if isinstance(handler, logging.StreamHandler):      # test process, an earlier test's closed one
                    patch.setattr(handler, "stream", sys.stdout)
            try:
                status = main(list(args))
            except SystemExit as exc:  # what the interpreter does with one at the top
                status = exc.code
                if isinstance(status, str):
                    print(status, file=sys.stderr)
                    status = 1
            except Exception:
                traceback.print_exc()
                status = 1
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(["gradkit", *args], status or 0, out, err)

    return run


def read_csv(path) -> list[dict[str, str]]:
    import csv

    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


TINY_TRAIN = dict(epochs=2, imgsz=64, batch=4, nbs=4, workers=0, plots=False, verbose=False, val=False,
                  device="cpu", seed=0, warmup_epochs=0)


def train_tiny(data: Path, tmp_path: Path, cfg=None, overrides=None, callbacks=(), report: bool = False,
               heatmap: bool = False, **train_kw):
    """Train yolo26n.yaml on tiny data with gradkit attached; return (model, run_dir). The end-of-training
    extras, the report (a validation and a page) and gradients.png, cost about half a tiny run's seconds: made
    only where the test reads them (``report=True``, ``heatmap=True``, or settings of its own for them)."""
    from ultralytics import YOLO

    import gradkit

    model = YOLO("yolo26n.yaml")
    nested = cfg if isinstance(cfg, dict) else {}
    given = [str(k).split("=")[0].removeprefix("gradkit.") for k in overrides or ()]  # keys, or "key=value"s
    given += [f"{part}.{k}" for part, section in nested.items() if isinstance(section, dict) for k in section]
    for wanted, key, own in ((report, "report.enabled", "report"), (heatmap, "monitor.plot", "monitor.plot")):
        if not wanted and not any(k == own or k.startswith(own + ".") for k in given):
            overrides = ([*overrides, f"{key}=false"] if isinstance(overrides, (list, tuple))
                         else {**(overrides or {}), key: False})
    gradkit.attach(model, cfg if cfg is not None else "default", overrides)
    for event, fn in callbacks:
        model.add_callback(event, fn)
    kw = {**TINY_TRAIN, **train_kw}
    model.train(data=str(data), project=str(tmp_path), name="run", exist_ok=True, **kw)
    return model, Path(model.trainer.save_dir)


def detection_model_and_batch():
    """A yolo26n detector of 2 classes in training mode with its loss built, and a batch of two 96 px images
    holding five boxes of both classes, thin ones among them (the assign and loss options' tests)."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    model.args = get_cfg()
    model.criterion = model.init_criterion()
    boxes = torch.tensor([[0.5, 0.5, 0.6, 0.5], [0.3, 0.2, 0.5, 0.03], [0.7, 0.7, 0.1, 0.1],  # image 0
                          [0.5, 0.4, 0.02, 0.6], [0.2, 0.8, 0.25, 0.25]])  # image 1 (xywh, normalised)
    batch = {"img": torch.rand(2, 3, 96, 96), "batch_idx": torch.tensor([0.0, 0, 0, 1, 1]),
             "cls": torch.tensor([[0.0], [1], [0], [1], [0]]), "bboxes": boxes}
    return model.train(), batch


def _write_sample(root, split, stem, img, labels):
    import cv2

    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{stem}.png"), img)
    (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{' '.join(map(str, lab))}\n" for lab in labels))


def _yolo_line(box, iw, ih, c):
    x0, y0, x1, y1 = box
    return (c, (x0 + x1) / 2 / iw, (y0 + y1) / 2 / ih, (x1 - x0) / iw, (y1 - y0) / ih)


def _texture(rng, side):
    """A strong isotropic grain: smoothed noise scaled to a standard deviation of 20 grey levels."""
    import cv2

    noise = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), 1.0)
    return 20.0 * noise / noise.std()


def standout_set(root, rng, surface):
    """12 images: an anti-aliased 1 px diagonal line (class 0) and a disc (class 1) each, drawn at 4x the
    grain's deviation on a plain surface, or the line as strong as the grain (1x) on a textured one."""
    import cv2
    import yaml

    for i in range(12):
        base = np.full((96, 96), 128.0) + (_texture(rng, 96) if surface == "textured" else 0.0)
        line, disc = np.zeros((96, 96), np.float32), np.zeros((96, 96), np.float32)
        cv2.line(line, (10, 10 + i), (60, 50 + i // 2), 1.0, 1, cv2.LINE_AA)
        cv2.circle(disc, (78, 20), 5 + i % 4, 1.0, -1, cv2.LINE_AA)
        strength = 80.0 if surface == "plain" else 20.0
        img = np.clip(base + strength * line + 80.0 * disc, 0, 255).astype(np.uint8)
        labels = []
        for c, mask in ((0, line), (1, disc)):
            ys, xs = np.nonzero(mask > 0.25)
            labels.append(_yolo_line((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1), 96, 96, c))
        _write_sample(root, "train", f"{i}", cv2.merge([img, img, img]), labels)
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/train",
                                    "names": {0: "scratch", 1: "pit"}}))
    return data


def file_digests(root: Path) -> dict[str, str]:
    """Every file under ``root`` and a digest of its bytes: the oracle for "nothing written or overwritten"."""
    import hashlib

    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}


def copy_dataset(tiny_data: Path, root: Path) -> Path:
    """A copy of the tiny dataset at ``root`` whose YAML points at the copy; returns that YAML."""
    import shutil

    shutil.copytree(tiny_data.parent, root)
    (root / "data.yaml").write_text((root / "data.yaml").read_text().replace(str(tiny_data.parent), str(root)))
    return root / "data.yaml"
