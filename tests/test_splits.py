"""Splits given as Ultralytics takes them: a folder, a list file of image paths, or a list of either.

Oracles: Ultralytics' own ``get_img_files`` for which images a split holds, and the same dataset laid
out as one folder per split for what ``gradkit check`` and the fingerprint find in it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import yaml

from gradkit.data import check_dataset, fix_output
from gradkit.data.check import dataset_place_of
from gradkit.data.fingerprint import fingerprint_dataset
from gradkit.data.splits import list_split_images, resolve_split
from gradkit.synth import SynthSpec, generate_dataset


def _ultralytics_images(places: list[Path]) -> list[Path]:
    """The images Ultralytics' dataset reads for these places (its own function, on a bare stand-in for self)."""
    from ultralytics.data.base import BaseDataset

    found = BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), [str(p) for p in places])
    return sorted(Path(f) for f in found)


def _image(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((32, 32, 3), value, np.uint8))


@pytest.fixture
def scattered(tmp_path, monkeypatch):
    """Images in two folders (one nested) and a list file mixing ./ lines, absolute lines and a line
    relative to the working folder."""
    root = tmp_path / "ds"
    for i, rel in enumerate(["images/a/0.png", "images/a/deep/1.jpg", "images/b/2.png", "images/b/3.bmp",
                             "images/c/4.png", "images/a/.hidden/5.png", "images/a/._6.png", "elsewhere/7.png"]):
        _image(root / rel, 10 * i)
    (root / "images/a/notes.txt").write_text("not an image")
    (root / "images/a/linked").symlink_to(root / "elsewhere")  # Ultralytics' glob follows it, skips hidden ones
    monkeypatch.chdir(tmp_path)
    (root / "list.txt").write_text(f"\ufeff./images/b/2.png\r\n{root / 'images/c/4.png'}\r\n\r\nds/images/a/0.png\n")
    (root / "lists").mkdir()
    (root / "lists/linked.txt").symlink_to(root / "list.txt")  # ./ lines: beside the file the link points to
    return root


@pytest.mark.parametrize("value", ["images/a", ["images/a", "images/b"], "list.txt", ["list.txt", "images/a"],
                                   ["images/b", "images/b"], "lists/linked.txt"])
def test_a_split_holds_the_images_ultralytics_reads(scattered, value):
    places = resolve_split(value, scattered, "train", scattered / "data.yaml")
    expected = _ultralytics_images(places)
    got = list_split_images(places)
    assert sorted(p.resolve() for p in got.images) == sorted({p.resolve() for p in expected})
    assert not got.absent and not [ln for ln in got.lines if "repeated" not in ln.why] and got.images
    assert got.extra_reads == len(expected) - len({p.resolve() for p in expected})  # Ultralytics reads it twice


def _dataset(root: Path) -> Path:
    return generate_dataset(root, SynthSpec(images=30, imgsz=64, seed=5), progress=False)


def _relaid(data: Path, train) -> Path:
    """The dataset's YAML with another ``train:`` value, written beside the dataset (never into it)."""
    doc = yaml.safe_load(data.read_text(encoding="utf-8"))
    doc["train"] = train
    out = data.parent.parent / f"relaid-{len(list(data.parent.parent.glob('relaid-*')))}.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _split_in_two(root: Path) -> None:
    """Move half the training images (and their labels) to images/train2 and labels/train2."""
    for img in sorted((root / "images" / "train").iterdir())[::2]:
        for sub, name in (("images", img.name), ("labels", img.with_suffix(".txt").name)):
            src = root / sub / "train" / name
            if src.exists():
                (root / sub / "train2").mkdir(parents=True, exist_ok=True)
                shutil.move(src, root / sub / "train2" / name)


def _listing(root: Path, folders: list[str]) -> Path:
    lines = [f"./{p.relative_to(root)}" for f in folders for p in sorted((root / f).iterdir())]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


