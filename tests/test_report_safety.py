"""`gradkit report RUN` rebuilds from report.json, which anyone can edit: the rebuilt page is as safe as the
first one (every value escaped, the file validated, only images inside the run directory embedded)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from gradkit.report import build_report, write_report
from report_cases import hand_made_evaluation, png

EVIL = "<script>alert(1)</script>"


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    write_report(build_report(hand_made_evaluation(tmp_path / "data")), run)
    return run


def _rebuild(run: Path) -> SimpleNamespace:
    """``gradkit report RUN`` in this process (the console script's main; one subprocess test is in
    test_e2e_report)."""
    from gradkit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", str(run)])
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def _edit(run: Path, change) -> None:
    report = json.loads((run / "report.json").read_text())
    change(report)
    (run / "report.json").write_text(json.dumps(report))
    (run / "report.html").unlink(missing_ok=True)


def test_the_report_says_why_each_class_s_objects_were_missed(run):
    report = json.loads((run / "report.json").read_text())
    by_class, counts = report["errors"]["by_class"], report["errors"]["counts"]
    assert set(by_class) == set(report["class_names"].values())
    assert sum(r["objects"] for r in by_class.values()) == report["instances"]
    assert sum(r["found"] for r in by_class.values()) == counts["tp"]
    assert sum(r["objects"] - r["found"] for r in by_class.values()) == counts["missed"] > 0
    # the inspection KPIs match the same detections with their own code: the same objects found per class
    assert {c["name"]: (c["objects"], c["tp"]) for c in report["inspection"]["per_class"]} == \
        {n: (r["objects"], r["found"]) for n, r in by_class.items()}
    assert "Why objects were missed, per class" in (run / "report.html").read_text()


def test_the_verdict_says_why_the_lowest_recall_class_is_missed(run):
    from gradkit.report.render import verdict

    report = json.loads((run / "report.json").read_text())
    weak = min((c for c in report["inspection"]["per_class"] if c["recall"] is not None), key=lambda c: c["recall"])
    row = report["errors"]["by_class"][weak["name"]]
    assert row["objects"] > row["found"]  # the hand-made case misses some of them
    text = verdict(report)
    parts = [f"{row[k]} {k}" for k in ("unseen", "mislocalised") if row[k]]
    parts += [f"{n} taken for {c}" for c, n in row["confused_with"].items()]
    assert f"of its {row['objects']} objects, " + ", ".join(parts) in text
    del report["errors"]["by_class"]  # an older report: the sentence is left out, nothing breaks
    assert "of its" not in verdict(report) and "Lowest recall" in verdict(report)


def test_the_verdict_names_every_class_tied_at_the_lowest_recall(run):
    from gradkit.report.render import verdict

    report = json.loads((run / "report.json").read_text())
    per_class = report["inspection"]["per_class"]
    assert len(per_class) >= 2
    for c in per_class:  # the hand-made case has one class with objects: give every class the same recall
        c["objects"], c["recall"] = max(c["objects"], 1), 0.25
    text = verdict(report)
    tail = text[text.index("Lowest recall"):]
    assert all(c["name"] in tail for c in per_class), tail
    assert f"shared by {len(per_class)} classes" in tail
    per_class[0]["recall"] = 0.1  # one class alone: named alone
    alone = verdict(report)[verdict(report).index("Lowest recall"):]
    assert alone.startswith(f"Lowest recall: {per_class[0]['name']} (0.100 at") and "shared" not in alone, alone


def test_first_report_embeds_its_gallery_from_copies_inside_the_run(run):
    report = json.loads((run / "report.json").read_text())
    copies = [e["copy"] for e in report["errors"]["worst_images"]]
    assert copies and all((run / c).is_file() for c in copies)
    assert _rebuild(run).returncode == 0
    assert (run / "report.html").read_text().count('class="gallery" alt=') == len(copies)


@pytest.mark.parametrize(("key", "change"), [
    ("errors.worst_images.0.missed", lambda r: r["errors"]["worst_images"][0].__setitem__("missed", EVIL)),
    ("errors.worst_images.0.false_positives",
     lambda r: r["errors"]["worst_images"][0].__setitem__("false_positives", "1<img src=x onerror=alert(1)>")),
    ("inspection.escape_rate", lambda r: r["inspection"].__setitem__("escape_rate", EVIL)),
    ("images", lambda r: r.__setitem__("images", "12")),
    ("per_class.0.name", lambda r: r["per_class"][0].__setitem__("name", 5)),
    ("errors.by_class.scratch.unseen", lambda r: r["errors"]["by_class"]["scratch"].__setitem__("unseen", EVIL)),
    ("tiles.size", lambda r: r.__setitem__("tiles", {"size": EVIL, "overlap": 32})),
    ("tiles.overlap", lambda r: r.__setitem__("tiles", {"size": 640, "overlap": -1})),
])
def test_a_crafted_value_is_refused_with_one_line_naming_the_key(run, key, change):
    _edit(run, change)
    proc = _rebuild(run)
    assert proc.returncode == 2
    assert f"key '{key}'" in proc.stderr and "report.json" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (run / "report.html").exists()


def test_not_json_is_one_line(run):
    (run / "report.json").write_text("{ not json")
    proc = _rebuild(run)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "not JSON" in proc.stderr


def test_strings_anywhere_in_the_file_are_escaped(run):
    def change(r):
        r["class_names"]["0"] = EVIL
        r["per_class"][0]["name"] = EVIL
        r["inspection"]["thresholds"] = {EVIL: 0.5, "pit": 0.5}
        r["inspection"]["per_class"][0]["name"] = EVIL
        r["inspection"]["operating_point"] = EVIL
        r["errors"]["worst_images"][0]["image"] = EVIL
        r["errors"]["counts"][EVIL] = 1
        r["split"], r["data"], r["run"], r["model"] = EVIL, EVIL, EVIL, EVIL
        r["versions"][EVIL] = EVIL
        r["plugin_config"] = {EVIL: EVIL}
        r["coco"]["note"] = EVIL
        r["classes_absent"] = [EVIL]
    _edit(run, change)
    proc = _rebuild(run)
    assert proc.returncode == 0, proc.stderr
    page = (run / "report.html").read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert EVIL not in (run / "report.md").read_text()


def test_only_image_files_inside_the_run_directory_are_embedded(run, tmp_path):
    outside = png(tmp_path / "private" / "photo.png", 123)
    secret = base64.b64encode(outside.read_bytes()).decode()
    inside = png(run / "mine.png", 7)
    (run / "link.png").symlink_to(outside)
    (run / "notes.png").write_text("not an image")

    def change(r):
        r["plots"] = {"PR": str(outside), "F1": "link.png", "P": str(inside)}
        r["errors"]["worst_images"][0]["copy"] = "../private/photo.png"
        r["errors"]["worst_images"][1]["copy"] = "notes.png"
        r["errors"]["worst_images"][2]["image"] = str(outside)
        r["errors"]["worst_images"][2]["copy"] = None
    _edit(run, change)
    assert _rebuild(run).returncode == 0
    page = (run / "report.html").read_text()
    assert secret not in page
    assert page.count("not embedded") >= 2
    # the gallery draws the copies that are inside; the three tampered entries show a caption only
    assert page.count('class="gallery" alt=') == len(json.loads((run / "report.json").read_text())["errors"][
        "worst_images"]) - 3
    plots_inside = json.loads((run / "report.json").read_text())
    plots_inside["plots"] = {"PR": "mine.png"}
    (run / "report.json").write_text(json.dumps(plots_inside))
    assert _rebuild(run).returncode == 0
    assert base64.b64encode(inside.read_bytes()).decode() in (run / "report.html").read_text()


def test_crafted_training_records_are_refused_in_one_line(run):
    (run / "results.csv").write_text("epoch,train/box_loss\n1,0.5\n")
    (run / "gradient_alerts.jsonl").write_text(json.dumps({"kind": "exploding", "step": "<b>", "layer": "3"}) + "\n")
    _edit(run, lambda r: r.__setitem__("training", {"run_dir": str(run), "epochs": [1], "curves": {}}))
    proc = _rebuild(run)
    assert proc.returncode == 2 and "training.alerts.0.step" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (run / "report.html").exists()
    (run / "gradient_alerts.jsonl").write_text("{not json\n")
    proc = _rebuild(run)
    assert proc.returncode == 2 and "training records unreadable" in proc.stderr
    (run / "gradient_alerts.jsonl").write_text(json.dumps({"kind": "exploding", "step": 4, "layer": "3"}) + "\n")
    assert _rebuild(run).returncode == 0 and "exploding" in (run / "report.html").read_text()


def _report_cli(*args: str) -> SimpleNamespace:
    from gradkit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", *args])
    return SimpleNamespace(returncode=code, stderr=err.getvalue())


def test_a_comparison_never_replaces_an_evaluation_report(run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(run, other)
    before = (run / "report.json").read_bytes()
    proc = _report_cli(str(run), str(other), f"out={run}")                 # out= one of the compared runs
    assert proc.returncode == 2 and "evaluation report" in proc.stderr and "Traceback" not in proc.stderr
    assert (run / "report.json").read_bytes() == before
    proc = _report_cli(str(run), str(other), f"out={run / 'report.json'}")  # out= a file
    assert proc.returncode == 2 and "folder" in proc.stderr and (run / "report.json").read_bytes() == before
    proc = _report_cli(str(run), str(other), f"out={tmp_path / 'cmp'}")
    assert proc.returncode == 0 and json.loads((tmp_path / "cmp" / "report.json").read_text())["kind"] == "comparison"
    assert _report_cli(str(run), str(other), f"out={tmp_path / 'cmp'}").returncode == 0   # its own output: replaced


@pytest.mark.parametrize(("key", "change"), [
    ("inspection.escape_rate", lambda r: r["inspection"].__setitem__("escape_rate", -5.0)),
    ("per_class.0.AP50", lambda r: r["per_class"][0].__setitem__("AP50", 1.7)),
    ("headline.mAP50", lambda r: r["headline"].__setitem__("mAP50", float("nan"))),
    ("inspection.escaped_images", lambda r: r["inspection"].__setitem__("escaped_images", -1)),
    ("schema_version", lambda r: r.__setitem__("schema_version", 99)),
    ("inspection.per_class.0", lambda r: r["inspection"]["per_class"][0].__setitem__("shipped_parts", 9)),
    ("errors.by_class.scratch", lambda r: r["errors"]["by_class"]["scratch"].__setitem__("found", 99)),
    ("errors.by_class.scratch", lambda r: r["errors"]["by_class"]["scratch"].__setitem__("confused_with", {"x": 7})),
    ("errors", lambda r: r["errors"]["by_class"]["pit"].update(objects=9, unseen=9)),
    ("box_fit.scratch", lambda r: r["box_fit"]["scratch"]["reached"].update({"0.5": 99})),
    ("box_fit.scratch", lambda r: r["box_fit"]["scratch"].update(near_misses=3)),
    ("box_fit.scratch.across", lambda r: r["box_fit"]["scratch"].__setitem__("across", -2.0)),
    ("box_fit.scratch", lambda r: r["box_fit"]["scratch"].update(across=7.0, along=1.0)),  # ratios of no near miss
])
def test_values_no_writer_produces_are_refused_naming_the_key(run, key, change):
    _edit(run, change)
    proc = _rebuild(run)
    assert proc.returncode == 2 and f"'{key}'" in proc.stderr and not (run / "report.html").exists(), proc.stderr


def _curves_of(run: Path) -> dict[str, str]:
    """Ultralytics writes its curves into the folder the report goes to (the validator's save_dir)."""
    return {"PR": str(png(run / "BoxPR_curve.png", 11)), "F1": str(png(run / "BoxF1_curve.png", 22))}


def _embedded(page: str, *files: Path) -> bool:
    return all(base64.b64encode(f.read_bytes()).decode() in page for f in files)


def test_a_run_folder_moved_elsewhere_keeps_its_curves_when_rebuilt(tmp_path):
    first = tmp_path / "first" / "val"
    evaluation = hand_made_evaluation(tmp_path / "data")
    evaluation.plots = _curves_of(first)
    write_report(build_report(evaluation), first)
    moved = tmp_path / "shared" / "val"
    shutil.copytree(first, moved)
    shutil.rmtree(tmp_path / "first")
    (moved / "report.html").unlink()
    assert _rebuild(moved).returncode == 0
    assert _embedded((moved / "report.html").read_text(), moved / "BoxPR_curve.png", moved / "BoxF1_curve.png")


def test_a_report_of_an_earlier_release_with_absolute_curve_paths_finds_them_beside_it(run, tmp_path):
    curves = _curves_of(run)
    elsewhere = tmp_path / "the-run-before-it-was-copied"

    def change(r):  # what earlier releases wrote: the validator's absolute paths, from before the copy
        r["plots"] = {k: str(elsewhere / Path(v).name) for k, v in curves.items()}
    _edit(run, change)
    assert _rebuild(run).returncode == 0
    assert _embedded((run / "report.html").read_text(), *map(Path, curves.values()))


def test_an_earlier_training_reports_curves_come_from_its_report_val_not_the_training_time_ones(run, tmp_path):
    ours = png(run / "report_val" / "BoxPR_curve.png", 33)   # the report's own validation (report.split)
    training_time = png(run / "BoxPR_curve.png", 44)         # Ultralytics' curve of the training run's val split

    def change(r):
        r["plots"] = {"PR": str(tmp_path / "old-place" / "run" / "report_val" / "BoxPR_curve.png")}
    _edit(run, change)
    assert _rebuild(run).returncode == 0
    page = (run / "report.html").read_text()
    assert _embedded(page, ours) and not _embedded(page, training_time)
    shutil.rmtree(run / "report_val")  # gone: not embedded at all, rather than another split's curve
    (run / "report.html").unlink(missing_ok=True)
    assert _rebuild(run).returncode == 0
    page = (run / "report.html").read_text()
    assert not _embedded(page, training_time) and "PR curve: not embedded" in page


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["box_fit"]["scratch"].__setitem__("objects", 9), "box_fit.scratch.objects (9) is not"),
    (lambda r: r["box_fit"]["scratch"]["reached"].update({"0.5": 0, "0.3": 0, "0.1": 0}),
     "box_fit.scratch.reached is below what errors.by_class.scratch found"),
])
def test_a_box_fit_that_contradicts_the_miss_table_is_refused(run, change, message):
    _edit(run, change)
    proc = _rebuild(run)
    assert proc.returncode == 2 and message in proc.stderr and not (run / "report.html").exists(), proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_report_from_before_box_fit_still_rebuilds(run):
    def older(r):  # schema 6: no box_fit
        del r["box_fit"]
        r["schema_version"] = 6
    _edit(run, older)
    assert _rebuild(run).returncode == 0
    page = (run / "report.html").read_text()
    assert "Why objects were missed" in page and "How close the boxes come" not in page


