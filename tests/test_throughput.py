"""What one training image costs on this machine (``gradkit plan budget=``'s estimate)."""

from __future__ import annotations

import math

import pytest
import torch

from gradkit.integrations.ultralytics import throughput as T


def test_the_timed_cost_is_the_line_through_two_sizes_with_ultralytics_threads(monkeypatch):
    from ultralytics.utils import NUM_THREADS

    seen = []
    small, large = T.CALIBRATION_SIZES

    def timed(models, nc, batch=16, memory_format="contiguous", sizes=T.CALIBRATION_SIZES):
        seen.append((list(models), nc, torch.get_num_threads()))
        assert memory_format == "contiguous" and sizes == T.CALIBRATION_SIZES  # the layout the plan trains in
        # yolo26n: 2 ms per image plus 1e-7 s per pixel; the half width: pixels alone, 0.4e-7 s each
        return [(0.002 + 1e-7 * small ** 2, 0.002 + 1e-7 * large ** 2),
                (0.4e-7 * small ** 2, 0.4e-7 * large ** 2)][:len(models)]

    monkeypatch.setattr(T, "calibration_seconds_per_image_of", timed)
    monkeypatch.setattr(T, "calibration_val_seconds_per_image", lambda *a: pytest.fail("validation timed"))
    monkeypatch.setattr(T, "_CALIBRATED", {})
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    seconds = T.training_seconds_per_image("yolo26n.yaml", 600, 3)
    assert seconds == pytest.approx((0.002 + 1e-7 * 600 ** 2) * T.DATA_OVERHEAD)  # the fixed part not scaled
    # timed as Ultralytics trains on the CPU, together with the half width the plan compares it with
    assert seen == [(["yolo26n.yaml", "yolo26n-half.yaml"], 3, NUM_THREADS)]
    assert torch.get_num_threads() == before                            # and the caller's threads given back
    other = T.training_seconds_per_image("yolo26n.yaml", 200, 3)
    assert other == pytest.approx((0.002 + 1e-7 * 200 ** 2) * T.DATA_OVERHEAD) and len(seen) == 1  # not timed again
    narrow = T.training_seconds_per_image("yolo26n-half.yaml", 300, 3)
    assert narrow == pytest.approx(0.4e-7 * 300 ** 2 * T.DATA_OVERHEAD) and len(seen) == 1  # with yolo26n
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
            calls.append((width, data["img"].shape[-1]))
            return cost * (1 + 0.5 * len(calls))
        return step

    monkeypatch.setattr(T, "timed_training_step", fake_step)
    (full,), (half,) = T.calibration_seconds_per_image_of(["yolo26n.yaml", "yolo26n-half.yaml"], 3, 4, sizes=(64,))
    assert calls == [(0.25, 64), (0.125, 64)] * (1 + T.TIMED_STEPS)    # a warm-up round, then TIMED_STEPS rounds
    # by hand: yolo26n's fastest timed step is call 3 (2 x 2.5), the half width's call 4 (1 x 3.0)
    assert (full, half) == (pytest.approx(5.0 / 4), pytest.approx(3.0 / 4))
    calls.clear()
    grouped = T.calibration_seconds_per_image_of(["yolo26n.yaml", "yolo26n-half.yaml"], 3, 4, sizes=(64, 96))
    assert calls == [(0.25, 64), (0.25, 96), (0.125, 64), (0.125, 96)] * (1 + T.TIMED_STEPS)  # every size in turn
    # by hand: the fastest timed call of each is the first timed round's, calls 5-8: 2 x 3.5, 2 x 4.0, 1 x 4.5 and
    # 1 x 5.0, over the batch of 4, grouped per model and size
    assert grouped == [(pytest.approx(1.75), pytest.approx(2.0)), (pytest.approx(1.125), pytest.approx(1.25))]
    calls.clear()
    one_after_other = [T.calibration_seconds_per_image(m, 3, 4, sizes=(64,))[0]
                       for m in ("yolo26n.yaml", "yolo26n-half.yaml")]
    # by hand: calls 2 (2 x 2.0) and 6 (1 x 4.0): the true ratio of 2 reads 1.0 there, 5/3 in turn
    assert one_after_other[0] / one_after_other[1] == pytest.approx(1.0) and full / half == pytest.approx(5 / 3)


def test_a_cuda_machine_is_not_estimated_from_its_cpu(monkeypatch):
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: True)
    assert T.training_seconds_per_image("yolo26n.yaml", 256, 3) is None


