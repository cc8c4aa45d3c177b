"""The AP intervals over resamples of the images, against the binomial distribution they must follow on hand-made
validations whose AP is a known function of how many found objects a draw holds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from gradkit.integrations.ultralytics.seams import average_precision
from gradkit.report.intervals import MIN_DRAWS, MIN_IMAGES, ap_intervals, ap_resamples


def _image(found: bool, cls: int = 0, conf: float = 0.9, hits: int = 10) -> dict[str, np.ndarray]:
    """One image with one object of ``cls``: a detection hitting it at the first ``hits`` IoU thresholds (all ten:
    IoU 0.95 or more; 5: between 0.70 and 0.75), or none."""
    return {"tp": np.array([[k < hits for k in range(10)]]) if found else np.zeros((0, 10), bool),
            "conf": np.array([conf] if found else []), "pred_cls": np.array([float(cls)] if found else []),
            "target_cls": np.array([float(cls)])}


def _recall(tp, conf, pred_cls, target_cls):
    """An AP function that is the share of objects found at each IoU threshold: what the intervals resample is
    then binomial."""
    classes = np.unique(target_cls).astype(int)
    found = [tp[pred_cls == c].sum(0) / (target_cls == c).sum() for c in classes]
    return classes, np.array(found).reshape(-1, 10)


def test_a_class_s_interval_is_the_binomial_spread_of_the_objects_found_in_a_draw():
    images, found = 60, 21
    stats = [_image(i < found) for i in range(images)]
    out = ap_intervals(stats, _recall, 4000, seed=3)
    low, high = binom.ppf([0.025, 0.975], images, found / images) / images  # a draw finds Binomial(n, k/n) of n
    assert out["AP50"][0] == pytest.approx([low, high], abs=1 / images + 1e-9)
    assert out["mAP50"] == out["AP50"][0] == out["mAP50-95"]  # one class, hit at every threshold
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


def test_mAP50_95_averages_the_ten_thresholds_and_AP50_takes_the_first():
    """Half the objects are hit up to IoU 0.70 (5 thresholds of 10), the rest at all ten: with AP as the share
    found, a draw's AP50 is 1 and its AP50-95 the mean of 1 (for 0.5-0.7) and the share hit at all ten."""
    images = 80
    stats = [_image(True, hits=5 if i % 2 else 10) for i in range(images)]
    out = ap_intervals(stats, _recall, 2000, seed=1)
    assert out["mAP50"] == out["AP50"][0] == [1.0, 1.0]
    low, high = binom.ppf([0.025, 0.975], images, 0.5) / images  # the share hit at all ten
    assert out["mAP50-95"] == pytest.approx([(5 + 5 * low) / 10, (5 + 5 * high) / 10], abs=0.5 / images + 1e-9)


def test_a_draw_s_mean_is_over_the_split_s_classes():
    """A rare class (5 images, found in none) is in most draws and not in a few: a draw's mAP50 is the mean over the
    split's classes, as the validator's is, and a draw lacking one has none (its mean would be another quantity)."""
    seen = []

    def recording(tp, conf, pred_cls, target_cls):
        classes, ap = _recall(tp, conf, pred_cls, target_cls)
        seen.append(float(ap[:, 0].mean()))
        return classes, ap

    stats = [_image(True)] * 30 + [_image(False, cls=1)] * MIN_IMAGES
    drawn = ap_resamples(stats, recording, 1000, seed=2)
    holds_rare = ~np.isnan(drawn["AP50"][1])
    assert 0.98 < holds_rare.mean() < 1  # (30/35)^35, about 1 in 220 draws, lacks it
    np.testing.assert_allclose(drawn["mAP50"][holds_rare], np.array(seen)[holds_rare])
    np.testing.assert_allclose(drawn["mAP50"][holds_rare], 0.5)  # class 0 all found, class 1 none
    assert np.isnan(drawn["mAP50"][~holds_rare]).all()
    out = ap_intervals(stats, _recall, 1000, seed=2)
    assert out["AP50"][1] == [0.0, 0.0] and out["mAP50"] == [0.5, 0.5]  # a few draws without it: kept
    few = [_image(True)] * 30 + [_image(False, cls=1)] * 2  # a class of 2 images: 1 draw in 7 lacks it
    assert ap_intervals(few, _recall, 300)["mAP50"] is None


