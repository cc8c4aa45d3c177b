"""Converters and ``check --fix`` with careless hands and hostile files: outputs that could overwrite
sources, stale outputs, colliding names, paths that escape ``src=``, files that are not images."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset, convert_coco, convert_voc, fix_dataset


def _img(path: Path, w: int = 32, h: int = 32, value: int = 100, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3) if dtype == np.uint8 else (h, w), value, dtype))


def _voc_xml(path: Path, filename: str, size: tuple[int, int], objects: list[tuple[str, tuple]]):
    objs = "".join(f"<object><name>{n}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax>"
                   f"<ymax>{b[3]}</ymax></bndbox></object>" for n, b in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height></size>{objs}</annotation>", encoding="utf-8")


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _voc_set(src: Path, n: int, names=("scratch", "pit"), prefix: str = "") -> None:
    for i in range(n):
        _img(src / "JPEGImages" / f"{prefix}{i}.png", value=10 + i)
        _voc_xml(src / "Annotations" / f"{prefix}{i}.xml", f"{prefix}{i}.png", (32, 32),
                 [(names[i % len(names)], (3, 3, 12, 12))])


def _coco_set(root: Path, n: int, names=("crack", "dent")) -> Path:
    images, anns = [], []
    for i in range(n):
        _img(root / "imgs" / f"{i}.png", value=10 + i)
        images.append({"id": i, "file_name": f"{i}.png", "width": 32, "height": 32})
        anns.append({"id": i, "image_id": i, "category_id": 1 + i % len(names), "bbox": [2, 2, 8, 8], "iscrowd": 0})
    cats = [{"id": 1 + k, "name": name} for k, name in enumerate(names)]
    (root / "ann.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "ann.json"


def _split_members(out: Path) -> dict[str, set[str]]:
    return {d.name: {str(p.relative_to(d)) for p in d.rglob("*") if p.is_file()}
            for d in (out / "images").iterdir()}


# -- issue 12 §4: converters that cannot leak or mislead -------------------------------------------------

def test_coco_default_split_is_real_and_seeded(tmp_path):
    ann = _coco_set(tmp_path, 20)
    data_yaml, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "a")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["val"] != data["train"]
    members = _split_members(tmp_path / "a")
    assert members["train"] and members["val"] and not members["train"] & members["val"]
    assert sum(map(len, members.values())) == 20 == report.images
    assert report.splits == {k: len(v) for k, v in members.items()}
    convert_coco(ann, tmp_path / "imgs", tmp_path / "b")  # same default seed: the same split
    assert _split_members(tmp_path / "b") == members
    convert_coco(ann, tmp_path / "imgs", tmp_path / "c", seed=1)
    assert _split_members(tmp_path / "c") != members


def test_tiny_split_still_gets_a_val_image_and_never_validates_on_train(tmp_path):
    ann = _coco_set(tmp_path, 2)
    data_yaml, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "out")
    data = yaml.safe_load(data_yaml.read_text())
    assert data["val"] != data["train"]
    assert report.splits == {"train": 1, "val": 1}
    with pytest.raises(ValueError, match="1 image"):
        convert_coco(_coco_set(tmp_path / "one", 1), tmp_path / "one" / "imgs", tmp_path / "out1")


def test_convert_into_nonempty_out_is_refused_and_overwrite_clears_only_its_own_files(tmp_path, gradkit_here):
    src = tmp_path / "voc"
    _voc_set(src, 8)
    out = tmp_path / "out"
    convert_voc(src, out, split=(0.5, 0.5))
    (out / "notes.txt").write_text("mine")
    first = _files(out)
    for i in (0, 1, 2, 3):  # the second conversion has fewer images: stale copies would leak
        (src / "JPEGImages" / f"{i}.png").unlink()
        (src / "Annotations" / f"{i}.xml").unlink()
    with pytest.raises(ValueError, match="overwrite=true"):
        convert_voc(src, out, split=(0.5, 0.5))
    assert _files(out) == first
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={out}", "split=0.5,0.5")
    assert proc.returncode != 0 and "overwrite=true" in proc.stderr and "Traceback" not in proc.stderr
    assert _files(out) == first
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={out}", "split=0.5,0.5", "overwrite=true")
    assert proc.returncode == 0, proc.stderr
    images = {Path(p).name for p in _files(out / "images")}
    assert images == {f"{i}.png" for i in range(4, 8)}
    assert {Path(p).stem for p in _files(out / "labels")} == {str(i) for i in range(4, 8)}
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_folder_no_conversion_wrote(tmp_path):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    other = tmp_path / "other"  # somebody's dataset, not written by gradkit
    _img(other / "images" / "train" / "x.png")
    (other / "data.yaml").write_text("names: {0: a}\n")
    before = _digest(other)
    with pytest.raises(ValueError, match="no list of files"):
        convert_voc(src, other, split=(0.5, 0.5), overwrite=True)
    assert _digest(other) == before


def test_voc_clip_message_quotes_the_files_own_coordinates(tmp_path):
    src = tmp_path / "voc"
    _img(src / "JPEGImages" / "a.png", 200, 100)
    _img(src / "JPEGImages" / "b.png", 200, 100)
    _voc_xml(src / "Annotations" / "a.xml", "a.png", (200, 100), [("scratch", (181, 81, 220, 120))])
    _voc_xml(src / "Annotations" / "b.xml", "b.png", (200, 100), [("scratch", (11, 21, 110, 30))])
    _, report = convert_voc(src, tmp_path / "out", split=(0.5, 0.5))
    (msg,) = [m for m in report.issues if "clipped" in m]
    assert "181,81,220,120" in msg.replace(" ", ""), msg


def test_split_too_small_for_every_class_names_the_missing_classes(tmp_path):
    src = tmp_path / "voc"
    _voc_set(src, 9, names=("scratch",))
    _img(src / "JPEGImages" / "rare.png")
    _voc_xml(src / "Annotations" / "rare.xml", "rare.png", (32, 32), [("pit", (1, 1, 9, 9))])
    _, report = convert_voc(src, tmp_path / "out", split=(0.7, 0.3))
    # oracle: the classes each split's label files actually contain
    names = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"]
    for split in ("train", "val"):
        present = {names[int(line.split()[0])] for p in (tmp_path / "out" / "labels" / split).glob("*.txt")
                   for line in p.read_text().splitlines()}
        missing = set(names.values()) - present
        warned = [m for m in report.issues if m.startswith(f"{split} split")]
        assert bool(missing) == bool(warned), (split, missing, warned)
        for name in missing:
            assert name in warned[0]
    assert any(m.startswith("val split") or m.startswith("train split") for m in report.issues)


# -- check --fix: says what it changed, clips instead of dropping --------------------------------------------

def _fix_case(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for split in ("train", "val"):
        for i in range(2):
            _img(root / "images" / split / f"{split}{i}.png", 64, 64, value=20 + 40 * i + (7 if split == "val" else 0))
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "train0.txt").write_text(
        "0 0.5 0.5 0.2 0.2\n"      # 1 fine
        "1 0.95 0.5 0.2 0.2\n"     # 2 sticks out on the right: x in [0.85, 1.05] -> [0.85, 1.0]
        "0 1.5 0.5 0.2 0.2\n"      # 3 entirely outside: dropped
        "0 0.5 0.5 0.2 0.2\n"      # 4 a duplicate of 1: dropped
        "0 0.1 0.02 0.1 0.1\n")    # 5 sticks out at the top: y in [-0.03, 0.07] -> [0, 0.07]
    (root / "labels" / "train" / "train1.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # class id >= nc: left out
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train",
                                                    "val": "images/val", "names": {0: "scratch", 1: "pit"}}))
    return root / "data.yaml"


def test_fix_clips_boxes_and_lists_every_change_by_file_and_line(tmp_path, gradkit_here):
    data_yaml = _fix_case(tmp_path)
    data_yaml.write_text(data_yaml.read_text() + "download: import os\n")
    before = _digest(data_yaml.parent)
    fixed, changes = fix_dataset(data_yaml, tmp_path / "fixed")
    assert _digest(data_yaml.parent) == before
    assert "download" not in yaml.safe_load(fixed.read_text())
    assert [c.path for c in changes if "download" in c.detail] == [str(data_yaml)]
    got = [[float(v) for v in line.split()] for line in
           (tmp_path / "fixed" / "labels" / "train" / "train0.txt").read_text().splitlines()]
    np.testing.assert_allclose(got, [[0, 0.5, 0.5, 0.2, 0.2], [1, 0.925, 0.5, 0.15, 0.2],
                                     [0, 0.1, 0.035, 0.1, 0.07]], atol=1e-6)
    lab = str(data_yaml.parent / "labels" / "train" / "train0.txt")
    by_line = {c.line: c for c in changes if c.path == lab}
    assert set(by_line) == {2, 3, 4, 5}
    assert by_line[2].action == by_line[5].action == "clipped" and "1 0.95 0.5 0.2 0.2" in str(by_line[2])
    assert by_line[3].action == by_line[4].action == "dropped"
    train1 = str(data_yaml.parent / "images" / "train" / "train1.png")
    assert [c.action for c in changes if c.path == train1] == ["left out"]  # its one defect has no usable label
    assert not (tmp_path / "fixed" / "images" / "train" / "train1.png").exists()
    assert check_dataset(fixed).errors == []
    proc = gradkit_here("check", f"data={data_yaml}", "--fix", f"out={tmp_path / 'fixed2'}")
    assert f"{lab}:2" in proc.stdout and f"{lab}:3" in proc.stdout and "clipped" in proc.stdout
    # the source's errors are listed, the copy checks clean: --fix succeeded (gradkit check --fix && gradkit plan)
    assert "ERROR" in proc.stdout and proc.returncode == 0


# -- issue 18 §1: outputs never overwrite the sources -----------------------------------------------------

def _yaml_outside_layout(tmp_path: Path) -> tuple[Path, Path]:
    """datasets/ds.yaml next to datasets/ds/, as this repository ships datasets/defects-synth.yaml."""
    root = tmp_path / "datasets" / "ds"
    for split in ("train", "val"):
        for i in range(2):
            _img(root / "images" / split / f"{i}.png", 32, 32, value=600 + 100 * i, dtype=np.uint16)  # low 16-bit
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.95 0.5 0.2 0.2\n")
    data_yaml = tmp_path / "datasets" / "ds.yaml"
    data_yaml.write_text(yaml.safe_dump({"path": "ds", "train": "images/train", "val": "images/val",
                                         "names": {0: "scratch"}}))
    return data_yaml, root


@pytest.mark.parametrize("where", ["root", "parent", "split", "inside_split", "labels"])
def test_fix_refuses_outputs_that_touch_the_dataset(tmp_path, where, gradkit_here):
    data_yaml, root = _yaml_outside_layout(tmp_path)
    out = {"root": root, "parent": tmp_path / "datasets", "split": root / "images" / "train",
           "inside_split": root / "images" / "val" / "fixed", "labels": root / "labels"}[where]
    before = _digest(tmp_path)
    with pytest.raises(ValueError, match=r"refused|dataset|split"):
        fix_dataset(data_yaml, out)
    proc = gradkit_here("check", f"data={data_yaml}", "--fix", f"out={out}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(out.resolve()) in proc.stderr
    assert _digest(tmp_path) == before


def test_fix_into_another_datasets_folder_is_refused(tmp_path):
    data_yaml, _ = _yaml_outside_layout(tmp_path)
    other = tmp_path / "other"
    _img(other / "images" / "train" / "0.png", value=3)
    (other / "labels" / "train").mkdir(parents=True)
    (other / "labels" / "train" / "0.txt").write_text("0 0.1 0.1 0.1 0.1\n")
    (other / "data.yaml").write_text("names: {0: other}\n")
    before = _digest(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"not empty|no list of files"):
            fix_dataset(data_yaml, other, overwrite=overwrite)
    assert _digest(tmp_path) == before
    fix_dataset(data_yaml, tmp_path / "fresh")  # an empty folder is fine; twice needs overwrite
    with pytest.raises(ValueError, match="overwrite=true"):
        fix_dataset(data_yaml, tmp_path / "fresh")
    fix_dataset(data_yaml, tmp_path / "fresh", overwrite=True)
    assert _digest(tmp_path / "other") == before_other(before)


def before_other(digests: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("other/"): v for k, v in digests.items() if k.startswith("other/")}


@pytest.mark.parametrize("where", ["src", "inside_src", "contains_src", "images", "json_folder"])
def test_converters_refuse_outputs_that_touch_the_sources(tmp_path, where, gradkit_here):
    src = tmp_path / "data" / "voc"
    _voc_set(src, 4)
    ann = _coco_set(tmp_path / "data" / "coco", 4)
    before = _digest(tmp_path)
    if where in {"src", "inside_src", "contains_src"}:
        out = {"src": src, "inside_src": src / "yolo", "contains_src": tmp_path / "data"}[where]
        with pytest.raises(ValueError, match=r"src|source"):
            convert_voc(src, out, split=(0.5, 0.5), overwrite=True)
        proc = gradkit_here("convert", "voc", f"src={src}", f"out={out}", "overwrite=true")
    else:
        out = {"images": ann.parent / "imgs", "json_folder": ann.parent}[where]
        with pytest.raises(ValueError, match=r"images|annotation"):
            convert_coco(ann, ann.parent / "imgs", out, overwrite=True)
        proc = gradkit_here("convert", "coco", f"src={ann}", f"images={ann.parent / 'imgs'}", f"out={out}",
                        "overwrite=true")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and str(out.resolve()) in proc.stderr
    assert _digest(tmp_path) == before


# -- issue 18 §2: converters keep every image ------------------------------------------------------------

def _printed_counts(stdout: str) -> tuple[int, dict[str, int]]:
    images = int(re.search(r"^(\d+) images", stdout, re.M).group(1))
    splits = {k: int(v) for k, v in re.findall(r"(train|val|test) (\d+)", stdout.split("splits:")[1].splitlines()[0])}
    return images, splits


def test_voc_same_file_name_in_two_camera_folders_keeps_both(tmp_path, gradkit_here):
    src = tmp_path / "voc"
    for cam, value in (("cam1", 50), ("cam2", 150)):
        for i in range(3):
            _img(src / cam / f"{i:04d}.jpg", value=value + i)
            filename = f"{i:04d}.jpg" if i else "0000"  # some tools write the stem only
            _voc_xml(src / cam / f"{i:04d}.xml", filename, (32, 32), [(cam, (1, 1, 9 + i, 9))])
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={tmp_path / 'out'}", "split=0.5,0.5")
    assert proc.returncode == 0, proc.stderr
    images, splits = _printed_counts(proc.stdout)
    on_disk = {s: len([p for p in (tmp_path / "out" / "images" / s).rglob("*") if p.is_file()]) for s in splits}
    assert images == 6 == sum(on_disk.values()) and splits == on_disk
    labels = list((tmp_path / "out" / "labels").rglob("*.txt"))
    assert len(labels) == 6
    names = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"]
    for lab in labels:  # every label still belongs to its own camera's image
        cam = lab.parent.name
        (line,) = lab.read_text().splitlines()
        assert names[int(line.split()[0])] == cam
        img = Path(str(lab).replace("/labels/", "/images/")).with_suffix(".jpg")
        i = int(lab.stem)
        assert abs(float(line.split()[3]) * 32 - (9 + i)) < 1e-4
        assert abs(int(cv2.imread(str(img))[0, 0, 0]) - ((50 if cam == "cam1" else 150) + i)) <= 2


def test_coco_same_file_name_in_two_folders_keeps_both(tmp_path, gradkit_here):
    images, anns = [], []
    for k, cam in enumerate(("cam1", "cam2")):
        for i in range(3):
            _img(tmp_path / "imgs" / cam / f"{i:04d}.png", value=50 * k + i)
            images.append({"id": 10 * k + i, "file_name": f"{cam}/{i:04d}.png", "width": 32, "height": 32})
            anns.append({"id": 10 * k + i, "image_id": 10 * k + i, "category_id": k + 1, "bbox": [1, 1, 4, 4]})
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": anns,
                                                   "categories": [{"id": 1, "name": "cam1"},
                                                                  {"id": 2, "name": "cam2"}]}))
    proc = gradkit_here("convert", "coco", f"src={tmp_path / 'ann.json'}", f"images={tmp_path / 'imgs'}",
                    f"out={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    n, splits = _printed_counts(proc.stdout)
    written = [p for p in (tmp_path / "out" / "images").rglob("*.png")]
    assert n == 6 == len(written) == sum(splits.values())
    for lab in (tmp_path / "out" / "labels").rglob("*.txt"):
        assert int(lab.read_text().split()[0]) == ("cam1", "cam2").index(lab.parent.name)


def test_paths_outside_src_are_refused_not_read(tmp_path):
    secret = tmp_path / "secret.png"
    _img(secret, value=222)
    src = tmp_path / "voc"
    _voc_set(src, 4)
    _voc_xml(src / "Annotations" / "abs.xml", str(secret), (32, 32), [("scratch", (1, 1, 5, 5))])
    _voc_xml(src / "Annotations" / "up.xml", "../../secret.png", (32, 32), [("scratch", (1, 1, 5, 5))])
    _, report = convert_voc(src, tmp_path / "out", split=(0.5, 0.5))
    assert report.images == 4
    assert sum("outside" in m and "secret.png" in m for m in report.issues) == 2
    assert not [p for p in (tmp_path / "out").rglob("*secret*")]
    coco = tmp_path / "coco"
    ann = _coco_set(coco, 4)
    data = json.loads(ann.read_text())
    data["images"] += [{"id": 100, "file_name": str(secret)}, {"id": 101, "file_name": "../../secret.png"}]
    ann.write_text(json.dumps(data))
    _, report = convert_coco(ann, coco / "imgs", tmp_path / "out2")
    assert report.images == 4 and sum("outside" in m and "secret.png" in m for m in report.issues) == 2


def _png_header(path: Path, w: int, h: int) -> None:
    """A PNG that claims w x h pixels with almost no pixel data (a decompression-bomb header)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_bad_files_become_findings_and_the_run_goes_on(tmp_path, gradkit_here):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    img = src / "JPEGImages"
    _png_header(img / "bomb.png", 40000, 40000)      # over twice PIL's limit: PIL refuses to open it
    _png_header(img / "huge.png", 13000, 13000)      # 169 MP: over the limit, would take GBs to decode
    (img / "loop.png").symlink_to("loop.png")
    (img / "dangling.png").symlink_to(tmp_path / "gone.png")
    (img / "text.png").write_text("not an image")
    for stem in ("bomb", "huge", "loop", "dangling", "text"):
        _voc_xml(src / "Annotations" / f"{stem}.xml", f"{stem}.png", (32, 32), [("scratch", (1, 1, 5, 5))])
    (src / "Annotations" / "loopxml.xml").symlink_to("loopxml.xml")
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={tmp_path / 'out'}", "split=0.5,0.5")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    n, _ = _printed_counts(proc.stdout)
    assert n == 4 == len(list((tmp_path / "out" / "images").rglob("*.png")))
    for stem, why in (("bomb", "pixels"), ("huge", "pixels"), ("loop", "link"), ("dangling", "link"),
                      ("text", "image"), ("loopxml", "link")):
        assert re.search(rf"{stem}\.(png|xml).*{why}", proc.stdout), (stem, proc.stdout)


