"""Bringing a custom dataset in: VOC round trip, fine-tuning from a checkpoint, 16-bit grayscale."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import TINY_TRAIN, read_csv, train_tiny
from gradkit.data import check_dataset
from gradkit.synth import SynthSpec, generate_dataset

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))
NEW_NAMES = ("hole", "dent", "burr", "smudge")


def _export_voc(data_yaml: Path, out: Path) -> None:
    """Write a YOLO dataset as Pascal VOC (1-based corners), the way NEU-DET ships."""
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    root = Path(data["path"])
    (out / "JPEGImages").mkdir(parents=True)
    (out / "Annotations").mkdir()
    for img in sorted((root / "images").rglob("*.png")):
        h, w = cv2.imread(str(img)).shape[:2]
        shutil.copy(img, out / "JPEGImages" / img.name)
        objs = ""
        lab = root / "labels" / img.parent.name / (img.stem + ".txt")
        for line in lab.read_text().splitlines():
            c, x, y, bw, bh = (float(v) for v in line.split())
            x0, y0, x1, y1 = (x - bw / 2) * w, (y - bh / 2) * h, (x + bw / 2) * w, (y + bh / 2) * h
            objs += (f"<object><name>{data['names'][int(c)]}</name><difficult>0</difficult><bndbox>"
                     f"<xmin>{x0 + 1:.3f}</xmin><ymin>{y0 + 1:.3f}</ymin><xmax>{x1:.3f}</xmax><ymax>{y1:.3f}</ymax>"
                     "</bndbox></object>")
        (out / "Annotations" / f"{img.stem}.xml").write_text(
            f"<annotation><filename>{img.name}</filename><size><width>{w}</width><height>{h}</height></size>"
            f"{objs}</annotation>")


def test_convert_voc_and_finetune_from_base_checkpoint(tiny_data, tmp_path):
    _, base_run = train_tiny(tiny_data, tmp_path / "base", overrides={"report.enabled": False})
    second = generate_dataset(tmp_path / "second", SynthSpec(images=24, imgsz=64, seed=11, class_names=NEW_NAMES),
                              progress=False)
    _export_voc(second, tmp_path / "voc")
    proc = subprocess.run([GRADKIT, "convert", "voc", f"src={tmp_path / 'voc'}", f"out={tmp_path / 'converted'}",
                           "split=0.7,0.3", "seed=0"], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    converted = tmp_path / "converted" / "data.yaml"
    assert sorted(yaml.safe_load(converted.read_text())["names"].values()) == sorted(NEW_NAMES)
    # the round trip reproduces the original labels
    orig = {p.name: p.read_text() for p in (tmp_path / "second" / "labels").rglob("*.txt")}
    names_new = yaml.safe_load(converted.read_text())["names"]
    remap = {NEW_NAMES.index(n): i for i, n in names_new.items()}
    for p in (tmp_path / "converted" / "labels").rglob("*.txt"):
        want = [[remap[int(float(v.split()[0]))], *map(float, v.split()[1:])] for v in orig[p.name].splitlines()]
        got = [list(map(float, v.split())) for v in p.read_text().splitlines()]
        np.testing.assert_allclose(sorted(got), sorted(want), atol=2e-6)

    from ultralytics import YOLO

    import gradkit

    tuned = YOLO(str(base_run / "weights" / "best.pt"))
    gradkit.attach(tuned, "finetune", {"augment.copy_paste.p": 0.5})
    tuned.train(data=str(converted), project=str(tmp_path), name="ft", exist_ok=True,
                **{**TINY_TRAIN, "epochs": 1, "freeze": 10})
    run = tmp_path / "ft"
    report = json.loads((run / "report.json").read_text())
    assert sorted(report["class_names"].values()) == sorted(NEW_NAMES)
    assert list(tuned.names.values()) == [names_new[i] for i in sorted(names_new)]
    layers = {int(r["layer"]) for r in read_csv(run / "gradients.csv")}
    assert min(layers) >= 10  # frozen backbone not monitored (and never called dead)
    assert int(read_csv(run / "gradient_steps.csv")[0]["step"]) == 1  # plugin state starts fresh


def test_16bit_single_channel_images_train(tiny_data, tmp_path):
    src = Path(yaml.safe_load(tiny_data.read_text())["path"])
    dst = tmp_path / "deep"
    shutil.copytree(src, dst)
    means = {}
    for p in (dst / "images").rglob("*.png"):
        gray = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        means[p.name] = gray.mean()
        cv2.imwrite(str(p), gray.astype(np.uint16) * 257)  # full-range 16-bit, one channel
    data = yaml.safe_load(tiny_data.read_text())
    data["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(data))
    res = check_dataset(dst / "data.yaml")
    assert res.errors == [] and any(f.kind == "bit depth" for f in res.findings)  # a warning, not an error
    loaded = {}

    def grab(trainer):
        ds = trainer.train_loader.dataset
        img, _, _ = ds.load_image(0)
        loaded["shape"], loaded["mean"], loaded["name"] = img.shape, img.mean(), Path(ds.im_files[0]).name

    model, run = train_tiny(dst / "data.yaml", tmp_path, epochs=1, callbacks=[("on_train_start", grab)])
    assert loaded["shape"][2] == 3
    assert abs(loaded["mean"] - means[loaded["name"]]) < 2.0  # not black: the 16-bit range reached 8 bits
    assert (run / "weights" / "last.pt").exists() and model.gradkit.step > 0
