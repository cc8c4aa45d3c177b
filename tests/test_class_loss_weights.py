"""``assign.class_loss_weights``: each named class's column of Ultralytics' classification loss times its weight
(checked by linearity on Ultralytics' own loss, the box loss untouched), refused before training where it cannot
apply, and a real training run."""

from __future__ import annotations

import logging
import math
from copy import deepcopy
from types import SimpleNamespace

import pytest
import torch
import yaml

from conftest import detection_model_and_batch, train_tiny
from gradkit.config import ConfigError, load_config


def _losses(weights):
    """(box, cls, L1) of Ultralytics' yolo26 loss on the same model and batch, the class columns weighed."""
    from gradkit.integrations.ultralytics.seams import weigh_classification_loss

    model, batch = detection_model_and_batch()
    if weights is not None:
        weigh_classification_loss(SimpleNamespace(model=model, device=torch.device("cpu")), weights)
    with torch.no_grad():
        return model.loss(batch)[0]  # (box, cls, L1) of both yolo26 branches, times the batch size


def test_each_class_column_of_the_classification_loss_is_scaled_by_its_weight():
    stock, ones = _losses(None), _losses([1.0, 1.0])
    only0, only1, twice0 = _losses([1.0, 0.0]), _losses([0.0, 1.0]), _losses([2.0, 1.0])
    assert torch.allclose(ones, stock, rtol=1e-6)
    assert 0 < only0[1] < stock[1] and 0 < only1[1] < stock[1]
    # the loss is a sum over class columns, so it is linear in the weights: the oracle for "column c times w_c"
    assert only0[1] + only1[1] == pytest.approx(stock[1].item(), rel=1e-5)
    assert twice0[1] == pytest.approx((stock[1] + only0[1]).item(), rel=1e-5)
    assert twice0[0] == pytest.approx(stock[0].item(), rel=1e-6) and twice0[2] == pytest.approx(stock[2].item(),
                                                                                                rel=1e-6)


@pytest.mark.parametrize("weights", [[2.0, 1.0], [1.0, 3.0]])
def test_the_same_loss_as_ultralytics_own_per_class_weights(weights):
    """Ultralytics' own path (what ``cls_pw`` does): ``model.class_weights`` set before the loss is built."""
    model, batch = detection_model_and_batch()
    model.class_weights = torch.tensor(weights)
    model.criterion = model.init_criterion()
    with torch.no_grad():
        own = model.loss(batch)[0]
    assert torch.allclose(_losses(weights), own, rtol=1e-6)
    assert not torch.allclose(_losses(weights[::-1]), own, rtol=1e-4)  # the columns are told apart


def test_a_weight_count_other_than_the_loss_s_classes_is_named():
    from gradkit.integrations.ultralytics.seams import SeamError, weigh_classification_loss

    model, _ = detection_model_and_batch()
    with pytest.raises(SeamError, match=r"v8DetectionLoss scores 2 classes, assign\.class_loss_weights gave 3"):
        weigh_classification_loss(SimpleNamespace(model=model, device=torch.device("cpu")), [2.0, 1.0, 1.0])


def test_the_ema_copy_gets_the_weights_and_its_loss_is_rebuilt_with_them():
    from gradkit.integrations.ultralytics.seams import weigh_classification_loss

    model, batch = detection_model_and_batch()
    ema = deepcopy(model)  # Ultralytics makes its EMA copy before training starts, its loss built unweighed
    weigh_classification_loss(SimpleNamespace(model=model, ema=SimpleNamespace(ema=ema), device=torch.device("cpu")),
                              [3.0, 1.0])
    assert torch.equal(model.class_weights, torch.tensor([3.0, 1.0]))
    assert torch.equal(ema.class_weights, torch.tensor([3.0, 1.0])) and ema.criterion is None
    with torch.no_grad():
        weighed = model.loss(batch)[0]
        copied = ema.loss(batch)[0]  # the validation loss: rebuilt from the copy's weights
    assert torch.allclose(copied, weighed, rtol=1e-6)


def test_a_loss_without_per_class_weights_is_named():
    from gradkit.integrations.ultralytics.seams import SeamError, weigh_classification_loss

    model, _ = detection_model_and_batch()
    del model.criterion.one2one.class_weights  # a release whose loss no longer has them
    with pytest.raises(SeamError, match=r"v8DetectionLoss does not multiply .* by class_weights.*class_loss_weights"):
        weigh_classification_loss(SimpleNamespace(model=model, device=torch.device("cpu")), [2.0, 1.0])


def test_a_loss_that_no_longer_multiplies_by_them_is_named():
    from gradkit.integrations.ultralytics.seams import SeamError, weigh_classification_loss

    model, _ = detection_model_and_batch()
    branch = model.criterion.one2many

    class Unweighed(type(branch)):  # a release that keeps the attribute and computes its loss without it
        def get_assigned_targets_and_loss(self, *args, **kwargs):
            return None

    branch.__class__ = Unweighed
    with pytest.raises(SeamError, match=r"Unweighed does not multiply its classification loss by class_weights"):
        weigh_classification_loss(SimpleNamespace(model=model, device=torch.device("cpu")), [2.0, 1.0])


@pytest.mark.parametrize(("value", "shown"), [({"scratch": 0}, "scratch: 0 is not"),
                                              ({"scratch": -1.5}, "scratch: -1.5 is not"),
                                              ({"scratch": float("inf")}, "scratch: inf is not"),
                                              ({"": 2.0}, "empty \\(''\\)"), ({0: 2.0}, r"not by index \(0\)"),
                                              ({}, "names no class")])
