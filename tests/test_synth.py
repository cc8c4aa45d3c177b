"""The synthetic dataset: determinism, valid tight boxes, classes and the defect-free share."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest
import yaml

from gradkit.synth import CLASS_NAMES, SynthSpec, generate_dataset, render_image


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in {".png", ".txt"}:
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    spec = SynthSpec(images=12, imgsz=96, seed=7)
    a = generate_dataset(tmp_path / "a", spec, progress=False).parent
    b = generate_dataset(tmp_path / "b", spec, progress=False).parent
    c = generate_dataset(tmp_path / "c", SynthSpec(images=12, imgsz=96, seed=8), progress=False).parent
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_layout_and_data_yaml(tmp_path):
    data = yaml.safe_load(generate_dataset(tmp_path / "d", SynthSpec(images=20, imgsz=64), progress=False)
                          .read_text())
    assert data["names"] == dict(enumerate(CLASS_NAMES))
    root = tmp_path / "d"
    assert data["path"] == str(root.resolve())
    counts = {s: len(list((root / "images" / s).glob("*.png"))) for s in ("train", "val", "test")}
    assert counts == {"train": 14, "val": 4, "test": 2}
    for s in counts:
        assert len(list((root / "labels" / s).glob("*.txt"))) == counts[s]


def test_labels_are_valid_boxes_inside_the_image():
    """Labels are valid YOLO boxes, at least 2 px, inside the image; images are grayscale."""
    spec = SynthSpec(images=200, imgsz=128, seed=1, empty_frac=0.0, max_defects=1)
    clean = SynthSpec(images=200, imgsz=128, seed=1, empty_frac=0.999999, max_defects=1)
    checked = 0
    for i in range(30):
        img, labels = render_image(spec, i)
        for cls, x, y, w, h in labels:
            assert 0 <= cls < len(CLASS_NAMES)
            assert 0 < w <= 1 and 0 < h <= 1
            assert x - w / 2 >= 0 and x + w / 2 <= 1 + 1e-6 and y - h / 2 >= 0 and y + h / 2 <= 1 + 1e-6
            assert w * 128 >= 2 and h * 128 >= 2
            checked += 1
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()  # grayscale
    assert checked >= 30
    assert render_image(clean, 0)[1] == []


def test_box_matches_defect_pixels_on_a_flat_surface(monkeypatch):
    """Render on a flat surface without noise: the changed pixels' bounding box is the label."""
    import gradkit.synth as synth

    monkeypatch.setattr(synth, "_surface", lambda rng, kind, n: np.full((n, n), 0.5, np.float32))
    monkeypatch.setattr(synth, "_illumination", lambda rng, n: np.ones((n, n), np.float32))
    monkeypatch.setattr(synth, "_sensor_noise", lambda rng, n: np.zeros((n, n), np.float32))
    spec = SynthSpec(images=100, imgsz=128, seed=4, empty_frac=0.0, max_defects=1)
    for i in range(20):
        img, labels = render_image(spec, i)
        (cls, x, y, w, h), = labels
        diff = np.abs(img[..., 0].astype(int) - 127) > 0.25 * 0.15 * 255  # visible part of the defect
        ys, xs = np.nonzero(diff)
        x0, x1 = xs.min() / 128, (xs.max() + 1) / 128
        y0, y1 = ys.min() / 128, (ys.max() + 1) / 128
        assert abs((x - w / 2) - x0) <= 2 / 128 and abs((x + w / 2) - x1) <= 2 / 128, (cls, i)
        assert abs((y - h / 2) - y0) <= 2 / 128 and abs((y + h / 2) - y1) <= 2 / 128, (cls, i)


def test_classes_empty_share_thin_and_tiny_defects():
    spec = SynthSpec(images=300, imgsz=160, seed=2, empty_frac=0.2)
    per_class = np.zeros(len(CLASS_NAMES), int)
    empty, thin, tiny = 0, 0, 0
    for i in range(300):
        _, labels = render_image(spec, i)
        empty += not labels
        for cls, _, _, w, h in labels:
            per_class[cls] += 1
            thin += max(w / h, h / w) > 5
            tiny += w * h < 0.001
    assert (per_class > 20).all(), per_class
    assert 0.12 < empty / 300 < 0.28, empty
    assert thin > 5 and tiny > 5, (thin, tiny)


