"""Augmentation: box safety against masks, serialisation round trips, config errors, copy-paste."""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import pytest

from gradkit.augment import PRESETS, DefectBank, bbox_params, build_transforms, paste_defects
from gradkit.config import AugmentConfig, ConfigError, load_config


def _scene(rng: np.random.Generator, n: int = 128, thin: bool = True, diagonal: bool = True):
    """An image, one mask per object and its tight YOLO box."""
    img = rng.integers(60, 200, (n, n, 3), dtype=np.uint8)
    masks = []
    m = np.zeros((n, n), np.uint8)
    cv2.ellipse(m, (40, 50), (12, 8), 0, 0, 360, 1, -1)
    masks.append(m)
    m = np.zeros((n, n), np.uint8)
    cv2.rectangle(m, (70, 20), (100, 45), 1, -1)
    masks.append(m)
    if thin:  # long thin horizontal scratch: aspect ~30
        m = np.zeros((n, n), np.uint8)
        cv2.line(m, (15, 100), (110, 100), 1, 3)
        masks.append(m)
    if diagonal:
        m = np.zeros((n, n), np.uint8)
        cv2.line(m, (20, 20), (60, 80), 1, 2)
        masks.append(m)
    return img, masks, [_mask_box(mk) for mk in masks]


def _mask_box(m: np.ndarray):
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return None
    h, w = m.shape
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)


def _iou(a, b):
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _run(transforms, img, masks, boxes, seed):
    aug = AugmentConfig()
    compose = A.Compose(transforms, bbox_params=bbox_params(aug), seed=seed)
    out = compose(image=img, masks=masks, bboxes=np.array(boxes), class_labels=list(range(len(boxes))))
    return out, {int(i): b for i, b in zip(out["class_labels"], out["bboxes"], strict=True)}


EXACT = [A.HorizontalFlip(p=1), A.VerticalFlip(p=1), A.D4(p=1), A.RandomRotate90(p=1), A.Transpose(p=1)]


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("transform", EXACT, ids=lambda t: type(t).__name__)
def test_flips_and_d4_boxes_equal_mask_boxes(transform, seed):
    img, masks, boxes = _scene(np.random.default_rng(seed))
    photometric = [t for t in build_transforms(AugmentConfig(preset="defect")) if isinstance(t, A.ImageOnlyTransform)]
    out, got = _run([transform, *photometric], img, masks, boxes, seed)
    assert len(got) == len(boxes)
    for i, m in enumerate(out["masks"]):
        np.testing.assert_allclose(got[i], _mask_box(np.asarray(m)), atol=1.01 / 128)


@pytest.mark.parametrize("seed", range(10))
def test_rotations_and_affine_boxes_match_masks(seed):
    img, masks, boxes = _scene(np.random.default_rng(seed), diagonal=False)
    # defect.yaml's `degrees: 4` (Ultralytics' warp also takes the enclosing box of the rotated corners)
    small_rotation = A.Rotate(limit=(-4, 4), border_mode=4, rotate_method="largest_box", p=1.0)
    for transform in (small_rotation, A.Affine(rotate=(-4, 4), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05),
                                              rotate_method="largest_box", p=1.0)):
        out, got = _run([transform], img, masks, boxes, seed)
        for i, m in enumerate(out["masks"]):
            ref = _mask_box(np.asarray(m))
            if ref is None:
                continue
            assert i in got, f"visible object {i} dropped by {type(transform).__name__}"
            assert _iou(got[i], ref) >= 0.85, (type(transform).__name__, i, got[i], ref)


@pytest.mark.parametrize("seed", range(20))
def test_crops_keep_thin_defects_while_visible_and_empty_crops_are_clean(seed):
    img, masks, boxes = _scene(np.random.default_rng(seed))
    out, got = _run([A.RandomCrop(64, 64, p=1)], img, masks, boxes, seed)
    for i, m in enumerate(out["masks"]):
        m = np.asarray(m)
        visible_share = m.sum() / max(masks[i].sum(), 1)
        if visible_share >= 0.15 and _mask_box(m) is not None:
            ref = _mask_box(m)
            if ref[2] * 64 >= 1 and ref[3] * 64 >= 1 and ref[2] * ref[3] * 64 * 64 >= 4:
                assert i in got, (i, visible_share)
                # a crop clips the box: it must still contain every visible pixel of the object
                g, r = got[i], ref
                tol = 1.01 / 64
                assert g[0] - g[2] / 2 <= r[0] - r[2] / 2 + tol and g[0] + g[2] / 2 >= r[0] + r[2] / 2 - tol
                assert g[1] - g[3] / 2 <= r[1] - r[3] / 2 + tol and g[1] + g[3] / 2 >= r[1] + r[3] / 2 - tol
        if i in got:
            assert m.sum() > 0  # no stale box without pixels


PRESET_ENTRIES = PRESETS["defect"]