def test_a_weight_that_is_not_a_positive_number_or_a_class_not_named_is_refused(value, shown):
    with pytest.raises(ConfigError, match=rf"assign\.class_loss_weights: .*{shown}"):
        load_config("default", {"assign.class_loss_weights": value})


def _pretrain(cfg_overrides, data, cls_pw=0.0, task="detect"):
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    plugin = GradkitCallback(load_config("default", {"data.check": False, "report.enabled": False, **cfg_overrides}))
    plugin.on_pretrain_routine_start(SimpleNamespace(args=SimpleNamespace(task=task, data=str(data), cls_pw=cls_pw,
                                                                          resume=False)))


def test_an_unknown_class_name_is_refused_before_training_with_the_data_s_names(tiny_data):
    from gradkit.integrations.ultralytics.callback import PluginError

    with pytest.raises(PluginError, match=r"assign\.class_loss_weights names 'scrach'.*data\.yaml.*'scratch'"):
        _pretrain({"assign.class_loss_weights": {"scrach": 2.0}}, tiny_data)


def test_ultralytics_own_class_weights_and_these_together_are_refused(tiny_data):
    from gradkit.integrations.ultralytics.callback import PluginError

    with pytest.raises(PluginError, match=r"assign\.class_loss_weights.*cls_pw 0\.5"):
        _pretrain({"assign.class_loss_weights": {"scratch": 2.0}}, tiny_data, cls_pw=0.5)


def test_a_distillation_run_is_refused(tiny_data):
    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    plugin = GradkitCallback(load_config("default", {"data.check": False, "report.enabled": False,
                                                     "assign.class_loss_weights": {"scratch": 2.0}}))
    args = SimpleNamespace(task="detect", data=str(tiny_data), cls_pw=0.0, resume=False, distill_model="teacher.pt")
    with pytest.raises(PluginError, match=r"assign\.class_loss_weights is not supported with distill_model="):
        plugin.on_pretrain_routine_start(SimpleNamespace(args=args))


def test_refused_for_rt_detr_and_yolo_world():
    """RT-DETR matches queries to boxes (no per-class weights in its loss); YOLO-World's class outputs are prompts."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import RTDETRDetectionModel, WorldModel

    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    plugin = GradkitCallback(load_config("default", {"assign.class_loss_weights": {"scratch": 2.0}}))
    detr = RTDETRDetectionModel("rtdetr-l.yaml", nc=2, verbose=False)
    detr.args, detr.nc = get_cfg(), 2  # as the trainer sets them
    with pytest.raises(PluginError, match=r"class_loss_weights .*RTDETRDetectionLoss.*leave assign\.class_loss_"):
        plugin._refuse_unchangeable_assigner(SimpleNamespace(args=SimpleNamespace(task="detect"), model=detr))
    world = WorldModel("yolov8s-worldv2.yaml", nc=2, verbose=False)
    with pytest.raises(PluginError, match=r"class_loss_weights weighs the data's classes by index; this WorldModel"):
        plugin._refuse_unchangeable_assigner(SimpleNamespace(args=SimpleNamespace(task="detect"), model=world))


def test_a_task_other_than_detection_is_refused(tiny_data):
    from gradkit.integrations.ultralytics.callback import PluginError

    with pytest.raises(PluginError, match=r"assign\.class_loss_weights.*task is 'obb'"):
        _pretrain({"assign.class_loss_weights": {"scratch": 2.0}}, tiny_data, task="obb")


def test_weights_by_name_become_one_per_class_in_the_data_s_order():
    from gradkit.integrations.ultralytics.callback import class_loss_weight_vector

    names = {2: "pit", 0: "scratch", 3: "stain", 1: "crack"}  # the order is the indices', not the mapping's
    assert class_loss_weight_vector({"pit": 3.0, "scratch": 2.0}, names) == [2.0, 1.0, 3.0, 1.0]


@pytest.mark.e2e
def test_a_real_training_run_weighs_the_named_class(tiny_data, tmp_path):
    from ultralytics.utils import LOGGER

    seen, log = {}, []

    def after_training(trainer):
        criterion = trainer.model.criterion
        seen["branches"] = [getattr(criterion, n).class_weights.view(-1).tolist() for n in ("one2many", "one2one")]
        seen["ema"] = trainer.ema.ema.class_weights.tolist()
        ema_loss = trainer.ema.ema.criterion  # built by the last epoch's validation, from the copy's weights
        seen["ema_loss"] = None if ema_loss is None else ema_loss.one2one.class_weights.view(-1).tolist()
        seen["losses"] = [float(v) for v in trainer.tloss.values()]

    names = yaml.safe_load(tiny_data.read_text())["names"]  # {0: "scratch", 1: "crack", ...}
    crack = next(i for i, n in names.items() if n == "crack")
    handler = logging.Handler()
    handler.emit = lambda record: log.append(record.getMessage())
    LOGGER.addHandler(handler)
    try:
        train_tiny(tiny_data, tmp_path, overrides={"assign.class_loss_weights": {"crack": 2.5}},
                   callbacks=[("on_train_end", after_training)], epochs=1)
    finally:
        LOGGER.removeHandler(handler)
    expected = [2.5 if i == crack else 1.0 for i in range(len(names))]
    assert seen["branches"] == [expected, expected]
    # a smoke check of the whole path (Ultralytics' own EMA update copies class_weights too; the unit test above
    # checks gradkit's setting of the copy)
    assert seen["ema"] == expected and seen["ema_loss"] == expected
    assert all(math.isfinite(v) and v > 0 for v in seen["losses"])  # a smoke check: it trains
    assert any("assign.class_loss_weights: the classification loss weighs crack 2.5" in m for m in log), log
