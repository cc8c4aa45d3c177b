"""The rollback core: snapshots restore bit-exactly, the known-good pair, the trigger, the lr factor."""

from __future__ import annotations

import copy

import pytest
import torch

from gradkit.config import ConfigError, load_config
from gradkit.monitor.alerts import WEIGHT_GROWTH, Alert
from gradkit.monitor.rollback import (
    MIN_BEST_FITNESS,
    MIN_SPIKE_HISTORY,
    DivergenceWatch,
    SnapshotPair,
    StateSnapshot,
    divergence_reason,
    fitness_collapse_reason,
    scaled_lr,
    scaler_state_for_restore,
)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 4))


def _train(model, optimizer, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 6, 6, generator=gen)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def _state(model, optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())


def _assert_equal_state(a, b) -> None:
    (ma, oa), (mb, ob) = a, b
    assert ma.keys() == mb.keys()
    for k in ma:
        assert torch.equal(ma[k], mb[k]), k
    assert oa["state"].keys() == ob["state"].keys()
    for i in oa["state"]:
        for k, v in oa["state"][i].items():
            assert torch.equal(v, ob["state"][i][k]) if isinstance(v, torch.Tensor) else v == ob["state"][i][k]


@pytest.mark.parametrize("where", ["cpu", None])  # host copies; copies on the tensors' own device
@pytest.mark.parametrize("make_opt", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.AdamW(p, lr=1e-2),
])
def test_snapshot_restores_model_and_optimizer_bit_exactly_in_place(make_opt, where):
    model = _model()
    opt = make_opt(model.parameters())
    _train(model, opt, 3, seed=1)
    oracle = _state(model, opt)
    ema = copy.deepcopy(model)
    snap = StateSnapshot(where)
    snap.capture(3, {"model": model, "ema": ema}, opt, {"updates": 7})
    ema_oracle = copy.deepcopy(ema.state_dict())
    ids = [id(p) for p in model.parameters()]
    _train(model, opt, 4, seed=2)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    assert snap.restore({"model": model, "ema": ema}, opt) == {"updates": 7}
    _assert_equal_state(_state(model, opt), oracle)
    for k, v in ema_oracle.items():
        assert torch.equal(ema.state_dict()[k], v), k
    assert [id(p) for p in model.parameters()] == ids  # the optimizer still holds the live parameters
    # training on from the restored state equals training on from a copy taken at the snapshot
    twin, twin_opt = _model(), make_opt(_model().parameters())
    twin.load_state_dict(oracle[0])
    twin_opt = make_opt(twin.parameters())
    twin_opt.load_state_dict(oracle[1])
    _train(model, opt, 2, seed=3)
    _train(twin, twin_opt, 2, seed=3)
    _assert_equal_state(_state(model, opt), _state(twin, twin_opt))


def test_snapshot_reuses_its_buffers_and_clears_state_created_after_it():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    snap = StateSnapshot("cpu")
    snap.capture(0, {"model": model}, opt)  # before the first step: no momentum yet
    first = [t.data_ptr() for t in snap._modules["model"]]
    _train(model, opt, 2, seed=4)
    assert opt.state
    snap.restore({"model": model}, opt)
    assert not opt.state  # the momentum created after the snapshot is gone, as in a fresh optimizer
    snap.capture(1, {"model": model}, opt)
    assert [t.data_ptr() for t in snap._modules["model"]] == first
    assert snap.nbytes == sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_snapshot_pair_returns_a_state_k_to_2k_steps_old():
    pair = SnapshotPair(every=3, device="cpu")
    taken = []

    def capture(snap):
        taken.append(step)

    for step in range(1, 11):
        pair.after_step(step, capture)
        if step >= 6:  # from then on the known-good state is 3 to 5 steps old
            assert 3 <= step - pair.good().step < 6, (step, pair.good().step)
    assert taken == [1, 4, 7, 10]
    assert pair.good().step == 7  # at step 10: 7 survived three steps; 10 is only a candidate
    pair.after_rollback()
    assert pair.good().step == 7
    step = 11
    pair.after_step(step, capture)  # a fresh candidate right after the rollback
    assert taken[-1] == 11 and pair.good().step == 7


def test_snapshot_pair_before_any_confirmation_falls_back_to_the_candidate():
    pair = SnapshotPair(every=5, device="cpu")
    assert pair.good() is None
    pair.after_step(1, lambda snap: None)
    assert pair.good().step == 1
    pair.after_rollback()
    assert pair.good().step == 1  # kept: it is all there is


def _alert(kind: str, arm: str = "") -> Alert:
    return Alert(kind, 1, 5, "3", "Conv", 1.0, 1.0, "", arm=arm)


def _reason(**kw):
    base = dict(consecutive_nonfinite=0, nonfinite_patience=3, total_norm=100.0, norm_median=100.0,
                norm_spike=10.0, loss=5.0, loss_median=5.0, loss_spike=3.0, alerts=())
    return divergence_reason(**{**base, **kw})


def test_divergence_reason_cases():
    assert _reason() is None
    assert "3 consecutive" in _reason(consecutive_nonfinite=3)
    assert _reason(consecutive_nonfinite=2) is None
    assert _reason(alerts=[_alert("exploding"), _alert("diverging", "spike")]) == "diverging diagnosis (spike)"
    assert _reason(alerts=[_alert("diverging", WEIGHT_GROWTH)]) is None  # the weight-growth arm only warns
    assert _reason(alerts=[_alert("diverging", WEIGHT_GROWTH), _alert("diverging", "trend")]) == \
        "diverging diagnosis (trend)"
    assert _reason(total_norm=1001.0) is None  # a norm spike alone is common in YOLO training
    assert _reason(loss=16.0) is None  # so is a loss spike alone
    assert "total norm 1001" in _reason(total_norm=1001.0, loss=16.0)
    assert _reason(total_norm=1001.0, loss=float("inf")) is not None
    assert _reason(total_norm=1001.0, loss=16.0, norm_median=None, loss_median=None) is None  # no history yet


