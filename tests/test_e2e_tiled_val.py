"""Validation through tiles (``report.tile_size``): a model trained on ``gradkit tile``'s copy, scored on whole
images by Ultralytics' own validator over the merged detections of their tiles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ultralytics.utils.patches import imread

from conftest import train_tiny
from gradkit.cli import main
from gradkit.data.tile import tile_dataset
from gradkit.integrations.ultralytics import validate_for_report
from gradkit.integrations.ultralytics.sliced import TiledValidation, predict_tiles
from gradkit.synth import SynthSpec, generate_dataset
from gradkit.synth_surface import SurfaceSpec, generate_surface_dataset

pytestmark = pytest.mark.e2e

GRADKIT = str(Path(sys.executable).with_name("gradkit"))


def _gradkit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The console script in its own process: ``gradkit val`` / ``train`` register Ultralytics' process-global
    default callbacks, which would follow every later model of this test process."""
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    return subprocess.run([GRADKIT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


#: Below Ultralytics' 0.001: a model trained for seconds scores its detections lower than that.
LOW_CONF = 1e-4


@pytest.fixture(scope="module")
def tiled_run(tmp_path_factory):
    """(whole-image dataset YAML, tile size, overlap, weights of a model trained on its 64 px tiles)."""
    root = tmp_path_factory.mktemp("tiled")
    data = generate_dataset(root / "ds", SynthSpec(images=12, imgsz=160, seed=5), progress=False)
    tiled, summary = tile_dataset(data, size=64, out=root / "tiles")
    _, run = train_tiny(tiled, root, epochs=2, imgsz=64, cfg={"report": {"enabled": False}})
    return data, 64, summary.overlap, run / "weights" / "last.pt"


def _box_rows(ev, digits: int = 2) -> list[tuple]:
    p = ev.preds
    wh = np.array([ev.sizes[int(i)] for i in p.image], np.float64).reshape(-1, 2)
    xyxy = np.stack([p.x0, p.y0, p.x1, p.y1], 1) * np.tile(wh, 2)
    return sorted((ev.files[int(i)], int(c), round(float(s), 4), *np.round(b, digits))
                  for i, c, s, b in zip(p.image, p.cls, p.score, xyxy, strict=True))


def _rows(det) -> list[tuple]:
    return sorted((int(c), round(float(s), 4), *np.round(b, 2)) for c, s, b in
                  zip(det.classes, det.scores, det.boxes, strict=True))


@pytest.mark.parametrize("kind", ["square", "wide", "tall"])
def test_one_tile_per_image_scores_what_plain_validation_scores(tiled_run, tmp_path, kind):
    """Images no larger than the tile are one tile each: the tiled path must reproduce Ultralytics' own numbers,
    square or not (a non-square image is padded to a non-square batch shape)."""
    *_, weights = tiled_run
    size = 64 if kind == "square" else 128
    if kind == "square":
        small = generate_dataset(tmp_path / "small", SynthSpec(images=12, imgsz=size, seed=8), progress=False)
    else:
        w, h = (size, 80) if kind == "wide" else (80, size)
        small = generate_surface_dataset(tmp_path / "small", SurfaceSpec(images=12, width=w, height=h, seed=8))
    args = dict(imgsz=size, batch=4, conf=LOW_CONF, device="cpu", verbose=False)
    plain = validate_for_report(weights, str(small), "val", tmp_path / "plain", **args)
    tiled = validate_for_report(weights, str(small), "val", tmp_path / "tiled", tiles=TiledValidation(size), **args)
    assert len(plain.preds) > 10
    assert _box_rows(tiled) == _box_rows(plain)
    assert tiled.headline == pytest.approx(plain.headline, abs=1e-6)
    # the report resamples one entry per image, each the merged detections' (collect_validation checked that
    # they score the validator's own mAP)
    assert len(tiled.image_stats) == len(tiled.images) == len(plain.image_stats)
    assert [len(s["conf"]) for s in tiled.image_stats] == [len(s["conf"]) for s in plain.image_stats]


@pytest.mark.parametrize("shape", [(160, 96), (96, 160)])
def test_what_is_scored_does_not_depend_on_the_validators_own_imgsz(tiled_run, tmp_path, shape):
    """The merged detections go into each batch's letterbox and come back out through the report's recorder:
    at imgsz 64 (shrunk, padded on the short side) and 160 (1x) the scored boxes in image pixels agree."""
    _, size, overlap, weights = tiled_run
    data = generate_surface_dataset(tmp_path / "ds", SurfaceSpec(images=12, width=shape[0], height=shape[1], seed=9))
    rows: dict[int, list] = {}
    for imgsz in (64, 160):
        tiles = TiledValidation(size, overlap)
        ev = validate_for_report(weights, str(data), "val", tmp_path / f"v{imgsz}", tiles=tiles, imgsz=imgsz,
                                 batch=4, conf=LOW_CONF, device="cpu", verbose=False)
        assert set(ev.sizes.values()) == {shape}
        rows[imgsz] = sorted(_box_rows(ev, digits=6))  # by file, class, score, then box
    assert len(rows[160]) > 10 and len(rows[64]) == len(rows[160])
    unmatched = list(rows[160])
    for a in rows[64]:  # each detection has its twin, to float32 rounding
        twin = next((b for b in unmatched if a[:2] == b[:2] and abs(a[2] - b[2]) <= 1e-4
                     and np.allclose(a[3:], b[3:], atol=0.02)), None)
        assert twin is not None, a
        unmatched.remove(twin)


def test_the_default_overlap_is_the_longest_box_of_the_split_at_most_half_a_tile(tiled_run, tmp_path):
    from test_tile import _drawn, _yaml

    *_, weights = tiled_run
    root = tmp_path / "hand"
    _drawn(root, "train", "a", 200, 150, [("rect", 1, 5, 5, 20, 20)], seed=0)
    _drawn(root, "val", "b", 200, 150, [("rect", 1, 10, 10, 47, 30), ("line", 0, 100, 20, 120, 140)], seed=1)
    _drawn(root, "val", "c", 150, 200, [("rect", 1, 60, 60, 90, 82)], seed=2)
    data = _yaml(root)
    for size, expected in ((256, 121), (128, 64)):  # the line spans 121 px (rows 20..140); half of 128 is 64
        tiles = TiledValidation(size)
        validate_for_report(weights, str(data), "val", tmp_path / f"v{size}", tiles=tiles, imgsz=64, batch=4,
                            device="cpu", verbose=False)
        assert tiles.used_overlap == expected


def test_predict_tiles_on_an_image_no_larger_than_a_tile_is_model_predict(tiled_run):
    from ultralytics import YOLO

    data, size, overlap, weights = tiled_run
    model = YOLO(str(weights))
    image = imread(str(next((data.parent / "images" / "val").glob("*.png"))))[:size, :size - 10]
    det = predict_tiles(model, image, size, overlap, conf=LOW_CONF)
    r = model.predict(image, imgsz=size, conf=LOW_CONF, verbose=False)[0].boxes
    assert len(det) == len(r) > 5
    order = np.argsort(-r.conf.numpy(), kind="stable")
    assert np.allclose(det.boxes, r.xyxy.numpy()[order]) and np.array_equal(det.classes, r.cls.numpy()[order])
    whole = next((data.parent / "images" / "val").glob("*.png"))  # a file: read as Ultralytics reads it
    from_file = predict_tiles(model, whole, size, overlap, conf=LOW_CONF)
    assert _rows(from_file) == _rows(predict_tiles(model, imread(str(whole)), size, overlap, conf=LOW_CONF))
    with pytest.raises(FileNotFoundError, match="not an image"):
        predict_tiles(model, data, size, overlap)  # the YAML


def test_gradkit_val_writes_the_report_of_the_tiled_detections(tiled_run, tmp_path):
    data, size, overlap, weights = tiled_run
    run = _gradkit("val", f"model={weights}", f"data={data}", f"imgsz={size}", "batch=4", "device=cpu",
                   f"gradkit.report.tile_size={size}", f"project={tmp_path}", "name=v", "exist_ok=True", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["tiles"] == {"size": size, "overlap": overlap}
    assert f"scored through tiles of {size} px" in (tmp_path / "v" / "report.md").read_text()
    tiles = TiledValidation(size)
    ev = validate_for_report(weights, str(data), "val", tmp_path / "again", tiles=tiles, imgsz=size, batch=4,
                             device="cpu", conf=0.001, verbose=False)
    assert report["headline"]["mAP50-95"] == pytest.approx(ev.headline["mAP50-95"])


@pytest.mark.parametrize(("keys", "says"), [
    (["gradkit.report.tile_size=60"], "report.tile_size=60: takes a whole number of pixels, a multiple of 32"),
    (["gradkit.report.tile_overlap=8"], "report.tile_overlap=8 needs report.tile_size"),
    (["gradkit.report.tile_size=64", "gradkit.report.tile_overlap=40"],
     "report.tile_overlap=40: takes 0 to 32 px (0.5 of report.tile_size=64), or unset for the longest box side"),
])
def test_tile_settings_gradkit_tile_would_refuse_stop_val_and_train_in_one_line(tiny_data, keys, says, capsys):
    for mode in (["val", "model=absent.pt"], ["train", "model=yolo26n.yaml"]):
        assert main([*mode, f"data={tiny_data}", *keys]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and "\n" not in err and "Traceback" not in err


def test_the_end_of_training_report_of_a_run_on_tiles_scores_the_whole_images(tmp_path):
    """Trained on gradkit tile's copy with report.tile_size: the report scores the source's whole images through
    the copy's tiles, and says so."""
    data = generate_dataset(tmp_path / "ds", SynthSpec(images=12, imgsz=160, seed=5), progress=False)
    tiled, summary = tile_dataset(data, size=64, out=tmp_path / "tiles")
    _, run = train_tiny(tiled, tmp_path, cfg={"report": {"tile_size": 64}}, epochs=1, imgsz=64)
    report = json.loads((run / "report.json").read_text())
    assert report["data"] == str(data.resolve()) and report["images"] == 2  # the source's two val images
    assert report["tiles"] == {"size": 64, "overlap": summary.overlap}
    ev = validate_for_report(run / "weights" / "best.pt", str(data), "val", tmp_path / "again",
                             tiles=TiledValidation(64, summary.overlap), imgsz=64, batch=4, device="cpu", conf=0.001,
                             verbose=False)
    assert report["headline"]["mAP50-95"] == pytest.approx(ev.headline["mAP50-95"])


def test_a_tile_size_other_than_the_copys_stops_training_in_one_line(tmp_path):
    data = generate_dataset(tmp_path / "ds", SynthSpec(images=6, imgsz=96, seed=5), progress=False)
    tiled, _ = tile_dataset(data, size=64, out=tmp_path / "tiles")
    run = _gradkit("train", "model=yolo26n.yaml", f"data={tiled}", "epochs=1", "imgsz=64", "device=cpu",
                   "gradkit.report.tile_size=32", f"project={tmp_path}", "name=r", cwd=tmp_path)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and err[-1] == (f"gradkit: report.tile_size=32, but {tiled} holds tiles of 64 px cut "
                                               f"from {data.resolve()}: set report.tile_size=64"), run.stderr[-2000:]
    assert "Traceback" not in run.stderr and not list((tmp_path / "r").glob("weights/*.pt"))


def test_val_of_the_tiled_copy_through_tiles_says_which_data_scores_whole_parts(tiled_run, tmp_path, capsys):
    data, size, *_ = tiled_run
    tiled = data.parent.parent / "tiles" / "data.yaml"
    absent = tmp_path / "absent.pt"  # a missing local file stops val before it registers any callback
    code = main(["val", f"model={absent}", f"data={tiled}", f"gradkit.report.tile_size={size}"])  # refused first
    err = capsys.readouterr().err
    assert code == 2 and f"to score whole parts through tiles give data={data.resolve()}" in err
    assert len(err.strip().splitlines()) == 1 and "model file" not in err


def test_tiled_scoring_refuses_what_it_cannot_score():
    from types import SimpleNamespace

    from gradkit.config import ConfigError

    for args, says in ((SimpleNamespace(task="segment", model="w.pt"), "for detection models, not task=segment"),
                       (SimpleNamespace(task="detect", model="w.onnx"), "as a .pt file; got model=w.onnx")):
        with pytest.raises(ConfigError, match=says):
            TiledValidation(64)(SimpleNamespace(training=False, args=args))
