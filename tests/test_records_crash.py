"""Issue 12 §6: records survive crashes exactly; the plugin state follows Ultralytics' NaN recovery
and loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
import yaml

from conftest import TINY_TRAIN, read_csv, train_tiny
from gradkit.clip import make_clipper
from gradkit.config import load_config
from gradkit.monitor import Alert, AlertDetector, GradientLog, truncate_records
from gradkit.monitor.alerts import AlertThresholds

pytestmark = pytest.mark.e2e


def _alerts(run):
    return [json.loads(line) for line in open(run / "gradient_alerts.jsonl", encoding="utf-8") if line.strip()]


def log_lines():
    """Messages of Ultralytics' logger (gradkit logs through it) while the context is open."""
    import contextlib
    import logging

    from ultralytics.utils import LOGGER

    @contextlib.contextmanager
    def capture():
        lines: list[str] = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(record.getMessage())
        LOGGER.addHandler(handler)
        try:
            yield lines
        finally:
            LOGGER.removeHandler(handler)

    return capture()


# ------------------------------------------------------------------ truncation, hand-made records
def _write_log(run, steps):
    log = GradientLog(run, flush_every=1000)
    for step in steps:
        log.add_layers(1, step, ["0 Conv", "1 Detect"], np.array([1.0, 2.0]), np.array([1.0, 2.0]),
                       np.array([3.0, 4.0]), np.array([0, 0]), torch.tensor([1e-3, 2e-3]))
        log.add_step(1, step, 2.2, 2.2, 1.0, False)
        log.add_alerts([Alert("dead", 1, step, "0", "Conv", 0.0, 0.0, f"step {step}")])
    log.flush()


def test_truncate_keeps_steps_up_to_the_checkpoint_and_drops_cut_lines(tmp_path):
    _write_log(tmp_path, range(1, 8))
    # a crash in the middle of a write: half a row / half a JSON object at the end
    with open(tmp_path / "gradients.csv", "a", encoding="utf-8") as f:
        f.write("1,8,0,Conv,1.0")
    with open(tmp_path / "gradient_alerts.jsonl", "a", encoding="utf-8") as f:
        f.write('{"kind": "dead", "step": 3')
    dropped = truncate_records(tmp_path, 5)
    assert dropped == {"gradients.csv": 5, "gradient_steps.csv": 2, "gradient_alerts.jsonl": 3}
    layers = read_csv(tmp_path / "gradients.csv")
    assert [(int(r["step"]), r["layer"]) for r in layers] == [(s, k) for s in range(1, 6) for k in ("0", "1")]
    assert [int(r["step"]) for r in read_csv(tmp_path / "gradient_steps.csv")] == [1, 2, 3, 4, 5]
    assert [a["step"] for a in _alerts(tmp_path)] == [1, 2, 3, 4, 5]
    # appending after the truncation continues the files cleanly
    log = GradientLog(tmp_path, append=True, flush_every=1)
    log.add_step(1, 6, 1.0, 1.0, 1.0, False)
    log.flush()
    assert [int(r["step"]) for r in read_csv(tmp_path / "gradient_steps.csv")] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------ state file
def test_state_file_loads_with_weights_only(tmp_path):
    from gradkit.integrations.ultralytics import GradkitCallback

    labels = ["0 Conv", "1 Detect"]
    plugin = GradkitCallback(load_config(None, {"clip.mode": "autoclip"}))
    plugin.clipper = make_clipper("autoclip")
    plugin.detector = AlertDetector(labels, AlertThresholds.of(plugin.cfg.monitor.alerts))
    rng = np.random.default_rng(0)
    for step in range(1, 30):
        g = rng.uniform(1, 2, 2)
        plugin.detector.update(1, step, g, np.ones(2), float(np.linalg.norm(g)), np.zeros(2), True)
        plugin.clipper.history.append(float(step))
    plugin.detector.update(1, 30, np.array([0.0, 1.0]), np.ones(2), 1.0, np.zeros(2), True)  # an active episode
    plugin.step, plugin.alert_count = 30, 2
    torch.save(plugin.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)  # raises on numpy arrays or custom classes
    fresh = GradkitCallback(plugin.cfg)
    fresh.clipper = make_clipper("autoclip")
    fresh.detector = AlertDetector(labels, AlertThresholds.of(plugin.cfg.monitor.alerts))
    fresh.load_state_dict(state)
    assert fresh.step == 30 and list(fresh.clipper.history) == list(plugin.clipper.history)
    ours, theirs = plugin.detector.state_dict(), fresh.detector.state_dict()
    assert np.array_equal(ours["hist"], theirs["hist"], equal_nan=True)
    assert ours["active"] == theirs["active"] and ours["count"] == theirs["count"]
    assert ours["diverging"] == theirs["diverging"] and theirs["diverging"]["recent"]  # the warning's baseline


