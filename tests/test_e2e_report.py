"""Reports from real Ultralytics validation: the numbers are the validator's own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import train_tiny

pytestmark = pytest.mark.e2e
GRADKIT = str(Path(sys.executable).with_name("gradkit"))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    model, run = train_tiny(tiny_data, tmp, epochs=3, report=True)
    return model, run


def test_training_report_numbers_equal_the_validator(trained, tiny_data):
    from ultralytics import YOLO

    _, run = trained
    report = json.loads((run / "report.json").read_text())
    metrics = YOLO(str(run / "weights" / "best.pt")).val(data=str(tiny_data), split="val", imgsz=64, batch=4,
                                                         conf=0.001, plots=False, verbose=False, device="cpu")
    box = metrics.box
    h = report["headline"]
    assert h["mAP50"] == pytest.approx(box.map50, abs=1e-6)
    assert h["mAP50-95"] == pytest.approx(box.map, abs=1e-6)
    assert h["precision"] == pytest.approx(box.mp, abs=1e-6)
    assert h["recall"] == pytest.approx(box.mr, abs=1e-6)
    present = {int(c) for c in box.ap_class_index}
    for row in report["per_class"]:
        c = row["class"]
        if c in present:
            k = list(box.ap_class_index).index(c)
            assert row["AP50-95"] == pytest.approx(box.class_result(k)[3], abs=1e-6)
        else:
            assert row["AP50-95"] is None  # n/a, not the mean Ultralytics' maps fills in
        assert row["instances"] == int(metrics.nt_per_class[c])
    assert report["training"]["alert_counts"] == {"exploding": 0, "vanishing": 0, "dead": 0, "nonfinite": 0,
                                                 "diverging": 0, "rollback": 0}
    assert report["images"] == len(list((tiny_data.parent / "images" / "val").glob("*.png")))
    page = (run / "report.html").read_text()
    assert "data:image/png;base64" in page and "https://" not in page and "http://" not in page
    assert set(report) >= {"headline", "per_class", "coco", "size_buckets", "errors", "training", "versions"}


def test_the_report_names_the_optimizer_that_optimizer_auto_chose(trained, tiny_data):
    import yaml

    _, run = trained
    assert yaml.safe_load((run / "args.yaml").read_text())["optimizer"] == "auto"  # what args.yaml says
    nc = len(yaml.safe_load(tiny_data.read_text())["names"])
    # Ultralytics 8.4's rule for a short run (trainer.build_optimizer): AdamW at lr 0.002 * 5 / (4 + nc)
    expected = {"name": "AdamW", "lrs": [round(0.002 * 5 / (4 + nc), 6)]}
    assert json.loads((run / "gradkit_summary.json").read_text())["optimizer"] == expected
    assert json.loads((run / "report.json").read_text())["training"]["optimizer_used"] == expected
    page = (run / "report.html").read_text()
    assert "<td>optimizer</td><td>AdamW (optimizer=auto)</td>" in page.replace(' class="l"', "")
    assert f"<td>lr0</td><td>{expected['lrs'][0]:g} (optimizer=auto chose it" in page.replace(' class="l"', "")


def test_gradkit_val_writes_report_and_report_command_rebuilds_and_compares(trained, tiny_data, tmp_path):
    _, run = trained
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    proc = subprocess.run([GRADKIT, "val", f"model={run / 'weights' / 'best.pt'}", f"data={tiny_data}", "split=test",
                           "imgsz=64", "batch=4", "device=cpu", f"project={tmp_path}", "name=v"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    val_report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert val_report["split"] == "test" and (tmp_path / "v" / "report.html").exists()

    (run / "report.html").unlink()
    proc = subprocess.run([GRADKIT, "report", str(run)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run / "report.html").exists()

    proc = subprocess.run([GRADKIT, "report", str(run), str(tmp_path / "v"), f"out={tmp_path / 'cmp'}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cmp_ = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert cmp_["kind"] == "comparison" and [r["label"] for r in cmp_["runs"]] == [run.name, "v"]

    proc = subprocess.run([GRADKIT, "report", str(tmp_path / "nothing")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2 and "report.json not found" in proc.stderr


def test_gradkit_val_takes_the_report_settings_and_refuses_other_gradkit_keys_naming_the_mode(trained, tiny_data,
                                                                                               tmp_path):
    _, run = trained
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    base = [GRADKIT, "val", f"model={run / 'weights' / 'best.pt'}", f"data={tiny_data}", "imgsz=64", "batch=4",
            "device=cpu", f"project={tmp_path}"]
    proc = subprocess.run([*base, "name=v", "gradkit.report.conf=0.4", "gradkit.report.gallery=1"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["inspection"]["operating_point"] == "report.conf = 0.4"
    assert set(report["inspection"]["thresholds"].values()) == {0.4}
    assert len(report["errors"]["worst_images"]) <= 1
    for key in ("gradkit.clip.mode=agc", "gradkit.report.split=test"):  # val's split is yolo's split=
        proc = subprocess.run([*base, "name=w", key], capture_output=True, text=True, env=env, timeout=300)
        refused = f"{key.partition('=')[0]}: not a setting 'gradkit val' takes"
        assert proc.returncode == 2 and refused in proc.stderr, proc.stderr
        assert "gradkit.report.conf, gradkit.report.gallery" in proc.stderr, proc.stderr


def test_recorded_predictions_equal_ultralytics_json(trained, tiny_data, tmp_path):
    """Oracle: the same validation's predictions.json (save_json=True), which Ultralytics writes itself."""
    import numpy as np
    from ultralytics import YOLO

    from gradkit.integrations.ultralytics import collect_validation, record_predictions

    _, run = trained
    model = YOLO(str(run / "weights" / "best.pt"))
    got = {}
    model.add_callback("on_val_start", record_predictions)
    model.add_callback("on_val_end", lambda v: got.setdefault("ev", collect_validation(v)))
    model.val(data=str(tiny_data), split="val", imgsz=64, batch=4, save_json=True, plots=False, verbose=False,
              device="cpu", project=str(tmp_path), name="v")
    ev = got["ev"]
    preds = json.loads((tmp_path / "v" / "predictions.json").read_text())
    assert len(ev.preds) == len(preds) > 0
    index = {Path(f).name: i for i, f in ev.files.items()}
    # same order: both are written image by image, prediction by prediction, in update_metrics
    want = np.array([[index[p["file_name"]], p["category_id"] - 1, p["score"], *p["bbox"]] for p in preds])
    wh = np.array([ev.sizes[i] for i in ev.preds.image.tolist()], float)
    mine = np.stack([ev.preds.image, ev.preds.cls, ev.preds.score, ev.preds.x0 * wh[:, 0], ev.preds.y0 * wh[:, 1],
                     (ev.preds.x1 - ev.preds.x0) * wh[:, 0], (ev.preds.y1 - ev.preds.y0) * wh[:, 1]], 1)
    np.testing.assert_array_equal(mine[:, :2], want[:, :2])
    np.testing.assert_allclose(mine[:, 2], want[:, 2], atol=1e-5)  # Ultralytics rounds scores to 5 decimals
    np.testing.assert_allclose(mine[:, 3:], want[:, 3:], atol=2e-3)  # ... and boxes to 3