def test_printed_findings_are_capped_with_a_summary(tmp_path, gradkit_here):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    for i in range(150):
        _voc_xml(src / "Annotations" / f"missing{i}.xml", f"missing{i}.png", (32, 32), [])
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={tmp_path / 'out'}", "split=0.5,0.5")
    assert proc.returncode == 0, proc.stderr
    shown = [line for line in proc.stdout.splitlines() if "missing" in line and "not found" in line]
    assert 0 < len(shown) <= 50
    listed = tmp_path / "out" / "conversion-issues.txt"
    assert f"{150 - len(shown)} more" in proc.stdout and str(listed) in proc.stdout
    assert sum("not found" in line for line in listed.read_text().splitlines()) == 150


def test_missing_coco_json_is_a_one_line_error(tmp_path, gradkit_here):
    proc = gradkit_here("convert", "coco", f"src={tmp_path / 'nope.json'}", f"images={tmp_path / 'imgs'}",
                    f"out={tmp_path / 'out'}")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "nope.json" in proc.stderr


@pytest.mark.parametrize("out", ["datasets/ds", "datasets", "."])
def test_fix_refuses_the_dataset_of_a_yaml_whose_path_is_relative_to_the_working_directory(tmp_path, out,
                                                                                          gradkit_here):
    """The layout of this repository's datasets/defects-synth.yaml: ``path: datasets/defects-synth``,
    relative to where commands run (as Ultralytics reads it), not to the YAML's folder."""
    data_yaml, root = _yaml_outside_layout(tmp_path)
    data_yaml.write_text(yaml.safe_dump({"path": "datasets/ds", "train": "images/train", "val": "images/val",
                                         "names": {0: "scratch"}}))
    before = _digest(tmp_path)
    proc = gradkit_here("check", "data=datasets/ds.yaml", "--fix", f"out={out}", "overwrite=true", cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "refused" in proc.stderr and str(root) in proc.stderr
    assert _digest(tmp_path) == before


def test_fix_leaves_out_a_leaked_16bit_image_instead_of_rescaling_it(tmp_path):
    data_yaml = _fix_case(tmp_path)
    root = data_yaml.parent
    _img(root / "images" / "train" / "deep.png", 64, 64, value=900, dtype=np.uint16)
    (root / "images" / "val" / "deep_copy.png").write_bytes((root / "images" / "train" / "deep.png").read_bytes())
    fixed, changes = fix_dataset(data_yaml, tmp_path / "fixed")
    assert (tmp_path / "fixed" / "images" / "train" / "deep.png").exists()
    assert not list((tmp_path / "fixed" / "images" / "val").glob("deep_copy*"))
    assert any(c.action == "left out" and c.path.endswith("deep_copy.png") for c in changes)
    assert not [f for f in check_dataset(fixed).errors if f.kind == "leakage"]


def test_output_folder_never_writes_through_a_link_onto_a_source(tmp_path):
    from gradkit.data.output import OutputFolder

    source = tmp_path / "src" / "a.txt"
    source.parent.mkdir()
    source.write_text("original")
    folder = OutputFolder(tmp_path / "out", {"source folder": source.parent}, False, "test")
    (folder.root / "labels").mkdir()
    (folder.root / "labels" / "a.txt").symlink_to(source)   # planted after the folder was checked
    (folder.root / "images").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="source file"):
        folder.path("labels/a.txt")
    with pytest.raises(ValueError, match="outside out="):
        folder.path("images/x.png")
    assert source.read_text() == "original" and not (tmp_path / "elsewhere").exists()


