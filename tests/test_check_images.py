"""The check before training catches the images training would drop, rewrite or misread.

Planted faults: files cut short (PNG, JPEG, BMP), bytes that are no image, a PNG with one byte
changed, an image under 10 px and
12-bit values in a 16-bit PNG and in a 48-bit RGB TIFF, a float32 TIFF.
The oracle for "training would drop it" is Ultralytics' own per-image
verification and image reader, run on a copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset

GRADKIT = str(Path(sys.executable).with_name("gradkit"))
IMAGE_KINDS = {"unreadable image", "bit depth"}


def _cut(path: Path, image: np.ndarray, keep: float = 0.6) -> None:
    cv2.imwrite(str(path), image)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _plant(images: Path, labels: Path) -> set[str]:
    """Bad images beside the good ones, each with a valid label; returns the bad file names."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (64, 64, 3), np.uint8)
    _cut(images / "cut.png", noise)
    _cut(images / "cut.jpg", noise)
    _cut(images / "cut.bmp", noise)
    (images / "text.jpg").write_text("this is not an image")
    cv2.imwrite(str(images / "flipped.png"), noise)
    damaged = bytearray((images / "flipped.png").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF  # one byte inside the pixel data: full length, IEND intact
    (images / "flipped.png").write_bytes(bytes(damaged))
    cv2.imwrite(str(images / "tiny.png"), noise[:8])
    cv2.imwrite(str(images / "deep.png"), np.full((64, 64), 1000, np.uint16))
    cv2.imwrite(str(images / "float.tif"), rng.random((64, 64), np.float32))  # PIL mode F: no pixels OpenCV reads
    cv2.imwrite(str(images / "deep_rgb.tif"), np.full((64, 64, 3), 1000, np.uint16))  # PIL calls it "RGB"
    cv2.imwrite(str(images / "trailing.jpg"), noise)  # whole, then bytes after its end marker, as some tools write
    (images / "trailing.jpg").write_bytes((images / "trailing.jpg").read_bytes() + b"\x00\x00")
    bad = {"cut.png", "cut.jpg", "cut.bmp", "text.jpg", "flipped.png", "tiny.png", "deep.png", "trailing.jpg",
           "float.tif", "deep_rgb.tif"}
    for name in bad:
        (labels / (Path(name).stem + ".txt")).write_text("0 0.5 0.5 0.2 0.2\n")
    return bad


@pytest.fixture
def planted(tiny_data, tmp_path) -> tuple[Path, set[str]]:
    root = tmp_path / "ds"
    shutil.copytree(tiny_data.parent, root)
    data = {**yaml.safe_load((root / "data.yaml").read_text()), "path": str(root)}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml", _plant(root / "images" / "train", root / "labels" / "train")


def _flagged(result) -> set[str]:
    return {Path(f.path).name for f in result.errors if f.kind in IMAGE_KINDS}


def test_fast_check_flags_each_planted_image_as_the_full_check_does(planted):
    data_yaml, bad = planted
    fast = check_dataset(data_yaml, images=False)
    assert _flagged(fast) == bad
    assert _flagged(check_dataset(data_yaml, images=True)) == bad
    assert not any(f.kind == "leakage" for f in fast.findings)  # the full check's parts stay out of the fast one


def test_what_ultralytics_drops_or_rewrites_is_flagged(planted, tmp_path):
    from ultralytics.data.utils import verify_image_label
    from ultralytics.utils.patches import imread

    data_yaml, bad = planted
    copy = tmp_path / "copy"
    shutil.copytree(data_yaml.parent / "images" / "train", copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    refused = set()
    for p in sorted(copy.iterdir()):
        out = verify_image_label((str(p), str(p.with_suffix(".txt")), "", False, 4, 0, 0, False))
        rewritten = p.read_bytes() != before[p.name]
        if out[0] is None or rewritten or imread(str(p)) is None:  # dropped, re-encoded, or a crash when loaded
            refused.add(p.name)
    assert refused == bad - {"deep.png", "deep_rgb.tif"}  # Ultralytics trains on the 12-bit images, nearly black
    assert refused <= _flagged(check_dataset(data_yaml, images=False))


def test_train_refuses_truncated_images_before_training(planted, tmp_path):
    data_yaml, _ = planted
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data_yaml}", "epochs=1", "imgsz=64",
                           "batch=4", "workers=0", "device=cpu", f"project={tmp_path}", "name=r"],
                          capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    train = data_yaml.parent / "images" / "train"
    for name in ("cut.png", "cut.jpg", "cut.bmp", "text.jpg", "trailing.jpg"):
        assert f"{train / name}:" in proc.stderr
    assert "JPEG not ending with its end-of-image marker" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r" / "weights" / "last.pt").exists()


def test_a_full_range_16_bit_image_s_warning_says_how_many_grey_levels_training_keeps(tmp_path):
    """A 16-bit image whose values reach past 4095 was warned of with no measure and no advice: Ultralytics divides
    it by 256, and an X-ray whose detail lies between 20000 and 21000 keeps 5 grey levels, its faint defects gone.
    The warning now says how many levels of 256 the image keeps, and what to do where they are few. Oracle: the
    distinct values of the image divided by 256 (as Ultralytics' reader makes them)."""
    root = tmp_path / "ds"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        ramp = np.linspace(20000, 21000, 64 * 64).reshape(64, 64).astype(np.uint16)
        cv2.imwrite(str(root / "images" / split / "narrow.png"), ramp)
        cv2.imwrite(str(root / "images" / split / "wide.png"), ((ramp.astype(np.int64) - 20000) * 65).astype(np.uint16))
        for stem in ("narrow", "wide"):
            (root / "labels" / split / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": {0: "crack"}}))
    res = check_dataset(root / "data.yaml")
    said = {Path(f.path).name: f.message for f in res.findings if f.kind == "bit depth" and "/train/" in f.path}
    narrow = len(np.unique(ramp >> 8))
    wide = len(np.unique(((ramp.astype(np.int64) - 20000) * 65) >> 8))
    assert f"keeps {narrow} of 256 grey levels" in said["narrow.png"] and "window" in said["narrow.png"], said
    assert f"keeps {wide} of 256 grey levels" in said["wide.png"] and "window" not in said["wide.png"], said
    assert {f.severity for f in res.findings if f.kind == "bit depth"} == {"warning"}
