"""Report analyses on hand-made cases with known answers, and pycocotools as the COCO oracle."""

from __future__ import annotations

import contextlib
import io
import json
import re

import numpy as np
import pytest

from gradkit.report.build import _clean
from gradkit.report.coco import Box, bucket_metrics, coco_metrics
from gradkit.report.compare import compare_reports
from gradkit.report.errors import MISS_CAUSES, analyse_errors, miss_causes
from gradkit.report.render import render_html, render_markdown

GT = [Box(0, 0, 0.10, 0.10, 0.30, 0.30), Box(0, 1, 0.50, 0.50, 0.90, 0.60), Box(1, 0, 0.20, 0.20, 0.40, 0.50),
      Box(2, 1, 0.05, 0.60, 0.95, 0.65)]


def _pred(b: Box, score=0.9, dx=0.0) -> Box:
    return Box(b.image, b.cls, b.x0 + dx, b.y0, b.x1 + dx, b.y1, score)


def _pycocotools(gts, preds, sizes, classes, area=None, area_rng=None, raw=False):
    """Independent COCO evaluation in absolute pixels (no normalisation) with pycocotools.

    ``area(box)`` replaces the annotations' ``area`` and ``area_rng`` the ranges (bucket oracle).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def ann(b, i):
        w, h = sizes[b.image]
        box = [b.x0 * w, b.y0 * h, (b.x1 - b.x0) * w, (b.y1 - b.y0) * h]
        d = {"id": i + 1, "image_id": b.image, "category_id": b.cls, "bbox": box,
             "area": area(b) if area else box[2] * box[3], "iscrowd": 0}
        if b.score is not None:
            d["score"] = b.score
        return d

    gt = COCO()
    gt.dataset = {"images": [{"id": i, "width": w, "height": h} for i, (w, h) in sizes.items()],
                  "categories": [{"id": c} for c in classes], "annotations": [ann(b, i) for i, b in enumerate(gts)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([ann(b, i) for i, b in enumerate(preds)]) if preds else COCO()
        ev = COCOeval(gt, dt, "bbox")
        if area_rng is not None:
            ev.params.areaRng = area_rng
            ev.params.areaRngLbl = [str(i) for i in range(len(area_rng))]
        if area:  # pycocotools sets a result's area from its bbox: put the measure back
            for d in dt.anns.values():
                d["area"] = area(preds[d["id"] - 1])
        ev.evaluate()
        ev.accumulate()
        if raw:
            return ev
        ev.summarize()
    return {"AP": ev.stats[0], "AP50": ev.stats[1], "AP75": ev.stats[2], "AR100": ev.stats[8], "APs": ev.stats[3],
            "APm": ev.stats[4], "APl": ev.stats[5]}


SIZES = {0: (640, 480), 1: (300, 200), 2: (1000, 1000)}


def test_perfect_predictions_give_ap_one():
    m = coco_metrics(GT, [_pred(b) for b in GT], [0, 1, 2], [0, 1])
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == 1.0 and m["AP75"] == 1.0 and m["AR100"] == 1.0
    ref = _pycocotools(GT, [_pred(b) for b in GT], SIZES, [0, 1])
    assert ref["AP"] == pytest.approx(1.0)


def test_boxes_shifted_to_iou_06_give_ap50_one_ap75_zero():
    # a horizontal shift of d*w on a box of width w gives IoU (1-d)/(1+d) = 0.6 -> d = 0.25
    shifted = [_pred(b, dx=0.25 * (b.x1 - b.x0)) for b in GT]
    m = coco_metrics(GT, shifted, [0, 1, 2], [0, 1])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    ref = _pycocotools(GT, shifted, SIZES, [0, 1])
    assert ref["AP50"] == pytest.approx(1.0) and ref["AP75"] == pytest.approx(0.0)


def test_class_without_ground_truth_is_excluded_not_zero():
    m = coco_metrics(GT, [_pred(b) for b in GT], [0, 1, 2], [0, 1, 7])  # class 7: no objects, no detections
    assert m["AP"] == pytest.approx(1.0)


def _noisy_scene(seed=0):
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    sizes = {i: (int(rng.integers(100, 3000)), int(rng.integers(100, 3000))) for i in range(40)}
    for i in range(40):
        for _ in range(rng.integers(0, 4)):
            x0, y0 = rng.uniform(0, 0.8, 2)
            w, h = rng.uniform(0.01, 0.2, 2)
            b = Box(i, int(rng.integers(0, 3)), x0, y0, x0 + w, y0 + h)
            gts.append(b)
            if rng.random() < 0.8:
                j = rng.normal(0, 0.15 * w, 4)
                cls = b.cls if rng.random() < 0.9 else int(rng.integers(0, 3))
                preds.append(Box(i, cls, b.x0 + j[0], b.y0 + j[1], b.x1 + j[2], b.y1 + j[3], float(rng.random())))
        for _ in range(rng.integers(0, 3)):  # false positives
            x0, y0 = rng.uniform(0, 0.8, 2)
            preds.append(Box(i, int(rng.integers(0, 3)), x0, y0, x0 + 0.1, y0 + 0.1, float(rng.random() * 0.5)))
        if rng.random() < 0.3:  # a scratch: long and thin
            b = Box(i, 2, 0.1, 0.5, 0.8, 0.5 + float(rng.uniform(0.003, 0.02)))
            gts.append(b)
            preds.append(Box(i, 2, b.x0 + 0.01, b.y0, b.x1, b.y1 + 0.002, float(rng.random())))
    return gts, preds, sizes


@pytest.mark.parametrize("same_size", [False, True], ids=["mixed-sizes", "one-size"])
def test_agrees_with_pycocotools_on_noisy_predictions(same_size):
    """APs/m/l too: on the original pixels (one evaluation for one image size, two for mixed sizes)."""
    gts, preds, sizes = _noisy_scene()
    if same_size:
        sizes = dict.fromkeys(sizes, (640, 480))
    from gradkit.report.coco import CocoEvaluation

    evaluation = CocoEvaluation(gts, preds, list(sizes), [0, 1, 2])
    ours = coco_metrics(gts, preds, list(sizes), [0, 1, 2], evaluation, sizes)
    ref = _pycocotools(gts, preds, sizes, [0, 1, 2])
    for k in ref:
        if np.isnan(ours[k]) or ref[k] == -1:  # no object of that size: COCO's -1
            assert np.isnan(ours[k]) and ref[k] == -1, k
        else:
            assert ours[k] == pytest.approx(ref[k], abs=1e-3), k
    assert sum(ref[k] != -1 for k in ("APs", "APm", "APl")) >= 2  # the scene spans the COCO sizes
    # the area buckets after it are unchanged by the pixel areas coco_metrics may have set
    bucket_metrics(gts, preds, list(sizes), [0, 1, 2], sizes, "elongation", evaluation)  # rewrites `area`
    assert coco_metrics(gts, preds, list(sizes), [0, 1, 2], evaluation, sizes) == ours  # ... and is undone
    after = bucket_metrics(gts, preds, list(sizes), [0, 1, 2], sizes, "area", evaluation)
    fresh = bucket_metrics(gts, preds, list(sizes), [0, 1, 2], sizes, "area")
    assert json.dumps(after, sort_keys=True) == json.dumps(fresh, sort_keys=True)  # NaN-aware equality


@pytest.mark.parametrize("by", ["area", "elongation"])
def test_buckets_agree_with_pycocotools(by):
    """Oracle: pycocotools with each annotation's area set to the box's own measure (computed per box,
    in plain Python) and the bucket bounds as area ranges."""
    from gradkit.report.coco import AREA_BUCKETS, ELONGATION_BUCKETS

    gts, preds, sizes = _noisy_scene(1)
    buckets = {"all": (0.0, 1e10), **AREA_BUCKETS} if by == "area" else ELONGATION_BUCKETS
    ours = bucket_metrics(gts, preds, list(sizes), [0, 1, 2], sizes, by)
    if by == "area":
        def measure(b):
            return max(b.x1 - b.x0, 0.0) * max(b.y1 - b.y0, 0.0)
    else:
        def measure(b):
            w, h = (b.x1 - b.x0) * sizes[b.image][0], (b.y1 - b.y0) * sizes[b.image][1]
            return max(w, h) / max(min(w, h), 1e-9)
    ev = _pycocotools(gts, preds, sizes, [0, 1, 2], area=measure, area_rng=[list(r) for r in buckets.values()],
                      raw=True)
    if by == "area":
        assert sum(ours[name]["gt"] for name in AREA_BUCKETS) == len(gts) == ours["all"]["gt"]
    else:  # the elongated bucket is evaluated on the images holding an elongated box: a strict subset here
        holding = {b.image for b in [*gts, *preds] if measure(b) > 5}
        assert 0 < len(holding) < len(sizes)
    for a, name in enumerate(buckets):
        prec = ev.eval["precision"][:, :, :, a, -1]
        rec = ev.eval["recall"][0, :, a, -1]  # IoU 0.5
        expect_ap = prec[prec > -1].mean() if (prec > -1).any() else np.nan
        expect_ap50 = prec[0][prec[0] > -1].mean() if (prec[0] > -1).any() else np.nan
        # the share of the bucket's objects found, pooled over the classes (not COCO's mean over classes)
        lo, hi = list(buckets.values())[a]
        held = np.array([sum(1 for b in gts if b.cls == k and lo <= measure(b) <= hi) for k in range(3)])
        expect_rec = (rec * held)[rec > -1].sum() / held[rec > -1].sum() if (rec > -1).any() else np.nan
        np.testing.assert_allclose([ours[name]["AP"], ours[name]["AP50"], ours[name]["recall"]],
                                   [expect_ap, expect_ap50, expect_rec], atol=1e-3, err_msg=name)
        for k in range(3):  # per class too
            p50 = prec[0, :, k]
            expect = p50[p50 > -1].mean() if (p50 > -1).any() else np.nan
            np.testing.assert_allclose(ours[name]["per_class"][k]["AP50"], expect, atol=1e-3, err_msg=f"{name} {k}")
    if by == "elongation":
        assert ours["elongated (>5)"]["gt"] > 0  # the scene's scratches land in the elongated bucket


def test_relative_area_buckets():
    # image 0: a 0.05% pit found, a 20% stain missed
    gts = [Box(0, 0, 0.5, 0.5, 0.5 + 0.02, 0.5 + 0.025), Box(0, 1, 0.0, 0.0, 0.5, 0.4)]
    preds = [_pred(gts[0])]
    b = bucket_metrics(gts, preds, [0], [0, 1], {0: (400, 400)}, "area")
    assert b["<0.1%"]["gt"] == 1 and b["<0.1%"]["AP50"] == pytest.approx(1.0) and b["<0.1%"]["recall"] == 1.0
    assert b[">10%"]["gt"] == 1 and b[">10%"]["AP50"] == pytest.approx(0.0) and b[">10%"]["recall"] == 0.0
    assert b["1-10%"]["gt"] == 0 and np.isnan(b["1-10%"]["AP"])
    assert b["<0.1%"]["per_class"][0]["AP50"] == pytest.approx(1.0)
    assert b["all"]["gt"] == 2 and b["all"]["recall"] == 0.5 and b["all"]["per_class"][0]["AP50"] == pytest.approx(1.0)
    e = bucket_metrics(gts, preds, [0], [0, 1], {0: (400, 400)}, "elongation")
    assert e["elongated (>5)"]["gt"] == 0 and np.isnan(e["elongated (>5)"]["AP50"])  # no image holds one
    # three pits found, one stain missed: 3 of 4 objects found, where COCO's mean over the classes says 0.5
    four = [Box(0, 0, 0.1 * i, 0.1, 0.1 * i + 0.05, 0.15) for i in range(3)] + [Box(0, 1, 0.5, 0.5, 0.9, 0.9)]
    b4 = bucket_metrics(four, [_pred(g) for g in four[:3]], [0], [0, 1], {0: (400, 400)}, "area")
    assert b4["all"]["gt"] == 4 and b4["all"]["recall"] == pytest.approx(0.75)
    assert (b4["all"]["per_class"][0]["recall"], b4["all"]["per_class"][1]["recall"]) == (1.0, 0.0)
    thin = [Box(0, 0, 0.1, 0.1, 0.9, 0.12)]  # 320 x 8 px: aspect 40
    e2 = bucket_metrics(thin, [_pred(thin[0])], [0], [0], {0: (400, 400)}, "elongation")
    assert e2["elongated (>5)"]["gt"] == 1 and e2["elongated (>5)"]["AP50"] == pytest.approx(1.0)


def test_elongated_means_above_five_as_the_fingerprint_counts():
    """Exactly 5 (80 x 16 px) is not elongated, 5.06 (81 x 16 px) is: the report's bucket and the
    dataset fingerprint agree on the bound."""
    from gradkit.data.fingerprint import ELONGATED

    five = Box(0, 0, 0.1, 0.1, 0.1 + 80 / 256, 0.1 + 16 / 256)
    above = Box(0, 0, 0.5, 0.5, 0.5 + 81 / 256, 0.5 + 16 / 256)
    e = bucket_metrics([five, above], [_pred(five), _pred(above)], [0], [0], {0: (256, 256)}, "elongation")
    assert not ELONGATED < 80 / 16 and ELONGATED < 81 / 16
    assert e[f"elongated (>{ELONGATED:g})"]["gt"] == 1 and e[f"elongated (>{ELONGATED:g})"]["recall"] == 1.0


def test_error_kinds_on_hand_made_cases():
    g = [Box(0, 0, 0.1, 0.1, 0.3, 0.3), Box(0, 1, 0.5, 0.5, 0.7, 0.7), Box(0, 0, 0.1, 0.6, 0.2, 0.9)]
    p = [
        Box(0, 0, 0.1, 0.1, 0.3, 0.3, 0.95),   # tp
        Box(0, 0, 0.1, 0.1, 0.3, 0.29, 0.9),   # duplicate of the first
        Box(0, 0, 0.5, 0.5, 0.7, 0.7, 0.8),    # classification (class 1 object)
        Box(0, 0, 0.1, 0.6, 0.2, 0.68, 0.7),   # localization: right class, IoU ~0.27
        Box(0, 1, 0.12, 0.62, 0.2, 0.7, 0.6),  # both: wrong class, 0.1 <= IoU < 0.5
        Box(0, 1, 0.8, 0.0, 0.95, 0.1, 0.5),   # background
        Box(1, 1, 0.8, 0.0, 0.95, 0.1, 0.5),   # background on a defect-free image
        Box(0, 1, 0.8, 0.8, 0.9, 0.9, 0.1),    # below the confidence threshold: ignored
    ]
    totals, per_image = analyse_errors(g, p, [0, 1], conf=0.25)
    assert totals == {"tp": 1, "classification": 1, "localization": 1, "both": 1, "duplicate": 1, "background": 1,
                      "background_on_defect_free": 1, "missed": 2}
    assert per_image[0].missed == 2 and per_image[1].false_positives == 1


def test_why_each_object_was_missed_on_hand_made_cases():
    # image 0: a found scratch (class 0), a crack (1) boxed badly, a crack called a scratch, a pit (2) nobody saw;
    # image 1: two scratches on top of each other and one scratch detection, which can match only one of them;
    # image 2: a found scratch whose true positive also overlaps a crack beside it
    g = [Box(0, 0, 0.1, 0.1, 0.3, 0.3), Box(0, 1, 0.5, 0.5, 0.7, 0.7), Box(0, 1, 0.1, 0.6, 0.2, 0.9),
         Box(0, 2, 0.8, 0.8, 0.85, 0.85), Box(1, 0, 0.1, 0.1, 0.3, 0.3), Box(1, 0, 0.1, 0.1, 0.3, 0.32),
         Box(2, 0, 0.1, 0.1, 0.3, 0.3), Box(2, 1, 0.25, 0.1, 0.45, 0.3)]
    p = [Box(0, 0, 0.1, 0.1, 0.3, 0.3, 0.95),    # finds the scratch
         Box(0, 1, 0.5, 0.5, 0.7, 0.58, 0.9),    # the crack's box, IoU 0.4: mislocalised
         Box(0, 0, 0.1, 0.6, 0.2, 0.9, 0.8),     # the other crack, called a scratch: confused
         Box(0, 2, 0.8, 0.8, 0.85, 0.85, 0.1),   # the pit, but below the operating point: unseen
         Box(1, 0, 0.1, 0.1, 0.3, 0.3, 0.9),     # one detection, the first scratch's: the second is unseen
         Box(2, 0, 0.1, 0.1, 0.3, 0.3, 0.9)]     # the scratch's true positive overlaps the crack (IoU 0.14)
    _, per_image = analyse_errors(g, p, [0, 1, 2], conf=0.25)
    causes = miss_causes(per_image, {0: "scratch", 1: "crack", 2: "pit"})
    assert causes == {
        "scratch": {"objects": 4, "found": 3, "mislocalised": 0, "confused": 0, "unseen": 1, "confused_with": {}},
        "crack": {"objects": 3, "found": 0, "mislocalised": 1, "confused": 1, "unseen": 1,
                  "confused_with": {"scratch": 1}},
        "pit": {"objects": 1, "found": 0, "mislocalised": 0, "confused": 0, "unseen": 1, "confused_with": {}}}


def test_miss_rows_never_merge_two_classes():
    g = [Box(0, 0, 0.1, 0.1, 0.3, 0.3), Box(0, 1, 0.5, 0.5, 0.7, 0.7), Box(0, 5, 0.1, 0.6, 0.2, 0.9)]
    _, per_image = analyse_errors(g, [Box(0, 0, 0.5, 0.5, 0.7, 0.7, 0.9)], [0], conf=0.25)
    causes = miss_causes(per_image, {0: "5", 1: "5"})  # two classes named alike, and an id without a name
    assert causes == {
        "5 (0)": {"objects": 1, "found": 0, "mislocalised": 0, "confused": 0, "unseen": 1, "confused_with": {}},
        "5 (1)": {"objects": 1, "found": 0, "mislocalised": 0, "confused": 1, "unseen": 0,
                  "confused_with": {"5 (0)": 1}},
        "class (5)": {"objects": 1, "found": 0, "mislocalised": 0, "confused": 0, "unseen": 1, "confused_with": {}}}


def _naive_errors(gts, preds, images, conf):
    """Reference: one prediction at a time, plain Python IoU, the rules as the module docstring states them."""
    def iou(a, b):
        iw = max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0))
        ih = max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))
        union = (a.x1 - a.x0) * (a.y1 - a.y0) + (b.x1 - b.x0) * (b.y1 - b.y0) - iw * ih
        return iw * ih / union if union > 0 else 0.0

    totals = dict.fromkeys(["tp", "classification", "localization", "both", "duplicate", "background",
                            "background_on_defect_free", "missed"], 0)
    per_image = {}
    causes = {}
    for img in images:
        g = [b for b in gts if b.image == img]
        p = sorted([b for b in preds if b.image == img and b.score >= conf], key=lambda b: -b.score)
        matched, counts = set(), dict.fromkeys(totals, 0)
        kinds = []
        for pb in p:
            same = [iou(pb, gb) if gb.cls == pb.cls else 0.0 for gb in g]
            other = [iou(pb, gb) if gb.cls != pb.cls else 0.0 for gb in g]
            if not g:
                kind = "background_on_defect_free"
            elif max(same) >= 0.5:
                free = [(v, j) for j, v in enumerate(same) if j not in matched and v >= 0.5]
                if free:
                    matched.add(max(free, key=lambda t: (t[0], -t[1]))[1])
                    kind = "tp"
                else:
                    kind = "duplicate"
            elif max(other) >= 0.5:
                kind = "classification"
            elif max(same) >= 0.1:
                kind = "localization"
            elif max(max(same), max(other)) >= 0.1:
                kind = "both"
            else:
                kind = "background"
            counts[kind] += 1
            kinds.append(kind)
        counts["missed"] = len(g) - len(matched)
        spare = [pb for pb, kind in zip(p, kinds, strict=True) if kind != "tp"]
        for j, gb in enumerate(g):  # each object's outcome, as the module docstring states it
            row = causes.setdefault(gb.cls, {"found": 0, "mislocalised": 0, "confused": 0, "unseen": 0,
                                             "confused_with": {}})
            near = [iou(pb, gb) for pb in spare if pb.cls == gb.cls]
            other = [(iou(pb, gb), -k, pb.cls) for k, pb in enumerate(spare) if pb.cls != gb.cls]
            if j in matched:
                row["found"] += 1
            elif max(near, default=0) >= 0.1:
                row["mislocalised"] += 1
            elif max(other, default=(0,))[0] >= 0.1:
                row["confused"] += 1
                taken_for = max(other)[2]
                row["confused_with"][taken_for] = row["confused_with"].get(taken_for, 0) + 1
            else:
                row["unseen"] += 1
        per_image[img] = counts
        for k, v in counts.items():
            totals[k] += v
    return totals, per_image, causes


@pytest.mark.parametrize("seed", range(4))
def test_error_analysis_agrees_with_a_naive_reference(seed):
    gts, preds, sizes = _noisy_scene(seed)
    rng = np.random.default_rng(seed)
    for b in list(preds):  # duplicates and swapped classes
        if rng.random() < 0.3:
            preds.append(Box(b.image, b.cls, b.x0 + 0.002, b.y0, b.x1, b.y1, b.score * 0.9))
        if rng.random() < 0.2:
            preds.append(Box(b.image, (b.cls + 1) % 3, b.x0, b.y0, b.x1, b.y1 + 0.01, b.score * 0.8))
    totals, per_image = analyse_errors(gts, preds, list(sizes), conf=0.25)
    ref_totals, ref_per_image, ref_causes = _naive_errors(gts, preds, list(sizes), 0.25)
    assert totals == ref_totals
    causes = miss_causes(per_image, {c: str(c) for c in range(3)})
    assert {int(n): {**{k: v for k, v in row.items() if k != "objects"},
                     "confused_with": {int(t): k for t, k in row["confused_with"].items()}}
            for n, row in causes.items() if row["objects"]} == ref_causes
    assert sum(row["confused"] for row in causes.values()) > 0 and sum(row["mislocalised"] for row in causes.values())
    assert all(sum(row[k] for k in ("found", *MISS_CAUSES)) == row["objects"] for row in causes.values())
    json.dumps([{"tp": r.tp, **r.counts} for r in per_image.values()])  # plain ints: the report is JSON
    for img, counts in ref_per_image.items():
        assert per_image[img].tp == counts["tp"]
        assert {k: per_image[img].counts[k] for k in counts if k != "tp"} == {k: v for k, v in counts.items()
                                                                             if k != "tp"}


def _report(name="scratch"):
    return _clean({
        "schema_version": 1, "kind": "evaluation", "model": "runs/x/weights/best.pt", "data": "d.yaml", "split": "val",
        "images": 2, "defect_free_images": 0, "instances": 3, "class_names": {"0": name},
        "versions": {"gradkit": "0"}, "plugin_config": {"note": name}, "headline": {"mAP50": 0.5, "mAP50-95": 0.3,
                                                                                  "precision": 0.6, "recall": 0.4},
        "per_class": [{"class": 0, "name": name, "instances": 3, "images": 2, "precision": 0.6, "recall": 0.4,
                       "AP50": 0.5, "AP50-95": 0.3}],
        "classes_absent": [], "coco": {"metrics": {"AP": 0.3}, "note": "n"}, "size_buckets": {},
        "errors": {"conf_threshold": 0.25, "counts": {"missed": 1}, "worst_images": []},
        "confusion_matrix": None, "plots": {}, "training": None})


def test_user_strings_are_escaped_in_html_and_markdown():
    evil = "<script>alert(1)</script>"
    page = render_html(_report(evil))
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert evil not in render_markdown(_report(evil))


def test_miss_causes_are_shown_per_class_and_escaped():
    evil = "<b>crack</b>"
    r = _report(evil)
    r["errors"]["by_class"] = {evil: {"objects": 31, "found": 5, "mislocalised": 2, "confused": 3, "unseen": 21,
                                      "confused_with": {"<i>scratch</i>": 3}}}
    page, md = render_html(r), render_markdown(r)
    assert "Why objects were missed, per class" in page and "<b>crack" not in page and "<i>scratch" not in page
    section = page.split("Why objects were missed, per class", 1)[1]
    row = re.search(r"<tr><td[^>]*>&lt;b&gt;crack&lt;/b&gt;</td>(.*?)</tr>", section)
    assert row and re.findall(r"<td[^>]*>(.*?)</td>", row.group(1)) == ["31", "5", "2",
                                                                       "3 (as &lt;i&gt;scratch&lt;/i&gt; 3)", "21"]
    assert "| &lt;b&gt;crack&lt;/b&gt; | 31 | 5 | 2 | 3 (as &lt;i&gt;scratch&lt;/i&gt; 3) | 21 |" in md
    assert "Why objects were missed" not in render_html(_report())  # older reports have no such table


def test_html_is_self_contained():
    page = render_html(_report())
    assert "http://" not in page and "https://" not in page and "<link" not in page


def test_comparison_deltas_and_winner():
    a, b = _report(), _report()
    b["headline"]["mAP50"] = 0.7
    b["per_class"][0]["AP50-95"] = 0.1
    cmp_ = compare_reports([a, b], ["base", "new"])
    assert cmp_["headline"]["mAP50"]["delta_vs_first"] == [0.0, pytest.approx(0.2)]
    assert cmp_["headline"]["mAP50"]["best"] == "new"
    assert cmp_["per_class"]["scratch"]["best"] == "base"
    assert cmp_["headline"]["recall"]["best"] == "tie: base, new"
    assert "new" in render_html(cmp_) and "| mAP50 |" in render_markdown(cmp_)
    json.dumps(cmp_)
    with pytest.raises(ValueError, match="at least two"):
        compare_reports([a], ["a"])


def test_boxes_columns_round_trip_and_validation():
    from gradkit.report.coco import Boxes

    boxes = GT + [_pred(b, 0.5 + i / 10) for i, b in enumerate(GT)]
    table = Boxes.from_boxes(boxes)
    assert list(table) == boxes and len(table) == len(boxes)  # ground truth keeps score None
    assert list(table[table.image == 0]) == [b for b in boxes if b.image == 0]
    assert Boxes.from_boxes(table) is table
    with pytest.raises(ValueError, match="columns differ in length"):
        Boxes([0, 1], [0], [0.1], [0.1], [0.2], [0.2])
    gts, preds, sizes = _noisy_scene(2)  # the analyses give the same answers for columns and lists
    assert coco_metrics(Boxes.from_boxes(gts), Boxes.from_boxes(preds), list(sizes), [0, 1, 2]) == \
        coco_metrics(gts, preds, list(sizes), [0, 1, 2])
    assert analyse_errors(Boxes.from_boxes(gts), Boxes.from_boxes(preds), list(sizes))[0] == \
        analyse_errors(gts, preds, list(sizes))[0]


def test_pairwise_iou_equals_torchvision_box_iou():
    import torch
    from torchvision.ops import box_iou

    from gradkit.report.errors import pairwise_iou

    rng = np.random.default_rng(7)
    corners = rng.uniform(0, 100, (2, 40, 2, 2))
    a, b = (np.concatenate([c.min(1), c.max(1)], 1) for c in corners)  # x0,y0 <= x1,y1
    a[3, 2:] = a[3, :2]  # a degenerate (zero-area) box
    b[5] = a[7]  # an exact match
    ours = pairwise_iou(a, b)
    theirs = np.nan_to_num(box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy())
    assert np.allclose(ours, theirs, atol=1e-12) and ours[7, 5] == 1.0 and (ours > 0).sum() > 100
    empty = np.zeros((1, 4))
    assert pairwise_iou(empty, empty)[0, 0] == 0.0  # empty union: no overlap, not NaN
