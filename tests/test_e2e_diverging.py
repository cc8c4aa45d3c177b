"""The ``diverging`` warning in the real trainer: a planted, steadily growing gradient is warned about
before the loss it drives blows up."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from conftest import train_tiny

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
    """First step whose loss is non-finite or above 10x the median of the earlier ones (the benchmark's
    definition of divergence)."""
    seen = []
    for step, loss in losses:
        if not math.isfinite(loss) or (len(seen) >= 3 and loss > 10 * statistics.median(seen)):
            return step
        seen.append(loss)
    return None


def test_growing_gradient_warned_before_the_loss_blows_up(tiny_data, tmp_path):
    losses: list = []
    _, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "none", "report.enabled": False},
                        callbacks=_grow_gradients_and_record_loss(losses), epochs=10, optimizer="SGD", lr0=0.01)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines() if line.strip()]
    warned = [a["step"] for a in alerts if a["kind"] == "diverging"]
    blow_up = _blow_up_step(losses)
    assert blow_up is not None, losses  # the planted growth does drive the loss up
    assert warned, alerts
    assert ONSET < warned[0] < blow_up, (warned, blow_up, losses)
    assert all(a["layer"] == "total" for a in alerts if a["kind"] == "diverging")


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
    warned = [a["step"] for a in alerts if a["kind"] == "diverging"]
    rollbacks = [a for a in alerts if a["kind"] == "rollback"]
    assert warned and rollbacks, alerts
    assert rollbacks[0]["from_step"] == warned[0] and "diverging" in rollbacks[0]["reason"]
    blow_up = _blow_up_step([(s, v) for s, v in losses if s <= warned[0]])
    assert blow_up is None  # nothing had blown up yet when it rolled back
