"""What one training image costs on this machine (``gradkit plan budget=``'s estimate)."""

from __future__ import annotations

import math

import pytest
import torch

from gradkit.integrations.ultralytics import throughput as T


def test_the_timed_cost_is_scaled_by_pixels_with_ultralytics_threads(monkeypatch):
    from ultralytics.utils import NUM_THREADS

    seen = []

    def timed(models, nc, batch=16, memory_format="contiguous"):
        seen.append((list(models), nc, torch.get_num_threads()))
        assert memory_format == "contiguous"  # the layout the plan trains in
        return [0.01, 0.004][:len(models)]

    monkeypatch.setattr(T, "calibration_seconds_per_image_of", timed)
    monkeypatch.setattr(T, "calibration_val_seconds_per_image", lambda *a: pytest.fail("validation timed"))
    monkeypatch.setattr(T, "_CALIBRATED", {})
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    seconds = T.training_seconds_per_image("yolo26n.yaml", 4 * T.CALIBRATION_PX, 3)
    assert seconds == pytest.approx(0.01 * 16 * T.DATA_OVERHEAD)       # 4x the side: 16x the pixels
    # timed as Ultralytics trains on the CPU, together with the half width the plan compares it with
    assert seen == [(["yolo26n.yaml", "yolo26n-half.yaml"], 3, NUM_THREADS)]
    assert torch.get_num_threads() == before                            # and the caller's threads given back
    half = T.training_seconds_per_image("yolo26n.yaml", T.CALIBRATION_PX // 2, 3)
    assert half == pytest.approx(0.01 / 4 * T.DATA_OVERHEAD) and len(seen) == 1   # another size: not timed again
    narrow = T.training_seconds_per_image("yolo26n-half.yaml", T.CALIBRATION_PX, 3)
    assert narrow == pytest.approx(0.004 * T.DATA_OVERHEAD) and len(seen) == 1    # timed with yolo26n already
    T.training_seconds_per_image("yolo26n.yaml", 256, 3, threads=2)      # the demo trains on every core
    assert seen[-1] == (["yolo26n.yaml", "yolo26n-half.yaml"], 3, 2) and torch.get_num_threads() == before
    T.training_seconds_per_image("yolo26s.yaml", 256, 3)                 # no variant of it: timed alone
    assert seen[-1][0] == ["yolo26s.yaml"]


def test_a_model_and_its_variant_are_timed_step_by_step_in_turn(monkeypatch):
    # the machine slows by half a step's time with every step: timed one model after the other, the second would
    # read slower for the drift alone; in turn, each round's two steps see nearly the same machine
    calls = []

    def fake_step(model, data, channels_last=False):
        width = model.yaml["scales"]["n"][1]
        cost = 2.0 if width == 0.25 else 1.0                          # yolo26n's step costs twice the half width's

        def step():
            calls.append(width)
            return cost * (1 + 0.5 * len(calls))
        return step

    monkeypatch.setattr(T, "timed_training_step", fake_step)
    full, half = T.calibration_seconds_per_image_of(["yolo26n.yaml", "yolo26n-half.yaml"], 3, 4)
    assert calls == [0.25, 0.125] * (1 + T.TIMED_STEPS)                # a warm-up round, then TIMED_STEPS rounds
    # by hand: yolo26n's fastest timed step is call 3 (2 x 2.5), the half width's call 4 (1 x 3.0)
    assert (full, half) == (pytest.approx(5.0 / 4), pytest.approx(3.0 / 4))
    calls.clear()
    one_after_other = [T.calibration_seconds_per_image(m, 3, 4) for m in ("yolo26n.yaml", "yolo26n-half.yaml")]
    # by hand: calls 2 (2 x 2.0) and 6 (1 x 4.0): the true ratio of 2 reads 1.0 there, 5/3 in turn
    assert one_after_other[0] / one_after_other[1] == pytest.approx(1.0) and full / half == pytest.approx(5 / 3)


def test_a_cuda_machine_is_not_estimated_from_its_cpu(monkeypatch):
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: True)
    assert T.training_seconds_per_image("yolo26n.yaml", 256, 3) is None


@pytest.mark.parametrize("timer", ["calibration_seconds_per_image", "calibration_val_seconds_per_image"])
def test_the_real_passes_are_timed_without_moving_the_callers_random_state(timer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = torch.get_rng_state()
    seconds = getattr(T, timer)("yolo26n.yaml", nc=3, batch=2)
    assert math.isfinite(seconds) and 0 < seconds < 60
    assert torch.equal(torch.get_rng_state(), state)
    assert not any(tmp_path.iterdir())                                  # nothing downloaded or written


def test_validation_is_timed_at_twice_the_training_batch_and_scaled_by_pixels(monkeypatch):
    seen = []

    def timed(model_yaml, nc, batch=32):
        seen.append((model_yaml, nc, batch))
        return 0.004

    monkeypatch.setattr(T, "calibration_val_seconds_per_image", timed)
    monkeypatch.setattr(T, "calibration_seconds_per_image", lambda *a: pytest.fail("training timed"))
    monkeypatch.setattr(T, "_CALIBRATED", {})
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: False)
    seconds = T.validation_seconds_per_image("yolo26n.yaml", 2 * T.CALIBRATION_PX, 3, batch=16)
    assert seconds == pytest.approx(0.004 * 4 * T.VAL_OVERHEAD) and seen == [("yolo26n.yaml", 3, 32)]
    T.validation_seconds_per_image("yolo26n.yaml", 512, 3, batch=16)
    assert len(seen) == 1                                               # timed once per model and batch
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: True)
    assert T.validation_seconds_per_image("yolo26n.yaml", 256, 3) is None



def test_validation_is_timed_as_the_validator_runs_the_model(monkeypatch):
    """The validator's pass: evaluation mode, no gradients; the training step: training mode, gradients."""
    from ultralytics.nn.tasks import DetectionModel

    seen = []
    loss = DetectionModel.loss

    def spy(self, batch, preds=None):
        seen.append((self.training, torch.is_grad_enabled(), preds is not None, len(batch["img"])))
        return loss(self, batch, preds)

    monkeypatch.setattr(DetectionModel, "loss", spy)
    T.calibration_val_seconds_per_image("yolo26n.yaml", nc=3, batch=4)
    assert set(seen) == {(False, False, True, 4)}                       # the model's own predictions, scored
    seen.clear()
    T.calibration_seconds_per_image("yolo26n.yaml", nc=3, batch=2)
    assert set(seen) == {(True, True, False, 2)}


def test_the_training_timer_counts_the_layout_the_run_trains_in(monkeypatch):
    # speed.memory_format: fastest keeps the faster layout, so a budget for such a run counts the faster step
    layouts = []

    def fake_step(model, data, channels_last=False):
        layouts.append(channels_last)
        return lambda: 0.8 if channels_last else 1.6  # NHWC twice as fast here

    monkeypatch.setattr(T, "timed_training_step", fake_step)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4, "fastest") == pytest.approx(0.8 / 4)
    assert layouts == [False, True]
    monkeypatch.setattr(T, "timed_training_step",
                        lambda m, d, channels_last=False: lambda: 2.0 if channels_last else 1.0)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4, "fastest") == pytest.approx(1.0 / 4)  # NCHW faster
    layouts.clear()
    monkeypatch.setattr(T, "timed_training_step", fake_step)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4) == pytest.approx(1.6 / 4)
    assert layouts == [False]  # by default (and in the plan) a run keeps NCHW and is estimated in NCHW
