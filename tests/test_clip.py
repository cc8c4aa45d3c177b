"""Clipping policies against reference implementations and hand-checked rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from gradkit.clip import DEFAULT_AGC_EXCLUDE, autoclip_threshold, layer_of, make_clipper


def _model(seed: int = 0, scale: float = 1.0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Conv2d(8, 4, 1),
                              torch.nn.Flatten(), torch.nn.LazyLinear(5))
    wrapper = torch.nn.Module()
    wrapper.model = net
    net(torch.zeros(2, 3, 6, 6))  # materialises the lazy layer
    for p in wrapper.parameters():
        p.grad = torch.randn_like(p) * scale
    return wrapper


def _named(m):
    return list(m.named_parameters())


def _grads(m):
    return [p.grad.clone() for p in m.parameters()]


@pytest.mark.parametrize("max_norm", [0.5, 5.0, 1e6])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
def test_norm_equals_torch(max_norm, norm_type):
    ours, ref = _model(1, 3.0), _model(1, 3.0)
    l2_before = torch.stack([g.norm(2) for g in _grads(ours)]).norm(2)
    result = make_clipper("norm", max_norm=max_norm, norm_type=norm_type)(_named(ours))
    ref_total = torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm, norm_type)
    torch.testing.assert_close(result.total_norm, l2_before, rtol=1e-6, atol=1e-6)  # reported in L2 whatever p
    for a, b in zip(_grads(ours), _grads(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    expected_coef = min(1.0, max_norm / (float(ref_total) + 1e-6))
    assert float(result.clip_coef) == pytest.approx(expected_coef, rel=1e-6)


def test_stock_is_ultralytics_fixed_clip():
    ours, ref = _model(2, 5.0), _model(2, 5.0)
    make_clipper("stock")(_named(ours))
    torch.nn.utils.clip_grad_norm_(ref.parameters(), max_norm=10.0)
    for a, b in zip(_grads(ours), _grads(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("clip_value", [0.1, 1.0, 100.0])
def test_value_equals_torch(clip_value):
    ours, ref = _model(3, 2.0), _model(3, 2.0)
    result = make_clipper("value", clip_value=clip_value)(_named(ours))
    torch.nn.utils.clip_grad_value_(ref.parameters(), clip_value)
    for a, b in zip(_grads(ours), _grads(ref), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    after = torch.linalg.vector_norm(torch.stack([g.norm() for g in _grads(ref)]))
    torch.testing.assert_close(result.total_norm_clipped, after, rtol=1e-6, atol=1e-6)


def _agc_reference(w: np.ndarray, g: np.ndarray, lam: float, eps: float) -> np.ndarray:
    """NFNets unit-wise rule written out with numpy, one output unit at a time."""
    out = g.copy()
    units = [slice(None)] if w.ndim <= 1 else range(w.shape[0])
    for u in units:
        wn = max(np.sqrt((w[u] ** 2).sum()), eps)
        gn = np.sqrt((g[u] ** 2).sum())
        if gn > lam * wn:
            out[u] = g[u] * (lam * wn / gn)
    return out


@pytest.mark.parametrize("lam", [0.01, 0.1, 1.0])
def test_agc_equals_unitwise_rule(lam):
    model = _model(4, 1.0)
    before = {n: (p.detach().numpy().copy(), p.grad.numpy().copy()) for n, p in model.named_parameters()}
    make_clipper("agc", clip_factor=lam, eps=1e-3, exclude=[])(_named(model))
    for name, p in model.named_parameters():
        w, g = before[name]
        np.testing.assert_allclose(p.grad.numpy(), _agc_reference(w, g, lam, 1e-3), rtol=1e-5, atol=1e-7)


def test_agc_excludes_detect_head_final_convs_by_default():
    head = torch.nn.Module()
    head.model = torch.nn.ModuleList([torch.nn.Conv2d(2, 2, 1)])
    det = torch.nn.Module()
    det.cv2 = torch.nn.ModuleList([torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.Conv2d(2, 2, 1),
                                                       torch.nn.Conv2d(2, 4, 1))])
    head.model.append(det)
    for p in head.parameters():
        p.grad = torch.full_like(p, 100.0)
    names = [n for n, _ in head.named_parameters()]
    assert "model.1.cv2.0.2.weight" in names
    make_clipper("agc")(head.named_parameters())
    grads = dict((n, p.grad) for n, p in head.named_parameters())
    assert torch.all(grads["model.1.cv2.0.2.weight"] == 100.0)  # excluded: untouched
    assert torch.all(grads["model.1.cv2.0.1.weight"] < 100.0)  # clipped
    assert DEFAULT_AGC_EXCLUDE


def test_autoclip_threshold_is_percentile_of_history():
    model = _model(5)
    clipper = make_clipper("autoclip", percentile=25.0)
    observed = []
    for step in range(12):
        for p in model.parameters():
            p.grad = torch.randn_like(p) * (1 + step % 4)
        ref = copy.deepcopy(model)
        for a, b in zip(ref.parameters(), model.parameters(), strict=True):
            a.grad = b.grad.clone()
        result = clipper(_named(model))
        observed.append(float(result.total_norm))
        threshold = np.percentile(observed, 25.0)
        assert result.threshold == pytest.approx(threshold)
        assert list(clipper.history) == pytest.approx(observed)
        torch.nn.utils.clip_grad_norm_(ref.parameters(), threshold)
        for a, b in zip(_grads(model), _grads(ref), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert autoclip_threshold([1.0, 2.0, 3.0], 50) == 2.0


def test_autoclip_warm_start_and_window_and_state_round_trip():
    model = _model(6)
    clipper = make_clipper("autoclip", percentile=10.0, history=3)
    first = clipper(_named(model))
    assert float(first.clip_coef) == pytest.approx(1.0, abs=1e-5)  # history == [current]: no clipping
    for _ in range(5):
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        clipper(_named(model))
    assert len(clipper.history) == 3
    fresh = make_clipper("autoclip", percentile=10.0, history=3)
    fresh.load_state_dict(clipper.state_dict())
    assert list(fresh.history) == list(clipper.history)
    with pytest.raises(ValueError, match="mode"):
        make_clipper("norm").load_state_dict(clipper.state_dict())


def test_layer_norm_bounds_each_layer():
    model = _model(7, 10.0)
    make_clipper("layer_norm", max_norm=1.5)(_named(model))
    per_layer: dict[str, float] = {}
    for name, p in model.named_parameters():
        per_layer[layer_of(name)] = per_layer.get(layer_of(name), 0.0) + float(p.grad.norm() ** 2)
    assert len(per_layer) == 4  # conv, bn, conv, linear
    for key, sq in per_layer.items():
        assert np.sqrt(sq) <= 1.5 + 1e-4, key


def test_nonfinite_gradients_are_left_for_the_caller():
    model = _model(8)
    first = next(model.parameters())
    first.grad[0] = float("nan")
    kept = _grads(model)
    result = make_clipper("norm", max_norm=0.1)(_named(model))
    assert not torch.isfinite(result.total_norm)
    for a, b in zip(_grads(model), kept, strict=True):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_none_changes_nothing_and_reports_norm():
    model = _model(9)
    kept = _grads(model)
    result = make_clipper("none")(_named(model))
    ref = torch.linalg.vector_norm(torch.stack([g.norm() for g in kept]))
    torch.testing.assert_close(result.total_norm, ref)
    for a, b in zip(_grads(model), kept, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("mode", "params", "match"), [
    ("bogus", {}, "unknown clip mode 'bogus'; modes: stock, none, norm"),
    ("norm", {"max_norm": -1.0}, r"clip.max_norm must be > 0, got -1.0"),
    ("autoclip", {"percentile": 0.0}, r"clip.percentile must be in \(0, 100\]"),
    ("value", {"max_norm": 1.0}, "takes"),
])
def test_invalid_parameters(mode, params, match):
    with pytest.raises(ValueError, match=match):
        make_clipper(mode, **params)


@pytest.mark.parametrize(("mode", "state", "named"), [
    ("autoclip", {"mode": "autoclip", "history": [float("nan"), 1.0], "zclip": None}, "history"),
    ("autoclip", {"mode": "autoclip", "history": [1.0, -2.0], "zclip": None}, "history"),
    ("autoclip", {"mode": "autoclip", "history": "abc", "zclip": None}, "history"),
    ("autoclip", {"mode": "autoclip", "history": [True], "zclip": None}, "history"),
    ("zclip", {"mode": "zclip", "history": None, "zclip": {"buffer": [], "mean": 1.0, "var": -1.0}}, "var"),
    ("zclip", {"mode": "zclip", "history": None, "zclip": {"buffer": [], "mean": float("nan"), "var": 1.0}}, "mean"),
    ("zclip", {"mode": "zclip", "history": None, "zclip": {"buffer": [float("inf")], "mean": None, "var": None}},
     "buffer"),
    ("zclip", {"mode": "zclip", "history": None, "zclip": {"buffer": [], "mean": 1.0, "var": None}}, "var"),
    ("norm", {"mode": "autoclip", "history": [1.0], "zclip": None}, "mode"),
])
def test_a_clip_state_read_back_is_refused_whole_when_it_could_poison_the_gradients(mode, state, named):
    """A state file is untrusted input. An AutoClip history holding NaN made the threshold NaN and every gradient NaN
    on the next step (the step itself finite, so applied); a negative ZClip variance raised a math domain error at
    the first step, a NaN mean switched ZClip off for the rest of the run. Now such a state raises a ValueError
    naming the field, and the clipper keeps the state it had (loading is all or nothing). Oracle: the gradients of
    the next step against a clipper that never loaded it."""
    torch.manual_seed(0)
    kw = {"max_norm": 1.0} if mode == "norm" else {}
    fresh, loaded = make_clipper(mode, **kw), make_clipper(mode, **kw)
    with pytest.raises(ValueError, match=named):
        loaded.load_state_dict(state)
    model = torch.nn.Linear(4, 3)
    model(torch.randn(8, 4)).pow(2).sum().backward()
    twin = copy.deepcopy(model)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        b.grad = a.grad.clone()  # a deep copy leaves gradients behind
    fresh(model.named_parameters())
    loaded(twin.named_parameters())
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.isfinite(b.grad).all() and torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("mode", ["norm", "value", "agc", "layer_norm", "autoclip", "zclip"])
def test_a_clipper_given_no_gradient_leaves_everything_as_it_is(mode):
    """An empty parameter list, or parameters none of which has a gradient (a frozen model, a step before the first
    backward), crashed every policy ("shape '[0]' is invalid"). Now nothing is clipped: coefficient 1, norm 0."""
    kw = {"max_norm": 1.0} if mode in ("norm", "layer_norm") else {"clip_value": 1.0} if mode == "value" else {}
    clipper = make_clipper(mode, **kw)
    for named in ([], list(torch.nn.Linear(2, 2).named_parameters())):
        result = clipper(named)
        assert float(result.total_norm) == 0.0 and float(result.clip_coef) == 1.0 and not result.names


def test_the_plugin_starts_the_clipping_history_afresh_on_a_poisoned_state():
    """A resume read an AutoClip history holding NaN into the clipper (then every gradient NaN) or, for a mode
    mismatch, stopped with a traceback. Now it warns in one line and clips from a fresh history."""
    import logging

    from ultralytics.utils import LOGGER

    from gradkit.config import load_config
    from gradkit.integrations.ultralytics import GradkitCallback

    plugin = GradkitCallback(load_config(None, {"clip.mode": "autoclip"}))
    plugin.clipper = make_clipper("autoclip")
    state = {**plugin.state_dict(), "clip": {"mode": "autoclip", "history": [float("nan")], "zclip": None}}
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        plugin.load_state_dict(state)
    finally:
        LOGGER.removeHandler(handler)
    said = [m for m in said if "clipping history starts afresh" in m]
    assert len(said) == 1 and "history" in said[0] and list(plugin.clipper.history) == []


@pytest.mark.parametrize("mode", ["value", "agc", "layer_norm", "autoclip"])
def test_a_step_nothing_clipped_reports_coefficient_one(mode):
    """``clip_coef`` is 1 "when nothing changed" (its docstring; the clip rate counts steps below 1): an all-zero
    gradient gave 0 for value, agc and layer_norm, and AutoClip's first step (threshold = the norm itself) gave
    norm / (norm + 1e-6), below 1 - 1e-6 for every norm under 1, so the README's "nothing is clipped" step was
    counted as clipped. Oracle: the gradients, unchanged in both cases."""
    kw = {"max_norm": 1.0} if mode == "layer_norm" else {"clip_value": 1.0} if mode == "value" else {}
    for scale in (0.0, 1e-4):
        model = torch.nn.Linear(3, 2)
        for p in model.parameters():
            p.data.fill_(1.0)  # AGC's bound: 0.01 of a unit's weight norm, far above these gradients
            p.grad = torch.full_like(p, scale)
        before = [p.grad.clone() for p in model.parameters()]
        result = make_clipper(mode, **kw)(list(model.named_parameters()))
        assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters(), strict=True))
        assert float(result.clip_coef) == 1.0, (mode, scale, float(result.clip_coef))


@pytest.mark.parametrize(("mode", "norm_type"), [("norm", float("inf")), ("norm", 1.0), ("layer_norm", float("inf")),
                                                 ("layer_norm", 1.0), ("norm", 2.0)])
def test_the_norms_a_clipper_reports_are_l2_whatever_norm_its_bound_applies_to(mode, norm_type):
    """The monitor combines per-tensor norms as L2 norms (per layer, the total, the noise scale); with
    ``norm_type`` inf or 1 the clipper reported p-norms, so every recorded norm was neither (sqrt of a sum of
    squared max-norms). The bound still applies to the p-norm (torch.nn.utils.clip_grad_norm_'s gradients).
    Oracle: naive L2 norms, and torch's own clipping for the global norm."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3))
    model(torch.randn(16, 6)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    result = make_clipper(mode, max_norm=0.5, norm_type=norm_type)(list(model.named_parameters()))
    l2 = torch.stack([g.norm(2) for g in grads])
    assert torch.allclose(result.tensor_norms, l2) and torch.isclose(result.total_norm, l2.norm(2))
    clipped = torch.stack([p.grad.norm(2) for p in model.parameters()])
    assert torch.isclose(result.total_norm_clipped, clipped.norm(2))
    if mode == "norm":
        twin = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for t, g in zip(twin, grads, strict=True):
            t.grad = g.clone()
        torch.nn.utils.clip_grad_norm_(twin, 0.5, norm_type=norm_type)
        assert all(torch.allclose(t.grad, p.grad) for t, p in zip(twin, model.parameters(), strict=True))


@pytest.mark.parametrize("window", [None, 1, 7])
def test_autoclip_s_running_percentile_equals_numpy_s_over_the_history(window):
    """AutoClip rebuilt an array of every norm seen and took its percentile at every step (O(n) a step, 15 ms at
    300k steps with the default unbounded history); it now keeps the history sorted as it grows. Oracle:
    np.percentile of the same norms (the window's last ones), at each step, with repeats and a state round trip."""
    from gradkit.clip import NormHistory

    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(size=300), np.full(20, 1.5), rng.lognormal(size=50)])
    history = NormHistory(window)
    for n, v in enumerate(values.tolist(), start=1):
        history.append(v)
        seen = values[:n] if window is None else values[max(0, n - window):n]
        for q in (10.0, 50.0, 99.0, 100.0):
            assert history.percentile(q) == pytest.approx(float(np.percentile(seen, q)), rel=1e-12, abs=1e-15)
    assert list(history) == list(seen)  # in order: what the state file keeps
    with pytest.raises(ValueError, match="history"):
        make_clipper("autoclip", history=10.5)


