"""Same-step relative diagnoses (no warm-up) and the rule-coverage helper, on hand-made norms."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from gradkit.config import AlertsConfig
from gradkit.monitor import AlertDetector
from gradkit.monitor.alerts import inactive_rules, nanmedian, relative_positions

LAYERS = [f"{i} Conv" for i in range(12)]
BASE = np.logspace(1, -1, 12)  # a healthy profile: norms fall by two decades from input to output


def _run(steps, fault=None, scale=None, seed=0):
    """Feed ``steps`` steps; ``scale(s)`` multiplies every norm (the absolute level moving by decades),
    ``fault(s, g)`` edits the norms. Default config: warmup_steps 20."""
    rng = np.random.default_rng(seed)
    det = AlertDetector(LAYERS, AlertsConfig())
    alerts = []
    for s in range(1, steps + 1):
        g = BASE * np.exp(rng.normal(0, 0.2, BASE.size)) * (scale(s) if scale else 1.0)
        if fault:
            g = fault(s, g.copy())
        alerts += det.update(1, s, g, np.full(BASE.size, 10.0), float(np.sqrt((g**2).sum())))
    return alerts


@pytest.mark.parametrize(("kind", "factor", "onset"), [("exploding", 1e3, 2), ("vanishing", 1e-6, 2),
                                                       ("exploding", 1e3, 7), ("vanishing", 1e-9, 7)])
def test_fault_on_one_layer_reported_without_warmup(kind, factor, onset):
    def fault(s, g):
        if s >= onset:
            g[5] *= factor
        return g

    alerts = _run(15, fault, scale=lambda s: 10.0 ** (2 - s / 3))  # absolute level falls 5 decades
    mine = [a for a in alerts if a.kind == kind and a.layer == "5"]
    assert len(mine) == 1, alerts
    assert onset <= mine[0].step <= onset + (0 if kind == "exploding" else 2)
    assert all(a.layer in {"5", "total"} for a in alerts), alerts


def test_whole_model_scale_swings_and_group_jumps_are_healthy():
    """Batches shift every norm together by decades, and a block of 4 neighbouring layers (a
    detection scale with large objects in the batch) jumps up and back together: no alert. Against
    the global median alone the jump passes the exploding threshold (2.48 decades): 80 alerts."""

    def group(s, g):
        if s % 3 == 0:
            g[7:11] *= 10**4.0
        return g

    alerts = _run(60, group, scale=lambda s: 10.0 ** (3 * np.sin(s)))
    # a total norm jumping +-3 decades at random moves even its 8-step median by more than the
    # diverging rule's decade (real healthy runs: at most 0.66, test_monitor_diverging.py)
    assert [a for a in alerts if a.kind != "diverging"] == []


def test_relative_positions_use_median_of_all_and_of_neighbours():
    logn = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    rel = relative_positions(logn)
    assert rel[:, 0] == pytest.approx(logn - 2.5)
    # layer 0: neighbours 1..4 (window shifted inwards) -> median 2.5; layer 3: 1,2,4,5 -> 3
    assert rel[0, 1] == pytest.approx(-2.5) and rel[3, 1] == pytest.approx(0.0)
    assert np.isnan(relative_positions(np.array([1.0, np.nan, np.nan]))).all()  # too few layers


def test_inactive_rules_by_step_count():
    cfg = AlertsConfig()
    assert set(inactive_rules(1, cfg)) == {"exploding (relative to the other layers)",
                                           "vanishing (relative to the other layers)",
                                           "exploding/vanishing (against own history)", "dead",
                                           "diverging (total-norm trend/spike)", "diverging (weight growth)"}
    assert set(inactive_rules(3, cfg)) == {"vanishing (relative to the other layers)",
                                           "exploding/vanishing (against own history)",
                                           "diverging (total-norm trend/spike)"}
    assert inactive_rules(21, cfg) == {}


@pytest.mark.parametrize("shape", [(7,), (100, 19), (100, 18, 2), (4, 6)])
def test_nanmedian_equals_numpy(shape):
    rng = np.random.default_rng(1)
    a = rng.normal(size=shape)
    a[rng.random(shape) < 0.3] = np.nan
    if len(shape) > 1:
        a[:, 0] = np.nan  # an all-NaN column
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns on the all-NaN column
        expected = np.nanmedian(a, axis=0)
    np.testing.assert_allclose(nanmedian(a), expected, equal_nan=True)


def test_idle_layer_waking_below_the_others_is_not_exploding():
    """A layer that idles four decades below the others (a detection scale with no objects of its size,
    as the P5 path of a model started from a prior on small defects: the demo's layers 20 and 22) and
    now and then gets 1000x its usual gradient, still two decades below the median layer: a path coming
    into use, not an explosion. Both arms would call it one (asserted: its rise against its usual
    position, and its norm against its own history, pass their thresholds at the waking steps)."""
    idle = 4.4  # decades below the profile, as layer 20's median in the demo from the prior
    rng = np.random.default_rng(0)
    det, alerts, rises, over_history = AlertDetector(LAYERS, AlertsConfig()), [], [], []
    for s in range(1, 81):
        g = BASE * np.exp(rng.normal(0, 0.2, BASE.size))
        g[9] *= 10.0**-idle * (1000.0 if s % 7 == 0 else 1.0)
        history = nanmedian(det._hist)[9] if s > 21 else np.nan  # before this step's row goes in
        alerts += det.update(1, s, g, np.full(BASE.size, 10.0), float(np.sqrt((g**2).sum())))
        if s % 7 == 0:
            rises.append(det.relative_deviation[9, 0])
            over_history.append(np.log10(g[9]) - history)
    assert min(rises) > np.log10(300) and np.nanmin(over_history) > np.log10(300)
    assert [a for a in alerts if a.kind == "exploding"] == []


def test_a_lasting_explosion_near_the_median_is_one_alert():
    """A quiet layer (three decades below the median layer) multiplied by 10^3.1 from step 5 on (0.6 decades above
    the threshold) lands on the median layer and crosses it back and forth with the batches: one episode, one
    alert (the median gates its start only)."""
    place = np.log10(BASE[9]) - np.median(np.log10(BASE)) - 2.4  # -3.04 decades

    def fault(s, g):
        g[9] *= 10**-2.4 * (10**3.1 if s >= 5 else 1.0)
        return g

    assert abs(place + 3.1) < 0.1  # lands within 0.1 decades of the median: crossings are certain
    mine = [a for a in _run(60, fault, seed=1) if a.kind == "exploding" and a.layer == "9"]
    assert len(mine) == 1 and mine[0].step == 5, mine


@pytest.mark.parametrize("onset", [5, 40])
def test_quiet_layer_exploding_above_the_others_is_reported(onset):
    """The same quiet layer (two decades below its place) multiplied 1e4 from ``onset`` on: now above the
    median layer, reported at onset by the relative arm (5) or either arm (40, after the warm-up)."""

    def fault(s, g):
        g[9] *= 1e-2 * (1e4 if s >= onset else 1.0)
        return g

    mine = [a for a in _run(60, fault) if a.kind == "exploding" and a.layer == "9"]
    assert [a.step for a in mine] == [onset], mine