def test_the_recorded_image_statistics_are_the_validator_s_and_the_report_resamples_them(trained, tiny_data,
                                                                                         tmp_path):
    """Oracle: the validator's own per-class AP. The statistics recorded per image, put together again, give it
    to the last digit, so each resample is scored as the validator scores the split."""
    import numpy as np

    from gradkit.integrations.ultralytics import validate_for_report
    from gradkit.integrations.ultralytics.seams import average_precision
    from gradkit.report import build_report
    from gradkit.report.intervals import MIN_IMAGES
    from gradkit.report.schema import validate_report

    _, run = trained
    ev = validate_for_report(run / "weights" / "best.pt", str(tiny_data), "val", tmp_path / "v", imgsz=64, batch=4,
                             conf=0.001, verbose=False, device="cpu")
    assert len(ev.image_stats) == len(ev.images)
    assert [len(s["conf"]) for s in ev.image_stats] == np.bincount(ev.preds.image, minlength=len(ev.images)).tolist()
    whole = [np.concatenate([s[k] for s in ev.image_stats]) for k in ("tp", "conf", "pred_cls", "target_cls")]
    classes, ap = average_precision(*whole)
    assert sorted(classes.tolist()) == sorted(ev.per_class)
    for c, row in zip(classes.tolist(), ap, strict=True):
        assert row[0] == pytest.approx(ev.per_class[c]["AP50"], abs=1e-12)
        assert row.mean() == pytest.approx(ev.per_class[c]["AP50-95"], abs=1e-12)
    report = build_report(ev, resamples=100)
    validate_report(report)
    assert {k: report["validated_with"][k] for k in ("imgsz", "batch", "conf")} == {"imgsz": 64, "batch": 4,
                                                                                    "conf": 0.001}
    spread = report["intervals"]
    # the tiny split's classes lie in 1-2 of its 5 images: a third of the draws or more lack one, and a draw's mAP50
    # is the mean over the split's classes, so it has no interval (the classes none either, below)
    lacking = sum(v is None for v in spread["draws"]["mAP50"]) / spread["resamples"]
    assert spread["resamples"] == 100 and lacking > 0.1 and spread["mAP50"] is None
    for c in report["per_class"]:  # the tiny split's 5 images: a class in fewer than MIN_IMAGES has none
        assert (c["AP50_interval"] is not None) == (c["AP50"] is not None and c["images"] >= MIN_IMAGES)
    assert build_report(ev, resamples=0)["intervals"] is None


