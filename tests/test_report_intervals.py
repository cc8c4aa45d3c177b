"""The AP intervals over resamples of the images, against the binomial distribution they must follow on hand-made
validations whose AP is a known function of how many found objects a draw holds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from gradkit.integrations.ultralytics.seams import average_precision
from gradkit.report.intervals import MIN_IMAGES, ap_intervals


def _image(found: bool, cls: int = 0, conf: float = 0.9) -> dict[str, np.ndarray]:
    """One image with one object of ``cls``: a detection hitting it at every IoU threshold, or none."""
    return {"tp": np.ones((1, 10), bool) if found else np.zeros((0, 10), bool),
            "conf": np.array([conf] if found else []), "pred_cls": np.array([float(cls)] if found else []),
            "target_cls": np.array([float(cls)])}


def _recall(tp, conf, pred_cls, target_cls):
    """An AP function that is the share of objects found: what the intervals resample is then binomial."""
    classes = np.unique(target_cls).astype(int)
    found = [tp[pred_cls == c, 0].sum() / (target_cls == c).sum() for c in classes]
    return classes, np.repeat(np.array(found)[:, None], 10, 1)


def test_a_class_s_interval_is_the_binomial_spread_of_the_objects_found_in_a_draw():
    images, found = 60, 21
    stats = [_image(i < found) for i in range(images)]
    out = ap_intervals(stats, _recall, 4000, seed=3)
    low, high = binom.ppf([0.025, 0.975], images, found / images) / images  # a draw finds Binomial(n, k/n) of n
    assert out["AP50"][0] == pytest.approx([low, high], abs=1 / images + 1e-9)
    assert out["mAP50"] == out["AP50"][0] == out["mAP50-95"]  # one class, and every threshold alike
    assert (out["resamples"], out["level"], out["seed"]) == (4000, 0.95, 3)


def test_ultralytics_ap_gives_the_same_interval_through_its_own_curve():
    """Ultralytics' AP of a validation whose detections are all right is a rising function of the share found, so
    the interval's ends are that function at the binomial's quantiles (one more or one less object found)."""
    images, found = 50, 30
    stats = [_image(i < found) for i in range(images)]
    out = ap_intervals(stats, average_precision, 2000, seed=0)

    def ap_with(share_found: float) -> float:
        k = round(share_found * images)
        return float(average_precision(*_concat([_image(i < k) for i in range(images)]))[1][0, 0])

    low, high = binom.ppf([0.025, 0.975], images, found / images) / images
    assert ap_with(low - 1 / images) <= out["AP50"][0][0] <= ap_with(low + 1 / images)
    assert ap_with(high - 1 / images) <= out["AP50"][0][1] <= ap_with(high + 1 / images)
    whole = float(average_precision(*_concat(stats))[1][0, 0])
    assert out["AP50"][0][0] < whole < out["AP50"][0][1]


def _concat(stats):
    return [np.concatenate([s[k] for s in stats]) for k in ("tp", "conf", "pred_cls", "target_cls")]


def test_identical_images_leave_no_spread_and_the_draw_is_seeded():
    stats = [_image(True), _image(False)] * 10  # a draw of pairs would have spread: these are 20 images
    same = [_image(True)] * 12
    assert ap_intervals(same, average_precision, 50)["AP50"][0][0] == ap_intervals(same, average_precision, 50)[
        "AP50"][0][1]
    assert ap_intervals(stats, _recall, 100, seed=1) == ap_intervals(stats, _recall, 100, seed=1)
    assert ap_intervals(stats, _recall, 100, seed=1) != ap_intervals(stats, _recall, 100, seed=2)


def test_a_class_in_too_few_images_has_no_interval_and_nothing_to_resample_gives_none():
    rare = [_image(True, cls=1)] * (MIN_IMAGES - 1)
    enough = [_image(i % 2 == 0, cls=2) for i in range(MIN_IMAGES)]
    out = ap_intervals([_image(True)] * 20 + rare + enough, _recall, 200)
    assert set(out["AP50"]) == {0, 2}
    assert ap_intervals([], _recall, 200) is None
    assert ap_intervals([_image(True)] * 20, _recall, 0) is None


def test_a_resample_is_the_images_drawn_each_with_all_its_own_rows():
    """Images of several detections and objects: each draw's rows are whole images (a row of another image, or a
    part of one, would change the counts the AP function sees)."""
    rng = np.random.default_rng(0)
    stats = []
    for i in range(15):
        n_pred, n_obj = int(rng.integers(0, 4)), int(rng.integers(1, 3))
        stats.append({"tp": np.full((n_pred, 10), i % 3 == 0), "conf": np.full(n_pred, i / 15),
                      "pred_cls": np.zeros(n_pred), "target_cls": np.full(n_obj, float(i))})  # class = image
    seen = []

    def record(tp, conf, pred_cls, target_cls):
        for c in np.unique(target_cls):
            i = int(c)
            copies = int((target_cls == c).sum()) // len(stats[i]["target_cls"])
            assert (target_cls == c).sum() == copies * len(stats[i]["target_cls"])
            assert (conf == i / 15).sum() == copies * len(stats[i]["conf"])  # its predictions, as often as it
        seen.append(len(np.unique(target_cls)))
        return _recall(tp, conf, pred_cls, np.zeros_like(target_cls))

    ap_intervals(stats, record, 30)
    assert len(seen) == 30 and max(seen) > 1


def test_the_report_pages_show_the_intervals_of_report_json(tmp_path):
    """Each interval the pages print is report.json's, to the digits shown; a class in too few images says so."""
    from report_cases import hand_made_evaluation

    from gradkit.report import build_report, write_report

    ev = hand_made_evaluation(tmp_path / "data")
    ev.images = list(range(12))
    ev.files.update({i: ev.files[i % 6] for i in range(6, 12)})
    ev.sizes.update(dict.fromkeys(range(6, 12), (80, 60)))
    ev.image_stats = ev.image_stats * 2  # twelve images: the scratch in eight
    ev.image_counts = {0: 8, 1: 0}
    report = build_report(ev, resamples=300)
    paths = write_report(report, tmp_path / "run")
    row = report["per_class"][0]
    low, high = row["AP50_interval"]
    assert 0 <= low < high <= 1
    shown = f"{low:.3f}–{high:.3f}"
    page, md = paths["html"].read_text(encoding="utf-8"), paths["md"].read_text(encoding="utf-8")
    assert shown in page and shown in md
    m = report["intervals"]["mAP50"]
    assert f"95%: {m[0]:.3f}–{m[1]:.3f}" in page and f"(95%: {m[0]:.3f}–{m[1]:.3f})" in md
    assert "over 300 draws of these images" in page and "over 300 draws of these images" in md

    ev.image_stats, ev.images = ev.image_stats[:6], ev.images[:6]
    ev.image_counts = {0: 4, 1: 0}
    few = build_report(ev, resamples=300)
    assert few["per_class"][0]["AP50_interval"] is None and few["intervals"] is not None
    paths = write_report(few, tmp_path / "few")
    assert f"none (under {MIN_IMAGES} images)" in paths["md"].read_text(encoding="utf-8")
    ev.image_stats = None  # predictions read from the validator's json: no intervals, no column
    paths = write_report(build_report(ev), tmp_path / "none")
    assert "95%" not in paths["md"].read_text(encoding="utf-8")


