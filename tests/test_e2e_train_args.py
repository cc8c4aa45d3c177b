"""Ultralytics training arguments that change what a run reads or scores, through the real trainer on tiny data:
gradkit must train with them as stock does and report what the run itself scored (oracles: the dataset's own label
files, counted here; Ultralytics' own validation of the run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import train_tiny

pytestmark = pytest.mark.e2e


def _val_instances(data: Path, classes=None) -> int:
    """Boxes in the val split's label files (of ``classes`` only), counted from the files themselves."""
    root = Path(yaml.safe_load(data.read_text(encoding="utf-8"))["path"])
    lines = [ln.split() for f in (root / "labels" / "val").glob("*.txt") for ln in f.read_text().splitlines()]
    return sum(1 for p in lines if p and (classes is None or int(p[0]) in classes))


def test_rect_training_runs_and_its_report_scores_only_the_run_s_classes(tiny_data, tmp_path):
    """Ultralytics' rectangular batches drop each label's image shape: gradkit's start-of-training label count
    crashed on it (KeyError 'shape'). And the training report scored classes the run's classes= left out."""
    model, run = train_tiny(tiny_data, tmp_path, epochs=1, rect=True, classes=[0, 2], report=True)
    assert json.loads((run / "gradkit_summary.json").read_text())["optimizer_steps"] > 0
    report = json.loads((run / "report.json").read_text())
    assert report["instances"] == _val_instances(tiny_data, {0, 2}) < _val_instances(tiny_data)
    assert report["instances"] == int(model.trainer.validator.metrics.nt_per_class.sum())  # Ultralytics' own count
    assert report["classes_left_out"] == ["crack", "stain"] and "crack" not in report["classes_absent"]


def test_single_class_training_is_not_told_its_names_differ_from_the_data(tiny_data, tmp_path):
    _, run = train_tiny(tiny_data, tmp_path, epochs=1, single_cls=True, report=True)
    report = json.loads((run / "report.json").read_text())
    assert report["instances"] == _val_instances(tiny_data) and report["data_class_names"] is None
    assert "not the data's" not in (run / "report.md").read_text()


def test_a_run_on_the_clock_is_not_told_a_step_count_from_epochs_it_will_not_run(tiny_data, tmp_path):
    """With time= Ultralytics sets the epochs after the first one: the start-of-training notice counted the steps
    of epochs= instead (12 planned, 90 made). Now the summary names the steps the run made."""
    _, run = train_tiny(tiny_data, tmp_path, epochs=1, time=0.001)
    summary = json.loads((run / "gradkit_summary.json").read_text())
    made = summary["optimizer_steps"]
    assert "planned" not in summary["inactive_rules_message"]
    assert summary["inactive_rules_message"].startswith(f"gradkit: {made} optimizer step(s) made")


def test_a_run_in_a_used_folder_removes_the_old_outputs_and_is_tracked_as_its_own(tiny_data, tmp_path):
    """exist_ok=True reuses a run folder: a second run without the report and the monitor left the first run's
    report and gradient records beside its own weights (and gradkit report then mixed the two runs). And what the
    Ctrl-C message reads, filled by the real trainer: the second run is not 'saved' before it saves (the old
    last.pt there is the first run's), and 'finished' once its last epoch has ended."""
    from ultralytics.utils.callbacks import base

    from gradkit.cli import _interrupted
    from gradkit.integrations.ultralytics.callback import RUN_OUTPUTS
    from gradkit.integrations.ultralytics.seams import track_run

    _, run = train_tiny(tiny_data, tmp_path, epochs=1, val=True, report=True, save_period=1)
    assert {"report.json", "gradients.csv", "gradkit_summary.json"} <= {n for n in RUN_OUTPUTS if (run / n).exists()}
    assert (run / "weights" / "epoch0.gradkit.pt").is_file()  # the first run's state beside its epoch0.pt
    before = {event: list(fns) for event, fns in base.default_callbacks.items()}
    tracked, seen = track_run(), []
    try:
        _, again = train_tiny(tiny_data, tmp_path, overrides={"report.enabled": False, "monitor.enabled": False},
                              epochs=2, callbacks=[("on_train_epoch_start", lambda t: seen.append(dict(tracked)))])
    finally:
        base.default_callbacks.update(before)  # other tests' models must not fill this dict
    assert again == run
    assert not (run / "report.json").exists() and not (run / "gradients.csv").exists()
    assert not (run / "weights" / "epoch0.gradkit.pt").exists()  # a resume from the old epoch0.pt starts afresh
    assert json.loads((run / "gradkit_summary.json").read_text())["optimizer_steps"] > 0  # the new run's own
    assert not seen[0].get("saved") and "resume=True" not in _interrupted(seen[0])  # the old last.pt
    assert seen[1]["saved"] and not seen[1]["finished"] and "resume=True" in _interrupted(seen[1])
    assert tracked["finished"] and "resume=True" not in _interrupted(tracked)
    assert tracked["data"] == str(tiny_data)


