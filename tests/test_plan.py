"""Planning rules: each known fingerprint gives the documented choice; the written plan trains."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import yaml

from gradkit import plan as P
from gradkit.config import ConfigError, load_config
from gradkit.data.fingerprint import THIN_WIDTH_PX, Fingerprint


def fingerprint(boxes, side=256, gray=True, images=100, defect_free=20, names=("scratch", "pit"), depth=8):
    """A fingerprint built by hand. ``boxes``: (class, w_px, h_px, stroke_px, fill[, standout]) on
    ``side``-px squares (standout: the box's defect share, 1 when not given)."""
    fp = Fingerprint(data="/data/d.yaml", split="train", class_names=dict(enumerate(names)), images=images,
                     decoded=images, widths=[side] * images, heights=[side] * images, channels=Counter({3: images}),
                     gray=images if gray else 0, bit_depth=Counter({depth: images}), defect_free=defect_free)
    for c, w, h, stroke, fill, *standout in boxes:
        fp.box_standout.append(standout[0] if standout else 1.0)
        fp.box_cls.append(c)
        fp.box_w.append(w / side)
        fp.box_h.append(h / side)
        fp.box_img_w.append(float(side))
        fp.box_img_h.append(float(side))
        fp.box_stroke.append(stroke)
        fp.box_fill.append(fill)
    return fp


LINE = (0, 57, 57, 1.5, 0.05)          # a 1.5 px diagonal scratch: thin
BLOB = (1, 30, 30, 12.0, 0.7)          # a compact 30 px defect: not thin


def choice(plan, key):
    return next(c for c in plan.choices if c.key == key)


# ---------------------------------------------------------------- imgsz
def test_imgsz_native_for_thin_defects():
    fp = fingerprint([LINE] * 3 + [BLOB] * 7, side=1000)           # 30% thin >= THIN_SHARE
    plan = P.make_plan(fp)
    assert plan.train["imgsz"] == 1024                              # never downscale thin lines (1000 -> 1024)
    assert "thin" in choice(plan, "imgsz").reason


def test_imgsz_is_provisional_and_says_what_it_cost_where_measured():
    imgsz = choice(P.make_plan(fingerprint([LINE] * 3 + [BLOB] * 7, side=320)), "imgsz")
    assert imgsz.value == 320 and imgsz.provisional
    assert imgsz.reason.endswith(P.IMGSZ_EVIDENCE)                  # the measured cost, with every rule's reason


def test_imgsz_default_caps_large_images_without_thin_defects():
    fp = fingerprint([(1, 300, 300, 50.0, 0.7)] * 10, side=2000)    # big compact defects: 96 px at 640
    plan = P.make_plan(fp)
    assert plan.train["imgsz"] == P.DEFAULT_IMGSZ
    assert any("tiling keeps them: gradkit tile data=" in w and "size=640" in w for w in plan.warnings)  # 2000 px


def test_imgsz_grows_until_the_median_compact_defect_spans_a_cell():
    fp = fingerprint([(1, 10, 10, 5.0, 0.7)] * 10, side=1200)       # 10 px at 1200 -> 5.3 px at 640
    plan = P.make_plan(fp)
    assert plan.train["imgsz"] == 960                               # 1200 * 8 / 10 = 960 px, a multiple of 32
    fp = fingerprint([(1, 6, 6, 5.0, 0.7)] * 10, side=2000)         # needs 2000 * 8 / 6 = 2688 > MAX_IMGSZ
    plan = P.make_plan(fp)
    assert plan.train["imgsz"] == P.MAX_IMGSZ
    assert any(w.startswith("tiling") for w in plan.warnings)


def test_imgsz_is_the_native_size_for_small_images():
    plan = P.make_plan(fingerprint([BLOB] * 10, side=200))
    assert plan.train["imgsz"] == 224                               # 200 rounded up to a multiple of 32


# ---------------------------------------------------------------- model
def _suggests_p2(plan) -> bool:
    return any(P.MODEL_P2 in w for w in plan.warnings)


def _names_thin_strokes(plan) -> bool:
    reason = choice(plan, "model").reason
    return "of the boxes are thin" in reason and P.P2_THIN_EVIDENCE in reason


def test_thin_strokes_keep_the_standard_head_without_suggesting_p2():
    """The stride-4 head did worse on thin lines where it was measured (P2_THIN_EVIDENCE): the plan says
    so in the model's reason and does not send the user to try it."""
    plan = P.make_plan(fingerprint([LINE] * 3 + [BLOB] * 7))
    assert plan.train["model"] == P.MODEL and choice(plan, "model").provisional
    assert _names_thin_strokes(plan) and not _suggests_p2(plan)


def test_thin_share_counts_only_measured_boxes():
    fp = fingerprint([LINE] * 3 + [BLOB] * 7 + [(1, 30, 30, float("nan"), float("nan"))] * 100)  # images not decoded
    assert _names_thin_strokes(P.make_plan(fp))                     # 30% of the measured boxes, not 3% of all


def test_the_written_summary_gives_the_thin_share_the_reasons_give():
    # one fact, one definition: plan.yaml's fingerprint summary and the printed reasons must agree
    fp = fingerprint([LINE] * 3 + [BLOB] * 7 + [(1, 30, 30, float("nan"), float("nan"))] * 5)
    plan = P.make_plan(fp)
    assert fp.summary()["thin_share"] == 0.3                        # 3 of the 10 measured boxes
    assert "30% of the boxes are thin" in choice(plan, "imgsz").reason


def test_thin_strokes_not_named_when_rare_or_wide():
    plan = P.make_plan(fingerprint([LINE] * 1 + [BLOB] * 9))      # 10% < THIN_SHARE
    assert plan.train["model"] == P.MODEL and not _names_thin_strokes(plan) and not _suggests_p2(plan)
    assert not choice(plan, "model").provisional                    # the standard head is simply right here
    assert choice(plan, "clip.mode").provisional                     # as README's rules table says
    wide = (0, 57, 57, THIN_WIDTH_PX, 0.05)                           # 3 px lines at native 256: thin, not <= 2 px
    assert not _names_thin_strokes(P.make_plan(fingerprint([wide] * 5 + [BLOB] * 5)))


def test_p2_suggested_for_many_tiny_compact_defects_at_the_capped_size():
    tiny = (1, 4, 4, 4.0, 0.7)                                      # 4 px pits on 2000 px images
    plan = P.make_plan(fingerprint([tiny] * 5 + [(1, 200, 200, 40.0, 0.7)] * 5, side=2000))
    assert plan.train["model"] == P.MODEL and _suggests_p2(plan)
    assert "below 8 px" in choice(plan, "model").reason
    assert not _names_thin_strokes(plan) and not any(P.P2_THIN_EVIDENCE in w for w in plan.warnings)


def test_tiny_compact_defects_suggest_p2_even_beside_thin_strokes():
    tiny = (1, 4, 4, 4.0, 0.7)
    plan = P.make_plan(fingerprint([tiny] * 5 + [LINE] * 3 + [(1, 200, 200, 40.0, 0.7)] * 2, side=2000))
    assert _suggests_p2(plan) and "below 8 px" in choice(plan, "model").reason
    assert _names_thin_strokes(plan)                                # the lines are not forgotten beside the pits
    assert any(P.P2_THIN_EVIDENCE in w for w in plan.warnings if P.MODEL_P2 in w)


# ---------------------------------------------------------------- schedule
def test_the_plan_keeps_ultralytics_loss_gains_and_assigner_weighs_every_object_the_same_and_says_why():
    for boxes in ([LINE] * 3 + [BLOB] * 7, [LINE] * 1 + [BLOB] * 9):   # thin data or not
        plan = P.make_plan(fingerprint(boxes))
        assert not {"cls", "box", "dfl"} & plan.train.keys() and "cls=" not in plan.command()
        assert choice(plan, "cls (loss gain)").reason == P.CLS_EVIDENCE and "halved" in P.CLS_EVIDENCE
        assert choice(plan, "box, dfl (loss gains)").value == "Ultralytics' defaults"
        assert plan.gradkit["assign"] == {"box_loss_per_object": True}  # only the box-loss weights, below
        assert choice(plan, "assigner candidates").reason == P.ASSIGN_EVIDENCE
        assert choice(plan, "assigner overlap").reason == P.NWD_EVIDENCE and "escape rate" in P.NWD_EVIDENCE
        assert choice(plan, "box, dfl (loss gains)").reason == P.BOX_DFL_EVIDENCE
        weights = choice(plan, "box-loss weights")
        assert weights.reason == P.BOX_WEIGHT_EVIDENCE and "assign.box_loss_per_object" in weights.value


def test_the_plan_keeps_ultralytics_memory_layout_and_says_why():
    from gradkit.config import load_config

    plan = P.make_plan(fingerprint([BLOB] * 10))
    assert "speed" not in plan.gradkit and load_config(plan.gradkit).speed.memory_format == "contiguous"
    layout = choice(plan, "speed.memory_format")
    assert layout.provisional and layout.value.startswith("contiguous")
    assert "0.149 against 0.117" in layout.reason and "0.044" in layout.reason  # the measured pairs, both ways


def test_budget_becomes_ultralytics_time_in_hours():
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=30)
    assert plan.train["time"] == 0.5 and "epochs" not in plan.train


