"""``assign.nwd``: the normalized Wasserstein distance against the paper's formula computed by hand, and the
targets Ultralytics' own task-aligned assigner gives with it on hand-made boxes with known answers.

NWD (Wang et al. 2021, arXiv:2110.13389, eq. 4-5): boxes as Gaussians N((cx, cy), diag(w^2/4, h^2/4)),
W2^2 = ||(cx_a, cy_a, w_a/2, h_a/2) - (cx_b, cy_b, w_b/2, h_b/2)||^2, NWD = exp(-sqrt(W2^2) / C).
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import train_tiny
from gradkit.box_similarity import ciou_or_nwd, wasserstein_similarity
from gradkit.config import ConfigError, load_config


def _paper_nwd(a, b, c):
    """Eq. 4-5 of the paper, written from the Gaussians' parameters, one pair at a time."""
    ga = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2, (a[2] - a[0]) / 2, (a[3] - a[1]) / 2)
    gb = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (b[2] - b[0]) / 2, (b[3] - b[1]) / 2)
    return math.exp(-math.sqrt(sum((x - y) ** 2 for x, y in zip(ga, gb, strict=True))) / c)


PAIRS = [  # (box a, box b, NWD at C = 8 worked out by hand)
    ([0, 0, 6, 6], [0, 0, 6, 6], 1.0),  # the same box
    ([0, 0, 6, 6], [8, 0, 14, 6], math.exp(-1)),  # one C to the right: no overlap, still 0.37
    ([0, 0, 80, 2], [0, 1, 80, 3], math.exp(-1 / 8)),  # a thin line boxed 1 px low (IoU 0.33)
    ([0, 0, 4, 4], [0, 0, 8, 4], math.exp(-math.sqrt(2 ** 2 + 2 ** 2) / 8)),  # 4 px wider: centre 2, half-side 2
    ([10, 10, 20, 20], [13, 14, 23, 24], math.exp(-5 / 8)),  # a (3, 4) offset
]


@pytest.mark.parametrize(("a", "b", "expected"), PAIRS)
def test_nwd_matches_the_worked_answer_and_the_paper_s_formula(a, b, expected):
    got = wasserstein_similarity(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64), 8.0)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    assert got.item() == pytest.approx(_paper_nwd(a, b, 8.0), rel=1e-9)
    assert wasserstein_similarity(torch.tensor(b, dtype=torch.float64), torch.tensor(a, dtype=torch.float64),
                                  8.0).item() == pytest.approx(expected, rel=1e-9)  # symmetric, any leading shape


def test_random_boxes_match_the_paper_s_formula_and_the_scale_is_checked():
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=gen, dtype=torch.float64) * 100
    a = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=gen, dtype=torch.float64) * 60], 1)
    b = a + torch.randn(50, 4, generator=gen, dtype=torch.float64) * 5
    got = wasserstein_similarity(a, b, 12.8)
    assert got.tolist() == pytest.approx([_paper_nwd(x.tolist(), y.tolist(), 12.8) for x, y in zip(a, b,
                                                                                                  strict=True)])
    with pytest.raises(ValueError, match="positive"):
        wasserstein_similarity(a, b, 0.0)


def test_large_boxes_keep_ultralytics_ciou_and_tiny_ones_get_nwd():
    from ultralytics.utils.metrics import bbox_iou

    gt = torch.tensor([[20.0, 20.0, 120.0, 120.0], [50.0, 50.0, 56.0, 56.0], [0.0, 40.0, 80.0, 42.0]])
    pd = torch.tensor([[22.0, 21.0, 121.0, 118.0], [58.0, 50.0, 64.0, 56.0], [0.0, 41.0, 80.0, 43.0]])
    ciou = bbox_iou(gt, pd, xywh=False, CIoU=True).squeeze(-1).clamp(0)  # the assigner's own overlap
    got = ciou_or_nwd(ciou, gt, pd, 8.0)
    assert got[0] == ciou[0] and ciou[0] > 0.9  # the 100 px box, a few px off: CIoU, NWD would say 0.76
    assert ciou[1] == 0 and got[1].item() == pytest.approx(math.exp(-1))  # a 6 px pit 8 px off
    assert ciou[2] < 0.34 and got[2].item() == pytest.approx(math.exp(-1 / 8))  # the thin line 1 px low


def test_the_scale_is_validated_naming_the_key():
    assert load_config("default", {"assign.nwd": True}).assign.nwd_scale is None
    with pytest.raises(ConfigError, match="nwd_scale"):
        load_config("default", {"assign.nwd": True, "assign.nwd_scale": 0})
    with pytest.raises(ConfigError, match="nwd_scale 12 is set but nwd is false"):  # not silently ignored
        load_config("default", {"assign.nwd_scale": 12})


# ------------------------------------------------------------------ the seam, on Ultralytics' own assigner

def _criterion_model():
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=2, verbose=False)
    model.args = get_cfg()
    model.criterion = model.init_criterion()  # Ultralytics builds it at the first loss
    return model.train()


LARGE = [8.0, 8.0, 40.0, 40.0]  # class 0: predicted (2, 2) px off at every anchor inside it: CIoU 0.78, NWD 0.70
PIT = [56.0, 56.0, 62.0, 62.0]  # class 1: a 6 px pit; every prediction at its anchors sits 8 px to its right


