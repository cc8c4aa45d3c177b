"""Converters against hand-written VOC/COCO sets with known boxes; the checker on planted problems."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset, convert_coco, convert_voc, fix_dataset

GRADKIT = str(Path(sys.executable).with_name("gradkit"))


def _img(path: Path, w: int, h: int, value: int = 100):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))


def _voc_xml(path: Path, filename: str, size: tuple[int, int], objects: list[dict]):
    objs = "".join(
        f"<object><name>{o['name']}</name><difficult>{o.get('difficult', 0)}</difficult>"
        f"<truncated>{o.get('truncated', 0)}</truncated><bndbox><xmin>{o['box'][0]}</xmin><ymin>{o['box'][1]}"
        f"</ymin><xmax>{o['box'][2]}</xmax><ymax>{o['box'][3]}</ymax></bndbox></object>" for o in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>", encoding="utf-8")


def _lines(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text(encoding="utf-8").splitlines()]


def _label(out: Path, stem: str) -> Path:
    """The label file of ``stem`` in whichever split the seeded default split put it."""
    (path,) = (out / "labels").glob(f"*/{stem}.txt")
    return path


def test_voc_converts_to_exact_yolo_lines(tmp_path):
    src = tmp_path / "voc"
    _img(src / "JPEGImages" / "a.jpg", 200, 100)
    _img(src / "JPEGImages" / "b.png", 50, 40)
    _img(src / "JPEGImages" / "c.bmp", 64, 64)
    _voc_xml(src / "Annotations" / "a.xml", "a.jpg", (200, 100), [
        {"name": "scratch", "box": (11, 21, 110, 30)},
        {"name": "pit", "box": (151, 51, 160, 60), "difficult": 1},
        {"name": "scratch", "box": (181, 81, 220, 120), "truncated": 1},  # leaves the image: clipped
    ])
    _voc_xml(src / "Annotations" / "b.xml", "b.png", (60, 40), [  # size mismatch: image is 50 wide
        {"name": "inclusion", "box": (1, 1, 50, 40)},
    ])
    _voc_xml(src / "Annotations" / "c.xml", "c.bmp", (64, 64), [])
    _img(src / "JPEGImages" / "d.png", 50, 40)
    _voc_xml(src / "Annotations" / "d.xml", "d.png", (50, 40), [
        {"name": "inclusion", "box": (1, 1, 20, 20)},
        {"name": "pit", "box": (30, 10, 28, 20)},  # xmax < xmin: degenerate, so the image is left out
    ])
    data_yaml, report = convert_voc(src, tmp_path / "out")
    assert not list((tmp_path / "out" / "labels").glob("*/d.txt"))
    assert any("d.png" in m and "left out" in m for m in report.issues), report.issues
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {0: "inclusion", 1: "pit", 2: "scratch"}  # stable: sorted
    a = _lines(_label(tmp_path / "out", "a"))
    expected_a = [
        [2, (10 + 110) / 2 / 200, (20 + 30) / 2 / 100, 100 / 200, 10 / 100],
        [1, (150 + 160) / 2 / 200, (50 + 60) / 2 / 100, 10 / 200, 10 / 100],
        [2, (180 + 200) / 2 / 200, (80 + 100) / 2 / 100, 20 / 200, 20 / 100],
    ]
    np.testing.assert_allclose(a, expected_a, atol=1e-6)
    np.testing.assert_allclose(_lines(_label(tmp_path / "out", "b")), [[0, 0.5, 0.5, 1.0, 1.0]],
                               atol=1e-6)
    assert _label(tmp_path / "out", "c").read_text() == ""
    assert (report.clipped, report.degenerate, report.size_mismatch, report.truncated) == (1, 1, 1, 1)
    assert any("b.xml" in m and "60x40" in m and "50x40" in m for m in report.issues)
    # difficult objects skipped on request
    _, rep2 = convert_voc(src, tmp_path / "out2", difficult="skip")
    assert rep2.skipped_difficult == 1
    assert len(_lines(_label(tmp_path / "out2", "a"))) == 2


def test_coco_converts_with_arbitrary_category_ids(tmp_path):
    _img(tmp_path / "imgs" / "x.jpg", 100, 50)
    _img(tmp_path / "imgs" / "y.jpg", 80, 80)
    ann = {"images": [{"id": 7, "file_name": "x.jpg", "width": 100, "height": 50},
                      {"id": 9, "file_name": "y.jpg", "width": 80, "height": 80}],
           "categories": [{"id": 42, "name": "crack"}, {"id": 5, "name": "dent"}],
           "annotations": [{"id": 1, "image_id": 7, "category_id": 42, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                           {"id": 2, "image_id": 7, "category_id": 5, "bbox": [90, 40, 20, 20], "iscrowd": 0},
                           {"id": 3, "image_id": 9, "category_id": 5, "bbox": [0, 0, 8, 4], "iscrowd": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    data_yaml, report = convert_coco(tmp_path / "ann.json", tmp_path / "imgs", tmp_path / "out")
    assert yaml.safe_load(data_yaml.read_text())["names"] == {0: "dent", 1: "crack"}  # category-id order
    np.testing.assert_allclose(_lines(_label(tmp_path / "out", "x")),
                               [[1, 0.2, 0.2, 0.2, 0.2], [0, 0.95, 0.9, 0.1, 0.2]], atol=1e-6)
    np.testing.assert_allclose(_lines(_label(tmp_path / "out", "y")), [[0, 0.05, 0.025, 0.1, 0.05]],
                               atol=1e-6)
    assert report.clipped == 1
    # VOC's own flags (difficult, truncated) are not COCO's: its summary does not count them
    assert "clipped to the image: 1" in report.summary()
    assert "difficult" not in report.summary() and "truncated" not in report.summary()


def test_a_voc_summary_counts_voc_s_flags(tmp_path):
    src = tmp_path / "voc"
    for name in "abc":
        _img(src / "JPEGImages" / f"{name}.png", 40, 40)
        _voc_xml(src / "Annotations" / f"{name}.xml", f"{name}.png", (40, 40), [{"name": "pit", "box": (1, 1, 20, 20)}])
    _, report = convert_voc(src, tmp_path / "out")
    assert "difficult skipped: 0" in report.summary() and "truncated kept: 0" in report.summary()


def test_split_is_stratified_and_seeded(tmp_path):
    src = tmp_path / "voc"
    for i in range(40):
        _img(src / "JPEGImages" / f"{i}.png", 32, 32)
        name = "rare" if i < 10 else "common"
        _voc_xml(src / "Annotations" / f"{i}.xml", f"{i}.png", (32, 32), [{"name": name, "box": (2, 2, 10, 10)}])
    _, rep = convert_voc(src, tmp_path / "a", split=(0.5, 0.3, 0.2), seed=3)
    assert rep.splits == {"train": 20, "val": 12, "test": 8}
    rare_val = [p for p in (tmp_path / "a" / "labels" / "val").glob("*.txt") if int(p.stem) < 10]
    assert len(rare_val) == 3  # 30% of the 10 rare-class images
    convert_voc(src, tmp_path / "b", split=(0.5, 0.3, 0.2), seed=3)
    assert sorted(p.name for p in (tmp_path / "a" / "images" / "val").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b" / "images" / "val").iterdir())


def _planted(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for split, n in (("train", 6), ("val", 2)):
        for i in range(n):
            _img(root / "images" / split / f"{split}{i}.png", 64, 64, value=10 + 20 * i + (5 if split == "val" else 0))
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    lab = root / "labels" / "train"
    (lab / "train0.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n")      # class id >= nc (line 2)
    (lab / "train1.txt").write_text("0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.1 0.1\n")      # out of bounds (line 2)
    (lab / "train2.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 abc 0.1 0.1\n")      # non-numeric (line 2)
    (lab / "train3.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.0 0.1\n")      # zero size (line 2)
    (lab / "train4.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n")      # duplicate (line 2)
    (lab / "train5.txt").unlink()                                                  # missing labels
    (lab / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")                         # labels without image
    (root / "images" / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")  # unreadable
    (lab / "broken.txt").write_text("")
    cv2.imwrite(str(root / "images" / "train" / "deep.png"), np.full((64, 64), 1000, np.uint16))  # 12-bit in 16
    (lab / "deep.txt").write_text("")
    # leakage: val image identical to a train image
    (root / "images" / "val" / "val1.png").write_bytes((root / "images" / "train" / "train1.png").read_bytes())
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": {0: "scratch", 1: "pit"}}))
    return root / "data.yaml"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def test_checker_finds_each_planted_problem_once(tmp_path):
    data_yaml = _planted(tmp_path)
    before = _digest(data_yaml.parent)
    res = check_dataset(data_yaml)
    got = {(f.kind, Path(f.path).name, f.line) for f in res.findings}
    expected = {("class id", "train0.txt", 2), ("out of bounds", "train1.txt", 2), ("non-numeric", "train2.txt", 2),
                ("zero-size box", "train3.txt", 2), ("duplicate box", "train4.txt", 2),
                ("missing labels", "train5.txt", None), ("orphan labels", "orphan.txt", None),
                ("unreadable image", "broken.png", None), ("bit depth", "deep.png", None),
                ("leakage", "val1.png", None),
                ("class without instances", "data.yaml", None)}  # nc=2, and no label uses class 1
    assert got == expected, got ^ expected
    assert res.background["train"] >= 1
    proc = subprocess.run([GRADKIT, "check", f"data={data_yaml}"], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 1 and "class 5 but nc=2" in proc.stdout
    fixed, _ = fix_dataset(data_yaml, tmp_path / "fixed")
    assert _digest(data_yaml.parent) == before  # the original is untouched
    again = check_dataset(fixed)
    assert again.errors == [], [str(f) for f in again.errors]
    deep = cv2.imread(str(tmp_path / "fixed" / "images" / "train" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert deep.dtype == np.uint8


def test_train_stops_before_training_on_dataset_errors(tmp_path):
    data_yaml = _planted(tmp_path)
    proc = subprocess.run([GRADKIT, "train", "model=yolo26n.yaml", f"data={data_yaml}", "epochs=1", "imgsz=64",
                           f"project={tmp_path}", "name=x"], capture_output=True, text=True,
                          env={**os.environ, "YOLO_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "dataset error(s)" in proc.stderr and "class 5 but nc=2" in proc.stderr
    assert "gradkit.data.check=false" in proc.stderr
    assert not (tmp_path / "x" / "weights" / "last.pt").exists() and not (tmp_path / "x" / "results.csv").exists()


def test_class_names_with_accents_are_written_readable_in_data_yaml(tmp_path):
    # YAML's default \\xDF escapes are valid but unreadable for someone editing the file by hand
    src = tmp_path / "voc"
    for i in range(3):
        _img(src / "JPEGImages" / f"{i}.jpg", 64, 64)
        _voc_xml(src / "Annotations" / f"{i}.xml", f"{i}.jpg", (64, 64),
                 [{"name": "Kratzer groß", "box": (5, 5, 30, 30)}])
    data_yaml, _ = convert_voc(src, tmp_path / "out")
    assert "Kratzer groß" in data_yaml.read_text(encoding="utf-8")
    assert yaml.safe_load(data_yaml.read_text(encoding="utf-8"))["names"] == {0: "Kratzer groß"}
    fixed, _ = fix_dataset(data_yaml, tmp_path / "fixed")
    assert "Kratzer groß" in fixed.read_text(encoding="utf-8")


def test_names_written_in_another_unicode_form_find_their_image(tmp_path):
    # macOS file systems store "ö" decomposed (o + U+0308); annotation tools write it composed
    import json
    import unicodedata

    composed = [f"Größe_{i}" for i in range(3)]
    src = tmp_path / "voc"
    for stem in composed:
        _img(src / "JPEGImages" / f"{unicodedata.normalize('NFD', stem)}.jpg", 64, 64)
        _voc_xml(src / "Annotations" / f"{stem}.xml", f"{stem}.jpg",
                 (64, 64), [{"name": "pit", "box": (5, 5, 30, 30)}])
    _, report = convert_voc(src, tmp_path / "out")
    assert report.images == 3 and not [m for m in report.issues if "not found" in m], report.issues
    ann = {"images": [{"id": i, "file_name": f"{s}.jpg", "width": 64, "height": 64} for i, s in enumerate(composed)],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 8], "iscrowd": 0}
                           for i in range(3)], "categories": [{"id": 1, "name": "pit"}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    _, report = convert_coco(tmp_path / "ann.json", src / "JPEGImages", tmp_path / "out2")
    assert report.images == 3 and not [m for m in report.issues if "not found" in m], report.issues
    # a folder named in file_name, stored decomposed too
    (src / "JPEGImages" / unicodedata.normalize("NFD", "Prüfung")).mkdir()
    for stem in composed:
        (src / "JPEGImages" / f"{unicodedata.normalize('NFD', stem)}.jpg").rename(
            src / "JPEGImages" / unicodedata.normalize("NFD", "Prüfung") / f"{unicodedata.normalize('NFD', stem)}.jpg")
    for im in ann["images"]:
        im["file_name"] = f"Prüfung/{im['file_name']}"
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    _, report = convert_coco(tmp_path / "ann.json", src / "JPEGImages", tmp_path / "out3")
    assert report.images == 3 and not [m for m in report.issues if "not found" in m], report.issues


def test_files_are_read_and_written_as_utf_8_whatever_the_locale(tmp_path):
    """Ultralytics reads a data YAML as UTF-8; gradkit read it in the locale's encoding, so under LC_ALL=C a valid
    YAML naming a class 'Lötstelle' was "not UTF-8 text" (on Windows' cp1252 it would load with garbled names).
    Oracle: the same calls in a process whose locale encoding is ASCII."""
    src = tmp_path / "voc"
    for i in range(3):
        _img(src / "JPEGImages" / f"{i}.jpg", 64, 64, value=60 * i)  # no two alike: no leakage
        _voc_xml(src / "Annotations" / f"{i}.xml", f"{i}.jpg", (64, 64),
                 [{"name": "Lötstelle", "box": (5, 5, 30, 30)}])
    code = (
        "import sys, yaml\n"
        "from gradkit.data import check_dataset, convert_voc, fix_dataset\n"
        "from gradkit.data.fingerprint import fingerprint_dataset\n"
        "assert sys.getfilesystemencoding() and __import__('locale').getpreferredencoding(False) != 'UTF-8'\n"
        f"data, _ = convert_voc({str(src)!r}, {str(tmp_path / 'out')!r})\n"
        "res = check_dataset(data)\n"
        "assert not res.errors, [str(f) for f in res.errors]\n"
        "fixed, _ = fix_dataset(data, " + repr(str(tmp_path / "fixed")) + ")\n"
        "assert yaml.safe_load(open(fixed, encoding='utf-8'))['names'] == {0: 'Lötstelle'}\n"
        "print(fingerprint_dataset(data).class_names)\n")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "utf-8"}
    script = tmp_path / "run.py"
    script.write_text(code, encoding="utf-8")  # a command line under LC_ALL=C could not carry the name
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, encoding="utf-8", env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Lötstelle" in proc.stdout


def test_splits_that_cannot_be_filled_say_which_images_were_left_out_and_why(tmp_path):
    """Two of three images held a crowd region and were left out: the refusal said only "1 image(s) cannot fill the
    splits train, val", which reads as a dataset of one image."""
    for name in "abc":
        _img(tmp_path / "imgs" / f"{name}.jpg", 64, 64)
    ann = {"images": [{"id": i, "file_name": f"{n}.jpg", "width": 64, "height": 64} for i, n in enumerate("abc")],
           "categories": [{"id": 1, "name": "pit"}],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 8], "iscrowd": int(i > 0)}
                           for i in range(3)]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match=r"1 image\(s\) cannot fill the splits train, val: .*left out: 2 for their "
                                         r"crowd regions.*more whole images$") as err:  # 2 splits: not fewer
        convert_coco(tmp_path / "ann.json", tmp_path / "imgs", tmp_path / "out")
    assert "b.jpg" in str(err.value) and "c.jpg" in str(err.value) and not (tmp_path / "out").exists()