def test_class_weights_shift_frequencies():
    spec = SynthSpec(images=200, imgsz=96, seed=2, empty_frac=0.0, class_weights=(1, 0, 0, 3))
    counts = np.zeros(4, int)
    for i in range(200):
        for cls, *_ in render_image(spec, i)[1]:
            counts[cls] += 1
    assert counts[1] == counts[2] == 0
    assert counts[3] > 2 * counts[0] > 0


def _render_digest(spec):
    h = hashlib.sha256()
    for i in range(spec.images):
        img, labels = render_image(spec, i)
        h.update(img.tobytes())
        h.update(repr(labels).encode())
    return h.hexdigest()


def test_the_faint_stream_leaves_the_rest_of_the_image_alone():
    """At a ``faint_frac`` so small that the faint generator is drawn from but never fades a defect, every image and
    label is the one at 0: the option's random numbers do not shift the renderer's own (so the sets made before
    the option, at 0, are unchanged); at 0.5 the images change."""
    base = _render_digest(SynthSpec(images=40, imgsz=96, seed=11))
    assert _render_digest(SynthSpec(images=40, imgsz=96, seed=11, faint_frac=1e-12)) == base
    assert _render_digest(SynthSpec(images=40, imgsz=96, seed=11, faint_frac=0.5)) != base


def _flat_render(monkeypatch):
    """``render_image`` on a flat 0.5 surface without illumination or noise: what changes is the defect."""
    import gradkit.synth as synth

    monkeypatch.setattr(synth, "_surface", lambda rng, kind, n: np.full((n, n), 0.5, np.float32))
    monkeypatch.setattr(synth, "_illumination", lambda rng, n: np.ones((n, n), np.float32))
    monkeypatch.setattr(synth, "_sensor_noise", lambda rng, n: np.zeros((n, n), np.float32))
    return synth.render_image


def test_faint_defects_keep_their_labels_at_a_fraction_of_their_contrast(monkeypatch):
    """On a flat surface the peak deviation of a defect is its strength: a faint one's is ``FAINT_SCALE``
    times the same defect's at ``faint_frac=0``; the labels do not move; about ``faint_frac`` of them fade."""
    from gradkit.synth import FAINT_SCALE

    render = _flat_render(monkeypatch)
    for faint_frac in (1.0, 0.5):
        clear = SynthSpec(images=400, imgsz=128, seed=4, empty_frac=0.0, max_defects=1)
        faint = SynthSpec(images=400, imgsz=128, seed=4, empty_frac=0.0, max_defects=1, faint_frac=faint_frac)
        ratios = []
        for i in range(120):
            (img0, labels0), (img1, labels1) = render(clear, i), render(faint, i)
            assert labels1 == labels0, i
            peak0 = np.abs(img0[..., 0].astype(float) - 127.5).max()
            ratios.append(np.abs(img1[..., 0].astype(float) - 127.5).max() / peak0)
        ratios = np.asarray(ratios)
        faded = ratios < 0.99
        lo, hi = FAINT_SCALE
        assert ((ratios[faded] > lo - 0.03) & (ratios[faded] < hi + 0.03)).all(), ratios[faded]
        assert np.allclose(ratios[~faded], 1.0, atol=0.01)
        expected = 120 * faint_frac
        assert abs(faded.sum() - expected) <= 4 * np.sqrt(120 * faint_frac * (1 - faint_frac)) + 1e-9, faded.sum()


def test_faint_defects_stand_out_less_by_the_fingerprints_measure(tmp_path):
    """The plan's own measure of how much defects stand out from their texture (an independent computation
    on the written files) falls when defects are drawn faint."""
    from gradkit.data.fingerprint import fingerprint_dataset

    share = {ff: fingerprint_dataset(generate_dataset(tmp_path / str(ff), SynthSpec(images=80, imgsz=128, seed=3,
                                                                                    faint_frac=ff),
                                                      progress=False)).standout_share for ff in (0.0, 1.0)}
    assert share[0.0] > 0.9
    assert share[1.0] < share[0.0] - 0.25, share