# ---------------------------------------------------------------- the model's width
def _timer(half_share: float | None, full: float = 0.05):
    """seconds_per_image: ``full`` for yolo26n at 256 px, ``half_share`` of it for the half width (None: not timed),
    both growing with the pixel count."""
    def seconds(model, imgsz, nc):
        share = 1.0 if model == P.MODEL else half_share
        return None if share is None else full * share * (imgsz / 256) ** 2
    return seconds


def test_a_budget_trains_yolo26n_at_half_its_width_where_the_timer_says_it_is_faster():
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=10, seconds_per_image=_timer(0.5))
    model = choice(plan, "model")
    assert plan.train["model"] == model.value == P.MODEL_HALF and model.provisional
    assert "2.00x yolo26n's images per second" in model.reason and P.HALF_WIDTH_EVIDENCE in model.reason
    # by hand: 600 s / 0.05 s = 12000 images = 120 epochs of 100 in 7 batches of 16 = 840 steps of yolo26n
    assert "yolo26n would take about 840 optimizer steps" in model.reason
    assert "defects span the stride-8 cells" in model.reason  # why the head, kept after the width's reason
    assert f"model={P.MODEL_HALF}" in plan.command()


@pytest.mark.parametrize(("budget", "timer", "why"), [
    (None, _timer(0.5), None),                  # epochs fixed: the half width was measured only at a budget
    (30, None, "not timed on this machine"),    # no timer (make_plan called without one)
    (30, lambda m, s, n: None, "not timed on this machine"),  # a CUDA machine's timer: it times nothing
    (30, _timer(None), "not timed on this machine"),  # a timer that times yolo26n but not the half width
    (10, _timer(0.8), "only 1.25x"),            # a speed-up below HALF_WIDTH_MIN_SPEEDUP
    # by hand: 1800 s / 0.05 s = 36000 images = 360 epochs of 7 steps = 2520 > HALF_WIDTH_MAX_STEPS
    (30, _timer(0.5), "the budget buys yolo26n about 2520 steps, more than any pair had"),
])
def test_yolo26n_keeps_its_width_without_a_budget_or_a_measured_speed_up(budget, timer, why):
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=budget, seconds_per_image=timer)
    model = choice(plan, "model")
    assert plan.train["model"] == model.value == P.MODEL and P.HALF_WIDTH_EVIDENCE not in model.reason
    assert why is None or why in model.reason


@pytest.mark.parametrize(("epochs", "model"), [(217, P.MODEL_HALF), (219, P.MODEL)])
def test_the_half_width_stops_where_yolo26n_would_take_more_steps_than_any_pair(epochs, model):
    # epochs of 100 images at 0.05 s each (7 steps of 16 an epoch): 1519 and 1533 steps, either side of 1526
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=epochs * 100 * 0.05 / 60, seconds_per_image=_timer(0.5))
    assert P.HALF_WIDTH_MAX_STEPS == 1526 and plan.train["model"] == model


def test_a_speed_up_of_exactly_the_threshold_trains_the_half_width():
    def seconds(model, imgsz, nc):  # 0.75 / 0.5: exactly 1.5 in binary floating point
        return 0.75 if model == P.MODEL else 0.5

    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=10, seconds_per_image=seconds)
    assert P.HALF_WIDTH_MIN_SPEEDUP == 1.5 and plan.train["model"] == P.MODEL_HALF


def test_the_model_s_hints_are_made_at_the_size_it_trains_at():
    """The width is chosen at yolo26n's size (128 px here), the half width from the prior trains at 192: 12 px pits
    are 6 px at 128 and 9 px at 192, so the stride-4 suggestion made at 128 would be false at the size trained."""
    plan = P.make_plan(fingerprint([(1, 12, 12, 5.0, 0.7)] * 10, images=200), budget_min=3,
                       seconds_per_image=_timer(0.5))
    assert plan.train["model"] == P.MODEL_HALF and plan.train["imgsz"] == 192
    said = " ".join([*plan.warnings, choice(plan, "model").reason])
    assert "imgsz 128" not in said and P.MODEL_P2 not in said


def test_a_budget_sizes_the_images_by_the_steps_of_the_model_it_trains():
    """The width is chosen at the size yolo26n's steps buy (as its pairs were measured); from the prior the size is
    then counted in the half width's own steps, from scratch in yolo26n's."""
    fp = fingerprint([BLOB] * 10, images=200)
    # by hand: 3 min, 13 steps an epoch of 200; yolo26n 0.05 s per image at 256 px buys 234 steps there, at s px
    # 234 (256 / s)^2: 599 at 160, 936 at 128; the half width 0.025 s: 468 at 256, 611 at 224, 832 at 192
    half, same = (P.make_plan(fp, budget_min=3, seconds_per_image=_timer(share)) for share in (0.5, 1.0))
    assert half.train["model"] == P.MODEL_HALF and same.train["model"] == P.MODEL
    assert half.train["imgsz"] == 192 and same.train["imgsz"] == 128
    reason = choice(half, "imgsz").reason
    assert f"buys {P.MODEL_HALF}, the model the plan trains from the prior, about 468 optimizer steps at 256" in reason
    assert "832 at 192" in reason and P.HALF_STEPS_EVIDENCE in reason
    assert "buys yolo26n about 234 optimizer steps at 256" in choice(same, "imgsz").reason
    assert P.HALF_STEPS_EVIDENCE not in choice(same, "imgsz").reason
    given = P.make_plan(fp, budget_min=3, seconds_per_image=_timer(0.5), model=P.MODEL)  # yolo26n, from scratch
    assert given.train["imgsz"] == 128 and "init" not in given.gradkit
    given = P.make_plan(fp, budget_min=3, seconds_per_image=_timer(0.5), model=P.MODEL_HALF)  # from the prior
    assert given.train["imgsz"] == 192 and given.gradkit["init"] == {"prior": "defect"}


# ---------------------------------------------------------------- what a budget buys on this machine
def test_budget_estimate_says_what_the_budget_buys_at_the_planned_size():
    calls = []

    def seconds(model, imgsz, nc):
        calls.append((model, imgsz, nc))
        return 0.05 if model == P.MODEL else 0.025

    plan = P.make_plan(fingerprint([BLOB] * 10, images=200), budget_min=15, seconds_per_image=seconds)
    # sized and compared with yolo26n at the data's 256, estimated for the planned model, the half width, at the
    # size it trains at from the prior: 1.25 x 256 = 320 (upscale_from_prior)
    assert plan.train["model"] == P.MODEL_HALF and plan.train["imgsz"] == 320
    assert set(calls) == {(P.MODEL, 256, 2), (P.MODEL_HALF, 256, 2), (P.MODEL_HALF, 320, 2)}
    # by hand: 900 s / 0.025 s = 36000 images = 180 epochs of 200 in 13 batches of 16 (the last one partial,
    # a step too) = 2340 optimizer steps
    assert ("about 180 epochs of the 200 training images (2340 optimizer steps; 25 ms per image at imgsz 320"
            in choice(plan, "time").reason)


