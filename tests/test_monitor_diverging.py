"""The ``diverging`` early warning (gradkit.monitor.divergence) on synthetic and recorded total norms."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gradkit.config import AlertsConfig
from gradkit.monitor import AlertDetector
from gradkit.monitor.alerts import AlertThresholds
from gradkit.monitor.divergence import DivergenceWarning

LAYERS = ["0 Conv", "1 Conv", "2 C3k2", "3 Detect"]
HEALTHY = Path(__file__).parent / "data" / "healthy_total_norms.json"


def _noisy_norms(rng, steps: int, onset: int, slope: float) -> np.ndarray:
    """log10 total norm: level 1 with 0.3 decades of per-step noise (as a detection model's norm
    jumps between batches), rising ``slope`` decades per step from ``onset`` on."""
    t = np.arange(1, steps + 1)
    return 10 ** (1.0 + rng.normal(0, 0.3, steps) + slope * np.clip(t - onset, 0, None))


def _diverging_steps(norms) -> list[int]:
    det = AlertDetector(LAYERS, AlertThresholds.of(AlertsConfig()))
    steps = []
    for step, n in enumerate(norms, 1):
        per_layer = np.full(len(LAYERS), n / 2)  # every layer rises alike: no relative rule fires
        alerts = det.update(1, step, per_layer, np.ones(len(LAYERS)), float(n))
        steps += [a.step for a in alerts if a.kind == "diverging"]
    return steps


@pytest.mark.parametrize("seed", range(5))
def test_warns_after_onset_and_before_the_norm_explodes(seed):
    """A norm growing 0.1 decade per step from step 40: the warning comes after the onset (never on
    the flat part) and within 20 steps - before the norm has grown 3 decades (step 70)."""
    onset, slope = 40, 0.1
    steps = _diverging_steps(_noisy_norms(np.random.default_rng(seed), 100, onset, slope))
    assert steps, "no warning"
    # an oracle for the latest step: the window's median trails the trend by half a window, plus the
    # rise of log10(10) = 1 decade at 0.1 decade per step, plus the noise of an 8-step median
    limit = onset + AlertsConfig().diverging_window // 2 + int(1 / slope) + 6
    assert onset < steps[0] <= limit < onset + 3 / slope
    assert len(steps) == 1  # one episode: the level never falls back


def test_no_warning_on_a_flat_or_falling_noisy_norm():
    rng = np.random.default_rng(7)
    flat = _noisy_norms(rng, 300, onset=10**6, slope=0.0)
    falling = 10 ** (3 - 0.02 * np.arange(300) + rng.normal(0, 0.3, 300))  # from-scratch: big norms first
    assert _diverging_steps(flat) == [] and _diverging_steps(falling) == []


@pytest.mark.parametrize(("factor", "warned"), [(20.0, []), (40.0, [31]), (1e4, [31])])
def test_spike_arm_warns_on_a_jump_above_diverging_spike(factor, warned):
    """One norm ``factor`` above the median of the 8 steps before it (30x warns); the trend arm's
    8-step median does not move for one step, so only the spike arm can see it."""
    norms = 10 ** (1.0 + np.random.default_rng(3).normal(0, 0.02, 60))
    norms[30] = factor * np.median(norms[22:30])  # step 31
    assert _diverging_steps(norms) == warned


def test_episode_ends_when_the_level_falls_back_and_state_round_trips():
    up = [10.0] * 10 + [1000.0] * 10  # a sustained rise of 2 decades: warns once
    back = [10.0] * 10 + [1000.0] * 10  # falls back (episode ends), rises again: warns again
    w = DivergenceWarning(window=4, rise=10.0, spike=1e6)  # the trend arm alone
    starts = [step for step, n in enumerate(up + back, 1) if w.update(n)]
    assert starts == [13, 33]
    clone = DivergenceWarning(window=4, rise=10.0, spike=1e6)
    clone.load_state_dict(w.state_dict())
    assert clone.state_dict() == w.state_dict() and math.isclose(clone.rise, w.rise)
    assert not w.update(float("nan")) and not w.update(0.0)  # no scale: skipped, no warning


def test_detector_state_keeps_the_divergence_baseline():
    cfg = AlertThresholds.of(AlertsConfig())
    det = AlertDetector(LAYERS, cfg)
    for step in range(1, 21):
        det.update(1, step, np.ones(len(LAYERS)), np.ones(len(LAYERS)), 1.0)
    clone = AlertDetector(LAYERS, cfg)
    clone.load_state_dict(det.state_dict())
    big = np.full(len(LAYERS), 100.0)
    fired = [[a.kind for a in d.update(1, step, big, np.ones(len(LAYERS)), 200.0)] for d in (det, clone)
             for step in range(21, 26)]
    assert fired[:5] == fired[5:] and any("diverging" in kinds for kinds in fired[:5])


def test_recorded_healthy_corpus_gives_no_warning():
    """The total norms of the healthy corpus of benchmarks/fault_detection.py (11 real runs)."""
    runs = json.loads(HEALTHY.read_text())["runs"]
    assert len(runs) == 11 and sum(map(len, runs.values())) > 300
    warned = {name: _diverging_steps(norms) for name, norms in runs.items()}
    assert all(not steps for steps in warned.values()), warned
