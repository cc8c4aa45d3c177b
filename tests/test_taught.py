"""``monitor.taught``: what the task-aligned assigner teaches each class, per epoch.

Oracles: a per-box loop over the assigner's outputs (the positives of box j are the anchors with ``fg_mask`` and
``target_gt_idx == j``; its best target their highest score for its class); numpy medians of the recorded values;
a hand-made assignment through Ultralytics' own assigner where one class's predicted boxes are its boxes (CIoU 1:
best target 1) and the other's lie elsewhere in the image (no overlap: 0); label files counted for a real run.
"""

from __future__ import annotations

import json
import math
from copy import deepcopy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import read_csv, train_tiny
from gradkit.config import ConfigError, TaughtConfig, load_config
from gradkit.monitor.taught import BINS, ClassEpoch, TeachingTally, UntaughtRule, best_targets


def _loop_best(target_scores, fg_mask, target_gt_idx, gt_labels, mask_gt):
    b, n = mask_gt.shape[:2]
    best, positives = torch.zeros(b, n), torch.zeros(b, n, dtype=torch.long)
    for i in range(b):
        for j in range(n):
            if not mask_gt[i, j, 0]:
                continue
            own = fg_mask[i] & (target_gt_idx[i] == j)
            positives[i, j] = int(own.sum())
            if own.any():
                best[i, j] = float(target_scores[i, own, int(gt_labels[i, j, 0])].max())
    return best, positives


def _random_assignment(seed: int, b=3, n=5, a=40, c=4):
    g = torch.Generator().manual_seed(seed)
    fg = torch.rand(b, a, generator=g) < 0.3
    owner = torch.randint(0, n, (b, a), generator=g) * fg  # Ultralytics leaves background anchors at box 0
    scores = torch.rand(b, a, c, generator=g) * fg[..., None]
    labels = torch.randint(0, c, (b, n, 1), generator=g).float()
    mask = (torch.rand(b, n, 1, generator=g) < 0.7).float()
    mask[0] = 1.0  # one image full, another possibly with padding only
    return scores, fg, owner, labels, mask


@pytest.mark.parametrize("seed", range(5))
def test_best_targets_match_a_per_box_loop(seed):
    args = _random_assignment(seed)
    best, positives = best_targets(*args)
    want_best, want_positives = _loop_best(*args)
    assert torch.allclose(best, want_best) and torch.equal(positives, want_positives)


def test_a_batch_without_boxes_has_no_targets():
    best, positives = best_targets(torch.zeros(2, 10, 3), torch.zeros(2, 10, dtype=torch.bool),
                                   torch.zeros(2, 10), torch.zeros(2, 0, 1), torch.zeros(2, 0, 1))
    assert best.shape == positives.shape == (2, 0)


def test_the_tally_gives_numpy_s_medians_to_a_bin_and_clears_each_epoch():
    rng = np.random.default_rng(0)
    tally, values, sides, has = TeachingTally(), {0: [], 2: []}, {0: [], 2: []}, {0: 0, 2: 0}
    for _ in range(6):
        labels = torch.from_numpy(rng.choice([0, 2], (4, 7))).float()[..., None]
        best = torch.from_numpy(rng.beta(2, 5, (4, 7))).float()
        positives = torch.from_numpy(rng.integers(0, 3, (4, 7)))
        side = torch.from_numpy(rng.uniform(1, 80, (4, 7))).float()
        real = torch.from_numpy(rng.random((4, 7, 1)) < 0.8)
        tally.add(labels, best, positives, side, real.float(), classes=3)
        for i, j in zip(*np.nonzero(real[..., 0].numpy()), strict=True):
            c = int(labels[i, j, 0])
            values[c].append(float(best[i, j]))
            sides[c].append(min(float(side[i, j]), 63.5))  # the last bin holds every wider side
            has[c] += int(positives[i, j] > 0)
    epoch = tally.epoch_end()
    assert set(epoch) == {0, 2}  # class 1 had no box
    for c in (0, 2):
        assert epoch[c].boxes == len(values[c])
        assert epoch[c].with_positive == pytest.approx(has[c] / len(values[c]))
        assert abs(epoch[c].median_target - np.median(values[c])) <= 1 / BINS
        assert abs(epoch[c].median_short_side - np.median(sides[c])) <= 1.0
    assert tally.epoch_end() == {}  # cleared