def test_budget_estimate_counts_steps_of_ultralytics_nbs_on_large_data():
    plan = P.make_plan(fingerprint([BLOB] * 10, images=4800), budget_min=16, seconds_per_image=lambda m, s, n: 0.05)
    assert "nbs" not in plan.train                                      # Ultralytics accumulates to 64 images
    # 960 s / 0.05 s = 19200 images = 4 epochs of 4800 = 300 steps of 64 images
    assert "about 4 epochs of the 4800 training images (300 optimizer steps" in choice(plan, "time").reason


def test_budget_estimate_pays_for_the_validation_after_every_epoch():
    fp = fingerprint([BLOB] * 10, images=200)
    fp.val_images = 50
    plan = P.make_plan(fp, budget_min=20, seconds_per_image=lambda m, s, n: 0.05,
                       val_seconds_per_image=lambda m, s, n: 0.02)
    # by hand: an epoch trains 200 images (10 s) and validates 50 (1 s): 0.055 s per training image;
    # 1200 s buy 21818 training images = 109.1 epochs of 13 steps = 1418 optimizer steps
    reason = choice(plan, "time").reason
    assert "about 109 epochs of the 200 training images (1418 optimizer steps; 55 ms per training image" in reason
    assert "5 ms of them its share of validating the 50 val images after every epoch" in reason
    no_val = fingerprint([BLOB] * 10, images=200)                       # no val split: nothing to pay for
    alone = P.make_plan(no_val, budget_min=20, seconds_per_image=lambda m, s, n: 0.05,
                        val_seconds_per_image=lambda m, s, n: 0.02)
    assert "(1560 optimizer steps; 50 ms per image" in choice(alone, "time").reason


def test_a_val_split_that_does_not_exist_is_warned_of():
    fp = fingerprint([BLOB] * 10)
    fp.val_absent = ["/data/images/val"]
    assert any(w.startswith("val: /data/images/val does not exist") for w in P.make_plan(fp).warnings)
    assert not any(w.startswith("val:") for w in P.make_plan(fingerprint([BLOB] * 10)).warnings)


def test_the_validation_share_can_tip_the_size_a_budget_buys():
    # 10 min at 0.05 s per image buys 780 steps at 256 px (test below); validating 100 images of the same
    # cost after every epoch of 200 adds half an image's cost to each: 520 steps at 256, under MIN_STEPS,
    # so the rule trains smaller (224 px: 679, the largest that buys 650)
    fp = fingerprint([BLOB] * 10, images=200)
    fp.val_images = 100
    assert P.MIN_STEPS == 650  # the numbers below are worked out by hand for it
    assert P.make_plan(fp, budget_min=10, seconds_per_image=per_pixel(50)).train["imgsz"] == 256
    assert P.make_plan(fp, budget_min=10, seconds_per_image=per_pixel(50),
                       val_seconds_per_image=per_pixel(50)).train["imgsz"] == 224


def per_pixel(ms_at_256):
    """A timer whose cost grows with the pixels, as a convolutional network's does."""
    return lambda model, size, nc: ms_at_256 / 1000 * (size / 256) ** 2


@pytest.mark.parametrize(("budget", "side", "imgsz", "warned"), [
    # steps: 13 per epoch of 200 images (the last batch of 8 is a step too); MIN_STEPS = 650
    (14, 256, 256, False),   # 840 s / 0.05 s / 200 = 84 epochs = 1092 steps at 256 >= MIN_STEPS: the data's size
    (10, 256, 256, False),   # 780 at 256: enough
    (7, 256, 224, False),    # 546 at 256; 224 buys 713, 192 971: the largest that buys them
    (3, 256, 128, False),    # 234 at 256, 416 at 192, 599 at 160, 936 at 128 = 0.5 x 256, the floor
    (1, 256, 128, True),     # 78 at 256, 312 at 128, the floor: said, with what a budget buys there
    (6, 320, 192, False),    # native 320 for thin data (300 steps): 468 at 256, 611 at 224, 832 at 192
])
def test_a_short_budget_buys_steps_with_a_smaller_size(budget, side, imgsz, warned):
    boxes = [LINE] * 3 + [BLOB] * 7 if side == 320 else [BLOB] * 10
    plan = P.make_plan(fingerprint(boxes, side=side, images=200), budget_min=budget, seconds_per_image=per_pixel(50))
    assert plan.train["imgsz"] == choice(plan, "imgsz").value == imgsz
    assert f"imgsz {imgsz}" in choice(plan, "time").reason                # the estimate is at the size trained
    assert any("optimizer steps even at imgsz" in w for w in plan.warnings) == warned
    warning = next((w for w in plan.warnings if "even at" in w), "")
    if warned:  # by hand: 96 px buys 60 s / 0.00703 s / 200 x 13 = 555 steps, 64 px 1248
        assert "(0.5x the 256 the data calls for" in warning and "a smaller imgsz= (64 buys 650 or more" in warning
    if imgsz != side:
        assert choice(plan, "imgsz").reason.startswith(f"smaller than the {side} the data calls for")
        assert P.BUDGET_EVIDENCE in choice(plan, "imgsz").reason


@pytest.mark.parametrize(("budget", "imgsz", "note"), [
    # by hand with per_pixel(50), 13 steps per epoch of 200 images: steps(s) = 78 x budget x (256 / s)^2
    (7, 224, "read 1.5x faster it would train at 256 and read 1.5x slower it would train at 160"),
    # 546 at 256 (x1.5: 819 >= 650); 713 at 224; slower: 364, 475, 647 at 192, 932 at 160
    (10, 256, "read 1.5x slower it would train at 224"),   # 780 at 256; read slower 520 there, 679 at 224
    (14, 256, None),  # 1092 at 256, 728 read 1.5x slower: the same size either way
    (3, 128, "read 1.5x faster it would train at 160"),  # 599 at 160 (x1.5: 899); 936 at 128 (slower: 624)
    (1, 128, None),   # 78 at 256, 312 at 128, the floor: 468 read faster, still short of 650 at every size
])
def test_the_plan_says_when_its_budget_size_is_a_close_call(budget, imgsz, note):
    assert P.TIMER_DRIFT == 1.5
    plan = P.make_plan(fingerprint([BLOB] * 10, images=200), budget_min=budget, seconds_per_image=per_pixel(50))
    reason = choice(plan, "imgsz").reason
    assert plan.train["imgsz"] == imgsz
    assert ("a close call" in reason) == (note is not None)
    if note:
        assert note in reason and P.TIMER_DRIFT_EVIDENCE in reason


def test_a_short_budget_never_pays_for_upsampling_small_images():
    """Tiny pits (3 px at the native 256) call for 704 px; a budget that buys 103 steps there, 780 at 256, trains at
    the native size: the old floor (0.75 x 704 -> 544 px, 174 steps) was the fifth set's failure (README)."""
    fp = fingerprint([(1, 3, 3, 3.0, 0.7)] * 10, images=200)
    plan = P.make_plan(fp, budget_min=10, seconds_per_image=per_pixel(50))
    assert choice(plan, "imgsz").reason.startswith("smaller than the 704 the data calls for")
    assert plan.train["imgsz"] == 256 and not any("even at imgsz" in w for w in plan.warnings)
    assert P.deepest_budget_size(fp, 704) == P.deepest_budget_size(fp, 200) == 128  # half of min(wanted, native)


def test_no_budget_or_no_timer_keeps_the_size_the_data_calls_for():
    fp = fingerprint([BLOB] * 10, images=200)
    assert P.make_plan(fp, seconds_per_image=per_pixel(50)).train["imgsz"] == 256          # no budget: epochs
    assert P.make_plan(fp, budget_min=1).train["imgsz"] == 256                             # nothing timed
    assert P.make_plan(fp, budget_min=1, seconds_per_image=lambda m, s, n: None).train["imgsz"] == 256
    flat = P.make_plan(fp, budget_min=1, seconds_per_image=lambda m, s, n: 0.05)          # smaller buys nothing
    assert flat.train["imgsz"] == 256