def test_reports_in_a_real_browser(trained, tiny_data, tmp_path):
    """A training report, a val report and their comparison, opened in headless Chromium at 1400 and 390 px."""
    from browser import chromium, inspect_page, require_browser
    from gradkit.integrations.ultralytics import validate_for_report
    from gradkit.report import build_report, compare_reports, write_report
    from report_cases import hand_made_evaluation

    require_browser()
    _, run = trained
    ev = validate_for_report(run / "weights" / "best.pt", str(tiny_data), "test", tmp_path / "val", imgsz=64, batch=4,
                             device="cpu", conf=0.001, verbose=False)
    write_report(build_report(ev), tmp_path / "val")
    reports = {"training": json.loads((run / "report.json").read_text()),
               "val": json.loads((tmp_path / "val" / "report.json").read_text())}
    write_report(compare_reports(list(reports.values()), [run.name, "val"]), tmp_path / "cmp")
    # a tiny model may find nothing: a hand-made evaluation has detections of every kind in the gallery
    write_report(build_report(hand_made_evaluation(tmp_path / "data")), tmp_path / "hand")
    reports["hand-made"] = json.loads((tmp_path / "hand" / "report.json").read_text())
    pages = {"training": run / "report.html", "val": tmp_path / "val" / "report.html",
             "comparison": tmp_path / "cmp" / "report.html", "hand-made": tmp_path / "hand" / "report.html"}
    driver = chromium()
    try:
        for name, page in pages.items():
            for width in (1400, 390):
                s = inspect_page(driver, page, width, tmp_path / f"{name}-{width}.png")
                where = f"{name} at {width} px"
                assert s["console"] == [], where
                assert s["scrollWidth"] <= s["innerWidth"] == width, (where, s["wide"])
                assert s["images"] > 0 and s["undecoded"] == [], where
                assert len(s["verdict"]) > 40, where
                if name == "comparison":
                    assert "escape rate" in s["verdict"] and "escape_rate" in s["text"], where
                    assert "false_reject_rate" in s["text"] and "test" in s["text"], where
                    continue
                assert "escape rate" in s["verdict"], where
                k = reports[name]["inspection"]
                for cls, thr in k["thresholds"].items():
                    assert f"{thr:.3f}" in s["operating"], where
                    assert cls in s["operating"] or "for every class" in s["operating"], where
                for rate in ("escape_rate", "false_reject_rate"):
                    label = rate.replace("_rate", " rate").replace("_", "-")
                    shown = "n/a" if k[rate] is None else f"{100 * k[rate]:.1f}%"
                    assert f"{label}\n{shown}" in s["text"], (where, label, shown)
    finally:
        driver.quit()
    assert (tmp_path / "val-390.png").stat().st_size > 10_000


