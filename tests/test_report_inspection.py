"""Inspection KPIs (escape rate, false-reject rate, operating thresholds) against hand-made answers and a
naive reference implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradkit.report.coco import Box
from gradkit.report.inspection import (
    MIN_PRECISION,
    NEVER_FIRES,
    PRECISION_CONFIDENCE,
    inspection_kpis,
    max_f1_points,
    max_f1_thresholds,
    precision_lower_bound,
)

NAMES = {0: "scratch", 1: "pit"}


def _gt(img, cls, x=0.1, y=0.1, s=0.2):
    return Box(img, cls, x, y, x + s, y + s)


def _pred(img, cls, score, x=0.1, y=0.1, s=0.2):
    return Box(img, cls, x, y, x + s, y + s, score)


def _factory_case():
    """Four defective images (one scratch each), four defect-free ones; threshold 0.5 for every class."""
    gts = [_gt(i, 0) for i in range(4)]
    preds = [_pred(0, 0, 0.9),                # found: rejected
             _pred(1, 0, 0.3),                # on the scratch but below threshold: escapes
             _pred(2, 0, 0.8, x=0.6, y=0.6),  # wrong place: rejected (a false positive), scratch missed
             # image 3: nothing: escapes
             _pred(4, 0, 0.7),                # defect-free, rejected
             _pred(5, 0, 0.2),                # defect-free, below threshold
             _pred(6, 1, 0.6)]                # defect-free, rejected by another class
    return gts, preds, list(range(8))


def test_escape_and_false_reject_rates_on_a_hand_made_line():
    gts, preds, images = _factory_case()
    k = inspection_kpis(gts, preds, images, NAMES, conf=0.5)
    assert k["thresholds"] == {"scratch": 0.5, "pit": 0.5}
    assert (k["defective_images"], k["defect_free_images"]) == (4, 4)
    assert k["escaped_images"] == 2 and k["escape_rate"] == 0.5              # images 1 and 3
    assert k["false_rejected_images"] == 2 and k["false_reject_rate"] == 0.5  # images 4 and 6
    assert k["defective_images_without_true_positive"] == 3                   # 1, 2, 3
    assert k["false_positives"] == 3 and k["fp_per_image"] == 3 / 8           # images 2, 4, 6
    scratch, pit = k["per_class"]
    assert (scratch["tp"], scratch["fp"], scratch["fn"]) == (1, 2, 3)
    assert scratch["precision"] == pytest.approx(1 / 3) and scratch["recall"] == 0.25
    assert scratch["f1"] == pytest.approx(2 * (1 / 3) * 0.25 / (1 / 3 + 0.25))
    assert (pit["tp"], pit["fp"], pit["precision"], pit["recall"], pit["f1"]) == (0, 1, 0.0, None, None)


def test_each_class_says_how_many_parts_with_it_were_shipped():
    # a part is rejected by any prediction over its class's threshold, the right box or not: an inspector
    # asks "of the parts with a crack, how many went out?", which object-level recall does not answer
    gts = [_gt(0, 0), _gt(0, 1, x=0.6), _gt(1, 1), _gt(2, 1), _gt(3, 0)]
    preds = [_pred(0, 0, 0.9),                # part 0 (scratch and pit): rejected by the scratch
             _pred(1, 0, 0.8, x=0.7, y=0.7),  # part 1 (pit): rejected, by a wrong-class box elsewhere
             _pred(2, 1, 0.3)]                # part 2 (pit): below the threshold: shipped; part 3: nothing
    k = inspection_kpis(gts, preds, list(range(5)), NAMES, conf=0.5)
    scratch, pit = k["per_class"]
    assert (scratch["parts"], scratch["shipped_parts"]) == (2, 1)  # parts 0, 3; 3 shipped
    assert (pit["parts"], pit["shipped_parts"]) == (3, 1)          # parts 0, 1, 2; 2 shipped
    assert k["escaped_images"] == 2  # the same parts 2 and 3, counted once each


def test_max_f1_threshold_on_a_hand_made_class():
    # scores 0.9 TP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP, 0.4 FP; 4 objects (one never found)
    gts = [_gt(i, 0) for i in range(4)]
    preds = [_pred(0, 0, 0.9), _pred(0, 0, 0.8, x=0.7), _pred(1, 0, 0.7), _pred(2, 0, 0.6), _pred(5, 0, 0.5),
             _pred(6, 0, 0.4)]
    # F1 at 0.9: 2*1/(1+4)=0.4; 0.8: 2/6; 0.7: 4/7=0.571; 0.6: 6/8=0.75; 0.5: 6/9; 0.4: 6/10
    thr = max_f1_thresholds(_boxes(gts), _boxes(preds), [0, 1])
    assert thr == {0: 0.6, 1: NEVER_FIRES}  # no object of class 1: it never fires
    k = inspection_kpis(gts, preds, list(range(8)), NAMES)
    assert k["thresholds"]["scratch"] == 0.6 and k["per_class"][0]["f1"] == pytest.approx(0.75)
    assert k["escape_rate"] == 0.25 and k["false_reject_rate"] == 0.0


def test_a_model_that_detects_nothing_lets_every_defect_escape():
    gts, _, images = _factory_case()
    k = inspection_kpis(gts, [], images, NAMES)
    assert k["escape_rate"] == 1.0 and k["false_reject_rate"] == 0.0 and k["thresholds"]["scratch"] == NEVER_FIRES


def _boxes(bs):
    from gradkit.report.coco import Boxes

    return Boxes.from_boxes(bs) if bs else Boxes([], [], [], [], [], [], [])


def _iou(a, b):
    iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
    ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
    inter = iw * ih
    union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - inter
    return inter / union if union > 0 else 0.0


def _naive(gts, preds, images, thr):
    """Reference: threshold first, then match greedily, image by image, with plain loops."""
    kept = [p for p in preds if p.score >= thr[p.cls]]
    tp = fp = 0
    found_imgs, rejected = set(), {p.image for p in kept}
    for img in images:
        used = set()
        for p in sorted((p for p in kept if p.image == img), key=lambda p: -p.score):
            cands = [(_iou(p, g), j) for j, g in enumerate(gts) if g.image == img and g.cls == p.cls and j not in used]
            best = max(cands, default=(0.0, None))
            if best[0] >= 0.5:
                used.add(best[1])
                tp += 1
                found_imgs.add(img)
            else:
                fp += 1
    defective = {g.image for g in gts}
    free = set(images) - defective
    shipped = {c: (len({g.image for g in gts if g.cls == c}), len({g.image for g in gts if g.cls == c} - rejected))
               for c in NAMES}
    return {"tp": tp, "fp": fp, "escape": len(defective - rejected) / len(defective), "shipped": shipped,
            "false_reject": len(free & rejected) / len(free), "no_tp": len(defective - found_imgs)}


@pytest.mark.parametrize("seed", range(4))
def test_kpis_and_thresholds_agree_with_a_naive_reference(seed):
    rng = np.random.default_rng(seed)
    images = list(range(30))
    gts, preds = [], []
    for img in images[:20]:
        for _ in range(rng.integers(1, 3)):
            g = _gt(img, int(rng.integers(0, 2)), *rng.uniform(0, 0.6, 2), s=float(rng.uniform(0.05, 0.3)))
            gts.append(g)
            for _ in range(rng.integers(0, 4)):  # jittered detections, some of the wrong class
                j = rng.normal(0, 0.04, 4)
                preds.append(Box(img, int(rng.integers(0, 2)) if rng.random() < 0.2 else g.cls, g.x0 + j[0],
                                 g.y0 + j[1], g.x1 + j[2], g.y1 + j[3], float(np.round(rng.uniform(0, 1), 2))))
    for img in images:
        for _ in range(rng.integers(0, 3)):  # background detections, on defect-free images too
            x, y = rng.uniform(0, 0.8, 2)
            preds.append(Box(img, int(rng.integers(0, 2)), x, y, x + 0.1, y + 0.1, float(np.round(rng.uniform(), 2))))
    k = inspection_kpis(gts, preds, images, NAMES)
    thr = np.array([k["thresholds"][NAMES[c]] for c in (0, 1)])
    ref = _naive(gts, preds, images, thr)
    assert sum(c["tp"] for c in k["per_class"]) == ref["tp"] and k["false_positives"] == ref["fp"]
    assert k["escape_rate"] == pytest.approx(ref["escape"])
    assert k["false_reject_rate"] == pytest.approx(ref["false_reject"])
    assert k["defective_images_without_true_positive"] == ref["no_tp"]
    assert {c: (row["parts"], row["shipped_parts"]) for c, row in enumerate(k["per_class"])} == ref["shipped"]
    for c in (0, 1):  # the chosen threshold gives the best F1 of every candidate threshold
        n_gt = sum(g.cls == c for g in gts)

        def f1(t, c=c, n_gt=n_gt):
            r = _naive([g for g in gts if g.cls == c], [p for p in preds if p.cls == c], images,
                       np.array([t, t]))
            return 2 * r["tp"] / (r["tp"] + r["fp"] + n_gt)

        best = max(f1(t) for t in {p.score for p in preds if p.cls == c})
        assert f1(thr[c]) == pytest.approx(best)


def test_max_f1_search_over_a_prefix_equals_the_full_search():
    """Many low-score predictions (the ~100 per image of a conf-0.001 validation) and a class whose best F1
    lies deep in the ranking: the incremental prefix must find the same threshold as matching everything."""
    rng = np.random.default_rng(7)
    gts, preds = [], []
    for img in range(300):
        g = _gt(img, 0, *rng.uniform(0, 0.6, 2), s=0.2)
        gts.append(g)
        # the true detection has a LOW score, below many background boxes: the F1 maximum is far down
        preds.append(Box(img, 0, g.x0, g.y0, g.x1, g.y1, float(rng.uniform(0.05, 0.2))))
        for _ in range(20):
            x, y = rng.uniform(0, 0.8, 2)
            preds.append(Box(img, 0, x, y, x + 0.05, y + 0.05, float(rng.uniform(0.001, 0.3))))
    got = max_f1_thresholds(_boxes(gts), _boxes(preds), [0])[0]
    point = max_f1_points(_boxes(gts), _boxes(preds), [0])[0]
    # reference: F1 at every distinct score with the naive matcher's counts
    scores = np.array(sorted({p.score for p in preds}, reverse=True))
    tps = np.array([p.score for p in preds])  # true detections are exactly the boxes equal to a GT
    is_tp = np.array([any(abs(p.x0 - g.x0) < 1e-12 and p.image == g.image for g in gts[p.image:p.image + 1])
                      for p in preds])
    f1 = [2 * (is_tp & (tps >= t)).sum() / ((tps >= t).sum() + len(gts)) for t in scores]
    assert got == point.threshold == pytest.approx(scores[int(np.argmax(f1))])
    kept = tps >= got  # the F1 and precision it reports are those of its threshold
    assert point.f1 == pytest.approx(max(f1)) and point.precision == pytest.approx((is_tp & kept).sum() / kept.sum())


def _unlearnt_class_case():
    """Ten parts, five with a crack (found at 0.9) and five defect-free; scratches on parts 0-3, missed except
    one found at 0.01, under 40 false scratch boxes at 0.02-0.05 spread over every part. The scratch's F1 is
    best at 0.01 (1 TP, 40 FP, 3 FN: F1 2/45; precision 1/41), a threshold that rejects all ten parts."""
    gts = [_gt(i, 1) for i in range(5)] + [_gt(i, 0, x=0.6, y=0.6) for i in range(4)]
    preds = [_pred(i, 1, 0.9) for i in range(5)] + [_pred(0, 0, 0.01, x=0.6, y=0.6)]
    preds += [_pred(i % 10, 0, 0.02 + 0.03 * i / 40, x=0.3, y=0.3, s=0.05) for i in range(40)]
    return gts, preds, list(range(10))


def test_a_class_whose_best_threshold_only_scraps_parts_is_set_aside():
    # found on the strip set (session 37): the scratches' best F1 was 0.001, at confidence 0.003 (1 true
    # positive among 1771 predictions), and that one class rejected all 90 held-out parts: escape 0, false
    # reject 1.0, which reads as a line that catches everything
    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack"}
    raw = max_f1_thresholds(_boxes(gts), _boxes(preds), [0, 1])
    assert raw[0] == pytest.approx(0.01) and raw[1] == 0.9  # the plain max-F1 choice, as before
    k = inspection_kpis(gts, preds, images, names)
    assert k["thresholds"] == {"scratch": NEVER_FIRES, "crack": 0.9} and k["min_precision"] == MIN_PRECISION
    scratch, crack = k["per_class"]
    assert scratch["set_aside"] == {"threshold": pytest.approx(0.01), "f1": pytest.approx(2 / 45),
                                    "precision": pytest.approx(1 / 41), "tp": 1, "boxes": 41,
                                    "precision_lower": pytest.approx(precision_lower_bound(1, 41)),
                                    "parts_rejected": 10}
    assert 0 < scratch["set_aside"]["precision_lower"] < 1 / 41 and k["precision_confidence"] == PRECISION_CONFIDENCE
    assert crack["set_aside"] is None
    assert k["escape_rate"] == 0.0 and k["false_reject_rate"] == 0.0  # the crack parts hold parts 0-3's scratches
    assert (scratch["tp"], scratch["fp"], scratch["fn"]) == (0, 0, 4)
    plain = inspection_kpis(gts, preds, images, names, conf=0.01)  # a user's conf is the user's: nothing set aside
    assert plain["false_reject_rate"] == 1.0 and plain["per_class"][0]["set_aside"] is None
    assert plain["min_precision"] is None and plain["precision_confidence"] is None


def test_a_class_found_rarely_but_without_false_boxes_keeps_its_threshold():
    # low recall, not false boxes: 1 of 50 found at 0.9 and nothing else (F1 0.039, precision 1) rejects no good
    # part, so setting it aside would only ship the one part it catches
    gts = [_gt(i, 0) for i in range(50)]
    k = inspection_kpis(gts, [_pred(0, 0, 0.9)], list(range(60)), NAMES)
    assert k["thresholds"]["scratch"] == 0.9 and k["per_class"][0]["set_aside"] is None
    assert k["escaped_images"] == 49


def test_classes_that_never_fire_do_not_fire_on_a_score_of_one():
    # a class without any true positive, and a set-aside one, each with a false box scored exactly 1.0 (a float32
    # sigmoid reaches it): neither fires at the max-F1 operating point; a user's conf of 1.0 still fires
    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack", 2: "pit"}
    gts = [*gts, _gt(9, 2)]
    preds = [*preds, _pred(8, 0, 1.0, x=0.8, y=0.8, s=0.1), _pred(7, 2, 1.0, x=0.8, y=0.8, s=0.1)]
    k = inspection_kpis(gts, preds, images, names)
    assert k["thresholds"]["scratch"] == k["thresholds"]["pit"] == NEVER_FIRES
    assert k["per_class"][0]["set_aside"] is not None and k["per_class"][2]["set_aside"] is None  # pit: no TP
    assert k["false_positives"] == 0 and k["false_reject_rate"] == 0.0
    assert inspection_kpis(gts, preds, images, names, conf=1.0)["false_positives"] == 2


def test_the_report_names_a_set_aside_class_where_its_kpis_are_read(tmp_path):
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html, render_markdown, warnings
    from gradkit.report.schema import validate_report

    gts, preds, images = _unlearnt_class_case()
    gts, preds = [*gts, _gt(9, 2)], [*preds, _pred(8, 2, 0.5)]  # a pit class with no true positive
    report = validate_report(build_report(_evaluation(tmp_path, gts, preds, images)))
    said = ("Set aside: scratch (best F1 0.044 at confidence 0.010, where 1 of its 41 boxes was right (2.4%), too few "
            "to show at 95% confidence that 5% are (only that 0.5% are), which would reject 10 of the 10 parts); it "
            "never fires at this operating point.")
    md, page = render_markdown(report), render_html(report)
    assert said in md and said in page
    assert "scratch set aside" in md and "crack ≥ 0.900" in md  # the operating point in words
    assert "Lowest recall: pit (0.000 at confidence 1.000)" in md and "scratch (0.000" not in md  # named once, above
    assert "| scratch | set aside |" in md
    assert [w for w in warnings(report) if "No confidence gives a true positive" in w] == [
        "No confidence gives a true positive for: pit (threshold 1.0: never fires)."]


def _evaluation(tmp_path, gts, preds, images, names=None):
    from gradkit.report import EvalData

    names = names or {0: "scratch", 1: "crack", 2: "pit"}
    counts = {c: sum(g.cls == c for g in gts) for c in names}
    return EvalData(names=names, split="val", data="d.yaml", model="runs/x/weights/best.pt", images=images,
                    files={i: str(tmp_path / f"img{i}.png") for i in images}, sizes=dict.fromkeys(images, (100, 100)),
                    gts=gts, preds=preds, headline={"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3},
                    per_class={c: {"precision": 0.5, "recall": 0.5, "AP50": 0.5, "AP50-95": 0.3} for c in names},
                    instances=counts, image_counts=counts, conf_threshold=None)


def test_a_comparison_warns_when_runs_set_aside_different_classes(tmp_path):
    from gradkit.report import compare_reports
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html

    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack"}
    learnt = [*preds[:5], *(_pred(i, 0, 0.8, x=0.6, y=0.6) for i in range(4))]  # every scratch found at 0.8
    a, b = (build_report(_evaluation(tmp_path, gts, p, images, names)) for p in (preds, learnt))
    cmp_ = compare_reports([a, b], ["a", "b"])
    assert [r["set_aside"] for r in cmp_["runs"]] == [["scratch"], []]
    assert ("Classes set aside at each run's operating point (a: scratch; b: none): their escape rates count "
            "different parts.") in cmp_["warnings"]
    assert "scratch set aside, crack 0.900" in render_html(cmp_)


@pytest.mark.parametrize("forged", [
    {"set_aside": {"threshold": 0.9, "f1": 0.9, "precision": 0.9, "parts_rejected": 1}},  # above the floor
    {"set_aside": {"threshold": 0.01, "f1": 0.04, "precision": 0.02, "parts_rejected": 999}},  # more parts than images
    {"threshold": 0.9, "set_aside": {"threshold": 0.01, "f1": 0.04, "precision": 0.02, "parts_rejected": 1}},  # fires
    # schema 10: the counts behind the precision are checked, and the floor holds their bound
    {"set_aside": {"threshold": 0.1, "f1": 0.3, "precision": 0.3, "tp": 30, "boxes": 100, "parts_rejected": 1}},
    {"set_aside": {"threshold": 0.1, "f1": 0.1, "precision": 0.5, "tp": 2, "boxes": 33, "parts_rejected": 1}},
    {"set_aside": {"threshold": 0.1, "f1": 0.1, "precision": 2 / 33, "tp": 2, "parts_rejected": 1}},
    {"set_aside": {"threshold": 0.1, "f1": 0.1, "precision": 2 / 33, "tp": 2, "boxes": 33, "precision_lower": 0.001,
                   "parts_rejected": 1}},
])
def test_a_report_json_whose_set_aside_contradicts_its_kpis_is_refused(tmp_path, forged):
    from gradkit.report.build import build_report
    from gradkit.report.schema import ReportSchemaError, validate_report

    gts, preds, images = _unlearnt_class_case()
    report = build_report(_evaluation(tmp_path, gts, preds, images, {0: "scratch", 1: "crack"}))
    crack = report["inspection"]["per_class"][1]
    crack.update({**forged, "tp": 0, "fp": 0} if "threshold" not in forged else forged)
    if "threshold" not in forged:
        crack["threshold"] = NEVER_FIRES
    with pytest.raises(ReportSchemaError, match="set_aside"):
        validate_report(report)


def _few_right_among_many_case():
    """Found on the photographs (session 40): a barely learnt pit class (AP50 0.004) had its best F1 at
    confidence 0.042 with 2 right boxes among 33 (precision 0.061, just over the 0.05 floor), and that
    threshold rejected 3 of the 14 clean parts. Here: 40 pits on images 0-39, their only right boxes scored
    0.04 and 0.045, below 31 false boxes spread over the defect-free images 40-53."""
    gts = [_gt(i, 1) for i in range(40)]
    preds = [_pred(0, 1, 0.045), _pred(1, 1, 0.04)]
    preds += [_pred(40 + i % 14, 1, 0.05 + 0.01 * i, x=0.6, y=0.6) for i in range(31)]
    return gts, preds, list(range(54))


def test_a_best_threshold_resting_on_two_right_boxes_does_not_clear_the_floor():
    gts, preds, images = _few_right_among_many_case()
    point = max_f1_points(_boxes(gts), _boxes(preds), [1])[1]
    assert point.precision == pytest.approx(2 / 33) and point.precision > MIN_PRECISION  # the estimate clears it
    k = inspection_kpis(gts, preds, images, NAMES)
    pit = k["per_class"][1]
    # 2 of 33 is too few to say that at least 1 box in 20 is right: the precision's one-sided lower bound
    # (Wilson score interval) lies below the floor, so the class is set aside and scraps no clean part
    assert pit["set_aside"] is not None and k["thresholds"]["pit"] == NEVER_FIRES
    assert (pit["set_aside"]["tp"], pit["set_aside"]["boxes"]) == (2, 33)
    assert pit["set_aside"]["parts_rejected"] == 16  # images 0, 1 and the 14 clean ones
    assert k["false_rejected_images"] == 0 and k["escape_rate"] == 1.0
    # schema 9's rule (precision_confidence None: the estimate at the max-F1 point) kept the class, and its
    # threshold scrapped every clean part it had a box on
    before = inspection_kpis(gts, preds, images, NAMES, precision_confidence=None)
    assert before["thresholds"]["pit"] == pytest.approx(0.04) and before["per_class"][1]["set_aside"] is None
    assert before["false_rejected_images"] == 14 and before["escaped_images"] == 38


def _wilson_lower_by_inversion(tp: int, n: int, z: float) -> float:
    """The smallest p whose score test does not reject tp of n: |tp/n - p| <= z sqrt(p (1 - p) / n), by
    bisection on p below tp/n (an independent route to the Wilson bound's closed form)."""
    lo, hi = 0.0, tp / n
    for _ in range(200):
        mid = (lo + hi) / 2
        inside = tp / n - mid <= z * np.sqrt(mid * (1 - mid) / n)
        lo, hi = (lo, mid) if inside else (mid, hi)
    return hi


@pytest.mark.parametrize(("tp", "boxes"), [(1, 1), (2, 33), (1, 20), (30, 375), (5, 26), (7, 7), (1, 5)])
def test_the_precision_bound_is_the_wilson_score_bound(tp, boxes):
    from scipy.special import erfinv
    from scipy.stats import binomtest

    # one-sided at PRECISION_CONFIDENCE = the lower end of the two-sided interval at 2 * it - 1
    ci = binomtest(tp, boxes).proportion_ci(confidence_level=2 * PRECISION_CONFIDENCE - 1, method="wilson")
    assert precision_lower_bound(tp, boxes) == pytest.approx(ci.low, abs=1e-12)
    z = float(np.sqrt(2) * erfinv(2 * PRECISION_CONFIDENCE - 1))  # the normal quantile at PRECISION_CONFIDENCE
    assert precision_lower_bound(tp, boxes) == pytest.approx(_wilson_lower_by_inversion(tp, boxes, z), abs=1e-9)


@pytest.mark.parametrize(("right", "false_boxes", "set_aside"),
                         [(1, 0, False), (1, 3, False), (1, 4, True), (40, 400, False), (20, 300, True)])
def test_the_floor_holds_the_lower_bound_of_the_precision(right, false_boxes, set_aside):
    # a class kept only where the data say, at PRECISION_CONFIDENCE, that at least MIN_PRECISION of its boxes
    # are right: one clean right box is enough (bound 0.27), one right among five is not (0.046); 40 of 440
    # (0.091, bound 0.071) is kept, 20 of 320 (0.0625, bound 0.044) not, though both estimates clear 0.05
    gts = [_gt(i, 0) for i in range(right)]
    preds = [_pred(i, 0, 0.1) for i in range(right)]
    preds += [_pred(right + i, 0, 0.2) for i in range(false_boxes)]
    k = inspection_kpis(gts, preds, list(range(right + false_boxes + 5)), NAMES)
    assert (k["per_class"][0]["set_aside"] is not None) == set_aside
    assert (precision_lower_bound(right, right + false_boxes) < MIN_PRECISION) == set_aside
    assert k["false_rejected_images"] == (0 if set_aside else false_boxes)


def test_a_class_set_aside_above_the_floor_reads_back_and_says_why(tmp_path):
    # its precision (2 of 33, 6.1%) clears the floor and its bound (2.0%) does not: report.json validates, and
    # the page gives the counts behind the decision
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html, render_markdown
    from gradkit.report.schema import validate_report

    gts, preds, images = _few_right_among_many_case()
    report = validate_report(json.loads(json.dumps(build_report(_evaluation(tmp_path, gts, preds, images, NAMES)))))
    aside = report["inspection"]["per_class"][1]["set_aside"]
    assert aside["precision"] > report["inspection"]["min_precision"] > aside["precision_lower"]
    said = ("Set aside: pit (best F1 0.055 at confidence 0.040, where 2 of its 33 boxes were right (6.1%), too few "
            "to show at 95% confidence that 5% are (only that 2.0% are), which would reject 16 of the 54 parts)")
    assert said in render_markdown(report) and said in render_html(report)


def test_a_schema_9_report_with_a_set_aside_class_still_reads_back(tmp_path):
    # written before the bound (session 37-40): a set-aside class with its precision alone, below the floor
    from gradkit.report.build import build_report
    from gradkit.report.render import render_markdown
    from gradkit.report.schema import validate_report

    gts, preds, images = _unlearnt_class_case()
    report = json.loads(json.dumps(build_report(_evaluation(tmp_path, gts, preds, images, {0: "scratch", 1: "crack"}))))
    report["schema_version"] = 9
    del report["inspection"]["precision_confidence"]
    for key in ("tp", "boxes", "precision_lower"):
        del report["inspection"]["per_class"][0]["set_aside"][key]
    assert "where 2.4% of its boxes were right, which would reject 10 of the 10 parts" in render_markdown(
        validate_report(report))


def test_an_untrusted_best_threshold_gives_way_to_the_best_trusted_one():
    # the pits' top box is right (0.9); their best F1 (3 right of 34, 0.088, bound 0.035) rests on 31 false boxes
    # over the clean parts. The best F1 among thresholds whose precision clears the floor at 95% is 0.9's (1 of 1,
    # bound 0.27): the class keeps catching its surest part and scraps no good one, where setting it aside would
    # catch nothing and the estimate's threshold would scrap all 14
    gts = [_gt(i, 1) for i in range(40)]
    preds = [_pred(0, 1, 0.9), _pred(1, 1, 0.045), _pred(2, 1, 0.04)]
    preds += [_pred(40 + i % 14, 1, 0.05 + 0.01 * i, x=0.6, y=0.6) for i in range(31)]
    untrusted = max_f1_points(_boxes(gts), _boxes(preds), [1])[1]
    assert (untrusted.tp, untrusted.boxes, untrusted.threshold) == (3, 34, pytest.approx(0.04))
    trusted = max_f1_points(_boxes(gts), _boxes(preds), [1], trusted=PRECISION_CONFIDENCE)[1]
    assert (trusted.tp, trusted.boxes, trusted.threshold) == (1, 1, pytest.approx(0.9))
    k = inspection_kpis(gts, preds, list(range(54)), NAMES)
    pit = k["per_class"][1]
    assert k["thresholds"]["pit"] == pytest.approx(0.9) and pit["set_aside"] is None
    assert (pit["tp"], pit["fp"], k["false_rejected_images"], k["escaped_images"]) == (1, 0, 0, 39)
    assert pit["untrusted_max_f1"] == {"threshold": pytest.approx(0.04), "f1": pytest.approx(6 / 74),
                                       "precision": pytest.approx(3 / 34), "tp": 3, "boxes": 34,
                                       "precision_lower": pytest.approx(precision_lower_bound(3, 34)),
                                       "parts_rejected": 17}
    assert k["per_class"][0]["untrusted_max_f1"] is None  # scratch: no objects, nothing moved
    est = inspection_kpis(gts, preds, list(range(54)), NAMES, precision_confidence=None)
    assert est["thresholds"]["pit"] == pytest.approx(0.04) and est["false_rejected_images"] == 14


def test_trusted_max_f1_against_a_brute_force_search():
    # every threshold tried by hand on random rankings long enough (65-400 boxes) to grow the matched prefix past
    # its first 64: the best F1 among thresholds whose precision's bound clears the floor, the highest confidence
    # on ties, with the right boxes and boxes there
    from gradkit.report.inspection import Matching

    rng = np.random.default_rng(0)
    for trial in range(40):
        n_gt, n_pred = int(rng.integers(1, 60)), int(rng.integers(65, 400))
        gts = _boxes([_gt(i, 0) for i in range(n_gt)])
        right = rng.random(n_pred) < rng.uniform(0.0, 0.3)
        scores = np.round(rng.random(n_pred), 2)  # ties happen
        preds = _boxes([_pred(int(rng.integers(n_gt)) if r else 100 + j, 0, float(sc))
                        for j, (r, sc) in enumerate(zip(right, scores, strict=True))])
        best = (0.0, NEVER_FIRES, 0, 0)
        for thr in sorted(set(scores.tolist()), reverse=True):
            keep = preds.score >= thr
            tp, boxes = int(Matching(gts, preds, keep).pred_tp.sum()), int(keep.sum())
            if tp and precision_lower_bound(tp, boxes) >= MIN_PRECISION and 2 * tp / (boxes + n_gt) > best[0] + 1e-12:
                best = (2 * tp / (boxes + n_gt), thr, tp, boxes)
        got = max_f1_points(gts, preds, [0], trusted=PRECISION_CONFIDENCE)[0]
        assert (got.threshold, got.tp, got.boxes) == (pytest.approx(best[1]), best[2], best[3]), trial


def test_the_report_says_where_a_class_fires_instead_of_its_best_f1(tmp_path):
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html, render_markdown
    from gradkit.report.schema import ReportSchemaError, validate_report

    gts = [_gt(i, 1) for i in range(40)]
    preds = [_pred(0, 1, 0.9), _pred(1, 1, 0.045), _pred(2, 1, 0.04)]
    preds += [_pred(40 + i % 14, 1, 0.05 + 0.01 * i, x=0.6, y=0.6) for i in range(31)]
    report = validate_report(json.loads(json.dumps(build_report(_evaluation(tmp_path, gts, preds, list(range(54)),
                                                                            NAMES)))))
    said = ("pit fires at confidence 0.900, its best trusted threshold (F1 0.049; 1 of its 1 box was right), not at "
            "its max-F1 one (best F1 0.081 at confidence 0.040, where 3 of its 34 boxes were right (8.8%), too few to "
            "show at 95% confidence that 5% are (only that 3.6% are), which would reject 17 of the 54 parts).")
    assert said in render_markdown(report) and said in render_html(report)
    pit = report["inspection"]["per_class"][1]
    for forged in ({"threshold": NEVER_FIRES, "tp": 0},  # moved, yet fires nowhere
                   {"untrusted_max_f1": {**pit["untrusted_max_f1"], "tp": 30, "boxes": 34, "precision": 30 / 34}},
                   {"untrusted_max_f1": {**pit["untrusted_max_f1"], "f1": 0.5}},  # not 2 x 3 / (34 + 40)
                   {"untrusted_max_f1": {**pit["untrusted_max_f1"], "f1": 0.01}},  # below the F1 it fires at
                   {"untrusted_max_f1": {**pit["untrusted_max_f1"], "parts_rejected": 35}}):  # more than 34 boxes
        bad = json.loads(json.dumps(report))
        bad["inspection"]["per_class"][1].update(forged)
        with pytest.raises(ReportSchemaError, match="untrusted_max_f1"):
            validate_report(bad)


def test_schema_9s_rule_sets_aside_what_the_trusted_rule_moves():
    # the top box right (0.9), 900 false ones, then 40 right ones at 0.01: the max-F1 point is 41 of 941
    # (0.0436), below the floor, so schema 9's rule sets the class aside; the trusted rule fires it at 0.9 (1 of 1)
    gts = [_gt(i, 0) for i in range(45)]
    preds = [_pred(0, 0, 0.9)] + [_pred(1 + i, 0, 0.01) for i in range(40)]
    preds += [_pred(100 + i, 0, 0.5 - 0.0004 * i, x=0.6, y=0.6) for i in range(900)]
    images = list(range(1000))
    old = inspection_kpis(gts, preds, images, NAMES, precision_confidence=None)["per_class"][0]
    assert old["set_aside"] == {"threshold": pytest.approx(0.01), "f1": pytest.approx(82 / 986),
                                "precision": pytest.approx(41 / 941), "tp": 41, "boxes": 941, "precision_lower": None,
                                "parts_rejected": 941}
    now = inspection_kpis(gts, preds, images, NAMES)
    assert now["thresholds"]["scratch"] == pytest.approx(0.9) and now["per_class"][0]["set_aside"] is None
    assert now["per_class"][0]["untrusted_max_f1"]["boxes"] == 941


def test_a_report_json_firing_a_class_at_an_untrusted_threshold_is_refused(tmp_path):
    from gradkit.report.build import build_report
    from gradkit.report.schema import ReportSchemaError, validate_report

    gts, preds, images = _few_right_among_many_case()
    report = json.loads(json.dumps(build_report(_evaluation(tmp_path, gts, preds, images, NAMES))))
    pit = report["inspection"]["per_class"][1]
    pit.update({"threshold": 0.04, "tp": 2, "fp": 31, "set_aside": None})  # 2 of 33 fires: bound 0.020
    with pytest.raises(ReportSchemaError, match="does not clear min_precision"):
        validate_report(report)
    report["inspection"]["precision_confidence"] = None  # schema 9 held the estimate alone, which clears 0.05
    validate_report(report)


def test_a_comparison_warns_when_a_class_fires_away_from_its_best_f1_in_some_runs(tmp_path):
    # the case above (the pits' max-F1 point rests on 31 false boxes, so they fire at their surest box) against a
    # run where the pits' best F1 is trusted: their escape rates are read at thresholds chosen by different rules
    from gradkit.report import compare_reports
    from gradkit.report.build import build_report

    names = {0: "scratch", 1: "pit"}
    gts = [_gt(i, 1) for i in range(40)]
    moved = [_pred(0, 1, 0.9), _pred(1, 1, 0.045), _pred(2, 1, 0.04)]
    moved += [_pred(40 + i % 14, 1, 0.05 + 0.01 * i, x=0.6, y=0.6) for i in range(31)]
    kept = [_pred(i, 1, 0.8) for i in range(30)]
    a, b = (build_report(_evaluation(tmp_path, gts, p, list(range(54)), names)) for p in (moved, kept))
    said = [w for w in compare_reports([a, b], ["a", "b"])["warnings"] if "best F1" in w]
    assert said == ["Classes that fire at a trusted threshold instead of their best F1's (a: pit at 0.900, not "
                    "0.040, where 3 of 34 boxes were right; b: none): their escape rates are not read at the best "
                    "F1 in every run."]
    assert not [w for w in compare_reports([b, b], ["b", "c"])["warnings"] if "best F1" in w]
    assert not [w for w in compare_reports([a, a], ["a", "c"])["warnings"] if "best F1" in w]  # moved alike


def test_a_comparison_warns_when_runs_were_scored_under_different_precision_rules(tmp_path):
    from gradkit.report import compare_reports
    from gradkit.report.build import build_report

    gts, preds, images = _unlearnt_class_case()
    now = build_report(_evaluation(tmp_path, gts, preds, images))
    old = json.loads(json.dumps(now))
    old["inspection"]["precision_confidence"] = None  # schema 9: the floor held the precision itself
    said = [w for w in compare_reports([now, old], ["now", "old"])["warnings"] if "precision" in w]
    assert said == ["The runs' classes were held to different precision rules (now: lower bound at 95% confidence "
                    "≥ 5%; old: precision ≥ 5%): a class set aside in one might fire in the other."]


def test_a_comparison_warns_when_runs_chose_their_operating_points_by_different_rules(tmp_path):
    """Two reports at report.conf 0.25 and 0.5 compared their escape and false-reject rates and named a winner
    without a word: the rates differed by the threshold alone. A report at the max-F1 point against one at a fixed
    confidence was only said to hold "different precision rules". Hand-made case: the same boxes, three rules."""
    import dataclasses

    from gradkit.report import compare_reports
    from gradkit.report.build import build_report

    gts, preds, images = _factory_case()
    made = [build_report(dataclasses.replace(_evaluation(tmp_path, gts, preds, images), conf_threshold=conf))
            for conf in (0.25, 0.5, None)]
    said = compare_reports(made[:2], ["a", "b"])["warnings"]
    assert any("report.conf = 0.25" in w and "report.conf = 0.5" in w and "operating point" in w for w in said), said
    said = compare_reports([made[0], made[2]], ["a", "c"])["warnings"]
    assert any("report.conf = 0.25" in w and "max F1" in w for w in said), said
    assert not any("operating point" in w for w in compare_reports([made[2], made[2]], ["c", "d"])["warnings"])


def test_a_nan_score_never_fires_nor_sets_a_threshold():
    """A NaN score ranked as -inf; where the best F1 took its group in, the threshold became -inf, the NaN box
    fired and counted as right, and report.json held a null threshold its schema refused. Hand-made case."""
    k = inspection_kpis([_gt(0, 0)], [_pred(0, 0, float("nan"))], [0, 1], {0: "scratch"})
    assert k["per_class"][0]["tp"] == 0 and k["thresholds"]["scratch"] == NEVER_FIRES


def test_a_class_that_fires_at_a_score_of_exactly_one_is_not_called_never_firing(tmp_path):
    """1.0 marked a class that never fires; a class whose (trusted) threshold is a real score of 1.0 (float32
    sigmoid reaches it from 16.7) fires there. Its report was refused by its own schema ("fires at no trusted
    threshold") and the page said "never fires" of a class with a right box. Hand-made case from a review."""
    from gradkit.report.build import build_report
    from gradkit.report.render import warnings as page_warnings
    from gradkit.report.schema import validate_report

    gts = [Box(i, 0, .1, .1, .4, .4) for i in range(200)]
    preds = ([Box(0, 0, .1, .1, .4, .4, 1.0)] + [Box(300 + i, 0, .5, .5, .9, .9, .05) for i in range(150)]
             + [Box(i, 0, .1, .1, .4, .4, .04) for i in range(1, 6)])
    report = validate_report(build_report(_evaluation(tmp_path, gts, preds, list(range(500)), {0: "scratch"})))
    k = report["inspection"]
    assert k["thresholds"]["scratch"] == 1.0 and k["per_class"][0]["tp"] == 1
    assert not any("never fires" in w for w in page_warnings(report))


def test_a_threshold_read_back_from_report_json_still_fires_the_boxes_it_counted(tmp_path):
    """report.json keeps 7 significant digits and rounded each threshold to the nearest: half the time above the
    score of the box it was, so a user applying it with >= lost that box (the lowest one the operating point
    counted). Thresholds are now written rounded down. Oracle: the boxes at or above the written threshold, counted
    against the report's tp + fp, for float32 scores drawn at random."""
    import json

    from gradkit.report.build import build_report

    rng = np.random.default_rng(3)
    scores = rng.random(40).astype(np.float32).astype(float)
    gts = [_gt(i, 0) for i in range(40)]
    preds = [_pred(i, 0, s) if i % 3 else _pred(i, 0, s, x=0.6, y=0.6) for i, s in enumerate(scores)]
    report = json.loads(json.dumps(build_report(_evaluation(tmp_path, gts, preds, list(range(40)), {0: "scratch"}))))
    row = report["inspection"]["per_class"][0]
    written = report["inspection"]["thresholds"]["scratch"]
    assert written == row["threshold"] and int((scores >= written).sum()) == row["tp"] + row["fp"]
