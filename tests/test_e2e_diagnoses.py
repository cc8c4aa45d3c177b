"""Diagnoses with the DEFAULT configuration in the real trainer: planted faults from the first steps,
quiet healthy runs, the too-few-steps notice and the gradient noise scale."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from conftest import read_csv, train_tiny

pytestmark = pytest.mark.e2e


def _alerts(run):
    return [json.loads(line) for line in open(run / "gradient_alerts.jsonl", encoding="utf-8") if line.strip()]


def _plant(layer: str, factor: float, onset: int):
    """Multiply one layer's gradients by ``factor`` from optimizer step ``onset`` on (tensor hooks)."""

    def arm(trainer):
        plugin = next(fn.__self__ for fn in trainer.callbacks["on_train_batch_end"] if hasattr(fn, "__self__")
                      and type(fn.__self__).__name__ == "GradkitCallback")

        def hook(g):
            return g * factor if plugin.step + 1 >= onset else g

        for name, p in trainer.model.named_parameters():
            if name.split(".")[1] == layer and p.requires_grad:
                p.register_hook(hook)

    return [("on_train_start", arm)]


@pytest.mark.parametrize(("kind", "layer", "factor", "onset"), [
    ("exploding", "5", 1e3, 2),
    ("exploding", "8", 1e4, 5),
    ("vanishing", "13", 1e-6, 2),
    ("vanishing", "6", 1e-9, 5),
])
def test_planted_fault_reported_early_with_defaults(tiny_data, tmp_path, kind, layer, factor, onset):
    """Default config (warmup_steps 20, stock clip): reported within 5 steps of an early onset."""
    model, run = train_tiny(tiny_data, tmp_path, callbacks=_plant(layer, factor, onset), epochs=2)
    assert model.gradkit.step >= onset + 5
    alerts = _alerts(run)
    hits = [a for a in alerts if a["kind"] == kind and a["layer"] == layer]
    assert hits, alerts
    assert onset <= hits[0]["step"] <= onset + 5
    assert all(a["layer"] in {layer, "total"} for a in alerts), alerts  # no other layer is blamed


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def ultralytics_log():
    from ultralytics.utils import LOGGER

    handler = _Capture()
    LOGGER.addHandler(handler)
    yield handler.lines
    LOGGER.removeHandler(handler)


def test_healthy_default_run_is_quiet_and_says_nothing_is_inactive(tiny_data, tmp_path, ultralytics_log):
    model, run = train_tiny(tiny_data, tmp_path, epochs=5, optimizer="SGD", lr0=0.01)
    assert model.gradkit.step >= 21  # the absolute-history rules had their warm-up too
    assert _alerts(run) == []
    summary = json.loads((run / "gradkit_summary.json").read_text())
    assert summary["inactive_rules"] == {}
    assert not [line for line in ultralytics_log if "too few for" in line]


def test_too_few_steps_said_once_in_log_summary_and_report(tiny_data, tmp_path, ultralytics_log):
    """nbs=32 with batch 4 accumulates 8 batches: 10 batches in 2 epochs make 1 optimizer step."""
    model, run = train_tiny(tiny_data, tmp_path, nbs=32, epochs=2,
                            overrides={"report.enabled": True})
    assert model.gradkit.step == 1
    notices = [line for line in ultralytics_log if "too few for" in line]
    assert len(notices) == 1, notices
    assert "1 optimizer step(s) planned" in notices[0] and "nbs=32 accumulates 8 batches of 4" in notices[0]
    summary = json.loads((run / "gradkit_summary.json").read_text())
    assert set(summary["inactive_rules"]) == {"exploding (relative to the other layers)",
                                              "vanishing (relative to the other layers)",
                                              "exploding/vanishing (against own history)", "dead",
                                              "diverging (total-norm trend/spike)", "diverging (weight growth)"}
    assert summary["inactive_rules"]["exploding/vanishing (against own history)"] == 21
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["inactive_rules"] == summary["inactive_rules"]
    assert "nbs=32" in report["training"]["inactive_rules_message"]


def test_the_planned_steps_are_the_steps_made_when_nbs_exceeds_the_whole_run(tiny_data, tmp_path, ultralytics_log):
    """Ultralytics caps accumulation at batches x epochs (nbs=64 with batch 4 and one epoch of 5 batches
    accumulates 5, not 16): the notice counts the steps the loop then makes."""
    model, _ = train_tiny(tiny_data, tmp_path, nbs=64, epochs=1)
    notices = [line for line in ultralytics_log if "too few for" in line]
    assert len(notices) == 1, notices
    assert f"{model.gradkit.step} optimizer step(s) planned" in notices[0] and model.gradkit.step >= 1, notices[0]


class _Interrupt(Exception):
    pass


