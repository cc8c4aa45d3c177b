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


def _grow_gradients_and_record_loss(losses: list):
    """Tensor hooks scale every gradient by GROWTH per optimizer step from ONSET on (unclipped, so the
    weights and then the loss follow); the loss of each batch is recorded by optimizer step."""

    def plugin_of(trainer):
        return next(fn.__self__ for fn in trainer.callbacks["on_train_batch_end"] if hasattr(fn, "__self__")
                    and type(fn.__self__).__name__ == "GradkitCallback")

    def arm(trainer):
        plugin = plugin_of(trainer)

        def hook(g):
            step = plugin.step + 1
            return g * GROWTH ** (step - ONSET + 1) if step >= ONSET else g

        for p in trainer.model.parameters():
            if p.requires_grad:
                p.register_hook(hook)

    def record(trainer):
        losses.append((plugin_of(trainer).step, float(trainer.loss.detach())))

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
    _, run = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "none"},
                        callbacks=_grow_gradients_and_record_loss(losses), epochs=10, optimizer="SGD", lr0=0.01)
    alerts = [json.loads(line) for line in (run / "gradient_alerts.jsonl").read_text().splitlines() if line.strip()]
    warned = [a["step"] for a in alerts if a["kind"] == "diverging"]
    blow_up = _blow_up_step(losses)
    assert blow_up is not None, losses  # the planted growth does drive the loss up
    assert warned, alerts
    assert ONSET < warned[0] < blow_up, (warned, blow_up, losses)
    assert all(a["layer"] == "total" for a in alerts if a["kind"] == "diverging")