def test_a_report_json_beside_another_run_s_records_is_refused_not_mixed(run):
    """``gradkit report RUN`` draws report.json's scores with the curves of RUN's own files: where those files are
    not the ones the report was built from (report.json copied beside another run, or the records replaced), the
    page would show one run's scores under another's training. Oracle: the section built from the files as they
    were, then each file changed by hand."""
    from gradkit.report.build import training_section

    rows = "epoch,train/box_loss,metrics/mAP50(B)\n" + "".join(f"{e},{1 / e:.3f},{e / 10}\n" for e in (1, 2, 3))
    (run / "results.csv").write_text(rows)
    (run / "args.yaml").write_text("epochs: 3\nseed: 0\nimgsz: 64\n")
    _edit(run, lambda r: r.__setitem__("training", training_section(run)))
    assert _rebuild(run).returncode == 0  # the records it was built from: rebuilt
    (run / "results.csv").write_text(rows + "4,0.250,0.4\n5,0.200,0.5\n")
    (run / "report.html").unlink(missing_ok=True)
    proc = _rebuild(run)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "results.csv" in proc.stderr and "epochs 1-5" in proc.stderr and "epochs 1-3" in proc.stderr
    assert not (run / "report.html").exists()
    (run / "results.csv").write_text(rows)
    (run / "args.yaml").write_text("epochs: 5\nseed: 0\nimgsz: 64\n")
    proc = _rebuild(run)
    assert proc.returncode == 2 and "args.yaml says epochs: '5'" in proc.stderr
    assert "training epochs: '3'" in proc.stderr and not (run / "report.html").exists()
    # a report that recorded fewer arguments (before schema 4) is judged on those it recorded
    (run / "args.yaml").write_text("epochs: 3\nseed: 0\nimgsz: 64\nagnostic_nms: false\n")
    _edit(run, lambda r: r["training"].__setitem__("train_args", {"epochs": 3, "seed": 0}))
    assert _rebuild(run).returncode == 0
    _edit(run, lambda r: r["training"].__setitem__("train_args", {"epochs": 3, "batch": None}))
    proc = _rebuild(run)  # an argument args.yaml does not hold at all
    assert proc.returncode == 2 and "args.yaml says batch: '(absent)'" in proc.stderr, proc.stderr
    # a resume from an earlier checkpoint appended epochs 2-3 again; a report written before schema 13 kept both
    # tries of each in its epochs: the same records, so rebuilt (with each epoch once)
    (run / "results.csv").write_text(rows + "2,0.4,0.25\n3,0.3,0.35\n")
    _edit(run, lambda r: r.__setitem__("training", {**training_section(run), "epochs": [1, 2, 3, 2, 3]}))
    assert _rebuild(run).returncode == 0
    assert json.loads((run / "report.json").read_text())["training"]["epochs"] == [1, 2, 3]


