"""The report's views: alert table, gradient view, gallery, comparison — content checked on planted cases."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from gradkit.report import build_report, compare_reports, write_report
from gradkit.report.gradients import NONFINITE_COLOUR, colour_limits, gradient_view
from gradkit.report.render import GALLERY_MIN_PX, PALETTE, _alerts, render_html, render_markdown
from gradkit.report.schema import REPORT_SCHEMA_VERSION, ReportSchemaError, validate_report
from report_cases import hand_made_evaluation


def _alert(kind, step, layer):
    return {"kind": kind, "epoch": 1, "step": step, "layer": str(layer), "module": "Conv", "value": 1.0,
            "threshold": 1.0, "message": f"{kind} at {step}"}


def test_alert_table_is_grouped_complete_and_severity_first():
    alerts = ([_alert("exploding", s, 3) for s in range(10, 70)] + [_alert("dead", s, 7) for s in (100, 200, 300)]
              + [_alert("nonfinite", 5000, 0)])
    page = _alerts({"alerts": alerts, "alert_counts": {"exploding": 60, "dead": 3, "nonfinite": 1}})
    grouped, full = page.split("<details>")
    rows = re.findall(r"<tr>(.*?)</tr>", grouped)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    assert cells == [["nonfinite", "0 Conv", "1", "5000", "5000"], ["exploding", "3 Conv", "60", "10", "69"],
                     ["dead", "7 Conv", "3", "100", "300"]]
    assert "All 64 alerts" in full and len(re.findall(r"<tr>", full)) == 64 + 1  # every alert, not 50


def test_colour_scale_is_robust_to_one_spike():
    rng = np.random.default_rng(0)
    grid = rng.normal(0, 0.3, (20, 500))
    grid[5, 250] = 4.0  # one 10^4x spike
    lo, hi = colour_limits(grid)
    assert hi < 1.5 and lo > -1.5  # the spike lies beyond the scale's end instead of stretching it
    assert colour_limits(np.full((2, 2), np.nan)) == (0.0, 1.0)


def _write_run(run, steps=40, epochs=4, nan_step=17, skipped_step=17):
    run.mkdir(parents=True)
    per_epoch = steps // epochs
    with open(run / "gradients.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "layer", "module", "grad_norm", "grad_norm_clipped", "weight_norm",
                    "update_ratio", "nonfinite"])
        for s in range(1, steps + 1):
            for layer in range(6):
                v = "nan" if s == nan_step and layer == 2 else 10.0 ** (layer / 3)
                w.writerow([1 + (s - 1) // per_epoch, s, layer, "Conv", v, v, 1, 0.01, int(v == "nan")])
    with open(run / "gradient_steps.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "step", "total_norm", "total_norm_clipped", "clip_coef", "clipped", "skipped"])
        for s in range(1, steps + 1):
            w.writerow([1 + (s - 1) // per_epoch, s, 20.0, 10.0, 0.5, 1, int(s == skipped_step)])


def test_gradient_view_marks_non_finite_norms(tmp_path):
    import cv2

    _write_run(tmp_path / "run")
    png = gradient_view(tmp_path / "run", [_alert("nonfinite", 17, 2)])
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    orange = np.array([int(NONFINITE_COLOUR[i:i + 2], 16) for i in (5, 3, 1)])  # BGR
    assert (np.abs(img.astype(int) - orange).sum(2) < 30).sum() > 20  # the NaN cell (and the skipped step)
    _write_run(tmp_path / "clean", nan_step=-1, skipped_step=-1)
    clean = cv2.imdecode(np.frombuffer(gradient_view(tmp_path / "clean", []), np.uint8), cv2.IMREAD_COLOR)
    assert (np.abs(clean.astype(int) - orange).sum(2) < 30).sum() == 0


def test_gallery_draws_upscaled_images_with_the_palette_and_counts_that_add_up(tmp_path):
    import base64

    import cv2

    paths = write_report(build_report(hand_made_evaluation(tmp_path / "data")), tmp_path / "run")
    page = paths["html"].read_text()
    report = json.loads(paths["json"].read_text())
    # APs/m/l are computed on original pixels (tested against pycocotools): the page says so
    assert "absolute areas (32² and 96² pixels) of the original images" in page and "1000 px" not in page
    imgs = re.findall(r'class="gallery" alt="[^"]*" src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(imgs) == len(report["errors"]["worst_images"]) > 0
    seen = set()
    for data in imgs:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
        assert max(img.shape[:2]) >= GALLERY_MIN_PX
        for kind, rgb in PALETTE.items():
            if (np.abs(img.astype(int) - np.array(rgb[::-1])).sum(2) < 40).sum() > 50:
                seen.add(kind)
    worst = report["errors"]["worst_images"]
    drawn = {"true positive": any(p[-1] for w in worst for p in w["pred"]),
             "false positive": any(w["false_positives"] for w in worst),
             "missed object": any(w["missed"] for w in worst)}
    # the hand-made case's worst images hold FPs and missed objects (its one TP is on a perfect image: not a worst)
    assert seen == {k for k, v in drawn.items() if v} and {"false positive", "missed object"} <= seen
    for entry, caption in zip(report["errors"]["worst_images"], re.findall(r"<figcaption>(.*?)</figcaption>", page),
                              strict=True):
        n_obj, tp, fn, n_pred, tp2, fp = map(int, re.findall(
            r"(\d+) objects = (\d+) found \(TP\) \+ (\d+) missed \(FN\); (\d+) predictions at the operating point = "
            r"(\d+) TP \+ (\d+) FP", caption)[0])
        assert n_obj == tp + fn == len(entry["gt"]) and n_pred == tp2 + fp == len(entry["pred"]) and tp == tp2
        assert (fn, fp) == (entry["missed"], entry["false_positives"])


def test_comparison_diff_winners_split_warning_and_markdown_deltas(tmp_path):
    a = build_report(hand_made_evaluation(tmp_path / "a"))
    b = build_report(hand_made_evaluation(tmp_path / "b"))
    a["plugin_config"] = {"clip": {"mode": "stock"}, "monitor": {"every": 1}}
    b["plugin_config"] = {"clip": {"mode": "agc"}, "monitor": {"every": 1}}
    b["split"] = "test"
    b["headline"]["mAP50"] = 0.6
    b["inspection"]["escape_rate"] = 0.25
    for r, clip, skipped in ((a, [1.0, 0.5], [0, 2]), (b, [0.2, 0.2], [0, 0])):
        r["training"] = {"run_dir": "x", "epochs": [1, 2], "alerts": [], "alert_counts": {"nonfinite": 0},
                         "curves": {"grad/clip_rate": clip, "grad/skipped": skipped,
                                    "metrics/mAP50-95(B)": [0.1, 0.2]}}
    cmp_ = compare_reports([a, b], ["base", "agc"])
    skipped = cmp_["gradients"]["skipped steps"]
    assert skipped["values"] == [2, 0] and skipped["best"] == "agc"
    assert cmp_["gradients"]["mean clip rate"]["values"] == [pytest.approx(0.75), pytest.approx(0.2)]
    assert [d["key"] for d in cmp_["config_diff"]] == ["gradkit.clip.mode", "split"]
    assert cmp_["inspection"]["escape_rate"]["best"] == "agc"  # lower is better
    assert any("different splits" in w for w in cmp_["warnings"])
    page = render_html(cmp_)
    assert re.search(r'<td class="win">25\.0%</td>', page) and re.search(r'<td class="win">0\.600</td>', page)
    assert "AP75" in page and "gradkit.clip.mode" in page and 'alt="metrics/mAP50-95(B)"' in page  # overlaid curves
    md = render_markdown(cmp_)
    assert "| mAP50 | 0.400 | 0.600 | +0.200 | agc |" in md and "| agc | d.yaml | test |" in md
    assert "| escape_rate | 50.0% | 25.0% | -25.0 pt | agc |" in md
    assert "| fp_per_image | 0.333 | 0.333 | +0.000 | tie: base, agc |" in md  # a count per image, not a rate


def test_gallery_draws_at_most_one_prediction_per_object():
    from gradkit.report.render import MAX_DRAWN_FP, _fps_to_draw

    found, missed = [0, 0.1, 0.1, 0.3, 0.3, 1], [0, 0.6, 0.6, 0.8, 0.8, 0]
    tp = [0, 0.9, 0.1, 0.1, 0.3, 0.3, 1]
    dups = [[0, 0.8 - k / 10, 0.11, 0.1, 0.31, 0.3, 0] for k in range(4)]     # on the found object
    near = [[0, 0.5 - k / 10, 0.62, 0.6, 0.82, 0.8, 0] for k in range(3)]     # on the missed object
    background = [[0, 0.3 - k / 100, 0.0, 0.9, 0.05, 0.95, 0] for k in range(8)]
    fps = sorted(dups + near + background, key=lambda p: -p[1])
    drawn = _fps_to_draw(fps, [tp], [found, missed])
    assert drawn[0] == near[0]  # the highest-scoring box on the missed object, none on the found one
    assert drawn[1:] == background[:MAX_DRAWN_FP] and len(drawn) == 1 + MAX_DRAWN_FP


def test_inactive_rules_and_noise_scale_are_stated_and_escaped():
    from gradkit.monitor.alerts import AlertThresholds, inactive_rules
    from gradkit.monitor.noise import critical_batch_reading
    from gradkit.report.render import _monitor_notes

    thresholds = AlertThresholds(enabled=True, warmup_steps=20, history=100, exploding_factor=300.0,
                                 vanishing_factor=1e-4, vanishing_ratio=1e-9, vanishing_patience=3, dead_patience=3,
                                 diverging_window=8, diverging_rise=10.0, diverging_spike=30.0, diverging_growth=2.0,
                                 diverging_growth_steps=10)
    needs = inactive_rules(2, thresholds)  # 2 optimizer steps: every rule but the relative exploding and weight growth
    assert needs == {"vanishing (relative to the other layers)": 4, "exploding/vanishing (against own history)": 21,
                     "dead": 3, "diverging (total-norm trend/spike)": 9}
    reading = critical_batch_reading(120.0, 64)
    page = _monitor_notes({"inactive_rules": needs, "inactive_rules_message": "2 steps <b>planned</b>",
                           "noise_scale": {"value": 120.0, "steps": 7, "images_per_step": 64, "reading": reading}})
    assert "dead (needs 3 steps)" in page and "against own history) (needs 21 steps)" in page
    assert "&lt;b&gt;planned&lt;/b&gt;" in page and "<b>planned" not in page
    assert "B_simple ~ 120 images vs 64 images per optimizer step" in page and "over 7 optimizer steps" in page
    assert _monitor_notes({"inactive_rules": {}, "noise_scale": None}) == ""


def test_elongation_table_reads_against_the_all_row(tmp_path):
    report = build_report(hand_made_evaluation(tmp_path / "data"))
    page = render_html(report)
    area = page[page.index("By box area relative"):page.index("By elongation")]
    elong = page[page.index("By elongation"):]
    elong = elong[:elong.index("</table>")]

    def rows(table):
        return [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]

    assert [r[0] for r in rows(elong)] == ["all", "elongated (&gt;5)"]
    assert rows(elong)[0] == rows(area)[0]  # the same 'all' row as the area table's first
    assert rows(elong)[0][1] == str(len(hand_made_evaluation(tmp_path / "data2").gts))


def test_gradient_view_with_skipped_steps_and_no_alerts_draws_no_empty_legend(tmp_path):
    # the skipped-step lines on the heatmap carry no label; a legend there has nothing to show
    # (matplotlib warns "No artists with labels found"), which an H200 AMP run printed
    import warnings

    _write_run(tmp_path / "run", nan_step=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gradient_view(tmp_path / "run", []) is not None


def test_epochs_without_validation_are_gaps_not_zeros(tmp_path):
    """With val=False Ultralytics validates only the last epoch it trains and writes 0 for the others:
    those zeros are not measurements, and a run stopped by time= says how many epochs it trained."""
    from gradkit.report.build import training_section

    (tmp_path / "results.csv").write_text(
        "epoch,train/box_loss,metrics/mAP50(B),metrics/mAP50-95(B),val/box_loss\n"
        "1,2.0,0,0,0\n2,1.5,0,0,0\n3,1.2,0.54,0.30,1.1\n")
    (tmp_path / "args.yaml").write_text("val: false\nepochs: 30\ntime: 0.1\n")
    t = training_section(tmp_path)
    assert t["curves"]["metrics/mAP50(B)"] == [None, None, 0.54]
    assert t["curves"]["val/box_loss"] == [None, None, 1.1]
    assert t["curves"]["train/box_loss"] == [2.0, 1.5, 1.2]          # training losses are measured every epoch
    (tmp_path / "results.csv").write_text("epoch,train/box_loss,metrics/mAP50(B)\n1,inf,0\n2,nan,0\n3,1.2,0.54\n")
    (tmp_path / "args.yaml").write_text("val: true\nepochs: 3\n")
    assert training_section(tmp_path)["curves"]["train/box_loss"] == [None, None, 1.2]   # a loss that blew up: gaps
    assert training_section(tmp_path)["curves"]["metrics/mAP50(B)"] == [0.0, 0.0, 0.54]   # validated: a real 0


def test_a_resume_from_an_earlier_checkpoint_keeps_the_later_training_of_each_epoch(tmp_path):
    """Resumed from epoch1.pt of a run that had trained 3 epochs, Ultralytics appends epochs 2 and 3 again to
    results.csv: the curves draw each epoch once, the later training (the one the weights went on from), and the
    settings say which rows were left out rather than dropping the first tries silently."""
    from gradkit.report.build import training_section
    from gradkit.report.render import _settings
    from report_cases import hand_made_evaluation

    (tmp_path / "results.csv").write_text(
        "epoch,time,train/box_loss,metrics/mAP50(B)\n"
        "1,10,2.0,0.1\n2,20,1.8,0.2\n3,30,1.7,0.25\n"   # the abandoned tries of epochs 2 and 3
        "2,9,1.5,0.3\n3,19,1.2,0.4\n4,29,1.1,0.5\n")
    (tmp_path / "args.yaml").write_text("epochs: 4\nmodel: yolo26n.yaml\n")
    t = training_section(tmp_path)
    assert t["epochs"] == [1, 2, 3, 4]
    assert t["curves"]["train/box_loss"] == [2.0, 1.5, 1.2, 1.1]
    assert t["curves"]["metrics/mAP50(B)"] == [0.1, 0.3, 0.4, 0.5]
    assert t["epochs_left_out"] == [2, 3]
    # the later try stopped earlier (early stopping, a crash): the first try's epochs 5-6 are not after epoch 4
    (tmp_path / "results.csv").write_text(
        "epoch,train/box_loss\n" + "".join(f"{e},{10 - e}\n" for e in range(1, 7))
        + "".join(f"{e},{5 - e / 10}\n" for e in range(2, 5)))
    shorter = training_section(tmp_path)
    assert shorter["epochs"] == [1, 2, 3, 4]
    assert shorter["curves"]["train/box_loss"] == [9.0, 4.8, 4.7, 4.6]
    assert shorter["epochs_left_out"] == [2, 3, 4, 5, 6]
    r = {"training": t, "model": "m.pt", "data": "d.yaml", "split": "val", "images": 3, "defect_free_images": 1,
         "instances": 2, "versions": {}}
    assert ("4 (rows of epochs 2, 3 trained before a resume from an earlier checkpoint left out: the curves show "
            "the training the weights went on from)") in _settings(r)
    report = build_report(hand_made_evaluation(tmp_path / "img"))
    report["training"] = t
    validate_report(json.loads(json.dumps(report)))
    report["training"]["epochs_left_out"] = ["2"]   # a hand-edited report.json
    with pytest.raises(ReportSchemaError, match=r"training\.epochs_left_out\.0"):
        validate_report(json.loads(json.dumps(report)))


def test_settings_say_how_many_of_the_planned_epochs_ran(tmp_path):
    from gradkit.report.build import training_section
    from gradkit.report.render import _settings

    (tmp_path / "results.csv").write_text("epoch,train/box_loss\n1,2.0\n2,1.5\n")
    (tmp_path / "args.yaml").write_text("epochs: 30\ntime: 0.1\nmodel: yolo26n.yaml\n")
    t = training_section(tmp_path)
    r = {"training": t, "model": "m.pt", "data": "d.yaml", "split": "val", "images": 3, "defect_free_images": 1,
         "instances": 2, "versions": {}}
    assert "2 in time= 0.1 h" in _settings(r)                         # the clock, not epochs=, set the count
    (tmp_path / "args.yaml").write_text("epochs: 30\nmodel: yolo26n.yaml\n")
    r["training"] = training_section(tmp_path)
    assert "2 of 30" in _settings(r)                                   # stopped early


def test_the_title_names_the_dataset_by_its_folder_as_well_as_its_yaml(tmp_path):
    # every dataset's YAML tends to be called data.yaml: "best.pt on data" says nothing
    evaluation = hand_made_evaluation(tmp_path / "img")
    evaluation.data = str(tmp_path / "steel-line-3" / "data.yaml")
    report = build_report(evaluation)
    heading = re.search(r"<h1>(.*?)</h1>", render_html(report, [tmp_path])).group(1)
    assert heading.startswith("best.pt on steel-line-3/data.yaml / val"), heading
    assert render_markdown(report).splitlines()[0].startswith("# best.pt on steel-line-3/data.yaml / val")


def test_the_inspection_table_says_how_many_parts_with_each_class_were_shipped(tmp_path):
    # hand_made_evaluation at confidence 0.5: scratches on images 0-3; image 0 found, image 1 rejected by a
    # box elsewhere, image 2's only box scores 0.3, image 3 has none: 2 of the 4 scratched parts ship
    report = build_report(hand_made_evaluation(tmp_path / "img"))
    section = render_html(report, [tmp_path]).split('id="operating-point"')[1].split("</table>")[0]
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", section)]
    assert {r[0]: r[-1] for r in rows if r} == {"scratch": "2 of 4", "pit": "–"}  # no pit in this split
    assert "| scratch | 0.500 | 4 | 1 | 2 | 3 |" in render_markdown(report)
    assert next(ln for ln in render_markdown(report).splitlines() if ln.startswith("| scratch | 0.500")).endswith(
        "| 2 of 4 |")


def test_comparison_diff_shows_every_setting_that_differs_even_one_only_one_run_set(tmp_path):
    a = build_report(hand_made_evaluation(tmp_path / "a"))
    b = build_report(hand_made_evaluation(tmp_path / "b"))
    a["plugin_config"] = {"augment": {"ultralytics": {"degrees": 4, "fliplr": 0.0}}, "clip": {"mode": "stock"}}
    b["plugin_config"] = {"augment": {"ultralytics": {}}, "clip": {"mode": "stock"}}
    for r, mosaic in ((a, 1.0), (b, 0.0)):
        r["training"] = {"run_dir": "x", "epochs": [1], "alerts": [], "alert_counts": {}, "curves": {},
                         "train_args": {"mosaic": mosaic, "nbs": 64, "imgsz": 256}}
    diff = {d["key"]: d["values"] for d in compare_reports([a, b], ["a", "b"])["config_diff"]}
    assert diff == {"gradkit.augment.ultralytics.degrees": [4, None], "gradkit.augment.ultralytics.fliplr": [0.0, None],
                    "yolo.mosaic": [1.0, 0.0]}
    # a `gradkit val` report records no settings: its missing keys are not differences
    c = build_report(hand_made_evaluation(tmp_path / "c"))
    assert [d["key"] for d in compare_reports([a, c], ["a", "c"])["config_diff"]] == []
    # nor are the yolo arguments a report of an earlier release (schema 3: eight of them) did not record,
    # nor a plugin setting another release did not have
    old = {**a, "schema_version": 3, "training": {**a["training"], "train_args": {"imgsz": 256}},
           "plugin_config": {"augment": {"ultralytics": {"degrees": 4, "fliplr": 0.0}}}}
    assert [d["key"] for d in compare_reports([a, old], ["a", "old"])["config_diff"]] == []
    # the comparison has its own shape: the current version
    assert compare_reports([a, old], ["a", "old"])["schema_version"] == REPORT_SCHEMA_VERSION


def test_training_records_every_yolo_argument_but_the_run_folder_names(tmp_path):
    from gradkit.report.build import training_section

    (tmp_path / "results.csv").write_text("epoch,train/box_loss\n1,0.5\n")
    (tmp_path / "args.yaml").write_text("model: yolo26n.yaml\nmosaic: 0.0\nnbs: 16\nfreeze: 10\nsave_dir: /x/runs/a\n"
                                        "name: a\nproject: /x/runs\nimgsz: 256\n")
    args = training_section(tmp_path)["train_args"]
    assert args == {"model": "yolo26n.yaml", "mosaic": 0.0, "nbs": 16, "freeze": 10, "imgsz": 256}
    (tmp_path / "args.yaml").write_text("imgsz: 256\nnote: 2026-12-01\nlr0: .nan\n")  # a date, a NaN: not JSON
    assert training_section(tmp_path)["train_args"] == {"imgsz": 256, "note": "2026-12-01", "lr0": None}


def test_comparison_diff_shows_what_an_auto_preset_chose(tmp_path):
    a = build_report(hand_made_evaluation(tmp_path / "a"))
    b = build_report(hand_made_evaluation(tmp_path / "b"))
    for r, used in ((a, "none"), (b, "defect")):
        r["plugin_config"] = {"augment": {"preset": "auto"}}
        r["training"] = {"run_dir": "x", "epochs": [1], "alerts": [], "alert_counts": {}, "curves": {},
                         "train_args": {}, "augment_preset": {"configured": "auto", "used": used, "reason": "r"}}
    diff = {d["key"]: d["values"] for d in compare_reports([a, b], ["a", "b"])["config_diff"]}
    assert diff == {"gradkit.augment.preset (used)": ["none", "defect"]}


def test_a_report_scored_through_tiles_says_so_and_a_comparison_names_each_runs_scoring(tmp_path):
    ev = hand_made_evaluation(tmp_path / "a")
    ev.extra["tiles"] = {"size": 640, "overlap": 96}
    tiled = build_report(ev)
    whole = build_report(hand_made_evaluation(tmp_path / "b"))
    assert tiled["tiles"] == {"size": 640, "overlap": 96} and whole["tiles"] is None
    said = "scored through tiles of 640 px overlapping by 96 px"
    assert said in render_markdown(tiled) and said in render_html(tiled) and said not in render_markdown(whole)
    note = [w for w in compare_reports([tiled, whole], ["tiles", "stock"])["warnings"] if "scored differently" in w]
    assert note == ["The runs were scored differently (tiles: through tiles of 640 px (overlap 96 px), stock: on whole "
                    "images): the same images, each model seeing them as it was trained to."]
    assert not any("scored differently" in w for w in compare_reports([whole, whole], ["a", "b"])["warnings"])


def _taught_run(tmp_path, untaught):
    from gradkit.report.build import training_section

    (tmp_path / "results.csv").write_text("epoch,train/box_loss,taught/scratch,taught/pit\n"
                                          "1,2.0,0.52,0.005\n2,1.5,0.55,0.005\n")
    (tmp_path / "gradkit_summary.json").write_text(json.dumps({"taught": {"untaught": untaught}}))
    return training_section(tmp_path)


def test_the_classes_not_taught_during_training_are_shown_beside_each_class_s_targets(tmp_path):
    warned = {"epoch": 1, "class": "pit <b>", "boxes": 136, "median_target": 0.005, "median_short_side": 4.5,
              "with_positive": 1.0}
    report = build_report(hand_made_evaluation(tmp_path / "img"))
    report["training"] = _taught_run(tmp_path, [warned])
    page = render_html(report, [tmp_path])
    section = page.split("<h3>What the assigner taught each class</h3>")[1].split("<h3>")[0]
    assert "Class pit &lt;b&gt; was not being taught at epoch 2: median best target 0.01 over 136 boxes" in section
    assert "median short side 4.5 px" in section and section.count("<img") == 1  # the per-class panel
    paths = write_report(report, tmp_path)
    validate_report(json.loads(paths["json"].read_text()))  # as `gradkit report` reads it back
    report["training"] = _taught_run(tmp_path, [{**warned, "median_target": 7.0}])  # a hand-edited summary
    with pytest.raises(ReportSchemaError, match=r"training\.untaught\.0\.median_target"):
        validate_report(json.loads(json.dumps(report)))
    from gradkit.report.build import training_section

    (tmp_path / "results.csv").write_text("epoch,train/box_loss\n1,2.0\n")  # monitor.taught off
    (tmp_path / "gradkit_summary.json").write_text("{}")
    report["training"] = training_section(tmp_path)
    assert "What the assigner taught" not in render_html(report, [tmp_path])


def test_classes_a_run_left_out_are_not_called_absent_from_the_split(tmp_path):
    """A run trained with classes=[0]: class 1 (pit) is left out by that choice, not missing from the data; the
    report names it so, in JSON and in the warnings (hand-made evaluation: pit has no instances either way)."""
    from gradkit.report import build_report
    from gradkit.report.render import warnings
    from gradkit.report.schema import validate_report
    from report_cases import hand_made_evaluation

    ev = hand_made_evaluation(tmp_path)
    plain = build_report(ev)
    assert plain["classes_absent"] == ["pit"] and plain["classes_left_out"] is None
    ev.extra["classes"] = [0]
    report = validate_report(build_report(ev))
    assert report["classes_left_out"] == ["pit"] and report["classes_absent"] == []
    said = " ".join(warnings(report))
    assert "left out by classes=" in said and "absent from this split" not in said


def test_a_comparison_of_validation_reports_does_not_call_their_models_alike(tmp_path):
    """Two ``gradkit val`` reports record no training settings: the comparison said "No setting differs (plugin
    configuration, yolo arguments, data, split)" for two models trained with other clipping, and report.md left
    the section out. Both pages now say the training was not recorded, and compare only data and split."""
    a, b = (build_report(hand_made_evaluation(tmp_path / name)) for name in ("a", "b"))
    comparison = compare_reports([a, b], ["stock", "agc"])
    page, md = render_html(comparison, [tmp_path]), render_markdown(comparison)
    assert "No setting differs" not in page
    assert comparison["gradients"] == {} and "Gradients" not in page and "Gradients" not in md  # all n/a: no section
    for text in (page, md):
        assert "not recorded" in text and "stock, agc" in text, text[:3000]


def test_a_class_name_with_a_line_break_keeps_report_md_s_tables_whole(tmp_path):
    report = build_report(hand_made_evaluation(tmp_path / "img", names={0: "scratch\nlong", 1: "pit\r\n<b>"}))
    md = render_markdown(report)
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert any("scratch long" in ln for ln in rows), md
    assert not [ln for ln in md.splitlines() if ln.startswith("long") or ln.startswith("<b>")], md


def test_a_comparison_carries_the_tiny_split_warning_and_calls_a_gap_too_small_to_show_a_tie(tmp_path):
    """Each report of a 6-image split warns that one image moves a rate by 17 points; the comparison of two named
    winners on one false positive without it. And "pit | 0.298 | 0.298 | +0.001 | agc": a gap of 0.0005 shown
    as none, yet a winner."""
    a, b = (build_report(hand_made_evaluation(tmp_path / name)) for name in ("a", "b"))
    b["headline"]["mAP50"] = a["headline"]["mAP50"] + 0.0004
    comparison = compare_reports([a, b], ["stock", "agc"])
    said = [w for w in comparison["warnings"] if "Tiny split" in w]
    assert len(said) == 1 and "6 images" in said[0] and "17 points" in said[0]
    assert comparison["headline"]["mAP50"]["best"] == "tie: stock, agc"
    b["headline"]["mAP50"] = a["headline"]["mAP50"] + 0.002
    assert compare_reports([a, b], ["stock", "agc"])["headline"]["mAP50"]["best"] == "agc"


def test_one_defect_free_image_is_one_image(tmp_path):
    report = build_report(hand_made_evaluation(tmp_path / "img"))
    report["defect_free_images"] = report["inspection"]["defect_free_images"] = 1
    assert "1 defect-free image." in render_markdown(report)
    assert "1 defect-free image rejected" in render_html(report, [tmp_path])
    assert "1 defect-free images" not in render_markdown(report) + render_html(report, [tmp_path])


def test_the_worst_images_hold_no_image_without_an_error(tmp_path):
    """On a small split the gallery filled up with perfect images (no object, no prediction)."""
    report = build_report(hand_made_evaluation(tmp_path / "img"), gallery_size=50)
    worst = report["errors"]["worst_images"]
    assert worst and all(w["missed"] + w["false_positives"] > 0 for w in worst)


def _run_folder(root, args: str = "epochs: 3\nlr0: 0.01\n", config: str | None = "clip:\n  mode: agc\n",
                summary: str | None = None):
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "best.pt").write_bytes(b"not read")
    if isinstance(args, bytes):
        (root / "args.yaml").write_bytes(args)
    else:
        (root / "args.yaml").write_text(args, encoding="utf-8")
    if config is not None:
        (root / "gradkit.yaml").write_text(config, encoding="utf-8")
    if summary is not None:
        (root / "gradkit_summary.json").write_text(summary, encoding="utf-8")
    return root / "weights" / "best.pt"


def test_a_val_report_of_a_plain_ultralytics_run_differs_from_a_gradkit_one(tmp_path):
    """A val report of weights from a plain Ultralytics run (no gradkit.yaml) recorded its arguments but no gradkit
    settings, so beside a gradkit run with the same arguments the comparison said "No setting differs". It now says
    one trained with gradkit and the other without. Hand-made run folders."""
    from gradkit.report.build import trained_with

    ev = hand_made_evaluation(tmp_path / "img")
    with_gk = build_report(ev, trained_with=trained_with(str(_run_folder(tmp_path / "a"))))
    plain = build_report(ev, trained_with=trained_with(str(_run_folder(tmp_path / "b", config=None))))
    comparison = compare_reports([with_gk, plain], ["a", "b"])
    assert {d["key"]: d["values"] for d in comparison["config_diff"]} == {"gradkit": ["attached", "not attached"]}
    assert comparison["settings_not_recorded"] == []
    page = render_html(validate_report(plain), [tmp_path])
    assert "trained without gradkit" in page and "gradkit configuration are kept" not in page


def test_a_val_report_finds_its_run_folder_through_a_link_or_a_relative_path(tmp_path, monkeypatch):
    from gradkit.report.build import trained_with

    best = _run_folder(tmp_path / "run")
    (tmp_path / "latest.pt").symlink_to(best)
    assert trained_with(str(tmp_path / "latest.pt"))["run_dir"] == str((tmp_path / "run").resolve())
    monkeypatch.chdir(tmp_path / "run" / "weights")
    assert trained_with("best.pt")["train_args"]["epochs"] == 3
    assert trained_with("./best.pt")["train_args"]["lr0"] == 0.01
    stored = tmp_path / "store" / "abc123"  # weights kept as a link into a cache (DVC, git-annex)
    stored.parent.mkdir()
    best.rename(stored)
    best.symlink_to(stored)
    assert trained_with(str(best))["run_dir"] == str((tmp_path / "run").resolve())


@pytest.mark.parametrize(("files", "named"), [
    ({"config": "clip: {2024-01-01: x}\n"}, None),                       # a date key: kept as its text
    ({"args": "epochs: 3\n2024-01-01: 2\n"}, None),
    ({"summary": '{"taught": {"untaught": 5}, "as_run": {"imgsz": 64}}'}, None),  # not read: not this record's
    ({"summary": '{"as_run": "big"}'}, "gradkit_summary.json"),           # the schema would refuse the report
    ({"config": "clip:\n  mode: [agc\n"}, "gradkit.yaml"),
    ({"args": "epochs: [3\n"}, "args.yaml"),
    ({"config": ""}, "gradkit.yaml"),
    ({"config": "clip: &x [*x]\n"}, "gradkit.yaml"),                       # refers to itself
    ({"args": b"epochs: \xff\n"}, "args.yaml"),                             # not UTF-8
])
def test_a_val_report_reads_its_model_s_run_folder_as_untrusted_input(tmp_path, files, named):
    """The run folder's files are read back: whatever they hold, either a record the report's schema accepts or one
    line naming the file (the report is then written without the record). A date key failed with a TypeError, a
    wrong-typed ``untaught`` crashed, ``as_run: "big"`` made a report.json its own schema refused, and a YAML error
    spread over six lines naming no file."""
    from gradkit.report.build import trained_with
    from gradkit.report.schema import TrainedWith

    kw = {"args": files.get("args", "epochs: 3\n"), "config": files.get("config", "clip:\n  mode: agc\n"),
          "summary": files.get("summary")}
    best = _run_folder(tmp_path / "run", **kw)
    if named is None:
        TrainedWith.model_validate(trained_with(str(best)))
        return
    with pytest.raises(ValueError) as err:
        trained_with(str(best))
    assert named in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_comparison_says_which_augmentation_hyps_trained_not_only_which_were_typed(tmp_path):
    """A gradkit run whose config set fliplr 0.2 (args.yaml keeps yolo's 0.5) against a plain Ultralytics run typed
    fliplr=0.1: the comparison showed "yolo.fliplr 0.5 / 0.1" and nothing of the 0.2 that trained, and hid the hyps
    only the config set (hsv_v 0.3 against Ultralytics' 0.4). The run records the hyps that trained (as_run) and the
    comparison shows them beside the typed ones. Hand-made run folders as the runs write them."""
    import json as _json

    from gradkit.report.build import trained_with

    gk = _run_folder(tmp_path / "a", args="epochs: 3\nfliplr: 0.5\nhsv_v: 0.4\n",
                     config="augment:\n  ultralytics:\n    fliplr: 0.2\n    hsv_v: 0.3\n",
                     summary=_json.dumps({"as_run": {"imgsz": 64, "batch": 8, "fliplr": 0.2, "hsv_v": 0.3}}))
    plain = _run_folder(tmp_path / "y", args="epochs: 3\nfliplr: 0.1\nhsv_v: 0.4\n", config=None)
    ev = hand_made_evaluation(tmp_path / "img")
    a, y = (build_report(ev, trained_with=trained_with(str(p))) for p in (gk, plain))
    diff = {d["key"]: d["values"] for d in compare_reports([a, y], ["a", "y"])["config_diff"]}
    assert diff["yolo.fliplr (ran)"] == [0.2, 0.1] and diff["yolo.hsv_v (ran)"] == [0.3, 0.4], diff


def test_a_comparison_names_the_validation_arguments_that_differ(tmp_path):
    """Two validations of one model at other image sizes scored differently, and the comparison said "No setting
    differs" (found by a user trial): each report records its validation's arguments, and they are diffed."""
    from gradkit.report.compare import compare_reports

    reports = []
    for imgsz in (96, 128):
        ev = hand_made_evaluation(tmp_path / f"data{imgsz}")
        ev.extra["validated_with"] = {"imgsz": imgsz, "conf": 0.001, "iou": 0.7}
        reports.append(build_report(ev))
    diff = compare_reports(reports, ["A", "B"])["config_diff"]
    assert [d for d in diff if d["key"].startswith("val.")] == [{"key": "val.imgsz", "values": [96, 128]}]


def test_a_folder_reused_by_a_plain_run_is_not_credited_with_the_earlier_gradkit_run(tmp_path):
    """A plain Ultralytics run with exist_ok=True in a folder a gradkit run used leaves that run's gradkit.yaml and
    gradkit_summary.json beside its own results.csv and weights: the val report credited the plain run with gradkit's
    configuration. The summary records the results.csv it was written beside; where results.csv has changed since,
    the folder's gradkit records are an earlier run's. Hand-made folders (the e2e test trains both runs)."""
    import hashlib
    import json as _json

    from gradkit.report.build import trained_with

    rows = "epoch,train/box_loss\n1,2.0\n"
    summary = _json.dumps({"as_run": {"imgsz": 64, "batch": 8}, "results_sha256": hashlib.sha256(rows.encode())
                           .hexdigest()})
    best = _run_folder(tmp_path / "run", summary=summary)
    (tmp_path / "run" / "results.csv").write_text(rows)
    own = trained_with(str(best))
    assert own["plugin_config"] == {"clip": {"mode": "agc"}} and own["as_run"]["imgsz"] == 64
    (tmp_path / "run" / "results.csv").write_text(rows + "1,1.9\n")  # the plain run appended its own epoch
    reused = trained_with(str(best))
    assert reused["plugin_config"] is None and reused["as_run"] is None and reused["augment_preset"] is None
    assert "gradkit.yaml" in reused["earlier_gradkit_run"]
    ev = hand_made_evaluation(tmp_path / "img")
    page = render_html(validate_report(build_report(ev, trained_with=reused)), [tmp_path])
    assert "whether gradkit trained it is not known" in page and "an earlier run" in page
    assert "trained without gradkit" not in page
    markdown = render_markdown(validate_report(build_report(ev, trained_with=reused)))  # said nothing of training
    assert "whether gradkit trained it is not known" in markdown and str(tmp_path / "run") in markdown
    diff = compare_reports([build_report(ev, trained_with=own), build_report(ev, trained_with=reused)], ["a", "b"])
    assert {d["key"]: d["values"] for d in diff["config_diff"]}["gradkit"] == ["attached", "not known"]
    (tmp_path / "run" / "gradkit_summary.json").write_text(_json.dumps({"as_run": {"imgsz": 64}}))  # no digest:
    assert trained_with(str(best))["plugin_config"] == {"clip": {"mode": "agc"}}  # an earlier release's, credited
