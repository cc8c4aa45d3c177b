"""What the ``assign`` options share: refused before training outside detection, and a NaN recovery's copy of
a patched loss dropped so that validation scores with Ultralytics' own (each option's own tests are in
test_defect_cells.py, test_nwd.py and test_box_weights.py)."""

from __future__ import annotations

from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch

from gradkit.config import load_config


@pytest.mark.parametrize(("option", "task"), [("defect_cells", "obb"), ("nwd", "segment"),
                                              ("box_loss_per_object", "pose")])
def test_refused_before_training_outside_detection(option, task):
    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    plugin = GradkitCallback(load_config("default", {f"assign.{option}": True}))
    with pytest.raises(PluginError, match=rf"assign\.{option}.*task is '{task}'"):
        plugin.on_pretrain_routine_start(SimpleNamespace(args=SimpleNamespace(task=task, data="data.yaml")))


def _install(option: str, model) -> None:
    from gradkit.integrations.ultralytics.assign import install_box_loss_per_object, install_nwd_overlap

    trainer = SimpleNamespace(model=model)
    install_nwd_overlap(trainer, None) if option == "nwd" else install_box_loss_per_object(trainer)


@pytest.mark.parametrize("option", ["nwd", "box_loss_per_object"])
def test_a_nan_recovery_s_copy_of_the_patched_loss_is_dropped(option):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from gradkit.integrations.ultralytics.seams import unrestricted_ema

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    model.args = get_cfg()
    model.criterion = model.init_criterion()
    _install(option, model)
    trainer = SimpleNamespace(model=model, ema=SimpleNamespace(ema=deepcopy(model)))  # a NaN recovery's copy
    unrestricted_ema(trainer)
    assert trainer.ema.ema.criterion is None and model.criterion is not None
