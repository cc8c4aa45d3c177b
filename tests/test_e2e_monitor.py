"""The monitor inside the real Ultralytics trainer: oracles on the gradients, planted faults."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from conftest import read_csv, train_tiny

pytestmark = pytest.mark.e2e


def _rows(path):
    return read_csv(path)


def _alerts(run):
    return [json.loads(line) for line in open(run / "gradient_alerts.jsonl", encoding="utf-8") if line.strip()]


def _plugin(trainer):
    from gradkit.integrations.ultralytics import GradkitCallback

    (plugin,) = {getattr(fn, "__self__", None) for fn in trainer.callbacks["on_pretrain_routine_end"]} & {
        getattr(fn, "__self__", None) for fn in trainer.callbacks["on_pretrain_routine_end"]
        if isinstance(getattr(fn, "__self__", None), GradkitCallback)}
    return plugin


def _layer(name: str) -> str:
    return name.split(".")[1]


def test_norms_equal_naive_oracle_with_accumulation_and_amp_scaler(tiny_data, tmp_path):
    """Oracle: per-layer norms recomputed naively from the unscaled gradients at unscale time."""
    naive: list[dict[str, float]] = []
    accumulations: list[int] = []

    def install(trainer):
        # An enabled GradScaler on CPU: backward produces scaled gradients, as under CUDA AMP.
        trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        unscale = trainer.scaler.unscale_

        def recording_unscale(optimizer):
            unscale(optimizer)
            per: dict[str, float] = defaultdict(float)
            for name, p in trainer.model.named_parameters():
                if p.grad is not None:
                    per[_layer(name)] += float((p.grad.double() ** 2).sum())
            naive.append({k: float(np.sqrt(v)) for k, v in per.items()})
            accumulations.append(trainer.accumulate)

        trainer.scaler.unscale_ = recording_unscale

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", install)], nbs=8, epochs=3)
    assert max(accumulations) == 2  # nbs=8, batch=4: two batches per optimizer step
    rows = _rows(run / "gradients.csv")
    steps = _rows(run / "gradient_steps.csv")
    assert len(steps) == len(naive) == model.gradkit.step >= 4
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    for r in rows:
        by_step[int(r["step"])][r["layer"]] = float(r["grad_norm"])
    for i, oracle in enumerate(naive, start=1):
        ours = by_step[i]
        assert ours.keys() == oracle.keys()
        for k in oracle:
            assert ours[k] == pytest.approx(oracle[k], rel=1e-5), (i, k)
        total = np.sqrt(sum(v**2 for v in oracle.values()))
        assert float(steps[i - 1]["total_norm"]) == pytest.approx(total, rel=1e-5)
        # stock clip at 10: the post-clip total respects it
        assert float(steps[i - 1]["total_norm_clipped"]) <= 10.0 * (1 + 1e-5)


def test_healthy_run_no_alerts_and_every_n(tiny_data, tmp_path):
    model, run = train_tiny(tiny_data, tmp_path, overrides={"monitor.alerts.warmup_steps": 3}, heatmap=True)
    steps = model.gradkit.step
    rows = _rows(run / "gradients.csv")
    assert _alerts(run) == []
    assert len(rows) == steps * model.gradkit.stats.num_layers
    assert {r["layer"] + " " + r["module"] for r in rows} >= {"0 Conv", "6 C3k2", "23 Detect"}
    measured = [r for r in rows if np.isfinite(float(r["update_ratio"]))]
    # the update ratio (a copy of the weights) every monitor.update_every=10 steps, from step 1
    assert {int(r["step"]) for r in measured} == set(range(1, steps + 1, 10))
    assert np.median([float(r["update_ratio"]) for r in measured]) > 0  # the step moved the weights
    assert (run / "gradients.png").stat().st_size > 10_000
    assert (run / "gradkit.yaml").exists()
    results = _rows(run / "results.csv")
    assert {"grad/total_norm", "grad/clip_rate", "grad/alerts"} <= set(results[0])
    assert float(results[0]["grad/clip_rate"]) == pytest.approx(1.0)  # stock clip at 10 acts early on

    model2, run2 = train_tiny(tiny_data, tmp_path / "every", overrides={"monitor.every": 2})
    rows2 = _rows(run2 / "gradients.csv")
    assert len(rows2) == (model2.gradkit.step // 2) * model2.gradkit.stats.num_layers
    assert {int(r["step"]) % 2 for r in rows2} == {0}


def _fault_hooks(layer: str, factor: float, onset: int):
    """Multiply the gradients of one layer from optimizer step ``onset`` on, via tensor hooks."""
    state = {"handles": []}

    def arm(trainer):
        plugin = _plugin(trainer)

        def hook(g):
            return g * factor if plugin.step + 1 >= onset else g

        for name, p in trainer.model.named_parameters():
            if _layer(name) == layer and p.requires_grad:
                state["handles"].append(p.register_hook(hook))

    return [("on_train_start", arm)]


@pytest.mark.parametrize(("kind", "layer", "factor"), [
    ("exploding", "8", 1e4),
    ("vanishing", "13", 1e-9),
    ("dead", "4", 0.0),
])
def test_planted_fault_reported_with_kind_and_layer(tiny_data, tmp_path, kind, layer, factor):
    onset = 6
    _, run = train_tiny(tiny_data, tmp_path, callbacks=_fault_hooks(layer, factor, onset), epochs=3,
                            overrides={"monitor.alerts.warmup_steps": 3, "clip.mode": "none"})
    alerts = _alerts(run)
    hits = [a for a in alerts if a["kind"] == kind and a["layer"] == layer]
    assert hits, alerts
    assert onset <= hits[0]["step"] <= onset + 4
    assert hits[0]["module"] in {"C3k2", "Conv", "SPPF", "C2PSA"}
    # nothing else is blamed on another layer
    assert all(a["layer"] in {layer, "total"} for a in alerts), alerts


def _optimizer_state(optimizer):
    return {(id(p), name): t.clone() for p, st in optimizer.state.items() for name, t in st.items()
            if isinstance(t, torch.Tensor)}


def test_planted_nan_is_skipped_and_weights_stay_finite(tiny_data, tmp_path):
    onset, layer = 5, "10"
    snapshots = {}

    def nan_once(trainer):
        plugin = _plugin(trainer)

        def hook(g):
            return g * float("nan") if plugin.step + 1 == onset else g

        for name, p in trainer.model.named_parameters():
            if _layer(name) == layer:
                p.register_hook(hook)

    def before(trainer):
        plugin = _plugin(trainer)
        if plugin.step + 1 == onset:
            snapshots["w"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            snapshots["ema"] = {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()}
            snapshots["updates"] = trainer.ema.updates
            snapshots["opt"] = _optimizer_state(trainer.optimizer)

    def after(trainer):
        plugin = _plugin(trainer)
        if plugin.step == onset and "after" not in snapshots:
            snapshots["after"] = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
            snapshots["ema_after"] = {k: v.clone() for k, v in trainer.ema.ema.state_dict().items()}
            snapshots["updates_after"] = trainer.ema.updates
            snapshots["opt_after"] = _optimizer_state(trainer.optimizer)

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", nan_once),
                                                            ("on_train_batch_start", before),
                                                            ("on_train_batch_end", after)], epochs=2)
    nonfinite = [a for a in _alerts(run) if a["kind"] == "nonfinite"]
    assert len(nonfinite) == 1 and nonfinite[0]["step"] == onset and nonfinite[0]["layer"] == layer
    assert "origin: layer 10 C2PSA" in nonfinite[0]["message"]
    steps = _rows(run / "gradient_steps.csv")
    assert [int(s["skipped"]) for s in steps].count(1) == 1 and int(steps[onset - 1]["skipped"]) == 1
    for k, v in snapshots["w"].items():  # parameters only: BN running stats move in the forward pass
        assert torch.equal(v, snapshots["after"][k]), k
    for k, v in snapshots["ema"].items():
        assert torch.equal(v, snapshots["ema_after"][k]), k
    assert snapshots["updates"] == snapshots["updates_after"]
    assert snapshots["opt"].keys() == snapshots["opt_after"].keys() and snapshots["opt"]
    for k, v in snapshots["opt"].items():
        assert torch.equal(v, snapshots["opt_after"][k]), k
    live = model.trainer.model
    assert all(torch.isfinite(p).all() for p in live.parameters())
    assert model.gradkit.step > onset  # training went on after the skip


def test_nan_every_step_stops_training_with_usable_last_pt(tiny_data, tmp_path):
    def always_nan(trainer):
        for name, p in trainer.model.named_parameters():
            if _layer(name) == "6":
                p.register_hook(lambda g: g * float("nan"))

    model, run = train_tiny(tiny_data, tmp_path, callbacks=[("on_train_start", always_nan)], epochs=5,
                            overrides={"monitor.max_consecutive_nonfinite": 3})
    assert model.gradkit.step == 3  # stopped at the third consecutive skipped step
    assert "epoch" in _rows(run / "results.csv")[0] and len(_rows(run / "results.csv")) == 1
    from ultralytics.nn.tasks import load_checkpoint

    ckpt_model, _ = load_checkpoint(run / "weights" / "last.pt")
    assert all(torch.isfinite(p).all() for p in ckpt_model.parameters())
    assert all(torch.isfinite(p).all() for p in model.trainer.model.parameters())
