"""Rollback in the real trainer: a planted divergence, the restored state, the lr factor, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TRAIN, read_csv, train_tiny

pytestmark = pytest.mark.e2e

NAN_STEPS = {6, 7, 8}  # epoch 2 (5 steps per epoch): patience 3 rolls back at step 8, two steps before its end
EVERY = 3


class _Interrupt(Exception):
    pass


def _plugin(trainer):
    from gradkit.integrations.ultralytics import GradkitCallback

    return next(fn.__self__ for fn in trainer.callbacks["on_pretrain_routine_end"]
                if isinstance(getattr(fn, "__self__", None), GradkitCallback))


def _copy_state(trainer) -> dict:
    return {"model": {k: v.clone() for k, v in trainer.model.state_dict().items()},
            "ema": {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()},
            "updates": trainer.ema.updates,
            "opt": {(g, i, k): v.clone() for g, group in enumerate(trainer.optimizer.param_groups)
                    for i, p in enumerate(group["params"])
                    for k, v in trainer.optimizer.state.get(p, {}).items() if isinstance(v, torch.Tensor)}}


def _recorders(record: dict):
    """Copies of the whole training state after every step (the oracle), and the lr each step used."""

    def arm(trainer):
        plugin = _plugin(trainer)

        def nan_hook(g):
            return g * float("nan") if plugin.step + 1 in NAN_STEPS and not record.get("resumed") else g

        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == "10":
                p.register_hook(nan_hook)
        trainer.optimizer.register_step_pre_hook(
            lambda opt, a, k: record["lr_used"].__setitem__(plugin.step, opt.param_groups[0]["lr"]))

    def batch_end(trainer):
        plugin = _plugin(trainer)
        record["copies"][plugin.step] = _copy_state(trainer)
        record["copies"].pop(plugin.step - 2 * EVERY - 1, None)  # older than any snapshot can be
        record["lr_schedule"][plugin.step] = trainer.optimizer.param_groups[0]["lr"]
        rolled = [a for a in plugin.log.alerts_jsonl.read_text().splitlines() if '"rollback"' in a]
        if rolled and "restored" not in record:
            alert = json.loads(rolled[0])
            record["restored"] = (alert, _copy_state(trainer), record["copies"][alert["to_step"]])

    return [("on_train_start", arm), ("on_train_batch_end", batch_end)]


def test_planted_divergence_rolls_back_bit_exactly_lowers_lr_and_survives_resume(tiny_data, tmp_path):
    record = {"copies": {}, "lr_used": {}, "lr_schedule": {}}

    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    overrides = {"monitor.on_divergence": "rollback", "monitor.rollback.every": EVERY, "clip.mode": "stock"}
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides=overrides, epochs=4, report=True,
                   callbacks=[*_recorders(record), ("on_train_epoch_start", crash)])
    run = tmp_path / "run"

    # the rollback alert: from the step where the NaN persisted, to a known-good state K..2K-1 steps back
    alert, live, oracle = record["restored"]
    assert alert["kind"] == "rollback" and alert["from_step"] == alert["step"] == max(NAN_STEPS)
    assert EVERY <= alert["from_step"] - alert["to_step"] < 2 * EVERY
    assert alert["lr_factor"] == 0.5 and "3 consecutive" in alert["reason"]
    # weights, BN statistics, EMA, its update count and the optimizer's momentum: bit-exact
    for part in ("model", "ema", "opt"):
        assert live[part].keys() == oracle[part].keys() and live[part]
        for k, v in oracle[part].items():
            assert torch.equal(live[part][k], v), (part, k)
    assert live["updates"] == oracle["updates"]
    assert not torch.equal(live["model"]["model.0.conv.weight"],
                           record["copies"][min(NAN_STEPS) - 1]["model"]["model.0.conv.weight"])  # it did move

    # lr x0.5 for the rest of epoch 2 (steps 9, 10); the schedule itself untouched
    ratios = {s: record["lr_used"][s] / record["lr_schedule"][s] for s in record["lr_used"]}
    assert ratios[9] == ratios[10] == pytest.approx(0.5)
    assert all(ratios[s] == 1.0 for s in range(1, 6))
    results = read_csv(run / "results.csv")
    assert [float(r["grad/rollbacks"]) for r in results] == [0, 1]
    assert [float(r["grad/lr_factor"]) for r in results] == [1.0, 0.5]

    # resume: the factor (epoch 2 had a rollback, so epoch 3 keeps it) and the attempt count carry over
    from ultralytics import YOLO

    import gradkit

    record["resumed"] = True
    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None)
    for event, fn in _recorders(record):
        model.add_callback(event, fn)
    model.train(resume=True)
    assert model.gradkit.guard.attempts == 1
    ratios = {s: record["lr_used"][s] / record["lr_schedule"][s] for s in record["lr_used"]}
    assert all(ratios[s] == pytest.approx(0.5) for s in range(11, 16))  # epoch 3: still lowered
    assert all(ratios[s] == 1.0 for s in range(16, 21))  # epoch 3 went without rollback: lifted
    results = read_csv(run / "results.csv")
    assert [float(r["grad/rollbacks"]) for r in results] == [0, 1, 0, 0]
    assert [float(r["grad/lr_factor"]) for r in results] == [1.0, 0.5, 0.5, 1.0]
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["alert_counts"]["rollback"] == 1


def test_divergence_after_the_last_attempt_stops_training(tiny_data, tmp_path):
    def always_nan(trainer):
        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == "6":
                p.register_hook(lambda g: g * float("nan") if _plugin(trainer).step >= 3 else g)

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", always_nan)], epochs=5,
                            overrides={"monitor.on_divergence": "rollback", "monitor.rollback.every": 2,
                                       "monitor.rollback.max_attempts": 2})
    lines = (run / "gradient_alerts.jsonl").read_text().splitlines()
    alerts = [json.loads(line) for line in lines if '"rollback"' in line]
    # NaN from step 4 on: patience 3 at 6, again at 9; at 12 the last good state is restored and training stops
    assert [a["from_step"] for a in alerts] == [6, 9, 12] and "stopped training" in alerts[-1]["message"]
    assert model.gradkit.guard.attempts == 2
    assert model.gradkit.step == 12  # the third divergence stops the run (at the end of that epoch)
    assert len(read_csv(run / "results.csv")) == 3
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())


def test_planted_loss_spike_with_exploding_norm_rolls_back(tiny_data, tmp_path):
    """The loss of one batch x1000 (so its gradients too), after 12 healthy steps of history."""
    spike_step = 13

    def plant(trainer):
        plugin, model = _plugin(trainer), trainer.model
        original = model.loss

        def loss(batch, preds=None):
            total, items = original(batch, preds)
            return (total * 1000, items) if plugin.step + 1 == spike_step else (total, items)

        model.loss = loss

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", plant)], epochs=3,
                            overrides={"monitor.on_divergence": "rollback", "monitor.rollback.every": 2,
                                       "clip.mode": "none"})
    lines = (run / "gradient_alerts.jsonl").read_text().splitlines()
    alerts = [json.loads(line) for line in lines if '"rollback"' in line]
    assert len(alerts) == 1 and alerts[0]["from_step"] == spike_step, alerts
    assert "total norm" in alerts[0]["reason"] and "loss" in alerts[0]["reason"]
    steps = read_csv(run / "gradient_steps.csv")
    norms = [float(s["total_norm"]) for s in steps]
    assert norms[spike_step - 1] > 100 * np.median(norms[: spike_step - 1])  # the plant did what it says
    assert model.gradkit.guard.attempts == 1


def test_divergence_after_the_last_attempt_stops_on_the_last_good_state(tiny_data, tmp_path):
    """Two planted loss spikes (x1000, unclipped), one rollback allowed: the second restores the state
    (model and EMA) recorded after the step its alert names, K to 2K steps back, and stops training."""
    spikes, every = {12, 17}, 2
    states: dict[int, tuple[dict, dict]] = {}

    def plant(trainer):
        plugin, model = _plugin(trainer), trainer.model
        original = model.loss

        def loss(batch, preds=None):
            total, items = original(batch, preds)
            return (total * 1000, items) if plugin.step + 1 in spikes else (total, items)

        model.loss = loss

    def record(trainer):
        step = _plugin(trainer).step
        if step not in spikes:  # after a spiked step the model is the restored one: not an oracle
            states[step] = ({k: v.clone() for k, v in trainer.model.state_dict().items()},
                            {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()})

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", plant), ("on_train_batch_end", record)],
                            epochs=5, overrides={"monitor.on_divergence": "rollback", "monitor.rollback.every": every,
                                                 "monitor.rollback.max_attempts": 1, "clip.mode": "none"})
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines()
              if '"rollback"' in line]
    assert [a["from_step"] for a in alerts] == [12, 17] and "stopped training" in alerts[1]["message"]
    good = alerts[1]["to_step"]
    assert 17 - 2 * every <= good <= 17 - every
    assert model.gradkit.step == 17 and len(read_csv(run / "results.csv")) == 4  # stopped in epoch 4
    model_state, ema_state = states[good]
    for live, expected in ((model.trainer.model.state_dict(), model_state), (model.trainer.ema.ema.state_dict(),
                                                                               ema_state)):
        assert all(torch.equal(live[k], v) for k, v in expected.items())
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())


class _PlantedFitness:
    """The trainer's real validator, whose per-epoch fitness is replaced by planted values in turn."""

    def __init__(self, real, values):
        self.real, self.values, self.calls = real, list(values), 0

    def __call__(self, trainer=None, model=None):
        metrics = self.real(trainer, model)
        self.calls += trainer is not None
        if trainer is not None and self.values:  # final_eval validates best.pt without a trainer: left alone
            metrics["fitness"] = self.values.pop(0)
        return metrics

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_collapsed_validation_returns_to_the_best_validated_state_and_keeps_the_lr_lower(tiny_data, tmp_path):
    """A fine-tune whose validations read (planted) 0.3 for the starting weights (validated after epoch 1),
    then 0.02, 0.35, 0.01 after epochs 1-3: the first collapse restores the starting weights (best.pt too,
    as Ultralytics' best was epoch 1's 0.02), the second the state after epoch 2, which last.pt then
    holds; the lr stays x0.5 from the first rollback on."""
    from ultralytics import YOLO

    import gradkit

    _, first = train_tiny(tiny_data, tmp_path / "warm", epochs=1)
    record = {"lr_used": {}, "lr_schedule": {}, "copies": {}}

    def arm(trainer):
        trainer.validator = _PlantedFitness(trainer.validator, [0.02, 0.3, 0.35, 0.01])

    def start(trainer):
        plugin = _plugin(trainer)
        record["copies"]["start"] = _copy_state(trainer)
        trainer.optimizer.register_step_pre_hook(
            lambda opt, a, k: record["lr_used"].__setitem__(plugin.step, opt.param_groups[0]["lr"]))

    def batch_end(trainer):
        record["lr_schedule"][_plugin(trainer).step] = trainer.optimizer.param_groups[0]["lr"]

    def fit_epoch_end(trainer):  # after gradkit's: the state it kept or restored
        if trainer.epoch < 3 and f"after {trainer.epoch + 1}" not in record["copies"]:
            record["copies"][f"after {trainer.epoch + 1}"] = _copy_state(trainer)
        if trainer.epoch == 0:  # the start beat Ultralytics' best (epoch 1's 0.02): best.pt is the start now
            record["best.pt after 1"] = torch.load(trainer.best, weights_only=False)["ema"].state_dict()
            record["fitness after 1"] = (trainer.fitness, trainer.best_fitness)

    model = YOLO(str(first / "weights" / "last.pt"))
    gradkit.attach(model, "default", {"monitor.on_divergence": "rollback", "clip.mode": "stock",
                                      "report.enabled": False})
    for event, fn in [("on_pretrain_routine_end", arm), ("on_train_start", start), ("on_train_batch_end", batch_end),
                      ("on_fit_epoch_end", fit_epoch_end)]:
        model.add_callback(event, fn)
    model.train(data=str(tiny_data), project=str(tmp_path), name="tune", exist_ok=True,
                **{**TINY_TRAIN, "epochs": 3, "val": True})
    run = Path(model.trainer.save_dir)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines()
              if '"rollback"' in line]
    steps = model.gradkit.step
    assert len(alerts) == 2 and [a["to_step"] for a in alerts] == [0, 2 * steps // 3], alerts
    assert "0.02 < 0.2x the best 0.3" in alerts[0]["reason"] and "starting weights" in alerts[0]["message"]
    assert "0.01 < 0.2x the best 0.35" in alerts[1]["reason"] and "after epoch 2" in alerts[1]["message"]
    _assert_same(record["copies"]["after 1"], record["copies"]["start"])  # optimizer state emptied too
    _assert_same(record["copies"]["after 3"], record["copies"]["after 2"])
    ratios = [record["lr_used"][s] / record["lr_schedule"][s] for s in sorted(record["lr_used"])]
    per_epoch = steps // 3
    assert ratios[:per_epoch] == pytest.approx([1.0] * per_epoch)
    assert ratios[per_epoch:] == pytest.approx([0.5] * (2 * per_epoch))  # not lifted after the quiet epoch 2
    rows = read_csv(run / "results.csv")
    assert [float(r["grad/rollbacks"]) for r in rows] == [0, 1, 0]  # a rollback after epoch 1 shows in row 2
    assert [float(r["grad/lr_factor"]) for r in rows] == [1.0, 0.5, 0.5]
    assert float(rows[1]["grad/alerts"]) >= 1  # the rollback alert after epoch 1, in row 2 with its count
    kept = torch.load(run / "weights" / "last.pt", weights_only=False)["model"].state_dict()  # stripped: the EMA
    for k, v in record["copies"]["after 2"]["ema"].items():
        assert torch.equal(kept[k], v.to(kept[k].dtype)), k  # last.pt: the restored state, not the collapsed one
    assert record["fitness after 1"] == (0.3, 0.3)  # the trainer describes the restored start
    for k, v in record["copies"]["start"]["ema"].items():
        assert torch.equal(record["best.pt after 1"][k], v.to(record["best.pt after 1"][k].dtype)), k


def _assert_same(a: dict, b: dict) -> None:
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert a["updates"] == b["updates"]
    assert a["opt"].keys() == b["opt"].keys() and all(torch.equal(a["opt"][k], b["opt"][k]) for k in a["opt"])


def test_keeping_and_validating_the_starting_weights_does_not_change_training(tiny_data, tmp_path):
    """A fine-tune with rollback on, where nothing fires, ends with the same weights as one without:
    the extra validation of the starting weights after epoch 1 leaves the training state and the
    random number generators (the loaders draw their seeds from them) as they were."""
    from ultralytics import YOLO

    import gradkit

    _, first = train_tiny(tiny_data, tmp_path / "warm", epochs=1)
    finals, validations = [], []
    for name, on_divergence in (("plain", "stop"), ("guarded", "rollback")):
        model = YOLO(str(first / "weights" / "last.pt"))
        gradkit.attach(model, "default", {"monitor.on_divergence": on_divergence, "report.enabled": False})
        wrapped = []
        model.add_callback("on_pretrain_routine_end", lambda t, w=wrapped: w.append(
            setattr(t, "validator", _PlantedFitness(t.validator, [])) or t.validator))
        model.train(data=str(tiny_data), project=str(tmp_path), name=name, exist_ok=True,
                    **{**TINY_TRAIN, "epochs": 2, "val": True, "deterministic": True})
        finals.append({k: v.clone() for k, v in model.trainer.model.state_dict().items()})
        validations.append(wrapped[0].calls)
    assert validations == [2, 3]  # one per epoch, and the guarded run's validation of its starting weights
    for k in finals[0]:
        assert torch.equal(finals[0][k], finals[1][k]), k


def test_collapse_after_the_last_attempt_restores_the_best_state_and_stops(tiny_data, tmp_path):
    """One rollback allowed; validations read (planted) 0.02 after epoch 1 against a start of 0.3, then
    0.01: the second collapse restores the start again, writes it to last.pt and stops after epoch 2."""
    from ultralytics import YOLO

    import gradkit

    _, first = train_tiny(tiny_data, tmp_path / "warm", epochs=1)
    copies = {}
    model = YOLO(str(first / "weights" / "last.pt"))
    gradkit.attach(model, "default", {"monitor.on_divergence": "rollback", "monitor.rollback.max_attempts": 1,
                                      "report.enabled": False})
    model.add_callback("on_pretrain_routine_end",
                       lambda t: setattr(t, "validator", _PlantedFitness(t.validator, [0.02, 0.3, 0.01])))
    model.add_callback("on_train_start", lambda t: copies.setdefault("start", _copy_state(t)))
    model.train(data=str(tiny_data), project=str(tmp_path), name="tune", exist_ok=True,
                **{**TINY_TRAIN, "epochs": 4, "val": True})
    run = Path(model.trainer.save_dir)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines()
              if '"rollback"' in line]
    assert [a["to_step"] for a in alerts] == [0, 0] and "stopped training" in alerts[1]["message"], alerts
    assert len(read_csv(run / "results.csv")) == 2 and model.gradkit.guard.attempts == 1
    kept = torch.load(run / "weights" / "last.pt", weights_only=False)["model"].state_dict()
    for k, v in copies["start"]["ema"].items():
        assert torch.equal(kept[k], v.to(kept[k].dtype)), k
