"""Gradient noise scale (McCandlish et al. 2018) against a problem with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradkit.integrations.ultralytics.monitor_glue import planned_optimizer_steps
from gradkit.monitor.noise import MIN_READING_PAIRS, NoiseScale, critical_batch_reading


def _least_squares_b_simple(delta: np.ndarray, sigma: float) -> float:
    """Analytic B_simple of per-sample gradients g = x (x.delta - eps), x ~ N(0, I), eps ~ N(0, sigma^2).

    G = E[g] = delta; by Isserlis E[g g^T] = (|delta|^2 + sigma^2) I + 2 delta delta^T, so
    tr(Sigma) = d (|delta|^2 + sigma^2) + |delta|^2 and B_simple = tr(Sigma) / |delta|^2.
    """
    d2 = float(delta @ delta)
    return (delta.size * (d2 + sigma**2) + d2) / d2


@pytest.mark.parametrize(("b", "big_b", "sigma"), [(8, 32, 0.5), (16, 64, 2.0), (4, 12, 0.0)])
def test_least_squares_noise_scale_within_10_percent(b, big_b, sigma):
    """The first micro-batch of b samples and the whole window of B samples, gradients as sums (the
    Ultralytics convention, loss = mean x batch size) divided by the image count, as in training."""
    rng = np.random.default_rng(0)
    d = 20
    w_star = rng.normal(size=d)
    w = w_star + rng.normal(size=d) * 0.3  # fixed weights: the true G and Sigma are constant
    delta = w - w_star
    expected = _least_squares_b_simple(delta, sigma)
    est = NoiseScale()
    for _ in range(3000):
        x = rng.normal(size=(big_b, d))
        y = x @ w_star + rng.normal(size=big_b) * sigma
        per_sample = x * (x @ w - y)[:, None]
        small_sum, big_sum = per_sample[:b].sum(0), per_sample.sum(0)
        assert est.add(float(small_sum @ small_sum) / b**2, b, float(big_sum @ big_sum) / big_b**2, big_b)
    assert est.value() == pytest.approx(expected, rel=0.10)
    assert expected > 2 * d / 3  # the case is not trivial: noise dominates a single sample


def test_noise_scale_refuses_pairs_without_two_batch_sizes():
    est = NoiseScale()
    assert not est.add(1.0, 4, 1.0, 4)  # no accumulation: one batch size only
    assert not est.add(float("nan"), 4, 1.0, 8)
    assert math.isnan(est.value())
    assert "nbs larger than batch" in critical_batch_reading(est.value(), 16)
    assert "below the critical" in critical_batch_reading(640.0, 64)
    assert "above the critical" in critical_batch_reading(10.0, 64)


def test_estimator_on_torch_gradients_of_a_linear_model():
    """Same oracle through autograd: a linear layer's gradient with a summed loss."""
    torch.manual_seed(0)
    d, b, big_b, sigma = 10, 8, 32, 1.0
    lin = torch.nn.Linear(d, 1, bias=False)
    w_star = torch.randn(d)
    delta = lin.weight.detach()[0] - w_star
    expected = _least_squares_b_simple(delta.numpy().astype(np.float64), sigma)
    est = NoiseScale()
    for _ in range(2000):
        x = torch.randn(big_b, d)
        y = x @ w_star + torch.randn(big_b) * sigma
        lin.zero_grad()
        (0.5 * (lin(x[:b]).squeeze(1) - y[:b]) ** 2).sum().backward()
        small = float(lin.weight.grad.square().sum())
        (0.5 * (lin(x[b:]).squeeze(1) - y[b:]) ** 2).sum().backward()  # accumulates onto the first micro-batch
        big = float(lin.weight.grad.square().sum())
        est.add(small / b**2, b, big / big_b**2, big_b)
    assert est.value() == pytest.approx(expected, rel=0.10)