def test_a_validation_s_report_json_beside_a_training_run_s_records_is_refused(run):
    """A ``gradkit val`` report.json (no training section) copied into a training run's folder rebuilt silently,
    without the run's training: it is not that run's report."""
    (run / "results.csv").write_text("epoch,train/box_loss\n1,0.5\n")
    assert json.loads((run / "report.json").read_text()).get("training") is None  # the fixture: an evaluation
    proc = _rebuild(run)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "results.csv" in proc.stderr and "no training section" in proc.stderr
    (run / "results.csv").unlink()
    assert _rebuild(run).returncode == 0  # an evaluation's folder: rebuilt as before


def test_a_hand_edited_resume_record_is_left_out_not_a_crash(tmp_path):
    """gradkit_summary.json is read back: a resume entry of another shape ("x", an epoch given as text) made the
    settings table fail with a TypeError; such entries are left out and a valid one is shown."""
    from gradkit.report.build import training_section
    from gradkit.report.render import _settings

    (tmp_path / "results.csv").write_text("epoch,train/box_loss\n1,2.0\n2,1.5\n")
    (tmp_path / "args.yaml").write_text("epochs: 2\n")
    (tmp_path / "gradkit_summary.json").write_text(json.dumps({"resumed": {
        "at": ["x", {"epoch": "2", "checkpoint": "last.pt"}, {"epoch": True, "checkpoint": "a.pt"},
               {"epoch": 2, "checkpoint": "last.pt", "changed": {"patience": 5}}],
        "train_args": ["not", "a", "mapping"]}}))
    t = training_section(tmp_path)
    assert t["resumed"] == [{"epoch": 2, "checkpoint": "last.pt", "changed": {"patience": 5}}]
    assert t["train_args"] == {"epochs": 2}  # args.yaml, where the record's arguments are no mapping
    r = {"training": t, "model": "m.pt", "data": "d.yaml", "split": "val", "images": 3, "defect_free_images": 1,
         "instances": 2, "versions": {}}
    assert "at epoch 2 from last.pt (patience=5)" in _settings(r)


