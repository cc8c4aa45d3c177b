"""Parity: with the stock clip, monitoring on and no augmentation, the plugin changes nothing.

Oracle: a plain Ultralytics run with the same seed and arguments, on CPU (deterministic).
"""

from __future__ import annotations

import pytest
import torch

from conftest import TINY_TRAIN, read_csv, train_tiny

pytestmark = pytest.mark.e2e



def _plain_run(data, tmp_path):
    from ultralytics import YOLO

    model = YOLO("yolo26n.yaml")
    model.train(data=str(data), project=str(tmp_path), name="plain", exist_ok=True, **TINY_TRAIN)
    return model


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.trainer.model.state_dict().items()}


def _ema(run_dir) -> dict[str, torch.Tensor]:
    from ultralytics.nn.tasks import load_checkpoint

    ckpt_model, _ = load_checkpoint(run_dir / "weights" / "last.pt")
    return ckpt_model.float().state_dict()


def test_stock_clip_with_monitoring_is_bit_identical_to_plain_ultralytics(tiny_data, tmp_path):
    plain = _plain_run(tiny_data, tmp_path)
    plain_dir = plain.trainer.save_dir
    ours, ours_dir = train_tiny(tiny_data, tmp_path, overrides={"clip.mode": "stock", "monitor.enabled": True,
                                                                "report.enabled": False})
    assert ours.gradkit.cfg.augment.active is False
    assert ours.gradkit.step == plain.trainer.ema.updates == ours.trainer.ema.updates >= 8

    live_plain, live_ours = _weights(plain), _weights(ours)
    assert live_plain.keys() == live_ours.keys()
    for k, v in live_plain.items():
        assert torch.equal(v, live_ours[k]), k  # bit-identical, not approximately equal
    ema_plain, ema_ours = _ema(plain_dir), _ema(ours_dir)
    for k, v in ema_plain.items():
        assert torch.equal(v, ema_ours[k]), k

    rows_plain, rows_ours = read_csv(plain_dir / "results.csv"), read_csv(ours_dir / "results.csv")
    assert len(rows_plain) == len(rows_ours) == TINY_TRAIN["epochs"]
    columns = [c for c in rows_plain[0] if c != "time"]  # losses, learning rates, (val) metrics
    assert sum(c.startswith("train/") for c in columns) >= 3
    for a, b in zip(rows_plain, rows_ours, strict=True):
        for col in columns:
            assert a[col] == b[col], col
    assert rows_ours[0]["train/box_loss"] != rows_ours[1]["train/box_loss"]  # it trained
    # the monitor did run: one row per optimizer step
    assert len(read_csv(ours_dir / "gradient_steps.csv")) == ours.gradkit.step
