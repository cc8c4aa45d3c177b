"""``assign.box_loss_per_object``: the weights against hand-made answers and a per-object loop, the seam on
Ultralytics' own loss (box loss reweighed, class loss untouched), its refusals, and a real training run."""

from __future__ import annotations

import functools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import detection_model_and_batch, train_tiny
from gradkit.box_weights import per_object_weights


def test_every_object_s_best_anchor_weighs_the_same_and_the_total_is_kept():
    weights = torch.tensor([[0.2, 0.1, 0.8, 0.4, 0.3]])  # object 0: 0.2, 0.1; object 1: 0.8, 0.4; a negative
    owner = torch.tensor([[0, 0, 1, 1, 0]])
    positive = torch.tensor([[True, True, True, True, False]])
    got = per_object_weights(weights, owner, positive, objects=2)
    # per object 1, 0.5 and 1, 0.5 (total 3) scaled to the assigner's total 1.5
    assert got.tolist() == [pytest.approx([0.5, 0.25, 0.5, 0.25, 0.0])]


def test_objects_are_counted_per_image_and_unweighted_ones_stay_unweighted():
    weights = torch.tensor([[0.9, 0.0, 0.0], [0.3, 0.1, 0.0]])
    owner = torch.tensor([[0, 1, 1], [0, 0, 2]])  # image 0: object 1 has positives weighing 0
    positive = torch.tensor([[True, True, True], [True, True, False]])
    got = per_object_weights(weights, owner, positive, objects=3)
    total = 0.9 + 0.3 + 0.1
    per_object = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1 / 3, 0.0]])
    assert torch.allclose(got, per_object * total / per_object.sum())


def test_without_any_weight_the_positives_keep_theirs_and_bad_shapes_are_named():
    weights = torch.zeros(2, 4)
    assert torch.equal(per_object_weights(weights, torch.zeros(2, 4, dtype=torch.long),
                                          torch.ones(2, 4, dtype=torch.bool), objects=1), weights)
    assert torch.equal(per_object_weights(torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.long),
                                          torch.zeros(1, 3, dtype=torch.bool), objects=1), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"weights \(2, 4\), owner \(2, 3\)"):
        per_object_weights(weights, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool), 1)


def _per_object_by_loop(weights, owner, positive):
    """The same rule written as a loop over images and objects (the oracle)."""
    out = torch.zeros_like(weights)
    for i in range(weights.shape[0]):
        for g in owner[i][positive[i]].unique():
            own = positive[i] & (owner[i] == g)
            best = weights[i, own].max()
            if best > 0:
                out[i, own] = weights[i, own] / best
    return out * (weights[positive].sum() / out.sum()) if out.sum() > 0 else weights * positive


# ------------------------------------------------------------------ the seam, on Ultralytics' own loss

def _spy(model):
    """What each branch's assigner returned and what its box loss was given, call by call."""
    seen = {"assigned": [], "box": []}
    for name in ("one2many", "one2one"):
        branch = getattr(model.criterion, name)
        assign, box = branch.assigner.forward, branch.bbox_loss.forward

        @functools.wraps(assign)  # the seam checks the assigner's parameters too
        def assigned(*args, _assign=assign, **kwargs):
            out = _assign(*args, **kwargs)
            seen["assigned"].append(out)
            return out

        @functools.wraps(box)
        def box_loss(*args, _box=box, **kwargs):
            seen["box"].append(args[4].detach().clone())  # target_scores
            return _box(*args, **kwargs)

        branch.assigner.forward, branch.bbox_loss.forward = assigned, box_loss
    return seen


