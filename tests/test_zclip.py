"""ZClip against the authors' reference implementation (PyPI ``zclip``, a test-only dependency)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from zclip import ZClip

from gradkit.clip import make_clipper, zclip_threshold
from gradkit.config import ConfigError, load_config

STEPS = 500


def _norm_sequence(seed: int = 0) -> np.ndarray:
    """Total norms shaped like a YOLO run: 10^3 decaying to 10^2 with noise, planted spikes of 5-50x."""
    rng = np.random.default_rng(seed)
    base = 10 ** np.linspace(3, 2, STEPS) * np.exp(rng.normal(0, 0.25, STEPS))
    spikes = rng.choice(np.arange(30, STEPS), size=25, replace=False)
    base[spikes] *= rng.uniform(5, 50, spikes.size)
    return base


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(8, 4))


def _set_grads(models, step: int, norm: float) -> None:
    gen = torch.Generator().manual_seed(step)
    params = list(models[0].parameters())
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    scale = norm / float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
    for m in models:
        for p, g in zip(m.parameters(), grads, strict=True):
            p.grad = g * scale


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def _total(grads) -> float:
    return float(torch.linalg.vector_norm(torch.stack([g.double().norm() for g in grads])))


@pytest.mark.parametrize("params", [
    {},  # the paper's defaults, no absolute cap
    {"alpha": 0.9, "z_thresh": 2.0, "warmup_steps": 10, "clip_factor": 0.7},
    {"warmup_steps": 5, "max_norm": 300.0},  # the reference's absolute cap, also during warm-up
])
def test_zclip_matches_reference_over_500_steps(params):
    ref_kw = {"max_grad_norm": params.get("max_norm"), **{k: v for k, v in params.items() if k != "max_norm"}}
    reference = ZClip(mode="zscore", clip_option="adaptive_scaling", **ref_kw)
    ours = make_clipper("zclip", **params)
    ref_model, our_model = _model(), _model()
    our_model.load_state_dict(ref_model.state_dict())
    norms = _norm_sequence()
    warmup = params.get("warmup_steps", 25)
    clipped = 0
    for step, norm in enumerate(norms):
        _set_grads((ref_model, our_model), step, float(norm))
        before = _grads(ref_model)
        ref_total = reference.step(ref_model)
        result = ours(our_model.named_parameters())
        ref_coef = _total(_grads(ref_model)) / _total(before)
        assert float(result.total_norm) == pytest.approx(ref_total, rel=1e-6), step
        assert float(result.clip_coef) == pytest.approx(ref_coef, rel=1e-6), step
        for a, b in zip(_grads(our_model), _grads(ref_model), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)
        if step >= warmup:
            assert ours.zstats.mean == pytest.approx(reference.mean, rel=1e-6)
            assert ours.zstats.var == pytest.approx(reference.var, rel=1e-6)
        elif "max_norm" not in params:
            assert float(result.clip_coef) == 1.0  # no clipping while the statistics warm up
        clipped += float(result.clip_coef) < 1
    assert clipped >= 10  # the planted spikes were clipped: the comparison covered the clipping branch


def test_zclip_bound_by_hand():
    # mu 100, sigma 10: a norm of 150 has z 5 > 2.5, so the bound is 100 + 2.5 * 10 / (5 / 2.5) = 112.5
    assert zclip_threshold(150.0, 100.0, 100.0, 2.5, 0.0, 1.0) == pytest.approx(112.5)
    assert zclip_threshold(150.0, 100.0, 100.0, 2.5, 0.0, 0.8) == pytest.approx(90.0)
    assert zclip_threshold(124.0, 100.0, 100.0, 2.5, 0.0, 1.0) is None  # z 2.4: no outlier


def test_zclip_state_survives_a_round_trip_mid_sequence():
    norms = _norm_sequence(1)
    whole, first = make_clipper("zclip"), make_clipper("zclip")
    model_a, model_b = _model(), _model()
    coefs_whole, coefs_split = [], []
    for step, norm in enumerate(norms):
        _set_grads((model_a,), step, float(norm))
        coefs_whole.append(float(whole(model_a.named_parameters()).clip_coef))
    for step, norm in enumerate(norms[:20]):  # stop inside the warm-up: the buffer must travel too
        _set_grads((model_b,), step, float(norm))
        coefs_split.append(float(first(model_b.named_parameters()).clip_coef))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = make_clipper("zclip")
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    for step, norm in enumerate(norms[20:], start=20):
        _set_grads((model_b,), step, float(norm))
        coefs_split.append(float(resumed(model_b.named_parameters()).clip_coef))
    assert coefs_split == coefs_whole
    assert resumed.zstats.mean == whole.zstats.mean and resumed.zstats.var == whole.zstats.var


def test_zclip_skips_nonfinite_norms_without_poisoning_the_statistics():
    model = _model()
    clipper = make_clipper("zclip", warmup_steps=2)
    for step in range(3):
        _set_grads((model,), step, 100.0)
        clipper(model.named_parameters())
    mean, var = clipper.zstats.mean, clipper.zstats.var
    next(model.parameters()).grad[0] = float("nan")
    result = clipper(model.named_parameters())
    assert not math.isfinite(float(result.total_norm)) and float(result.clip_coef) == 1.0
    assert (clipper.zstats.mean, clipper.zstats.var) == (mean, var)


def test_zclip_config_keys_and_errors():
    cfg = load_config("default", {"clip.mode": "zclip", "clip.z_thresh": 3.0, "clip.max_norm": 1000.0})
    assert cfg.clip.params() == {"z_thresh": 3.0, "max_norm": 1000.0}
    clipper = make_clipper(cfg.clip.mode, **cfg.clip.params())
    assert clipper.params["alpha"] == 0.97 and clipper.params["warmup_steps"] == 25
    with pytest.raises(ConfigError, match="alpha is not a parameter of clip mode 'norm'"):
        load_config("default", {"clip.mode": "norm", "clip.alpha": 0.9})
    with pytest.raises(ConfigError, match=r"clip\.alpha: Input should be less than 1"):
        load_config("default", {"clip.mode": "zclip", "clip.alpha": 1.5})
    with pytest.raises(ValueError, match="0 < alpha < 1"):
        make_clipper("zclip", alpha=1.0)


class _Interrupt(Exception):
    pass


@pytest.mark.e2e
def test_zclip_in_the_trainer_follows_the_reference_across_a_resume(tiny_data, tmp_path):
    """Every step's clipped total norm equals the reference fed the same pre-clip norms in one go,
    though training stopped after epoch 2 and resumed: the statistics travel in last.gradkit.pt."""
    from ultralytics import YOLO

    import gradkit
    from conftest import read_csv, train_tiny

    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    params = {"alpha": 0.5, "warmup_steps": 4, "z_thresh": 0.5}  # clips often on a 20-step run
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "zclip", **{f"clip.{k}": v for k, v in params.items()}},
                   callbacks=[("on_train_epoch_start", crash)], epochs=4)
    run = tmp_path / "run"
    saved = torch.load(run / "weights" / "last.gradkit.pt", weights_only=False)
    assert saved["step"] > params["warmup_steps"] and saved["clip"]["zclip"]["mean"] is not None
    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None)
    model.train(resume=True)
    steps = read_csv(run / "gradient_steps.csv")
    assert [int(s["step"]) for s in steps] == list(range(1, model.gradkit.step + 1))
    assert model.gradkit.step > saved["step"]

    reference = ZClip(max_grad_norm=None, **params)
    probe = torch.nn.Linear(1, 1, bias=False)
    clipped = {"before": 0, "after": 0}
    for row in steps:
        total = float(row["total_norm"])
        probe.weight.grad = torch.full((1, 1), total)
        reference.step(probe)
        assert float(row["total_norm_clipped"]) == pytest.approx(float(probe.weight.grad.abs()), rel=1e-5), row
        clipped["after" if int(row["step"]) > saved["step"] else "before"] += int(row["clipped"])
    assert clipped["before"] >= 1 and clipped["after"] >= 1, clipped