def test_divergence_watch_medians_need_history_and_skip_unhealthy_steps():
    watch = DivergenceWatch(history=20)
    for i in range(MIN_SPIKE_HISTORY - 1):
        watch.observe(100.0 + i, 4.0)
    assert watch.medians() == (None, None)
    watch.observe(float("nan"), 4.0)
    watch.observe(50.0, float("inf"))
    assert watch.medians() == (None, None)
    watch.observe(200.0, 6.0)
    assert watch.medians() == (104.5, 4.0)


def test_scaled_lr_scales_one_step_and_restores_the_exact_values():
    model = _model()
    opt = torch.optim.SGD([{"params": list(model.parameters())[:2], "lr": 0.1},
                           {"params": list(model.parameters())[2:], "lr": 0.03}])
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append([g["lr"] for g in o.param_groups]))
    with scaled_lr(opt, 0.25):
        _train(model, opt, 1, seed=5)
    assert seen == [[0.1 * 0.25, 0.03 * 0.25]]
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.03]


def test_rollback_config_errors():
    cfg = load_config("default", {"monitor.on_divergence": "rollback", "monitor.rollback.every": 5})
    assert cfg.monitor.rollback.every == 5 and cfg.monitor.rollback.lr_factor == 0.5
    with pytest.raises(ConfigError, match=r"nonfinite_patience \(10\) must be below max_consecutive_nonfinite"):
        load_config("default", {"monitor.on_divergence": "rollback", "monitor.rollback.nonfinite_patience": 10})
    with pytest.raises(ConfigError, match="needs on_nonfinite=skip"):
        load_config("default", {"monitor.on_divergence": "rollback", "monitor.on_nonfinite": "warn"})
    with pytest.raises(ConfigError, match=r"monitor\.rollback\.lr_factor"):
        load_config("default", {"monitor.rollback.lr_factor": 1.5})


def test_restored_grad_scaler_keeps_the_lower_scale():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(torch.ones(()))  # materialises the scale
    saved = scaler.state_dict()
    scaler.update(2.0**10)  # overflows since the snapshot lowered it
    scaler.load_state_dict(scaler_state_for_restore(saved, scaler.get_scale()))
    assert scaler.get_scale() == 2.0**10
    assert scaler_state_for_restore(saved, 2.0**20)["scale"] == 2.0**16  # a grown scale goes back down
    assert scaler.state_dict()["_growth_tracker"] == saved["_growth_tracker"]
    # a scale driven down to 1 by the fault's non-finite gradients is not kept: float16 would underflow
    assert scaler_state_for_restore(saved, 1.0)["scale"] == 2.0**16
    assert scaler_state_for_restore(saved, 2.0**-3)["scale"] == 2.0**16
    assert scaler_state_for_restore(saved, 2.0)["scale"] == 2.0


def test_fitness_collapse_reason_cases():
    assert fitness_collapse_reason(0.05, None, 0.2) is None  # no validation to compare with yet
    assert fitness_collapse_reason(0.0, MIN_BEST_FITNESS * 0.9, 0.2) is None  # the best is still noise
    assert fitness_collapse_reason(0.0201, 0.1, 0.2) is None  # just above 0.2 x 0.1
    assert "0.0199 < 0.2x the best 0.1" in fitness_collapse_reason(0.0199, 0.1, 0.2)
    assert fitness_collapse_reason(0.04, 0.13, 0.5) is not None  # the drop share is the caller's
    assert "nan" in fitness_collapse_reason(float("nan"), 0.1, 0.2)
    # the healthy grid run that dipped furthest (0.119 -> 0.047 -> 0.148) is not a collapse at the default
    assert fitness_collapse_reason(0.047, 0.119, 0.2) is None


def test_snapshot_pair_clear_forgets_both_states():
    pair = SnapshotPair(every=2, device="cpu")
    for step in range(1, 6):
        pair.after_step(step, lambda snap: None)
    assert pair.good().step == 3
    pair.clear()
    assert pair.good() is None
    pair.after_step(6, lambda snap: None)
    assert pair.good().step == 6


def test_guard_state_round_trips_reads_the_older_key_and_refuses_impossible_values():
    from gradkit.config import ConfigError, RollbackConfig
    from gradkit.integrations.ultralytics.rollback import RollbackGuard

    guard = RollbackGuard(RollbackConfig())
    guard.attempts, guard.epoch_factor, guard.run_factor, guard.fitness_rollbacks = 2, 0.5, 0.25, 1
    fresh = RollbackGuard(RollbackConfig())
    fresh.load_state_dict(guard.state_dict())
    assert fresh.state_dict() == guard.state_dict() and fresh.lr_factor == 0.125
    fresh.load_state_dict({"attempts": 1, "lr_factor": 0.5, "epoch_rollbacks": 0})  # written before run_factor
    assert (fresh.epoch_factor, fresh.run_factor, fresh.fitness_rollbacks) == (0.5, 1.0, 0)
    for bad in ({"attempts": -1, "epoch_rollbacks": 0}, {"attempts": 0, "epoch_rollbacks": 0, "run_factor": 0.0},
                {"attempts": 0, "epoch_rollbacks": 0, "epoch_factor": 2.0}, {"attempts": "x", "epoch_rollbacks": 0},
                {"epoch_rollbacks": 0}):
        with pytest.raises(ConfigError, match="rollback state"):
            fresh.load_state_dict(bad)
