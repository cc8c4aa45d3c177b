"""Non-finite steps end to end: AMP overflow through a real GradScaler, the warn and stop policies,
and a run with the monitor switched off. Faults are planted, never mocked."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import read_csv, train_tiny

pytestmark = pytest.mark.e2e

OVERFLOW_SCALE = 3.0e38  # near float32's maximum: the scaled gradients overflow to inf
BACKOFF = 2.0**-100  # one backoff brings the scale back to where gradients are finite again


def _plugin(trainer):
    from gradkit.integrations.ultralytics import GradkitCallback

    (plugin,) = {fn.__self__ for fn in trainer.callbacks["on_pretrain_routine_end"]
                 if isinstance(getattr(fn, "__self__", None), GradkitCallback)}
    return plugin


def _alerts(run):
    path = run / "gradient_alerts.jsonl"
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()] if path.exists() else []


def _skipped_steps(run) -> list[int]:
    return [int(r["step"]) for r in read_csv(run / "gradient_steps.csv") if int(r["skipped"])]


def _overflow_at(steps: set[int], seen: dict):
    """An enabled CPU GradScaler whose loss scale is pushed to overflow before the given steps."""

    def install(trainer):
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, backoff_factor=BACKOFF)

    def before(trainer):
        if _plugin(trainer).step + 1 in steps:
            trainer.scaler.update(new_scale=OVERFLOW_SCALE)  # GradScaler's public way to set the scale

    def after(trainer):
        seen.setdefault("scale", {})[_plugin(trainer).step] = trainer.scaler.get_scale()

    return [("on_train_start", install), ("on_train_batch_start", before), ("on_train_batch_end", after)]


def test_single_amp_overflow_is_skipped_without_alert_and_lowers_the_scale(tiny_data, tmp_path):
    seen: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, callbacks=_overflow_at({4}, seen),
                            overrides={"report.enabled": False})
    assert _skipped_steps(run) == [4]
    assert _alerts(run) == []
    assert seen["scale"][4] == pytest.approx(OVERFLOW_SCALE * BACKOFF, rel=1e-6)  # the skip path ran update()
    assert seen["scale"][3] == 2.0**10 and seen["scale"][5] == seen["scale"][4]
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
    assert model.gradkit.step > 5


def _scaler(init_scale: float, seen: dict):
    """An enabled CPU GradScaler halving its scale at each overflow, as CUDA's does (init 2**16 there)."""

    def install(trainer):
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, backoff_factor=0.5, growth_interval=10**6)

    def before(trainer):
        seen.setdefault("scale_before", {})[_plugin(trainer).step + 1] = trainer.scaler.get_scale()

    return [("on_train_start", install), ("on_train_batch_start", before)]


@pytest.mark.parametrize("overrides", [{"monitor.on_nonfinite": "skip"}, {"monitor.on_nonfinite": "stop"},
                                       {"monitor.on_nonfinite": "warn"}, {"monitor.on_divergence": "rollback"}],
                         ids=["skip", "stop", "warn", "rollback"])
def test_scaler_calibration_overflows_in_a_row_are_neither_alerted_nor_stop_training(tiny_data, tmp_path, overrides):
    """On an H200, fp16 yolo26n overflowed on its first 6 steps in a row while CUDA's GradScaler lowered
    its scale from 2**16 to 2**10 (benchmarks/amp_check.py): a healthy run. The same streak here: a
    scale so high that the first steps' scaled gradients overflow float32."""
    seen: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, callbacks=_scaler(2.0**127, seen),
                            overrides={"report.enabled": False, **overrides})
    scales = [seen["scale_before"][s] for s in sorted(seen["scale_before"])]
    # the scale halves after each overflow: the first step that kept its predecessor's scale ends the streak
    streak = next(i for i in range(1, len(scales)) if scales[i] == scales[i - 1]) - 1
    assert streak >= 3 and scales[:streak] == [2.0**127 / 2**i for i in range(streak)]
    # warn applies the step through GradScaler.step, which itself skips an overflowed one
    assert _skipped_steps(run) == ([] if overrides.get("monitor.on_nonfinite") == "warn"
                                   else list(range(1, streak + 1)))
    assert _alerts(run) == []  # no nonfinite, no rollback
    steps = read_csv(run / "gradient_steps.csv")
    assert model.gradkit.step == len(steps) > streak + 2  # trained on past the streak, both epochs
    assert len(read_csv(run / "results.csv")) == 2
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())


def _nan_from(layer: str, onset: int):
    """NaN gradients in one layer at every step from ``onset`` on: no loss scale makes them finite."""

    def arm(trainer):
        plugin = _plugin(trainer)
        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == layer:
                p.register_hook(lambda g: g * float("nan") if plugin.step + 1 >= onset else g)

    return [("on_train_start", arm)]


def test_nonfinite_gradients_persisting_down_to_loss_scale_one_are_alerted(tiny_data, tmp_path):
    """Scale 8 at the onset (step 4): 8, 4, 2 are the scaler's to try; at scale 1 the gradient itself is
    non-finite (DeepSpeed's min_loss_scale convention), so the alert comes at step 4 + log2(8) = 7."""
    seen: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, callbacks=[*_scaler(8.0, seen), *_nan_from("10", 4)],
                            overrides={"report.enabled": False})
    assert [seen["scale_before"][s] for s in (4, 5, 6, 7)] == [8.0, 4.0, 2.0, 1.0]
    assert _skipped_steps(run)[:4] == [4, 5, 6, 7]
    alerts = [a for a in _alerts(run) if a["kind"] == "nonfinite"]
    assert alerts and alerts[0]["step"] == 7 and alerts[0]["layer"] == "10"
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())