# ------------------------------------------------------------------ kill -9 mid-epoch, then resume
KILLED_RUN = textwrap.dedent("""
    import json, os, signal, sys
    import torch
    from ultralytics import YOLO
    import gradkit

    data, project, train_kw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    model = YOLO("yolo26n.yaml")
    gradkit.attach(model, "default", {"monitor.flush_every": 1, "clip.mode": "autoclip", "report.enabled": False})
    batches = {"n": 0}

    def plant_nan_then_kill(trainer):
        if trainer.epoch != 1:
            return
        batches["n"] += 1
        if batches["n"] == 2:  # a NaN gradient: a skipped step and a nonfinite alert after the checkpoint
            p = next(q for q in trainer.model.parameters() if q.requires_grad)
            handle = p.register_hook(lambda g: (handle.remove(), torch.full_like(g, float("nan")))[1])
        if batches["n"] == 4:
            os.kill(os.getpid(), signal.SIGKILL)

    model.add_callback("on_train_batch_start", plant_nan_then_kill)
    model.train(data=data, project=project, name="run", exist_ok=True, **train_kw)
""")


def test_kill_9_mid_epoch_then_resume_records_every_step_once(tiny_data, tmp_path):
    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    kw = {**TINY_TRAIN, "epochs": 3}
    proc = subprocess.run([sys.executable, str(script), str(tiny_data), str(tmp_path), json.dumps(kw)],
                          capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = tmp_path / "run"
    saved = torch.load(run / "weights" / "last.gradkit.pt", weights_only=True)
    assert saved["epoch"] == 0
    steps_before = [int(r["step"]) for r in read_csv(run / "gradient_steps.csv")]
    assert max(steps_before) > saved["step"]  # rows were flushed after the checkpoint: the case to fix
    assert any(a["kind"] == "nonfinite" and a["step"] > saved["step"] for a in _alerts(run))

    import gradkit

    model = gradkit.resume(run / "weights" / "last.pt")
    plugin = model.gradkit
    assert plugin.cfg.clip.mode == "autoclip" and plugin.cfg.monitor.flush_every == 1
    # oracle: the EMA counts the optimizer steps applied in the surviving history (no step was skipped there)
    assert plugin.step == model.trainer.ema.updates == len(plugin.clipper.history)
    steps = [int(r["step"]) for r in read_csv(run / "gradient_steps.csv")]
    assert steps == list(range(1, plugin.step + 1))
    layer_rows = Counter((int(r["step"]), r["layer"]) for r in read_csv(run / "gradients.csv"))
    assert set(layer_rows.values()) == {1}
    assert {s for s, _ in layer_rows} == set(steps)
    assert _alerts(run) == []  # the NaN step belonged to the discarded part of epoch 2


# ------------------------------------------------------------------ Ultralytics' NaN recovery
def test_nan_recovery_reloads_the_plugin_state_with_last_pt(tiny_data, tmp_path):
    seen = {"recovered": False, "steps_at_end_of_epoch_1": None}

    def poison_loss_once(trainer):
        if trainer.epoch == 0:
            seen["steps_at_end_of_epoch_1"] = len(trainer.train_loader)
        if trainer.epoch == 1 and not seen["recovered"]:
            seen["recovered"] = True
            trainer.loss = torch.tensor(float("nan"))  # what a diverged batch leaves: Ultralytics reloads last.pt

    with log_lines() as lines:
        model, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip", "monitor.flush_every": 1},
                                callbacks=[("on_train_epoch_end", poison_loss_once)], epochs=3)
    assert seen["recovered"]
    (said,) = [line for line in lines if "after a non-finite loss" in line]
    assert "step counter, clip history and alert history were reloaded with it" in said
    plugin = model.gradkit
    per_epoch = seen["steps_at_end_of_epoch_1"]
    # 3 epochs of steps survive (the poisoned epoch was redone), not 4
    assert plugin.step == 3 * per_epoch == model.trainer.ema.updates
    assert len(plugin.clipper.history) == plugin.step  # clip history reloaded too
    steps = read_csv(run / "gradient_steps.csv")
    assert [int(r["step"]) for r in steps] == list(range(1, plugin.step + 1))
    assert [int(r["epoch"]) for r in steps] == [e for e in (1, 2, 3) for _ in range(per_epoch)]
    layer_rows = Counter((int(r["step"]), r["layer"]) for r in read_csv(run / "gradients.csv"))
    assert set(layer_rows.values()) == {1}


