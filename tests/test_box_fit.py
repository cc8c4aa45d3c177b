"""How close each class's boxes come (``gradkit.report.box_fit``): hand-made boxes with known IoUs and side
ratios, and torchvision's ``box_iou`` as the oracle of every object's best IoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from gradkit.report.box_fit import FIT_IOUS, box_fit, iou_key
from gradkit.report.coco import Box

W, H = 200, 100  # pixels of image 0


def _px(image: int, cls: int, x0: float, y0: float, x1: float, y1: float, score=None, size=(W, H)) -> Box:
    """A box given in pixels, stored normalised as the report stores boxes."""
    w, h = size
    return Box(image, cls, x0 / w, y0 / h, x1 / w, y1 / h, score)


def test_a_thin_line_boxed_four_times_too_thick_is_a_near_miss_with_its_ratios():
    scratch = _px(0, 0, 20, 50, 120, 52)  # 100 x 2 px
    thick = _px(0, 0, 20, 47, 120, 55, 0.01)  # 100 x 8 px around it: IoU 2/8
    pit, pit_found = _px(0, 1, 150, 10, 158, 18), _px(0, 1, 150, 10, 158, 18, 0.9)
    crack = _px(0, 2, 10, 70, 60, 90)
    crack_as_pit = _px(0, 1, 10, 70, 60, 90, 0.8)  # another class's box does not fit a crack
    fit = box_fit([scratch, pit, crack], [thick, pit_found, crack_as_pit], [0, 1, 2, 3])
    assert fit[0] == {"objects": 1, "reached": {"0.1": 1, "0.3": 0, "0.5": 0}, "near_misses": 1,
                      "across": pytest.approx(4.0), "along": pytest.approx(1.0)}
    assert fit[1]["reached"] == {"0.1": 1, "0.3": 1, "0.5": 1} and fit[1]["near_misses"] == 0
    assert fit[1]["across"] is None and fit[1]["along"] is None
    assert fit[2]["reached"] == {"0.1": 0, "0.3": 0, "0.5": 0} and fit[2]["near_misses"] == 0
    assert 3 not in fit  # no objects: no row


def test_across_is_the_objects_shorter_side_whichever_axis():
    vertical = _px(0, 0, 100, 10, 103, 90)  # 3 x 80 px
    short_and_wide = _px(0, 0, 97, 30, 106, 70, 0.5)  # 9 x 40: 3x across, half along; IoU 120/480
    fit = box_fit([vertical], [short_and_wide], [0])[0]
    assert fit["across"] == pytest.approx(3.0) and fit["along"] == pytest.approx(0.5)
    assert fit["reached"] == {"0.1": 1, "0.3": 0, "0.5": 0}


def test_which_side_is_shorter_is_decided_in_pixels_not_normalised_units():
    size = (424, 256)
    box = _px(0, 0, 100, 100, 200, 190, size=size)  # 100 x 90 px: wider than tall; normalised 0.236 x 0.352
    wider = _px(0, 0, 0, 100, 300, 190, 0.5, size=size)  # 300 x 90 px around it: IoU 1/3
    fit = box_fit([box], [wider], [0], sizes={0: size})[0]
    assert fit["across"] == pytest.approx(1.0) and fit["along"] == pytest.approx(3.0)


def test_a_detection_in_another_image_or_of_another_class_never_fits():
    scratch = _px(0, 0, 20, 50, 120, 52)
    elsewhere, as_crack = _px(1, 0, 20, 50, 120, 52, 0.9), _px(0, 2, 20, 50, 120, 52, 0.9)
    fit = box_fit([scratch], [elsewhere, as_crack], [0])[0]
    assert fit["reached"] == {iou_key(t): 0 for t in FIT_IOUS}


def test_the_ratios_come_from_each_objects_best_detection():
    size = (256, 256)
    line = _px(1, 0, 20, 50, 148, 54, size=size)                   # 128 x 4 px in image 1
    before = [_px(0, 0, 20, 50, 148, 54, 0.9, size=size),            # other images' boxes sort first
              _px(1, 0, 20, 30, 148, 90, 0.8, size=size)]            # 15x across: IoU 1/15, no near miss
    worse = _px(1, 0, 20, 40, 84, 64, 0.9, size=size)                # 6x across, half along: IoU 256/1792
    best = _px(1, 0, 20, 44, 148, 60, 0.1, size=size)                # 4x across, whole along: IoU 512/2048
    fit = box_fit([line], [*before, worse, best], [0], sizes={1: size})[0]
    assert fit["across"] == pytest.approx(4.0) and fit["along"] == pytest.approx(1.0)
    fit = box_fit([line], [*before, worse], [0], sizes={1: size})[0]
    assert fit["across"] == pytest.approx(6.0) and fit["along"] == pytest.approx(0.5)


def test_iou_exactly_at_a_threshold_reaches_it():
    size = (256, 256)
    line = _px(0, 0, 0, 0, 128, 4, size=size)
    at_match = _px(0, 0, 0, 0, 128, 8, 0.5, size=size)              # IoU 512/1024 = 0.5: a match, no near miss
    assert box_fit([line], [at_match], [0])[0]["reached"]["0.5"] == 1
    at_overlap = _px(0, 0, 0, 0, 128, 40, 0.5, size=size)           # IoU 512/5120 = 0.1: a near miss
    fit = box_fit([line], [at_overlap], [0])[0]
    assert fit["reached"] == {"0.1": 1, "0.3": 0, "0.5": 0} and fit["near_misses"] == 1


def test_the_best_detection_decides_and_every_score_counts():
    scratch = _px(0, 0, 20, 50, 120, 52)
    exact_but_faint = _px(0, 0, 20, 50, 120, 52, 0.001)
    thick_and_sure = _px(0, 0, 20, 47, 120, 55, 0.99)
    fit = box_fit([scratch], [thick_and_sure, exact_but_faint], [0])[0]
    assert fit["reached"]["0.5"] == 1 and fit["near_misses"] == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reached_counts_agree_with_torchvision_box_iou(seed):
    rng = np.random.default_rng(seed)

    def boxes(n, scored):
        out = []
        for _ in range(n):
            x0, y0 = rng.uniform(0, 0.8, 2)
            w, h = rng.uniform(0.005, 0.2, 2)
            out.append(Box(int(rng.integers(0, 4)), int(rng.integers(0, 3)), x0, y0, x0 + w, y0 + h,
                           float(rng.uniform()) if scored else None))
        return out

    gts, preds = boxes(60, False), boxes(400, True)
    sizes = {i: (int(rng.integers(100, 900)), int(rng.integers(100, 900))) for i in range(4)}
    fit = box_fit(gts, preds, [0, 1, 2], sizes)
    best, ratios = [], {c: [] for c in range(3)}
    for g in gts:
        same = [p for p in preds if p.image == g.image and p.cls == g.cls]
        iou = box_iou(torch.tensor([g[2:6]], dtype=torch.float64),
                      torch.tensor([p[2:6] for p in same], dtype=torch.float64).reshape(-1, 4))
        b = float(iou.max()) if iou.numel() else 0.0
        best.append((g.cls, b))
        if FIT_IOUS[0] <= b < FIT_IOUS[-1]:
            w, h = sizes[g.image]
            d = same[int(iou.argmax())]
            gw, gh, dw, dh = (g.x1 - g.x0) * w, (g.y1 - g.y0) * h, (d.x1 - d.x0) * w, (d.y1 - d.y0) * h
            ratios[g.cls].append((dh / gh, dw / gw) if gw >= gh else (dw / gw, dh / gh))
    for c in range(3):
        mine = [b for k, b in best if k == c]
        assert fit[c]["objects"] == len(mine)
        assert fit[c]["reached"] == {iou_key(t): sum(b >= t for b in mine) for t in FIT_IOUS}
        assert fit[c]["near_misses"] == sum(FIT_IOUS[0] <= b < FIT_IOUS[-1] for b in mine) == len(ratios[c])
        assert ratios[c], "the random case should hold near misses of every class"
        assert fit[c]["across"] == pytest.approx(float(np.median([a for a, _ in ratios[c]])))
        assert fit[c]["along"] == pytest.approx(float(np.median([a for _, a in ratios[c]])))


def test_the_report_shows_the_table_and_names_near_misses_in_its_verdict(tmp_path):
    from gradkit.report import EvalData
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html, render_markdown
    from gradkit.report.schema import validate_report

    files = {i: str(tmp_path / f"img{i}.png") for i in range(2)}
    lines = [_px(i, 0, 20, 50, 120, 52) for i in range(2)]  # the <scratch> class, two lines, never boxed tightly
    thick = [_px(i, 0, 20, 47, 120, 55, 0.02) for i in range(2)]  # 4x too thick: IoU 0.25
    ev = EvalData(names={0: "<scratch>"}, split="val", data="d.yaml", model="runs/x/weights/best.pt", images=[0, 1],
                  files=files, sizes=dict.fromkeys(range(2), (W, H)), gts=lines, preds=thick,
                  headline={"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50-95": 0.0},
                  per_class={0: {"precision": 0.0, "recall": 0.0, "AP50": 0.0, "AP50-95": 0.0}},
                  instances={0: 2}, image_counts={0: 2}, conf_threshold=None)
    report = validate_report(build_report(ev))
    assert report["box_fit"] == {"<scratch>": {"objects": 2, "reached": {"0.1": 2, "0.3": 0, "0.5": 0},
                                               "near_misses": 2, "across": 4.0, "along": 1.0}}
    md, page = render_markdown(report), render_html(report)
    assert "| &lt;scratch&gt; | 2 | 2 (100%) | 0 (0%) | 0 (0%) | 2 | 4.0× | 1.0× |" in md
    assert ("all 2 defective parts would ship (escape rate 100.0%). &lt;scratch&gt;: at any confidence 2 of its 2 "
            "objects have a box of their class at IoU 0.1–0.5, 4.0× as wide across them and 1.0× along.") in md
    assert "<td class=\"l\">&lt;scratch&gt;</td><td class=\"\">2</td><td class=\"\">2 (100%)</td>" in page
    assert "<scratch>" not in page


def test_the_lowest_recall_sentence_says_when_its_objects_were_seen_and_boxed_wrongly(tmp_path):
    from gradkit.report import EvalData
    from gradkit.report.build import build_report
    from gradkit.report.render import render_markdown

    lines = [_px(i, 0, 20, 50, 120, 52) for i in range(2)]
    thick = [_px(i, 0, 20, 47, 120, 55, 0.02) for i in range(2)]
    pits = [_px(i, 1, 150, 10, 158, 18) for i in range(2)]
    found = [_px(i, 1, 150, 10, 158, 18, 0.9) for i in range(2)]
    ev = EvalData(names={0: "scratch", 1: "pit"}, split="val", data="d.yaml", model="runs/x/weights/best.pt",
                  images=[0, 1], files={i: str(tmp_path / f"{i}.png") for i in range(2)},
                  sizes=dict.fromkeys(range(2), (W, H)), gts=lines + pits, preds=thick + found,
                  headline={"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.5},
                  per_class={c: {"precision": float(c), "recall": float(c), "AP50": float(c), "AP50-95": float(c)}
                             for c in (0, 1)},
                  instances={0: 2, 1: 2}, image_counts={0: 2, 1: 2}, conf_threshold=None)
    md = render_markdown(build_report(ev))
    assert ("Lowest recall: scratch (0.000 at confidence 1.000); of its 2 objects, 2 unseen; at any confidence 2 of "
            "its 2 objects have a box of their class at IoU 0.1–0.5, 4.0× as wide across them and 1.0× along.") in md


def test_no_detections_at_all_reaches_nothing():
    fit = box_fit([_px(0, 0, 20, 50, 120, 52)], [], [0])[0]
    assert fit["reached"] == {iou_key(t): 0 for t in FIT_IOUS} and fit["near_misses"] == 0
    assert box_fit([], [_px(0, 0, 20, 50, 120, 52, 0.5)], [0]) == {}


def test_a_report_of_a_model_that_detects_nothing_builds(tmp_path):
    from gradkit.report.build import build_report
    from gradkit.report.schema import validate_report
    from report_cases import hand_made_evaluation

    ev = hand_made_evaluation(tmp_path)
    ev.preds = []
    fit = validate_report(build_report(ev))["box_fit"]
    assert fit == {"scratch": {"objects": 4, "reached": {"0.1": 0, "0.3": 0, "0.5": 0}, "near_misses": 0,
                               "across": None, "along": None}}


def test_one_near_miss_is_said_in_the_singular(tmp_path):
    """"1 of its 2 objects have a box of their class" read wrongly (found by a user trial)."""
    from gradkit.report import EvalData
    from gradkit.report.build import build_report
    from gradkit.report.render import render_markdown

    lines = [_px(i, 0, 20, 50, 120, 52) for i in range(2)]
    thick = [_px(0, 0, 20, 47, 120, 55, 0.02)]  # only the first line has a near miss
    ev = EvalData(names={0: "scratch"}, split="val", data="d.yaml", model="runs/x/weights/best.pt", images=[0, 1],
                  files={i: str(tmp_path / f"{i}.png") for i in range(2)}, sizes=dict.fromkeys(range(2), (W, H)),
                  gts=lines, preds=thick, headline={"precision": 0.0, "recall": 0.0, "mAP50": 0.0, "mAP50-95": 0.0},
                  per_class={0: {"precision": 0.0, "recall": 0.0, "AP50": 0.0, "AP50-95": 0.0}},
                  instances={0: 2}, image_counts={0: 2}, conf_threshold=None)
    md = render_markdown(build_report(ev))
    assert ("at any confidence 1 of its 2 objects has a box of its class at IoU 0.1–0.5, 4.0× as wide across it and "
            "1.0× along.") in md