@pytest.mark.parametrize("entry", PRESET_ENTRIES, ids=lambda e: e["__class_fullname__"])
def test_serialisation_round_trip_gives_identical_output(entry, tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    forced = {**entry, "p": 1.0}
    original = A.Compose([A.from_dict({"transform": forced})], seed=7)
    via_dict = A.from_dict(A.to_dict(original))
    path = tmp_path / "t.yaml"
    A.save(original, str(path), data_format="yaml")
    via_yaml = A.load(str(path), data_format="yaml")
    a = original(image=img)["image"]
    via_dict.set_random_seed(7)
    via_yaml.set_random_seed(7)
    assert np.array_equal(a, via_dict(image=img)["image"])
    assert np.array_equal(a, via_yaml(image=img)["image"])
    cfg = load_config(None, {"augment.transforms": str(path)})
    assert [type(t).__name__ for t in build_transforms(cfg)] == [entry["__class_fullname__"]]


@pytest.mark.parametrize(("overrides", "fragments"), [
    ({"augment.transforms": [{"__class_fullname__": "GaussNoize"}]},
     ["augment.transforms[0]", "unknown Albumentations transform 'GaussNoize'", "did you mean 'GaussNoise'"]),
    ({"augment.transforms": [{"__class_fullname__": "GaussNoise", "std_range": [0.5, 0.1]}]},
     ["augment.transforms[0]", "GaussNoise cannot be built", "First value should be less"]),
    ({"augment.transforms": [{"__class_fullname__": "Blur"}, "Blur"]},
     ["augment.transforms[1]", "__class_fullname__"]),
    ({"augment.transforms": "/nonexistent/aug.yaml"}, ["file not found: /nonexistent/aug.yaml"]),
    ({"augment.ultralytics": {"hsv_q": 0.1}}, ["augment.ultralytics", "hsv_q", "allowed"]),
    ({"augment.ultralytics": {"flipud": 2.0}}, ["augment.ultralytics", "flipud"]),
    ({"augment.copy_paste.rare_first": True, "augment.copy_paste.class_weights": [1, 1, 1, 1]},
     ["augment.copy_paste", "either class_weights or rare_first"]),
    ({"augment.preset": "steel"}, ["augment.preset", "'none', 'defect', 'defect-sensor' or 'auto'"]),
])
def test_augment_config_errors_are_specific(overrides, fragments):
    from gradkit.augment.checks import check_augment_config

    with pytest.raises(ConfigError) as info:  # schema errors at loading, transform errors where it is used
        check_augment_config(load_config(None, overrides), None, overrides)
    for f in fragments:
        assert f in str(info.value)


def _bank(rng, weights=None, rare_first=False):
    imgs = []
    boxes, classes = [], []
    for i in range(6):
        img = np.full((100, 100, 3), 120, np.uint8)
        img[40:60, 30:70] = 20 + 10 * i  # a dark defect
        imgs.append(img)
        boxes.append(np.array([[0.3, 0.4, 0.7, 0.6]]))
        classes.append(np.array([[0, 1, 2, 2, 2, 2][i]]))
    return DefectBank(boxes, classes, lambda j: imgs[j], 3, weights, rare_first)


def test_pasted_boxes_lie_on_the_pasted_pixels():
    rng = random.Random(0)
    bank = _bank(rng)
    for trial in range(20):
        dst = np.full((160, 160, 3), 130, np.uint8)
        existing = np.array([[10, 10, 40, 30]], np.float32)
        out, boxes, cls = paste_defects(dst, existing, np.array([1.0]), bank, rng, max_per_image=3, margin=4)
        assert len(boxes) == len(cls) >= 2
        changed = np.abs(out.astype(int) - dst.astype(int)).max(-1) > 0
        allowed = np.zeros_like(changed)
        for x0, y0, x1, y1 in boxes[1:].astype(int):
            allowed[max(0, y0 - 4):y1 + 4, max(0, x0 - 4):x1 + 4] = True
            assert changed[y0:y1, x0:x1].mean() > 0.5, trial  # the box is on pasted pixels
            assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 160
        assert not (changed & ~allowed).any()  # nothing changed outside the pasted boxes (+ margin)
        assert np.array_equal(out[10:30, 10:40], dst[10:30, 10:40])  # existing defect not covered


def test_class_weights_and_rare_first_shift_pasted_classes():
    rng = random.Random(1)
    only2 = _bank(rng, weights=[0, 0, 1])
    pasted = []
    for _ in range(30):
        _, _, cls = paste_defects(np.full((200, 200, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), only2, rng)
        pasted += cls.tolist()
    assert pasted and set(pasted) == {2}
    rare = _bank(rng, rare_first=True)  # class 2 has 4 instances, 0 and 1 one each: weights 1/count
    assert rare.weights[2] < rare.weights[0] == rare.weights[1]


def test_crop_cache_reads_each_source_once_and_changes_nothing():
    """Oracle: the same pastes from a bank without a cache (which reads the source every time)."""
    cached, uncached = _bank(random.Random(2)), _bank(random.Random(2))
    uncached.cache_bytes = 0
    reads: list[int] = []
    load = cached.load_image
    cached.load_image = lambda j: reads.append(j) or load(j)
    for trial in range(40):
        dst = np.full((160, 160, 3), 120 + trial % 7, np.uint8)
        a = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), cached, random.Random(trial), max_per_image=3)
        b = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), uncached, random.Random(trial), max_per_image=3)
        for x, y in zip(a, b, strict=True):
            assert np.array_equal(x, y)
    assert len(reads) == len(set(reads)) <= 6  # each of the 6 source images decoded once
    tiny = _bank(random.Random(2))
    tiny.cache_bytes = 5500  # room for one 48x28 crop and its mask of other defects: least recently used go first
    for trial in range(10):
        paste_defects(np.full((160, 160, 3), 120, np.uint8), np.zeros((0, 4)), np.zeros(0), tiny,
                      random.Random(trial))
        held = sum(c.nbytes + o.nbytes for c, _, o in tiny._crops.values())
        assert 0 < tiny._cached_bytes <= 5500 and held == tiny._cached_bytes