def test_a_non_finite_assignment_is_left_out_of_the_tally():
    """A non-finite loss (AMP overflow, a diverged step) gives NaN targets: that step teaches nothing (gradkit skips
    it), so none of its boxes is counted, the finite ones included; the next step's are."""
    tally = TeachingTally()
    labels, real = torch.zeros(1, 3, 1), torch.ones(1, 3, 1)
    tally.add(labels, torch.tensor([[float("nan"), 0.7, float("inf")]]), torch.ones(1, 3), torch.full((1, 3), 5.0),
              real, classes=1)
    tally.add(labels, torch.tensor([[0.2, 0.3, 0.4]]), torch.ones(1, 3), torch.full((1, 3), 5.0), real, classes=1)
    epoch = tally.epoch_end()
    assert epoch[0].boxes == 3 and abs(epoch[0].median_target - 0.3) <= 1 / BINS


def _epoch(**medians: float) -> dict[int, ClassEpoch]:
    return {c: ClassEpoch(100, 1.0, m, 5.0) for c, m in enumerate(medians.values())}


RULE = dict(below=0.05, reference=0.3, patience=2, min_boxes=20)


def test_the_rule_reports_after_patience_epochs_once_per_episode():
    rule = UntaughtRule(**RULE)
    medians = [0.01, 0.01, 0.02, 0.2, 0.04, 0.06, 0.2, 0.0, 0.0]
    expected = [([], []),  # one epoch: patience 2
                ([1], []),
                ([], []),  # reported once for the episode
                ([], []),  # above the threshold once: not yet taught again
                ([], []),  # a median hovering at the threshold: no new report
                ([], []),
                ([], [1]),  # taught again: patience epochs in a row
                ([], []),
                ([1], [])]  # a new episode
    for at, (b, want) in enumerate(zip(medians, expected, strict=True)):
        assert rule.judge(_epoch(a=0.5, b=b), at) == want, at
    assert rule.streak_start(1) == 7 and rule.streak_start(0) is None


def test_the_rule_waits_for_another_class_to_be_taught_and_for_enough_boxes():
    rule = UntaughtRule(**RULE)
    for at in range(3):  # nothing is taught yet: the model is not learning anything, not this class only
        assert rule.judge(_epoch(a=0.2, b=0.0), at) == ([], [])
    few = {0: ClassEpoch(500, 1.0, 0.6, 9.0), 1: ClassEpoch(19, 0.5, 0.0, 3.0)}
    for at in range(3, 6):
        assert rule.judge(few, at) == ([], [])


def test_a_streak_spans_an_epoch_with_too_few_boxes_and_the_warning_says_so():
    """The class keeps its state through an epoch it had fewer than min_boxes boxes in: the warning names the
    epoch its streak began, not the last ``patience`` epochs."""
    from gradkit.integrations.ultralytics.taught import TeachingWatch

    rule = UntaughtRule(**RULE)
    few = {0: ClassEpoch(500, 1.0, 0.6, 9.0), 1: ClassEpoch(19, 0.5, 0.0, 3.0)}
    assert rule.judge(_epoch(a=0.5, b=0.0), 4) == ([], [])
    assert rule.judge(few, 5) == ([], [])
    assert rule.judge(_epoch(a=0.5, b=0.0), 6) == ([1], []) and rule.streak_start(1) == 4
    watch = TeachingWatch(TaughtConfig(), {0: "scratch", 1: "pit"})
    watch.rule = rule
    assert "(epochs 5-7)" in watch.message(1, _epoch(a=0.5, b=0.0), 6)


def test_the_rule_s_thresholds_are_the_configuration_s():
    cfg = TaughtConfig()
    assert UntaughtRule.of(cfg).thresholds() == {k: getattr(cfg, k) for k in RULE}
    with pytest.raises(ConfigError, match="below"):
        load_config("default", {"monitor.taught.below": 0.4, "monitor.taught.reference": 0.3})