def test_a_nonfinite_loss_under_amp_is_alerted_at_its_step(tiny_data, tmp_path):
    """A loss that is NaN before any scaling is the forward pass's fault, not an overflow."""
    seen: dict = {}

    def arm(trainer):
        plugin = _plugin(trainer)
        trainer.model.model[10].register_forward_hook(
            lambda m, i, out: out * float("nan") if plugin.step + 1 == 2 and m.training else out)

    _, run = train_tiny(tiny_data, tmp_path, callbacks=[*_scaler(2.0**10, seen), ("on_train_start", arm)],
                        overrides={"report.enabled": False})
    assert _skipped_steps(run) == [2]
    alerts = [a for a in _alerts(run) if a["kind"] == "nonfinite"]
    assert alerts and alerts[0]["step"] == 2


def test_a_nonfinite_loss_in_an_earlier_micro_batch_is_alerted(tiny_data, tmp_path):
    """nbs = 2 x batch: two micro-batches per optimizer step. The first micro-batch of step 2 (the 3rd
    batch) has a NaN loss, the second a finite one: still a fault, not an overflow."""
    seen: dict = {"batches": 0}

    def count(trainer):
        seen["batches"] += 1

    def arm(trainer):
        trainer.model.model[10].register_forward_hook(
            lambda m, i, out: out * float("nan") if seen["batches"] == 2 and m.training else out)

    _, run = train_tiny(tiny_data, tmp_path, callbacks=[*_scaler(2.0**10, seen), ("on_train_start", arm),
                                                        ("on_train_batch_end", count)],
                        overrides={"report.enabled": False}, nbs=8)
    assert _skipped_steps(run) == [2]
    alerts = [a for a in _alerts(run) if a["kind"] == "nonfinite"]
    assert alerts and alerts[0]["step"] == 2


def _nan_in_layer(layer: str, step: int, snapshots: dict):
    def arm(trainer):
        plugin = _plugin(trainer)
        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == layer:
                p.register_hook(lambda g: g * float("nan") if plugin.step + 1 == step else g)

    def before(trainer):
        if _plugin(trainer).step + 1 == step:
            snapshots["updates"] = trainer.ema.updates
            snapshots["w"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    def after(trainer):
        if _plugin(trainer).step == step and "after" not in snapshots:
            snapshots["updates_after"] = trainer.ema.updates
            snapshots["after"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}

    return [("on_train_start", arm), ("on_train_batch_start", before), ("on_train_batch_end", after)]


def test_warn_applies_the_step_and_keeps_nan_in_its_layer(tiny_data, tmp_path):
    snaps: dict = {}
    _, run = train_tiny(tiny_data, tmp_path, callbacks=_nan_in_layer("10", 3, snaps), epochs=1,
                            overrides={"monitor.on_nonfinite": "warn", "report.enabled": False})
    assert snaps["updates_after"] == snaps["updates"] + 1  # applied (optimizer and EMA), not skipped
    assert 3 not in _skipped_steps(run)
    after, before = snaps["after"], snaps["w"]
    in_layer = [k for k in after if k.split(".")[1] == "10"]
    assert in_layer and all(not torch.isfinite(after[k]).all() for k in in_layer)
    # unlike stock (whose NaN clip coefficient reaches every gradient) the other layers got a finite update
    others = [k for k in after if k.split(".")[1] != "10"]
    assert all(torch.isfinite(after[k]).all() for k in others)
    assert sum(not torch.equal(after[k], before[k]) for k in others) > 100
    first = next(a for a in _alerts(run) if a["kind"] == "nonfinite")
    assert first["step"] == 3 and first["layer"] == "10"


@pytest.mark.parametrize("time_limit", [None, 0.01], ids=["epochs", "time"])
def test_stop_drops_the_step_and_ends_training(tiny_data, tmp_path, time_limit):
    """With time= too: Ultralytics then re-assigns trainer.stop from the clock after every optimizer
    step, which must not cancel gradkit's stop."""
    snaps: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, callbacks=_nan_in_layer("10", 3, snaps), epochs=3, time=time_limit,
                            overrides={"monitor.on_nonfinite": "stop", "report.enabled": False})
    assert model.gradkit.step == 3  # nothing after the non-finite step
    assert snaps["updates_after"] == snaps["updates"]
    for k, v in snaps["w"].items():
        assert torch.equal(v, snaps["after"][k]), k
    assert _skipped_steps(run) == [3]
    assert len(read_csv(run / "results.csv")) == 1  # epoch 1 of 3 closed, then stopped
    assert (run / "weights" / "last.pt").exists()
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())


def test_monitor_disabled_writes_no_gradient_records_but_still_clips_and_skips(tiny_data, tmp_path):
    snaps: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, callbacks=_nan_in_layer("10", 3, snaps), epochs=1, heatmap=True,
                            overrides={"monitor.enabled": False, "report.enabled": False})
    written = {p.name for p in run.iterdir()}
    assert not written & {"gradients.csv", "gradient_steps.csv", "gradient_alerts.jsonl", "gradients.png"}
    assert "gradkit.yaml" in written
    assert snaps["updates_after"] == snaps["updates"]  # the NaN step was still skipped
    for k, v in snaps["w"].items():
        assert torch.equal(v, snaps["after"][k]), k
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
    (row,) = read_csv(run / "results.csv")
    assert float(row["grad/skipped"]) == 1.0
    assert float(row["grad/clip_rate"]) > 0.5  # the stock clip at 10 still acts (norms are in the thousands)