def _line_crop(amplitude: float, texture: float, seed: int, margin: int = 4) -> tuple[np.ndarray, tuple, np.ndarray]:
    """A 40x40 box holding a 1 px diagonal line of ``amplitude`` gray levels on a texture of standard
    deviation ``texture``, with ``margin`` pixels of the same texture around it; and the line's mask."""
    rng = np.random.default_rng(seed)
    n = 40 + 2 * margin
    crop = 120 + rng.normal(0, texture, (n, n))
    line = np.zeros((n, n))
    idx = np.arange(margin, n - margin)
    line[idx, idx] = 1.0
    crop = np.clip(crop + amplitude * line, 0, 255)
    return np.repeat(crop[..., None], 3, -1).astype(np.float32), (margin, margin, n - margin, n - margin), line


def _share_on(signal: np.ndarray, shape: np.ndarray) -> float:
    """Oracle: the share of a transferred signal's energy explained by the defect's own shape."""
    return float((signal * shape).sum()) ** 2 / float((shape**2).sum()) / float((signal**2).sum())


def test_defect_share_tells_a_transferable_defect_from_pasted_texture():
    """The gate's estimate against an oracle that knows the line, over 20 random textures: a strong line
    on a plain background is what the blend transfers and always passes the default gate; a box of
    texture alone, or a line no stronger than the texture around it, transfers mostly texture and is
    refused in most draws (the estimate comes from one crop's ring, so it is noisy: hence rates)."""
    from gradkit.augment.copy_paste import _blend, defect_share
    from gradkit.config import CopyPasteConfig

    gate = CopyPasteConfig().min_defect_share
    cases = {"strong line, plain": (80.0, 2.0), "texture only": (0.0, 30.0), "line as strong as texture": (30.0, 30.0),
             "line 4x the texture": (120.0, 30.0)}
    passed, truth = {k: [] for k in cases}, {k: [] for k in cases}
    for seed in range(20):
        for name, (amplitude, texture) in cases.items():
            crop, inner, line = _line_crop(amplitude, texture, seed)
            passed[name].append(defect_share(crop, inner, 4) >= gate)
            signal = _blend(np.full_like(crop, 128.0), crop, inner, 4)[..., 0].astype(np.float64) - 128.0
            truth[name].append(_share_on(signal, line) if amplitude else 0.0)
    assert min(truth["strong line, plain"]) > 0.9 and all(passed["strong line, plain"])
    assert max(truth["line as strong as texture"]) < 0.1 and np.mean(passed["line as strong as texture"]) <= 0.1
    assert np.mean(passed["texture only"]) <= 0.1
    assert np.median(truth["line 4x the texture"]) > 0.6 and np.mean(passed["line 4x the texture"]) >= 0.9


def _textured_and_plain_bank(**kw):
    """Three lines as strong as their texture (class 0) and three strong lines on plain gray (class 1)."""
    imgs = [_line_crop(30.0, 30.0, seed)[0].astype(np.uint8) for seed in range(3)]
    imgs += [_line_crop(80.0, 2.0, seed)[0].astype(np.uint8) for seed in range(3)]
    n = imgs[0].shape[0]
    box = np.array([[4 / n, 4 / n, (n - 4) / n, (n - 4) / n]])
    return DefectBank([box] * 6, [np.array([0])] * 3 + [np.array([1])] * 3, lambda j: imgs[j], 2, **kw)