def test_the_look_stream_leaves_the_rest_of_the_image_alone():
    """``relief_frac`` and ``colour_frac`` draw from a stream of their own: so small that it is drawn from but never
    changes a defect or an image, every image and label is the one at 0 (sets made before them are unchanged)."""
    base = _render_digest(SynthSpec(images=40, imgsz=96, seed=11, faint_frac=0.3))
    tiny = SynthSpec(images=40, imgsz=96, seed=11, faint_frac=0.3, relief_frac=1e-12, colour_frac=1e-12)
    assert _render_digest(tiny) == base
    for look in (dict(relief_frac=0.5), dict(colour_frac=0.5)):
        assert _render_digest(SynthSpec(images=40, imgsz=96, seed=11, faint_frac=0.3, **look)) != base


def _deviation(img):
    """Each pixel's change from the flat 0.5 surface of ``_flat_render``, per channel, in grey levels."""
    return img.astype(float) - 127.5


def test_a_relief_shows_a_lit_and_a_shaded_flank_inside_its_box(monkeypatch):
    """On a flat surface a stroke changes the brightness one way; the same class drawn as a relief under a side
    light has a bright and a dark flank of comparable size, and the box (the label) holds every pixel the defect
    changed by a quarter of its peak or more (the oracle: the image itself). Stains are never drawn as reliefs."""
    render = _flat_render(monkeypatch)
    for cls in range(4):
        weights = tuple(float(c == cls) for c in range(4))
        spec = SynthSpec(images=60, imgsz=128, seed=5, empty_frac=0.0, max_defects=1, class_weights=weights,
                         relief_frac=1.0)
        two_sided = 0
        for i in range(20):
            img, labels = render(spec, i)
            dev = _deviation(img[..., 0])
            peak = np.abs(dev).max()
            two_sided += dev.max() > 0.4 * peak and dev.min() < -0.4 * peak
            ys, xs = np.nonzero(np.abs(dev) >= 0.25 * peak + 1)
            (_, xc, yc, w, h), = labels
            x0, x1, y0, y1 = (xc - w / 2) * 128, (xc + w / 2) * 128, (yc - h / 2) * 128, (yc + h / 2) * 128
            assert xs.min() >= x0 - 0.5 and xs.max() + 1 <= x1 + 0.5, (cls, i)
            assert ys.min() >= y0 - 0.5 and ys.max() + 1 <= y1 + 0.5, (cls, i)
        if cls == 3:
            assert two_sided == 0
        else:
            assert two_sided >= 18, (cls, two_sided)


def test_colour_tints_the_surface_and_each_stroke_but_leaves_the_labels(monkeypatch):
    """At ``colour_frac=1`` the surface's channels are the grey surface times gains in ``SURFACE_GAIN``, not all
    equal; a stroke's or stain's change in each channel is the grey defect's change times a tint of its own in
    ``DEFECT_TINT`` (not the surface's gain), not the same in every channel; the labels are the grey set's."""
    from gradkit.synth import DEFECT_TINT, SURFACE_GAIN

    render = _flat_render(monkeypatch)
    grey = SynthSpec(images=60, imgsz=128, seed=6, empty_frac=0.0, max_defects=1, class_weights=(1, 0, 1, 1))
    colour = SynthSpec(images=60, imgsz=128, seed=6, empty_frac=0.0, max_defects=1, class_weights=(1, 0, 1, 1),
                       colour_frac=1.0)
    tints = []
    for i in range(30):
        (img0, labels0), (img1, labels1) = render(grey, i), render(colour, i)
        assert labels1 == labels0, i
        dev0 = _deviation(img0[..., 0])
        flat = np.median(img0[..., 0])  # the flat surface's grey level: most pixels hold no defect
        corner = next(c for c in ((0, 0), (0, -1), (-1, 0), (-1, -1)) if img0[c][0] == flat)  # one untouched
        gain = img1[corner].astype(float) / 127.5
        assert ((gain > SURFACE_GAIN[0] - 0.01) & (gain < SURFACE_GAIN[1] + 0.01)).all() and np.ptp(gain) > 0.01, gain
        at = np.unravel_index(np.abs(dev0).argmax(), dev0.shape)
        if abs(dev0[at]) < 20 or ((img1[at] == 0) | (img1[at] == 255)).any():  # clipped: the tint is not readable
            continue
        tint = (img1[at].astype(float) - img1[corner]) / dev0[at]
        assert ((tint > DEFECT_TINT[0] - 0.05) & (tint < DEFECT_TINT[1] + 0.05)).all(), (i, tint)
        tints.append((tint, gain))
    tint, gain = map(np.asarray, zip(*tints, strict=True))
    spread = np.ptp(tint, axis=1)  # a grey tint (all channels alike) would read about 0 here
    apart = np.abs(tint - gain).max(axis=1)  # the surface's own gain would read about 0 here
    assert len(tint) >= 15 and (spread > 0.1).mean() >= 0.8 and (apart > 0.1).mean() >= 0.8, (spread, apart)