def test_results_csv_columns_stay_one_per_class():
    from gradkit.integrations.ultralytics.taught import column_names

    cols = column_names({0: "scratch", 1: "oil, water", 2: "oil  water", 3: "??"})
    assert cols == {0: "taught/scratch", 1: "taught/oil_water_1", 2: "taught/oil_water_2", 3: "taught/3"}


# ------------------------------------------------------------------ the seam, on Ultralytics' own assigner

def _criterion_model(nc=2):
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo26n.yaml", nc=nc, verbose=False)
    model.args = get_cfg()
    model.criterion = model.init_criterion()  # Ultralytics builds it at the first loss
    return model.train()


BOX_TAUGHT = [8.0, 8.0, 40.0, 40.0]  # class 0: predicted exactly at every anchor inside it
BOX_MISSED = [56.0, 56.0, 88.0, 80.0]  # class 1: every prediction elsewhere


def _inside(box, centres):
    return (centres[:, 0] > box[0]) & (centres[:, 0] < box[2]) & (centres[:, 1] > box[1]) & (centres[:, 1] < box[3])


def _hand_made_assignment(pit_found: bool = False):
    """Inputs of ``TaskAlignedAssigner.forward`` on a 96 px grid of stride-8 anchors."""
    c = torch.arange(4.0, 96.0, 8.0)
    centres = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
    pred = torch.tensor([0.0, 0.0, 4.0, 4.0]).repeat(1, len(centres), 1)  # a corner far from the missed box
    pred[0, _inside(BOX_TAUGHT, centres)] = torch.tensor(BOX_TAUGHT)
    if pit_found:
        pred[0, _inside(BOX_MISSED, centres)] = torch.tensor(BOX_MISSED)
    scores = torch.full((1, len(centres), 2), 0.5)
    return scores, pred, centres, torch.tensor([[[0.0], [1.0]]]), torch.tensor([[BOX_TAUGHT, BOX_MISSED]]), \
        torch.ones(1, 2, 1)


def _watched(model, cfg=None):
    from gradkit.integrations.ultralytics.taught import TeachingWatch

    watch = TeachingWatch(cfg or TaughtConfig(min_boxes=1), {0: "scratch", 1: "pit"})
    watch.install(SimpleNamespace(model=model))
    return watch


def test_ultralytics_assigner_teaches_the_overlapped_class_0_target_1_and_the_missed_class_1_target_0():
    model = _criterion_model()
    watch = _watched(model)
    assigner = model.criterion.one2many.assigner
    for epoch in range(2):
        for _ in range(3):
            assigner(*_hand_made_assignment())
        columns, warnings, _ = watch.epoch_end(epoch)
        assert columns == {"taught/scratch": pytest.approx(1 - 0.5 / BINS), "taught/pit": 0.5 / BINS}
    assert watch.epochs[-1]["classes"]["scratch"]["boxes"] == 3
    assert watch.epochs[-1]["classes"]["pit"]["median_short_side"] == pytest.approx(24.5)  # 24 px, its bin's middle
    assert len(warnings) == 1 and "class 'pit' is not being taught (epochs 1-2)" in warnings[0]
    assert "scratch 0.99" in warnings[0] and "24 px" in warnings[0]
    assert watch.summary()["untaught"][0]["class"] == "pit"
    assert "not taught when training ended (monitor.taught): pit;" in watch.final_warning()
    for epoch in (2, 3):  # patience 2
        assigner(*_hand_made_assignment(pit_found=True))
        columns, warnings, notes = watch.epoch_end(epoch)
    assert columns["taught/pit"] > 0.9 and warnings == [] and watch.final_warning() is None
    assert notes == ["gradkit: class 'pit' is being taught again (epoch 4): median best assigner target 0.99"]


def _through_a_state_file(plugin, tmp_path):
    """The plugin's state as a resumed run reads it: written with torch.save, loaded with weights_only."""
    from gradkit.integrations.ultralytics.callback import load_state

    torch.save(plugin.state_dict(), tmp_path / "last.gradkit.pt")
    return load_state(tmp_path / "last.gradkit.pt")


