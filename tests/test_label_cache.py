"""No code from a dataset's label cache: Ultralytics unpickles ``labels/<split>.cache`` with
``allow_pickle=True``; gradkit's loader reads the caches Ultralytics writes and refuses anything else.

Oracles: numpy's own ``np.load`` on a cache written by Ultralytics' own ``save_dataset_cache_file``, and a
planted cache whose unpickling creates a marker file, shown live through ``np.load`` first."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gradkit.integrations.ultralytics.datasets import load_label_cache

GRADKIT = str(Path(sys.executable).with_name("gradkit"))


class _Payload:
    """Unpickling it calls ``open(marker, "w")``: the file appears only if the pickle's code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _plant(path: Path, marker: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.array({"labels": [], "hash": "", "version": "1.0.3", "x": _Payload(marker)}, dtype=object))


def test_a_cache_ultralytics_wrote_reads_as_numpy_reads_it(tmp_path):
    from ultralytics.data.utils import save_dataset_cache_file

    labels = [{"im_file": "a.png", "shape": (64, 80), "cls": np.array([[0.0], [2.0]], np.float32),
               "bboxes": np.random.default_rng(0).random((2, 4)).astype(np.float32), "segments": [],
               "keypoints": None, "normalized": True, "bbox_format": "xywh"}]
    save_dataset_cache_file("", tmp_path / "train.cache", {"labels": labels, "hash": "h", "results": (1, 0, 0, 0, 1),
                                                          "msgs": []}, "1.0.3")
    ours = load_label_cache(tmp_path / "train.cache")
    numpy_s = np.load(tmp_path / "train.cache", allow_pickle=True).item()
    assert ours.keys() == numpy_s.keys() and ours["hash"] == "h" and ours["results"] == (1, 0, 0, 0, 1)
    for a, b in zip(ours["labels"], numpy_s["labels"], strict=True):
        assert a.keys() == b.keys() and a["shape"] == b["shape"]
        assert np.array_equal(a["bboxes"], b["bboxes"]) and a["bboxes"].dtype == np.float32
        assert np.array_equal(a["cls"], b["cls"])


def test_a_planted_cache_runs_code_through_numpy_and_not_through_gradkit(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path / "train.cache", marker)
    np.load(tmp_path / "train.cache", allow_pickle=True)  # the oracle: the planted pickle is live
    assert marker.exists()
    marker.unlink()
    with pytest.raises(pickle.UnpicklingError, match=r"io\.open"):
        load_label_cache(tmp_path / "train.cache")
    assert not marker.exists()


def test_a_plain_array_is_not_a_label_cache(tmp_path):
    np.save(tmp_path / "train.npy", np.zeros(3))
    with pytest.raises(pickle.UnpicklingError, match="float64"):
        load_label_cache(tmp_path / "train.npy")


def test_ultralytics_datasets_load_caches_through_gradkit():
    import ultralytics.data.dataset as dataset_module
    import ultralytics.data.utils as data_utils

    import gradkit.integrations.ultralytics  # noqa: F401  (installs the guard on import)

    assert dataset_module.load_dataset_cache_file is load_label_cache
    assert data_utils.load_dataset_cache_file is load_label_cache


@pytest.mark.e2e
def test_training_on_a_dataset_with_a_planted_cache_runs_no_code(tiny_data, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_data.parent, root)
    (root / "data.yaml").write_text((root / "data.yaml").read_text().replace(str(tiny_data.parent), str(root)))
    marker = tmp_path / "marker"
    _plant(root / "labels" / "train.cache", marker)
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={root / 'data.yaml'}", "epochs=1",
                           "imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=False", f"project={tmp_path}",
                           "name=r"], cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert not marker.exists()
    assert f"label cache {root / 'labels' / 'train.cache'} not read" in out, out[-3000:]


def test_an_upgrade_that_loads_caches_otherwise_stops_by_name(monkeypatch):
    import ultralytics.data.dataset as dataset_module

    from gradkit.integrations.ultralytics.seams import SeamError, replace_label_cache_loader

    monkeypatch.delattr(dataset_module, "load_dataset_cache_file")
    with pytest.raises(SeamError, match=r"ultralytics\.data\.dataset no longer imports load_dataset_cache_file"):
        replace_label_cache_loader(load_label_cache)
