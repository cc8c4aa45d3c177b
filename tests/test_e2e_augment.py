"""Augmentation inside the real trainer: installed, kept after close_mosaic, previewed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import standout_set, train_tiny

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))


def test_preset_and_copy_paste_survive_close_mosaic(tiny_data, tmp_path):
    stages_per_epoch = []
    samples = []

    def record(trainer):
        ds = trainer.train_loader.dataset
        stages_per_epoch.append([type(t).__name__ for t in ds.transforms.transforms])
        samples.append(ds[0]["img"].shape)

    import logging

    from ultralytics.utils import LOGGER

    log = []
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        model, run = train_tiny(tiny_data, tmp_path, epochs=2, close_mosaic=1,
                                callbacks=[("on_train_epoch_end", record)],
                                overrides={"augment.preset": "defect", "augment.copy_paste.p": 1.0,
                                           "augment.copy_paste.rare_first": True,
                                           "augment.ultralytics": {"hsv_s": 0.0}})
    finally:
        LOGGER.removeHandler(handler)
    named = [m for m in log if "gradkit: training augmentation:" in m]
    assert len(named) == 1 and "preset defect" in named[0] and "copy-paste p=1" in named[0], named
    # Ultralytics still logs the stage it built before gradkit replaced it; gradkit's line says those do not run
    assert any(m.startswith("albumentations:") or "albumentations: " in m for m in log), log
    assert "'albumentations:' log line lists do not run" in named[0]
    screened = [m for m in log if "gradkit: copy-paste keeps" in m]
    assert len(screened) == 1 and "min_defect_share=0.5" in screened[0], screened  # once, not per rebuild
    assert len(stages_per_epoch) == 2
    for stages in stages_per_epoch:  # epoch 2 runs after close_mosaic rebuilt the transforms
        assert "AlbumentationsStage" in stages and "CopyPasteStage" in stages and "Albumentations" not in stages
        assert stages.index("CopyPasteStage") < stages.index("AlbumentationsStage") < stages.index("RandomHSV")
    hsv = next(t for t in model.trainer.train_loader.dataset.transforms.transforms if type(t).__name__ == "RandomHSV")
    assert hsv.sgain == 0.0  # the preset's Ultralytics hyp reached the dataset
    assert model.trainer.args.hsv_s == 0.7  # ... without touching trainer.args
    kept = [m for m in log if "args.yaml keeps" in m]  # which the log says, once
    assert len(kept) == 1 and "hsv_s=0.7" in kept[0], kept
    assert (run / "weights" / "last.pt").exists()


def test_the_defect_preset_leaves_its_transforms_out_on_defects_as_faint_as_their_texture(tmp_path):
    """``gradkit=defect`` (augment.preset: auto) measures the training split the trainer reads: on lines as
    faint as the grain it trains without the transform list, as the plan would, and says so once."""
    import json
    import logging

    import numpy as np
    from ultralytics.utils import LOGGER

    data = standout_set(tmp_path / "faint", np.random.default_rng(0), "textured")
    log, stages = [], []
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)

    def record(trainer):
        stages.append([type(t).__name__ for t in trainer.train_loader.dataset.transforms.transforms])

    try:
        _, run = train_tiny(data, tmp_path, cfg="defect", epochs=1, imgsz=96, report=True,
                            callbacks=[("on_train_epoch_end", record)])
    finally:
        LOGGER.removeHandler(handler)
    chosen = [m for m in log if "gradkit: augment.preset auto ->" in m]
    assert len(chosen) == 1 and "auto -> none" in chosen[0] and "stand out" in chosen[0], chosen
    assert "AlbumentationsStage" not in stages[0] and "CopyPasteStage" in stages[0]
    used = json.loads((run / "gradkit_summary.json").read_text())["augment_preset"]
    assert used["configured"] == "auto" and used["used"] == "none" and "stand out" in used["reason"]
    report = json.loads((run / "report.json").read_text())  # the report says what ran, not only "auto"
    assert report["training"]["augment_preset"] == used
    assert "<td>augmentation preset</td><td>auto -&gt; none (only" in (run / "report.html").read_text().replace(
        ' class="l"', "")
    # the preview resolves it as training does (building an unresolved auto would raise)
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import preview_augmentation

    out = preview_augmentation(str(data), load_config("defect"), n=4, out=tmp_path / "preview.jpg", imgsz=96)
    assert cv2.imread(str(out)) is not None


def test_preview_command_draws_the_training_pipeline(tiny_data, tmp_path):
    out = tmp_path / "preview.jpg"
    proc = subprocess.run([GRADKIT, "augment", f"data={tiny_data}", "gradkit=defect", "gradkit.augment.preset=defect",
                           "gradkit.augment.copy_paste.p=1.0", "n=4", "imgsz=64", f"out={out}"],
                          capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    img = cv2.imread(str(out))
    from gradkit.integrations.ultralytics.augment import PREVIEW_GAP_PX, PREVIEW_TILE_PX

    # 2 x 2 tiles upscaled to PREVIEW_TILE_PX with gaps, a title above and a legend below
    assert img is not None and img.shape[1] == 2 * PREVIEW_TILE_PX + 3 * PREVIEW_GAP_PX
    assert img.shape[0] > 2 * PREVIEW_TILE_PX + 3 * PREVIEW_GAP_PX + 40


def test_an_augmentation_hyp_typed_on_the_command_line_wins_over_the_gradkit_config_even_at_its_default(
        tiny_data, tmp_path, gradkit_here, monkeypatch):
    """``degrees=0.0`` typed to turn off the rotation a gradkit config sets was overridden by the config: the
    dataset's hyp was compared with Ultralytics' default to tell a typed value from an untyped one, and 0.0 is that
    default. The CLI knows what was given (in any form yolo parses, also in a ``cfg=`` file): those values win and
    the run's gradkit.yaml records them. Oracle: the warp and colour stages the real dataset built, read by a
    callback, against the given and the configured values."""
    import yaml
    from ultralytics.utils.callbacks import base

    seen = {}

    def stages_in(compose):  # the warp sits inside the pre-transform Compose, with mosaic
        for t in getattr(compose, "transforms", []):
            yield t
            yield from stages_in(t)

    def record(trainer):
        stages = {type(t).__name__: t for t in stages_in(trainer.train_loader.dataset.transforms)}
        seen.update(degrees=stages["RandomPerspective"].degrees, sgain=stages["RandomHSV"].sgain,
                    vgain=stages["RandomHSV"].vgain, fliplr=stages["RandomFlip"].p)

    monkeypatch.setitem(base.default_callbacks, "on_train_epoch_end",
                        [*base.default_callbacks["on_train_epoch_end"], record])
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"augment": {"ultralytics": {"degrees": 10.0, "hsv_s": 0.2, "hsv_v": 0.1,
                                                                   "fliplr": 0.0}}}), encoding="utf-8")
    yolo_file = tmp_path / "args.yaml"
    yolo_file.write_text(yaml.safe_dump({"fliplr": 0.5}), encoding="utf-8")  # Ultralytics' default, in a cfg= file
    r = gradkit_here("train", "model=yolo26n.yaml", "epochs=1", "imgsz=64", "batch=4", "nbs=4", "workers=0",
                     "device=cpu", "plots=False", "val=False", f"data={tiny_data}", f"project={tmp_path}", "name=r",
                     f"cfg={yolo_file}", "--degrees=0.0", "hsv_s", "=", "0.7", f"gradkit={config}",
                     "gradkit.report.enabled=false", "gradkit.monitor.plot=false", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert seen == {"degrees": 0.0, "sgain": 0.7, "vgain": 0.1, "fliplr": 0.5}  # typed x3 win; hsv_v from the config
    kept = yaml.safe_load((tmp_path / "r" / "gradkit.yaml").read_text(encoding="utf-8"))["augment"]["ultralytics"]
    assert kept == {"degrees": 0.0, "hsv_s": 0.7, "hsv_v": 0.1, "fliplr": 0.5}  # the run's record says what trained
    import json

    ran = json.loads((tmp_path / "r" / "gradkit_summary.json").read_text(encoding="utf-8"))["as_run"]
    assert {k: ran[k] for k in kept} == {"degrees": seen["degrees"], "hsv_s": seen["sgain"], "hsv_v": seen["vgain"],
                                         "fliplr": seen["fliplr"]}  # as the dataset's stages hold them
    said = [line for line in (r.stdout + r.stderr).splitlines() if "given to yolo win" in line]
    assert len(said) == 1 and all(k in said[0] for k in ("degrees=0,", "hsv_s=0.7 ", "fliplr=0.5,")), said


def test_the_preview_takes_yolo_s_augmentation_hyps_and_they_win_as_in_training(tiny_data, tmp_path, gradkit_here):
    """``gradkit augment ... degrees=0 mosaic=0`` shows what ``gradkit train ... degrees=0 mosaic=0`` trains on.
    Oracle: the warp's and mosaic's stages of the dataset the preview builds, against the typed values and, without
    them, the defect preset's rotation and Ultralytics' mosaic."""
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.augment import preview_dataset

    def stages(dataset):
        def walk(compose):
            for t in getattr(compose, "transforms", []):
                yield t
                yield from walk(t)
        return {type(t).__name__: t for t in walk(dataset.transforms)}

    cfg = load_config("defect", {"augment.ultralytics.degrees": 4.0})
    plain = stages(preview_dataset(str(tiny_data), cfg, 64, 0, {})[0])
    typed = stages(preview_dataset(str(tiny_data), cfg, 64, 0, {"degrees": 0.0, "mosaic": 0.0})[0])
    assert (plain["RandomPerspective"].degrees, plain["Mosaic"].p) == (4.0, 1.0)
    assert (typed["RandomPerspective"].degrees, typed["Mosaic"].p) == (0.0, 0.0)

    out = tmp_path / "p.jpg"
    ok = gradkit_here("augment", f"data={tiny_data}", "n=2", "imgsz", "=", "64", f"out={out}", "degrees", "=", "0",
                      "--mosaic=0", cwd=tmp_path)  # spaces and dashes as yolo takes them, for its own keys too
    assert ok.returncode == 0, ok.stderr[-2000:]
    for typo, said in (("lr0=0.1", "unknown argument 'lr0=0.1';"),
                       ("degres=0", "unknown argument 'degres=0' (did you mean 'degrees='?)"),
                       ("degrees=", "degrees=: no value yolo can read")):
        bad = gradkit_here("augment", f"data={tiny_data}", "n=2", "--imgsz=64", f"out={out}", typo, cwd=tmp_path)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert said in bad.stderr, bad.stderr[-500:]
    refused = gradkit_here("augment", f"data={tiny_data}", "gradkit=defect", "n=2", "imgsz=64", f"out={out}",
                           "degrees=-5", cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr and "degrees=-5" in refused.stderr
