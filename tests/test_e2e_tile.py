"""Train on a tiled copy: the real trainer reads every tile and every box gradkit tile wrote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import train_tiny
from gradkit.data.tile import tile_dataset
from gradkit.synth import SynthSpec, generate_dataset

pytestmark = pytest.mark.e2e


def test_ultralytics_trains_on_the_tiles_with_the_boxes_tile_wrote(tmp_path):
    data = generate_dataset(tmp_path / "ds", SynthSpec(images=12, imgsz=160, seed=5), progress=False)
    tiled, summary = tile_dataset(data, size=64, out=tmp_path / "tiles")
    model, _ = train_tiny(tiled, tmp_path, epochs=1, imgsz=64)
    dataset = model.trainer.train_loader.dataset
    read = {Path(lab["im_file"]).stem: lab for lab in dataset.labels}  # what Ultralytics cached and trains on
    written = {p.stem: p for p in (tiled.parent / "labels" / "train").glob("*.txt")}
    assert set(read) == set(written) and len(read) == summary.counts["train"]["tiles"]
    for stem, path in written.items():
        rows = np.array([[float(v) for v in ln.split()] for ln in path.read_text().splitlines()]).reshape(-1, 5)
        assert np.array_equal(read[stem]["cls"].ravel(), rows[:, 0]), stem
        assert np.allclose(read[stem]["bboxes"], rows[:, 1:], atol=1e-6), stem
    assert sum(len(lab["cls"]) for lab in read.values()) == summary.counts["train"]["copies"] > 0