def test_check_finds_in_a_list_file_or_a_list_of_folders_what_it_finds_in_one_folder(tmp_path):
    data = _dataset(tmp_path / "ds")
    root = data.parent
    label = root / "labels" / "train" / sorted((root / "labels" / "train").iterdir())[3].name
    label.write_text(label.read_text() + "7 0.5 0.5 0.1 0.1\n0 1.4 0.5 0.1 0.1\n")   # two planted errors
    one = check_dataset(data)
    planted = {(f.kind, Path(f.path).name, f.line) for f in one.errors}
    assert {k for k, _, _ in planted} == {"class id", "out of bounds"}
    _split_in_two(root)
    forms = {"list": _relaid(data, ["images/train", "images/train2"]),
             "list file": _relaid(data, "train.txt")}
    _listing(root, ["images/train", "images/train2"])
    for form, yaml_file in forms.items():
        res = check_dataset(yaml_file)
        assert {(f.kind, Path(f.path).name, f.line) for f in res.errors} == planted, form
        assert res.images == one.images and res.instances == one.instances, form
        assert res.background == one.background, form


def test_a_list_file_names_the_line_of_each_image_it_cannot_give(tmp_path, monkeypatch):
    data = _dataset(tmp_path / "ds")
    root = data.parent
    monkeypatch.chdir(tmp_path)
    first = sorted((root / "images" / "train").iterdir())[0]
    (root / "train.txt").write_text(f"./images/train/{first.name}\n./images/train/gone.png\nimages/train/{first.name}\n"
                                    "README.md\n")
    res = check_dataset(_relaid(data, "train.txt"))
    got = {(f.severity, f.kind, Path(f.path).name, f.line) for f in res.findings
           if f.kind in ("missing image", "list file")}
    assert got == {("error", "missing image", "train.txt", 2), ("error", "missing image", "train.txt", 3),
                   ("warning", "list file", "train.txt", 4)}
    beside = next(f for f in res.findings if f.line == 3)
    assert f"./images/train/{first.name}" in beside.message  # the fix: a leading ./
    assert res.images["train"] == 1


def test_a_list_file_or_folder_that_is_not_there_is_a_missing_split(tmp_path):
    data = _dataset(tmp_path / "ds")
    res = check_dataset(_relaid(data, ["images/train", "images/nowhere", "nowhere.txt"]))
    missing = {Path(f.path).name: f.message for f in res.errors if f.kind == "missing split"}
    assert missing.keys() == {"nowhere", "nowhere.txt"}
    assert "folder" in missing["nowhere"] and "list file" in missing["nowhere.txt"]
    assert res.images["train"] == check_dataset(data).images["train"]


def test_a_list_file_that_is_not_text_is_one_line_naming_it(tmp_path):
    data = _dataset(tmp_path / "ds")
    (data.parent / "train.txt").write_bytes(b"./images/train/\xff\xfe.png\n")
    with pytest.raises(ValueError, match=r"train\.txt: a split's list file must be UTF-8 text"):
        check_dataset(_relaid(data, "train.txt"))


def test_the_fingerprint_of_a_listed_split_is_the_fingerprint_of_the_folder(tmp_path):
    data = _dataset(tmp_path / "ds")
    root = data.parent
    folder = fingerprint_dataset(data).summary()
    _split_in_two(root)
    _listing(root, ["images/train", "images/train2"])
    for train in (["images/train", "images/train2"], "train.txt"):
        got = fingerprint_dataset(_relaid(data, train)).summary()
        assert {k: v for k, v in got.items() if k != "data"} == {k: v for k, v in folder.items() if k != "data"}


