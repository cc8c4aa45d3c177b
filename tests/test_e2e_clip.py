"""Clipping inside the real trainer: bounds at every step, once per optimizer step, resume."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import read_csv, train_tiny
from gradkit.clip import DEFAULT_AGC_EXCLUDE, autoclip_threshold

pytestmark = pytest.mark.e2e


def _post_clip_observer(record):
    """optimizer.register_step_pre_hook sees exactly the gradients the optimizer applies."""

    def install(trainer):
        plugin = next(fn.__self__ for fn in trainer.callbacks["on_pretrain_routine_end"]
                      if hasattr(fn, "__self__"))
        calls = {"n": 0}
        original = plugin.clipper.__call__

        class Counting(type(plugin.clipper)):
            def __call__(self, named):
                calls["n"] += 1
                return original(named)

        plugin.clipper.__class__ = Counting
        record["calls"] = calls

        def pre_step(optimizer, args, kwargs):
            grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
            weights = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
            record["steps"].append((grads, weights))

        trainer.optimizer.register_step_pre_hook(pre_step)

    return [("on_train_start", install)]


def _layer_norms(grads):
    per = defaultdict(float)
    for n, g in grads.items():
        per[n.split(".")[1]] += float((g.double() ** 2).sum())
    return {k: np.sqrt(v) for k, v in per.items()}


@pytest.mark.parametrize(("mode", "params"), [
    ("norm", {"max_norm": 2.0}),
    ("value", {"clip_value": 0.05}),
    ("agc", {"clip_factor": 0.01}),
    ("autoclip", {"percentile": 50.0}),
    ("layer_norm", {"max_norm": 0.5}),
])
def test_policy_bound_holds_at_every_step(tiny_data, tmp_path, mode, params):
    record = {"steps": []}
    overrides = {"clip.mode": mode, **{f"clip.{k}": v for k, v in params.items()}}
    model, run = train_tiny(tiny_data, tmp_path, overrides=overrides, callbacks=_post_clip_observer(record),
                            nbs=8, epochs=2)
    plugin = model.gradkit
    assert record["calls"]["n"] == plugin.step == len(record["steps"]) >= 2  # once per optimizer step
    rows = read_csv(run / "gradients.csv")
    step_rows = read_csv(run / "gradient_steps.csv")
    totals = [float(r["total_norm"]) for r in step_rows]
    for i, (grads, weights) in enumerate(record["steps"], start=1):
        layer = _layer_norms(grads)
        ours = {r["layer"]: float(r["grad_norm_clipped"]) for r in rows if int(r["step"]) == i}
        for k, v in layer.items():
            assert ours[k] == pytest.approx(v, rel=1e-4, abs=1e-8), (i, k)
        total = np.sqrt(sum(v**2 for v in layer.values()))
        if mode == "norm":
            assert total <= 2.0 * (1 + 1e-5)
        elif mode == "value":
            assert max(float(g.abs().max()) for g in grads.values()) <= 0.05 + 1e-7
        elif mode == "layer_norm":
            assert max(layer.values()) <= 0.5 * (1 + 1e-4)
        elif mode == "autoclip":
            assert total <= autoclip_threshold(totals[:i], 50.0) * (1 + 1e-4)
        elif mode == "agc":
            import re

            for n, g in grads.items():
                if any(re.search(p, n) for p in DEFAULT_AGC_EXCLUDE):
                    continue
                w = weights[n].float()
                dims = tuple(range(1, g.ndim)) if g.ndim > 1 else None
                g_n = g.norm(2, dim=dims) if dims else g.norm()
                w_n = (w.norm(2, dim=dims) if dims else w.norm()).clamp(min=1e-3)
                assert torch.all(g_n <= 0.01 * w_n * (1 + 1e-4) + 1e-9), n


class _Interrupt(Exception):
    pass


def test_resume_restores_autoclip_history_and_step_count(tiny_data, tmp_path):
    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip", "clip.percentile": 30.0},
                   callbacks=[("on_train_epoch_start", crash)], epochs=4)
    run = tmp_path / "run"
    saved = torch.load(run / "weights" / "last.gradkit.pt", weights_only=False)
    assert saved["step"] == len(saved["clip"]["history"]) >= 4
    steps_before = read_csv(run / "gradient_steps.csv")
    assert [int(s["step"]) for s in steps_before] == list(range(1, saved["step"] + 1))

    from ultralytics import YOLO

    import gradkit

    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None)  # a different config: the run resumes with the one it started with
    model.train(resume=True)
    assert model.gradkit.cfg.clip.mode == "autoclip" and model.gradkit.cfg.clip.percentile == 30.0
    plugin = model.gradkit
    history = list(plugin.clipper.history)
    assert history[: saved["step"]] == pytest.approx(saved["clip"]["history"])
    steps = read_csv(run / "gradient_steps.csv")
    assert [int(s["step"]) for s in steps] == list(range(1, plugin.step + 1))  # continues, no restart
    assert plugin.step > saved["step"]
    first_resumed = steps[saved["step"]]
    expected = autoclip_threshold(history[: saved["step"] + 1], 30.0)
    assert float(first_resumed["total_norm_clipped"]) == pytest.approx(
        min(float(first_resumed["total_norm"]), expected), rel=1e-4)


def test_finetune_from_checkpoint_starts_plugin_state_fresh(tiny_data, tmp_path):
    _, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "autoclip"})
    from ultralytics import YOLO

    import gradkit

    tuned = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(tuned, None, {"clip.mode": "autoclip", "report.enabled": False})
    from conftest import TINY_TRAIN

    tuned.train(data=str(tiny_data), project=str(tmp_path), name="ft", exist_ok=True, **TINY_TRAIN)
    steps = read_csv(tmp_path / "ft" / "gradient_steps.csv")
    assert int(steps[0]["step"]) == 1
    assert len(tuned.gradkit.clipper.history) == tuned.gradkit.step
