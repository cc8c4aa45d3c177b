"""No code from a dataset's label cache: Ultralytics unpickles ``labels/<split>.cache`` with
``allow_pickle=True``; gradkit's loader reads no cache, and Ultralytics rescans the labels.

Oracles: planted caches, shown live through ``np.load`` first: one whose unpickling creates a marker
file, and one whose dtype state corrupts memory with numpy's own reconstruction functions alone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import copy_dataset, file_digests
from gradkit.integrations.ultralytics.datasets import LabelCacheRefused, load_label_cache, skip_label_cache

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


def test_a_planted_cache_runs_code_through_numpy_and_not_through_gradkit(tmp_path):
    marker = tmp_path / "marker"
    _plant(tmp_path / "train.cache", marker)
    np.load(tmp_path / "train.cache", allow_pickle=True)  # the oracle: the planted pickle is live
    assert marker.exists()
    marker.unlink()
    with pytest.raises(LabelCacheRefused):
        load_label_cache(tmp_path / "train.cache")
    assert not marker.exists()


def test_a_dtype_state_that_corrupts_memory_is_never_unpickled(tmp_path):
    """A pickle naming only numpy's array and dtype reconstruction, whose dtype state marks a field as
    object without the flag that pickles objects as a list: numpy copies raw bytes in as object pointers
    and the process crashes when the array is freed (a reviewer's case; why no restricted unpickler is
    used). Run in a subprocess: through ``np.load`` it must crash, through gradkit's loader not."""
    script = """
import pickle, sys
import numpy as np
dt = np.dtype([("o", "O")])
state = (3, "|", None, ("o",), {"o": (np.dtype("O"), 0)}, 8, 1, 1)
class Evil:
    def __reduce__(self):
        return (np.ndarray, ((1,), np.dtype("V8")), (1, (1,), CraftedDtype(), False, b"A" * 8))
class CraftedDtype:
    def __reduce__(self):
        return (np.dtype, ("V8", False, True), state)
path = sys.argv[1]
with open(path, "wb") as f:
    np.save(f, np.array({"x": Evil()}, dtype=object))
if sys.argv[2] == "numpy":
    np.load(path, allow_pickle=True)
else:
    from gradkit.integrations.ultralytics.datasets import LabelCacheRefused, load_label_cache
    try:
        load_label_cache(path)
    except LabelCacheRefused:
        print("refused")
"""
    crafted = tmp_path / "train.cache"
    run = [sys.executable, "-c", script, str(crafted)]
    through_numpy = subprocess.run([*run, "numpy"], capture_output=True, text=True, timeout=120)
    assert through_numpy.returncode < 0, through_numpy.stdout + through_numpy.stderr  # killed by a signal
    through_gradkit = subprocess.run([*run, "gradkit"], capture_output=True, text=True, timeout=120)
    assert through_gradkit.returncode == 0 and "refused" in through_gradkit.stdout, through_gradkit.stderr[-2000:]


def test_a_missing_cache_raises_as_numpy_does(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_label_cache(tmp_path / "none.cache")


def test_ultralytics_datasets_load_caches_through_gradkit():
    import ultralytics.data.dataset as dataset_module
    import ultralytics.data.utils as data_utils

    import gradkit.integrations.ultralytics  # noqa: F401  (installs the guard on import)

    assert dataset_module.load_dataset_cache_file is load_label_cache
    assert data_utils.load_dataset_cache_file is load_label_cache
    assert dataset_module.save_dataset_cache_file is skip_label_cache
    assert data_utils.save_dataset_cache_file is skip_label_cache






def _gradkit_train(data: Path, tmp_path: Path) -> str:
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data}", "epochs=1",
                           "imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=False", f"project={tmp_path}",
                           "name=r"], cwd=tmp_path, env={**os.environ, "YOLO_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    return out


@pytest.mark.e2e
def test_training_on_a_dataset_with_a_planted_cache_runs_no_code_and_leaves_the_dataset_as_it_was(tiny_data,
                                                                                                  tmp_path):
    data = copy_dataset(tiny_data, tmp_path / "ds")
    marker = tmp_path / "marker"
    _plant(data.parent / "labels" / "train.cache", marker)
    before = file_digests(data.parent)
    out = _gradkit_train(data, tmp_path)
    assert not marker.exists()
    assert f"label cache {data.parent / 'labels' / 'train.cache'} not read" in out, out[-3000:]
    assert file_digests(data.parent) == before  # the planted file neither replaced nor removed, nothing added
    assert "New cache created" not in out, out[-3000:]


@pytest.mark.e2e
def test_training_writes_no_label_cache_into_the_dataset(tiny_data, tmp_path):
    """Stock Ultralytics writes ``labels/train.cache`` and ``labels/val.cache`` beside the user's labels."""
    data = copy_dataset(tiny_data, tmp_path / "ds")
    before = file_digests(data.parent)
    out = _gradkit_train(data, tmp_path)
    assert file_digests(data.parent) == before, sorted(set(file_digests(data.parent)) - set(before))
    assert f"label cache not written to {data.parent / 'labels' / 'train.cache'}" in out, out[-3000:]


def test_an_upgrade_that_loads_caches_otherwise_stops_by_name(monkeypatch):
    import ultralytics.data.dataset as dataset_module

    from gradkit.integrations.ultralytics.seams import SeamError, replace_label_cache_io

    for name in ("load_dataset_cache_file", "save_dataset_cache_file"):
        with monkeypatch.context() as patch:
            patch.delattr(dataset_module, name)
            with pytest.raises(SeamError, match=rf"ultralytics\.data\.dataset no longer imports {name}"):
                replace_label_cache_io(load_label_cache, skip_label_cache)