class _Interrupt(Exception):
    pass


def test_state_older_than_last_pt_is_said_on_resume(tiny_data, tmp_path):
    """A crash between the two saves (last.pt written, last.gradkit.pt not yet) is made explicit."""
    import shutil

    import gradkit

    older = tmp_path / "epoch1.gradkit.pt"

    def keep_epoch_1_state(trainer):
        if trainer.epoch == 0:
            shutil.copy(trainer.wdir / "last.gradkit.pt", older)

    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, callbacks=[("on_model_save", keep_epoch_1_state),
                                                    ("on_train_epoch_start", crash)], epochs=3)
    run = tmp_path / "run"
    shutil.copy(older, run / "weights" / "last.gradkit.pt")  # as if the second save never happened
    with log_lines() as lines:
        model = gradkit.resume(run / "weights" / "last.pt")
    assert any("the plugin state is from epoch 1 but last.pt from epoch 2" in line for line in lines)
    rows = read_csv(run / "gradient_steps.csv")
    assert [int(r["step"]) for r in rows] == list(range(1, model.gradkit.step + 1))  # still every step number once
    # last.pt holds epoch 2, so the resume trains epoch 3 only: epoch 2's records are kept, not dropped as "done
    # again", and the step count goes on from last.pt's (it went on from the older state's: one epoch short)
    per_epoch = sum(int(r["epoch"]) == 1 for r in rows)
    assert [int(r["epoch"]) for r in rows] == [e for e in (1, 2, 3) for _ in range(per_epoch)]
    assert model.gradkit.step == model.trainer.ema.updates == 3 * per_epoch


def test_a_resume_from_a_save_period_checkpoint_keeps_the_run_s_settings_and_history(tiny_data, tmp_path):
    """``save_period=1`` writes ``epochN.pt`` beside last.pt, and Ultralytics resumes from any of them: the plugin's
    state is saved beside each, so such a resume continues the run's own settings and step count (it went on with
    the default preset, stock clipping, and wrote that into the run's gradkit.yaml)."""
    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    overrides = {"clip.mode": "autoclip", "monitor.every": 2}
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides=overrides, callbacks=[("on_train_epoch_start", crash)], epochs=3,
                   save_period=1)
    weights = tmp_path / "run" / "weights"
    first = torch.load(weights / "epoch0.gradkit.pt", weights_only=True)  # what the run had after its first epoch
    assert first["epoch"] == 0 and first["step"] > 0
    model = YOLO(str(weights / "epoch0.pt"))
    gradkit.attach(model, None)
    with log_lines() as lines:
        model.train(resume=True)
    assert not [line for line in lines if "resuming without" in line or "afresh" in line], lines
    cfg = model.gradkit.cfg
    assert (cfg.clip.mode, cfg.monitor.every) == ("autoclip", 2)
    assert yaml.safe_load((tmp_path / "run" / "gradkit.yaml").read_text())["clip"]["mode"] == "autoclip"
    steps = [int(r["step"]) for r in read_csv(tmp_path / "run" / "gradient_steps.csv")]
    assert steps == list(range(2, model.gradkit.step + 1, 2))  # every second step (monitor.every), each once
    assert model.gradkit.step == 3 * first["step"]
    from gradkit.report.build import training_section

    # Ultralytics appended epoch 2 again to results.csv: the report keeps the later try, and says so
    assert [int(r["epoch"]) for r in read_csv(tmp_path / "run" / "results.csv")] == [1, 2, 2, 3]
    training = training_section(tmp_path / "run")
    assert (training["epochs"], training["epochs_left_out"]) == ([1, 2, 3], [2])