def test_nothing_is_written_where_a_listed_split_keeps_its_images(scattered, tmp_path):
    """The dataset YAML in a folder of its own, every image outside it: only the places the splits name (and
    the folders their list files point into, with their label folders) hold the dataset."""
    far = tmp_path / "far"
    for rel in ("images/x/0.png", "images/y/1.png"):
        _image(far / rel, 50)
    (far / "images/w").mkdir(parents=True)
    (far / "images/w/2.webp").write_bytes(b"RIFF")
    (far / "list.txt").write_text(f"{far / 'images/x/0.png'}\n{far / 'images/w/2.webp'}\n")
    (tmp_path / "cfg").mkdir()
    data = tmp_path / "cfg" / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "cfg"), "train": str(far / "list.txt"),
                                    "val": [str(far / "images/y"), str(scattered / "images/b")],
                                    "names": {0: "scratch"}}))
    for inside in ("images/x/report.html", "labels/x/r.txt", "images/w/p.yaml", "labels/w", "images/y/out",
                   "labels/y/a", "list.txt"):
        assert dataset_place_of(far / inside, data) is not None, inside
    assert dataset_place_of(scattered / "images/b/out", data) is not None
    for outside in ("images/z/out", "report.html", "labels"):
        assert dataset_place_of(far / outside, data) is None, outside
    with pytest.raises(ValueError, match=r"train: a list file; check --fix"):
        fix_output(data, tmp_path / "fixed")


def test_formats_gradkit_does_not_read_are_named_never_dropped(scattered):
    """Every format Ultralytics reads is either checked or named as unchecked (the constant is a fact about
    Ultralytics, compared here with its own set); a list line in such a format is not a skipped line."""
    from ultralytics.data.utils import IMG_FORMATS

    from gradkit.data.convert import IMAGE_SUFFIXES
    from gradkit.data.splits import UNCHECKED_FORMATS

    assert set(UNCHECKED_FORMATS) == set(IMG_FORMATS) - {s.lstrip(".") for s in IMAGE_SUFFIXES}
    (scattered / "images/a/5.webp").write_bytes(b"RIFF")
    (scattered / "list.txt").write_text("./images/b/2.png\n./images/a/5.webp\n")
    data = scattered / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(scattered), "train": "images/a", "val": "list.txt",
                                    "names": {0: "scratch"}}))
    res = check_dataset(data)
    unchecked = [(f.kind, Path(f.path).name) for f in res.findings if f.kind == "unchecked image"]
    assert unchecked == [("unchecked image", "5.webp")] * 2
    assert not [f for f in res.findings if f.kind == "list file"]


def test_a_split_without_any_image_is_an_error(scattered):
    data = scattered / "data.yaml"
    for listing in ("", "a.gif\nnotes.txt\n"):
        (scattered / "empty.txt").write_text(listing)
        data.write_text(yaml.safe_dump({"path": str(scattered), "train": "empty.txt", "val": "images/b",
                                        "names": {0: "scratch"}}))
        res = check_dataset(data)
        assert [(f.kind, f.severity) for f in res.findings if f.kind == "no images"] == [("no images", "error")]


def test_list_lines_are_named_by_their_line_in_the_file(scattered):
    (scattered / "lead.txt").write_text("\n\n  ./images/b/2.png\n./gone.png\r\n\r\n./also-gone.png\n")
    data = scattered / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(scattered), "train": "lead.txt", "val": "images/b",
                                    "names": {0: "scratch"}}))
    res = check_dataset(data)
    assert sorted(f.line for f in res.findings if f.kind == "missing image") == [4, 6]
    assert res.images["train"] == 1  # Ultralytics strips the text, so the indented first line is read


def test_odd_split_values_are_one_line_each(scattered):
    data = scattered / "data.yaml"
    long_line = "./" + "x" * 300 + ".png"
    (scattered / "long.txt").write_text(long_line + "\n./images/b/2.png\n")
    for train, needle in (([], "train: an empty list"), ([None], "train: takes a folder"), ("long.txt", None)):
        data.write_text(yaml.safe_dump({"path": str(scattered), "train": train, "val": "images/b",
                                        "names": {0: "scratch"}}))
        if needle:
            with pytest.raises(ValueError, match=needle):
                check_dataset(data)
        else:  # a name too long for the file system is no image, not a crash
            res = check_dataset(data)
            assert [f.line for f in res.findings if f.kind == "missing image"] == [1] and res.images["train"] == 1