def test_cli_overwrite_takes_true_or_false_only(tmp_path, gradkit_here):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    proc = gradkit_here("convert", "voc", f"src={src}", f"out={tmp_path / 'out'}", "overwrite=1")
    assert proc.returncode != 0 and "overwrite" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_refused_split_leaves_the_previous_output_in_place(tmp_path):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    convert_voc(src, tmp_path / "out", split=(0.5, 0.5))
    before = _digest(tmp_path / "out")
    with pytest.raises(ValueError, match="val no share"):
        convert_voc(src, tmp_path / "out", split=(1.0, 0.0), overwrite=True)
    assert _digest(tmp_path / "out") == before


def test_overwrite_never_deletes_through_a_linked_folder(tmp_path):
    src = tmp_path / "voc"
    _voc_set(src, 4)
    out = tmp_path / "out"
    convert_voc(src, out, split=(0.5, 0.5))
    victim = tmp_path / "victim"  # same file names as the previous output's labels
    (out / "labels").rename(victim)
    (out / "labels").symlink_to(victim, target_is_directory=True)
    before = _digest(victim)
    with pytest.raises(ValueError, match="link"):
        convert_voc(src, out, split=(0.5, 0.5), overwrite=True)
    assert _digest(victim) == before


def test_kept_folders_never_hide_labels_from_ultralytics(tmp_path):
    """Ultralytics finds a label by replacing the last /images/ of the image path with /labels/: a kept
    source folder named images must not be that last one."""
    from ultralytics.data.utils import img2label_paths

    src = tmp_path / "voc"
    for part, value in (("train", 40), ("validation", 140)):
        for i in range(3):
            _img(src / part / "images" / f"{i}.jpg", value=value + i)
            _voc_xml(src / part / "annotations" / f"{i}.xml", f"{i}.jpg", (32, 32), [(part, (1, 1, 5 + i, 9))])
    data_yaml, report = convert_voc(src, tmp_path / "out", split=(0.5, 0.5))
    names = yaml.safe_load(data_yaml.read_text())["names"]
    images = sorted(str(p) for p in (tmp_path / "out" / "images").rglob("*.jpg"))
    assert len(images) == 6 == report.images
    for img, label in zip(images, img2label_paths(images), strict=True):
        (line,) = Path(label).read_text(encoding="utf-8").splitlines()
        part = "train" if int(cv2.imread(img)[0, 0, 0]) < 100 else "validation"
        assert names[int(line.split()[0])] == part