def _plugin_watching(model):
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    plugin = GradkitCallback(load_config("default", {"monitor.taught.min_boxes": 1}))
    plugin._watch_teaching(SimpleNamespace(args=SimpleNamespace(task="detect"), model=model,
                                           data={"names": {0: "scratch", 1: "pit"}}))
    return plugin


def _plugin_resumed_from(state):
    """A plugin that loaded a resumed run's state, as on_pretrain_routine_end does, before the watch exists."""
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    plugin = GradkitCallback(load_config("default", {"monitor.taught.min_boxes": 1}))
    plugin.load_state_dict(state)
    return plugin


def test_a_resumed_run_continues_the_streaks_and_the_epochs(tmp_path):
    """Resumed after the warning, the pit still missed: no second warning for the same episode, and the epochs
    judged before the resume stay in the summary (a fresh watch would warn again at its second epoch)."""
    model = _criterion_model()
    plugin = _plugin_watching(model)
    assigner = model.criterion.one2many.assigner
    for epoch in range(2):
        assigner(*_hand_made_assignment())
        assert len(plugin.teaching.epoch_end(epoch)[1]) == epoch  # warned at the second epoch
    state = _through_a_state_file(plugin, tmp_path)

    resumed_model = _criterion_model()
    resumed = _plugin_resumed_from(state)
    resumed._watch_teaching(SimpleNamespace(args=SimpleNamespace(task="detect"), model=resumed_model,
                                            data={"names": {0: "scratch", 1: "pit"}}))
    for epoch in (2, 3):
        resumed_model.criterion.one2many.assigner(*_hand_made_assignment())
        assert resumed.teaching.epoch_end(epoch)[1] == []
    summary = resumed.teaching.summary()
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2, 3]
    assert [(u["epoch"], u["class"]) for u in summary["untaught"]] == [(1, "pit")]
    assert "pit" in resumed.teaching.final_warning()


def test_a_nan_recovery_forgets_the_epoch_it_throws_away(tmp_path):
    """Ultralytics judges an epoch (on_train_epoch_end) before its NaN recovery throws it away and reloads last.pt:
    gradkit's state from that save brings the watch back to the epochs before it."""
    model = _criterion_model()
    plugin = _plugin_watching(model)
    assigner = model.criterion.one2many.assigner
    assigner(*_hand_made_assignment())
    plugin.teaching.epoch_end(0)
    saved = _through_a_state_file(plugin, tmp_path)  # last.pt's save after epoch 1
    assigner(*_hand_made_assignment())
    assert len(plugin.teaching.epoch_end(1)[1]) == 1  # the discarded epoch warned
    plugin.load_state_dict(saved)  # the recovery's reload
    assert [e["epoch"] for e in plugin.teaching.epochs] == [0] and plugin.teaching.untaught == []
    assigner(*_hand_made_assignment())
    assert len(plugin.teaching.epoch_end(1)[1]) == 1  # the repeated epoch is judged afresh


@pytest.mark.parametrize(("broken", "named"), [
    ({"rule": {"low": [[1, -2]]}}, "'low'"),
    ({"rule": {"reported": ["pit"]}}, "'reported'"),
    ({"rule": {"reported": [7]}}, "classes this run does not have"),
    ({"epochs": [{"epoch": "two"}]}, "'epochs'"),
    ({"untaught": [{"epoch": 1}]}, "'untaught'"),  # no class: the report's schema would refuse the summary
    ({"names": [[0, "scratch"], [1, "crack"]]}, "this run's are"),  # data.yaml edited between the runs
    ("nonsense", "not a mapping"),
])
def test_a_malformed_state_is_named_and_a_nan_recovery_still_forgets_the_thrown_away_epoch(broken, named, caplog):
    from gradkit.integrations.ultralytics.taught import TeachingWatch

    watch = TeachingWatch(TaughtConfig(), {0: "scratch", 1: "pit"})
    with pytest.raises(ValueError, match=named):
        watch.load_state_dict(broken)
    model = _criterion_model()
    plugin = _plugin_watching(model)
    model.criterion.one2many.assigner(*_hand_made_assignment())
    plugin.teaching.epoch_end(0)  # the epoch the recovery throws away, judged already
    plugin._taught_state = broken
    with caplog.at_level("WARNING"):
        plugin._restore_teaching()
    assert "start afresh" in caplog.text and plugin.teaching.epochs == []
    assert plugin.teaching.rule.classes() == []


