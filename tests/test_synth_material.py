"""The fourth evaluation set (lit relief on material textures): the GIMP pattern reader against
hand-made files, boxes from masks, seeded determinism, the image changed only under the masks, the
relief's shading against a hand computation, and a missing pattern library refused in one line.
The tests make their own patterns, so they need no ``gimp-data``."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import gradkit.synth_material as material
from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.synth_material import MaterialSpec, generate_material_dataset, read_gimp_pattern, render_material_image
from mask_boxes import assert_changes_only_near_masks, assert_tight_mask_boxes, assert_written_as_rendered


def write_pat(path, pixels: np.ndarray, name: bytes = b"test") -> None:
    """A GIMP pattern file written from its documented layout (not by the reader's code)."""
    h, w, depth = pixels.shape
    header = 24 + len(name) + 1
    path.write_bytes(struct.pack(">5I", header, 1, w, h, depth) + b"GPAT" + name + b"\0" + pixels.tobytes())


@pytest.fixture(scope="module")
def patterns(tmp_path_factory):
    """Three hand-made textures: gray grain, colour noise, and a colour gradient with alpha."""
    folder = tmp_path_factory.mktemp("patterns")
    rng = np.random.default_rng(0)
    (folder / "Stone").mkdir()
    (folder / "Wood").mkdir()
    grain = (128 + 40 * np.sin(np.arange(48) / 3)[None, :, None] + rng.normal(0, 8, (40, 48, 1))).clip(0, 255)
    write_pat(folder / "Stone" / "grain.pat", grain.astype(np.uint8))
    write_pat(folder / "Wood" / "noise.pat", rng.integers(60, 200, (64, 64, 3), dtype=np.uint8))
    ramp = np.dstack([np.tile(np.linspace(50, 220, 32), (32, 1))] * 3 + [np.full((32, 32), 255.0)])
    write_pat(folder / "Wood" / "ramp.pat", ramp.astype(np.uint8))
    return str(folder), ("Stone/grain", "Wood/noise", "Wood/ramp")


def spec_of(library, **kw) -> MaterialSpec:
    folder, names = library
    return MaterialSpec(**{"images": 40, "width": 200, "height": 150, "seed": 5, "patterns": folder,
                           "materials": names, **kw})


def test_the_reader_returns_the_pixels_written_for_each_depth(tmp_path):
    rng = np.random.default_rng(1)
    for depth in (1, 2, 3, 4):
        pixels = rng.integers(0, 256, (7, 11, depth), dtype=np.uint8)
        write_pat(tmp_path / f"d{depth}.pat", pixels)
        got = read_gimp_pattern(tmp_path / f"d{depth}.pat")
        expected = pixels[..., :3] if depth >= 3 else np.repeat(pixels[..., :1], 3, axis=2)
        assert got.shape == (7, 11, 3) and np.array_equal(got, expected)


@pytest.mark.parametrize(("mutate", "word"), [
    (lambda b: b[:20] + b"XPAT" + b[24:], "GPAT"),
    (lambda b: b[:-5], "needs 56 bytes, the file has 51"),
    (lambda b: struct.pack(">5I", 4000, 1, 3, 3, 3) + b[20:], "the file has 56"),
    (lambda b: struct.pack(">5I", 29, 2, 3, 3, 3) + b[20:], "version 2"),
    (lambda b: struct.pack(">5I", 29, 1, 3, 3, 7) + b[20:], "x 7"),
    (lambda b: struct.pack(">5I", 29, 1, 100000, 3, 3) + b[20:], "100000"),
    (lambda b: b[:10], "GPAT"),
])
def test_a_malformed_pattern_is_refused_naming_the_file(tmp_path, mutate, word):
    write_pat(tmp_path / "ok.pat", np.zeros((3, 3, 3), np.uint8))
    (tmp_path / "bad.pat").write_bytes(mutate((tmp_path / "ok.pat").read_bytes()))
    with pytest.raises(ValueError, match=word) as err:
        read_gimp_pattern(tmp_path / "bad.pat")
    assert "bad.pat" in str(err.value) and "\n" not in str(err.value)


def test_a_folder_or_an_unreadable_path_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="cannot read") as err:
        read_gimp_pattern(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_a_missing_pattern_library_is_refused_before_anything_is_written(tmp_path, patterns):
    spec = spec_of(patterns, patterns=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install gimp-data") as err:
        generate_material_dataset(tmp_path / "out", spec)
    assert "nowhere" in str(err.value) and not (tmp_path / "out").exists()


def test_boxes_are_the_tight_boxes_of_the_masks(patterns):
    spec = spec_of(patterns)
    checked = 0
    for i in range(spec.images):
        img, labels, masks = render_material_image(spec, i)
        assert img.shape == (spec.height, spec.width, 3) and img.dtype == np.uint8
        checked += assert_tight_mask_boxes(labels, masks, spec.width, spec.height)
    assert checked >= 30


def test_seeded_determinism_classes_and_defect_free_images(patterns):
    spec = spec_of(patterns, images=60, empty_frac=0.3)
    a, la, _ = render_material_image(spec, 7)
    b, lb, _ = render_material_image(spec, 7)
    c, _, _ = render_material_image(spec_of(patterns, images=60, seed=6), 7)
    assert np.array_equal(a, b) and la == lb and not np.array_equal(a, c)
    labels = [render_material_image(spec, i)[1] for i in range(spec.images)]
    assert 8 <= sum(not lab for lab in labels) <= 30
    assert {k for lab in labels for k, *_ in lab} == {0, 1, 2, 3}


def test_the_image_changes_only_where_a_returned_mask_says(patterns, monkeypatch):
    # oracle: the same image with every defect undone (the same random numbers drawn, nothing applied);
    # they may differ only near a kept defect's mask (the shading of a relief reaches a pixel beyond its
    # mask's fringe), so a defect drawn outside its mask shows up here
    spec = spec_of(patterns, images=16, empty_frac=0.0)
    rendered = [render_material_image(spec, i) for i in range(spec.images)]
    monkeypatch.setattr(material, "_apply", lambda img, height, relief, pigment: (img, height))
    assert_changes_only_near_masks(rendered, [render_material_image(spec, i) for i in range(spec.images)])


def test_shading_is_one_on_a_flat_surface_and_follows_the_slope_by_hand():
    light = np.array([0.6, 0.0, 0.8])                       # a unit vector, from +x, 53 degrees up
    assert np.array_equal(material._shade(np.zeros((5, 6), np.float32), light), np.ones((5, 6), np.float32))
    ramp = np.tile(np.arange(6, dtype=np.float32) * 0.5, (5, 1))   # rising towards +x: slope 0.5
    # normal (-0.5, 0, 1)/sqrt(1.25); n.l = (-0.3 + 0.8)/1.118 = 0.4472; over l_z: 0.559
    np.testing.assert_allclose(material._shade(ramp, light), 0.5 / np.sqrt(1.25) / 0.8, rtol=1e-5)


def test_a_groove_shows_bright_and_dark_sides_across_the_light_and_fades_along_it():
    # a vertical groove lit from +x: its far wall (x < 10) faces the light and is bright, its near wall
    # faces away and is dark; lit along
    # its length (from +y) it nearly vanishes: the look depends on the heading, by construction
    dist = np.abs(np.arange(21, dtype=np.float32) - 10)[None, :].repeat(21, 0)
    groove = -1.0 * material._gaussian_profile(dist, 0.8)
    across = material._shade(groove, np.array([0.6, 0.0, 0.8]))[10]
    along = material._shade(groove, np.array([0.0, 0.6, 0.8]))[10]
    assert across[9] > 1.15 and across[11] < 0.7
    np.testing.assert_allclose(along, 1.0, atol=0.15)


def test_each_box_holds_what_its_defect_visibly_changes(tmp_path, monkeypatch):
    # oracle: on a flat gray pattern, one defect per image, the render minus the same render with the
    # defect undone; the pixels changed by at least a quarter of the largest change must lie in the
    # box (a crater's steep walls and rim are what light shows of it, not only its deep floor)
    write_pat(tmp_path / "flat.pat", np.full((16, 16, 1), 150, np.uint8))
    spec = MaterialSpec(images=60, width=200, height=150, seed=9, empty_frac=0.0, max_defects=1,
                        patterns=str(tmp_path), materials=("flat",))
    rendered = [render_material_image(spec, i) for i in range(spec.images)]
    monkeypatch.setattr(material, "_apply", lambda img, height, relief, pigment: (img, height))
    outside_share = {}
    for i, (img, labels, _masks) in enumerate(rendered):
        if not labels:
            continue
        diff = np.abs(img.astype(int) - render_material_image(spec, i)[0].astype(int)).max(2)
        changed = diff >= max(4, 0.25 * diff.max())
        c, x, y, w, h = labels[0]
        inside = np.zeros_like(changed)
        x0, x1 = round((x - w / 2) * 200), round((x + w / 2) * 200)
        y0, y1 = round((y - h / 2) * 150), round((y + h / 2) * 150)
        inside[y0:y1, x0:x1] = True
        outside_share.setdefault(c, []).append((changed & ~inside).sum() / max(changed.sum(), 1))
    assert set(outside_share) == {0, 1, 2, 3}
    for c, shares in outside_share.items():
        assert np.median(shares) <= 0.02 and max(shares) <= 0.15, (c, sorted(shares)[-3:])


def test_cracks_turn_towards_darker_texture():
    # planted valleys: horizontal stripes, dark every 16 px; a path blind to the texture would sit on
    # the mean (0 sigma); the darkest rows are 1.41 sigma below it
    h, w = 256, 344
    lum = np.repeat((0.5 + 0.2 * np.cos(2 * np.pi * np.arange(h) / 16))[:, None], w, 1).astype(np.float32)
    rng = np.random.default_rng(0)
    lean = []
    for _ in range(40):
        path = material._fracture(rng, lum, rng.uniform(0.15, 0.85, 2) * (w, h), rng.uniform(0, 2 * np.pi), 80)
        under = lum[path[:, 1].astype(int), path[:, 0].astype(int)]
        lean.append((under.mean() - lum.mean()) / lum.std())
    assert np.mean(lean) < -0.8 and np.mean(np.array(lean) < 0) > 0.9


def test_written_files_match_the_rendering_and_scratches_are_thin(tmp_path, patterns):
    spec = spec_of(patterns, images=60, width=344, height=256, seed=2, empty_frac=0.0)
    data = generate_material_dataset(tmp_path / "m", spec)
    assert_written_as_rendered(data.parent, *render_material_image(spec, 0)[:2])
    fp = fingerprint_dataset(data)
    assert set(fp.widths) == {344} and set(fp.heights) == {256}
    cls, stroke = np.asarray(fp.box_cls), np.asarray(fp.box_stroke)
    scratch = stroke[(cls == 0) & np.isfinite(stroke)]
    assert len(scratch) >= 8, len(scratch)
    assert np.median(scratch) <= 3.0                    # grooves of sigma 0.4-0.9 px


@pytest.mark.parametrize(("kwargs", "word"), [
    ({"width": 32}, "width"), ({"images": 2}, "images"), ({"empty_frac": 1.0}, "empty_frac"),
    ({"max_defects": 0}, "max_defects"), ({"splits": (0.7, 0.2, 0.2)}, "splits"), ({"materials": ()}, "materials")])
def test_bad_specs_are_refused_naming_the_field(kwargs, word):
    with pytest.raises(ValueError, match=word):
        MaterialSpec(**kwargs)
