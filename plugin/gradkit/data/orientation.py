"""Images as Ultralytics sees them: upright, after the EXIF orientation a phone or camera stored.

Ultralytics decodes images with OpenCV in colour mode, which applies the EXIF orientation tag, and
annotation tools draw on the upright image. For JPEG, PNG and WebP, PIL's ``Image.size`` and OpenCV's
``IMREAD_UNCHANGED`` (needed for 16-bit depth and alpha) ignore the tag; for TIFF both decoders apply it
themselves. Every size or pixel gradkit measures against labels goes through here (tested against
Ultralytics' ``exif_size`` and ``imread`` on all eight orientations of each format).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = ["EXIF_ORIENTATION", "exif_orientation", "headers_of_any_size", "read_upright", "upright",
           "upright_size"]

#: The EXIF tag that says how the stored pixels are turned (1: as stored; 2-8: flipped and/or rotated).
EXIF_ORIENTATION = 0x0112
#: Orientations whose upright image is the stored one transposed: width and height swap.
_TRANSPOSED = {5, 6, 7, 8}
#: Formats whose decoders (PIL's size, OpenCV's pixels) already apply the orientation.
_TURNED_BY_DECODER = {"TIFF"}


@contextlib.contextmanager
def headers_of_any_size() -> Iterator[None]:
    """PIL's ``Image.open`` without its decompression-bomb check, for reading headers only (size, mode, EXIF):
    that check guards decoding, and ``gradkit tile`` must read the header of a line-scan image over the limit
    (its pixels are decoded by OpenCV, which keeps its own limit). PIL offers no per-call switch: the module's
    limit is lifted while the block runs and put back after."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def exif_orientation(im) -> int:
    """The EXIF orientation of an open PIL image; 1 when it has none or an unreadable one. For a PNG only
    an ``eXIf`` chunk before the pixels counts: PIL would decode the whole image to look past them."""
    from PIL import Image

    try:
        if im.format == "PNG":
            exif = Image.Exif()
            if im.info.get("exif"):
                exif.load(im.info["exif"])
        else:
            exif = im.getexif()
        value = exif.get(EXIF_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError):  # a malformed EXIF block: shown as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_size(im) -> tuple[int, int]:
    """(width, height) of an open PIL image as shown, after its EXIF orientation."""
    w, h = im.size
    if im.format in _TURNED_BY_DECODER:
        return w, h
    return (h, w) if exif_orientation(im) in _TRANSPOSED else (w, h)


def upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels ``img`` (rows, columns, ...) turned as EXIF ``orientation`` says (TIFF/EXIF 2.3)."""
    if orientation in (2, 4, 5, 7):  # the mirrored ones: mirror first, then turn as 1, 3, 8, 6
        img = img[:, ::-1]
        orientation = {2: 1, 4: 3, 5: 8, 7: 6}[orientation]
    turns = {1: 0, 3: 2, 6: 3, 8: 1}[orientation]  # np.rot90 turns counter-clockwise; 6 is clockwise
    return np.ascontiguousarray(np.rot90(img, turns))


def read_upright(path: str | Path) -> np.ndarray | None:
    """All channels and the full bit depth (``IMREAD_UNCHANGED``), turned upright; None when unreadable."""
    import cv2
    from PIL import Image

    try:  # decoded from the bytes, as Ultralytics does (OpenCV's imread fails on some turned TIFFs)
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None  # imdecode raises on no bytes
    if img is None:
        return None
    try:
        with headers_of_any_size(), Image.open(path) as im:  # OpenCV has decoded it: only the header is read here
            orientation = 1 if im.format in _TURNED_BY_DECODER else exif_orientation(im)
    # what PIL will not open: no EXIF (ImportError: Ultralytics' patched open, reaching for pi-heif)
    except (OSError, ValueError, SyntaxError, ImportError):
        orientation = 1
    return img if orientation == 1 else upright(img, orientation)