def test_budget_estimate_is_left_out_where_the_machine_is_not_timed():
    untimed = P.make_plan(fingerprint([BLOB] * 10), budget_min=10, seconds_per_image=lambda m, s, n: None)
    assert "not estimated on this machine" in choice(untimed, "time").reason
    pure = P.make_plan(fingerprint([BLOB] * 10), budget_min=10)         # no timer given: nothing is claimed
    assert "this machine" not in choice(pure, "time").reason


def test_no_budget_uses_default_epochs_and_small_data_steps_per_batch():
    plan = P.make_plan(fingerprint([BLOB] * 10, images=500))
    assert plan.train["epochs"] == P.DEFAULT_EPOCHS
    assert plan.train["nbs"] == plan.train["batch"] == 16
    assert "nbs" not in P.make_plan(fingerprint([BLOB] * 10, images=5000)).train


# ---------------------------------------------------------------- augmentation
def test_the_plan_takes_the_defect_preset_without_blur_and_jpeg():
    """Thin data or not, the planned transforms are the ``defect`` list, which holds no transform that
    erases a 1 px line (oracle: the erasing ones named by hand), and the reason says the thin share."""
    from gradkit.augment import build_transforms
    from gradkit.config import load_config

    for boxes, thin in (([LINE] * 3 + [BLOB] * 7, "30% thin boxes"), ([BLOB] * 10, "(0% thin boxes;")):
        plan = P.make_plan(fingerprint(boxes))
        assert plan.gradkit["augment"]["preset"] == "defect"
        assert "transforms" not in plan.gradkit["augment"]
        names = {type(t).__name__ for t in build_transforms(load_config(plan.gradkit))}
        assert names and not names & {"GaussianBlur", "ImageCompression", "Blur", "MedianBlur", "Downscale"}
        choice = next(c for c in plan.choices if c.key == "augment.preset")
        assert thin in choice.reason and "JPEG" in choice.reason


def test_faint_defects_on_texture_leave_the_transform_list_out():
    """standout_share below FAINT_STANDOUT: no transform list, and the reason gives the share; at or
    above it, or unmeasured: the ``defect`` list."""
    faint_line, faint_blob = (*LINE, 0.2), (*BLOB, 0.3)
    cases = {
        "none": [faint_line] * 4 + [faint_blob] * 3 + [BLOB] * 3,                  # 30% stand out
        "defect": [faint_line] * 2 + [LINE] * 1 + [BLOB] * 7,                      # 80% stand out
    }
    for expected, boxes in cases.items():
        plan = P.make_plan(fingerprint(boxes))
        assert plan.gradkit["augment"]["preset"] == expected, boxes
        assert plan.gradkit["augment"]["copy_paste"]["p"] > 0                      # copy-paste stays: it helped
    reason = choice(P.make_plan(fingerprint(cases["none"])), "augment.preset").reason
    assert "30.0%" in reason and "stand out" in reason
    n_standing = round(P.FAINT_STANDOUT * 20)                                       # exactly at the threshold
    at = fingerprint([LINE] * n_standing + [faint_line] * (20 - n_standing))
    assert at.standout_share == P.FAINT_STANDOUT
    assert P.make_plan(at).gradkit["augment"]["preset"] == "defect"
    unmeasured = fingerprint([(*LINE, float("nan"))] * 5)
    assert P.make_plan(unmeasured).gradkit["augment"]["preset"] == "defect"


def test_left_right_flips_stay_ultralytics_own_where_the_transform_list_is_left_out():
    """No transform list (faint defects): nothing else flips, so ``fliplr`` is not set and Ultralytics' own
    default applies, with the measured reason; with the ``defect`` list its D4 flips, so ``fliplr`` is 0.
    Up-down flips stay off either way (Ultralytics' own default)."""
    faint_line, faint_blob = (*LINE, 0.2), (*BLOB, 0.3)
    faint = P.make_plan(fingerprint([faint_line] * 4 + [faint_blob] * 3 + [BLOB] * 3))
    standing = P.make_plan(fingerprint([LINE] * 3 + [BLOB] * 7))
    assert faint.gradkit["augment"]["preset"] == "none" and standing.gradkit["augment"]["preset"] == "defect"
    faint_hyp, standing_hyp = (p.gradkit["augment"]["ultralytics"] for p in (faint, standing))
    assert "fliplr" not in faint_hyp and faint_hyp["flipud"] == 0.0
    assert standing_hyp["fliplr"] == 0.0 and standing_hyp["flipud"] == 0.0
    trained = load_config(faint.gradkit).augment.ultralytics                    # what the run hands to yolo
    assert "fliplr" not in trained
    assert choice(faint, "augment.ultralytics.fliplr").value == "stock"
    assert choice(faint, "augment.ultralytics.fliplr").provisional        # a gain inside the spread (README rules)
    assert not choice(standing, "augment.ultralytics.fliplr").provisional  # D4 flips: a fact, not a measurement
    assert "3 seeds" in choice(faint, "augment.ultralytics.fliplr").reason
    assert "D4" in choice(standing, "augment.ultralytics.fliplr").reason


def test_augment_preset_auto_resolves_by_the_plan_s_own_rule():
    """``augment.preset: auto`` (the ``defect`` preset file's) becomes what the plan would choose for the
    same fingerprint, with the plan's reason; the rest of the augment section is kept (the preset file's own
    ``fliplr`` 0 too: flips follow the plan's rule in the plan only, README "flips")."""
    faint_line, faint_blob = (*LINE, 0.2), (*BLOB, 0.3)
    aug = load_config(None, {"augment.preset": "auto", "augment.copy_paste.p": 0.4}).augment
    for boxes in ([faint_line] * 4 + [faint_blob] * 3 + [BLOB] * 3, [LINE] * 8 + [faint_line] * 2,
                  [(*LINE, float("nan"))] * 5):
        fp = fingerprint(boxes)
        resolved, reason = P.resolve_auto_preset(aug, fp)
        planned = P.make_plan(fp)
        assert resolved.preset == planned.gradkit["augment"]["preset"]
        assert reason == choice(planned, "augment.preset").reason
        assert resolved.copy_paste.p == 0.4 and aug.preset == "auto"          # a copy: the input is unchanged
    assert P.resolve_auto_preset(load_config(None, {"augment.preset": "defect"}).augment, fp)[0].preset == "defect"


def test_rare_first_copy_paste_follows_class_imbalance():
    balanced = P.make_plan(fingerprint([BLOB] * 5 + [(0, 30, 30, 12.0, 0.7)] * 5))
    skewed = P.make_plan(fingerprint([BLOB] * 9 + [(0, 30, 30, 12.0, 0.7)] * 1))
    assert balanced.gradkit["augment"]["copy_paste"]["rare_first"] is False
    assert skewed.gradkit["augment"]["copy_paste"]["rare_first"] is True                # 9x >= IMBALANCE


def test_hsv_jitter_off_for_gray_and_stock_for_colour():
    gray = P.make_plan(fingerprint([BLOB] * 10)).gradkit["augment"]["ultralytics"]
    colour = P.make_plan(fingerprint([BLOB] * 10, gray=False)).gradkit["augment"]["ultralytics"]
    assert gray["hsv_h"] == gray["hsv_s"] == gray["hsv_v"] == 0.0
    assert not {"hsv_h", "hsv_s", "hsv_v"} & colour.keys()


def test_data_warnings():
    fp = fingerprint([BLOB] * 10, defect_free=0, depth=16)
    fp.label_errors = 2
    warnings = " ".join(P.make_plan(fp).warnings)
    assert "2 label line(s)" in warnings and "16-bit" in warnings and "defect-free" in warnings
    assert "classes without a training instance: scratch" in warnings