def test_two_validations_of_the_same_images_are_drawn_alike_so_their_difference_is_paired():
    """B misses one object A finds: draw by draw, A's share found exceeds B's exactly when that image is drawn,
    which a draw of n from n misses with probability (1 - 1/n)^n."""
    from gradkit.report.intervals import ap_resamples

    images = 40
    a = [_image(i % 2 == 0) for i in range(images)]
    b = [_image(False)] + a[1:]
    da, db = ap_resamples(a, _recall, 3000, seed=5), ap_resamples(b, _recall, 3000, seed=5)
    diff = da["AP50"][0] - db["AP50"][0]
    assert (diff >= -1e-12).all()
    assert (diff < 1e-12).mean() == pytest.approx((1 - 1 / images) ** images, abs=0.03)


def test_a_comparison_says_which_scores_its_images_do_not_tell_apart(tmp_path):
    """Hand-set intervals: scores each inside the other's interval are named; scores apart, or a report without
    intervals (schema 14), are not."""
    import copy

    from report_cases import hand_made_evaluation

    from gradkit.report import build_report
    from gradkit.report.compare import compare_reports

    a = build_report(hand_made_evaluation(tmp_path / "data"), resamples=0)
    a["headline"].update({"mAP50": 0.40, "mAP50-95": 0.20})
    a["intervals"] = {"mAP50": [0.30, 0.50], "mAP50-95": [0.15, 0.25], "resamples": 200, "level": 0.95, "seed": 0}
    a["per_class"][0].update({"AP50": 0.40, "AP50_interval": [0.30, 0.50]})
    b = copy.deepcopy(a)
    b["headline"].update({"mAP50": 0.45, "mAP50-95": 0.30})  # mAP50 close; mAP50-95 outside a's interval
    b["intervals"].update({"mAP50": [0.35, 0.55], "mAP50-95": [0.18, 0.40]})  # a's 0.20 inside b's: one-sided
    b["per_class"][0].update({"AP50": 0.48, "AP50_interval": [0.38, 0.58]})
    notes = [w for w in compare_reports([a, b], ["A", "B"])["warnings"] if "inside each other" in w]
    assert notes == ["B against A: mAP50, AP50 scratch lie inside each other's 95% interval over their images, so "
                     "these images do not tell the two apart there (README: How far the AP would move on other "
                     "parts)."]
    old = copy.deepcopy(b)
    old["intervals"] = None
    old["per_class"][0].pop("AP50_interval")
    assert not [w for w in compare_reports([a, old], ["A", "B"])["warnings"] if "inside each other" in w]