def test_the_report_says_the_image_size_and_batch_the_run_trained_at_beside_the_ones_given(tiny_data, tmp_path):
    """``batch=-1`` (Ultralytics' auto batch; on a CPU its default, 16) and ``imgsz=[64, 48]`` (a training run takes
    the larger side): the report's settings showed "-1" and "[64, 48]", what was typed, not what trained.
    Oracle: the trainer's own batch size and image size."""
    model, run = train_tiny(tiny_data, tmp_path, epochs=1, batch=-1, imgsz=[64, 48], report=True)
    ran = {"imgsz": model.trainer.args.imgsz, "batch": model.trainer.batch_size}
    assert ran == {"imgsz": 64, "batch": 16}
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["as_run"] == ran
    page = (run / "report.html").read_text()
    assert "<td>batch</td><td>-1 (16 ran)</td>" in page.replace(' class="l"', "")
    assert "<td>imgsz</td><td>[64, 48] (64 ran)</td>" in page.replace(' class="l"', "")


def test_a_plain_run_in_a_folder_a_gradkit_run_used_is_not_credited_with_its_configuration(tiny_data, tmp_path):
    """A plain Ultralytics run with exist_ok=True left the gradkit run's gradkit.yaml and summary beside its own
    results.csv and weights, and ``gradkit val`` of its weights recorded gradkit's configuration as how they were
    trained. Both runs through the real trainer."""
    from ultralytics import YOLO

    from conftest import TINY_TRAIN
    from gradkit.report.build import results_digest, trained_with

    _, run = train_tiny(tiny_data, tmp_path, epochs=1)
    summary = json.loads((run / "gradkit_summary.json").read_text())
    assert summary["results_sha256"] == results_digest(run)  # the mark of the run it was written beside
    assert trained_with(str(run / "weights" / "last.pt"))["plugin_config"] is not None
    YOLO("yolo26n.yaml").train(data=str(tiny_data), project=str(tmp_path), name="run", exist_ok=True,
                               **{**TINY_TRAIN, "epochs": 1})
    plain = trained_with(str(run / "weights" / "last.pt"))
    assert (run / "gradkit.yaml").is_file()  # the plain run cannot remove it: the record must not credit it
    assert plain["plugin_config"] is None and "earlier run" in plain["earlier_gradkit_run"]


def test_a_gradkit_run_resumed_from_an_earlier_epoch_and_stopped_is_still_its_own(tiny_data, tmp_path):
    """A finished gradkit run resumed from its epoch0.pt appends rows to results.csv before its end writes a new
    summary: the finished run's summary, naming the old results.csv, made the stopped resume's weights read as a
    plain run's in a find by review. A resume takes the mark out; the resumed run's end writes its own."""
    from ultralytics import YOLO

    import gradkit
    from gradkit.report.build import results_digest, trained_with

    class Stop(Exception):
        pass

    _, run = train_tiny(tiny_data, tmp_path, epochs=3, save_period=1)
    model = YOLO(str(run / "weights" / "epoch0.pt"))
    gradkit.attach(model, None, {"report.enabled": False, "monitor.plot": False})

    def stop_after_a_row(trainer):
        if trainer.epoch >= 1:
            raise Stop

    model.add_callback("on_fit_epoch_end", stop_after_a_row)
    rows_before = (run / "results.csv").read_text()
    with pytest.raises(Stop):
        model.train(resume=True)
    assert (run / "results.csv").read_text() != rows_before  # the resume wrote its own epoch's row
    record = trained_with(str(run / "weights" / "last.pt"))
    assert record["plugin_config"] is not None and "earlier_gradkit_run" not in record
    assert "results_sha256" not in json.loads((run / "gradkit_summary.json").read_text())
    assert results_digest(run) is not None