def test_planned_gradkit_config_validates():
    for fp in (fingerprint([LINE] * 3 + [BLOB] * 7), fingerprint([BLOB] * 10, gray=False)):
        load_config(P.make_plan(fp).gradkit)


# ---------------------------------------------------------------- command line, end to end
def test_cli_plan_writes_a_command_that_trains(tiny_data, tmp_path, gradkit_here):
    r = gradkit_here("plan", f"data={tiny_data}", "budget=5", f"out={tmp_path / 'p' / 'plan.yaml'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load((tmp_path / "p" / "plan.yaml").read_text())
    cfg_path = tmp_path / "p" / "plan.gradkit.yaml"
    with pytest.raises(ConfigError, match="is a plan from gradkit plan") as mistake:   # gradkit=plan.yaml by mistake
        load_config(str(tmp_path / "p" / "plan.yaml"))
    assert f"gradkit={cfg_path}" in str(mistake.value)
    assert doc["command"] == (f"gradkit train data={tiny_data} " + " ".join(f"{k}={v}" for k, v in doc["train"].items())
                              + f" gradkit={cfg_path}")
    assert doc["command"] in r.stdout
    assert doc["train"]["time"] == round(5 / 60, 4)
    timed = next(c for c in doc["choices"] if c["key"] == "time")["reason"]       # measured on this machine
    imgsz = doc["train"]["imgsz"]
    val_images = len(list((tiny_data.parent / "images" / "val").glob("*.png")))
    said = ("not estimated on this machine" if torch.cuda.is_available() else
            f"ms per training image at imgsz {imgsz}")
    assert said in timed and timed.split("; ")[-1] in r.stdout
    assert torch.cuda.is_available() or f"its share of validating the {val_images} val images" in timed
    assert doc["fingerprint"]["images"] == len(list((tiny_data.parent / "images" / "train").glob("*.png")))
    assert doc["fingerprint"]["val_images"] == val_images > 0
    assert load_config(str(cfg_path)).model_dump()["augment"] == load_config(doc["gradkit"]).model_dump()["augment"]
    # the planned run, shortened to one epoch at the tiny data's size, trains with the real trainer
    train = {**doc["train"], "epochs": 1, "batch": 4, "nbs": 4}
    train.pop("time")
    args = ["train", f"data={tiny_data}", *(f"{k}={v}" for k, v in train.items()), f"gradkit={cfg_path}",
            "workers=0", "plots=False", "val=False", "device=cpu", f"project={tmp_path}", "name=run",
            "gradkit.report.enabled=false"]
    r = gradkit_here(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert yaml.safe_load((tmp_path / "run" / "gradkit.yaml").read_text())["augment"]["copy_paste"]["p"] == 0.3


def test_cli_plan_bad_input(tmp_path, tiny_data, gradkit_here):
    r = gradkit_here("plan", cwd=tmp_path)
    assert r.returncode != 0 and "data=DATA.yaml" in r.stderr and "Traceback" not in r.stderr
    r = gradkit_here("plan", f"data={tmp_path / 'missing.yaml'}", cwd=tmp_path)
    assert "missing.yaml: no such file" in r.stderr and "Traceback" not in r.stderr
    r = gradkit_here("plan", f"data={tiny_data}", "budget=-3", cwd=tmp_path)
    assert "budget= takes minutes" in r.stderr
    r = gradkit_here("plan", f"data={tiny_data.parent}", cwd=tmp_path)                 # the folder, not its YAML
    assert r.returncode == 2 and "a folder; give the dataset's YAML" in r.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    r = gradkit_here("plan", f"data={tiny_data}", f"out={blocker / 'plan.yaml'}", cwd=tmp_path)   # cannot be made
    assert r.returncode == 2 and "out=" in r.stderr and "cannot write" in r.stderr and "Traceback" not in r.stderr
    r = gradkit_here("plan", f"data={tiny_data}", f"out={tiny_data}", cwd=tmp_path)   # would overwrite data.yaml
    assert r.returncode == 2 and "over the dataset YAML" in r.stderr
    assert "names" in yaml.safe_load(tiny_data.read_text())


def test_plan_refuses_the_dataset_root_named_by_path_even_when_the_yaml_lives_elsewhere(tmp_path, tiny_data,
                                                                                        gradkit_here):
    """The dataset is where ``path:`` points, not only the YAML's folder: a plan written there would land
    among the user's images."""
    root = tiny_data.parent
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    data = elsewhere / "data.yaml"
    data.write_text(yaml.safe_dump({**yaml.safe_load(tiny_data.read_text()), "path": str(root)}))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    for out in (root / "plan.yaml", root / "images" / "train" / "plan.yaml"):
        r = gradkit_here("plan", f"data={data}", f"out={out}", cwd=tmp_path)
        assert r.returncode == 2 and "dataset" in r.stderr and "Traceback" not in r.stderr, r.stderr[-500:]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before    # nothing written there
    r = gradkit_here("plan", f"data={data}", f"out={tmp_path / 'plans' / 'p.yaml'}", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "plans" / "p.gradkit.yaml").exists(), r.stderr[-500:]


def test_demo_trains_the_plan_under_the_command_line(tiny_data, tmp_path, capsys):
    """The demo's run is the plan's (oracle: make_plan on the same fingerprint) except what the user
    gave: epochs= drops the plan's time=, imgsz= and model= win, the demo's own defaults fill the rest."""
    import functools

    from gradkit.data.fingerprint import fingerprint_dataset
    from gradkit.demo import TRAIN_DEFAULTS, _parse, _planned, _threads
    from gradkit.integrations.ultralytics.throughput import training_seconds_per_image

    opts, train, given = _parse(["budget=3", "lr0=0.005"])
    # the demo's timer (its readings are kept per process, so the demo's plan reads the same ones)
    timer = functools.partial(training_seconds_per_image, threads=_threads(opts), on_cpu=True)
    expected = P.make_plan(fingerprint_dataset(tiny_data, split="train"), 3.0, timer)
    capsys.readouterr()
    model, args, cfg = _planned(tiny_data, opts, train, given, tmp_path / "run")
    added = next(ln for ln in capsys.readouterr().out.splitlines() if "the demo adds" in ln)
    # what the run gets beyond the plan is printed: the demo's defaults, not the user's lr0, not the plan's time
    assert f"optimizer={TRAIN_DEFAULTS['optimizer']}" in added and "val=False" in added
    assert "lr0" not in added and "time" not in added
    assert model == expected.train["model"] and cfg == expected.gradkit
    assert args["time"] == round(3 / 60, 4) and args["imgsz"] == expected.train["imgsz"]
    assert args["lr0"] == 0.005 and args["optimizer"] == TRAIN_DEFAULTS["optimizer"]
    assert yaml.safe_load((tmp_path / "run" / "plan.yaml").read_text())["train"] == expected.train

    opts, train, given = _parse(["epochs=2", "imgsz=128", "model=yolo26n.yaml"])
    capsys.readouterr()
    model, args, _ = _planned(tiny_data, opts, train, given, tmp_path / "run2")
    out = capsys.readouterr().out
    assert "epochs= given: no time budget" in out            # so the budget rule does not shrink the size either
    assert "the command line replaces: imgsz=128, epochs=2" in out
    assert yaml.safe_load((tmp_path / "run2" / "plan.yaml").read_text())["train"]["epochs"] == P.DEFAULT_EPOCHS
    assert model == "yolo26n.yaml" and "time" not in args and args["epochs"] == 2 and "model" not in args
    assert "imgsz" not in args and opts["imgsz"] == 128  # the demo's imgsz= sizes the data and the training

    # model= with a budget: the plan's estimate (its time= line) is of that model, the one that trains
    opts, train, given = _parse(["budget=3", "model=yolo26n.yaml"])
    expected = P.make_plan(fingerprint_dataset(tiny_data, split="train"), 3.0, timer, model="yolo26n.yaml")
    capsys.readouterr()
    model, args, _ = _planned(tiny_data, opts, train, given, tmp_path / "run3")
    out = capsys.readouterr().out
    assert model == "yolo26n.yaml" and "the command line replaces" not in out
    assert f"  time = {args['time']}: {choice(expected, 'time').reason}" in out
    assert yaml.safe_load((tmp_path / "run3" / "plan.yaml").read_text())["train"]["model"] == "yolo26n.yaml"
    # its epochs by hand from the timer's reading of yolo26n (the demo's plan has no validation timer)
    fp = fingerprint_dataset(tiny_data, split="train")
    seconds = timer("yolo26n.yaml", expected.train["imgsz"], len(fp.class_names))
    assert f"about {3 * 60 / seconds / fp.images:.0f} epochs of the {fp.images} training images" in out

    # weights (model=X.pt) cannot be timed, and do not get the half width's prior
    opts, train, given = _parse(["budget=3", "model=yolo26n.pt"])
    capsys.readouterr()
    model, args, cfg = _planned(tiny_data, opts, train, given, tmp_path / "run4")
    out = capsys.readouterr().out
    assert model == "yolo26n.pt" and "init" not in cfg
    assert "not estimated: the timer builds a model from a yaml, and yolo26n.pt is not one" in out


def test_demo_bad_arguments_are_one_line_errors(tmp_path, gradkit_here):
    for args, expect in ((["budget=abc"], "budget= takes minutes"), (["budget=-1"], "budget= takes minutes"),
                         (["budget=0"], "budget= takes minutes"),
                         (["gradkit=defect", "budget=3"], "budget= is the plan's training time"),
                         (["data=x.yaml"], "data= is set by the demo (give data_dir=)"),
                         (["project=p"], "project= is set by the demo (give out=)"),
                         (["model=missing.yaml"], "model config missing.yaml not found")):
        r = gradkit_here("demo", *args, f"data_dir={tmp_path / 'd'}", f"out={tmp_path / 'o'}", cwd=tmp_path)
        assert r.returncode != 0 and expect in r.stderr and "Traceback" not in r.stderr, (args, r.stderr[-500:])
        assert not (tmp_path / "d").exists()  # refused before anything is generated


def test_command_help_names_every_argument_the_commands_take():
    from gradkit.cli import _command_help
    from gradkit.demo import DEMO_DEFAULTS

    for command, keys in (("plan", P.PLAN_ARGS), ("demo", DEMO_DEFAULTS)):
        text = _command_help(command)
        assert all(f"{k}=" in text for k in keys), (command, text)


def test_demo_reuses_its_own_data_and_never_writes_over_another(tmp_path):
    from gradkit.demo import _ensure_dataset

    first = _ensure_dataset(tmp_path / "d", 3, 64, 0)
    stamp = first.stat().st_mtime_ns
    assert _ensure_dataset(tmp_path / "d", 3, 64, 0) == first and first.stat().st_mtime_ns == stamp   # reused
    with pytest.raises(SystemExit, match="images=4 imgsz=64 seed=0"):
        _ensure_dataset(tmp_path / "d", 4, 64, 0)
    with pytest.raises(SystemExit, match="images must be >= 3"):                # a bad spec is not "holds files"
        _ensure_dataset(tmp_path / "new", 2, 64, 0)


def test_demo_does_not_take_a_faint_set_of_the_same_size_for_its_own(tmp_path):
    """``gradkit synth faint_frac=0.5`` with the demo's images, imgsz and seed is another dataset: refused, not
    trained on as the demo's."""
    from gradkit.demo import _ensure_dataset
    from gradkit.synth import SynthSpec, generate_dataset

    generate_dataset(tmp_path / "d", SynthSpec(images=3, imgsz=64, seed=0, faint_frac=0.5), progress=False)
    with pytest.raises(SystemExit, match="already holds files but not a dataset generated with"):
        _ensure_dataset(tmp_path / "d", 3, 64, 0)
    # a demo set written before faint_frac existed (no such key) is still the demo's own
    old = _ensure_dataset(tmp_path / "old", 3, 64, 0)
    data = yaml.safe_load(old.read_text())
    del data["gradkit_synth"]["faint_frac"]
    old.write_text(yaml.safe_dump(data))
    assert _ensure_dataset(tmp_path / "old", 3, 64, 0) == old and "faint_frac" not in old.read_text()


def test_the_printed_command_survives_a_shell_with_spaces_and_accents_in_paths():
    import shlex

    from gradkit.plan import Plan

    plan = Plan(data="data/Prüfung Linie 2/data.yaml", train={"imgsz": 256, "model": "yolo26n.yaml"})
    assert plan.command("p.yaml").startswith("gradkit train data='data/Prüfung Linie 2/data.yaml' imgsz=256")
    command = plan.command("out dir/plan.gradkit.yaml")
    assert shlex.split(command) == ["gradkit", "train", "data=data/Prüfung Linie 2/data.yaml", "imgsz=256",
                                    "model=yolo26n.yaml", "gradkit=out dir/plan.gradkit.yaml"]
    assert Plan(data="d.yaml", train={"imgsz": 256}).command("p.yaml") == "gradkit train data=d.yaml imgsz=256 " \
        "gradkit=p.yaml"  # nothing to quote: as plain as before


def test_the_plan_names_tile_only_where_tiles_would_cut_the_images():
    small_images = P.make_plan(fingerprint([(1, 3, 3, 5.0, 0.7)] * 10, side=1000))  # 3 px pits: need 2688 px
    assert any(w.startswith("tiling") for w in small_images.warnings)
    assert not any("gradkit tile" in w for w in small_images.warnings)  # 1000 px: one tile each, nothing gained
    large = P.make_plan(fingerprint([(1, 6, 6, 5.0, 0.7)] * 10, side=2000))
    assert any("gradkit tile data=" in w and f"size={P.MAX_IMGSZ}" in w for w in large.warnings)


def test_demo_says_when_the_budget_bought_too_few_steps():
    """The report's threshold (FEW_STEPS) decides; the helper's run on a busy machine made 176 steps."""
    from gradkit.demo import few_steps_note
    from gradkit.report.render import FEW_STEPS

    note = few_steps_note(176)
    assert "only 176 optimizer steps" in note and "epochs=" in note and "\n" not in note
    assert few_steps_note(FEW_STEPS - 1) is not None
    assert few_steps_note(FEW_STEPS) is None and few_steps_note(916) is None


# ---------------------------------------------------------------- boxes through Ultralytics' warp
def test_the_plan_names_the_labels_ultralytics_warp_would_drop():
    """Hand-made boxes at 256 px: a 1 px horizontal scratch and a 3 px pit are dropped by Ultralytics' warp in
    some samples (a side under 4 px at its smallest zoom, 0.5x); a 45-degree scratch's box and a 6 px pit are not."""
    flat = (0, 160, 1, 1.0, 1.0)
    tiny_pit = (1, 3, 3, 3.0, 0.7)
    fp = fingerprint([flat, tiny_pit, tiny_pit, LINE, (1, 6, 6, 6.0, 0.7), BLOB, BLOB, BLOB])  # BLOBs: imgsz stays
    reason = choice(P.make_plan(fp), "augment.bbox").reason
    # rates: the line at every zoom (aspect 160), each pit when the zoom is under 2/3 (a sixth of the draws)
    assert reason.startswith("Ultralytics' own warp (no rotation) would drop 3 of 8 boxes at imgsz 256 (pit 2, "
                             "scratch 1) in 44% of their samples on average"), reason
    assert "no box" in choice(P.make_plan(fingerprint([LINE, BLOB])), "augment.bbox").reason


def test_a_model_given_on_the_command_line_is_the_one_the_budget_estimate_counts():
    """The demo's ``model=`` with a budget: the plan's estimate is of the model that will train, not of the
    half width the plan would have chosen (oracle: the estimate by hand at yolo26n's own cost)."""
    def seconds(model, imgsz, nc):
        return 0.05 if model == P.MODEL else 0.025

    fp = fingerprint([BLOB] * 10, images=200)
    own = P.make_plan(fp, budget_min=15, seconds_per_image=seconds)
    given = P.make_plan(fp, budget_min=15, seconds_per_image=seconds, model=P.MODEL)
    assert own.train["model"] == P.MODEL_HALF and given.train["model"] == P.MODEL
    # by hand: 900 s / 0.05 s = 18000 images = 90 epochs of 200 in 13 batches of 16 = 1170 optimizer steps
    assert ("about 90 epochs of the 200 training images (1170 optimizer steps; 50 ms per image at imgsz 256"
            in choice(given, "time").reason)
    reason = choice(given, "model").reason
    assert reason.startswith(f"given (model={P.MODEL})") and f"the plan's own choice: {P.MODEL_HALF}" in reason
    # both at the data's size (256): yolo26n's steps and, from the prior, the half width's clear MIN_STEPS there;
    # the plan's own half width then trains at 1.25x it from the prior, yolo26n from scratch does not
    assert given.train["imgsz"] == 256 and own.train["imgsz"] == 320


@pytest.mark.parametrize(("boxes", "side", "budget", "wanted", "imgsz", "steps"), [
    # by hand, _timer(0.5): the half width 0.025 s per image at 256 px, 100 images = 7 steps an epoch
    ([BLOB] * 10, 256, 10, 256, 320, 1680),     # 600 s buy 1680 steps at 256 >= MIN_STEPS: 1.25 x 256 = 320
    ([LINE] * 10, 344, 20, 352, 448, 1777),     # thin lines at their native 352: 0.0473 s, 1777 steps; 440 -> 448
])
def test_from_the_prior_a_budget_that_affords_the_data_s_size_trains_a_quarter_larger(boxes, side, budget, wanted,
                                                                                      imgsz, steps):
    fp = fingerprint(boxes, side=side)
    assert P.make_plan(fp).train["imgsz"] == wanted                       # the size the data calls for
    plan = P.make_plan(fp, budget_min=budget, seconds_per_image=_timer(0.5))
    assert plan.train["model"] == P.MODEL_HALF and plan.gradkit["init"] == {"prior": "defect"}
    assert P.PRIOR_UPSCALE == 1.25 and plan.train["imgsz"] == choice(plan, "imgsz").value == imgsz
    reason = choice(plan, "imgsz").reason
    assert reason.startswith(f"1.25x the {wanted} the data calls for") and P.PRIOR_UPSCALE_EVIDENCE in reason
    assert "the images' native one" in reason
    assert f"{P.MODEL_HALF}, the model the plan trains from the prior, about {steps} optimizer steps there" in reason
    assert f"imgsz {imgsz}" in choice(plan, "time").reason                # the estimate is at the size trained
    assert f"imgsz={imgsz}" in plan.command()


@pytest.mark.parametrize(("budget", "imgsz", "steps_up"), [
    # by hand, _timer(0.5): the half width 0.025 s per image at 256 px, 100 images = 7 steps an epoch; b minutes buy
    # it 168 b steps at 256 and 168 b x 0.64 at 320
    (5, 256, 538),   # 840 at 256 (>= MIN_STEPS, kept), 538 at 320: under MIN_STEPS, not enlarged
    (7, 320, 753),   # 1176 at 256, 753 at 320: enlarged
])
def test_from_the_prior_the_quarter_larger_size_must_still_buy_min_steps(budget, imgsz, steps_up):
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=budget, seconds_per_image=_timer(0.5))
    assert plan.train["model"] == P.MODEL_HALF and plan.gradkit["init"] == {"prior": "defect"}
    assert plan.train["imgsz"] == choice(plan, "imgsz").value == imgsz
    reason = choice(plan, "imgsz").reason
    assert P.PRIOR_UPSCALE_EVIDENCE in reason  # either way the reason cites the measurement
    if imgsz == 256:
        assert f"not 1.25x it from the prior (320): the budget would buy {P.MODEL_HALF} about {steps_up} " \
               f"optimizer steps there, under {P.MIN_STEPS}" in reason
    else:
        assert f"320 still buys it about {steps_up} optimizer steps ({P.MIN_STEPS} or more)" in reason
    # both within TIMER_DRIFT (1.5x) of MIN_STEPS: 538 x 1.5 = 807 >= 650, 753 / 1.5 = 502 < 650
    other = {256: "faster it would enlarge it to 320", 320: "slower it would not enlarge it"}[imgsz]
    assert f"; a close call: read 1.5x {other}, and a timer can drift" in reason


def test_from_the_prior_a_quarter_larger_size_far_from_min_steps_is_no_close_call():
    # by hand, _timer(0.5): 10 min buy the half width 1680 steps at 256 and 1075 at 320: 1075 / 1.5 >= 650
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=10, seconds_per_image=_timer(0.5))
    assert plan.train["imgsz"] == 320 and "close call" not in choice(plan, "imgsz").reason


