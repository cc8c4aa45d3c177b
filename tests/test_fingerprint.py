"""Dataset fingerprint on hand-made datasets whose statistics are known by construction."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from conftest import standout_set
from gradkit.data.fingerprint import THIN_MAX_FILL, fingerprint_dataset, stroke_width
from gradkit.data.standout import STANDS_OUT


def _write(root, split, stem, img, labels):
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / split / f"{stem}.png"), img)
    if labels is not None:
        (root / "labels" / split / f"{stem}.txt").write_text("".join(f"{' '.join(map(str, lab))}\n" for lab in labels))


def _yolo(box, iw, ih, c):
    x0, y0, x1, y1 = box
    return (c, (x0 + x1) / 2 / iw, (y0 + y1) / 2 / ih, (x1 - x0) / iw, (y1 - y0) / ih)


@pytest.fixture
def handmade(tmp_path):
    """Four training images: a 2 px horizontal line (class 0) and a disc (class 1) on a gray 200x100
    image, a gray single-channel 16-bit defect-free image, a colour image with a disc (class 1), and
    one label line with a bad class id."""
    root = tmp_path / "ds"
    a = np.full((100, 200), 100, np.uint8)
    a[50:52, 100:180] = 200                        # line: box (100, 50, 180, 52), 80 x 2 px
    cv2.circle(a, (40, 40), 10, 30, -1)            # disc: box (30, 30, 51, 51)
    _write(root, "train", "a", cv2.merge([a, a, a]),
           [_yolo((100, 50, 180, 52), 200, 100, 0), _yolo((30, 30, 51, 51), 200, 100, 1)])
    _write(root, "train", "b", np.full((64, 64), 30000, np.uint16), [])
    c = np.zeros((120, 120, 3), np.uint8)
    c[..., 2] = 150                                 # red: channels differ
    cv2.circle(c, (60, 60), 10, (0, 255, 0), -1)
    _write(root, "train", "c", c, [_yolo((50, 50, 71, 71), 120, 120, 1), (7, 0.5, 0.5, 0.1, 0.1)])
    _write(root, "train", "d", np.full((80, 80, 3), 90, np.uint8), None)   # no label file: defect-free
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/train",
                                    "names": {0: "scratch", 1: "pit"}}))
    return data


def test_images_holding_a_class_count_each_image_once(tmp_path):
    root = tmp_path / "ds"
    img = np.full((64, 64), 100, np.uint8)
    _write(root, "train", "two_pits", img, [_yolo((5, 5, 9, 9), 64, 64, 1), _yolo((30, 30, 34, 34), 64, 64, 1)])
    _write(root, "train", "pit_and_scratch", img, [_yolo((5, 5, 9, 9), 64, 64, 1), _yolo((5, 40, 60, 42), 64, 64, 0)])
    _write(root, "train", "clean", img, [])
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "names": {0: "scratch", 1: "pit"}}))
    fp = fingerprint_dataset(data, max_decoded=0)
    assert fp.class_counts == {"scratch": 1, "pit": 3}
    assert fp.class_images == {"scratch": 1, "pit": 2}


def test_image_level_statistics(handmade):
    fp = fingerprint_dataset(handmade)
    assert (fp.images, fp.decoded) == (4, 4)
    assert fp.channels == {3: 3, 1: 1}
    assert fp.gray == 3                                 # a, b (one channel), d; c is colour
    assert fp.bit_depth == {8: 3, 16: 1}
    assert fp.defect_free == 2 and fp.defect_free_share == 0.5
    assert fp.max_side == 200
    assert fp.class_counts == {"scratch": 1, "pit": 2}
    assert fp.imbalance == 2.0
    assert fp.label_errors == 1                         # class 7 with nc=2: left out, counted


def test_the_val_split_is_counted_as_ultralytics_validates_it(handmade, tmp_path):
    assert fingerprint_dataset(handmade).val_images == 4            # val: the training folder itself
    root = handmade.parent
    for stem in ("v1", "v2"):
        _write(root, "val", stem, np.full((50, 50), 90, np.uint8), [])
    (root / "images" / "val" / "v3.webp").write_bytes(b"")        # a format Ultralytics reads, gradkit does not
    (root / "val.txt").write_text("./images/val/v1.png\n./images/val/v2.png\n./images/val/gone.png\n")

    def counted(**splits):
        data = tmp_path / "d.yaml"
        data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", **splits,
                                        "names": {0: "scratch", 1: "pit"}}))
        return fingerprint_dataset(data)

    listed = counted(val="val.txt")
    assert (listed.images, listed.val_images) == (4, 2)            # a missing listed image is not validated
    assert listed.summary()["val_images"] == 2
    assert counted(val="images/val").val_images == 3                # the .webp image is validated too
    assert counted(val=["images/val", "val.txt"]).val_images == 5   # read twice, validated twice
    assert counted(validation="images/val").val_images == 3         # Ultralytics renames the key to val
    assert counted().val_images == 0                                # no val: nothing to validate
    absent = counted(val="images/nowhere")
    assert absent.val_images == 0 and absent.val_absent == [str(root / "images" / "nowhere")]


def test_box_pixels_follow_the_letterbox(handmade):
    fp = fingerprint_dataset(handmade)
    w, h = fp.box_pixels(400)                           # 200x100 image -> scale 2; 120x120 -> scale 10/3
    np.testing.assert_allclose(w, [160, 42, 70], rtol=1e-6)
    np.testing.assert_allclose(h, [4, 42, 70], rtol=1e-6)
    np.testing.assert_allclose(fp.elongation(), [40, 1, 1], rtol=1e-6)


def test_stroke_width_separates_lines_from_blobs(handmade):
    fp = fingerprint_dataset(handmade)
    stroke = np.asarray(fp.box_stroke)
    assert stroke[0] == pytest.approx(160 / np.hypot(80, 2), rel=1e-6)   # 2 px line: 160 pixels / its length
    fill = np.asarray(fp.box_fill)
    assert fill[0] == pytest.approx(1.0)                # the 2 px line fills its 80 x 2 box
    assert fill[1] == pytest.approx(np.count_nonzero(cv2.circle(np.zeros((21, 21)), (10, 10), 10, 1, -1)) / 21 ** 2)
    assert fill[1] > THIN_MAX_FILL                      # a disc fills pi/4 of its box: never thin
    assert fp.thin_mask().tolist() == [True, False, False]
    assert fp.thin_classes() == ["scratch"]
    np.testing.assert_allclose(fp.stroke_pixels(400)[0], 2 * stroke[0])


@pytest.mark.parametrize("thickness", [1, 2])
def test_stroke_width_of_a_noisy_antialiased_diagonal(thickness):
    rng = np.random.default_rng(thickness)
    img = (120 + rng.normal(0, 3, (128, 128))).astype(np.float32)
    mask = np.zeros((128, 128), np.float32)
    cv2.line(mask, (20, 30), (100, 90), 1.0, thickness, cv2.LINE_AA)
    img += 60 * mask
    ys, xs = np.nonzero(mask > 0.25)
    width, fill = stroke_width(np.clip(img, 0, 255).astype(np.uint8), (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    true_width = mask.sum() / np.hypot(80, 60)            # ink per unit length (OpenCV: 2 -> 3.5 px with AA)
    assert abs(width - true_width) <= 0.6
    assert fill < 0.1                                     # a diagonal line's box is >90% background


def test_bad_input_is_named(tmp_path, handmade):
    with pytest.raises(ValueError, match="no such file"):
        fingerprint_dataset(tmp_path / "nope.yaml")
    with pytest.raises(ValueError, match="split 'test' is missing"):
        fingerprint_dataset(handmade, split="test")


def test_sampling_bounds_decoding(handmade):
    fp = fingerprint_dataset(handmade, max_decoded=2, seed=1)
    assert fp.decoded == 2 and fp.images == 4
    assert len(fp.box_cls) == 3                            # labels are read for every image
    assert len(fp.widths) == 2
    # strokes are measured exactly on the boxes of decoded images
    assert np.array_equal(np.isnan(fp.box_img_w), np.isnan(fp.box_stroke))
    full = fingerprint_dataset(handmade)
    decoded = ~np.isnan(fp.box_stroke)
    np.testing.assert_allclose(np.asarray(fp.box_stroke)[decoded], np.asarray(full.box_stroke)[decoded])


def test_standout_tells_clear_defects_from_ones_as_faint_as_their_texture(tmp_path):
    """Oracle: the construction. On a plain surface every defect stands out (share near 1); a 1 px line
    as strong as the grain of a strong texture mostly does not (below STANDS_OUT)."""
    rng = np.random.default_rng(0)
    plain = fingerprint_dataset(standout_set(tmp_path / "plain", rng, "plain"))
    textured = fingerprint_dataset(standout_set(tmp_path / "textured", rng, "textured"))
    assert len(plain.box_standout) == len(plain.box_cls) == 24
    assert (np.asarray(plain.box_standout) > 0.9).all()
    lines = np.asarray(textured.box_standout)[np.asarray(textured.box_cls) == 0]
    assert np.median(lines) < STANDS_OUT
    assert plain.standout_share == 1.0 and plain.summary()["standout_share"] == 1.0
    assert textured.standout_share < 0.75         # the lines mostly below, the strong discs above


def test_standout_is_unmeasured_without_decoded_images(handmade):
    fp = fingerprint_dataset(handmade, max_decoded=0)
    assert np.isnan(fp.box_standout).all() and np.isnan(fp.standout_share)
    assert fp.summary()["standout_share"] is None


def test_the_fingerprint_measures_as_the_copy_paste_gate_judges():
    """gradkit.data may not import gradkit.config, so the two facts live twice: keep them equal."""
    from gradkit.config import CopyPasteConfig
    from gradkit.data.fingerprint import STANDOUT_RING_PX

    assert CopyPasteConfig().min_defect_share == STANDS_OUT
    assert CopyPasteConfig().margin == STANDOUT_RING_PX


def test_a_box_without_surroundings_is_unmeasured_not_clear(tmp_path):
    """A box over the whole image has no ring to sample the texture from, and a box whose ring lies
    inside another box has none that is texture: both NaN, left out of the share. A disc alone in
    another image is measured."""
    img = np.full((64, 64), 128, np.uint8)
    cv2.circle(img, (20, 20), 6, 250, -1)
    disc = _yolo((14, 14, 27, 27), 64, 64, 0)
    _write(tmp_path, "train", "a", cv2.merge([img, img, img]), [(0, 0.5, 0.5, 1.0, 1.0), disc])
    _write(tmp_path, "train", "b", cv2.merge([img, img, img]), [disc])
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path), "train": "images/train", "val": "images/train",
                                    "names": {0: "stain"}}))
    fp = fingerprint_dataset(data)
    assert np.isnan(fp.box_standout[:2]).all() and fp.box_standout[2] > 0.9
    assert fp.standout_share == 1.0            # the one measured box stands out


def test_the_split_folder_the_trainer_resolved_is_the_one_measured(tmp_path):
    """``split_places`` replaces the YAML's own reading of the split (the trainer's resolution wins)."""
    rng = np.random.default_rng(0)
    data = standout_set(tmp_path / "plain", rng, "plain")
    elsewhere = standout_set(tmp_path / "textured", rng, "textured").parent / "images" / "train"
    assert fingerprint_dataset(data).standout_share == 1.0
    moved = fingerprint_dataset(data, split_places=elsewhere)
    assert moved.images == 12 and moved.standout_share < 0.75 and moved.class_names == {0: "scratch", 1: "pit"}


def test_what_the_yaml_says_of_val(handmade, tmp_path):
    """Whether the YAML names a val split, and whether it reads the training split's own images."""
    root = handmade.parent
    _write(root, "val", "v1", np.full((50, 50), 90, np.uint8), [])

    def measured(**splits):
        data = tmp_path / "d.yaml"
        data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", **splits,
                                        "names": {0: "scratch", 1: "pit"}}))
        return fingerprint_dataset(data)

    assert (measured().val_named, measured().val_is_train) == (False, False)
    assert (measured(val="images/val").val_named, measured(val="images/val").val_is_train) == (True, False)
    assert measured(val="./images/train/").val_is_train
    assert measured(validation="images/val").val_named                 # Ultralytics renames the key
    given = fingerprint_dataset(handmade, split_places=root / "images" / "train", names={0: "scratch", 1: "pit"})
    assert given.val_named is None                                      # the YAML's splits were not read
