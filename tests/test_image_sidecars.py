"""A ``.npy`` file beside an image is the user's, never Ultralytics' image cache.

Stock Ultralytics (``BaseDataset``) looks for ``<image>.npy`` beside every image in *every* cache mode: when
it is newer than the image it trains on its array instead of the image; when its channels differ it
overwrites it with the decoded image; when it cannot be read it deletes it; and ``cache=disk`` writes one
beside each image. A height map or a depth frame saved beside its photograph, as 3-D inspection cameras
do, is then lost or trained on. gradkit keeps those caches in its own folder (``GRADKIT_CACHE_DIR``).

Oracles: OpenCV's own decode of the image, and digests of every file of the dataset before and after."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import copy_dataset, file_digests

GRADKIT = str(Path(sys.executable).with_name("gradkit"))






def _plant_sidecars(images: Path) -> dict[Path, np.ndarray]:
    """Beside each training image, a user's file of the same stem, newer than the image: a one-channel
    float height map on the first, a three-channel picture of another scene on the rest."""
    planted = {}
    for i, image in enumerate(sorted(images.glob("*.png"))):
        h, w = cv2.imread(str(image)).shape[:2]
        array = (np.random.default_rng(i).random((h, w), dtype=np.float32) if i == 0
                 else np.full((h, w, 3), 17 + i, np.uint8))
        np.save(image.with_suffix(".npy"), array)
        stamp = image.stat().st_mtime + 60
        os.utime(image.with_suffix(".npy"), (stamp, stamp))
        planted[image] = array
    return planted


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "gradkit-cache"))
    return tmp_path / "gradkit-cache"


def _dataset(data: Path, cache):
    from ultralytics.cfg import get_cfg
    from ultralytics.data import build_yolo_dataset
    from ultralytics.data.utils import check_det_dataset

    import gradkit.integrations.ultralytics  # noqa: F401  (installs the guard on import)

    info = check_det_dataset(str(data))
    return build_yolo_dataset(get_cfg(overrides={"imgsz": 64, "cache": cache}), info["train"], 4, info, mode="val")


@pytest.mark.parametrize("cache", [False, "disk"])
def test_ultralytics_datasets_read_the_images_not_a_users_npy_beside_them(tiny_data, tmp_path, cache_dir, cache):
    data = copy_dataset(tiny_data, tmp_path / "ds")
    planted = _plant_sidecars(data.parent / "images" / "train")
    before = file_digests(data.parent)
    dataset = _dataset(data, cache)
    for i, name in enumerate(dataset.im_files):
        image, _, _ = dataset.load_image(i)
        decoded = cv2.imread(name)
        assert image.shape == decoded.shape and np.array_equal(image, decoded), name
        assert dataset.npy_files[i].is_relative_to(cache_dir)
    assert file_digests(data.parent) == before
    for image, array in planted.items():
        assert np.array_equal(np.load(image.with_suffix(".npy")), array)
    if cache == "disk":  # the image cache works, in gradkit's folder: one file per image
        assert sorted(cache_dir.rglob("*.npy")) == sorted(dataset.npy_files)


def test_the_image_cache_is_read_back_and_forgets_an_image_rewritten_with_its_old_times(tiny_data, tmp_path,
                                                                                        cache_dir):
    data = copy_dataset(tiny_data, tmp_path / "ds")
    first = _dataset(data, "disk")
    sentinel = np.full_like(first.load_image(1)[0], 99)
    np.save(first.npy_files[1], sentinel)  # the oracle that the cache is what is read, where it is valid
    assert np.array_equal(_dataset(data, False).load_image(1)[0], sentinel)
    image = Path(first.im_files[0])
    times = image.stat()
    cv2.imwrite(str(image), 255 - cv2.imread(str(image)))  # a new dataset unpacked over the old one,
    os.utime(image, ns=(times.st_atime_ns, times.st_mtime_ns))  # keeping the file's time, as tar and cp -p do
    again = _dataset(data, False)
    assert np.array_equal(again.load_image(0)[0], cv2.imread(str(image)))


def test_two_images_of_one_stem_in_one_folder_get_two_caches(tiny_data, tmp_path, cache_dir):
    data = copy_dataset(tiny_data, tmp_path / "ds")
    train = data.parent / "images" / "train"
    png = sorted(train.glob("*.png"))[0]
    cv2.imwrite(str(png.with_suffix(".jpg")), 255 - cv2.imread(str(png)), [cv2.IMWRITE_JPEG_QUALITY, 100])
    # (both images read the one label file of their stem, as in stock)
    _dataset(data, "disk")
    again = _dataset(data, False)
    for i, name in enumerate(again.im_files):
        assert np.array_equal(again.load_image(i)[0], cv2.imread(name)), name


def test_a_dataset_unpickled_without_gradkit_reads_the_same_caches(tiny_data, tmp_path, cache_dir):
    """Spawned dataloader workers unpickle the dataset in a fresh interpreter that never imported gradkit."""
    data = copy_dataset(tiny_data, tmp_path / "ds")
    _plant_sidecars(data.parent / "images" / "train")
    dataset = _dataset(data, "disk")
    (tmp_path / "dataset.pkl").write_bytes(pickle.dumps(dataset))
    script = ("import pickle, sys, cv2, numpy as np\n"
              "d = pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "assert 'gradkit.integrations' not in ' '.join(sys.modules), 'gradkit was imported'\n"
              "print(all(np.array_equal(d.load_image(i)[0], cv2.imread(f)) for i, f in enumerate(d.im_files)),"
              " all(str(p).startswith(sys.argv[2]) for p in d.npy_files))\n")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "dataset.pkl"), str(cache_dir)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "YOLO_OFFLINE": "1"})
    assert proc.stdout.split()[-2:] == ["True", "True"], proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.mark.e2e
def test_training_with_disk_caching_leaves_the_dataset_and_its_sidecars_as_they_were(tiny_data, tmp_path,
                                                                                      monkeypatch):
    from gradkit.integrations.ultralytics.datasets import image_cache_path

    data = copy_dataset(tiny_data, tmp_path / "ds")
    _plant_sidecars(data.parent / "images" / "train")
    before = file_digests(data.parent)
    env = {**os.environ, "YOLO_OFFLINE": "1", "GRADKIT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data}", "epochs=1", "imgsz=64",
                           "batch=4", "workers=0", "device=cpu", "plots=False", "cache=disk", f"project={tmp_path}",
                           "name=r"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert file_digests(data.parent) == before, sorted(set(file_digests(data.parent)) ^ set(before))
    assert "Refreshing stale" not in out and "Removing corrupt" not in out, out[-3000:]
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(tmp_path / "cache"))
    images = [f for split in ("train", "val") for f in (data.parent / "images" / split).glob("*.png")]
    trained_on = {image_cache_path(f) for f in images}
    assert set((tmp_path / "cache").rglob("*.npy")) == trained_on  # the cache still works: one per image trained on


def test_an_upgrade_that_stops_naming_the_image_caches_stops_by_name(monkeypatch):
    from ultralytics.data.base import BaseDataset

    from gradkit.integrations.ultralytics.datasets import image_cache_path
    from gradkit.integrations.ultralytics.seams import SeamError, redirect_image_caches

    monkeypatch.setattr(BaseDataset, "cache_images_to_disk", lambda self, i: None)
    with pytest.raises(SeamError, match=r"BaseDataset\.cache_images_to_disk no longer .*npy_files"):
        redirect_image_caches(image_cache_path)


def test_an_unwritable_cache_folder_is_one_warning_and_the_images_still_load(tiny_data, tmp_path, monkeypatch):
    from ultralytics.utils import LOGGER

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("GRADKIT_CACHE_DIR", str(blocked))
    data = copy_dataset(tiny_data, tmp_path / "ds")
    _plant_sidecars(data.parent / "images" / "train")
    before = file_digests(data.parent)
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        dataset = _dataset(data, False)
    finally:
        LOGGER.removeHandler(handler)
    assert len([r for r in records if "cannot be made" in r]) == 1, records
    assert np.array_equal(dataset.load_image(1)[0], cv2.imread(dataset.im_files[1]))
    assert file_digests(data.parent) == before