@pytest.mark.parametrize(("budget", "timer", "model", "imgsz"), [
    # the half width from the prior: 180 s buy it 504 x (256 / s)^2 steps at s px: 658 at 224
    (3, _timer(0.5), None, 224),
    (10, _timer(0.5), P.MODEL, 256),   # model=yolo26n.yaml: from scratch, no prior to upscale from
    (None, _timer(0.5), None, 256),    # no budget: yolo26n from scratch
    (10, _timer(1.0), None, 256),      # the timer finds no speed-up: yolo26n from scratch
])
def test_the_size_stays_where_the_plan_does_not_start_from_the_prior_or_the_budget_shrinks_it(budget, timer, model,
                                                                                              imgsz):
    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=budget, seconds_per_image=timer, model=model)
    assert plan.train["imgsz"] == imgsz and P.PRIOR_UPSCALE_EVIDENCE not in choice(plan, "imgsz").reason
    assert (plan.train["model"] == P.MODEL_HALF) == (budget == 3)


def test_from_the_prior_a_size_above_the_native_one_is_not_enlarged_further():
    """3 px pits on 256 px images call for 704 px; 60 min buy yolo26n 666 steps there (by hand, _timer(0.5):
    0.378 s per image, 7 steps an epoch), so the budget rule keeps 704 and the half width trains from the prior,
    but 704 is already upsampled (2.75x the native 256): the rule was measured at the native size only."""
    fp = fingerprint([(1, 3, 3, 3.0, 0.7)] * 10)
    plan = P.make_plan(fp, budget_min=60, seconds_per_image=_timer(0.5))
    assert plan.train["model"] == P.MODEL_HALF and plan.gradkit["init"] == {"prior": "defect"}
    assert plan.train["imgsz"] == 704 and P.PRIOR_UPSCALE_EVIDENCE not in choice(plan, "imgsz").reason


