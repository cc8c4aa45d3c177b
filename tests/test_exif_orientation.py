"""Phone photos carry their rotation as an EXIF tag: Ultralytics (OpenCV) shows them upright and labels are
drawn on the upright image, so every size and pixel gradkit reads must be the upright one too."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from gradkit.data.convert import image_size
from gradkit.data.orientation import read_upright

ORIENTATIONS = range(1, 9)


FORMATS = ("jpg", "png", "webp", "tif")


def _tagged_jpeg(path: Path, orientation: int, size=(160, 96)) -> Path:
    """An asymmetric picture stored as ``size`` with EXIF orientation ``orientation`` (format from the suffix)."""
    w, h = size
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, w)[None, :]
    rgb[..., 1] = np.linspace(0, 255, h)[:, None]
    rgb[5:30, 10:40] = (255, 255, 255)  # a patch near one corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {".jpg": {"quality": 95, "exif": exif}, ".png": {"exif": exif}, ".webp": {"lossless": True, "exif": exif},
          ".tif": {"tiffinfo": {0x0112: orientation}}}[path.suffix]
    Image.fromarray(rgb).save(path, **kw)
    return path


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_image_size_is_the_size_ultralytics_reads(tmp_path, orientation, suffix):
    from ultralytics.data.utils import exif_size

    path = _tagged_jpeg(tmp_path / f"p.{suffix}", orientation)
    with Image.open(path) as im:
        assert image_size(path) == exif_size(im)  # oracle: Ultralytics' own size of the upright image
        if suffix == "jpg":
            assert image_size(path) == ImageOps.exif_transpose(im).size  # and PIL's transposition


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_read_upright_equals_what_ultralytics_shows(tmp_path, orientation, suffix):
    from ultralytics.utils.patches import imread

    path = _tagged_jpeg(tmp_path / f"p.{suffix}", orientation)
    assert np.array_equal(read_upright(path), imread(str(path)))  # Ultralytics' loader (OpenCV, colour mode)


def test_read_upright_keeps_depth_and_alpha_of_untagged_files(tmp_path):
    deep = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    assert np.array_equal(read_upright(tmp_path / "d.png"), deep)
    rgba = np.random.default_rng(0).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(read_upright(tmp_path / "a.png"), rgba)


def test_voc_labels_of_a_rotated_phone_photo_land_on_the_defect(tmp_path):
    from gradkit.data import convert_voc

    src = tmp_path / "voc"
    # stored 160x96, shown 96x160 (orientation 6: rotate 90° clockwise); the annotator saw the upright image
    path = _tagged_jpeg(src / "JPEGImages" / "phone.jpg", 6)
    upright = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(upright > 240)  # the white patch, where the annotator drew the box
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    (src / "Annotations").mkdir()
    for name in ("phone", "phone2", "phone3"):  # three images: one per split
        if name != "phone":
            _tagged_jpeg(src / "JPEGImages" / f"{name}.jpg", 6)
        (src / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>96</width><height>160</height><depth>3"
            f"</depth></size><object><name>stain</name><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
            f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>")
    _, report = convert_voc(src, tmp_path / "out")
    assert report.size_mismatch == 0 and report.degenerate == 0, report.issues
    (label,) = (tmp_path / "out" / "labels").glob("*/phone.txt")
    _, cx, cy, w, h = (float(v) for v in label.read_text().split())
    h_img, w_img = upright.shape
    np.testing.assert_allclose([(cx - w / 2) * w_img, (cy - h / 2) * h_img, (cx + w / 2) * w_img,
                                (cy + h / 2) * h_img], [x0, y0, x1, y1], atol=1e-3)


def test_read_upright_of_an_empty_or_huge_file_is_none_or_pixels_not_a_traceback(tmp_path, monkeypatch):
    (tmp_path / "empty.png").write_bytes(b"")
    assert read_upright(tmp_path / "empty.png") is None
    big = _tagged_jpeg(tmp_path / "big.jpg", 6)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses to open it as a decompression bomb
    # OpenCV decodes it, and its header's EXIF still turns it upright (gradkit tile sizes such an image from that
    # header: the pixels as stored would not match the size)
    assert read_upright(big).shape[:2] == (160, 96)
    assert Image.MAX_IMAGE_PIXELS == 100  # the limit lifted for the header only


def test_png_orientation_comes_from_the_header_without_decoding_pixels(tmp_path, monkeypatch):
    from PIL import PngImagePlugin

    path = _tagged_jpeg(tmp_path / "p.png", 6)
    plain = tmp_path / "plain.png"
    cv2.imwrite(str(plain), np.zeros((30, 50, 3), np.uint8))  # no EXIF at all: PIL would look past the pixels

    def no_decoding(self):
        raise AssertionError("pixels decoded")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    assert image_size(path) == (96, 160) and image_size(plain) == (50, 30)