def test_gradkit_val_report_says_what_it_skipped_and_whose_class_names_it_shows(trained, tiny_data, tmp_path):
    """A split with two images Ultralytics skips (cut short) and data naming its classes otherwise than the model:
    the report counts the skipped images (known: 2) and says whose names it shows, in JSON and in its warnings."""
    import shutil

    import yaml

    _, run = trained
    root = tmp_path / "other"
    shutil.copytree(tiny_data.parent / "images" / "test", root / "images" / "val")
    shutil.copytree(tiny_data.parent / "labels" / "test", root / "labels" / "val")
    first = sorted((root / "images" / "val").iterdir())[0]
    for k in range(2):
        cut = root / "images" / "val" / f"cut{k}.png"
        cut.write_bytes(first.read_bytes()[:200])
        (root / "labels" / "val" / f"cut{k}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    model_names = yaml.safe_load(tiny_data.read_text())["names"]
    names = {int(k): f"other{k}" for k in model_names}
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val", "names": names}))
    proc = subprocess.run([GRADKIT, "val", f"model={run / 'weights' / 'best.pt'}", f"data={data}", "imgsz=64",
                           "batch=4", "device=cpu", f"project={tmp_path}", "name=v"],
                          capture_output=True, text=True, env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    listed = len(list((root / "images" / "val").iterdir()))
    assert report["images_skipped"] == 2 and report["images"] == listed - 2
    assert report["data_class_names"] == {str(k): v for k, v in names.items()}
    md = (tmp_path / "v" / "report.md").read_text()
    assert "2 of the" in md and "skipped" in md
    assert "other0" in md and "class names" in md


def test_gradkit_val_records_the_data_yaml_it_read_as_an_absolute_path(trained, tiny_data, tmp_path):
    """data= given relative to the working folder: report.json names the file itself (the comparison of two runs
    given the same YAML once relative and once absolute warned that they used different datasets)."""
    _, run = trained
    proc = subprocess.run([GRADKIT, "val", f"model={run / 'weights' / 'best.pt'}", f"data={tiny_data.name}",
                           "imgsz=64", "batch=4", "device=cpu", f"project={tmp_path}", "name=rel"],
                          cwd=tiny_data.parent, capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "rel" / "report.json").read_text())["data"] == str(tiny_data.resolve())


def test_a_comparison_of_validation_reports_diffs_how_their_models_were_trained(trained, tiny_data, tmp_path,
                                                                               gradkit_here):
    """Two ``gradkit val`` reports of models trained differently said only that their training was not recorded.
    Weights that lie in their run folder (RUN/weights/X.pt) carry its record: the val report keeps the run's
    arguments and gradkit configuration, and the comparison lists what differs. A checkpoint copied elsewhere
    has no such record and is still said to be unrecorded. Oracle: what each training was given."""
    import shutil

    _, run_a = trained
    _, run_b = train_tiny(tiny_data, tmp_path / "b", epochs=1, lr0=0.02, overrides=["clip.mode=agc"])
    lone = tmp_path / "lone" / "model.pt"
    lone.parent.mkdir()
    shutil.copy(run_b / "weights" / "last.pt", lone)
    for name, weights in (("va", run_a / "weights" / "best.pt"), ("vb", run_b / "weights" / "last.pt"),
                          ("vc", lone)):
        r = gradkit_here("val", f"model={weights}", f"data={tiny_data}", "imgsz=64", "batch=4", "device=cpu",
                         f"project={tmp_path}", f"name={name}", "plots=False", cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]
    va = json.loads((tmp_path / "va" / "report.json").read_text())
    assert va["trained_with"]["run_dir"] == str(run_a.resolve())
    assert va["trained_with"]["train_args"]["epochs"] == 3 and va["trained_with"]["plugin_config"]["clip"]["mode"] \
        != "agc"
    assert json.loads((tmp_path / "vc" / "report.json").read_text()).get("trained_with") is None
    page = (tmp_path / "va" / "report.html").read_text()
    assert "model trained in" in page and str(run_a.resolve()) in page
    r = gradkit_here("report", str(tmp_path / "va"), str(tmp_path / "vb"), str(tmp_path / "vc"),
                     f"out={tmp_path / 'cmp'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cmp_ = json.loads((tmp_path / "cmp" / "report.json").read_text())
    diff = {d["key"]: d["values"] for d in cmp_["config_diff"]}
    assert diff["yolo.lr0"][:2] == [0.01, 0.02] and diff["yolo.epochs"][:2] == [3, 1]
    assert diff["gradkit.clip.mode"][1] == "agc" and diff["gradkit.clip.mode"][2] is None
    assert cmp_["settings_not_recorded"] == ["vc"]