def test_a_resume_without_a_state_file_keeps_the_settings_the_run_folder_records(tiny_data, tmp_path):
    """A checkpoint without the plugin's state beside it (deleted, or an epochN.pt from an older release): the run's
    own settings are still in its folder's gradkit.yaml, and the resume takes them, as Ultralytics takes its args,
    rather than the attached default (which it then wrote over the run's record)."""
    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip", "monitor.every": 2},
                   callbacks=[("on_train_epoch_start", crash)], epochs=2)
    weights = tmp_path / "run" / "weights"
    (weights / "last.gradkit.pt").unlink()
    model = YOLO(str(weights / "last.pt"))
    gradkit.attach(model, None)
    with log_lines() as lines:
        model.train(resume=True)
    said = [line for line in lines if "gradkit.yaml" in line and "resuming with" in line]
    assert len(said) == 1 and "\n" not in said[0], lines
    assert (model.gradkit.cfg.clip.mode, model.gradkit.cfg.monitor.every) == ("autoclip", 2)
    assert yaml.safe_load((tmp_path / "run" / "gradkit.yaml").read_text())["clip"]["mode"] == "autoclip"


def test_a_resume_does_not_take_settings_from_a_gradkit_yaml_written_after_its_checkpoint(tiny_data, tmp_path):
    """Without a state file the run folder's gradkit.yaml says how the run started, unless it was written after the
    checkpoint: then another run used the folder since, and its settings are not this run's."""
    import os

    from ultralytics import YOLO

    import gradkit
    from gradkit.config import load_config

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip"}, epochs=2,
                   callbacks=[("on_train_epoch_start", crash)])
    weights, record = tmp_path / "run" / "weights", tmp_path / "run" / "gradkit.yaml"
    (weights / "last.gradkit.pt").unlink()
    later = (weights / "last.pt").stat().st_mtime + 60
    os.utime(record, (later, later))  # as if a later run in the folder had written it
    model = YOLO(str(weights / "last.pt"))
    gradkit.attach(model, None)
    with log_lines() as lines:
        model.train(resume=True)
    assert any("gradkit.yaml was written after last.pt" in line for line in lines), lines
    assert model.gradkit.cfg.clip.mode == load_config(None).clip.mode != "autoclip"


def test_a_resumed_run_reports_the_arguments_it_started_with_and_says_it_was_resumed(tiny_data, tmp_path):
    """On resume Ultralytics writes its checkpoint's arguments into args.yaml: model= the checkpoint, resume= its
    path, and optimizer=auto's choice (optimizer, lr0, warmup_bias_lr). The report took them for the run's
    settings, so a comparison with an unbroken run of the same command listed five differences that are none,
    and the settings lost "optimizer=auto chose it". Oracle: args.yaml as the run started (read before the
    resume); an argument the user changed on resume (patience: a resume may change it) keeps the resumed value, one
    Ultralytics resolved (batch=-1, saved in the checkpoint as the batch it chose) is as typed."""
    from ultralytics import YOLO

    import gradkit
    from gradkit.report.build import RUN_FOLDER_ARGS, training_section

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, callbacks=[("on_train_epoch_start", crash)], patience=50, batch=-1)
    run = tmp_path / "run"
    started = yaml.safe_load((run / "args.yaml").read_text())
    assert started["optimizer"] == "auto" and started["batch"] == -1
    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None, {"report.enabled": False, "monitor.plot": False})
    model.train(resume=True, patience=20)
    rewritten = yaml.safe_load((run / "args.yaml").read_text())
    assert rewritten["optimizer"] != "auto" and rewritten["model"].endswith("last.pt")  # what the report took
    assert rewritten["batch"] != -1
    training = training_section(run)
    expected = {k: v for k, v in started.items() if k not in RUN_FOLDER_ARGS}
    assert training["train_args"] == {**expected, "patience": 20}
    assert training["resumed"] == [{"epoch": 2, "checkpoint": "last.pt", "changed": {"patience": 20}}]
    from gradkit.report.render import _settings

    r = {"training": training, "model": "m.pt", "data": "d.yaml", "split": "val", "images": 3,
         "defect_free_images": 1, "instances": 2, "versions": {}}
    shown = _settings(r)
    assert "(optimizer=auto)" in shown and "at epoch 2 from last.pt (patience=20)" in shown
