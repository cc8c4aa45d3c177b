"""The ``diverging`` warning in the real trainer: a planted, steadily growing gradient is warned about
before the loss it drives blows up."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import train_tiny
from gradkit.monitor.alerts import WEIGHT_GROWTH

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from divergence import divergence_step, mean_by_step  # a benchmark script, found through the path above

pytestmark = pytest.mark.e2e

ONSET, GROWTH = 10, 1.25  # from optimizer step 10 on, every gradient is multiplied by 1.25 ** (step - 9)


def _plugin(trainer):
    return next(fn.__self__ for fn in trainer.callbacks["on_train_batch_end"] if hasattr(fn, "__self__")
                and type(fn.__self__).__name__ == "GradkitCallback")


def _grow_gradients_and_record_loss(losses: list):
    """Tensor hooks scale every gradient by GROWTH per optimizer step from ONSET on (unclipped, so the
    weights and then the loss follow); the loss of each batch is recorded by optimizer step."""

    def arm(trainer):
        plugin = _plugin(trainer)

        def hook(g):
            step = plugin.step + 1
            return g * GROWTH ** (step - ONSET + 1) if step >= ONSET else g

        for p in trainer.model.parameters():
            if p.requires_grad:
                p.register_hook(hook)

    def record(trainer):
        losses.append((_plugin(trainer).step, float(trainer.loss.detach())))

    return [("on_train_start", arm), ("on_train_batch_end", record)]


def _blow_up_step(losses) -> int | None:
    """The step at which the loss blew up, by ``benchmarks/divergence.py``'s definition (a rise above 10x the
    earlier median, a non-finite loss, or a collapse to near 0), from (optimizer step, loss) per batch, averaged
    per optimizer step as the benchmark does (the tiny runs here step after every batch)."""
    return divergence_step(mean_by_step(losses))


def test_growing_gradient_warned_before_the_loss_blows_up(tiny_data, tmp_path):
    losses: list = []
    _, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "none", "report.enabled": False},
                        callbacks=_grow_gradients_and_record_loss(losses), epochs=10, optimizer="SGD", lr0=0.01)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines() if line.strip()]
    # the total-norm arms; the weight-growth arm also warns on this unclipped run, at its first steps
    # (updates as long as the weights before any planted growth: README, "Early warning of divergence")
    warned = [a["step"] for a in alerts if a["kind"] == "diverging" and a["layer"] == "total"]
    blow_up = _blow_up_step(losses)
    assert blow_up is not None, losses  # the planted growth does drive the loss up
    assert warned, alerts
    assert ONSET < warned[0] < blow_up, (warned, blow_up, losses)


def test_diverging_warning_triggers_a_rollback(tiny_data, tmp_path):
    """With ``monitor.on_divergence: rollback`` the warning itself is the trigger: the first rollback
    happens at the step of the first ``diverging`` alert, before the loss has blown up."""
    losses: list = []
    overrides = {"clip.mode": "none", "monitor.on_divergence": "rollback", "monitor.rollback.every": 5,
                 "report.enabled": False}  # the report's validation would plot a blown-up model's boxes
    def stop_after_first_rollback(trainer):  # the planted growth goes on; nothing more to see
        trainer.stop = trainer.stop or _plugin(trainer).guard.attempts > 0

    callbacks = [*_grow_gradients_and_record_loss(losses), ("on_train_batch_end", stop_after_first_rollback)]
    _, run = train_tiny(tiny_data, tmp_path, overrides=overrides, callbacks=callbacks, epochs=6, optimizer="SGD",
                        lr0=0.01)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines() if line.strip()]
    warned = [a["step"] for a in alerts if a["kind"] == "diverging" and a["arm"] != WEIGHT_GROWTH]
    rollbacks = [a for a in alerts if a["kind"] == "rollback"]
    assert warned and rollbacks, alerts
    assert rollbacks[0]["from_step"] == warned[0] and "diverging" in rollbacks[0]["reason"]
    blow_up = _blow_up_step([(s, v) for s, v in losses if s <= warned[0]])
    assert blow_up is None  # nothing had blown up yet when it rolled back


def _record_layer_weight_norms(norms: dict):
    """Per optimizer step, each layer's weight norm as the plugin measures it at that step (before its
    update): the weights at the start, then after each step. Computed here from the named parameters
    (``model.<i>.`` -> layer i), independently of the plugin's grouping."""

    def layer_norms(trainer) -> dict[str, float]:
        sq: dict[str, float] = {}
        for name, p in trainer.model.named_parameters():
            if p.requires_grad:
                key = name.split(".")[1]
                sq[key] = sq.get(key, 0.0) + float(p.detach().double().pow(2).sum())
        return {k: math.sqrt(v) for k, v in sq.items()}

    def at_start(trainer):
        norms[1] = layer_norms(trainer)

    def after_step(trainer):
        norms[_plugin(trainer).step + 1] = layer_norms(trainer)

    return [("on_train_start", at_start), ("on_train_batch_end", after_step)]