def test_untransferable_defects_are_screened_out_of_the_bank():
    bank = _textured_and_plain_bank()
    assert bank.screen(0.5, 4) == {0: (0, 3), 1: (3, 0)}
    assert bank.by_class[0] == [] and bank.weights.tolist() == [0.0, 1.0]
    rng = random.Random(0)
    pasted = []
    for _ in range(40):
        pasted += paste_defects(np.full((160, 160, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank, rng,
                                max_per_image=2)[2].tolist()
    assert pasted and set(pasted) == {1}  # only the lines the blend can carry
    unscreened, kept = _textured_and_plain_bank(), []
    for _ in range(40):  # min_defect_share 0 skips the screening: everything is pasted, as before the gate
        kept += paste_defects(np.full((160, 160, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), unscreened,
                              rng, max_per_image=2)[2].tolist()
    assert set(kept) == {0, 1}


def test_screening_reweighs_classes_by_what_remains():
    """rare_first weighs a class by 1 / its instances: after the screening, by those left."""
    imgs = [_line_crop(30.0, 30.0, s)[0].astype(np.uint8) for s in range(2)]  # class 0: refused
    imgs += [_line_crop(80.0, 2.0, s)[0].astype(np.uint8) for s in range(5)]  # class 0: 2 kept; class 1: 3
    n = imgs[0].shape[0]
    box = np.array([[4 / n, 4 / n, (n - 4) / n, (n - 4) / n]])
    classes = [np.array([c]) for c in (0, 0, 0, 0, 1, 1, 1)]
    bank = DefectBank([box] * 7, classes, lambda j: imgs[j], 2, rare_first=True)
    assert bank.weights.tolist() == pytest.approx([3 / 7, 4 / 7])  # 1/4 : 1/3 before
    assert bank.screen(0.5, 4) == {0: (2, 2), 1: (3, 0)}
    assert bank.weights.tolist() == pytest.approx([3 / 5, 2 / 5])  # 1/2 : 1/3 after


def test_other_defects_in_the_ring_are_not_taken_for_background():
    """A bright neighbouring defect inside the margin would make the ring look like strong texture."""
    from gradkit.augment.copy_paste import defect_share

    crop, inner, _ = _line_crop(80.0, 2.0, 0, margin=8)
    crop[2:6, 2:30] = 250.0  # another labelled defect, inside the margin
    others = np.zeros(crop.shape[:2], bool)
    others[2:6, 2:30] = True
    assert defect_share(crop, inner, 8) < 0.5  # taken for background, the line would be refused
    assert defect_share(crop, inner, 8, others) > 0.95


def test_screening_masks_the_image_s_other_defects_out_of_the_ring():
    """Two defects of one image, 4 px apart: each lies in the other's margin and must not count as its
    background (else a strong line next to a bright blob would be refused)."""
    img = np.full((64, 64, 3), 120, np.uint8)
    img[np.arange(10, 40), np.arange(10, 40)] = 200  # a strong diagonal line: box 10..40
    img[44:50, 10:40] = 250  # a bright bar: box 44..50, inside the line's 8 px margin
    boxes = np.array([[10, 10, 40, 40], [10, 44, 40, 50]]) / 64
    bank = DefectBank([boxes], [np.array([0, 1])], lambda j: img, 2)
    assert bank.screen(0.5, 8) == {0: (1, 0), 1: (1, 0)}


def test_auto_is_resolved_from_the_data_before_its_transforms_are_built():
    from gradkit.augment import build_transforms
    from gradkit.augment.checks import check_augment_config
    from gradkit.augment.pipeline import AugmentError
    from gradkit.config import load_config

    cfg = load_config("defect")
    assert cfg.augment.preset == "auto"   # the defect preset file adapts its transform list to the data
    check_augment_config(cfg)             # validating it builds the largest list auto can choose: no error
    bad = load_config("defect", {"augment.transforms": [{"__class_fullname__": "GaussNoize"}]})
    with pytest.raises(ConfigError, match="GaussNoise"):
        check_augment_config(bad)         # the user's own transforms are still checked before training
    with pytest.raises(AugmentError, match="resolve_auto_preset"):
        build_transforms(cfg)             # training never builds an unresolved auto


def test_auto_measures_the_folder_and_names_the_trainer_resolved(tmp_path):
    import yaml

    from conftest import standout_set
    from gradkit.integrations.ultralytics.augment import resolve_auto_augment

    rng = np.random.default_rng(0)
    plain = standout_set(tmp_path / "plain", rng, "plain")
    textured = standout_set(tmp_path / "textured", rng, "textured").parent / "images" / "train"
    nc_only = tmp_path / "nc.yaml"  # Ultralytics accepts nc without names; its dict then holds the names
    nc_only.write_text(yaml.safe_dump({"path": str(tmp_path / "plain"), "train": "images/train", "nc": 2}))
    auto = load_config("defect").augment
    names = {0: "scratch", 1: "pit"}
    cases = ((plain, textured, "none"),                                 # the trainer's folder, not the YAML's
             (textured.parents[1] / "data.yaml", textured, "none"),
             (nc_only, plain.parent / "images" / "train", "defect"))        # names from the trainer's dict
    for yaml_file, train, used in cases:
        aug, choice = resolve_auto_augment(auto, {"train": str(train), "yaml_file": str(yaml_file), "names": names},
                                           str(yaml_file))
        assert aug.preset == choice["used"] == used and choice["configured"] == "auto", (yaml_file, train)
        assert "stand out" in choice["reason"] and aug.copy_paste == auto.copy_paste
    # a list of places is measured whole, as the trainer reads it
    aug, choice = resolve_auto_augment(auto, {"train": [str(textured)], "names": names}, str(plain))
    assert aug.preset == "none" and "stand out" in choice["reason"]
    # a split that cannot be measured: the largest list, and the reason says why
    aug, choice = resolve_auto_augment(auto, {"train": [str(textured), str(textured / "gone")], "names": names},
                                       str(plain))
    assert aug.preset == "defect" and "could not be measured" in choice["reason"]
    assert "gone does not exist" in choice["reason"]
    # a resumed run keeps its choice (nothing measured: the data is gone); a crafted one is not trusted
    aug, choice = resolve_auto_augment(auto, {}, "gone.yaml", kept={"used": "none", "reason": "r"})
    assert aug.preset == "none" and choice["reason"] == "kept from the start of the run: r"
    aug, _ = resolve_auto_augment(auto, {"train": str(textured), "names": names}, str(plain),
                                  kept={"used": "defect-sensor", "reason": "crafted"})
    assert aug.preset == "none"
    # any other preset is left alone, with no choice to report
    assert resolve_auto_augment(load_config(None, {"augment.preset": "defect"}).augment, {}, "x.yaml")[1] is None


def test_faded_pastes_carry_the_drawn_share_of_the_defect_s_contrast():
    """On a flat destination a paste adds the source defect's deviation from its background (100 - 120 grey
    levels: the bank's defects are 20-70 on 120); with ``contrast`` (lo, hi) each paste carries k of it, k drawn
    in [lo, hi]: the peak deviation of each faded paste over the same paste at full strength (the same rng
    stream, so the same defect at the same place) lies in [lo, hi], and (1, 1) draws nothing (the stream of a run
    without the option is unchanged)."""
    dst = np.full((160, 160, 3), 130, np.uint8)
    ratios = []
    for seed in range(12):
        full, b_full, _ = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), _bank(None), random.Random(seed),
                                        max_per_image=1)
        faded, b_faded, _ = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), _bank(None), random.Random(seed),
                                          max_per_image=1, contrast=(0.3, 0.6))
        assert np.array_equal(b_full, b_faded)  # same defect, same place
        peak = np.abs(full.astype(int) - 130).max()
        ratios.append(np.abs(faded.astype(int) - 130).max() / peak)
    assert min(ratios) >= 0.3 - 0.02 and max(ratios) <= 0.6 + 0.02 and max(ratios) - min(ratios) > 0.1
    same = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), _bank(None), random.Random(5), contrast=(1.0, 1.0))
    plain = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), _bank(None), random.Random(5))
    assert all(np.array_equal(a, b) for a, b in zip(same, plain, strict=True))