def test_a_state_file_from_before_the_watch_starts_it_afresh(tmp_path):
    """A NaN recovery reloading a state file with no 'taught' key (saved by an older gradkit) must not keep the
    epoch it throws away."""
    model = _criterion_model()
    plugin = _plugin_watching(model)
    model.criterion.one2many.assigner(*_hand_made_assignment())
    plugin.teaching.epoch_end(0)
    state = _through_a_state_file(plugin, tmp_path)
    del state["taught"]
    plugin.load_state_dict(state)
    assert plugin.teaching.epochs == [] and plugin.teaching.rule.classes() == []


def test_the_assignment_itself_is_unchanged_and_validation_is_not_recorded():
    model = _criterion_model()
    assigner = model.criterion.one2many.assigner
    stock = assigner(*_hand_made_assignment())
    watch = _watched(model)
    with torch.no_grad():  # the validator's inference mode
        assigner(*_hand_made_assignment())
    columns, _, _ = watch.epoch_end(0)
    assert all(math.isnan(v) for v in columns.values()) and watch.epochs == []
    got = assigner(*_hand_made_assignment())
    assert all(torch.equal(x, y) for x, y in zip(stock, got, strict=True))
    assert watch.epoch_end(1)[0]["taught/scratch"] > 0.9


def test_a_changed_assigner_is_named():
    from gradkit.integrations.ultralytics.seams import SeamError

    model = _criterion_model()
    assigner = model.criterion.one2many.assigner
    stock = assigner.forward

    def one_output_fewer(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra):  # a release
        return stock(pd_scores, pd_bboxes, anc_points, gt_labels, gt_bboxes, mask_gt, **extra)[:4]

    assigner.forward = one_output_fewer
    _watched(model)
    with pytest.raises(SeamError, match="target_gt_idx"):
        assigner(*_hand_made_assignment())
    other = _criterion_model()
    other.criterion.one2many.assigner.forward = lambda scores, boxes, anchors, labels, bboxes: None
    with pytest.raises(SeamError, match="no longer takes"):
        _watched(other)


def test_validation_after_a_nan_recovery_uses_a_stock_loss():
    from gradkit.integrations.ultralytics.seams import unrestricted_ema

    model = _criterion_model()
    _watched(model)
    trainer = SimpleNamespace(model=model, ema=SimpleNamespace(ema=deepcopy(model)))
    unrestricted_ema(trainer)
    assert trainer.ema.ema.criterion is None and model.criterion is not None


def test_off_outside_detection_and_when_disabled():
    from gradkit.integrations.ultralytics.callback import GradkitCallback

    plugin = GradkitCallback(load_config("default", {"monitor.taught.enabled": False}))
    plugin._watch_teaching(SimpleNamespace(args=SimpleNamespace(task="detect")))
    assert plugin.teaching is None
    plugin = GradkitCallback(load_config("default"))
    plugin._watch_teaching(SimpleNamespace(args=SimpleNamespace(task="segment")))
    assert plugin.teaching is None


# ------------------------------------------------------------------ a real run

def _label_counts(data_root, split="train") -> dict[int, int]:
    counts: dict[int, int] = {}
    for f in (data_root / "labels" / split).glob("*.txt"):
        for line in f.read_text().splitlines():
            if line.strip():
                c = int(line.split()[0])
                counts[c] = counts.get(c, 0) + 1
    return counts


