"""``speed.memory_format``: a CPU run trained channels-last computes what NCHW computes, keeps the optimizer's
parameters, saves NCHW checkpoints, and ``fastest`` keeps whichever layout its timing found faster."""

from __future__ import annotations

import copy
import logging
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import train_tiny
from gradkit.integrations.ultralytics import layout as L
from gradkit.integrations.ultralytics.throughput import (
    _model_and_batch,
    errors_against_float64,
    first_step_in_both_layouts,
)


def _conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.shape[-1] > 1]


def _is_channels_last(model: torch.nn.Module) -> bool:
    return all(w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(model))


def _is_nchw(model: torch.nn.Module) -> bool:
    return all(w.is_contiguous() for w in _conv_weights(model))


def test_a_channels_last_step_computes_the_nchw_loss_and_gradients():
    # the oracle is the same model's NCHW step: only the float summation order may differ
    (loss_a, grads_a), (loss_b, grads_b) = first_step_in_both_layouts("yolo26n.yaml", 3, 2, 96)
    assert torch.allclose(loss_a, loss_b, rtol=1e-4, atol=1e-6)
    flat_a, flat_b = (torch.cat([g.flatten() for g in grads]) for grads in (grads_a, grads_b))
    assert float((flat_a - flat_b).norm() / flat_a.norm()) < 1e-3
    assert float(flat_a.norm()) > 0


def test_both_layouts_compute_the_float64_function_to_float32_rounding():
    # the oracle: the same model computed in float64 NCHW. NHWC's float32 kernels round differently (further from
    # it than NCHW's: README, "Channels-last on the CPU"), but no more than float32 rounding through a network
    errors = errors_against_float64("yolo26n.yaml", 3, 2, 64)
    for outputs, gradients in errors.values():
        assert outputs < 1e-3 and gradients < 1e-2
    assert errors["channels_last"] != errors["contiguous"]  # NHWC really ran: its kernels round otherwise


def test_the_helpers_really_convert_model_and_images():
    from gradkit.integrations.ultralytics.throughput import _in_layout

    model, data = _in_layout(*_model_and_batch("yolo26n.yaml", 3, 2, 64), True)
    assert _is_channels_last(model) and data["img"].is_contiguous(memory_format=torch.channels_last)


def _trainer(device: str = "cpu"):
    model, _ = _model_and_batch("yolo26n.yaml", 3, 2, 64)
    return SimpleNamespace(model=model, ema=SimpleNamespace(ema=copy.deepcopy(model)), device=torch.device(device),
                           batch_size=2, args=SimpleNamespace(imgsz=64), data={"nc": 3})


def test_channels_last_converts_the_model_and_its_ema_in_place():
    trainer = _trainer()
    params = list(trainer.model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.1)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    choice = L.choose_training_layout(trainer, "channels_last")
    assert choice == L.LayoutChoice(channels_last=True)
    assert _is_channels_last(trainer.model) and _is_channels_last(trainer.ema.ema)
    assert [id(p) for p in trainer.model.parameters()] == [id(p) for p in params]  # the optimizer still holds them
    assert all(p is q for p, q in zip(optimizer.param_groups[0]["params"], trainer.model.parameters(), strict=True))
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())  # same values


@pytest.mark.parametrize(("seconds", "converted"), [((2.0, 1.0), True), ((1.0, 2.0), False)])
def test_fastest_keeps_the_layout_its_timing_found_faster(monkeypatch, seconds, converted):
    trainer = _trainer()
    monkeypatch.setattr(L, "_fastest_seconds", lambda t: seconds)
    choice = L.choose_training_layout(trainer, "fastest")
    assert (choice.channels_last, choice.contiguous_s, choice.channels_last_s) == (converted, *seconds)
    assert _is_channels_last(trainer.model) is converted and _is_nchw(trainer.model) is not converted
    said = choice.describe("fastest", 64, 2)
    assert f"took {seconds[0]:.2f} s NCHW and {seconds[1]:.2f} s NHWC" in said
    assert ("channels-last (NHWC)" if converted else "contiguous (NCHW)") in said


@pytest.mark.parametrize(("mode", "device"), [("contiguous", "cpu"), ("channels_last", "meta"), ("fastest", "meta")])
def test_nothing_changes_where_the_option_does_not_apply(mode, device):
    trainer = _trainer(device)  # a device other than the CPU (Ultralytics chooses the layout on CUDA itself)
    assert L.choose_training_layout(trainer, mode) is None
    assert _is_nchw(trainer.model)


@pytest.mark.parametrize("mode", ["channels_last", "fastest"])
def test_a_run_of_several_processes_stays_nchw(mode):
    trainer = _trainer()
    trainer.world_size = 2  # CPU DDP: the gradient buckets are laid out, and each rank would time on its own
    assert L.choose_training_layout(trainer, mode) is None and _is_nchw(trainer.model)


