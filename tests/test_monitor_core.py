"""Monitoring core against naive computations and planted statistical faults (no trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradkit.clip import make_clipper
from gradkit.config import AlertsConfig
from gradkit.monitor import AlertDetector, LayerStats
from gradkit.monitor.alerts import AlertThresholds


class _Yolo(torch.nn.Module):
    """Parameter names like Ultralytics' (``model.<i>.…``)."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                         torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 2, 1))


def _naive_layer_norms(model, attr="grad"):
    out: dict[str, float] = {}
    for name, p in model.named_parameters():
        t = p.grad if attr == "grad" else p.detach()
        key = name.split(".")[1]
        out[key] = out.get(key, 0.0) + float((t.double() ** 2).sum())
    return {k: np.sqrt(v) for k, v in out.items()}


@pytest.mark.parametrize("mode", ["none", "stock", "agc", "value", "layer_norm"])
def test_layer_norms_match_naive_before_and_after_clip(mode):
    torch.manual_seed(0)
    model = _Yolo()
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 7
    stats = LayerStats(model.named_parameters())
    pre_naive = _naive_layer_norms(model)
    weight_naive = _naive_layer_norms(model, "weight")
    result = make_clipper(mode)(model.named_parameters())
    st = stats.measure(result, stats.weight_norms())
    post_naive = _naive_layer_norms(model)
    assert stats.layer_keys == ["0", "1", "2", "3"]
    np.testing.assert_allclose(st.grad_norm, [pre_naive[k] for k in stats.layer_keys], rtol=1e-5)
    np.testing.assert_allclose(st.grad_norm_clipped, [post_naive[k] for k in stats.layer_keys], rtol=1e-5)
    np.testing.assert_allclose(st.weight_norm, [weight_naive[k] for k in stats.layer_keys], rtol=1e-5)
    assert st.total_norm == pytest.approx(np.sqrt(sum(v**2 for v in pre_naive.values())), rel=1e-5)
    assert st.total_norm_clipped == pytest.approx(np.sqrt(sum(v**2 for v in post_naive.values())), rel=1e-5)
    assert (st.nonfinite == 0).all()


def test_nonfinite_counts_and_update_ratio():
    model = _Yolo()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    conv = model.model[2].weight
    conv.grad.view(-1)[:3] = float("inf")
    conv.grad.view(-1)[3] = float("nan")
    stats = LayerStats(model.named_parameters(), labels={"2": "2 Conv2d"})
    st = stats.measure(make_clipper("none")(model.named_parameters()), stats.weight_norms())
    assert not st.finite
    assert st.nonfinite.tolist() == [0, 0, 4, 0]
    assert stats.labels[2] == "2 Conv2d"
    before = stats.snapshot()
    with torch.no_grad():
        model.model[0].weight.add_(0.5)
    upd = stats.update_norms(before).numpy()
    assert upd[0] == pytest.approx(0.5 * np.sqrt(model.model[0].weight.numel()), rel=1e-5)
    assert (upd[1:] == 0).all()


def test_update_norms_stay_right_when_the_snapshot_buffer_is_reused():
    """The snapshot's buffers are reused from one step to the next and overwritten by update_norms:
    every step's update must still equal the naive difference of that step's weights."""
    torch.manual_seed(1)
    model = _Yolo()
    stats = LayerStats(model.named_parameters())
    for _ in range(3):
        before_naive = {n: p.detach().clone() for n, p in model.named_parameters()}
        before = stats.snapshot()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        expected: dict[str, float] = {}
        for n, p in model.named_parameters():
            key = n.split(".")[1]
            expected[key] = expected.get(key, 0.0) + float(((p.detach() - before_naive[n]).double() ** 2).sum())
        got = stats.update_norms(before).numpy()
        np.testing.assert_allclose(got, [np.sqrt(expected[k]) for k in stats.layer_keys], rtol=1e-5)
    assert stats.snapshot()[0].data_ptr() == before[0].data_ptr()  # the same buffers, refilled
    model.half()  # the weights changed dtype: the kept buffers no longer fit and are made anew
    old = before
    before = stats.snapshot()
    assert before[0].data_ptr() != old[0].data_ptr()
    assert all(b.dtype == torch.float16 for b in before)
    assert (stats.update_norms(before).numpy() == 0).all()


def test_frozen_parameters_are_not_monitored():
    model = _Yolo()
    for p in model.model[0].parameters():
        p.requires_grad_(False)
    assert LayerStats(model.named_parameters()).layer_keys == ["1", "2", "3"]


