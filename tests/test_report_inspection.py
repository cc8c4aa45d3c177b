"""Inspection KPIs (escape rate, false-reject rate, operating thresholds) against hand-made answers and a
naive reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

from gradkit.report.coco import Box
from gradkit.report.inspection import NEVER_FIRES, inspection_kpis, max_f1_thresholds

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
    # reference: F1 at every distinct score with the naive matcher's counts
    scores = np.array(sorted({p.score for p in preds}, reverse=True))
    tps = np.array([p.score for p in preds])  # true detections are exactly the boxes equal to a GT
    is_tp = np.array([any(abs(p.x0 - g.x0) < 1e-12 and p.image == g.image for g in gts[p.image:p.image + 1])
                      for p in preds])
    f1 = [2 * (is_tp & (tps >= t)).sum() / ((tps >= t).sum() + len(gts)) for t in scores]
    assert got == pytest.approx(scores[int(np.argmax(f1))])


def _unlearnt_class_case():
    """Ten parts, five with a crack (found at 0.9) and five defect-free; scratches on parts 0-3, missed except
    one found at 0.01, under 40 false scratch boxes at 0.02-0.05 spread over every part. The scratch's F1 is
    best at 0.01 (1 TP, 40 FP, 3 FN: F1 2/45 = 0.044), a threshold that rejects all ten parts."""
    gts = [_gt(i, 1) for i in range(5)] + [_gt(i, 0, x=0.6, y=0.6) for i in range(4)]
    preds = [_pred(i, 1, 0.9) for i in range(5)] + [_pred(0, 0, 0.01, x=0.6, y=0.6)]
    preds += [_pred(i % 10, 0, 0.02 + 0.03 * i / 40, x=0.3, y=0.3, s=0.05) for i in range(40)]
    return gts, preds, list(range(10))


def test_a_class_whose_best_f1_only_scraps_parts_is_set_aside():
    # found on the strip set (session 37): the scratches' best F1 was 0.001, at confidence 0.003 (1 true
    # positive among 1771 predictions), and that one class rejected all 90 held-out parts: escape 0, false
    # reject 1.0, which reads as a line that catches everything
    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack"}
    raw = max_f1_thresholds(_boxes(gts), _boxes(preds), [0, 1])
    assert raw[0] == pytest.approx(0.01) and raw[1] == 0.9  # the plain max-F1 choice, as before
    k = inspection_kpis(gts, preds, images, names)
    assert k["thresholds"] == {"scratch": NEVER_FIRES, "crack": 0.9}
    scratch, crack = k["per_class"]
    assert scratch["set_aside"] == {"threshold": pytest.approx(0.01), "f1": pytest.approx(2 / 45),
                                    "parts_rejected": 10}
    assert crack["set_aside"] is None
    assert k["escape_rate"] == 0.0 and k["false_reject_rate"] == 0.0  # the crack parts hold parts 0-3's scratches
    assert (scratch["tp"], scratch["fp"], scratch["fn"]) == (0, 0, 4)
    plain = inspection_kpis(gts, preds, images, names, conf=0.01)  # a user's conf is the user's: nothing set aside
    assert plain["false_reject_rate"] == 1.0 and plain["per_class"][0]["set_aside"] is None


def test_a_weak_but_usable_class_keeps_its_threshold():
    # the floor is on F1, not on AP: a class found 1 time in 3 with few false boxes keeps its best threshold
    gts = [_gt(i, 0) for i in range(6)]
    preds = [_pred(0, 0, 0.4), _pred(1, 0, 0.3), _pred(7, 0, 0.35, x=0.5)]
    k = inspection_kpis(gts, preds, list(range(10)), NAMES)
    assert k["thresholds"]["scratch"] == 0.3 and k["per_class"][0]["set_aside"] is None


def test_the_report_names_a_set_aside_class_where_its_kpis_are_read(tmp_path):
    from gradkit.report import EvalData
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html, render_markdown, warnings
    from gradkit.report.schema import validate_report

    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack"}
    ev = EvalData(names=names, split="val", data="d.yaml", model="runs/x/weights/best.pt", images=images,
                  files={i: str(tmp_path / f"img{i}.png") for i in images}, sizes=dict.fromkeys(images, (100, 100)),
                  gts=gts, preds=preds, headline={"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3},
                  per_class={c: {"precision": 0.5, "recall": 0.5, "AP50": 0.5, "AP50-95": 0.3} for c in names},
                  instances={0: 4, 1: 5}, image_counts={0: 4, 1: 5}, conf_threshold=None)
    report = validate_report(build_report(ev))
    said = ("Set aside: scratch (best F1 0.044 at confidence 0.010, which would reject 10 of the 10 parts); it "
            "never fires at this operating point, so a part holding only it ships.")
    md, page = render_markdown(report), render_html(report)
    assert said in md and said in page
    assert "scratch set aside" in md and "crack ≥ 0.900" in md  # the operating point in words
    assert not any("No confidence gives a true positive" in w for w in warnings(report))


def test_a_comparison_warns_when_runs_set_aside_different_classes(tmp_path):
    from gradkit.report import EvalData, compare_reports
    from gradkit.report.build import build_report
    from gradkit.report.render import render_html

    gts, preds, images = _unlearnt_class_case()
    names = {0: "scratch", 1: "crack"}

    def report(preds):
        return build_report(EvalData(
            names=names, split="val", data="d.yaml", model="runs/x/weights/best.pt", images=images,
            files={i: str(tmp_path / f"img{i}.png") for i in images}, sizes=dict.fromkeys(images, (100, 100)),
            gts=gts, preds=preds, headline={"precision": 0.5, "recall": 0.5, "mAP50": 0.5, "mAP50-95": 0.3},
            per_class={c: {"precision": 0.5, "recall": 0.5, "AP50": 0.5, "AP50-95": 0.3} for c in names},
            instances={0: 4, 1: 5}, image_counts={0: 4, 1: 5}, conf_threshold=None))

    learnt = [*preds[:5], *(_pred(i, 0, 0.8, x=0.6, y=0.6) for i in range(4))]  # every scratch found at 0.8
    cmp_ = compare_reports([report(preds), report(learnt)], ["a", "b"])
    assert [r["set_aside"] for r in cmp_["runs"]] == [["scratch"], []]
    assert ("Classes set aside at each run's operating point (a: scratch; b: none): their escape rates count "
            "different parts.") in cmp_["warnings"]
    assert "scratch set aside, crack 0.900" in render_html(cmp_)