def test_copy_paste_contrast_is_validated():
    for bad in ([0.0, 1.0], [0.6, 0.3], [0.5, 1.2], [0.5]):
        with pytest.raises(ConfigError, match="contrast"):
            load_config("defect", {"augment.copy_paste.contrast": bad})
    assert load_config("defect", {"augment.copy_paste.contrast": [0.3, 1.0]}).augment.copy_paste.contrast == (0.3, 1.0)


def test_a_paste_never_carries_another_labelled_defect_without_its_box():
    """A pit labelled in the empty corner of a diagonal scratch's box: pasting the scratch carried the pit's pixels
    at full contrast with the scratch's box only, so the pit was taught as background. Known answer: the pasted
    region shows the scratch's line and no pixel of the pit."""
    src = np.full((100, 100, 3), 128, np.uint8)
    for k in range(60):
        src[20 + k, 20 + k] = 30                          # a 1 px diagonal scratch, box 20..80
    src[25:30, 65:70] = 20                                # a pit in the scratch box's empty corner
    boxes = np.array([[0.2, 0.2, 0.8, 0.8], [0.65, 0.25, 0.70, 0.30]])
    bank = DefectBank([boxes], [np.array([0, 1])], lambda i: src, nc=2, class_weights=[1, 0])  # the scratch only
    dst = np.full((200, 200, 3), 128, np.uint8)
    out, b, c = paste_defects(dst, np.zeros((0, 4)), np.zeros(0), bank, random.Random(0), max_per_image=1, margin=4)
    assert c.tolist() == [0]
    x0, y0 = (int(v) for v in b[0][:2])
    pasted = out[y0:y0 + 60, x0:x0 + 60, 0].astype(int)
    line = pasted[np.arange(60), np.arange(60)]
    assert (line < 100).mean() > 0.9                        # the scratch is there
    assert np.abs(pasted[5:10, 45:50] - 128).max() <= 2      # the pit is not: the destination shows there


def test_copy_paste_margin_of_zero_is_refused():
    """Without a ring of background a defect is measured against itself: a tight 2 px line was pasted as a box
    with nothing in it (its darkest pixel the destination's)."""
    with pytest.raises(ConfigError, match=r"copy_paste\.margin"):
        load_config("default", {"augment.copy_paste.margin": 0})
    assert load_config("default", {"augment.copy_paste.margin": 1}).augment.copy_paste.margin == 1