def test_identical_images_leave_no_spread_and_the_draw_is_seeded():
    stats = [_image(True), _image(False)] * 10  # a draw of pairs would have spread: these are 20 images
    same = [_image(True)] * 12
    low, high = ap_intervals(same, average_precision, 100)["AP50"][0]
    assert low == high
    assert ap_intervals(stats, _recall, 100, seed=1) == ap_intervals(stats, _recall, 100, seed=1)
    assert ap_intervals(stats, _recall, 100, seed=1) != ap_intervals(stats, _recall, 100, seed=2)


def test_a_class_in_too_few_images_has_no_interval_and_nothing_to_resample_gives_none():
    rare = [_image(True, cls=1)] * (MIN_IMAGES - 1)
    enough = [_image(i % 2 == 0, cls=2) for i in range(MIN_IMAGES)]
    out = ap_intervals([_image(True)] * 20 + rare + enough, _recall, 200)
    assert set(out["AP50"]) == {0, 2}
    assert ap_intervals([], _recall, 200) is None
    assert ap_intervals([_image(True)] * 20, _recall, 0) is None
    assert ap_intervals([_image(True)] * 20, _recall, MIN_DRAWS - 1) is None  # too few draws to read 95% from


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
    from gradkit.report import build_report, write_report
    from report_cases import hand_made_evaluation

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
    assert f"none (in 4 images: under {MIN_IMAGES})" in paths["md"].read_text(encoding="utf-8")
    ev.image_stats = None  # predictions read from the validator's json: no intervals, no column
    paths = write_report(build_report(ev), tmp_path / "none")
    assert "95%" not in paths["md"].read_text(encoding="utf-8")


def test_two_validations_of_the_same_images_are_drawn_alike_so_their_difference_is_paired():
    """B misses one object A finds: draw by draw, A's share found exceeds B's exactly when that image is drawn,
    which a draw of n from n misses with probability (1 - 1/n)^n."""
    images = 40
    a = [_image(i % 2 == 0) for i in range(images)]
    b = [_image(False), *a[1:]]
    da, db = ap_resamples(a, _recall, 3000, seed=5), ap_resamples(b, _recall, 3000, seed=5)
    diff = da["AP50"][0] - db["AP50"][0]
    assert (diff >= -1e-12).all()
    assert (diff < 1e-12).mean() == pytest.approx((1 - 1 / images) ** images, abs=0.03)


def test_a_comparison_of_two_runs_on_the_same_images_pairs_their_draws(tmp_path):
    """Oracle: the paired interval computed here from the two reports' draws. B finds one more scratch than A in
    a third of the images: every draw holding such an image favours B, so the pair is told apart, while each run's
    interval holds the other's value. Runs drawn on other images, or with another seed, are not paired."""
    import copy

    from gradkit.report import build_report
    from gradkit.report.compare import compare_reports
    from gradkit.report.schema import validate_report
    from report_cases import hand_made_evaluation

    def evaluation(found_every: int):
        ev = hand_made_evaluation(tmp_path / "data")
        ev.images = list(range(30))
        ev.files = {i: ev.files[i % 6].replace("img", f"img{i}_") for i in range(30)}
        ev.sizes = dict.fromkeys(range(30), (80, 60))
        ev.image_stats = [_image(i % found_every == 0, conf=0.5 + i / 100) for i in range(30)]
        ev.image_counts = {0: 30, 1: 0}
        return ev

    a, b = build_report(evaluation(2), resamples=400), build_report(evaluation(1), resamples=400)
    validate_report(a)
    paired = compare_reports([a, b], ["A", "B"])["paired"]
    da, db = (np.array(r["intervals"]["draws"]["AP50"]["scratch"], float) for r in (a, b))
    want = np.percentile(db - da, [2.5, 97.5])  # every draw holds the scratch (it is on every image)
    row = next(x for x in paired[0]["rows"] if x["score"] == "AP50 scratch")
    np.testing.assert_allclose(row["interval"], want, atol=2e-6)  # draws are kept to 6 decimals
    assert want[0] > 0 and row["told_apart"]
    assert a["per_class"][0]["AP50_interval"][1] > b["per_class"][0]["AP50"]  # side by side they would overlap
    assert row["delta"] == pytest.approx(b["per_class"][0]["AP50"] - a["per_class"][0]["AP50"], abs=1e-6)
    fewer = build_report(evaluation(1), resamples=200)  # the first 200 of b's 400 draws, drawn alike
    row_fewer = next(x for x in compare_reports([a, fewer], ["A", "B"])["paired"][0]["rows"]
                     if x["score"] == "AP50 scratch")
    df = np.array(fewer["intervals"]["draws"]["AP50"]["scratch"], float)
    np.testing.assert_allclose(df, db[:200])
    np.testing.assert_allclose(row_fewer["interval"], np.percentile(df - da[:200], [2.5, 97.5]), atol=2e-6)
    other_seed = copy.deepcopy(b)
    other_seed["intervals"]["seed"] = 1
    relabelled = evaluation(1)
    relabelled.gts = [g._replace(x1=g.x1 - 0.01) for g in relabelled.gts]  # the same files, other labels
    reordered = evaluation(1)
    reordered.files = {i: reordered.files[29 - i] for i in range(30)}
    drawn_elsewhere = [build_report(e, resamples=400) for e in (relabelled, reordered)]
    assert len({r["intervals"]["images_digest"] for r in (a, b, *drawn_elsewhere)}) == 3  # a, b: the same images
    unpaired = compare_reports([a, other_seed, *drawn_elsewhere], ["A", "B", "C", "D"])["paired"]
    assert [(p["rows"], p["why"]) for p in unpaired] == [
        ([], "their draws were seeded differently"),
        ([], "they were scored on other images (or other labels, or in another order)"),
        ([], "they were scored on other images (or other labels, or in another order)")]
    old = copy.deepcopy(b)
    old.pop("intervals")
    assert compare_reports([a, old], ["A", "B"])["paired"][0]["why"].startswith("a report has no draws kept")