def test_a_relief_on_a_colour_image_shows_in_the_surfaces_colour_inside_its_box(monkeypatch):
    """A relief on a tinted surface: its change in each channel is the grey relief's times the surface's gain
    (shading scales what is there), and the box holds every pixel it changed by a quarter of its peak."""
    render = _flat_render(monkeypatch)
    spec = SynthSpec(images=60, imgsz=128, seed=8, empty_frac=0.0, max_defects=1, class_weights=(1, 1, 1, 0),
                     relief_frac=1.0, colour_frac=1.0)
    checked = 0
    for i in range(20):
        img, ((_, xc, yc, w, h),) = render(spec, i)
        background = np.median(img.reshape(-1, 3), axis=0).astype(float)
        dev = img.astype(float) - background
        peak = np.abs(dev).max(axis=(0, 1))
        ys, xs = np.nonzero((np.abs(dev) >= 0.25 * peak + 1).any(axis=2))
        assert xs.min() >= (xc - w / 2) * 128 - 0.5 and xs.max() + 1 <= (xc + w / 2) * 128 + 0.5, i
        assert ys.min() >= (yc - h / 2) * 128 - 0.5 and ys.max() + 1 <= (yc + h / 2) * 128 + 0.5, i
        at = np.unravel_index(np.abs(dev).sum(axis=2).argmax(), dev.shape[:2])
        if ((img[at] == 0) | (img[at] == 255)).any() or np.abs(dev[at]).min() < 10:
            continue
        ratio = dev[at] / background  # the surface's colour scaled: the same share in every channel
        assert np.ptp(ratio) < 0.05 * np.abs(ratio).max() + 0.02, (i, ratio)
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("azimuth, lit", [(0.0, "left"), (np.pi, "right")])
def test_the_flank_facing_the_light_is_the_bright_one(azimuth, lit):
    """A vertical groove lit from +x (azimuth 0): its left wall faces the light and brightens, its right wall
    darkens; lit from -x the other way round (Lambertian shading, by hand: the wall's normal leans to the light)."""
    from gradkit.synth import _relief_shading

    mask = np.zeros((9, 9), np.float32)
    mask[:, 4] = 1.0
    shading = _relief_shading(mask, azimuth)
    left, right = shading[4, 3], shading[4, 5]
    assert (left, right) == ((1.0, -1.0) if lit == "left" else (-1.0, 1.0))
    assert shading[4, 4] == 0 and shading[4, 0] == 0


def test_colour_leaves_the_reliefs_where_they_were():
    """Each option has its own random stream: at a fixed ``relief_frac``, turning colour on moves no label."""
    for i in range(40):
        a = render_image(SynthSpec(images=40, imgsz=96, seed=12, relief_frac=0.5), i)[1]
        b = render_image(SynthSpec(images=40, imgsz=96, seed=12, relief_frac=0.5, colour_frac=0.5), i)[1]
        assert a == b, i


def test_a_set_written_before_the_look_options_is_recognised_at_zero():
    from gradkit.synth import made_by, provenance

    spec = SynthSpec(images=40, imgsz=96, seed=1)
    old = {k: v for k, v in provenance(spec).items() if k not in ("relief_frac", "colour_frac", "faint_frac")}
    assert made_by({"gradkit_synth": old}, spec)
    assert not made_by({"gradkit_synth": old}, SynthSpec(images=40, imgsz=96, seed=1, relief_frac=0.5))


@pytest.mark.parametrize("bad", [dict(images=2), dict(imgsz=8), dict(empty_frac=1.0),
                                 dict(class_weights=(1, 1)), dict(splits=(0.5, 0.2, 0.2)), dict(faint_frac=1.5),
                                 dict(faint_frac=-0.1), dict(relief_frac=1.5), dict(colour_frac=-0.1)])
def test_bad_spec_is_rejected(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        SynthSpec(**bad)


def test_png_decodes(tmp_path):
    root = generate_dataset(tmp_path / "p", SynthSpec(images=3, imgsz=64), progress=False).parent
    for p in root.rglob("*.png"):
        assert cv2.imread(str(p)) is not None