def _hand_made_assignment():
    """Inputs of ``TaskAlignedAssigner.forward`` on a 96 px grid of stride-8 anchors."""
    c = torch.arange(4.0, 96.0, 8.0)
    centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
    pred = torch.tensor([0.0, 88.0, 4.0, 92.0]).repeat(1, len(centres), 1)  # far from both boxes
    inside = (centres[:, 0] > LARGE[0]) & (centres[:, 0] < LARGE[2]) & (centres[:, 1] > LARGE[1]) & \
        (centres[:, 1] < LARGE[3])
    pred[0, inside] = torch.tensor(LARGE) + 2
    near_pit = ((centres - torch.tensor([59.0, 59.0])).abs() <= 8).all(-1)  # the pit's candidates and their ring
    pred[0, near_pit] = torch.tensor(PIT) + torch.tensor([8.0, 0.0, 8.0, 0.0])
    scores = torch.full((1, len(centres), 2), 0.5)
    return scores, pred, centres, torch.tensor([[[0.0], [1.0]]]), torch.tensor([[LARGE, PIT]]), torch.ones(1, 2, 1)


def _best_target(out, box):
    _, _, target_scores, fg_mask, owner = out
    own = fg_mask[0] & (owner[0] == box)
    return target_scores[0, own].max().item() if own.any() else 0.0


def test_ultralytics_assigner_teaches_the_missed_pit_with_nwd_and_the_large_box_as_before():
    from gradkit.integrations.ultralytics.assign import install_nwd_overlap

    model = _criterion_model()
    branches = (model.criterion.one2many, model.criterion.one2one)
    stock = [b.assigner(*_hand_made_assignment()) for b in branches]
    assert [_best_target(out, 1) for out in stock] == [0.0, 0.0]  # no prediction overlaps the pit: taught 0
    assert install_nwd_overlap(SimpleNamespace(model=model), None) == 8.0  # yolo26n's finest stride
    for branch, before in zip(branches, stock, strict=True):
        out = branch.assigner(*_hand_made_assignment())
        assert _best_target(out, 1) == pytest.approx(math.exp(-1), rel=1e-5)  # 8 px off at C = 8 px
        assert _best_target(out, 0) == pytest.approx(_best_target(before, 0)) and _best_target(before, 0) > 0.75
        large = before[3][0] & (before[4][0] == 0)
        assert torch.equal(out[3][0] & (out[4][0] == 0), large)  # the large box's positives, unchanged
        assert torch.allclose(out[2][0, large], before[2][0, large])  # and their targets


def test_the_scale_can_be_set_and_installing_again_rescales():
    from gradkit.integrations.ultralytics.assign import install_nwd_overlap

    model = _criterion_model()
    trainer = SimpleNamespace(model=model)
    assert install_nwd_overlap(trainer, 16.0) == 16.0
    out = model.criterion.one2many.assigner(*_hand_made_assignment())
    assert _best_target(out, 1) == pytest.approx(math.exp(-0.5), rel=1e-5)  # 8 px off at C = 16 px
    assert install_nwd_overlap(trainer, 8.0) == 8.0  # wrapping the wrapper would keep max(NWD16, NWD8) = NWD16
    out = model.criterion.one2many.assigner(*_hand_made_assignment())
    assert _best_target(out, 1) == pytest.approx(math.exp(-1), rel=1e-5)


def test_a_changed_assigner_is_named():
    from gradkit.integrations.ultralytics.assign import install_nwd_overlap
    from gradkit.integrations.ultralytics.seams import SeamError

    model = _criterion_model()
    model.criterion.one2many.assigner.iou_calculation = lambda boxes_a, boxes_b: None  # renamed arguments
    with pytest.raises(SeamError, match=r"iou_calculation\(gt_bboxes, pd_bboxes\)"):
        install_nwd_overlap(SimpleNamespace(model=model), None)
    for scale in (None, 0.1):  # at any scale: a probe pair a few px apart would score ~0 at 0.1 px
        model = _criterion_model()
        assigner = model.criterion.one2many.assigner
        assigner.pair_overlaps = lambda indices, gt, pd: torch.zeros(1)  # a release scoring pairs another way
        with pytest.raises(SeamError, match="no longer scores pairs with iou_calculation"):
            install_nwd_overlap(SimpleNamespace(model=model), scale)


def test_refused_for_a_detector_without_a_task_aligned_assigner():
    """RT-DETR is a detector (task 'detect') whose loss matches queries to boxes, with nothing to rescore."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    model = RTDETRDetectionModel("rtdetr-l.yaml", nc=2, verbose=False)
    model.args, model.nc = get_cfg(), 2  # as the trainer sets them
    plugin = GradkitCallback(load_config("default", {"assign.nwd": True}))
    with pytest.raises(PluginError, match=r"assign\.nwd .*\(RTDETRDetectionLoss\) has no task-aligned assigner"):
        plugin._refuse_unchangeable_assigner(SimpleNamespace(args=SimpleNamespace(task="detect"), model=model))


@pytest.mark.e2e
def test_a_real_training_run_scores_with_nwd_and_validates_with_stock(tiny_data, tmp_path):
    seen = {}

    def after_training(trainer):
        gt, pd = torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([[6.0, 0.0, 10.0, 4.0]])  # 6 px apart
        for name in ("one2many", "one2one"):
            seen[name] = getattr(trainer.model.criterion, name).assigner.iou_calculation(gt, pd).item()
        ema = trainer.ema.ema.criterion
        seen["ema"] = None if ema is None else ema.one2many.assigner.iou_calculation(gt, pd).item()

    _, run = train_tiny(tiny_data, tmp_path, overrides={"assign.nwd": True, "report.enabled": False},
                        callbacks=[("on_train_end", after_training)], epochs=1)
    summary = json.loads((run / "gradkit_summary.json").read_text())
    assert summary["assign_nwd_scale"] == 8.0 and summary["taught"]["overlap"] == "ciou_or_nwd"
    assert seen["one2many"] == pytest.approx(math.exp(-6 / 8)) and seen["one2one"] == pytest.approx(math.exp(-6 / 8))
    assert seen["ema"] in (None, 0.0)  # validation's loss scores with Ultralytics' CIoU