@pytest.mark.e2e
def test_a_real_run_records_every_training_box_each_epoch(tiny_data, tmp_path):
    """No geometric augmentation: each epoch the assigner sees every training label once (label files counted);
    results.csv's columns are the summary's medians."""
    _, run = train_tiny(tiny_data, tmp_path, overrides={"report.enabled": False}, epochs=2, mosaic=0.0,
                        translate=0.0, scale=0.0, fliplr=0.0)
    taught = json.loads((run / "gradkit_summary.json").read_text())["taught"]
    root = tiny_data.parent  # the fixture is the dataset's data.yaml
    names = load_yaml_names(tiny_data)
    want = {names[c]: n for c, n in _label_counts(root).items()}
    assert [e["epoch"] for e in taught["epochs"]] == [0, 1]
    for epoch, row in zip(taught["epochs"], read_csv(run / "results.csv"), strict=True):
        assert {n: f["boxes"] for n, f in epoch["classes"].items()} == want
        for name, figures in epoch["classes"].items():
            assert 0 <= figures["median_target"] <= 1
            assert float(row[f"taught/{name}"]) == pytest.approx(figures["median_target"])


def load_yaml_names(data_yaml) -> dict[int, str]:
    import yaml

    names = yaml.safe_load(data_yaml.read_text())["names"]
    return dict(enumerate(names)) if isinstance(names, list) else {int(k): v for k, v in names.items()}


def test_a_detector_without_a_task_aligned_assigner_trains_unwatched():
    """RT-DETR is a detector (task 'detect') whose loss matches queries to boxes (Hungarian), with no
    task-aligned assigner: monitor.taught, on by default, must step aside, not stop its training."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import RTDETRDetectionModel

    from gradkit.integrations.ultralytics.callback import GradkitCallback

    model = RTDETRDetectionModel("rtdetr-l.yaml", nc=2, verbose=False)
    model.args, model.nc = get_cfg(), 2  # as the trainer sets them
    plugin = GradkitCallback(load_config("default"))
    plugin._watch_teaching(SimpleNamespace(args=SimpleNamespace(task="detect"), model=model,
                                           data={"names": {0: "scratch", 1: "pit"}}))
    assert plugin.teaching is None


def test_yoloe_trains_unwatched_and_its_loss_is_left_for_its_first_batch_to_choose():
    """YOLOE picks its loss (text or visual prompts) from its first batch: building it earlier would pick for it."""
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import YOLOEModel

    from gradkit.integrations.ultralytics.callback import GradkitCallback, PluginError

    model = YOLOEModel("yoloe-26n.yaml", nc=2, verbose=False)
    model.args, model.nc = get_cfg(), 2
    trainer = SimpleNamespace(args=SimpleNamespace(task="detect"), model=model,
                              data={"names": {0: "scratch", 1: "pit"}})
    plugin = GradkitCallback(load_config("default"))
    plugin._watch_teaching(trainer)
    assert plugin.teaching is None and getattr(model, "criterion", None) is None
    plugin = GradkitCallback(load_config("default", {"assign.nwd": True}))
    with pytest.raises(PluginError, match="YOLOEModel chooses its loss at its first batch"):
        plugin._refuse_unchangeable_assigner(trainer)  # in on_pretrain_routine_end, before the folder's set-up
    assert getattr(model, "criterion", None) is None


@pytest.mark.parametrize("per_object", [False, True])
def test_the_warning_says_what_this_run_s_box_loss_does(per_object):
    """The warning said "(unless assign.box_loss_per_object) its box loss weighs about 0" in every run, also in the
    plan's runs, which turn it on: it now says which of the two this run does."""
    from gradkit.integrations.ultralytics.taught import TeachingWatch

    model = _criterion_model()
    watch = TeachingWatch(TaughtConfig(min_boxes=1), {0: "scratch", 1: "pit"}, box_loss_per_object=per_object)
    watch.install(SimpleNamespace(model=model))
    for epoch in range(2):
        for _ in range(3):
            model.criterion.one2many.assigner(*_hand_made_assignment())
        _, warnings, _ = watch.epoch_end(epoch)
    (warning,) = warnings
    assert "unless" not in warning
    assert ("its box loss still counts" in warning) == per_object
    assert ("its box loss weighs about 0" in warning) != per_object