def _recorded_pairs():
    """The oracle's pairs, recorded independently of gradkit: the squared gradient norm after the first micro-batch
    of each window (windows counted from the unscale calls, image counts from the batches themselves, the epoch's
    last one is short) and at unscale time, as ``(epoch, small, big, sizes)``; with the callbacks that record them."""
    pairs, state = [], {"sizes": [], "small": None}

    def install(trainer):
        unscale, preprocess = trainer.scaler.unscale_, trainer.preprocess_batch
        state["sizes"], state["small"] = [], None

        def recording_unscale(optimizer):
            unscale(optimizer)
            big = sum(float((p.grad.double() ** 2).sum()) for p in trainer.model.parameters() if p.grad is not None)
            pairs.append((trainer.epoch, state["small"], big, list(state["sizes"])))
            state["sizes"], state["small"] = [], None

        def recording_preprocess(batch):
            state["sizes"].append(int(batch["img"].shape[0]))
            return preprocess(batch)

        trainer.scaler.unscale_, trainer.preprocess_batch = recording_unscale, recording_preprocess

    def batch_end(trainer):
        if len(state["sizes"]) == 1:  # the first micro-batch of a window that did not step
            state["small"] = sum(float((p.grad.double() ** 2).sum()) for p in trainer.model.parameters()
                                 if p.grad is not None)

    return pairs, [("on_train_start", install), ("on_train_batch_end", batch_end)]


def _b_simple(pairs) -> tuple[float, int]:
    """The paper's formulas in float64 over the pairs that have a first micro-batch: (B_simple, pairs used)."""
    trace, grad_sq, used = 0.0, 0.0, 0
    for _, small, big, sizes in (p for p in pairs if p[1] is not None):
        b, big_b = sizes[0], sum(sizes)
        gs, gb = small / b**2, big / big_b**2
        grad_sq += (big_b * gb - b * gs) / (big_b - b)
        trace += (gs - gb) / (1 / b - 1 / big_b)
        used += 1
    return (trace / grad_sq if grad_sq > 0 else float("nan")), used


def test_the_run_s_noise_scale_counts_the_steps_before_a_resume(tiny_data, tmp_path):
    """The run summary's estimate is over the whole run: stopped after two of three epochs and resumed, it pairs
    every window of the three epochs as the independent pairing does (it counted only the steps after the resume)."""
    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 2:
            raise _Interrupt

    pairs, recorders = _recorded_pairs()
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, nbs=8, epochs=3, warmup_epochs=1,  # warm-up: shorter windows before the resume
                   callbacks=[*recorders, ("on_train_epoch_start", crash)])
    model = YOLO(str(tmp_path / "run" / "weights" / "last.pt"))
    gradkit.attach(model, None)
    for event, fn in recorders:
        model.add_callback(event, fn)
    model.train(resume=True)
    expected, used = _b_simple(pairs)
    assert {p[0] for p in pairs} == {0, 1, 2} and used >= 4  # windows of two batches (after the warm-up), all epochs
    summary = json.loads((tmp_path / "run" / "gradkit_summary.json").read_text())["noise_scale"]
    assert summary["steps"] == used
    if expected > 0:
        assert summary["value"] == pytest.approx(expected, rel=1e-3)
    else:  # a ratio that is not positive is no batch size
        assert summary["value"] is None
    after = float(read_csv(tmp_path / "run" / "results.csv")[2]["grad/noise_scale"])  # the resumed epoch alone
    alone = _b_simple([p for p in pairs if p[0] == 2])[0]
    assert after == pytest.approx(alone, rel=1e-3) if alone > 0 else math.isnan(after)


def test_noise_scale_in_results_matches_independent_pairing(tiny_data, tmp_path):
    """Oracle: :func:`_recorded_pairs`, combined with the paper's formulas in float64."""
    pairs, recorders = _recorded_pairs()
    _, run = train_tiny(tiny_data, tmp_path, nbs=16, epochs=3, callbacks=recorders)
    results = read_csv(run / "results.csv")
    assert any(len(set(sizes)) > 1 for *_, sizes in pairs)  # a short batch is part of the check
    for epoch, row in enumerate(results):
        expected = _b_simple([p for p in pairs if p[0] == epoch])[0]
        got = float(row["grad/noise_scale"])
        if math.isnan(expected):
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, rel=1e-3), (epoch, got, expected)
    assert any(np.isfinite(float(r["grad/noise_scale"])) for r in results)
    summary = json.loads((run / "gradkit_summary.json").read_text())["noise_scale"]
    made = [sum(sizes) for *_, sizes in pairs]  # the images each optimizer step took, short windows included
    assert summary["images_per_step"] == round(sum(made) / len(made)) < 16  # the nominal nbs=16 was not what ran
    assert summary["steps"] == len(pairs)


def test_no_accumulation_gives_no_noise_scale(tiny_data, tmp_path):
    _, run = train_tiny(tiny_data, tmp_path, epochs=1)  # nbs=batch: one batch size per step
    assert all(math.isnan(float(r["grad/noise_scale"])) for r in read_csv(run / "results.csv"))
    summary = json.loads((run / "gradkit_summary.json").read_text())["noise_scale"]
    assert summary["value"] is None and "nbs larger than batch" in summary["reading"]


def test_cpu_grad_scaler_noise_scale_is_unscaled(tiny_data, tmp_path):
    """With an enabled GradScaler the first micro-batch's gradient is scaled: the estimate must not be."""
    values = {}
    for name, scaled in (("plain", False), ("scaled", True)):
        cbs = [("on_train_start", lambda t: setattr(t, "scaler", torch.amp.GradScaler("cpu", init_scale=2.0**10)))]
        _, run = train_tiny(tiny_data, tmp_path / name, nbs=16, epochs=2, callbacks=cbs if scaled else ())
        values[name] = [float(r["grad/noise_scale"]) for r in read_csv(run / "results.csv")]
    assert values["scaled"] == pytest.approx(values["plain"], rel=1e-2, nan_ok=True)