@pytest.mark.parametrize("mode", ["norm", "layer_norm"])
def test_a_huge_finite_gradient_is_clipped_under_an_inf_norm_as_torch_clips_it(mode):
    """With ``norm_type`` inf the bound applies to the largest element; a gradient of 1e20 everywhere is finite
    and torch.nn.utils.clip_grad_norm_ clips it to 1. Reporting L2 norms must not turn it into a non-finite step
    (its float32 L2 norm overflows). Oracle: torch's clipping; the reported norm, the float64 L2 norm."""
    p = torch.nn.Parameter(torch.zeros(4))
    p.grad = torch.full((4,), 1e20)
    ref = torch.nn.Parameter(torch.zeros(4))
    ref.grad = p.grad.clone()
    result = make_clipper(mode, max_norm=1.0, norm_type=float("inf"))([("w", p)])
    torch.nn.utils.clip_grad_norm_([ref], 1.0, norm_type=float("inf"))
    assert torch.allclose(p.grad, ref.grad)
    assert float(result.total_norm) == pytest.approx(2e20, rel=1e-6) and float(result.clip_coef) < 1


def test_a_vanishing_gradient_left_alone_reports_coefficient_one():
    """Gradients of 1e-14 (L2 norm below 1e-12) untouched by AGC and value clipping reported a coefficient of 0.03:
    every step of a vanishing-gradient run counted as clipped."""
    for mode, kw in (("value", {"clip_value": 1.0}), ("agc", {}), ("layer_norm", {"max_norm": 1.0})):
        model = torch.nn.Linear(3, 2)
        for q in model.parameters():
            q.data.fill_(1.0)
            q.grad = torch.full_like(q, 1e-14)
        assert float(make_clipper(mode, **kw)(list(model.named_parameters())).clip_coef) == 1.0, mode


@pytest.mark.parametrize("history", [[10**400], 0, {}, "x"])
def test_a_clip_state_with_an_unreadable_history_is_a_value_error(history):
    """A state file holds what ``torch.load(weights_only=True)`` gives back: an int too large for a float raised
    OverflowError past the resume's handler; a falsy non-list (0, {}) was read as an empty history."""
    with pytest.raises(ValueError, match="history"):
        make_clipper("autoclip").load_state_dict({"mode": "autoclip", "history": history, "zclip": None})


def test_autoclip_reads_a_long_history_back_at_once():
    """A resume read the history back one sorted insertion at a time (quadratic: 80 s for a million norms);
    it is sorted once. Oracle: the percentile of the same norms."""
    from gradkit.clip import NormHistory

    norms = np.random.default_rng(1).lognormal(size=20000).tolist()
    history = NormHistory(None)
    history.extend(norms)
    assert list(history) == norms and history.percentile(10.0) == pytest.approx(float(np.percentile(norms, 10)))