@pytest.mark.parametrize(("nb", "epochs", "acc", "warm", "expected"), [
    (5, 3, 1, 0, 15),   # one step per batch
    (5, 2, 8, 0, 1),    # nbs=32, batch 4: 8 batches per step, 10 batches -> 1 step
    (30, 3, 16, 0, 5),  # 90 batches / 16 -> 5 steps (the 6th window is incomplete)
])
def test_planned_optimizer_steps_matches_loop(nb, epochs, acc, warm, expected):
    assert planned_optimizer_steps(nb, epochs, 0, acc, warm) == expected


def test_a_gradient_estimate_that_is_not_positive_is_named_as_such():
    """Pairs of two batch sizes were added, but the small batches' gradients were the larger: |G|^2 estimated below
    0, no B_simple. The reading says that, not that accumulation is missing (it is there)."""
    est = NoiseScale()
    assert est.add(4.0, 4, 1.0, 8)  # |G|^2 estimate: (8 * 1 - 4 * 4) / 4 = -2
    assert math.isnan(est.value()) and est.steps == 1
    reading = critical_batch_reading(est.value(), 8, pairs=est.steps)
    assert "not positive" in reading and "1 step" in reading and "nbs larger than batch" not in reading


def test_a_noise_estimate_that_is_not_positive_gives_no_critical_batch_either():
    """The small batch's gradient came out smaller than the whole window's: tr(S) estimated below 0 with |G|^2
    positive. Their ratio, a negative "B_simple", is no batch size; it was read as one ("B_simple ~ -2.87 images
    ... above the critical batch size")."""
    est = NoiseScale()
    assert est.add(1.0, 4, 1.5, 8)  # tr(S): (1 - 1.5) / (1/4 - 1/8) = -4; |G|^2: (8 * 1.5 - 4 * 1) / 4 = 2
    assert est.trace_sum == pytest.approx(-4.0) and est.grad_sq_sum == pytest.approx(2.0)
    assert math.isnan(est.value())
    reading = critical_batch_reading(est.value(), 8, pairs=est.steps)
    assert "not positive" in reading and "noise" in reading and "critical batch" not in reading


def test_the_run_summary_reads_the_estimate_with_its_step_count():
    """gradkit_summary.json's noise_scale (NoiseScaleTracker.summary): with pairs of two batch sizes whose gradient
    estimate is not positive, the reading says so rather than asking for accumulation."""
    from gradkit.integrations.ultralytics.monitor_glue import NoiseScaleTracker

    tracker = NoiseScaleTracker()
    assert tracker.run.add(4.0, 4, 1.0, 8)
    summary = tracker.summary(images_per_step=8)
    assert summary["value"] is None and summary["steps"] == 1
    assert "not positive" in summary["reading"]


def test_the_running_sums_survive_a_state_round_trip_and_refuse_what_is_not_a_sum():
    """A resume continues the run's estimate: split one run's steps at a checkpoint, the restored sums
    plus the steps after it give what the whole run gives; a state file is untrusted input."""
    rng = np.random.default_rng(1)
    steps = [(float(rng.uniform(1, 2)), 4, float(rng.uniform(0.2, 1)), 16) for _ in range(9)]
    whole, before = NoiseScale(), NoiseScale()
    for s in steps:
        whole.add(*s)
    for s in steps[:4]:
        before.add(*s)
    after = NoiseScale()
    after.load_state_dict(before.state_dict())
    for s in steps[4:]:
        after.add(*s)
    assert after.steps == whole.steps == 9 and after.value() == pytest.approx(whole.value(), rel=1e-12)
    for bad, named in (({"trace_sum": "1", "grad_sq_sum": 1.0, "steps": 2}, "trace_sum"),
                       ({"trace_sum": 1.0, "grad_sq_sum": float("nan"), "steps": 2}, "grad_sq_sum"),
                       ({"trace_sum": 1.0, "grad_sq_sum": 1.0, "steps": -1}, "steps"),
                       ({"trace_sum": 1.0, "grad_sq_sum": 1.0, "steps": 2.5}, "steps"),
                       ({"trace_sum": 1.0, "steps": 2}, "grad_sq_sum"),
                       ({"trace_sum": 10**400, "grad_sq_sum": 1.0, "steps": 2}, "trace_sum"),
                       ([1.0, 1.0, 2], "not a mapping")):
        fresh = NoiseScale()
        with pytest.raises(ValueError, match=named):
            fresh.load_state_dict(bad)
        assert fresh == NoiseScale()  # nothing half-loaded


