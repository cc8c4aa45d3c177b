"""The weight-growth arm of the ``diverging`` warning (gradkit.monitor.divergence.WeightGrowth): hand-made
measurement sequences with known growth, and the batch-norm law its docstring rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradkit.config import AlertsConfig
from gradkit.monitor import AlertDetector
from gradkit.monitor.alerts import AlertThresholds
from gradkit.monitor.divergence import WeightGrowth

LAYERS = ["0 Conv", "1 Conv", "2 C3k2", "3 Detect"]


def test_growth_is_against_the_latest_measurement_at_least_steps_old():
    """Measurements at steps 1-10 (the monitor's dense start) then every 10th: each growth is against
    the newest measurement at least 10 steps older, or the first one while none is."""
    growth = WeightGrowth(steps=10)
    norms = {s: float(s) for s in [*range(1, 11), 11, 21, 31]}  # norm = step: growth is a ratio of steps
    got = {s: float(growth.update(s, np.array([n]))[0]) for s, n in norms.items()}
    assert math.isnan(got[1])  # nothing to compare with
    assert got[5] == pytest.approx(5 / 1)
    assert got[10] == pytest.approx(10 / 1)
    assert got[11] == pytest.approx(11 / 1)
    assert got[21] == pytest.approx(21 / 11)
    assert got[31] == pytest.approx(31 / 21) and growth.reference_step == 21


def test_growth_every_step_looks_exactly_steps_back():
    growth = WeightGrowth(steps=10)
    for s in range(1, 40):
        out = growth.update(s, np.array([1.1**s]))
        if s > 11:
            assert growth.reference_step == s - 10
            assert out[0] == pytest.approx(1.1**10)


def test_growth_is_nan_for_a_zero_reference_and_after_a_change_of_layers():
    growth = WeightGrowth(steps=10)
    growth.update(1, np.array([0.0, 2.0]))
    out = growth.update(11, np.array([1.0, 4.0]))
    assert math.isnan(out[0]) and out[1] == pytest.approx(2.0)
    assert np.isnan(growth.update(21, np.array([1.0, 4.0, 5.0]))).all()  # another model: no reference


def _detector(**overrides) -> AlertDetector:
    return AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig(**overrides)))


def _feed(det: AlertDetector, step: int, weights, fresh: bool = True):
    grads = np.full(len(LAYERS), 1.0)  # flat, alike gradients: no other rule fires
    return [a for a in det.update(1, step, grads, np.asarray(weights, dtype=float), 4.0, weights_fresh=fresh)
            if a.kind == "diverging"]


def test_detector_warns_once_when_a_layer_doubles_and_names_the_fastest():
    det = _detector()
    assert _feed(det, 1, [1, 1, 1, 1]) == []
    assert _feed(det, 2, [1.9, 1, 1, 1]) == []  # 1.9x: under diverging_growth (2)
    alerts = _feed(det, 3, [2.1, 1, 3.0, 1])
    assert len(alerts) == 1
    a = alerts[0]
    assert (a.step, a.layer, a.module, a.threshold) == (3, "2", "C3k2", 2.0)
    assert a.value == pytest.approx(3.0)
    assert "since step 1" in a.message and "1 more layer" in a.message
    assert _feed(det, 4, [2.2, 1, 3.1, 1]) == []  # the same episode


def test_stale_weights_raise_nothing_and_episodes_end_when_growth_stops():
    det = _detector(diverging_growth_steps=2)
    _feed(det, 1, [1, 1, 1, 1])
    assert _feed(det, 2, [5, 1, 1, 1], fresh=False) == []  # not a measurement of this step
    assert len(_feed(det, 3, [2.5, 1, 1, 1])) == 1  # against step 1
    assert _feed(det, 5, [2.6, 1, 1, 1]) == []  # against step 3: 1.04x, the episode ends
    again = _feed(det, 7, [6.0, 1, 1, 1])  # against step 5: 2.3x, a new episode
    assert [a.step for a in again] == [7]


def test_detector_state_keeps_the_growth_reference():
    det = _detector()
    _feed(det, 1, [1, 1, 1, 1])
    restored = _detector()
    restored.load_state_dict(det.state_dict())
    assert [a.step for a in _feed(restored, 11, [1, 2.5, 1, 1])] == [11]
    fresh = _detector()  # without the reference, the same measurement says nothing
    assert _feed(fresh, 11, [1, 2.5, 1, 1]) == []


def test_a_state_saved_before_the_arm_loads_and_starts_it_afresh():
    det = _detector()
    _feed(det, 1, [1, 1, 1, 1])
    state = det.state_dict()
    del state["growth"]
    restored = _detector()
    restored.load_state_dict(state)
    assert _feed(restored, 11, [1, 2.5, 1, 1]) == []


def test_batch_norm_makes_sgd_steps_lengthen_the_weights():
    """The law the arm rests on (Arora, Li and Lyu 2019): a convolution followed by batch normalisation
    has a gradient orthogonal to its weights, so a plain SGD step gives |w'|^2 = |w|^2 + |dw|^2, and
    steps as long as the weights double them within a few steps."""
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8)
    x, target = torch.randn(16, 3, 12, 12), torch.randn(16, 8, 10, 10)
    opt = torch.optim.SGD(conv.parameters(), lr=20.0)
    start = conv.weight.norm().item()
    for _ in range(10):
        opt.zero_grad()
        torch.nn.functional.mse_loss(bn(conv(x)), target).backward()
        w, g = conv.weight.detach().clone(), conv.weight.grad.detach().clone()
        assert abs(float((w * g).sum())) <= 1e-2 * w.norm().item() * g.norm().item()  # BN's eps: not exactly 0
        opt.step()
        dw = conv.weight.detach() - w
        assert conv.weight.norm().item() ** 2 == pytest.approx(w.norm().item() ** 2 + dw.norm().item() ** 2,
                                                               rel=1e-3)
    assert conv.weight.norm().item() > 2 * start


@pytest.mark.parametrize("state", [{}, {"kept": 3}, {"kept": [[1, "x"]]}, {"kept": [[1, [[1.0]]]]},
                                   {"kept": [[5, [1.0]], [2, [1.0]]]}])
def test_a_malformed_state_is_refused_in_one_line(state):
    with pytest.raises(ValueError, match="weight-growth state") as info:
        WeightGrowth(steps=10).load_state_dict(state)
    assert "\n" not in str(info.value)


def test_the_arm_can_be_turned_off():
    off = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig()), weight_growth=False)
    on = _detector()
    for det in (off, on):
        _feed(det, 1, [1, 1, 1, 1])
    assert _feed(off, 11, [5, 5, 5, 5]) == []
    assert [a.step for a in _feed(on, 11, [5, 5, 5, 5])] == [11]  # the same input, the arm on


def test_the_integration_watches_sgd_and_musgd_only():
    """Ultralytics builds torch.optim.SGD for optimizer=SGD and its MuSGD for long optimizer=auto runs (both
    measured); Adam's family and RMSprop take steps set by the lr."""
    from ultralytics.optim.muon import MuSGD

    from gradkit.integrations.ultralytics.callback import weight_growth_watched

    params = [torch.nn.Parameter(torch.ones(2, 2))]
    assert weight_growth_watched(torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True))
    assert weight_growth_watched(MuSGD([{"params": params, "lr": 0.01, "use_muon": True}]))
    for opt in (torch.optim.AdamW(params), torch.optim.Adam(params), torch.optim.RMSprop(params)):
        assert not weight_growth_watched(opt), type(opt).__name__