LAYERS = ["0 Conv", "1 Conv", "2 C3k2", "3 Detect"]


def _feed(det, steps, fault=None, start=0, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    alerts = []
    base = np.array([5.0, 3.0, 2.0, 1.0])
    for s in range(start, start + steps):
        g = base * np.exp(rng.normal(0, noise, 4))
        loss_ok = True
        if fault:
            g, loss_ok = fault(s, g.copy())
        nonfinite = (~np.isfinite(g)).astype(float)
        total = float(np.sqrt(np.sum(g**2)))
        alerts += det.update(1, s, g, np.full(4, 10.0), total, nonfinite, loss_ok)
    return alerts


def test_healthy_noise_raises_nothing():
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig(warmup_steps=5)))
    assert _feed(det, 300, noise=0.5) == []


@pytest.mark.parametrize(("kind", "factor", "layer"), [("exploding", 1e4, "2"), ("vanishing", 1e-9, "1"),
                                                       ("dead", 0.0, "0")])
def test_planted_fault_is_reported_once_with_kind_and_layer(kind, factor, layer):
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig(warmup_steps=5)))
    onset = 30

    def fault(s, g):
        if s >= onset:
            g[int(layer)] *= factor
        return g, True

    alerts = _feed(det, 60, fault)
    mine = [a for a in alerts if a.layer == layer and a.kind == kind]
    assert len(mine) == 1, alerts  # one episode, one alert
    assert onset <= mine[0].step < onset + 5
    assert all(a.kind == kind for a in alerts if a.layer != "total"), alerts


def test_nonfinite_names_origin_nearest_output():
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig(warmup_steps=5)))

    def fault(s, g):
        if s == 10:
            g[:3] = np.nan  # layers 0-2 non-finite, 3 (output side) finite: origin is 2
        return g, True

    alerts = _feed(det, 20, fault)
    (a,) = [a for a in alerts if a.kind == "nonfinite"]
    assert (a.step, a.layer, a.module) == (10, "2", "C3k2")
    assert "origin: layer 2 C3k2" in a.message and "0 Conv" in a.message


def test_nonfinite_loss_is_named():
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig()))

    def fault(s, g):
        return (g * np.nan, False) if s == 3 else (g, True)

    (a,) = [a for a in _feed(det, 6, fault) if a.kind == "nonfinite"]
    assert a.layer == "loss" and "loss itself" in a.message


def test_episode_re_arms_after_recovery_and_state_round_trips():
    cfg = AlertThresholds.of(AlertsConfig(warmup_steps=5, dead_patience=2))
    det = AlertDetector(LAYERS, cfg)

    def fault(s, g):
        if 10 <= s < 15 or 20 <= s < 25:
            g[0] = 0.0
        return g, True

    alerts = _feed(det, 30, fault)
    assert [a.step for a in alerts if a.kind == "dead"] == [11, 21]
    clone = AlertDetector(LAYERS, cfg)
    clone.load_state_dict(det.state_dict())
    assert _feed(clone, 10, start=30, seed=5) == _feed(det, 10, start=30, seed=5)


def test_a_nonfinite_step_inside_a_streak_leaves_its_counter_and_episode_alone():
    """Hand-made: layer 0 is exactly zero from step 10 (dead_patience 3). A NaN on layer 0 at step 11
    neither resets nor advances its count, so the alert comes at step 13 (zeros at 10, 12, 13), once,
    and no other layer is reported dead."""
    cfg = AlertThresholds.of(AlertsConfig(warmup_steps=5, dead_patience=3))
    det = AlertDetector(LAYERS, cfg)

    def fault(s, g):
        if s >= 10:
            g[0] = np.nan if s == 11 else 0.0
        return g, True

    alerts = _feed(det, 20, fault)
    dead = [a for a in alerts if a.kind == "dead"]
    assert [(a.step, a.layer) for a in dead] == [(13, "0")]
    assert "3 consecutive steps up to step 13" in dead[0].message


def test_the_total_is_never_reported_dead():
    """Every layer exactly zero (a total of 0) for 5 steps: each layer is dead, the total is not."""
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig(warmup_steps=5, dead_patience=2)))
    alerts = []
    for s in range(1, 6):
        alerts += det.update(1, s, np.zeros(4), np.full(4, 10.0), 0.0)
    assert sorted(a.layer for a in alerts if a.kind == "dead") == ["0", "1", "2", "3"]
    assert all(a.layer != "total" for a in alerts)