def test_ultralytics_box_loss_gets_per_object_weights_and_the_class_loss_is_untouched():
    from gradkit.integrations.ultralytics.assign import install_box_loss_per_object

    model, batch = detection_model_and_batch()
    with torch.no_grad():
        stock = model.loss(batch)[0].clone()  # (box, cls, dfl) of both yolo26 branches, times the batch size
    seen = _spy(model)
    install_box_loss_per_object(SimpleNamespace(model=model))
    with torch.no_grad():
        reweighed = model.loss(batch)[0]
    assert len(seen["assigned"]) == len(seen["box"]) == 2  # each branch assigned, then weighed its boxes
    for (_, _, scores, fg, owner), given in zip(seen["assigned"], seen["box"], strict=True):
        expected = _per_object_by_loop(scores.sum(-1), owner, fg)
        assert fg.sum() >= 5  # every object has positives in one2many, one each in one2one
        assert torch.allclose(given.sum(-1), expected, atol=1e-6)
        assert torch.allclose(given.sum(), scores.sum(), rtol=1e-5)  # the box loss's total weight is kept
    assert reweighed[1] == pytest.approx(stock[1].item(), rel=1e-6)  # class loss: the assigner's own targets
    assert reweighed[0] != pytest.approx(stock[0].item(), rel=1e-3)  # box loss: reweighed


def test_monitor_taught_still_records_the_reweighed_loss_s_assignments():
    """The default configuration watches the assigner too: its recorder checks the assigner's signature, which
    the reweighing wrapper must keep (a run with both stopped at its first step before this test)."""
    from gradkit.integrations.ultralytics.assign import install_box_loss_per_object
    from gradkit.integrations.ultralytics.seams import record_assignments

    model, batch = detection_model_and_batch()
    trainer, recorded = SimpleNamespace(model=model), []
    install_box_loss_per_object(trainer)
    record_assignments(trainer, lambda scores, fg, *rest: recorded.append(int(fg.sum())))
    model.loss(batch)
    assert len(recorded) == 1 and recorded[0] >= 5  # one2many's assignment, every object with positives


def test_an_assignment_made_outside_the_loss_is_never_used():
    """The assigner called directly (as benchmarks and monitors may) leaves nothing for a box loss run later."""
    from gradkit.integrations.ultralytics.assign import install_box_loss_per_object
    from gradkit.integrations.ultralytics.seams import SeamError

    model, batch = detection_model_and_batch()
    install_box_loss_per_object(SimpleNamespace(model=model))
    branch = model.criterion.one2many
    anchors = 3 * 12 * 12 + 3 * 6 * 6 + 3 * 3 * 3  # unused: the check comes first
    scores, fg = torch.zeros(1, anchors, 2), torch.zeros(1, anchors, dtype=torch.bool)
    branch.assigner(scores, torch.zeros(1, anchors, 4), torch.zeros(anchors, 2), torch.zeros(1, 1, 1),
                    torch.tensor([[[8.0, 8.0, 40.0, 40.0]]]), torch.ones(1, 1, 1))
    with pytest.raises(SeamError, match="box loss ran without its own assignment"):
        branch.bbox_loss(None, None, None, None, scores, torch.tensor(1.0), fg, None, None)
    model.loss(batch)  # and the loss itself still pairs its own assignment with its box loss


def test_a_changed_box_loss_is_named():
    from gradkit.integrations.ultralytics.assign import install_box_loss_per_object
    from gradkit.integrations.ultralytics.seams import SeamError

    model, _ = detection_model_and_batch()
    model.criterion.one2one.bbox_loss.forward = lambda pred, target, weight: None  # a release with another order
    with pytest.raises(SeamError, match=r"bbox_loss\.forward takes \(pred, target, weight\)"):
        install_box_loss_per_object(SimpleNamespace(model=model))


@pytest.mark.e2e
def test_a_real_training_run_weighs_boxes_per_object(tiny_data, tmp_path):
    seen = {}

    def after_training(trainer):
        criterion = trainer.model.criterion
        seen["marked"] = [getattr(criterion, n)._gradkit_box_weights for n in ("one2many", "one2one")]
        seen["ema"] = trainer.ema.ema.criterion
        seen["losses"] = [float(v) for v in trainer.tloss.values()]  # the epoch's mean box, cls and L1 losses

    _, run = train_tiny(tiny_data, tmp_path, overrides={"assign.box_loss_per_object": True, "report.enabled": False},
                        callbacks=[("on_train_end", after_training)], epochs=1)
    summary = json.loads((run / "gradkit_summary.json").read_text())
    assert seen["marked"] == [True, True]
    assert seen["ema"] is None or not hasattr(seen["ema"].one2many, "_gradkit_box_weights")
    assert summary["optimizer_steps"] > 0 and all(math.isfinite(v) and v > 0 for v in seen["losses"])