@pytest.mark.parametrize("bad", [
    {"count": None}, {"hist": [[1.0]]}, {"low": [1, 2]}, {"active": 5}, {"diverging": {"recent": 3}},
    {"growth": {"kept": [[float("inf"), [1.0]]]}}])
def test_a_malformed_detector_state_is_refused_and_leaves_the_detector_as_it_was(bad):
    det = _detector()
    _feed(det, 1, [1, 1, 1, 1])
    state = {**det.state_dict(), **bad}
    before = det.state_dict()
    with pytest.raises(ValueError, match="alert state unreadable") as info:
        det.load_state_dict(state)
    assert "\n" not in str(info.value)
    after = det.state_dict()
    assert after["count"] == before["count"] and after["growth"] == before["growth"]


def test_the_plugin_starts_the_diagnoses_afresh_on_a_malformed_state(caplog):
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import GradkitCallback

    plugin = GradkitCallback(load_config(None))
    plugin.detector = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig()), weight_growth=False)
    _feed(plugin.detector, 1, [1, 1, 1, 1])
    state = {**plugin.state_dict(), "alerts": {**plugin.detector.state_dict(), "low": [1]}}
    with caplog.at_level("WARNING"):
        plugin.load_state_dict(state)
    assert "starts afresh" in caplog.text
    assert plugin.detector.state_dict()["count"] == 0 and plugin.detector.weight_growth is False
