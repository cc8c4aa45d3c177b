"""Label files as Ultralytics reads them (``verify_image_label``, the oracle here): a UTF-8 BOM is accepted,
a file of polygon lines becomes the boxes around them, a file mixing polygons and boxes is skipped whole.
``gradkit check`` must judge them the same way, and ``--fix`` must repair what can be repaired."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset, fix_dataset

POLYGON = "1 0.1 0.1 0.4 0.1 0.4 0.4 0.1 0.4"  # a square: box 0.25 0.25 0.3 0.3
TRIANGLE = "0 0.5 0.2 0.9 0.8 0.6 0.7"
BOX = "0 0.5 0.5 0.2 0.2"


def _dataset(root: Path, labels: dict[str, str]) -> Path:
    """One train image per label text (``raw`` bytes written as given), one plain val image."""
    for split, stems in (("train", labels), ("val", {"v": BOX + "\n"})):
        for stem, text in stems.items():
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), np.full((64, 64, 3), 90 + len(stem), np.uint8))
            (root / "labels" / split / f"{stem}.txt").write_bytes(text.encode("utf-8"))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "names": {0: "scratch", 1: "pit"}}))
    return data


def _ultralytics_reads(image: Path, label: Path) -> tuple[int, np.ndarray]:
    """(corrupt count, labels) of Ultralytics' own label reader."""
    from ultralytics.data.utils import verify_image_label

    out = verify_image_label((str(image), str(label), "", False, 2, 0, 0, False))  # file, label, prefix, kpt, nc...
    return out[8], out[1]


def _boxes(text: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in text.splitlines() if line.strip()], np.float32)


@pytest.mark.parametrize("stem,text", [("bom", "\ufeff" + BOX + "\n"), ("polygons", POLYGON + "\n" + TRIANGLE + "\n")])
def test_files_ultralytics_accepts_are_not_errors_and_fix_writes_the_boxes_it_reads(tmp_path, stem, text):
    data = _dataset(tmp_path / "ds", {stem: text})
    image, label = (tmp_path / "ds" / d / "train" / f"{stem}.{e}" for d, e in (("images", "png"), ("labels", "txt")))
    corrupt, read = _ultralytics_reads(image, label)
    assert corrupt == 0  # the oracle accepts the file
    assert check_dataset(data).errors == []
    fixed, _ = fix_dataset(data, tmp_path / "fixed")
    corrupt, read_fixed = _ultralytics_reads(image, tmp_path / "fixed" / "labels" / "train" / f"{stem}.txt")
    assert corrupt == 0
    np.testing.assert_allclose(read_fixed, read, atol=1e-6)  # Ultralytics reads the copy as it read the original
    assert check_dataset(fixed).errors == []


def test_a_file_mixing_polygons_and_boxes_is_an_error_and_fix_keeps_both_as_boxes(tmp_path):
    data = _dataset(tmp_path / "ds", {"mixed": POLYGON + "\n" + BOX + "\n"})
    image, label = (tmp_path / "ds" / d / "train" / f"mixed.{e}" for d, e in (("images", "png"), ("labels", "txt")))
    assert _ultralytics_reads(image, label)[0] == 1  # the oracle skips it: "labels mix segment and detection rows"
    errors = check_dataset(data).errors
    assert [(Path(f.path).name, f.line) for f in errors] == [("mixed.txt", 2)], [str(f) for f in errors]
    assert "polygon" in errors[0].message
    fixed, changes = fix_dataset(data, tmp_path / "fixed")
    written = _boxes((tmp_path / "fixed" / "labels" / "train" / "mixed.txt").read_text())
    np.testing.assert_allclose(written, [[1, 0.25, 0.25, 0.3, 0.3], [0, 0.5, 0.5, 0.2, 0.2]], atol=1e-6)
    assert check_dataset(fixed).errors == []
    assert any(c.line == 1 and "polygon" in c.detail for c in changes)


@pytest.mark.parametrize("line,why", [("0 0.1 0.1 0.4 0.1 0.4", "6 fields"),
                                      ("0 0.1 0.1 0.4 0.1 0.4 0.4 0.2", "pairs"),
                                      ("0 0.1 0.1 0.4 nan 0.4 0.4", "not finite"),
                                      ("0 0.1 0.1 0.4 a 0.4 0.4", "numbers")])
def test_polygon_lines_ultralytics_cannot_read_are_errors(tmp_path, line, why):
    data = _dataset(tmp_path / "ds", {"bad": line + "\n"})
    errors = check_dataset(data).errors
    assert [(Path(f.path).name, f.line) for f in errors] == [("bad.txt", 1)] and why in errors[0].message, \
        [str(f) for f in errors]


def test_distinct_polygons_sharing_a_box_are_kept_as_ultralytics_keeps_them(tmp_path):
    square, diamond = POLYGON, "1 0.25 0.1 0.4 0.25 0.25 0.4 0.1 0.25"  # both inside the same 0.1-0.4 box
    data = _dataset(tmp_path / "ds", {"two": square + "\n" + diamond + "\n", "again": square + "\n" + square + "\n"})
    for stem, kept in (("two", 2), ("again", 1)):
        image = tmp_path / "ds" / "images" / "train" / f"{stem}.png"
        label = tmp_path / "ds" / "labels" / "train" / f"{stem}.txt"
        corrupt, read = _ultralytics_reads(image, label)
        assert corrupt == 0 and len(read) == kept  # the oracle: distinct polygons kept, a repeat dropped
    errors = check_dataset(data).errors
    assert [(Path(f.path).name, f.line) for f in errors] == [("again.txt", 2)], [str(f) for f in errors]
    fix_dataset(data, tmp_path / "fixed")  # --fix keeps both, and drops the repeat
    for stem, kept in (("two", 2), ("again", 1)):
        image = tmp_path / "ds" / "images" / "train" / f"{stem}.png"
        corrupt, read = _ultralytics_reads(image, tmp_path / "fixed" / "labels" / "train" / f"{stem}.txt")
        assert corrupt == 0 and len(read) == kept


def test_fix_clips_a_polygon_that_leaves_the_image_and_keeps_it_a_polygon(tmp_path):
    data = _dataset(tmp_path / "ds", {"edge": "0 -0.2 0.5 0.5 0.1 1.3 0.9\n" + TRIANGLE + "\n"})
    _, changes = fix_dataset(data, tmp_path / "fixed")
    lines = (tmp_path / "fixed" / "labels" / "train" / "edge.txt").read_text().splitlines()
    assert lines[0].split() == ["0", "0.000000", "0.500000", "0.500000", "0.100000", "1.000000", "0.900000"]
    assert lines[1] == TRIANGLE and [c.action for c in changes if c.line == 1] == ["clipped"]