@pytest.mark.parametrize(("budget", "model", "prior"), [
    (10, None, "defect"),            # the timer picks the half width: the prior it was trained as
    (None, None, None),              # no budget: yolo26n from scratch
    (10, P.MODEL, None),             # the demo's model=yolo26n.yaml: the half width's prior does not fit it
])
def test_the_plan_starts_the_half_width_from_the_defect_prior(budget, model, prior):
    from gradkit.config import load_config

    plan = P.make_plan(fingerprint([BLOB] * 10), budget_min=budget, seconds_per_image=_timer(0.5), model=model)
    start = choice(plan, "init.prior")
    assert plan.gradkit.get("init", {}).get("prior") == prior and start.provisional
    assert load_config(plan.gradkit).init.prior == (prior or "none")
    assert P.PRIOR_EVIDENCE in start.reason
    assert (plan.train["model"] == P.MODEL_HALF) == (prior == "defect")


# ---------------------------------------------------------------- mixed image sizes
def _mixed_sizes(small: int = 12, big: int = 1) -> Fingerprint:
    """``small`` images of 128 x 96 and ``big`` of 3000 x 2000, each with one compact 20 x 20 px defect."""
    fp = fingerprint([], side=128, images=small + big, defect_free=0)
    fp.widths, fp.heights = [128] * small + [3000] * big, [96] * small + [2000] * big
    for i, (w, h) in enumerate(zip(fp.widths, fp.heights, strict=True)):
        fp.box_cls.append(1)
        fp.box_image.append(i)
        fp.box_w.append(20 / w)
        fp.box_h.append(20 / h)
        fp.box_img_w.append(float(w))
        fp.box_img_h.append(float(h))
        fp.box_stroke.append(10.0)
        fp.box_fill.append(0.7)
        fp.box_standout.append(1.0)
    return fp