# -- a second user's trial: outputs of the other commands, and data files that are not what they claim ------------
def _tiny_yolo(root: Path, n: int = 4) -> Path:
    for i in range(n):
        for split in ("train", "val"):
            _img(root / "images" / split / f"{i}.png", 64, 64, value=30 + 20 * i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{i}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                                    "names": ["scratch"]}))
    return root / "data.yaml"


def test_augment_preview_never_lands_on_the_dataset(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    before = _digest(tmp_path / "ds")
    for out in (tmp_path / "ds" / "images" / "train" / "0.png", tmp_path / "ds" / "preview.jpg"):
        proc = gradkit_here("augment", f"data={data}", "n=2", "imgsz=64", f"out={out}")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and "dataset" in proc.stderr, proc.stderr[-800:]
    assert _digest(tmp_path / "ds") == before


@pytest.mark.parametrize(("arg", "needle"), [("n=0", "n="), ("n=abc", "n="), ("imgsz=-5", "imgsz="),
                                             ("out=preview.txt", "out=")])
def test_augment_bad_arguments_are_one_line(tmp_path, arg, needle, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    proc = gradkit_here("augment", f"data={data}", "imgsz=64", arg, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr[-800:]


def test_synth_refuses_a_folder_that_already_holds_files(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    before = _digest(tmp_path / "ds")
    proc = gradkit_here("synth", f"out={data.parent}", "images=3", "imgsz=64")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "not empty" in proc.stderr, proc.stderr[-800:]
    assert _digest(tmp_path / "ds") == before


@pytest.mark.parametrize(("text", "needle"), [("names: [a\n", "YAML"), ("names: 5\ntrain: images/train\n", "names"),
                                              ("path: 7\nnames: [a]\ntrain: images/train\n", "path"),
                                              ("- a\n- b\n", "not a YOLO dataset YAML")])
def test_check_on_a_broken_yaml_is_one_line_naming_it(tmp_path, text, needle, gradkit_here):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    proc = gradkit_here("check", f"data={bad}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-800:]
    assert str(bad) in proc.stderr and needle in proc.stderr, proc.stderr


def test_check_on_a_folder_names_it(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    proc = gradkit_here("check", f"data={data.parent}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "folder" in proc.stderr, proc.stderr[-800:]


def test_non_finite_label_values_are_errors_not_passed_on(tmp_path):
    data = _tiny_yolo(tmp_path / "ds")
    (tmp_path / "ds" / "labels" / "train" / "1.txt").write_text("0 0.5 0.5 nan 0.1\n")
    (tmp_path / "ds" / "labels" / "train" / "2.txt").write_text("0 inf 0.5 0.2 0.1\n")
    (tmp_path / "ds" / "labels" / "train" / "3.txt").write_text("0.0 0.5 0.5 0.2 0.1\n")   # Ultralytics reads 0.0 as 0
    (tmp_path / "ds" / "labels" / "val" / "3.txt").write_text("0.5 0.5 0.5 0.2 0.1\n")     # but not 0.5
    result = check_dataset(data)
    assert not any(f.path.endswith("train/3.txt") for f in result.findings)
    assert any(f.path.endswith("val/3.txt") and f.kind == "class id" for f in result.errors)
    flagged = {Path(f.path).name for f in result.errors if f.kind == "non-finite"}
    assert {"1.txt", "2.txt"} <= flagged, [str(f) for f in result.errors]


def test_convert_split_that_is_not_numbers_is_one_line(tmp_path, gradkit_here):
    _voc_set(tmp_path / "voc", 4)
    proc = gradkit_here("convert", "voc", f"src={tmp_path / 'voc'}", f"out={tmp_path / 'out'}", "split=a,b")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "split" in proc.stderr, proc.stderr[-800:]
    proc = gradkit_here("convert", "voc", f"src={tmp_path / 'voc'}", f"out={tmp_path / 'out'}", "seed=x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "seed=" in proc.stderr, proc.stderr[-800:]


def test_voc_nan_coordinates_are_listed_not_written(tmp_path):
    _voc_set(tmp_path / "voc", 4)
    _voc_xml(tmp_path / "voc" / "Annotations" / "0.xml", "0.png", (32, 32), [("scratch", ("nan", 3, 12, 12))])
    _, report = convert_voc(tmp_path / "voc", tmp_path / "out", seed=0)
    labels = "".join(p.read_text() for p in (tmp_path / "out" / "labels").rglob("*.txt"))
    assert "nan" not in labels.lower()
    assert any("0.xml" in str(i) for i in report.issues), [str(i) for i in report.issues]


def test_check_fix_overwrite_of_a_foreign_folder_is_one_line(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    foreign = tmp_path / "notgradkits"
    _img(foreign / "images" / "train" / "x.png")
    before = _digest(foreign)
    proc = gradkit_here("check", f"data={data}", "--fix", f"out={foreign}", "overwrite=true")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "no list of files" in proc.stderr, \
        proc.stderr[-800:]
    assert _digest(foreign) == before


def test_coco_ambiguities_are_refused_or_listed_never_silent(tmp_path):
    ann = _coco_set(tmp_path, 4)
    doc = json.loads(ann.read_text())
    twice = {**doc, "categories": doc["categories"] + [{"id": 1, "name": "scratch"}]}
    ann.write_text(json.dumps(twice))
    with pytest.raises(ValueError, match="category id 1"):
        convert_coco(ann, tmp_path / "imgs", tmp_path / "o1")
    same_image = {**doc, "images": doc["images"] + [{**doc["images"][0], "file_name": "1.png"}]}
    ann.write_text(json.dumps(same_image))
    with pytest.raises(ValueError, match="image id 0"):
        convert_coco(ann, tmp_path / "imgs", tmp_path / "o2")
    extra = [{"id": 90, "image_id": 99, "category_id": 1, "bbox": [1, 1, 5, 5]},
             {"id": 91, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1}]
    ann.write_text(json.dumps({**doc, "annotations": doc["annotations"] + extra}))
    _, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "o3")
    issues = " ".join(report.issues)
    assert "annotation 90" in issues and "image_id 99" in issues
    assert "1 crowd region" in issues


def test_an_image_with_a_crowd_region_is_left_out_not_written_with_its_group_as_background(tmp_path):
    """A COCO crowd region (iscrowd=1) marks a group of objects not boxed one by one (a cluster of pits). It was
    skipped and its image written without it: the group taught as background, as an unconvertible box would be.
    Now the image is left out and named, like one with a box that cannot be converted. Oracle: the written label
    files (image 1 absent, the others each with their one box) and the report's lines."""
    ann = _coco_set(tmp_path, 6)
    doc = json.loads(ann.read_text())
    crowd = {"id": 91, "image_id": 1, "category_id": 1, "bbox": [10, 10, 12, 12], "iscrowd": 1,
             "segmentation": {"counts": [0, 4], "size": [32, 32]}}
    ann.write_text(json.dumps({**doc, "annotations": doc["annotations"] + [crowd]}))
    _, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "out")
    written = {p.stem: p.read_text().splitlines() for p in (tmp_path / "out" / "labels").rglob("*.txt")}
    assert sorted(written) == ["0", "2", "3", "4", "5"] and all(len(v) == 1 for v in written.values())
    assert report.images == 5
    named = [line for line in report.issues if "1.png" in line]
    assert len(named) == 1 and "left out" in named[0] and "crowd region" in named[0], report.issues


@pytest.mark.parametrize(("change", "needle"), [
    ({"val": None, "vla": "images/val"}, "is 'vla' meant to be 'val'?"),   # a typo Ultralytics would refuse
    ({"nc": 3}, "nc: 3"),                                             # 1 name
    ({"names": {0: "scratch", 2: "pit"}}, "0, 1"),                    # ids with a gap
    ({"names": ["scratch", "scratch"]}, "names: 'scratch' is the name of classes 0 and 1"),  # reports merge them
    ({"names": ["scratch", None]}, "names: class 1 has no name"),
    ({"names": ["scratch", " "]}, "names: class 1 has no name"),
])
def test_check_reports_what_ultralytics_would_refuse_in_the_yaml(tmp_path, change, needle, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    doc = {**yaml.safe_load(data.read_text()), **change}
    data.write_text(yaml.safe_dump({k: v for k, v in doc.items() if v is not None}))
    proc = gradkit_here("check", f"data={data}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-800:]   # findings, like a label's
    assert needle in proc.stdout and str(data) in proc.stdout, proc.stdout[-800:]


@pytest.mark.parametrize("change", [{"nc": "1"}, {"nc": 1.0}, {"val": None, "validation": "images/val"}])
def test_check_accepts_what_ultralytics_accepts_in_the_yaml(tmp_path, change):
    data = _tiny_yolo(tmp_path / "ds")
    doc = {**yaml.safe_load(data.read_text()), **change}
    data.write_text(yaml.safe_dump({k: v for k, v in doc.items() if v is not None}))
    assert not [f for f in check_dataset(data).errors if f.kind == "dataset YAML"]


def test_the_yamls_own_folder_is_not_the_dataset_when_path_points_elsewhere(tmp_path):
    from gradkit.data.check import dataset_places

    data = _tiny_yolo(tmp_path / "ds")
    elsewhere = tmp_path / "configs"
    elsewhere.mkdir()
    (elsewhere / "data.yaml").write_text(data.read_text())                  # path: is absolute, to ds
    places = {p.resolve() for p in dataset_places(elsewhere / "data.yaml").values()}
    assert (tmp_path / "ds").resolve() in places and elsewhere.resolve() not in places
    assert (elsewhere / "data.yaml").resolve() in places                      # the YAML itself is never written


def test_check_names_a_label_file_that_is_not_text(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    bad = tmp_path / "ds" / "labels" / "train" / "1.txt"
    bad.write_bytes(b"\xff\xfe0 0.5 0.5 0.2 0.2\n")
    proc = gradkit_here("check", f"data={data}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and str(bad) in proc.stdout, proc.stdout[-800:]


def test_check_out_without_fix_is_refused(tmp_path, gradkit_here):
    data = _tiny_yolo(tmp_path / "ds")
    proc = gradkit_here("check", f"data={data}", f"out={tmp_path / 'o'}")
    assert proc.returncode == 2 and "--fix" in proc.stderr, proc.stderr[-800:]


def test_voc_object_without_a_name_is_listed_not_a_class(tmp_path):
    _voc_set(tmp_path / "voc", 4)
    _voc_xml(tmp_path / "voc" / "Annotations" / "0.xml", "0.png", (32, 32), [("", (3, 3, 12, 12))])
    _, report = convert_voc(tmp_path / "voc", tmp_path / "out", seed=0)
    names = yaml.safe_load((tmp_path / "out" / "data.yaml").read_text())["names"]
    assert "" not in names.values() if isinstance(names, dict) else "" not in names
    assert any("0.xml" in i and "name" in i for i in report.issues), report.issues


def test_a_file_that_is_no_image_is_named_as_such(tmp_path):
    data = _tiny_yolo(tmp_path / "ds")
    (tmp_path / "ds" / "images" / "train" / "9.jpg").write_bytes(b"this is a text file, not a photograph\n" * 4)
    found = [f for f in check_dataset(data, images=False).errors if f.path.endswith("9.jpg")]
    assert found and "not an image format PIL recognises" in found[0].message and "BytesIO" not in found[0].message


def test_a_relative_path_is_read_from_the_working_folder_as_ultralytics_reads_it(tmp_path, monkeypatch):
    # Ultralytics (check_det_dataset) resolves a relative path: against the working folder, then its
    # datasets_dir; never beside the YAML. `path: .` from another folder is that folder.
    data = _tiny_yolo(tmp_path / "ds")
    data.write_text(data.read_text().replace(f"path: {tmp_path / 'ds'}", "path: ."))
    monkeypatch.chdir(tmp_path / "ds")
    assert check_dataset(data, images=False).errors == []
    monkeypatch.chdir(tmp_path)
    missing = [f for f in check_dataset(data, images=False).errors if f.kind == "missing split"]
    assert {Path(f.path) for f in missing} == {tmp_path / "images" / "train", tmp_path / "images" / "val"}


def test_a_relative_path_found_only_beside_the_yaml_is_a_warning_naming_path(tmp_path, monkeypatch):
    data = _tiny_yolo(tmp_path / "project" / "ds")
    yaml_file = tmp_path / "project" / "data.yaml"
    yaml_file.write_text(data.read_text().replace(f"path: {tmp_path / 'project' / 'ds'}", "path: ds"))
    monkeypatch.chdir(tmp_path)  # no ./ds here: Ultralytics would look in its datasets_dir
    res = check_dataset(yaml_file, images=False)  # (_tiny_yolo's splits share images)
    (warning,) = [f for f in res.findings if f.kind == "dataset YAML"]
    assert warning.severity == "warning" and "path: ds" in warning.message and "working folder" in warning.message
    assert res.errors == []  # the check still reads the dataset it found beside the YAML


def test_only_readable_images_with_no_label_lines_count_as_defect_free(tmp_path):
    data = _tiny_yolo(tmp_path / "ds")
    train = tmp_path / "ds" / "images" / "train"
    (tmp_path / "ds" / "labels" / "train" / "0.txt").write_text("")              # a true background image
    (tmp_path / "ds" / "labels" / "train" / "1.txt").write_text("7 0.5 0.5 0.1 0.1\n")  # only a bad line
    (train / "._2.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")               # macOS metadata, no label
    res = check_dataset(data, images=False)
    assert res.background["train"] == 1


def test_a_relative_path_found_nowhere_names_the_working_folder_and_datasets_dir(tmp_path, monkeypatch):
    data = _tiny_yolo(tmp_path / "ds")
    data.write_text(data.read_text().replace(f"path: {tmp_path / 'ds'}", "path: nowhere"))
    monkeypatch.chdir(tmp_path)
    res = check_dataset(data, images=False)
    (warning,) = [f for f in res.findings if f.kind == "dataset YAML"]
    assert "neither in the working folder" in warning.message and "datasets_dir" in warning.message
    missing = {Path(f.path) for f in res.errors if f.kind == "missing split"}
    assert missing == {tmp_path / "nowhere" / "images" / "train", tmp_path / "nowhere" / "images" / "val"}


def _moved(data: Path, root: Path, splits: dict[str, str], path: str | None) -> Path:
    """The YAML rewritten with other split entries and ``path:`` (None: no path key)."""
    doc = {**yaml.safe_load(data.read_text(encoding="utf-8")), **splits}
    doc.pop("path")
    if path is not None:
        doc["path"] = path
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml.safe_dump(doc))
    return root / "data.yaml"


def test_layouts_ultralytics_trains_on_pass_the_check_before_training(tmp_path, monkeypatch):
    """Oracle: Ultralytics' own check_det_dataset finds these folders; the check must read the same ones."""
    import ultralytics.data.utils as ultralytics_data

    from gradkit.integrations.ultralytics.callback import check_before_training

    # a Roboflow export: train: ../images/train beside the YAML (Ultralytics drops the ../ when it is missing)
    data = _moved(_tiny_yolo(tmp_path / "ds"), tmp_path / "ds", {"train": "../images/train", "val": "../images/val"},
                  None)
    assert check_dataset(data, images=False).errors == []
    check_before_training(str(data))
    # a relative path: that lives in Ultralytics' datasets_dir (as coco8.yaml's path: coco8)
    monkeypatch.setattr(ultralytics_data, "DATASETS_DIR", tmp_path / "datasets")
    _tiny_yolo(tmp_path / "datasets" / "mine")
    elsewhere = _moved(tmp_path / "datasets" / "mine" / "data.yaml", tmp_path / "configs",
                       {"train": "images/train", "val": "images/val"}, "mine")
    monkeypatch.chdir(tmp_path)
    check_before_training(str(elsewhere))  # raised DatasetError ("missing split") before


def test_a_non_image_is_a_finding_where_ultralytics_has_patched_pil(tmp_path):
    """Importing Ultralytics replaces ``PIL.Image.open`` by one that, on a file PIL cannot identify, reaches for
    the optional pi-heif package (``ModuleNotFoundError`` where it is absent): in a notebook that imported
    Ultralytics first, a text file among the images must still be a finding, not a crash."""
    import ultralytics.utils.patches  # noqa: F401  (the patch is applied on import)
    from PIL import Image

    from gradkit.data.convert import UnusableImage, image_size

    assert Image.open.__module__ == "ultralytics.utils.patches"
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(UnusableImage, match="not an image file PIL can identify"):
        image_size(tmp_path / "text.png")


def test_reading_an_image_pil_cannot_identify_where_ultralytics_has_patched_pil(tmp_path):
    """The training loader's reader: OpenCV decodes a Radiance .hdr that PIL cannot identify; with Ultralytics'
    patched ``Image.open`` in place the EXIF look-up must fall back to "no EXIF", not crash the loader."""
    import cv2
    import ultralytics.utils.patches  # noqa: F401  (the patch is applied on import)

    from gradkit.data.orientation import read_upright

    pixels = np.full((8, 6, 3), 0.5, np.float32)
    ok, encoded = cv2.imencode(".hdr", pixels)
    assert ok
    (tmp_path / "x.hdr").write_bytes(encoded.tobytes())
    img = read_upright(tmp_path / "x.hdr")
    assert img is not None and img.shape == (8, 6, 3) and np.allclose(img, 0.5, atol=0.01)


def test_an_image_two_annotation_entries_name_is_refused_naming_both(tmp_path):
    """Two VOC files naming one image (an XML copied and not edited), or two COCO image ids with one file_name: the
    image was written twice, each copy with half its boxes (the other half taught as background), and the image
    the copied XML was meant for was left out unnamed. Refused, naming both entries, before anything is written."""
    _voc_set(tmp_path / "voc", 4)
    _img(tmp_path / "voc" / "JPEGImages" / "9.png", value=90)
    _voc_xml(tmp_path / "voc" / "Annotations" / "9.xml", "0.png", (32, 32), [("pit", (20, 20, 30, 30))])
    with pytest.raises(ValueError, match=r"0\.png is annotated by both .*0\.xml and .*9\.xml"):
        convert_voc(tmp_path / "voc", tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    ann = _coco_set(tmp_path / "coco", 4)
    doc = json.loads(ann.read_text())
    ann.write_text(json.dumps({**doc, "images": doc["images"] + [{"id": 7, "file_name": "0.png"}]}))
    with pytest.raises(ValueError, match=r"0\.png is listed by image ids 0 and 7"):
        convert_coco(ann, tmp_path / "coco" / "imgs", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()


def test_an_image_without_an_annotation_file_is_named_not_left_out_silently(tmp_path):
    _voc_set(tmp_path / "voc", 4)
    _img(tmp_path / "voc" / "JPEGImages" / "lonely.png")
    _, report = convert_voc(tmp_path / "voc", tmp_path / "out")
    said = [m for m in report.issues if "lonely.png" in m]
    assert len(said) == 1 and "no XML" in said[0], report.issues
    assert not list((tmp_path / "out").rglob("lonely.png"))


def test_two_classes_of_one_name_are_refused_not_merged(tmp_path):
    """COCO categories 1 and 2 both 'scratch' (or classes=[pit, pit]): every box went to the second, the first
    had none, and nothing said so (gradkit check then refused the output's names)."""
    ann = _coco_set(tmp_path, 4, names=("scratch", "scratch", "pit"))
    with pytest.raises(ValueError, match=r"categories 1 and 2 are both named 'scratch'"):
        convert_coco(ann, tmp_path / "imgs", tmp_path / "o1")
    _voc_set(tmp_path / "voc", 4, names=("pit",))
    with pytest.raises(ValueError, match=r"classes=.*'pit' twice"):
        convert_voc(tmp_path / "voc", tmp_path / "o2", classes=["pit", "pit"])


@pytest.mark.parametrize(("image", "annotation", "needle"), [
    ({}, {"category_id": [1]}, "category_id"),
    ({"id": [3]}, {}, "'id'"),
    ({"width": [32]}, {}, "annotation says [32]x32"),
])
def test_coco_values_of_the_wrong_type_are_one_line_not_a_traceback(tmp_path, image, annotation, needle):
    ann = _coco_set(tmp_path, 4)
    doc = json.loads(ann.read_text())
    doc["images"][3].update(image)
    doc["annotations"][3].update(annotation)
    ann.write_text(json.dumps(doc))
    try:
        _, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "out")
    except ValueError as exc:
        said = str(exc)
    else:
        said = " ".join(report.issues)
    assert needle in said and str(ann) in said, said


def test_voc_size_of_infinity_is_a_listed_mismatch_not_a_traceback(tmp_path):
    _voc_set(tmp_path / "voc", 4)
    xml = tmp_path / "voc" / "Annotations" / "3.xml"
    xml.write_text(xml.read_text().replace("<width>32</width>", "<width>inf</width>"))
    _, report = convert_voc(tmp_path / "voc", tmp_path / "out")
    assert any("3.xml" in m and "inf" in m for m in report.issues), report.issues


def test_an_image_with_a_box_that_could_not_be_converted_is_left_out_not_written_defect_free(tmp_path):
    """A VOC box with a non-numeric or reversed extent, a COCO box of an unknown category: the box was dropped (and
    listed) but its image was written with the other boxes, or an empty label file: a defect taught as background,
    a defect-free part that is not. As `check --fix` does, such an image is left out, named; a box wholly outside
    its image describes nothing the image shows, so that image stays."""
    _voc_set(tmp_path / "voc", 6)
    ann = tmp_path / "voc" / "Annotations"
    (ann / "1.xml").write_text((ann / "1.xml").read_text().replace("<xmin>3</xmin>", "<xmin>three</xmin>"))
    (ann / "2.xml").write_text((ann / "2.xml").read_text().replace("<xmax>12</xmax>", "<xmax>1</xmax>"))
    (ann / "3.xml").write_text((ann / "3.xml").read_text().replace(
        "<xmin>3</xmin><ymin>3</ymin><xmax>12</xmax>", "<xmin>40</xmin><ymin>3</ymin><xmax>50</xmax>"))
    _, report = convert_voc(tmp_path / "voc", tmp_path / "o1")
    written = {p.stem for p in (tmp_path / "o1" / "images").rglob("*.png")}
    assert written == {"0", "3", "4", "5"}, written
    for stem in ("1", "2"):
        said = [m for m in report.issues if f"{stem}.png" in m and "left out" in m]
        assert len(said) == 1 and "background" in said[0], report.issues
    doc = json.loads(_coco_set(tmp_path / "coco", 4).read_text())
    doc["annotations"].append({"id": 50, "image_id": 2, "category_id": 99, "bbox": [1, 1, 5, 5]})
    (tmp_path / "coco" / "ann.json").write_text(json.dumps(doc))
    _, report = convert_coco(tmp_path / "coco" / "ann.json", tmp_path / "coco" / "imgs", tmp_path / "o2")
    assert {p.stem for p in (tmp_path / "o2" / "images").rglob("*.png")} == {"0", "1", "3"}
    assert any("2.png" in m and "left out" in m for m in report.issues), report.issues


def test_fix_refuses_two_images_the_copy_would_write_under_one_name(tmp_path):
    """``a.png`` and a low-range 16-bit ``a.tif`` in one folder: the stretched TIFF is written as PNG, and it
    replaced the copied ``a.png`` with one line saying only that the TIFF was stretched. Refused before writing,
    naming both."""
    data_yaml = _fix_case(tmp_path)
    train = data_yaml.parent / "images" / "train"
    assert cv2.imwrite(str(train / "train0.tif"), np.full((64, 64), 900, np.uint16))
    with pytest.raises(ValueError, match=r"train0\.tif .*train0\.png"):
        fix_dataset(data_yaml, tmp_path / "fixed")
    assert not (tmp_path / "fixed").exists()


def test_a_box_given_twice_is_written_once_and_classes_differing_only_in_case_are_named(tmp_path):
    """Two identical COCO annotations became two identical label lines, which gradkit check then refused as a
    duplicate box; VOC names 'Scratch' and 'scratch' became two classes without a word."""
    doc = json.loads(_coco_set(tmp_path / "coco", 4).read_text())
    doc["annotations"].append({**doc["annotations"][1], "id": 51})
    (tmp_path / "coco" / "ann.json").write_text(json.dumps(doc))
    data, report = convert_coco(tmp_path / "coco" / "ann.json", tmp_path / "coco" / "imgs", tmp_path / "o1")
    (label,) = (tmp_path / "o1" / "labels").rglob("1.txt")
    assert len(label.read_text().splitlines()) == 1
    assert any("1.png" in m and "twice" in m for m in report.issues), report.issues
    assert not [f for f in check_dataset(data, images=False).errors if "duplicate" in f.kind]
    _voc_set(tmp_path / "voc", 6, names=("Scratch", "scratch", "pit"))
    _, report = convert_voc(tmp_path / "voc", tmp_path / "o2")
    said = [m for m in report.issues if "'Scratch'" in m and "'scratch'" in m]
    assert len(said) == 1 and "case" in said[0], report.issues


def test_fix_leaves_out_an_image_whose_box_has_a_negative_size(tmp_path):
    """``1 0.5 0.5 -0.1 0.1`` was dropped as "no area" and its image kept with an empty label file, so it counted
    as defect-free (stock Ultralytics drops such an image): a reversed box still marks a defect. A box of zero
    width describes nothing, and only it is dropped with its image kept."""
    data_yaml = _fix_case(tmp_path)
    labels = data_yaml.parent / "labels" / "train"
    (labels / "train1.txt").write_text("1 0.5 0.5 -0.1 0.1\n")
    (labels / "train0.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.3 0.3 0 0.1\n")
    said = [f for f in check_dataset(data_yaml, images=False).errors if "train1.txt" in f.path]
    assert len(said) == 1 and "negative" in f"{said[0].kind} {said[0].message}", [str(f) for f in said]
    _, changes = fix_dataset(data_yaml, tmp_path / "fixed")
    train = tmp_path / "fixed" / "images" / "train"
    assert not (train / "train1.png").exists() and (train / "train0.png").exists()
    assert any(c.action == "left out" and c.path.endswith("train1.png") for c in changes)


def test_augment_preview_of_a_one_channel_dataset(tmp_path, gradkit_here):
    """``channels: 1`` (line-scan cameras): the preview stopped with a traceback (a gray tile into a colour sheet).
    Oracle: the sheet of the same data read as three channels has the same size."""
    data = _tiny_yolo(tmp_path / "ds")
    sheets = {}
    for channels in (3, 1):
        doc = yaml.safe_load(data.read_text())
        data.write_text(yaml.safe_dump({**doc, "channels": channels}))
        out = tmp_path / f"preview{channels}.png"
        proc = gradkit_here("augment", f"data={data}", "n=2", "imgsz=64", "gradkit=defect", f"out={out}")
        assert proc.returncode == 0, proc.stderr[-1500:]
        sheets[channels] = cv2.imread(str(out))
    assert sheets[1].shape == sheets[3].shape


def test_a_class_left_with_no_box_anywhere_is_named_as_such_not_blamed_on_the_split(tmp_path):
    """A category whose only annotation was a crowd region (its image left out) has no box in any image written:
    the converter blamed each split ("too few to hold every class ... another split= fixes it"), which no split can
    fix. Now it says the class has no box at all. Hand-made COCO file."""
    ann = _coco_set(tmp_path, 6, names=("scratch",))
    doc = json.loads(ann.read_text())
    doc["categories"].append({"id": 9, "name": "pit"})
    doc["annotations"].append({"id": 99, "image_id": 2, "category_id": 9, "bbox": [1, 1, 5, 5], "iscrowd": 1})
    ann.write_text(json.dumps(doc))
    _, report = convert_coco(ann, tmp_path / "imgs", tmp_path / "out")
    said = " ".join(report.issues)
    assert "pit has no box in any image written" in said and "no instance of pit" not in said, report.issues


def test_check_names_a_class_no_split_holds_an_instance_of(tmp_path, gradkit_here):
    """A class named in the YAML with no box in any split (a converter left its only boxes out, a typo'd id) was
    passed silently ("0 error(s), 0 warning(s)"): training learns nothing of it and the reports call it absent.
    Now a warning names it. Hand-made dataset."""
    data = _tiny_yolo(tmp_path / "ds")
    doc = yaml.safe_load(data.read_text())
    data.write_text(yaml.safe_dump({**doc, "names": ["scratch", "pit"]}))
    proc = gradkit_here("check", f"data={data}")
    said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "pit" in ln and "no instance in any split" in ln]
    assert len(said) == 1, proc.stdout[-1500:]