def test_an_image_in_a_format_gradkit_does_not_read_keeps_its_labels_and_is_listed_by_fix(scattered, tmp_path):
    (scattered / "images/b/w.webp").write_bytes(b"RIFF")
    (scattered / "labels/b").mkdir(parents=True)
    (scattered / "labels/b/w.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    data = scattered / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(scattered), "train": "images/b", "val": "images/c",
                                    "names": {0: "scratch"}}))
    res = check_dataset(data)
    assert not [f for f in res.findings if f.kind == "orphan labels"]
    from gradkit.data import fix_dataset

    _, changes = fix_dataset(data, tmp_path / "fixed", checked=res)
    assert [(Path(c.path).name, c.action) for c in changes if "webp" in c.path] == [("w.webp", "left out")]


def test_the_plan_says_when_images_of_the_split_were_not_measured(tmp_path):
    from gradkit.plan import make_plan

    data = _dataset(tmp_path / "ds")
    listing = _listing(data.parent, ["images/train"])
    first = listing.read_text().splitlines()[0]
    listing.write_text(listing.read_text() + f"./images/train/gone.png\n./images/train/w.webp\n{first}\n")
    (data.parent / "images/train/w.webp").write_bytes(b"RIFF")
    fp = fingerprint_dataset(_relaid(data, "train.txt"))
    assert fp.unread_images == 2 and fp.images == check_dataset(data).images["train"]
    assert any(w.startswith("2 image(s) of the split were not measured") for w in make_plan(fp).warnings)


def test_a_list_file_of_lines_without_dot_slash_is_one_error_naming_its_lines(tmp_path, monkeypatch):
    """A list written relative to itself but without ./ (every line found only beside it) is one error that
    counts and names the lines and says the fix, not one error per line; a few such lines stay one each."""
    data = _dataset(tmp_path / "ds")
    root = data.parent
    monkeypatch.chdir(tmp_path)
    names = sorted(p.name for p in (root / "images" / "train").iterdir())
    (root / "train.txt").write_text("".join(f"images/train/{n}\n" for n in names))
    res = check_dataset(_relaid(data, "train.txt"))
    missing = [f for f in res.findings if f.kind == "missing image"]
    assert len(missing) == 1 and missing[0].line == 1 and Path(missing[0].path).name == "train.txt"
    assert f"{len(names)} lines (1-{len(names)})" in missing[0].message
    assert f"./images/train/{names[0]}" in missing[0].message
    (root / "train.txt").write_text("".join(f"images/train/{n}\n" for n in names[:2]) + f"./images/train/{names[2]}\n"
                                    + "".join(f"./images/train/gone{i}.png\n" for i in range(5)))
    res = check_dataset(_relaid(data, "train.txt"))
    missing = sorted((f.line, f.message) for f in res.findings if f.kind == "missing image")
    assert [line for line, _ in missing] == [1, 2, 4]   # two beside lines one by one, five missing as one
    assert "5 lines (4-8)" in missing[2][1] and "./images/train/gone0.png" in missing[2][1]


def test_an_image_listed_twice_is_named_by_the_line_that_repeats_it(scattered):
    (scattered / "twice.txt").write_text("./images/b/2.png\n./images/b/3.bmp\n\n./images/b/2.png\n")
    data = scattered / "data.yaml"
    folder = str(scattered / "images/b")
    for train, expected in (("twice.txt", [("twice.txt", 4, "(line 1)")]),
                            (["images/b", "twice.txt"], [("twice.txt", n, f"({folder})") for n in (1, 2, 4)]),
                            (["twice.txt", "images/b", "twice.txt"], [("twice.txt", None, "(as entry 1 of the split)"),
                                                                     ("twice.txt", 4, "(line 1)"),
                                                                     ("b", None, "twice.txt:1)"),
                                                                     ("b", None, "twice.txt:2)")])):
        data.write_text(yaml.safe_dump({"path": str(scattered), "train": train, "val": "images/c",
                                        "names": {0: "scratch"}}))
        twice = [f for f in check_dataset(data).findings if f.kind == "listed twice"]
        assert [(Path(f.path).name, f.line) for f in twice] == [(n, line) for n, line, _ in expected], train
        assert all(where in f.message for f, (_, _, where) in zip(twice, expected, strict=True)), twice