def test_a_reading_from_a_handful_of_steps_gives_the_value_but_no_verdict():
    """One pair of batch sizes (16 and 17 images, a 17-image epoch) gave "above the critical batch size: smaller
    batches would reach the same loss" with the confidence of a whole run's average."""
    est = NoiseScale()
    assert est.add(1.05, 16, 1.0, 17)  # |G|^2 (17 - 16.8) = 0.2, tr(S) 0.05 / (1/16 - 1/17) = 13.6: B_simple 68
    value = est.value()
    assert math.isfinite(value)
    few = critical_batch_reading(value, 17, pairs=1)
    assert f"{value:.3g}" in few and "1 step" in few and "critical batch size" not in few
    enough = critical_batch_reading(value, 17, pairs=MIN_READING_PAIRS)
    assert "critical batch size" in enough


@pytest.mark.parametrize("ranks", [1, 2])
def test_the_tracker_counts_every_rank_s_images_in_a_ddp_gradient(ranks):
    """Under DDP each micro-batch's gradient is all-reduced (and Ultralytics scales the loss by the world size), so
    it sums the images of every rank; the tracker divided it by one rank's images and put B_simple ``ranks`` times
    too low. Oracle: the least-squares noise scale, the gradients of a linear model made as DDP makes them (a
    sum over ranks x batch images), fed through the tracker as the trainer's callbacks feed it."""
    from types import SimpleNamespace

    from gradkit.integrations.ultralytics.monitor_glue import NoiseScaleTracker

    windows, micro, b = 1500, 4, 8

    class Loader(list):
        batch_size, drop_last = b, False
        dataset = range(b * micro * windows)

    torch.manual_seed(0)
    d, sigma = 10, 1.0
    lin = torch.nn.Linear(d, 1, bias=False)
    w_star = torch.randn(d)
    expected = _least_squares_b_simple((lin.weight.detach()[0] - w_star).numpy().astype(np.float64), sigma)
    trainer = SimpleNamespace(epoch=0, train_loader=Loader([None] * (micro * windows)), batch_size=b, model=lin,
                              world_size=ranks, scaler=SimpleNamespace(is_enabled=lambda: False))
    tracker, step = NoiseScaleTracker(), 0
    lin.zero_grad()
    for k in range(micro * windows):
        x = torch.randn(ranks * b, d)  # this micro-batch on every rank
        y = x @ w_star + torch.randn(ranks * b) * sigma
        (0.5 * (lin(x).squeeze(1) - y) ** 2).sum().backward()
        if k % micro == micro - 1:  # the window's last micro-batch: the optimizer steps (the clipper's full norm)
            step += 1
            tracker.on_batch_end(trainer, step, float(lin.weight.grad.norm()))
            lin.zero_grad()
        else:
            tracker.on_batch_end(trainer, step, float("nan"))
    assert tracker.epoch_value() == pytest.approx(expected, rel=0.10)


def test_an_epoch_s_last_batch_counts_one_rank_s_share_of_the_images():
    """Under DDP each rank's loader draws from a DistributedSampler: its last batch holds what is left of that
    rank's share, not of the whole dataset (1000 images, 2 ranks, batch 8: 4, not 504). Hand-made case."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    from gradkit.integrations.ultralytics.monitor_glue import NoiseScaleTracker

    data = list(range(1000))
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data, num_replicas=2, rank=0, shuffle=False))
    tracker = NoiseScaleTracker()
    tracker._batch_in_epoch = len(loader)  # the epoch's last batch just finished
    assert tracker._images(SimpleNamespace(train_loader=loader, batch_size=8)) == 500 - 62 * 8