def test_a_defect_at_its_source_s_edge_is_pasted_as_the_same_defect_inside_its_source():
    """The crop of a defect on its source's top row has no background above it, and the feather faded the defect
    itself towards that edge: a 1 px line of 30 on 128 came out at 121, still with a full box. Oracle: the same
    line pasted from the middle of its source, same stream."""
    def pasted_line(row: int) -> np.ndarray:
        src = np.full((100, 100, 3), 128, np.uint8)
        src[row, 20:80] = 30
        bank = DefectBank([np.array([[0.2, row / 100, 0.8, row / 100 + 0.01]])], [np.array([0])], lambda i: src,
                          nc=1)
        out, b, _ = paste_defects(np.full((200, 200, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank,
                                  random.Random(0), max_per_image=1, margin=4)
        x0, y0, x1, _ = (int(v) for v in b[0])
        return out[y0, x0 + 5:x1 - 5, 0].astype(int)   # the line, away from its own ends' feather

    edge, middle = pasted_line(0), pasted_line(50)
    assert middle.max() < 100 and np.array_equal(edge, middle), (edge, middle)


def test_box_filter_settings_alone_turn_gradkit_s_augmentation_on():
    """``augment.bbox`` alone (min_visibility 0.9) left gradkit's augmentation off, so Ultralytics' own box filter
    stayed and the setting did nothing, while the warning about dropped thin boxes said "any augment key"."""
    assert not load_config("default").augment.active
    assert load_config("default", {"augment.bbox.min_visibility": 0.9}).augment.active


def test_ultralytics_fractions_are_refused_out_of_range_as_ultralytics_refuses_them():
    """``augment.ultralytics.translate: 5`` was accepted and set past Ultralytics' own check ("between 0.0 and
    1.0"). Oracle: Ultralytics' CFG_FRACTION_KEYS."""
    from ultralytics.cfg import CFG_FRACTION_KEYS

    from gradkit.config import ULTRALYTICS_AUGMENT_FRACTIONS, ULTRALYTICS_AUGMENT_KEYS

    assert set(ULTRALYTICS_AUGMENT_FRACTIONS) == set(CFG_FRACTION_KEYS) & set(ULTRALYTICS_AUGMENT_KEYS)
    for key in ULTRALYTICS_AUGMENT_FRACTIONS:
        with pytest.raises(ConfigError, match=key):
            load_config("default", {f"augment.ultralytics.{key}": 5})
    assert load_config("default", {"augment.ultralytics.degrees": 45}).augment.ultralytics["degrees"] == 45


def test_copy_paste_settings_made_with_p_zero_are_named_as_doing_nothing():
    cfg = load_config("default", {"augment.copy_paste.rare_first": True, "augment.copy_paste.max_per_image": 5})
    assert cfg.augment.copy_paste.p == 0 and cfg.augment.copy_paste.idle() == ["max_per_image", "rare_first"]
    assert load_config("default", {"augment.copy_paste.p": 0.3,
                                   "augment.copy_paste.rare_first": True}).augment.copy_paste.idle() == []
    assert load_config("default").augment.copy_paste.idle() == []


def test_a_transforms_file_named_relative_to_its_config_file_is_found_from_any_folder(tmp_path, monkeypatch):
    """``augment.transforms: t.yaml`` in configs/gk.yaml was looked up from the working folder: "file not found"
    when training from elsewhere. A relative path is read beside the config file that names it."""
    from gradkit.augment.checks import check_augment_config

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "t.yaml").write_text("- __class_fullname__: HorizontalFlip\n  p: 0.5\n")
    (configs / "gk.yaml").write_text("augment:\n  preset: defect\n  transforms: t.yaml\n")
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(str(configs / "gk.yaml"))
    assert cfg.augment.transforms == str(configs / "t.yaml")
    check_augment_config(cfg, str(configs / "gk.yaml"))


@pytest.mark.parametrize(("width", "kept"), [(1, 0.50), (2, 0.76), (3, 1.0)])
def test_a_thin_line_is_pasted_at_the_contrast_the_blend_s_blur_leaves(width, kept):
    """The blend's weight is blurred (3x3): a 1 px line keeps half its contrast, a 2 px one three quarters, a wider
    one all of it. Known answer from the kernel; README says so, and why it stays (session 52's pair)."""
    src = np.full((100, 100, 3), 128, np.uint8)
    src[50:50 + width, 20:80] = 30
    bank = DefectBank([np.array([[0.2, 0.5, 0.8, (50 + width) / 100]])], [np.array([0])], lambda i: src, nc=1)
    out, b, _ = paste_defects(np.full((200, 200, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank,
                              random.Random(0), max_per_image=1, margin=4)
    x0, y0, x1, y1 = (int(v) for v in b[0])
    assert (128 - out[y0:y1, x0 + 10:x1 - 10, 0].min()) / 98 == pytest.approx(kept, abs=0.02)


def test_a_defect_inside_another_labelled_box_is_pasted_not_blanked():
    """A bright spot labelled inside a labelled stain: the mask of the source's other defects covered the spot's own
    box too, so its paste was blank and still labelled. Known answer: the spot as pasted alone."""
    src = np.full((200, 200, 3), 120, np.uint8)
    src[60:140, 60:140] = 100
    cv2.circle(src, (100, 100), 5, (250, 250, 250), -1)
    stain, spot = (0.3, 0.3, 0.7, 0.7), (0.47, 0.47, 0.53, 0.53)

    def pasted(boxes, classes):
        bank = DefectBank([np.array(boxes, np.float32)], [np.array(classes)], lambda i: src, 2, class_weights=[0, 1])
        out, b, _ = paste_defects(np.full((300, 300, 3), 120, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0),
                                  bank, random.Random(1), max_per_image=1)
        x0, y0, x1, y1 = b[0].astype(int)
        return np.abs(out[y0:y1, x0:x1].astype(int) - 120).max()

    assert pasted([stain, spot], [0, 1]) >= 0.9 * pasted([spot], [1]) > 100


@pytest.mark.parametrize(("margin", "scale"), [(4, 0.1), (1, 0.4)])
def test_a_margin_scaled_below_a_pixel_still_leaves_a_ring(margin, scale):
    """A source ten times the training size scales a 4 px margin to 0: the defect was measured against itself and
    pasted nearly empty (mean deviation 2.9 of 90). Known answer: the dark square, pasted."""
    src = np.full((2000, 2000, 3), 120, np.uint8)
    src[800:1100, 800:1100] = 30
    bank = DefectBank([np.array([(0.4, 0.4, 0.55, 0.55)], np.float32)], [np.array([0])], lambda i: src, 1)
    out, b, _ = paste_defects(np.full((640, 640, 3), 120, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0), bank,
                              random.Random(0), 1, margin, scale=scale)
    x0, y0, x1, y1 = b[0].astype(int)
    assert np.abs(out[y0:y1, x0:x1].astype(int) - 120).mean() > 60


def test_a_thin_other_defect_stays_masked_when_the_crop_is_shrunk():
    """Nearest-neighbour shrinking dropped a 2 px scratch from the mask of other defects at some rows while the
    crop's linear shrink kept it: pasted without its box. Known answer: no pixel of it in the paste, at any row."""
    for row in range(244, 254):
        src = np.full((400, 400, 3), 128, np.uint8)
        for k in range(200):
            src[100 + k, 100 + k] = 20               # the defect pasted: a diagonal line, box 100..300
        src[row:row + 2, 110:180] = 250              # another labelled defect, a thin scratch, in its box's corner
        boxes = np.array([[0.25, 0.25, 0.75, 0.75], [0.275, row / 400, 0.45, (row + 2) / 400]], np.float32)
        bank = DefectBank([boxes], [np.array([0, 1])], lambda i, s=src: s, 2, class_weights=[1, 0])
        out, _, _ = paste_defects(np.full((300, 300, 3), 128, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0),
                                  bank, random.Random(0), max_per_image=1, margin=8, scale=0.3)
        assert out.max() < 140, row  # nothing brighter than the destination: the scratch was not carried


def _chiral_crop(rng: np.random.Generator):
    """A textured crop holding an L-shaped defect (no symmetry of the square maps it onto itself), its mask of
    another defect, and the L's tight box (xyxy, pixel edges)."""
    crop = rng.integers(100, 140, (23, 31, 3)).astype(np.uint8)
    crop[5:17, 8:10] = 20  # the L's stem
    crop[15:17, 8:20] = 20  # its foot
    others = np.zeros((23, 31), bool)
    others[1:3, 25:29] = True
    return crop, others, (8, 5, 20, 17)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_turned_paste_keeps_its_defect_in_its_box_under_each_symmetry():
    """Oracle: OpenCV's rotations and flips give the eight images; the box is the tight box of the turned L's own
    pixels, found anew in each."""
    from gradkit.augment.copy_paste import turn_crop

    crop, others, inner = _chiral_crop(np.random.default_rng(0))
    rotations = (None, cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180, cv2.ROTATE_90_CLOCKWISE)
    seen = []
    for turn in range(8):
        turned, turned_others, box = turn_crop(crop, others, inner, turn)
        rotation = rotations[turn % 4]
        expected = crop if rotation is None else cv2.rotate(crop, rotation)
        expected_others = others if rotation is None else cv2.rotate(others.astype(np.uint8), rotation).astype(bool)
        if turn >= 4:
            expected, expected_others = cv2.flip(expected, 1), cv2.flip(expected_others.astype(np.uint8), 1) > 0
        assert np.array_equal(turned, expected) and np.array_equal(turned_others, expected_others), turn
        assert box == _tight_box(turned[..., 0] == 20), turn
        seen.append(turned.tobytes())
    assert len(set(seen)) == 8  # eight different headings of the L


def _l_source_bank(row0: int = 30):
    """One source: a dark L (2 px strokes, no symmetry of the square maps it onto itself) on a flat image."""
    src = np.full((100, 100, 3), 128, np.uint8)
    src[row0:row0 + 30, 40:42] = 30
    src[row0 + 28:row0 + 30, 40:60] = 30
    box = np.array([[0.40, row0 / 100, 0.60, (row0 + 30) / 100]])
    return DefectBank([box], [np.array([0])], lambda i: src, nc=1), src[row0:row0 + 30, 40:60, 0] < 80


def test_d4_pastes_each_defect_in_all_eight_headings_with_tight_boxes():
    """The L as the only source: with ``d4`` its pastes show every one of its eight headings (oracle: numpy's
    rotations and mirror of the source's own L), each box the tight box of the pixels the paste darkened; without
    it every paste shows the L as drawn."""
    bank, l_mask = _l_source_bank()
    headings = [np.rot90(l_mask, k) for k in range(4)]
    headings += [h[:, ::-1] for h in headings]
    for d4, expected in ((True, set(range(8))), (False, {0})):
        rng, seen = random.Random(3), set()
        for _ in range(60):
            out, boxes, _ = paste_defects(np.full((200, 200, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank,
                                          rng, max_per_image=1, margin=4, d4=d4)
            (x0, y0, x1, y1), = boxes.astype(int)
            dark = out[..., 0] < 80
            assert _tight_box(dark) == (x0, y0, x1, y1)
            seen |= {i for i, h in enumerate(headings) if h.shape == (y1 - y0, x1 - x0)
                     and np.array_equal(dark[y0:y1, x0:x1], h)}
        assert seen == expected, (d4, seen)


def test_d4_turns_a_shrunk_paste_from_its_source_s_edge_with_a_tight_box():
    """A defect on its source's top row (no ring above it), shrunk 0.5x and turned: each box is still the tight box
    of what the paste darkened, whichever side the short ring went to."""
    bank, _ = _l_source_bank(row0=0)
    rng, sizes = random.Random(4), set()
    for _ in range(30):
        out, boxes, _ = paste_defects(np.full((160, 160, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank,
                                      rng, max_per_image=1, margin=4, scale=0.5, d4=True)
        (x0, y0, x1, y1), = boxes.astype(int)
        assert _tight_box(out[..., 0] < 110) == (x0, y0, x1, y1)
        sizes.add((x1 - x0, y1 - y0))
    assert sizes == {(10, 15), (15, 10)}  # the 20 x 30 L at half size, upright and on its side


def test_without_d4_the_pastes_are_those_the_code_made_before_the_option():
    """Oracle: boxes, classes and pixel sums recorded with the code before ``d4`` existed (commit 358caa7), a
    shrunk and faded paste stream; the option draws nothing from the stream when it is off."""
    rng_img = np.random.default_rng(7)
    imgs, boxes, classes = [], [], []
    for i in range(4):
        img = rng_img.integers(110, 150, (90, 120, 3)).astype(np.uint8)
        img[20 + 5 * i:23 + 5 * i, 10:90] = 30  # a line
        img[60:70, 50 + i * 10:58 + i * 10] = 200  # a spot
        imgs.append(img)
        boxes.append(np.array([[10 / 120, (20 + 5 * i) / 90, 90 / 120, (23 + 5 * i) / 90],
                               [(50 + i * 10) / 120, 60 / 90, (58 + i * 10) / 120, 70 / 90]]))
        classes.append(np.array([0, 1]))
    bank, rng = DefectBank(boxes, classes, lambda j: imgs[j], 2), random.Random(11)
    made = []
    for _ in range(6):
        out, bx, cl = paste_defects(np.full((160, 160, 3), 128, np.uint8), np.zeros((0, 4)), np.zeros(0), bank, rng,
                                    max_per_image=3, margin=4, scale=0.8, contrast=(0.3, 1.0))
        made.append((bx.astype(int).tolist(), cl.astype(int).tolist(), int(out.astype(np.int64).sum())))
    assert made == [
        ([[118, 133, 125, 141], [83, 50, 147, 53]], [1, 0], 9823921),
        ([[79, 104, 143, 107], [6, 138, 13, 146]], [0, 1], 9793576),
        ([[79, 10, 143, 13]], [0], 9795440),
        ([[69, 62, 133, 65], [61, 74, 125, 77]], [0, 0], 9775235),
        ([[68, 83, 75, 91], [20, 147, 27, 155], [52, 20, 116, 23]], [1, 1, 0], 9806721),
        ([[9, 123, 73, 126], [21, 147, 28, 155], [89, 25, 96, 33]], [0, 1, 1], 9819246)]


def test_copy_paste_d4_is_a_config_key_off_by_default():
    assert load_config("default").augment.copy_paste.d4 is False
    assert load_config("default", {"augment.copy_paste.d4": True}).augment.copy_paste.d4 is True
    with pytest.raises(ConfigError, match=r"copy_paste\.d4"):
        load_config("default", {"augment.copy_paste.d4": "sideways"})