def test_a_few_large_images_do_not_set_the_native_size():
    """One 3000 px image among twelve of 128 px: the plan sizes for the twelve (the median long side), says the
    sizes vary, and names the large one for tiling; it once upsampled the twelve 5x to 640 for the one."""
    plan = P.make_plan(_mixed_sizes())
    assert plan.train["imgsz"] == 128
    reason = choice(plan, "imgsz").reason
    assert "128" in reason and "3000" in reason and "vary" in reason
    tiling = [w for w in plan.warnings if "gradkit tile" in w]
    assert len(tiling) == 1 and "1 of the 13 images measured" in tiling[0]


def test_the_native_size_is_an_images_size_when_half_are_large():
    """Six small and six large images: the median of an even count is the lower middle image's (128 px), not the
    mean of the two middle ones (1564 px), which no image has."""
    fp = _mixed_sizes(small=6, big=6)
    assert fp.typical_side == 128 and P.native_imgsz(fp, 0) == 128


def test_uniform_images_keep_the_native_size_and_say_nothing_of_sizes():
    plan = P.make_plan(fingerprint([BLOB] * 10, side=200))
    assert plan.train["imgsz"] == 224 and "vary" not in choice(plan, "imgsz").reason


# ---------------------------------------------------------------- data a plan cannot serve
def test_a_split_without_a_single_defect_is_refused():
    fp = fingerprint([], images=40, defect_free=40)
    with pytest.raises(ValueError, match="no labelled defect"):
        P.make_plan(fp)


def test_a_missing_val_key_and_val_reading_train_are_warned_of():
    fp = fingerprint([BLOB] * 10)
    fp.val_named = False
    assert any("no val:" in w for w in P.make_plan(fp).warnings)
    fp.val_named, fp.val_is_train = True, True
    assert any("memorisation" in w for w in P.make_plan(fp).warnings)
    fp.val_is_train = False
    assert not any("no val:" in w or "memorisation" in w for w in P.make_plan(fp).warnings)


def test_a_small_set_is_told_what_every_epoch_costs_besides_its_images():
    """12 training images at 5 ms each price an epoch at 60 ms; with EPOCH_FIXED_SECONDS besides, a budget buys far
    fewer epochs, which the estimate says (by hand); on 200 images the difference is under the note's bar."""
    small = P.make_plan(fingerprint([BLOB] * 10, images=12), budget_min=2, seconds_per_image=lambda m, s, n: 0.005)
    reason = choice(small, "time").reason
    assert "about 2000 epochs of the 12 training images" in reason  # 120 s / 0.06 s, the rule's own count
    fixed = round(120 / (0.06 + P.EPOCH_FIXED_SECONDS))
    assert f"about {fixed} epochs once what every epoch costs besides its images" in reason
    large = P.make_plan(fingerprint([BLOB] * 10, images=200), budget_min=20, seconds_per_image=lambda m, s, n: 0.05)
    assert "besides its images" not in choice(large, "time").reason  # 10 s epochs: a few percent


def test_plan_writes_over_its_own_earlier_plan_but_never_over_another_file(tmp_path, tiny_data, gradkit_here):
    """``plan.yaml`` is the default out=: a file of the user's by that name (or by the configuration's name
    beside it) was replaced without a word; a plan written earlier is replaced, as planning again means."""
    r = gradkit_here("plan", f"data={tiny_data}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    first = (tmp_path / "plan.yaml").read_text(encoding="utf-8")
    assert first.startswith("# written by gradkit plan")
    r = gradkit_here("plan", f"data={tiny_data}", cwd=tmp_path)   # again: its own files, replaced
    assert r.returncode == 0, r.stderr
    for name in ("plan.yaml", "plan.gradkit.yaml"):
        mine = tmp_path / "mine"
        mine.mkdir(exist_ok=True)
        (mine / name).write_text("my own notes\n")
        r = gradkit_here("plan", f"data={tiny_data}", f"out={mine / 'plan.yaml'}", cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert str(mine / name) in r.stderr and "not written by gradkit plan" in r.stderr
        assert (mine / name).read_text() == "my own notes\n"
        assert not (mine / ("plan.gradkit.yaml" if name == "plan.yaml" else "plan.yaml")).exists()
        (mine / name).unlink()
    # a plan.yaml of an earlier release had no first-line mark: a mapping holding a plan's command and fingerprint
    earlier = yaml.safe_load(first)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(earlier))
    assert gradkit_here("plan", f"data={tiny_data}", cwd=tmp_path).returncode == 0


def test_one_channel_data_starts_the_half_width_from_the_prior_summed_and_other_counts_from_scratch():
    """A ``channels: 1`` data YAML builds a first layer of one input channel: the prior did not load (the run stopped
    with "yolo26.yaml changed since the prior was trained", the wrong cause), so the plan trained from scratch. Now the
    prior's first layer is summed over its three channels (tests/test_prior.py: the same function on a gray image),
    and the plan starts from it; a count the prior cannot take (2, 4) still trains from scratch, saying why."""
    timer = _timer(0.5)
    three = P.make_plan(fingerprint([BLOB] * 10), budget_min=10, seconds_per_image=timer)
    fp = fingerprint([BLOB] * 10)
    fp.input_channels = 1
    plan = P.make_plan(fp, budget_min=10, seconds_per_image=timer)
    assert plan.train["model"] == P.MODEL_HALF and plan.gradkit["init"] == {"prior": "defect"}
    assert "channels: 1" in choice(plan, "init.prior").reason and "summed" in choice(plan, "init.prior").reason
    assert plan.train == three.train  # sized as three-channel data of the same fingerprint: the prior's steps
    for count in (2, 4):
        fp.input_channels = count
        plan = P.make_plan(fp, budget_min=10, seconds_per_image=timer)
        assert plan.train["model"] == P.MODEL_HALF and "init" not in plan.gradkit
        assert f"channels: {count}" in choice(plan, "init.prior").reason
        # from scratch: neither the half width's steps nor the prior's 1.25x (600 s buy yolo26n 840 steps at 256)
        assert plan.train["imgsz"] == 256 and P.PRIOR_UPSCALE_EVIDENCE not in choice(plan, "imgsz").reason


def test_the_fingerprint_reads_the_input_channels_from_the_data_yaml(tiny_data, tmp_path):
    from gradkit.data.fingerprint import fingerprint_dataset

    assert fingerprint_dataset(tiny_data).input_channels == 3
    doc = yaml.safe_load(tiny_data.read_text())
    one = tmp_path / "one.yaml"
    one.write_text(yaml.safe_dump({**doc, "path": str(tiny_data.parent), "channels": 1}))
    assert fingerprint_dataset(one).input_channels == 1


def test_a_plan_on_data_with_label_errors_points_to_the_copy_that_trains():
    """The plan printed a command the check before training then refused (exit 2) on the same label errors."""
    fp = fingerprint([BLOB] * 10)
    fp.label_errors = 3
    said = [w for w in P.make_plan(fp).warnings if "label line" in w]
    assert len(said) == 1 and "gradkit check data=/data/d.yaml --fix" in said[0] and "will stop" in said[0]


def test_the_demo_reads_train_arguments_as_yolo_reads_them():
    """``gradkit demo lr0=1e-3`` handed Ultralytics the text '1e-3' (YAML 1.1 reads an exponent without a dot as
    text) and check_cfg stopped with a traceback; ``degrees=1e1`` was not applied over the plan's. The demo's
    train arguments now go through yolo's own parsing. Oracle: the numbers typed."""
    from gradkit.demo import _parse

    opts, train, given = _parse(["lr0=1e-3", "degrees=1e1", "hsv_h=0.5,", "budget=3", "images=100"])
    assert train["lr0"] == 0.001 and given["degrees"] == 10.0 and given["hsv_h"] == 0.5
    assert opts["budget"] == 3 and opts["images"] == 100