@pytest.mark.parametrize("timer", ["calibration_seconds_per_image", "calibration_val_seconds_per_image"])
def test_the_real_passes_are_timed_without_moving_the_callers_random_state(timer, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    state = torch.get_rng_state()
    seconds = getattr(T, timer)("yolo26n.yaml", nc=3, batch=2, sizes=(64, 96))
    assert len(seconds) == 2 and all(math.isfinite(s) and 0 < s < 60 for s in seconds)
    assert torch.equal(torch.get_rng_state(), state)
    assert not any(tmp_path.iterdir())                                  # nothing downloaded or written


def test_validation_is_timed_at_twice_the_training_batch_on_the_line_through_two_sizes(monkeypatch):
    seen = []
    small, large = T.CALIBRATION_SIZES

    def timed(model_yaml, nc, batch=32, sizes=T.CALIBRATION_SIZES):
        seen.append((model_yaml, nc, batch, sizes))
        return 0.001 + 2e-8 * small ** 2, 0.001 + 2e-8 * large ** 2

    monkeypatch.setattr(T, "calibration_val_seconds_per_image", timed)
    monkeypatch.setattr(T, "calibration_seconds_per_image_of", lambda *a: pytest.fail("training timed"))
    monkeypatch.setattr(T, "_CALIBRATED", {})
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: False)
    seconds = T.validation_seconds_per_image("yolo26n.yaml", 256, 3, batch=16)
    assert seconds == pytest.approx((0.001 + 2e-8 * 256 ** 2) * T.VAL_OVERHEAD)
    assert seen == [("yolo26n.yaml", 3, 32, T.CALIBRATION_SIZES)]
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
    T.calibration_val_seconds_per_image("yolo26n.yaml", nc=3, batch=4, sizes=(64,))
    assert set(seen) == {(False, False, True, 4)}                       # the model's own predictions, scored
    seen.clear()
    T.calibration_seconds_per_image("yolo26n.yaml", nc=3, batch=2, sizes=(64,))
    assert set(seen) == {(True, True, False, 2)}


def test_the_training_timer_counts_the_layout_the_run_trains_in(monkeypatch):
    # speed.memory_format: fastest keeps the faster layout, so a budget for such a run counts the faster step
    layouts = []

    def fake_step(model, data, channels_last=False):
        layouts.append(channels_last)
        return lambda: 0.8 if channels_last else 1.6  # NHWC twice as fast here

    monkeypatch.setattr(T, "timed_training_step", fake_step)
    one = (64,)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4, "fastest", one) == (pytest.approx(0.8 / 4),)
    assert layouts == [False, True]
    monkeypatch.setattr(T, "timed_training_step",
                        lambda m, d, channels_last=False: lambda: 2.0 if channels_last else 1.0)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4, "fastest", one) == (pytest.approx(1.0 / 4),)
    layouts.clear()
    monkeypatch.setattr(T, "timed_training_step", fake_step)
    assert T.calibration_seconds_per_image("yolo26n.yaml", 3, 4, sizes=one) == (pytest.approx(1.6 / 4),)
    assert layouts == [False]  # by default (and in the plan) a run keeps NCHW and is estimated in NCHW


def test_a_size_between_or_beyond_the_timed_ones_is_read_off_the_line_through_them():
    # hand-made: 3 ms per image whatever its size plus 50 ns per pixel, timed at 100 and 300 px
    cost = T.PixelCost((100, 300), (0.003 + 5e-8 * 100 ** 2, 0.003 + 5e-8 * 300 ** 2))
    for size in (64, 200, 300, 640):
        assert cost.at(size) == pytest.approx(0.003 + 5e-8 * size ** 2)
    # scaling the small timing by pixels alone (the timer before) prices 640 px at 6.1x that (0.143 s vs 0.0235)
    assert 0.0035 * 6.4 ** 2 / cost.at(640) == pytest.approx(6.1, abs=0.01)


@pytest.mark.parametrize(("seconds", "at_50_100_200_300_600"), [
    # noise: the larger timing scaled by pixels, never below the smaller timing (0.005 x 4 at 600 px)
    ((0.01, 0.005), (0.01, 0.01, 0.01, 0.01, 0.02)),
    ((0.01, 0.01), (0.01, 0.01, 0.01, 0.01, 0.04)),
    # faster than the pixels: the line (fixed part -0.011375, 1.2375e-6 s per pixel) through both timings from 100 px
    # up (0.038125 at 200, 0.434 at 600); below 100 px it would price 50 px under zero: 0.001 / 4 there
    ((0.001, 0.1), (0.00025, 0.001, 0.038125, 0.1, 0.434125)),
], ids=["larger-cheaper", "level", "faster-than-pixels"])
def test_a_bent_line_keeps_every_size_priced_above_zero_and_the_timings_where_it_can(seconds, at_50_100_200_300_600):
    cost = T.PixelCost((100, 300), seconds)
    assert [cost.at(s) for s in (50, 100, 200, 300, 600)] == pytest.approx(list(at_50_100_200_300_600))