def _set(path: str, value):
    """An edit setting the value at a dotted path (numbers index lists)."""
    def change(report):
        *parents, last = path.split(".")
        node = report
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return change


@pytest.mark.parametrize(("path", "value"), [
    ("inspection.thresholds.scratch", float("nan")), ("inspection.thresholds.scratch", 1e308),
    ("inspection.thresholds.scratch", -5), ("inspection.per_class.0.threshold", float("nan")),
    ("inspection.match_iou", float("nan")), ("inspection.fp_per_image", -3),
    ("errors.counts.background", -7), ("confusion_matrix.0.0", float("inf")),
    ("errors.worst_images.0.gt.0.1", float("nan")), ("errors.worst_images.0.pred.0.2", 1e300),
    ("errors.worst_images.0.pred.0.1", 7),
])
def test_a_hand_edited_number_out_of_its_range_is_one_line_naming_it(run, path, value):
    """report.json is untrusted: a threshold of NaN, 1e308 or -5, a negative count, an infinite confusion-matrix cell
    or a gallery box at 1e300 was drawn as if real ("scratch >= nan", "-3.00 false positives / image") or ended in a
    traceback (OpenCV, int(inf)). Each is refused in one line naming its key."""
    if path.startswith("confusion_matrix"):
        _edit(run, lambda r: r.__setitem__("confusion_matrix", [[1.0, 0.0], [0.0, 1.0]]))
        assert _rebuild(run).returncode == 0
    _edit(run, _set(path, value))
    proc = _rebuild(run)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    entry, _, row = path.partition(".pred.") if ".pred." in path else path.partition(".gt.")
    # a gallery row is named by its entry and row ("errors.worst_images.0", "pred.0"), any other value by its path
    named = [entry, f"{'pred' if '.pred.' in path else 'gt'}.{row.split('.')[0]}"] if row else [path]
    assert all(n in proc.stderr for n in named), proc.stderr
    assert not (run / "report.html").exists()