def _first_growth(norms: dict, factor: float, steps: int, update_every: int) -> tuple[int, str] | None:
    """The documented rule, computed from the independent norms: weights measured at steps 1..update_every
    and every update_every-th step after; each measurement against the newest one at least ``steps``
    earlier (the first while none is). Returns the first step at ``factor`` or more and its fastest layer."""
    measured = [s for s in sorted(norms) if s <= update_every or (s - 1) % update_every == 0]
    for k, s in enumerate(measured[1:], 1):
        older = [t for t in measured[:k] if t <= s - steps]
        ref = older[-1] if older else measured[0]
        growth = {layer: norms[s][layer] / norms[ref][layer] for layer in norms[s]}
        layer = max(growth, key=growth.get)
        if growth[layer] >= factor:
            return s, layer
    return None


def _alerts(run) -> list[dict]:
    return [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines() if line.strip()]


def test_weights_growing_under_a_too_high_lr_are_warned_at_the_step_they_double(tiny_data, tmp_path):
    """SGD at 100x the default lr0, unclipped: batch normalisation lets the weights grow instead of the
    loss blowing up at once. The weight-growth arm warns at the first measured step where a layer's
    norm has doubled, and names the layer that grew most - as computed from the parameters directly."""
    from gradkit.config import AlertsConfig, MonitorConfig

    norms: dict = {}
    _, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "none", "report.enabled": False},
                        callbacks=_record_layer_weight_norms(norms), epochs=4, optimizer="SGD", lr0=1.0)
    cfg, every = AlertsConfig(), MonitorConfig().update_every
    # the plugin measures in float32: a growth within 0.1% of the threshold may fall either side of it
    earliest = _first_growth(norms, cfg.diverging_growth * (1 - 1e-3), cfg.diverging_growth_steps, every)
    latest = _first_growth(norms, cfg.diverging_growth * (1 + 1e-3), cfg.diverging_growth_steps, every)
    assert latest is not None, norms  # the provoked run does double a layer's weights
    growth = [a for a in _alerts(run) if a["kind"] == "diverging" and a["arm"] == WEIGHT_GROWTH]
    assert growth, _alerts(run)
    assert (growth[0]["step"], growth[0]["layer"]) in {earliest, latest}


def test_weight_growth_warns_but_does_not_roll_back(tiny_data, tmp_path):
    """An unclipped SGD run at the default lr0 takes steps as long as its weights at its start and sets
    the weight-growth arm off, though it does not diverge. Were the arm a rollback trigger it would spend
    the run's rollbacks there (it did: 3 by step 10); it only warns."""
    overrides = {"clip.mode": "none", "monitor.on_divergence": "rollback", "report.enabled": False}
    _, run = train_tiny(tiny_data, tmp_path, overrides=overrides, epochs=4, optimizer="SGD", lr0=0.01)
    alerts = _alerts(run)
    growth_steps = {a["step"] for a in alerts if a["kind"] == "diverging" and a["arm"] == WEIGHT_GROWTH}
    assert growth_steps, alerts  # the arm did fire
    rollbacks = [a for a in alerts if a["kind"] == "rollback"]
    assert not [r for r in rollbacks if WEIGHT_GROWTH in r["reason"] or r["from_step"] in growth_steps], rollbacks


def test_weight_growth_is_off_for_adamw(tiny_data, tmp_path):
    """AdamW's step is set by its lr, not by the gradient: at lr0 0.02 without warm-up its weights double
    within the first steps of a run that does not diverge. The arm is off for it - while the weights,
    measured here from the parameters, did double."""
    from gradkit.config import AlertsConfig, MonitorConfig

    norms: dict = {}
    model, run = train_tiny(tiny_data, tmp_path, overrides={"report.enabled": False},
                            callbacks=_record_layer_weight_norms(norms), epochs=4, optimizer="AdamW", lr0=0.02)
    cfg = AlertsConfig()
    assert _first_growth(norms, cfg.diverging_growth, cfg.diverging_growth_steps, MonitorConfig().update_every)
    assert not model.gradkit.detector.weight_growth
    assert not [a for a in _alerts(run) if a["arm"] == WEIGHT_GROWTH], _alerts(run)


def test_blow_up_step_reads_a_rise_a_collapse_and_not_one_empty_batch():
    steady = [(1, 5.0), (2, 6.0), (3, 5.0)]                        # median 5
    assert _blow_up_step([*steady, (4, 70.0)]) == 4                  # above 10x the median
    assert _blow_up_step([(1, 5.0), (2, math.nan)]) == 2             # non-finite
    assert _blow_up_step([*steady, (4, 0.01), (5, 6.0), (6, 5.0)]) is None     # one near-empty batch
    assert _blow_up_step([*steady, (4, 0.04), (5, 0.0), (6, 0.0), (7, 0.0)]) == 4  # 3 in a row below 0.05
    assert _blow_up_step([*steady, (4, 0.0), (5, 0.0)]) is None      # 2 in a row: not yet