def test_report_json_s_intervals_are_checked_as_untrusted_input(tmp_path):
    import copy

    from gradkit.report import build_report
    from gradkit.report.schema import ReportSchemaError, validate_report
    from report_cases import hand_made_evaluation

    ev = hand_made_evaluation(tmp_path / "data")
    ev.image_stats = ev.image_stats * 2
    ev.images, ev.image_counts = list(range(12)), {0: 8, 1: 0}
    ev.files.update({i: ev.files[i % 6] for i in range(6, 12)})
    ev.sizes.update(dict.fromkeys(range(6, 12), (80, 60)))
    good = build_report(ev, resamples=100)
    validate_report(good)
    for edit in (lambda r: r["intervals"].update(level=0.9), lambda r: r["intervals"].update(mAP50=[0.5, 0.4]),
                 lambda r: r["intervals"].pop("mAP50"), lambda r: r["intervals"].update(resamples=0),
                 lambda r: r["intervals"]["draws"]["mAP50"].pop(),
                 lambda r: r["intervals"]["draws"]["AP50"]["scratch"].pop(),
                 lambda r: r["intervals"]["draws"]["mAP50"].__setitem__(0, float("nan")),
                 lambda r: r["intervals"].pop("images_digest"),
                 lambda r: r["per_class"][0].update(AP50_interval=[0.2, 1.5])):
        bad = copy.deepcopy(good)
        edit(bad)
        with pytest.raises(ReportSchemaError):
            validate_report(bad)


def test_report_resamples_is_none_or_enough_to_read_an_interval_from():
    from gradkit.config import ConfigError, load_config

    assert load_config(None, {"report.resamples": 0}).report.resamples == 0
    assert load_config(None, {"report.resamples": MIN_DRAWS}).report.resamples == MIN_DRAWS
    with pytest.raises(ConfigError, match=r"report\.resamples"):
        load_config(None, {"report.resamples": MIN_DRAWS - 1})


def test_scoring_only_iou_0_5_gives_the_same_ap50_draws_as_all_ten_thresholds():
    """The report scores draws at IoU 0.5 only (a tenth of the work): its mAP50 and AP50 draws are those of the
    full scoring, by Ultralytics' own AP, on images of several detections and labels."""
    rng = np.random.default_rng(4)
    stats = []
    for _ in range(40):
        n, m = int(rng.integers(0, 6)), int(rng.integers(0, 3))
        stats.append({"tp": np.sort(rng.random((n, 10)) < 0.6, axis=1)[:, ::-1], "conf": rng.random(n),
                      "pred_cls": rng.integers(0, 2, n).astype(float),
                      "target_cls": rng.integers(0, 2, m).astype(float)})
    full = ap_resamples(stats, average_precision, 150, seed=3)
    fast = ap_resamples(stats, average_precision, 150, seed=3, iou50_only=True)
    assert "mAP50-95" in full and "mAP50-95" not in fast
    np.testing.assert_allclose(fast["mAP50"], full["mAP50"], atol=1e-12)
    for c in full["AP50"]:
        np.testing.assert_allclose(fast["AP50"][c], full["AP50"][c], atol=1e-12)