def test_many_lines_of_one_kind_are_counted_with_every_line_named(tmp_path, monkeypatch):
    """Up to ONE_BY_ONE lines of a kind are findings one by one; more are one finding whose ranges name
    every line (gaps included), however the lines lie; a list file given twice is said once."""
    from gradkit.data.check import ONE_BY_ONE

    root = tmp_path / "ds"
    _image(root / "images/ok.png", 9)
    monkeypatch.chdir(tmp_path)
    scattered_lines = [2, 3, 4, 6, 9, 10, 11, 13, 15, 17, 19, 21, 23]
    for gone, ranges in (([2, 4, 6], None), (scattered_lines, "2-4, 6, 9-11, 13, 15, 17, 19, 21, 23")):
        lines = ["./images/ok.png"] * 24
        for n in gone:
            lines[n - 1] = f"./images/gone{n}.png"
        (root / "t.txt").write_text("\n".join(lines) + "\n")
        data = root / "data.yaml"
        for train in ("t.txt", ["t.txt", "t.txt"]):
            data.write_text(yaml.safe_dump({"path": str(root), "train": train, "val": "images", "names": {0: "a"}}))
            missing = [f for f in check_dataset(data).findings if f.kind == "missing image"]
            if ranges is None:
                assert len(gone) == ONE_BY_ONE and [f.line for f in missing] == gone
            else:
                assert len(missing) == 1 and f"{len(gone)} lines ({ranges})" in missing[0].message


def test_the_plan_names_the_lines_that_stop_it_before_a_comment_line(tmp_path, monkeypatch):
    data = _dataset(tmp_path / "ds")
    root = data.parent
    monkeypatch.chdir(tmp_path)
    names = sorted(p.name for p in (root / "images" / "train").iterdir())
    (root / "train.txt").write_text("# my list\n" + "".join(f"images/train/{n}\n" for n in names))
    with pytest.raises(ValueError, match=rf"{root / 'train.txt'}:2: {len(names)} lines \(2-{len(names) + 1}\).*"
                                         r"1 more finding"):
        fingerprint_dataset(_relaid(data, "train.txt"))


def test_the_plan_of_a_split_without_images_says_why(tmp_path, monkeypatch):
    data = _dataset(tmp_path / "ds")
    root = data.parent
    monkeypatch.chdir(tmp_path)
    names = sorted(p.name for p in (root / "images" / "train").iterdir())
    (root / "train.txt").write_text("".join(f"images/train/{n}\n" for n in names))
    with pytest.raises(ValueError, match=rf"no images in .*train.txt: .*{len(names)} lines.*\./images/train/"):
        fingerprint_dataset(_relaid(data, "train.txt"))


def test_a_refusal_names_the_list_file_whose_images_a_folder_holds(scattered, tmp_path):
    (scattered / "two.txt").write_text("./images/b/2.png\n./images/c/4.png\n")
    (tmp_path / "cfg").mkdir()
    data = tmp_path / "cfg" / "data.yaml"  # the dataset root holds nothing: the list's folders are what is protected
    data.write_text(yaml.safe_dump({"path": str(tmp_path / "cfg"), "train": str(scattered / "two.txt"),
                                    "val": str(scattered / "images/a"), "names": {0: "scratch"}}))
    labels = {dataset_place_of(scattered / f"images/{d}/out.html", data)[0] for d in "bc"}
    labels |= {dataset_place_of(scattered / f"labels/{d}/x", data)[0] for d in "bc"}
    assert len(labels) == 4 and all("two.txt" in label and "(" not in label for label in labels), labels
    (scattered / "two.txt").write_text("./images/b/2.png\nimages/c/4.png\n")  # the check's fix points into c
    assert dataset_place_of(scattered / "images/c/out.html", data) is not None