def test_gallery_rows_gradkit_writes_and_wrote_still_validate(run):
    """Ultralytics keeps label centres up to 0.01 outside the image, so a box's corners can reach -0.01 or 1.01,
    and a merged prediction can end at 1.0000016; schema-1 reports wrote rows without the flag. The range check
    on gallery rows refused reports gradkit itself had written."""
    def rows(report):
        entry = report["errors"]["worst_images"][0]
        entry["gt"] = [[0, -0.01, 0.2, 0.3, 1.01, 1], [0, 0.1, 0.1, 0.2, 0.2]]
        entry["pred"] = [[0, 0.9, 0.5, 0.5, 1.0000016, 0.9, 0], [0, 0.9, 0.5, 0.5, 0.6, 0.6]]
    _edit(run, rows)
    assert _rebuild(run).returncode == 0


def test_a_run_given_twice_to_compare_is_one_line(run):
    """``gradkit report A A`` (or A and ./A) compared a run with itself: every row a tie."""
    from gradkit.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["report", str(run), str(run / "." ), f"out={run.parent / 'cmp'}"])
    assert code == 2 and "given twice" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
    assert not (run.parent / "cmp").exists()


@pytest.mark.parametrize(("summary", "expected"), [
    ("[1, 2]", None),                           # JSON, not a mapping: read as no record
    ('{"optimizer_steps": 12', "line 1"),       # cut short: one line naming the file and where
])
def test_a_summary_of_another_shape_is_no_record_or_one_line(tmp_path, summary, expected):
    """gradkit_summary.json was parsed in four places, each its own way: a list made training_section fail with an
    AttributeError, and a file cut short with a bare JSONDecodeError naming no file."""
    from gradkit.report.build import training_section

    (tmp_path / "results.csv").write_text("epoch,train/box_loss\n1,2.0\n")
    (tmp_path / "args.yaml").write_text("epochs: 1\n")
    (tmp_path / "gradkit_summary.json").write_text(summary)
    if expected is None:
        t = training_section(tmp_path)
        assert t["optimizer_steps"] is None and t["resumed"] == [] and t["train_args"] == {"epochs": 1}
    else:
        with pytest.raises(ValueError, match=f"gradkit_summary.json.*{expected}"):
            training_section(tmp_path)