def test_the_timing_leaves_the_trainers_model_and_random_state_alone():
    trainer = _trainer()
    trainer.model.train()
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}  # BN running statistics included
    rng = torch.get_rng_state()
    contiguous_s, channels_last_s = L._fastest_seconds(trainer)
    assert 0 < contiguous_s < 60 and 0 < channels_last_s < 60
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    assert torch.equal(torch.get_rng_state(), rng) and _is_nchw(trainer.model)


@pytest.mark.e2e
def test_a_real_cpu_run_trains_channels_last_and_saves_nchw(tiny_data, tmp_path):
    from ultralytics import YOLO

    seen = {}

    def during(trainer):
        seen.setdefault("layout", _is_channels_last(trainer.model) and _is_channels_last(trainer.ema.ema))

    def after(trainer):
        seen["losses"] = [float(v) for v in trainer.tloss.values()]

    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("ultralytics").addHandler(handler)
    try:
        _, run = train_tiny(tiny_data, tmp_path, overrides={"speed.memory_format": "channels_last",
                                                            "report.enabled": False},
                            callbacks=[("on_train_batch_end", during), ("on_train_end", after)], epochs=1)
    finally:
        logging.getLogger("ultralytics").removeHandler(handler)
    assert seen["layout"] is True
    assert all(math.isfinite(v) and v > 0 for v in seen["losses"])
    assert "gradkit: speed.memory_format channels_last: training channels-last (NHWC)" in lines
    saved = YOLO(str(run / "weights" / "last.pt")).model
    assert _is_nchw(saved)


@pytest.mark.parametrize("kept", [True, False])
def test_a_resumed_fastest_run_keeps_its_earlier_layout_without_timing(monkeypatch, kept):
    def no_timing(trainer):
        raise AssertionError("a resumed run timed the layouts again")

    trainer = _trainer()
    monkeypatch.setattr(L, "_fastest_seconds", no_timing)
    choice = L.choose_training_layout(trainer, "fastest", earlier_channels_last=kept)
    assert choice == L.LayoutChoice(channels_last=kept, kept=True)
    assert _is_channels_last(trainer.model) is kept and _is_nchw(trainer.model) is not kept
    assert "not timed again" in choice.describe("fastest", 64, 2)


def test_an_earlier_layout_is_ignored_unless_the_run_chooses_by_timing():
    trainer = _trainer()
    # the configured mode decides: an earlier layout counts only where the run would time the two
    assert L.choose_training_layout(trainer, "channels_last", earlier_channels_last=False).channels_last
    assert L.choose_training_layout(_trainer(), "contiguous", earlier_channels_last=True) is None


@pytest.mark.parametrize(("saved", "kept"), [(True, True), (False, False), ("true", None), (1, None), (None, None)])
def test_the_state_files_layout_is_kept_only_when_it_is_a_boolean(saved, kept):
    # the state file is untrusted input: anything but true or false means "time again"
    from gradkit.config import load_config
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    plugin = GradkitCallback(load_config("default", {"speed.memory_format": "fastest"}))
    plugin.layout = L.LayoutChoice(channels_last=True, contiguous_s=2.0, channels_last_s=1.0)
    state = plugin.state_dict()
    assert state["channels_last"] is True
    fresh = GradkitCallback(load_config("default", {"speed.memory_format": "fastest"}))
    fresh.load_state_dict({**state, "channels_last": saved})
    assert fresh._earlier_channels_last is kept


class _Interrupt(Exception):
    pass


@pytest.mark.e2e
def test_a_resumed_fastest_run_trains_in_the_layout_it_chose_and_records_it(tiny_data, tmp_path, monkeypatch):
    import json

    from ultralytics import YOLO

    import gradkit

    def crash(trainer):
        if trainer.epoch == 1:
            raise _Interrupt

    monkeypatch.setattr(L, "_fastest_seconds", lambda trainer: (2.0, 1.0))  # planted: NHWC is the faster
    with pytest.raises(_Interrupt):
        train_tiny(tiny_data, tmp_path, overrides={"speed.memory_format": "fastest", "report.enabled": False},
                   callbacks=[("on_train_epoch_start", crash)], epochs=2)
    run = tmp_path / "run"
    assert torch.load(run / "weights" / "last.gradkit.pt", weights_only=True)["channels_last"] is True

    monkeypatch.setattr(L, "_fastest_seconds", lambda trainer: (1.0, 2.0))  # timing again would now pick NCHW
    seen = {}
    model = YOLO(str(run / "weights" / "last.pt"))
    gradkit.attach(model, None)
    model.add_callback("on_train_batch_end", lambda t: seen.setdefault("nhwc", _is_channels_last(t.model)))
    model.train(resume=True)
    assert seen["nhwc"] is True
    applied = json.loads((run / "gradkit_summary.json").read_text())["memory_format"]
    assert applied == {"configured": "fastest", "applied": {"channels_last": True, "contiguous_s": None,
                                                            "channels_last_s": None, "kept": True}}