def test_a_comparison_refuses_a_training_run_whose_records_changed_since_its_report(run, tmp_path):
    """``gradkit report RUN`` refused a report.json whose run's records had been replaced (a plain run reused the
    folder), but ``gradkit report RUN OTHER`` compared it, its scores from weights that were gone, silently (found
    by a user trial). The same check for every training run a comparison is given."""
    from gradkit.report.build import training_section

    rows = "epoch,train/box_loss,metrics/mAP50(B)\n" + "".join(f"{e},{1 / e:.3f},{e / 10}\n" for e in (1, 2, 3))
    (run / "results.csv").write_text(rows)
    (run / "args.yaml").write_text("epochs: 3\nseed: 0\nimgsz: 64\nlr0: 0.01\n")
    _edit(run, lambda r: r.__setitem__("training", training_section(run)))
    other = tmp_path / "other"
    write_report(build_report(hand_made_evaluation(tmp_path / "data2")), other)
    out = tmp_path / "cmp"
    assert _report_cli(str(run), str(other), f"out={out}").returncode == 0  # its own records: compared
    (run / "args.yaml").write_text("epochs: 3\nseed: 0\nimgsz: 64\nlr0: 0.02\n")  # the plain run's, reusing it
    proc = _report_cli(str(run), str(other), f"out={out}")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert str(run) in proc.stderr and "lr0" in proc.stderr and "gradkit val" in proc.stderr
